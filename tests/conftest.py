"""Shared test setup.

pytester's in-process runs remove the modules first imported during a run when it ends; a later
import then builds new module objects, and a library holding references to the old ones
misbehaves (the `openai:` backend's aiohttp keeps module-level state in its C-extension helpers,
multidict and yarl, and is matched by exception class). Importing it here, before any in-process
run, keeps one copy for the whole session.
"""

import aiohttp  # noqa: F401
