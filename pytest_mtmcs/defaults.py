"""Every built-in default a user can see, in one place.

The options table (`harness/options.py`), the end of a run (`outcome/`), the statistics
(`analysis/`), the judges and the `pytest-mtmcs` commands read these names; none writes the value
again. Changing one here changes the option help, the README's generated options table and the
behaviour together.
"""

from __future__ import annotations

# Turn buckets by number of user turns.
BUCKETS = "1,2-3,4-5,6+"
# The largest tolerated drop of a bucket metric against a baseline (share of units).
MAX_DROP = 0.02
# Significance level of the paired test, Holm-corrected across a comparison's cells.
ALPHA = 0.05
# A cell shows a number only when at least this share of its units was measured (the rest are
# dialogues whose backend or judge failed): below it, the cell says how many errored instead.
MIN_MEASURED_SHARE = 0.5
# Judge errors tolerated before the gate fails.
MAX_JUDGE_ERRORS = 0
# What fails the run: buckets, items or both.
GATE = "buckets"

# Decoding.
MAX_NEW_TOKENS = 128
TEMPERATURE = 0.0
IMAGE_PLACEMENT = "last"

# The default judge, and the confidence under which a cascade sends a reply to its model judge.
JUDGE = "ngram"
CASCADE_THRESHOLD = 0.6
# The run summary's judge line shows the judge's agreement with the team's own adjudications of
# this run's model once the file holds at least this many of its replies labelled by this judge.
ADJUDICATION_MIN_ROWS = 50
# Which replies a cascade sends to its model judge besides the unsure ones: off, or flips (every
# reply that decides a regressed or fixed dialogue).
ESCALATE = "off"

# openai: backends.
CONCURRENCY = 16
TIMEOUT_S = 120.0
RETRIES = 5
# Environment variables of OpenAI-compatible clients.
ENV_BASE_URL = "OPENAI_BASE_URL"
ENV_API_KEY = "OPENAI_API_KEY"

# Dialogues each process may generate ahead of the test being run: "auto" sizes it from the
# concurrency for backends that take requests one by one (`engine/schedule.py`), and is
# ROUNDS_LOOKAHEAD for the lock-step rounds (batching backends, `--mtmcs-schedule=rounds`).
LOOKAHEAD = "auto"
ROUNDS_LOOKAHEAD = 256
# How dialogues advance: "auto" (pipelined where the backend takes requests one by one) or "rounds".
SCHEDULE = "auto"
