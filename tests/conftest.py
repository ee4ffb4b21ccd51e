"""Shared test setup.

pytester's in-process runs remove the modules first imported during a run when it ends; a later
import then builds new module objects, and a library holding references to the old ones (httpx
maps httpcore's exception classes, pandas registers pyarrow extension types) misbehaves. Importing
them here, before any in-process run, keeps one copy for the whole session.
"""

import httpcore  # noqa: F401
import httpx  # noqa: F401
