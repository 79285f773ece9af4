"""The benchmark: the same workloads on real lab guests under each reclaim policy, the host's
memory sampled over time, measures computed, and the results written as JSON, a markdown table
and one plot per scenario.

  scenarios.py   what the guest does, phase by phase (scripts of vmreclaim.workloads)
  contenders.py  what is compared: no reporting, reporting only, WSL2's modes, adaptive
  recorder.py    samples the host footprint (4 Hz) and the guest's balloon statistics (1 Hz)
  measures.py    pure: excess GiB*s, time to return 50 % / 90 %, cold cache returned...
  runner.py      one scenario under one contender on one guest
  report.py      JSON, markdown, PNG
  cli.py         `vmreclaim bench`
"""
