"""Workloads that run inside lab guests (`python3 -m vmreclaim.workloads ...`): the memory
behaviours whose return to the host the tests and the benchmark measure. Standard library only,
since they run on the guest's stock python3."""
