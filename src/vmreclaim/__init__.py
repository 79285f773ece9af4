"""vmreclaim: make Linux virtual machines give the memory they no longer need back to the host."""

from __future__ import annotations

import logging

__version__ = "0.1.0"

# Only applications configure logging; the library stays silent unless asked.
logging.getLogger(__name__).addHandler(logging.NullHandler())
