"""Talking to QEMU processes: QMP, and their memory footprint on the host. Shared by the lab,
which starts QEMUs, and the host side, which watches and steers them."""
