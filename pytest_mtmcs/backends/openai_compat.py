"""`openai:MODEL`: any OpenAI-compatible chat-completions server (vLLM, SGLang, TGI, ...).

`--mtmcs-model=openai:Qwen/Qwen2.5-VL-7B-Instruct --mtmcs-base-url=http://host:8000/v1`; the base
URL may come from `OPENAI_BASE_URL` instead, and an API key (optional) from `OPENAI_API_KEY`. The
key is sent as a Bearer token to the server and nowhere else: never to a proxy as its credential
(through an `https://` tunnel the proxy does not see it at all), not in the fingerprint (which
lands in caches and baselines), not in reprs, not in error messages (server text is scrubbed of
it too, and of a proxy URL's password).

HTTP client: aiohttp, through `backends/http_transport.py` (one session for all replicas,
proxies from the environment, TLS, one clear message per failure). Why aiohttp: it is the client
vLLM's own serving benchmark drives servers with; it speaks through proxies (`HTTPS_PROXY` via a
`CONNECT` tunnel, `HTTP_PROXY` by forwarding, `NO_PROXY`, lower-case names too), which a team
whose CI reaches a hosted server through the company's proxy needs; and its protocol code is kept
by others. Our own HTTP/1.1 client before it cost less CPU but refused every proxy, and a parser of
our own was code to keep correct forever. We use one endpoint (`POST /chat/completions`, plus
`GET /models` for the fingerprint), and the client's CPU per request decides how many turns one
core can feed a fast server: measured side by side (`benchmarks/bench_http.py`, figures in
`benchmarks/RESULTS.md`), this backend costs 0.16 / 0.34 ms of client CPU per text / image
request at 256 in flight (our own client 0.10 / 0.18 ms; budget 1 ms), so one core feeds
thousands of requests a second, far more than one vision-language model replica serves; httpx
and the `openai` SDK cost several times more. A whole `openai:` run of 4,096 dialogues costs
2.35x the CPU of the same run on `scripted:` (goal <= 3x; `benchmarks/bench_openai_run.py`).

Concurrency: asyncio on an event loop that the backend owns in a daemon thread; `generate` submits
the whole call to it and blocks until every request has an answer. A semaphore on that loop holds
`options.concurrency` slots, shared by every thread calling at once (the ceiling). Why not
`asyncio.run` per call: the engine calls `generate` once per turn, and a loop per call would throw
the keep-alive connections away every turn; a private loop also works when the caller already runs
one (pytest-asyncio). Why not threads: hundreds in flight cost hundreds of OS threads, and a thread
sleeping in backoff is a thread doing nothing.
`submit` (the `StreamingBackend` side) starts requests on the same loop and semaphore and returns at
once, calling back as each is answered: the engine's pipeline (`engine/schedule.py`) keeps the
slots full with it. Requests on the wire are measured over time (`in_flight`, `inflight.py`).

Several servers: `--mtmcs-base-url` may list replicas of one model (comma-separated or the option
repeated); each attempt goes to the replica with the fewest requests in flight, and a replica that
keeps failing is set aside for a while (`backends/replicas.py`). The fingerprint (and so the cache
key) names the configured set of hosts, never the replica that answered.

Retries: 408, 429, 5xx, timeouts, connection errors (refused, reset, dropped without an answer,
closed mid-body, a proxy that cannot be reached) and 200s whose body is not a chat completion (not
JSON, truncated, no `choices[0].message.content`: proxies and overloaded servers send them) are
retried up to `options.max_retries` times, with exponential backoff and full jitter (base
0.5 s, cap 20 s), never sooner than the server's `Retry-After` / `retry-after-ms` asks (that wait is
clipped at 60 s so that a misconfigured proxy cannot stall a run). A request keeps its concurrency
slot while it backs off: against an overloaded server that is the back-pressure we want. Other 4xx
(a proxy's 407 included) are not retried. Tests shrink the waits with `BackendOptions.extra`:
`backoff_base_s`, `backoff_cap_s`, `retry_after_max_s` (and `backoff_seed` for reproducible
jitter).

Images travel as `data:` URLs (mime type sniffed from the bytes). When the settings carry a pixel
budget (`max_pixels`), larger images are downscaled here so that every server sees the same budget
the `hf:` backend applies. Each image is encoded once per (image, pixel budget) and its URL kept,
already as a JSON string, in a bounded LRU; request bodies are assembled from cached JSON fragments
(per message, per settings), so a dialogue of 8 turns does not re-serialise its history and image
8 times.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import json
import math
import os
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pytest_mtmcs.backends import BackendOptions, Generation
from pytest_mtmcs.backends.http_transport import (
    ConnectError,
    Endpoint,
    Proxy,
    ProxyConfigError,
    RequestTimeout,
    Response,
    Transport,
    TransportError,
    proxy_for,
    redact_url,
)
from pytest_mtmcs.backends.inflight import InFlightMeter
from pytest_mtmcs.backends.replicas import Replica, ReplicaSet
from pytest_mtmcs.errors import BackendError, ConfigError
from pytest_mtmcs.records import ChatRequest, GenerationSettings, ImageRef, Message

ENV_BASE_URL = "OPENAI_BASE_URL"
ENV_API_KEY = "OPENAI_API_KEY"
BASE_URL_OPTION = "--mtmcs-base-url"
CONCURRENCY_OPTION = "--mtmcs-concurrency"
TIMEOUT_OPTION = "--mtmcs-timeout"
RETRIES_OPTION = "--mtmcs-retries"

# How much of a server's error text goes into a message.
MAX_ERROR_TEXT = 300
# Encoded images kept per backend (bytes of data URLs): twins share an image, and a dialogue sends
# its image again with every turn.
IMAGE_CACHE_BYTES = 64 * 1024 * 1024
# JSON fragments of text messages kept per backend (a turn's history reuses its Message objects).
FRAGMENT_CACHE_ENTRIES = 200_000

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded below by the server's Retry-After."""

    max_retries: int = 5
    base_s: float = 0.5
    cap_s: float = 20.0
    retry_after_max_s: float = 60.0

    def delay(self, retry: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (0-based)."""
        # The exponent is clamped so that a huge max_retries cannot overflow a float.
        bound = min(self.cap_s, self.base_s * (2.0 ** min(retry, 64)))
        wait = rng.uniform(0.0, bound)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.retry_after_max_s))
        return wait


def is_retryable_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asks us to wait: `retry-after-ms`, or `Retry-After` (seconds or date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def sniff_mime(data: bytes) -> str | None:
    """The image mime type from magic bytes, for the formats servers decode; None otherwise."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"BM"):
        return "image/bmp"
    return None


def _one_line(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _server_error_text(response: Response) -> str:
    """The server's own explanation: OpenAI-style `error.message`, else the raw text."""
    try:
        payload = json.loads(response.body)
    except ValueError:
        return _one_line(response.text)
    if isinstance(payload, dict):
        error = payload.get("error", payload.get("detail", payload.get("message")))
        if isinstance(error, dict) and "message" in error:
            return _one_line(str(error["message"]))
        if error is not None:
            return _one_line(str(error))
    return _one_line(response.text)


def _reason(response: Response) -> str:
    if response.reason:
        return response.reason
    from http import HTTPStatus

    try:
        return HTTPStatus(response.status).phrase
    except ValueError:
        return ""


def split_base_urls(value: str | Sequence[str] | None) -> list[str]:
    """Base URLs from an option value: one, several comma-separated, or a list of either."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    urls: list[str] = []
    for item in items:
        for part in str(item).split(","):
            url = part.strip().rstrip("/")
            if url and url not in urls:
                urls.append(url)
    return urls


class _BadReply(Exception):
    """A 2xx whose body is not a chat completion: retried like a transient failure."""


class _LoopThread:
    """An asyncio event loop running in a daemon thread, fed from other threads."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        # The loop's HTTP session, held here too: reachable from the running thread, it is never
        # collected in the same pass as a backend dropped without close(), so that the backend's
        # finalizer can still close it (see `discard`).
        self.transport: Transport | None = None
        self._thread = threading.Thread(target=self._run, name="mtmcs-openai-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except BaseException:
            # Ctrl-C or a timeout in the caller: do not leave requests running behind its back.
            future.cancel()
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()

    def discard(self) -> None:
        """Closes the transport, then stops the loop, without waiting: for a backend dropped
        without `close()` (this may run on any thread, the loop's own included)."""
        transport, self.transport = self.transport, None

        async def shutdown() -> None:
            try:
                if transport is not None:
                    await transport.close()
            finally:
                self.loop.stop()

        def start() -> None:
            self._closing = self.loop.create_task(shutdown())  # a strong reference

        try:
            self.loop.call_soon_threadsafe(start)
        except RuntimeError:  # the loop is closed already
            pass


class OpenAICompatBackend:
    """Chat completions over HTTP with many requests in flight, retries and backoff."""

    def __init__(
        self,
        model: str,
        base_url: str | Sequence[str],
        *,
        api_key: str | None = None,
        concurrency: int = 16,
        timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        replica_failures: int = 3,
        replica_cooldown_s: float = 10.0,
        on_replica_event: Callable[[str], None] | None = None,
        base_url_option: str = BASE_URL_OPTION,
    ) -> None:
        urls = split_base_urls(base_url)
        self.base_url_option = base_url_option
        if not urls:
            raise ConfigError(f"{BASE_URL_OPTION}: no URL given")
        self.spec = f"openai:{model}"
        self.model = model
        self.base_urls = urls
        self.base_url = urls[0]
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self._api_key = api_key or None
        self._rng = rng or random.Random()
        self._clock = clock
        # Backoff waits; tests read them off a replacement instead of timing them.
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self._replica_failures = replica_failures
        self._replica_cooldown_s = replica_cooldown_s
        self._on_replica_event = on_replica_event
        hosts = sorted({urlsplit(u).netloc.rpartition("@")[2].lower() for u in urls})
        self._host = ",".join(hosts)
        # Proxies are read from the environment once, here (see http_transport).
        try:
            self._endpoints = [Endpoint(u, proxy_for(u)) for u in urls]
        except ProxyConfigError as exc:
            raise ConfigError(str(exc)) from None
        self._secrets = [
            s for s in [self._api_key, *(e.proxy.secret for e in self._endpoints if e.proxy)] if s
        ]
        self._lock = threading.Lock()
        self._loop: _LoopThread | None = None
        self._transport: Transport | None = None
        self._replicas: ReplicaSet[Endpoint] | None = None
        self._events: list[str] = []  # replica events of closed loops
        self._trips: dict[str, tuple[int, list[str], bool]] = {}
        self._sem: asyncio.Semaphore | None = None
        self._served: Mapping[str, Any] | None = None
        self._served_fetched = False
        self._images: OrderedDict[tuple[str, int | None], bytes] = OrderedDict()
        self._images_bytes = 0
        self._fragments: dict[int, tuple[Message, int | None, tuple[bytes, ...]]] = {}
        self._tails: dict[GenerationSettings, bytes] = {}
        self._head = b'{"model":' + _json_str(model).encode() + b',"messages":['
        # Requests on the wire over time (run.json's in_flight; see backends/inflight.py).
        self._meter = InFlightMeter()
        self._tasks: set[asyncio.Task[None]] = set()  # submitted requests still running

    def __repr__(self) -> str:
        key = "set" if self._api_key else "unset"
        shown = ",".join(redact_url(u) for u in self.base_urls)
        return (
            f"OpenAICompatBackend(model={self.model!r}, base_url={shown!r}, "
            f"concurrency={self.concurrency}, timeout_s={self.timeout_s:g}, "
            f"max_retries={self.retry.max_retries}, api_key={key})"
        )

    # --- Backend protocol ------------------------------------------------------------------

    def fingerprint(self) -> Mapping[str, Any]:
        """spec, model, server host(s), and the served model's id/root/revision when listed."""
        if not self._served_fetched:
            self._served = self._fetch_model_card()
            self._served_fetched = True
        return {
            "backend": "openai",
            "spec": self.spec,
            "model": self.model,
            "host": self._host,
            "served": dict(self._served) if self._served is not None else None,
        }

    def generate(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        if not requests:
            return []
        return self._loop_thread().run(self._run_all(requests))

    # --- StreamingBackend: requests one by one (engine.schedule.Pipeline) ------------------

    def submit(
        self, requests: Sequence[ChatRequest], done: Callable[[int, Generation], None]
    ) -> None:
        """Starts `requests` on the loop and returns at once; `done(i, result)` is called on the
        loop thread as each is answered. They share `generate`'s semaphore: at most
        `concurrency` in flight, the rest wait for a slot in the order submitted."""
        if requests:
            batch = list(requests)
            self._loop_thread().loop.call_soon_threadsafe(self._start_submitted, batch, done)

    def in_flight(self) -> dict[str, Any] | None:
        """Mean requests in flight so far against the concurrency (backends/inflight.py)."""
        return self._meter.stats(self.concurrency)

    def _start_submitted(
        self, requests: list[ChatRequest], done: Callable[[int, Generation], None]
    ) -> None:
        try:
            replicas, sem = self._ensure_replicas()
        except Exception as exc:  # every request must get its answer, if only an error
            err = BackendError(f"openai: cannot start requests: {type(exc).__name__}: {exc}")
            for i in range(len(requests)):
                done(i, err)
            return
        loop = asyncio.get_running_loop()
        for i, request in enumerate(requests):
            task = loop.create_task(self._submitted(i, request, done, replicas, sem))
            self._tasks.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)

    async def _cancel_submitted(self) -> None:
        # Queued on the loop after every `submit` so far: their tasks exist by now.
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _submitted(
        self,
        i: int,
        request: ChatRequest,
        done: Callable[[int, Generation], None],
        replicas: ReplicaSet[Endpoint],
        sem: asyncio.Semaphore,
    ) -> None:
        async with sem:
            result = await self._one(request, replicas)
        done(i, result)

    def replica_summary(self) -> list[str]:
        """Replicas set aside during the run, one line each (empty with one server)."""
        replicas = self._replicas
        lines = []
        if replicas is not None:
            lines = replicas.summary()
        return lines or [
            f"replica {url} set aside {n}x ({'; '.join(why)}), "
            f"{'restored' if restored else 'still set aside at the end'}"
            for url, (n, why, restored) in self._trips.items()
        ]

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None:
            return
        try:  # submitted requests still running (a run stopped early) are cancelled
            loop.run(self._cancel_submitted(), timeout=10)
        except Exception:
            pass
        replicas, self._replicas, self._sem = self._replicas, None, None
        transport, self._transport = self._transport, None
        loop.transport = None
        if replicas is not None:
            for r in replicas.replicas:
                if r.trips:
                    self._trips[r.shown] = (r.trips, list(r.reasons), r.restored)
        if transport is not None:
            try:
                loop.run(transport.close(), timeout=10)
            except Exception:  # closing is best effort; the loop goes anyway
                pass
        loop.stop()

    def __del__(self) -> None:
        # Dropped without close(): release the loop thread and the connections anyway (else
        # aiohttp reports an unclosed session on stderr).
        loop = self.__dict__.get("_loop")
        if loop is not None:
            loop.discard()

    def __enter__(self) -> OpenAICompatBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- requests --------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        from pytest_mtmcs import __version__

        return {"User-Agent": f"pytest-mtmcs/{__version__}", "Accept": "application/json"}

    def _secret_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _scrub(self, text: str) -> str:
        # A server or proxy may echo the request's headers in its error text.
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _encode_or_error(self, request: ChatRequest) -> list[bytes] | BackendError:
        try:
            return self.encode_parts(request)
        except BackendError as exc:
            return exc
        except Exception as exc:  # one bad request must not sink the batch
            return BackendError(f"openai: cannot build the request: {type(exc).__name__}: {exc}")

    def encode(self, request: ChatRequest) -> bytes:
        """The JSON body of the chat-completions request for `request`."""
        return b"".join(self.encode_parts(request))

    def encode_parts(self, request: ChatRequest) -> list[bytes]:
        """The body as pieces to be joined once, when it is sent: cached JSON fragments of each
        message (an image's data URL is one shared bytes object, never copied here)."""
        settings = request.settings
        tail = self._tails.get(settings)
        if tail is None:
            tail = (
                b'],"max_tokens":'
                + json.dumps(settings.max_new_tokens).encode()
                + b',"temperature":'
                + json.dumps(settings.temperature).encode()
                + b',"seed":0,"n":1,"stream":false}'
            )
            self._tails[settings] = tail
        fragments = self._fragments
        parts = [self._head]
        max_pixels = settings.max_pixels
        for m in request.messages:
            hit = fragments.get(id(m))
            if hit is not None and hit[0] is m and hit[1] == max_pixels:
                parts += hit[2]
            else:
                fragment = self._message(m, max_pixels)
                if len(fragments) >= FRAGMENT_CACHE_ENTRIES:
                    fragments.clear()
                fragments[id(m)] = (m, max_pixels, fragment)
                parts += fragment
            parts.append(b",")
        parts[-1] = tail
        return parts

    def _message(self, message: Message, max_pixels: int | None) -> tuple[bytes, ...]:
        role = _json_str(message.role).encode()
        if message.image is None:
            return (b'{"role":' + role + b',"content":' + _json_str(message.text).encode() + b"}",)
        head = b'{"role":' + role + b',"content":[{"type":"image_url","image_url":{"url":'
        url = self._data_url(message.image, max_pixels)
        if message.text:
            text = b'}},{"type":"text","text":' + _json_str(message.text).encode() + b"}]}"
        else:
            text = b"}}]}"
        return (head, url, text)

    def _cached_url(self, image: ImageRef, max_pixels: int | None) -> bytes | None:
        key = (image.sha256, max_pixels)
        with self._lock:
            url = self._images.get(key)
            if url is not None:
                self._images.move_to_end(key)
            return url

    def _data_url(self, image: ImageRef, max_pixels: int | None) -> bytes:
        """The image's data URL as a JSON string (quotes included), encoded once."""
        cached = self._cached_url(image, max_pixels)
        if cached is not None:
            return cached
        try:
            data = image.data()
        except Exception as exc:
            where = f" {image.where}" if image.where else ""
            raise BackendError(f"openai: cannot read image{where}: {exc}") from None
        mime, data = _prepare_image(data, max_pixels, image.where)
        url = b'"data:' + mime.encode() + b";base64," + base64.b64encode(data) + b'"'
        key = (image.sha256, max_pixels)
        with self._lock:
            if key not in self._images and len(url) <= IMAGE_CACHE_BYTES:
                self._images[key] = url
                self._images_bytes += len(url)
                while self._images_bytes > IMAGE_CACHE_BYTES:
                    self._images_bytes -= len(self._images.popitem(last=False)[1])
        return url

    def data_url(self, image: ImageRef, max_pixels: int | None = None) -> str:
        """The `data:` URL sent for `image` under a pixel budget."""
        return self._data_url(image, max_pixels)[1:-1].decode("ascii")

    # --- the event loop side ---------------------------------------------------------------

    def _loop_thread(self) -> _LoopThread:
        with self._lock:
            if self._loop is None:
                self._loop = _LoopThread()
            return self._loop

    def _ensure_transport(self) -> Transport:
        # Runs on the loop thread only, so no lock: the session belongs to that loop.
        if self._transport is None:
            self._transport = Transport(
                headers=self._headers(),
                secret_headers=self._secret_headers(),
                timeout_s=self.timeout_s,
            )
            if self._loop is not None:
                self._loop.transport = self._transport
        return self._transport

    def _ensure_replicas(self) -> tuple[ReplicaSet[Endpoint], asyncio.Semaphore]:
        # Runs on the loop thread only, so no lock: replicas and semaphore belong to that loop.
        if self._replicas is None or self._sem is None:
            self._ensure_transport()
            replicas = [Replica(e.shown, e) for e in self._endpoints]
            self._replicas = ReplicaSet(
                replicas,
                failures_to_trip=self._replica_failures,
                cooldown_s=self._replica_cooldown_s,
                clock=self._clock,
                on_event=self._on_replica_event,
            )
            self._sem = asyncio.Semaphore(self.concurrency)
        return self._replicas, self._sem

    async def _run_all(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        replicas, sem = self._ensure_replicas()
        out: list[Generation] = [""] * len(requests)
        todo = iter(range(len(requests)))

        async def worker() -> None:
            # A few workers pulling indices cost less than one task per request.
            for i in todo:
                async with sem:
                    out[i] = await self._one(requests[i], replicas)

        workers = min(len(requests), self.concurrency)
        if workers == 1:
            await worker()
        else:
            await asyncio.gather(*(worker() for _ in range(workers)))
        return out

    async def _one(self, request: ChatRequest, replicas: ReplicaSet[Endpoint]) -> Generation:
        try:
            body: list[bytes] | BackendError
            if self._needs_thread(request):
                # Reading, resizing and base64-encoding images would stall every request in
                # flight; encoded only now, so that a call's bodies do not all exist at once.
                body = await asyncio.to_thread(self._encode_or_error, request)
            else:
                body = self._encode_or_error(request)
            if isinstance(body, BackendError):
                return body
            return await self._post(b"".join(body), replicas)
        except Exception as exc:  # a bug here must not lose the batch
            return BackendError(
                f"openai: POST {self._shown_chat(replicas.replicas[0])}: unexpected "
                f"{type(exc).__name__}: {self._scrub(str(exc))}"
            )

    def _needs_thread(self, request: ChatRequest) -> bool:
        for m in request.messages:
            image = m.image
            if image is not None and self._cached_url(image, request.settings.max_pixels) is None:
                return True
        return False

    def _shown_chat(self, replica: Replica[Endpoint]) -> str:
        return replica.pool.describe("/chat/completions")

    async def _post(self, body: bytes, replicas: ReplicaSet[Endpoint]) -> Generation:
        attempts = 0
        last = ""
        where = replicas.replicas[0]
        previous: Replica[Endpoint] | None = None
        retry = 0
        max_retries = self.retry.max_retries
        transport = self._ensure_transport()
        while True:
            attempts += 1
            replica = replicas.pick(previous)
            started = self._clock()
            where = replica
            retry_after: float | None = None
            failover = False
            replica.in_flight += 1
            self._meter.enter()
            try:
                response = await transport.request("POST", replica.pool, "/chat/completions", body)
            except RequestTimeout:
                last = f"timed out after {self.timeout_s:g} s"
                replicas.failed(replica, "timed out", started)
            except TransportError as exc:
                detail = self._scrub(_one_line(str(exc))) or "no detail"
                last = f"connection error ({type(exc).__name__}: {detail})"
                refused = isinstance(exc, ConnectError)
                replicas.failed(
                    replica, "connection refused" if refused else "connection lost", started
                )
                # Another replica is up: go there at once rather than wait out a backoff.
                failover = replicas.has_other_up(replica)
            else:
                status = response.status
                if 200 <= status < 300:
                    try:
                        text = self._reply_text(response)
                    except _BadReply as exc:
                        last = str(exc)
                    else:
                        replicas.succeeded(replica)
                        return text
                else:
                    text = self._scrub(_server_error_text(response))
                    last = f"{status} {_reason(response)}" + (f": {text}" if text else "")
                    verb = "returned"
                    if response.from_proxy:
                        last = f"the proxy answered CONNECT with {last}"
                        verb = "failed:"
                    if not is_retryable_status(status):
                        return BackendError(
                            f"openai: POST {self._shown_chat(replica)} {verb} {last} "
                            f"(not retried){self._hint(response, replica.pool.proxy, text)}"
                        )
                    if status >= 500:
                        replicas.failed(replica, f"{status} {_reason(response)}", started)
                        failover = replicas.has_other_up(replica)
                    retry_after = parse_retry_after(response.headers)
            finally:
                replica.in_flight -= 1
                self._meter.leave()
            if retry >= max_retries:
                break
            previous = replica
            if not (failover and retry_after is None):
                await self._sleep(self.retry.delay(retry, self._rng, retry_after))
            retry += 1
        return BackendError(
            f"openai: POST {self._shown_chat(where)} failed after {attempts} attempt"
            f"{'s' if attempts != 1 else ''}: {last}"
        )

    def _reply_text(self, response: Response) -> str:
        try:
            payload = json.loads(response.body)
        except ValueError:
            raise _BadReply(
                f"{response.status} {_reason(response)} with a body that is not JSON "
                f"(truncated?): {self._scrub(_one_line(response.text, 120))!r}"
            ) from None
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            raise _BadReply(
                f"{response.status} {_reason(response)} without choices[0].message.content: "
                f"{self._scrub(_one_line(json.dumps(payload), 200))}"
            )
        return content

    def _hint(self, response: Response, proxy: Proxy | None, text: str) -> str:
        status = response.status
        if status == 407 and proxy is not None:
            return (
                "; the proxy asks for credentials: put them in its URL, "
                f"{proxy.env}=http://USER:PASSWORD@HOST:PORT"
            )
        if response.from_proxy and proxy is not None:
            return (
                "; the proxy would not open a tunnel to the server: check the proxy's rules, or "
                "add the server's host to NO_PROXY to reach it directly"
            )
        if status in (401, 403):
            return f"; check {ENV_API_KEY} (the server's --api-key)"
        if status == 404:
            return (
                f"; check the model name (GET {redact_url(self.base_url)}/models lists what the "
                "server serves) and that the base URL ends in /v1"
            )
        if status == 400 and "image" in text.lower():
            return "; vLLM: start the server with --limit-mm-per-prompt '{\"image\": 1}'"
        return ""

    # --- the check before the first dialogue -----------------------------------------------

    def preflight(self) -> None:
        """One check of every replica before any dialogue runs: the server answers, accepts the
        key and serves the model (`GET /models`; a server without that endpoint gets one
        1-token chat completion instead). Transient failures (429, 5xx, a dropped or refused
        connection) are retried with backoff like any request; what persists raises one
        ConfigError naming the URL, the option or variable to fix, and what was seen."""
        problems = [
            problem
            for endpoint in self._endpoints
            if (problem := self._loop_thread().run(self._check(endpoint))) is not None
        ]
        if problems:
            raise ConfigError("; ".join(problems))

    async def _check(self, endpoint: Endpoint) -> str | None:
        transport = self._ensure_transport()
        shown = redact_url(endpoint.base_url)
        retries = min(self.retry.max_retries, 3)
        last = ""
        for attempt in range(retries + 1):
            if attempt:
                await self._sleep(self.retry.delay(attempt - 1, self._rng))
            try:
                models = await transport.request(
                    "GET", endpoint, "/models", timeout_s=min(self.timeout_s, 30.0)
                )
                problem = (
                    "unlisted"
                    if models.status == 404
                    else self._models_problem(models, endpoint, shown)
                )
                if problem == "unlisted":
                    # No /models, or the model is not in its list (some servers serve aliases
                    # they do not list): one 1-token chat completion decides.
                    body = (
                        self._head
                        + b'{"role":"user","content":"ping"}],"max_tokens":1,"temperature":0}'
                    )
                    chat = await transport.request("POST", endpoint, "/chat/completions", body)
                    problem = self._chat_problem(chat, endpoint, shown, listed=models)
            except RequestTimeout:
                last = f"{shown}: no answer within {min(self.timeout_s, 30.0):g} s"
                continue
            except TransportError as exc:
                detail = self._scrub(_one_line(str(exc))) or type(exc).__name__
                last = (
                    f"{shown}: cannot connect ({detail}); is the server running, and is "
                    f"{self.base_url_option} (or {ENV_BASE_URL}) right?"
                )
                continue
            if problem == "retry":
                last = f"{shown}: the server keeps answering with errors (429/5xx)"
                continue
            return problem
        return last or None

    def _models_problem(self, response: Response, endpoint: Endpoint, shown: str) -> str | None:
        status = response.status
        if status == 429 or status >= 500:
            return "retry"
        if status != 200:
            text = self._scrub(_server_error_text(response))
            hint = self._hint(response, endpoint.proxy, text).removeprefix("; ")
            return f"{shown}: GET /models returned {status} {_reason(response)}" + (
                f" ({hint})" if hint else ""
            )
        try:
            json.loads(response.body).get("data", [])
        except (ValueError, AttributeError):
            return f"{shown}: GET /models did not return a model list (is this an OpenAI-compatible /v1 URL?)"
        ids = _model_ids(response)
        if ids and self.model not in ids:
            return "unlisted"
        return None

    def _chat_problem(
        self, response: Response, endpoint: Endpoint, shown: str, *, listed: Response
    ) -> str | None:
        status = response.status
        if status == 429 or status >= 500:
            return "retry"
        if 200 <= status < 300:
            return None
        ids = _model_ids(listed) if listed.status == 200 else []
        if ids and status in (400, 404):
            served = ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else "")
            return f"{shown}: does not serve model {self.model!r}; it serves: {served}"
        text = self._scrub(_server_error_text(response))
        hint = self._hint(response, endpoint.proxy, text).removeprefix("; ")
        return (
            f"{shown}: a 1-token chat completion returned {status} {_reason(response)}"
            + (f": {text}" if text else "")
            + (f" ({hint})" if hint else "")
        )

    # --- fingerprint -----------------------------------------------------------------------

    def _fetch_model_card(self) -> Mapping[str, Any] | None:
        """The card for our model from `GET /models` of the first replica that answers."""
        for endpoint in self._endpoints:
            card = self._loop_thread().run(self._model_card(endpoint))
            if card is not None:
                return card
        return None

    async def _model_card(self, endpoint: Endpoint) -> Mapping[str, Any] | None:
        transport = self._ensure_transport()
        try:
            response = await transport.request(
                "GET", endpoint, "/models", timeout_s=min(self.timeout_s, 10.0)
            )
            if response.status != 200:
                return None
            cards = json.loads(response.body).get("data", [])
        except (TransportError, ValueError, AttributeError):
            return None
        for card in cards if isinstance(cards, list) else []:
            if isinstance(card, dict) and card.get("id") == self.model:
                return {
                    k: card[k]
                    for k in ("id", "root", "revision")
                    if isinstance(card.get(k), (str, int, float))
                }
        return None


def _model_ids(response: Response) -> list[str]:
    """The model ids a `GET /models` answer lists ([] when it lists none or is not a list)."""
    try:
        cards = json.loads(response.body).get("data", [])
    except (ValueError, AttributeError):
        return []
    if not isinstance(cards, list):
        return []
    return [str(c["id"]) for c in cards if isinstance(c, dict) and c.get("id") is not None]


def _prepare_image(data: bytes, max_pixels: int | None, where: str) -> tuple[str, bytes]:
    """(mime, bytes) to send: as stored when possible, re-encoded as PNG when needed."""
    mime = sniff_mime(data)
    if mime is not None and not max_pixels:
        return mime, data
    # Pillow only when the image must be measured or converted.
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if mime is not None and (not max_pixels or width * height <= max_pixels):
                return mime, data
            img.load()
            out = img if img.mode in ("RGB", "RGBA", "L") else img.convert("RGB")
            if max_pixels and width * height > max_pixels:
                scale = math.sqrt(max_pixels / (width * height))
                size = (max(1, int(width * scale)), max(1, int(height * scale)))
                out = out.resize(size, Image.Resampling.BICUBIC)
            buffer = io.BytesIO()
            out.save(buffer, format="PNG")
            return "image/png", buffer.getvalue()
    except Exception as exc:  # Pillow raises many types for bad data
        label = f" {where}" if where else ""
        raise BackendError(f"openai: cannot encode image{label}: {exc}") from None


def _option_float(extra: Mapping[str, Any], key: str, default: float) -> float:
    value = extra.get(key, default)
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"openai backend option {key}={value!r}: expected a number") from None
    if result < 0:
        raise ConfigError(f"openai backend option {key}={value!r}: must be >= 0")
    return result


def create(rest: str, options: BackendOptions) -> OpenAICompatBackend:
    """Factory for `openai:MODEL`."""
    model = rest.strip()
    if not model:
        raise ConfigError(
            "--mtmcs-model=openai:: expected openai:MODEL, the model name the server serves "
            "(e.g. openai:Qwen/Qwen2.5-VL-7B-Instruct; GET BASE_URL/models lists them)"
        )
    option = options.base_url_option
    source = option if options.base_url else ENV_BASE_URL
    urls = split_base_urls(options.base_url or os.environ.get(ENV_BASE_URL) or "")
    if not urls:
        raise ConfigError(
            f"openai:{model} needs the server's base URL: pass "
            f"{option}=http://HOST:8000/v1 or set {ENV_BASE_URL} (several replicas: "
            "comma-separated)"
        )
    for url in urls:
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018  (raises on a bad port)
        except ValueError:
            parts = urlsplit("")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"{source}={redact_url(url)!r}: expected an http(s) URL such as http://HOST:8000/v1"
            )
    if options.concurrency < 1:
        raise ConfigError(f"{CONCURRENCY_OPTION}={options.concurrency}: must be at least 1")
    if not options.timeout_s > 0:
        raise ConfigError(
            f"{TIMEOUT_OPTION}={options.timeout_s!r}: must be a positive number of seconds"
        )
    if options.max_retries < 0:
        raise ConfigError(f"{RETRIES_OPTION}={options.max_retries}: must be 0 or more")
    extra = options.extra
    retry = RetryPolicy(
        max_retries=options.max_retries,
        base_s=_option_float(extra, "backoff_base_s", 0.5),
        cap_s=_option_float(extra, "backoff_cap_s", 20.0),
        retry_after_max_s=_option_float(extra, "retry_after_max_s", 60.0),
    )
    seed = extra.get("backoff_seed")
    clock = extra.get("clock", time.monotonic)
    on_event = extra.get("on_replica_event")
    if not callable(clock) or (on_event is not None and not callable(on_event)):
        raise ConfigError("openai backend options clock, on_replica_event: expected callables")
    return OpenAICompatBackend(
        model,
        urls,
        api_key=os.environ.get(ENV_API_KEY) or None,
        concurrency=options.concurrency,
        timeout_s=float(options.timeout_s),
        retry=retry,
        rng=random.Random(seed) if seed is not None else None,
        clock=clock,
        replica_failures=int(_option_float(extra, "replica_failures", 3)),
        replica_cooldown_s=_option_float(extra, "replica_cooldown_s", 10.0),
        on_replica_event=on_event,
        base_url_option=option,
    )
