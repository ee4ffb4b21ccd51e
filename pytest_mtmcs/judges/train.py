"""`python -m pytest_mtmcs.judges.train`: the documented command that trains the `ngram` judge.

The trainer lives in `ngram_training` (named for what it trains; `pytest_mtmcs.training` trains the
tiny checkpoints). This module keeps the documented command and import path working.
"""

from __future__ import annotations

import sys

from pytest_mtmcs.judges.ngram_training import *  # noqa: F403
from pytest_mtmcs.judges.ngram_training import main

if __name__ == "__main__":
    sys.exit(main())
