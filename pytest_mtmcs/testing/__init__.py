"""Helpers for testing with pytest-mtmcs offline: a local OpenAI-compatible stub server.

Names are loaded on first use, so that `python -m pytest_mtmcs.testing.stub_server` does not find
its own module already imported by this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_mtmcs.testing.bodies import image_urls, last_user_text, message_text
    from pytest_mtmcs.testing.stub_server import (
        DEFAULT_ANSWER,
        FAULT_KINDS,
        RecordedRequest,
        StubServer,
        random_faults,
    )

__all__ = [
    "DEFAULT_ANSWER",
    "FAULT_KINDS",
    "RecordedRequest",
    "StubServer",
    "image_urls",
    "last_user_text",
    "message_text",
    "random_faults",
]


_BODIES = frozenset({"image_urls", "last_user_text", "message_text"})


def __getattr__(name: str) -> Any:
    if name in __all__:
        module = "bodies" if name in _BODIES else "stub_server"
        return getattr(importlib.import_module(f"pytest_mtmcs.testing.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
