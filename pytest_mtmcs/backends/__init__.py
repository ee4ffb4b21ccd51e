"""Model backends: the protocol, and a registry extended through entry points.

A backend is selected by a spec `PREFIX:REST` (`hf:Qwen/Qwen2.5-VL-7B-Instruct`,
`openai:qwen2.5-vl`, `scripted:comply-all`, `tiny:qwen2.5-vl`, `replay:run/transcripts.jsonl`).
Third-party packages add prefixes through the `pytest_mtmcs.backends` entry-point group; the entry
point's name is the prefix and it points at a factory `(rest: str, options: BackendOptions) -> Backend`.
Modules are imported only when their prefix is used, so heavy SDKs load only for the runs that
need them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pytest_mtmcs import defaults
from pytest_mtmcs.errors import BackendError, ConfigError
from pytest_mtmcs.records import ChatRequest
from pytest_mtmcs.registry import Registry

ENTRY_POINT_GROUP = "pytest_mtmcs.backends"

# One result per request: the reply text, or the error that request ended with.
Generation = str | BackendError


@runtime_checkable
class Backend(Protocol):
    """Generates assistant replies for chat requests.

    `generate` receives a batch of independent requests and returns one result per request, in
    order. Backends batch (hf) or run them concurrently (openai) as they see fit; an error for one
    request is returned in its place, never raised for the whole batch unless all failed alike.
    """

    spec: str

    def fingerprint(self) -> Mapping[str, Any]:
        """What identifies the model's outputs: spec, revision or weights hash, dtype..."""
        ...

    def generate(self, requests: Sequence[ChatRequest]) -> list[Generation]: ...

    def close(self) -> None: ...


@runtime_checkable
class StreamingBackend(Protocol):
    """A backend that also takes requests one by one (openai: does).

    `submit` returns at once and calls `done(i, result)` for request `i` as soon as its answer is
    in: exactly once per request, from any thread, in any order, errors as results (never
    raised). At most `concurrency` requests are in flight; the rest wait inside the backend. The
    engine then sends a dialogue's next turn the moment its reply arrives
    (`engine.schedule.Pipeline`) instead of waiting for a whole round, so one slow request holds
    up one dialogue, not all of them. Backends that batch (hf:) implement only `generate`.
    """

    spec: str
    concurrency: int

    def submit(
        self, requests: Sequence[ChatRequest], done: Callable[[int, Generation], None]
    ) -> None: ...


@dataclass(frozen=True)
class BackendOptions:
    """Run-wide settings a backend factory may use."""

    batch_size: int | None = None  # None: the backend's default; hf accepts "auto" via -1
    concurrency: int = defaults.CONCURRENCY
    base_url: str | None = None
    dtype: str = "auto"
    device: str | None = None
    timeout_s: float = defaults.TIMEOUT_S
    max_retries: int = defaults.RETRIES
    trust_remote_code: bool = False
    cache_dir: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    # The option that sets `base_url` (a judge's or guard's server has its own), for messages.
    base_url_option: str = "--mtmcs-base-url"


Factory = Callable[[str, BackendOptions], Backend]

# Built-in prefixes -> "module:function". Imported lazily.
BUILTIN: dict[str, str] = {
    "hf": "pytest_mtmcs.backends.hf:create",
    "tiny": "pytest_mtmcs.backends.tiny:create",
    "scripted": "pytest_mtmcs.backends.scripted:create",
    "openai": "pytest_mtmcs.backends.openai_compat:create",
    "replay": "pytest_mtmcs.backends.replay:create",
}


REGISTRY = Registry("backend", ENTRY_POINT_GROUP, BUILTIN)


def available() -> dict[str, str]:
    """Prefix -> factory location, built-ins first, then entry points."""
    return REGISTRY.available()


def split_spec(spec: str, option: str = "--mtmcs-model") -> tuple[str, str]:
    prefix, sep, rest = spec.partition(":")
    if not sep or not prefix:
        raise ConfigError(
            f"{option}={spec!r}: expected PREFIX:VALUE, one of {REGISTRY.known_text()} "
            "(e.g. hf:Qwen/Qwen2.5-VL-7B-Instruct, openai:MODEL, tiny:qwen2.5-vl)"
        )
    return prefix, rest


def create_backend(spec: str, options: BackendOptions, option: str = "--mtmcs-model") -> Backend:
    prefix, rest = split_spec(spec, option)
    factory: Factory = REGISTRY.factory(prefix, spec=spec, option=option)
    return factory(rest, options)
