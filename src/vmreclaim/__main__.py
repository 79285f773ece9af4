"""`python -m vmreclaim` is the `vmreclaim` command."""

from __future__ import annotations

import sys

from vmreclaim.cli import main

if __name__ == "__main__":
    sys.exit(main())
