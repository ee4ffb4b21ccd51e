"""`openai:MODEL`: any OpenAI-compatible chat-completions server (vLLM, SGLang, TGI, ...).

`--mtmcs-model=openai:Qwen/Qwen2.5-VL-7B-Instruct --mtmcs-base-url=http://host:8000/v1`; the base
URL may come from `OPENAI_BASE_URL` instead, and an API key (optional) from `OPENAI_API_KEY`. The
key is sent as a Bearer token and nowhere else: not in the fingerprint (which lands in caches and
baselines), not in reprs, not in error messages (server text is scrubbed of it too).

HTTP client: httpx, not the `openai` SDK. We use one endpoint (`POST /chat/completions`, plus
`GET /models` for the fingerprint); httpx is well kept, does sync and async, pooled keep-alive
connections and fine-grained timeouts, and is already a dependency. The SDK's 3.x line is built on
`httpx2`, so it would add a second HTTP stack (and its own retry loop, which we would have to switch
off to keep ours: status-aware, jittered, honouring Retry-After) for a single endpoint.

Concurrency: asyncio + `httpx.AsyncClient`, on an event loop that the backend owns in a daemon
thread; `generate` submits the whole call to it and blocks until every request has an answer.
`options.concurrency` slots (a queue that works as a semaphore, shared by threads calling at once)
bound the requests in flight; the slots are spread over clients of 8 connections each, because
httpcore's pool bookkeeping grows with the square of its size (see SHARD_CONNECTIONS). Why not `asyncio.run` per call: the engine calls `generate` once per turn, and a loop
per call would throw the connection pool away every turn; a private loop also works when the caller
already runs one (pytest-asyncio). Why not threads: hundreds in flight cost hundreds of OS threads,
and a thread sleeping in backoff is a thread doing nothing.

Retries: 408, 429, 5xx, timeouts and connection errors (refused, reset, dropped without an answer)
are retried up to `options.max_retries` times, with exponential backoff and full jitter (base
0.5 s, cap 20 s), never sooner than the server's `Retry-After` / `retry-after-ms` asks (that wait is
clipped at 60 s so that a misconfigured proxy cannot stall a run). A request keeps its concurrency
slot while it backs off: against an overloaded server that is the back-pressure we want. Other 4xx
are not retried. Tests shrink the waits with `BackendOptions.extra`: `backoff_base_s`,
`backoff_cap_s`, `retry_after_max_s` (and `backoff_seed` for reproducible jitter).

Images travel as `data:` URLs (mime type sniffed from the bytes). When the settings carry a pixel
budget (`max_pixels`), larger images are downscaled here so that every server sees the same budget
the `hf:` backend applies.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import functools
import io
import json
import math
import os
import random
import re
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from pytest_mtmcs.backends import BackendOptions, Generation
from pytest_mtmcs.errors import BackendError, ConfigError
from pytest_mtmcs.records import ChatRequest, ImageRef, Message

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
# Connections per httpx client. httpcore's pool rescans every connection on each request start and
# finish (O(connections x waiting) per event; encode/httpcore#1035, open): at 64 connections in one
# pool, 64 requests against a 50 ms stub took 0.7-0.9 s instead of 0.15 s. So the in-flight slots
# are spread over several small clients.
SHARD_CONNECTIONS = 8

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


def redact_url(url: str) -> str:
    """The URL without user:password@ (never echo credentials embedded in a base URL)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _one_line(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _server_error_text(response: httpx.Response) -> str:
    """The server's own explanation: OpenAI-style `error.message`, else the raw text."""
    try:
        payload = response.json()
    except ValueError:
        return _one_line(response.text)
    if isinstance(payload, dict):
        error = payload.get("error", payload.get("detail", payload.get("message")))
        if isinstance(error, dict) and "message" in error:
            return _one_line(str(error["message"]))
        if error is not None:
            return _one_line(str(error))
    return _one_line(response.text)


class _LoopThread:
    """An asyncio event loop running in a daemon thread, fed from other threads."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
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


class OpenAICompatBackend:
    """Chat completions over HTTP with many requests in flight, retries and backoff."""

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key: str | None = None,
        concurrency: int = 16,
        timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.spec = f"openai:{model}"
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self._api_key = api_key or None
        self._rng = rng or random.Random()
        self._chat_url = f"{self.base_url}/chat/completions"
        self._shown_url = redact_url(self._chat_url)
        parts = urlsplit(self.base_url)
        self._host = parts.netloc.rpartition("@")[2].lower()
        self._lock = threading.Lock()
        self._loop: _LoopThread | None = None
        self._clients: list[httpx.AsyncClient] = []
        self._slots: asyncio.Queue[httpx.AsyncClient] | None = None
        self._served: Mapping[str, Any] | None = None
        self._served_fetched = False
        self._images: OrderedDict[tuple[str, int | None], str] = OrderedDict()
        self._images_bytes = 0

    def __repr__(self) -> str:
        key = "set" if self._api_key else "unset"
        return (
            f"OpenAICompatBackend(model={self.model!r}, base_url={redact_url(self.base_url)!r}, "
            f"concurrency={self.concurrency}, timeout_s={self.timeout_s:g}, "
            f"max_retries={self.retry.max_retries}, api_key={key})"
        )

    # --- Backend protocol ------------------------------------------------------------------

    def fingerprint(self) -> Mapping[str, Any]:
        """spec, model, server host, and the served model's id/root/revision when listed."""
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

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None:
            return
        clients, self._clients, self._slots = self._clients, [], None
        if clients:
            try:
                loop.run(_close_all(clients), timeout=10)
            except Exception:  # closing is best effort; the loop goes anyway
                pass
        loop.stop()

    def __enter__(self) -> OpenAICompatBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- requests --------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        from pytest_mtmcs import __version__

        headers = {"User-Agent": f"pytest-mtmcs/{__version__}", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _scrub(self, text: str) -> str:
        # A server or proxy may echo the request's headers in its error text.
        return text.replace(self._api_key, "***") if self._api_key else text

    def _encode_or_error(self, request: ChatRequest) -> bytes | BackendError:
        try:
            return self.encode(request)
        except BackendError as exc:
            return exc
        except Exception as exc:  # one bad request must not sink the batch
            return BackendError(f"openai: cannot build the request: {type(exc).__name__}: {exc}")

    def encode(self, request: ChatRequest) -> bytes:
        """The JSON body of the chat-completions request for `request`."""
        settings = request.settings
        body = {
            "model": self.model,
            "messages": [self._message(m, settings.max_pixels) for m in request.messages],
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "seed": 0,
            "n": 1,
            "stream": False,
        }
        return json.dumps(body, separators=(",", ":")).encode()

    def _message(self, message: Message, max_pixels: int | None) -> dict[str, Any]:
        if message.image is None:
            return {"role": message.role, "content": message.text}
        parts: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": self._data_url(message.image, max_pixels)}}
        ]
        if message.text:
            parts.append({"type": "text", "text": message.text})
        return {"role": message.role, "content": parts}

    def _data_url(self, image: ImageRef, max_pixels: int | None) -> str:
        key = (image.sha256, max_pixels)
        with self._lock:
            if key in self._images:
                self._images.move_to_end(key)
                return self._images[key]
        try:
            data = image.data()
        except Exception as exc:
            where = f" {image.where}" if image.where else ""
            raise BackendError(f"openai: cannot read image{where}: {exc}") from None
        mime, data = _prepare_image(data, max_pixels, image.where)
        url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        with self._lock:
            if key not in self._images and len(url) <= IMAGE_CACHE_BYTES:
                self._images[key] = url
                self._images_bytes += len(url)
                while self._images_bytes > IMAGE_CACHE_BYTES:
                    self._images_bytes -= len(self._images.popitem(last=False)[1])
        return url

    # --- the event loop side ---------------------------------------------------------------

    def _loop_thread(self) -> _LoopThread:
        with self._lock:
            if self._loop is None:
                self._loop = _LoopThread()
            return self._loop

    def _ensure_slots(self) -> asyncio.Queue[httpx.AsyncClient]:
        # Runs on the loop thread only, so no lock: the clients and the queue belong to that loop.
        if self._slots is None:
            ssl_context = _ssl_context()
            sizes = [
                min(SHARD_CONNECTIONS, self.concurrency - start)
                for start in range(0, self.concurrency, SHARD_CONNECTIONS)
            ]
            self._clients = [
                httpx.AsyncClient(
                    headers=self._headers(),
                    timeout=httpx.Timeout(self.timeout_s),
                    # keep-alive == max: a surplus-idle eviction could close a connection the
                    # pool already handed to a waiting request (encode/httpcore#1110).
                    limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
                    verify=ssl_context,
                    follow_redirects=False,
                )
                for size in sizes
            ]
            slots: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
            for client, size in zip(self._clients, sizes, strict=True):
                for _ in range(size):
                    slots.put_nowait(client)
            self._slots = slots
        return self._slots

    async def _run_all(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        slots = self._ensure_slots()

        async def one(request: ChatRequest) -> Generation:
            # Taking a slot is the concurrency limit; the slot says which client to use.
            client = await slots.get()
            try:
                # Encoded only now: a call may hold thousands of multimodal requests, and their
                # bodies (megabytes of base64 each) must not all exist at once.
                body = await self._encode_async(request)
                if isinstance(body, BackendError):
                    return body
                return await self._post(client, body)
            except Exception as exc:  # a bug here must not lose the batch
                return BackendError(
                    f"openai: POST {self._shown_url}: unexpected {type(exc).__name__}: "
                    f"{self._scrub(str(exc))}"
                )
            finally:
                slots.put_nowait(client)

        return list(await asyncio.gather(*(one(r) for r in requests)))

    async def _encode_async(self, request: ChatRequest) -> bytes | BackendError:
        if any(m.image is not None for m in request.messages):
            # Reading, resizing and base64-encoding images would stall every request in flight.
            return await asyncio.to_thread(self._encode_or_error, request)
        return self._encode_or_error(request)

    async def _post(self, client: httpx.AsyncClient, body: bytes) -> Generation:
        attempts = 0
        last = ""
        for retry in range(self.retry.max_retries + 1):
            attempts += 1
            retry_after: float | None = None
            try:
                response = await client.post(
                    self._chat_url, content=body, headers={"Content-Type": "application/json"}
                )
            except httpx.TimeoutException as exc:
                last = f"timed out after {self.timeout_s:g} s ({type(exc).__name__})"
            except httpx.RequestError as exc:
                # Refused, reset, or closed without an answer (RemoteProtocolError).
                detail = _one_line(str(exc)) or "no detail"
                last = f"connection error ({type(exc).__name__}: {self._scrub(detail)})"
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return self._reply_text(response)
                text = self._scrub(_server_error_text(response))
                last = f"{status} {response.reason_phrase}" + (f": {text}" if text else "")
                if not is_retryable_status(status):
                    return BackendError(
                        f"openai: POST {self._shown_url} returned {last} (not retried)"
                        f"{self._hint(status, text)}"
                    )
                retry_after = parse_retry_after(response.headers)
            if retry < self.retry.max_retries:
                await asyncio.sleep(self.retry.delay(retry, self._rng, retry_after))
        return BackendError(
            f"openai: POST {self._shown_url} failed after {attempts} attempt"
            f"{'s' if attempts != 1 else ''}: {last}"
        )

    def _reply_text(self, response: httpx.Response) -> Generation:
        try:
            payload = response.json()
        except ValueError:
            return BackendError(
                f"openai: POST {self._shown_url} answered {response.status_code} with a body that "
                f"is not JSON: {self._scrub(_one_line(response.text, 120))!r}"
            )
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            return BackendError(
                f"openai: POST {self._shown_url} answered without choices[0].message.content: "
                f"{self._scrub(_one_line(json.dumps(payload), 200))}"
            )
        return content

    def _hint(self, status: int, text: str) -> str:
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

    # --- fingerprint -----------------------------------------------------------------------

    def _fetch_model_card(self) -> Mapping[str, Any] | None:
        """The server's card for our model from `GET /models`, or None when it does not answer."""
        try:
            response = httpx.get(
                f"{self.base_url}/models",
                headers=self._headers(),
                timeout=min(self.timeout_s, 10.0),
                verify=_ssl_context(),
            )
            response.raise_for_status()
            cards = response.json().get("data", [])
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        for card in cards if isinstance(cards, list) else []:
            if isinstance(card, dict) and card.get("id") == self.model:
                return {
                    k: card[k]
                    for k in ("id", "root", "revision")
                    if isinstance(card.get(k), (str, int, float))
                }
        return None


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes ~60 ms; every shard of every backend can share one context.
    return httpx.create_ssl_context()


async def _close_all(clients: Sequence[httpx.AsyncClient]) -> None:
    await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)


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
    base_url = (options.base_url or os.environ.get(ENV_BASE_URL) or "").strip()
    if not base_url:
        raise ConfigError(
            f"--mtmcs-model=openai:{model} needs the server's base URL: pass "
            f"{BASE_URL_OPTION}=http://HOST:8000/v1 or set {ENV_BASE_URL}"
        )
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        source = BASE_URL_OPTION if options.base_url else ENV_BASE_URL
        raise ConfigError(
            f"{source}={redact_url(base_url)!r}: expected an http(s) URL such as "
            "http://HOST:8000/v1"
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
    return OpenAICompatBackend(
        model,
        base_url,
        api_key=os.environ.get(ENV_API_KEY) or None,
        concurrency=options.concurrency,
        timeout_s=float(options.timeout_s),
        retry=retry,
        rng=random.Random(seed) if seed is not None else None,
    )
