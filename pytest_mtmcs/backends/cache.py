"""The persistent response cache: finished replies (and judgments) keyed by what produced them.

A key is a sha256 over canonical JSON of a namespace, the model fingerprint, the generation
settings and the exact conversation prefix (images by content hash). The store is one SQLite file
in WAL mode; every `put_many` is its own committed transaction, so a run killed at any moment
keeps every turn it finished, and several xdist workers can write to it at once.

What is stored: the key (a hash), the reply text, the namespace, a model spec for humans and the
time. Never request bytes, images, settings or credentials.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar

from pytest_mtmcs.errors import MtmcsError
from pytest_mtmcs.records import Message

SCHEMA_VERSION = 1
RESPONSE_NAMESPACE = "response"
# Bound on one `IN (...)` list: SQLite builds before 3.32 allow only 999 host parameters.
_CHUNK = 500
# Mapping keys that name a credential. A fingerprint or settings mapping holding one is a bug in
# the caller: even hashed, a secret has no business in a cache key.
_SECRET_KEY = re.compile(
    r"api[_-]?key|authori[sz]ation|password|passwd|secret|bearer", re.IGNORECASE
)
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")

_T = TypeVar("_T")


def judgment_namespace(judge_identity: str) -> str:
    """The namespace of a judge's cached labels: `judgment:<identity>`."""
    return f"judgment:{judge_identity}"


def _canonical(value: Any, where: str) -> Any:
    """A JSON-ready copy in which equal inputs have one spelling.

    Integral floats become ints so `temperature=0` and `temperature=0.0` share a key; tuples
    become lists. Anything without an obvious canonical text (objects, bytes, NaN) is refused
    rather than hashed through `repr`, which can change between versions.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cache key: {where} is {value!r}; only finite numbers can be hashed")
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"cache key: {where} has a non-string key {k!r}")
            if _SECRET_KEY.search(k):
                raise ValueError(
                    f"cache key: {where} has a field named {k!r}; credentials must never be part "
                    "of a cache key"
                )
            out[k] = _canonical(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(
        f"cache key: {where} is a {type(value).__name__}; use str, int, float, bool, None, "
        "lists or mappings"
    )


def cache_key(
    *,
    namespace: str,
    fingerprint: Mapping[str, Any],
    settings: Mapping[str, Any],
    messages: Sequence[Message],
) -> str:
    """sha256 hex of what determines a reply: namespace, model, settings and conversation prefix.

    `namespace` is `"response"` for model replies or `judgment_namespace(identity)` for judge
    labels. Images count by `ImageRef.sha256` only; their bytes are never read.
    """
    if not isinstance(namespace, str) or not namespace:
        raise ValueError("cache key: namespace must be a non-empty string")
    conversation = []
    for i, m in enumerate(messages):
        if not isinstance(m.text, str):
            raise TypeError(f"cache key: messages[{i}].text is not a string")
        conversation.append(
            {
                "role": m.role,
                "text": m.text,
                "image": None if m.image is None else m.image.sha256,
            }
        )
    payload = {
        "v": SCHEMA_VERSION,
        "namespace": namespace,
        "fingerprint": _canonical(fingerprint, "fingerprint"),
        "settings": _canonical(settings, "settings"),
        "messages": conversation,
    }
    # ensure_ascii keeps the bytes independent of how a platform would encode non-ASCII text.
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


class Cache(Protocol):
    """What the runner needs from a cache; `ResponseCache` and `NullCache` both provide it."""

    hits: int
    misses: int
    writes: int

    def get(self, key: str) -> str | None: ...

    def get_many(self, keys: Iterable[str]) -> dict[str, str]: ...

    def put(self, key: str, value: str, *, namespace: str = ..., model: str = ...) -> None: ...

    def put_many(
        self, items: Mapping[str, str], *, namespace: str = ..., model: str = ...
    ) -> None: ...

    def stats(self) -> dict[str, int]: ...

    def close(self) -> None: ...


def _redact(text: str) -> str:
    # A model spec is stored for humans; a URL in it must not carry `user:password@`.
    return _URL_USERINFO.sub("***@", text)


def _fetch_all(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    return conn.execute(sql, params).fetchall()


def _is_busy(exc: sqlite3.Error) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


class ResponseCache:
    """SQLite-backed cache, safe across processes: one connection per process, opened at
    construction (a bad file is reported at start-up) and reopened in a forked child.

    Every `put_many` commits at once (INSERT OR IGNORE: the first writer of a key wins; greedy
    outputs are identical anyway). Counters are per instance and per process: `hits` and
    `misses` count looked-up keys, `writes` counts rows this instance newly stored.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout_s: float = 30.0,
        lock_retry_s: float = 120.0,
    ) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        # How long to keep retrying once SQLite's own busy wait has given up.
        self.lock_retry_s = lock_retry_s
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        # Connections inherited through fork: never used or closed in the child (SQLite forbids
        # carrying a connection across fork), only kept so the garbage collector leaves them.
        self._inherited: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # Open now so a corrupt or foreign file is reported at start-up, not mid-run.
        with self._lock:
            self._connection()

    # --- errors ----------------------------------------------------------------------------

    def _error(self, what: str, exc: BaseException | None = None) -> MtmcsError:
        detail = f" ({exc})" if exc is not None else ""
        return MtmcsError(
            f"response cache {self.path}: {what}{detail}. Run with --mtmcs-no-cache, point "
            "--mtmcs-cache at another file, or delete this file (and its -wal/-shm files) to "
            "start a fresh cache."
        )

    def _translate(self, exc: sqlite3.Error) -> MtmcsError:
        msg = str(exc).lower()
        if "not a database" in msg or "malformed" in msg or "corrupt" in msg:
            return self._error("the file is corrupt or not an SQLite database", exc)
        if "unable to open" in msg or "readonly" in msg or "read-only" in msg:
            return self._error("cannot open or write the file", exc)
        if "disk i/o" in msg or "full" in msg:
            return self._error("cannot read or write the file", exc)
        if _is_busy(exc):
            return self._error(
                f"the file stayed locked by another process for over "
                f"{self.busy_timeout_s + self.lock_retry_s:.0f} s",
                exc,
            )
        return self._error("SQLite failed", exc)

    # --- connection ------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        pid = os.getpid()
        if self._conn is not None and self._pid == pid:
            return self._conn
        if self._conn is not None:
            self._inherited.append(self._conn)
            self._conn = None
        if self.path.is_dir():
            raise self._error("the path is a directory")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._error("cannot create its folder", exc) from None
        try:
            # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves, so a writer takes
            # the write lock up front and never hits the un-retried read->write upgrade deadlock.
            conn = sqlite3.connect(
                str(self.path),
                timeout=self.busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise self._translate(exc) from None
        try:
            self._retrying(lambda: self._setup(conn))
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._pid = pid
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "meta" not in tables:
            raise self._error(
                f"the file is an SQLite database but not a pytest-mtmcs cache "
                f"(tables: {', '.join(sorted(tables))})"
            )
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise self._error(f"cannot switch the file to WAL mode (got {mode!r})")
        # NORMAL in WAL mode: a commit survives a killed process; only power loss can drop the
        # last few commits, which a re-run regenerates.
        conn.execute("PRAGMA synchronous = NORMAL")
        if "meta" not in tables:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
                )
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS responses ("
                    "key TEXT PRIMARY KEY, value TEXT NOT NULL, namespace TEXT NOT NULL, "
                    "model TEXT NOT NULL DEFAULT '', created REAL NOT NULL)"
                )
                conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        try:
            version = int(row[0]) if row is not None else None
        except (TypeError, ValueError):
            version = None
        if version is None:
            raise self._error("the file has no readable schema version")
        if version > SCHEMA_VERSION:
            raise self._error(
                f"the file has cache schema version {version}, newer than this pytest-mtmcs "
                f"understands ({SCHEMA_VERSION}); upgrade pytest-mtmcs"
            )
        if version < SCHEMA_VERSION:
            raise self._error(f"the file has an old cache schema version {version}")

    def _retrying(self, op: Callable[[], _T]) -> _T:
        """Run `op`, retrying with backoff while another process holds the lock."""
        deadline = time.monotonic() + self.lock_retry_s
        delay = 0.01
        while True:
            try:
                return op()
            except MtmcsError:
                raise
            except sqlite3.Error as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise self._translate(exc) from None
            # Jitter so workers that collided do not collide again in lockstep.
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)

    # --- reads and writes ------------------------------------------------------------------

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        """The stored values of those keys that are present."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, str] = {}
        with self._lock:
            conn = self._connection()
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                sql = (
                    f"SELECT key, value FROM responses WHERE key IN ({', '.join('?' * len(chunk))})"
                )
                rows: list[tuple[str, str]] = self._retrying(
                    functools.partial(_fetch_all, conn, sql, chunk)
                )
                found.update((k, v) for k, v in rows)
            self.hits += len(found)
            self.misses += len(wanted) - len(found)
        return found

    def get(self, key: str) -> str | None:
        return self.get_many([key]).get(key)

    def put_many(
        self,
        items: Mapping[str, str],
        *,
        namespace: str = RESPONSE_NAMESPACE,
        model: str = "",
    ) -> None:
        """Store all items in one transaction, committed before returning. Existing keys stay."""
        for k, v in items.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("response cache: keys and values must be strings")
        if not items:
            return
        now = time.time()
        rows = [(k, v, namespace, _redact(model), now) for k, v in items.items()]
        with self._lock:
            conn = self._connection()

            def write() -> int:
                before = conn.total_changes
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(
                        "INSERT OR IGNORE INTO responses (key, value, namespace, model, created) "
                        "VALUES (?, ?, ?, ?, ?)",
                        rows,
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return conn.total_changes - before

            self.writes += self._retrying(write)

    def put(
        self, key: str, value: str, *, namespace: str = RESPONSE_NAMESPACE, model: str = ""
    ) -> None:
        self.put_many({key: value}, namespace=namespace, model=model)

    def count(self, namespace: str | None = None) -> int:
        """Number of stored entries (in one namespace, when given)."""
        with self._lock:
            conn = self._connection()
            if namespace is None:
                row = self._retrying(
                    lambda: conn.execute("SELECT COUNT(*) FROM responses").fetchone()
                )
            else:
                row = self._retrying(
                    lambda: conn.execute(
                        "SELECT COUNT(*) FROM responses WHERE namespace = ?", (namespace,)
                    ).fetchone()
                )
        return int(row[0])

    def stats(self) -> dict[str, int]:
        """Plain counters, fit for `config.workeroutput`."""
        return {"hits": self.hits, "misses": self.misses, "writes": self.writes}

    def close(self) -> None:
        """Close this process's connection. A later call reopens it."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            elif self._conn is not None:
                self._inherited.append(self._conn)
            self._conn = None
            self._pid = None

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # Pickled into another process (spawn): carry the settings, never the connection.
        return {
            "path": self.path,
            "busy_timeout_s": self.busy_timeout_s,
            "lock_retry_s": self.lock_retry_s,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["path"],
            busy_timeout_s=state["busy_timeout_s"],
            lock_retry_s=state["lock_retry_s"],
        )

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"


class NullCache:
    """The cache of `--mtmcs-no-cache`: stores nothing, finds nothing, counts every miss."""

    path = None

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.writes = 0

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        self.misses += len(dict.fromkeys(keys))
        return {}

    def get(self, key: str) -> str | None:
        self.misses += 1
        return None

    def put_many(
        self,
        items: Mapping[str, str],
        *,
        namespace: str = RESPONSE_NAMESPACE,
        model: str = "",
    ) -> None:
        return None

    def put(
        self, key: str, value: str, *, namespace: str = RESPONSE_NAMESPACE, model: str = ""
    ) -> None:
        return None

    def count(self, namespace: str | None = None) -> int:
        return 0

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "writes": self.writes}

    def close(self) -> None:
        return None

    def __enter__(self) -> NullCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def __repr__(self) -> str:
        return "NullCache()"
