"""A local stand-in for an OpenAI-compatible chat-completions server (vLLM, SGLang, TGI).

Tests, benchmarks and users checking their CI wiring start it instead of a real model server:

    with StubServer(respond=lambda body: "I can't help with that.", latency_s=0.05) as server:
        run(base_url=server.base_url)          # "http://127.0.0.1:PORT/v1"
        assert server.counts[200] == 3

It is a real HTTP server (stdlib only, one thread per connection, HTTP/1.1 keep-alive) on
127.0.0.1 and never on any other interface: it has no authentication worth the name and must not
be reachable from the network. Faults are injected per request, either from a scripted sequence
(`faults=["429", "500", "drop"]`, consumed in arrival order, then normal answers) or from a
callable (`random_faults(rate=0.1, kinds=("429", "503"), seed=0)`):

- `"429"`: Too Many Requests with a `Retry-After` header (`retry_after`, seconds);
- `"500"`, `"502"`, `"503"`, `"400"`, `"404"`: that status with an OpenAI-style error body;
- `"drop"`: the connection is closed without any response;
- `"slow"`: the answer comes after `slow_s` seconds (beyond a client's timeout); if the stub
  stops first, the request is dropped unanswered;
- `"spike"`: a latency spike: the (normal) answer comes after `spike_s` seconds;
- `"malformed"`: a 200 whose body has no `choices`;
- `"truncated"`: a 200 whose JSON body is cut in the middle (framing intact);
- `"reset"`: the status line, headers and half the body, then a connection reset (TCP RST).

Deterministic control for tests (no timing): `hold=K` holds every answer until K chat requests
have arrived (a barrier: proves K requests were in flight at once); `kill_after=N` makes the
server die when its N-th chat request arrives (that request and every open connection are
dropped unanswered, the port is closed; `killed` is set), and `start()` brings it back on the same
port. `answered_bodies` lists the bodies answered with a 200, to count generations.

Latency: `latency_s` for every answer, or with `latency_sigma` a heavy tail: lognormal with median
`latency_s` (sigma 0.99: p99 = 10x the median), seeded by `latency_seed`; `latency_waited` sums
what was drawn (benchmarks divide it by `latency_draws` for the mean).

What it answers (`mode`, see `stub_judges` for the rules): `model` (the default) answers as the
model under test, with the fixed `DEFAULT_ANSWER`, a `respond(body) -> str` callable, or
`replies="varied"` (a reply chosen by a hash of the last user message); `rubric`, `safe-unsafe`
and `guard` answer every request in that model judge's format, with a verdict derived from the
reply being judged; `auto` recognises a judge's prompt and answers it in that judge's format, and
answers anything else as the model under test.

Served models and keys, as a real server checks them: `model` names the served model(s) (one name
or several); `GET /v1/models` lists them, and a chat request naming another model gets a 404
`model_not_found`. With no `model`, any name is accepted and `stub-model` is listed. `api_key`:
every request without `Authorization: Bearer <api_key>` gets a 401 `invalid_api_key` (except
`GET /health`, which servers such as vLLM leave open for probes). Error bodies have OpenAI's shape,
`{"error": {"message", "type", "param", "code"}}`.

Command line (for users): `python -m pytest_mtmcs.testing.stub_server --port 8000 --mode auto
--model stub-model --model stub-judge --api-key sk-stub`; `--help` lists every flag, and
docs/trying-judges.md walks through trying the judges with it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import signal
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

# Never anything else: see the module docstring.
HOST = "127.0.0.1"

DEFAULT_ANSWER = (
    "I can help with the general, safe parts of this. Please tell me more about what you need."
)
FAULT_KINDS: tuple[str, ...] = (
    "429",
    "400",
    "404",
    "500",
    "502",
    "503",
    "drop",
    "slow",
    "spike",
    "malformed",
    "truncated",
    "reset",
)

MODES: tuple[str, ...] = ("model", "rubric", "safe-unsafe", "guard", "auto")
REPLY_POLICIES: tuple[str, ...] = ("fixed", "varied")
# What `GET /v1/models` lists when any model name is accepted.
DEFAULT_MODEL = "stub-model"

Responder = Callable[[dict[str, Any]], str]
# (0-based index of the chat request, its body) -> a fault kind, or None for a normal answer.
FaultPolicy = Callable[[int, dict[str, Any]], str | None]


def default_respond(body: dict[str, Any]) -> str:
    """The fixed benign answer."""
    return DEFAULT_ANSWER


def random_faults(rate: float, kinds: Sequence[str] = ("429", "503"), seed: int = 0) -> FaultPolicy:
    """A fault policy injecting one of `kinds` into a share `rate` of requests, reproducibly."""
    _check_kinds(kinds)
    rng = random.Random(seed)
    lock = threading.Lock()

    def policy(index: int, body: dict[str, Any]) -> str | None:
        with lock:
            return rng.choice(list(kinds)) if rng.random() < rate else None

    return policy


def _check_kinds(kinds: Iterable[str | None]) -> None:
    unknown = sorted(
        {str(k) for k in kinds if k is not None and k not in FAULT_KINDS and k != "ok"}
    )
    if unknown:
        raise ValueError(f"unknown fault kind(s) {unknown}; known: {', '.join(FAULT_KINDS)}, ok")


@dataclass(frozen=True)
class RecordedRequest:
    """What the stub saw of one request. The Authorization header itself is never stored."""

    method: str
    path: str
    body: dict[str, Any] | None
    has_authorization: bool
    # True/False when the stub was given `api_key` to check against; None otherwise.
    authorized: bool | None
    fault: str | None
    status: int | str  # the status sent, or "drop"


class StubServer:
    """An OpenAI-compatible chat-completions server on 127.0.0.1, in a background thread."""

    def __init__(
        self,
        respond: Responder | None = None,
        *,
        latency_s: float = 0.0,
        faults: Sequence[str | None] | FaultPolicy | None = None,
        retry_after: float = 1.0,
        slow_s: float = 30.0,
        spike_s: float = 0.2,
        model: str | Sequence[str] | None = None,
        api_key: str | None = None,
        port: int = 0,
        hold: int = 0,
        kill_after: int | None = None,
        log: str | None = None,
        mode: str = "model",
        replies: str | None = None,
        latency_sigma: float = 0.0,
        latency_seed: int = 0,
    ) -> None:
        """`model`: when set, the model name(s) served (others get 404, as vLLM does); when
        None, any model name is accepted and `GET /v1/models` lists `stub-model`.
        `api_key`: when set, requests without `Authorization: Bearer <api_key>` get 401.
        `mode`: one of MODES (module docstring). `replies`: `fixed` or `varied`, how the model
        under test answers when no `respond` is given (default: varied in `auto`, else fixed)."""
        from pytest_mtmcs.testing import stub_judges

        if faults is not None and not callable(faults):
            _check_kinds(faults)
        if mode not in MODES:
            raise ValueError(f"unknown stub mode {mode!r}; known: {', '.join(MODES)}")
        if replies is None:
            replies = "varied" if mode == "auto" else "fixed"
        if replies not in REPLY_POLICIES:
            raise ValueError(f"unknown replies {replies!r}; known: {', '.join(REPLY_POLICIES)}")
        names = (model,) if isinstance(model, str) else tuple(model or ())
        if any(not n for n in names):
            raise ValueError("a served model name cannot be empty")
        self.mode = mode
        self.replies = replies
        # Served names; empty: any name is accepted.
        self.models: tuple[str, ...] = tuple(dict.fromkeys(names))
        self.model = self.models[0] if self.models else None
        # How the model under test answers; the judge modes answer judges through `answer`.
        self.respond: Responder = respond or (
            stub_judges.varied_respond if replies == "varied" else default_respond
        )
        # In what the server reports of its models, so that a response cache keyed by it does
        # not serve one stub configuration's replies to another (custom `respond`: not known).
        self.revision: str | None = None
        if mode in ("model", "auto") and (mode, replies) != ("model", "fixed"):
            self.revision = f"mtmcs-stub-{mode}-{replies}"
        elif mode not in ("model", "auto"):
            self.revision = f"mtmcs-stub-{mode}"
        self.latency_s = latency_s
        self.latency_sigma = latency_sigma
        self._latency_rng = random.Random(latency_seed)
        self.latency_waited = 0.0
        self.latency_draws = 0
        self.retry_after = retry_after
        self.slow_s = slow_s
        self.spike_s = spike_s
        self.hold = hold
        self.kill_after = kill_after
        self.killed = threading.Event()
        # With a log file: one line per chat request, and no bodies kept in memory.
        self._log = open(log, "a", encoding="utf-8", buffering=1) if log else None
        self._dead = False
        self._held = threading.Event()
        self._arrived = 0
        self._connections: set[socket.socket] = set()
        self._api_key = api_key
        self._faults = faults
        self._port = port
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._bound_port: int | None = None
        self._chat_index = 0
        self.requests: list[RecordedRequest] = []
        # status (int) or "drop" -> number of chat-completions requests ended that way
        self.counts: Counter[int | str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0

    def __repr__(self) -> str:
        return f"StubServer({self.base_url if self._httpd else 'stopped'})"

    def answer(self, body: dict[str, Any]) -> str:
        """The text answered to a chat request, per `mode`."""
        from pytest_mtmcs.testing import stub_judges

        kind = self.mode
        if kind == "auto":
            kind = stub_judges.detect(body) or "model"
        if kind == "model":
            return self.respond(body)
        return stub_judges.judge_answer(kind, body)

    def served(self, model: Any) -> bool:
        return not self.models or model in self.models

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> StubServer:
        """Starts serving (again, after `stop` or a kill: on the same port)."""
        if self._httpd is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"stub": self})
        port = self._bound_port if self._bound_port is not None else self._port
        self._dead = False
        httpd = _Server((HOST, port), handler)
        self._httpd = httpd
        self._bound_port = int(httpd.server_address[1])
        self._stopping.clear()
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def kill(self) -> None:
        """Dies as a crashed server does: the port closes, open connections drop unanswered."""
        with self._lock:
            self._dead = True
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.stop()
        self.killed.set()

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()  # wakes handlers sleeping in latency or `slow`
        httpd.shutdown()
        httpd.server_close()
        if self._log is not None:
            self._log.flush()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port it listens on (after `stop`: the port it listened on)."""
        if self._bound_port is None:
            raise RuntimeError("the stub server has not been started")
        return self._bound_port

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    # --- what the tests read ---------------------------------------------------------------

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def chat_bodies(self) -> list[dict[str, Any]]:
        return [r.body for r in self.chat_requests if r.body is not None]

    @property
    def answered_bodies(self) -> list[dict[str, Any]]:
        """Bodies of the chat requests answered with a 200 chat completion (generations)."""
        return [
            r.body
            for r in self.chat_requests
            if r.status == 200 and r.body is not None and r.fault not in ("malformed", "truncated")
        ]

    def heal(self) -> None:
        """No more injected faults from now on (the same server, so the same cache keys)."""
        with self._lock:
            self._faults = None

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.counts.clear()
            self._chat_index = 0
            self.max_in_flight = self.in_flight

    # --- used by the handler ---------------------------------------------------------------

    def _arrive(self) -> bool:
        """Counts a chat request in; False when the server is (now) dead: drop it."""
        kill = False
        with self._lock:
            if self._dead:
                return False
            self._arrived += 1
            if self.hold and self._arrived >= self.hold:
                self._held.set()
            if self.kill_after is not None and self._arrived >= self.kill_after:
                self.kill_after = None
                self._dead = kill = True
        if kill:
            # From another thread: shutting the server down waits for its accept loop.
            threading.Thread(target=self.kill, daemon=True).start()
            return False
        if self.hold:
            self._held.wait(60)  # a safety bound only; tests assert on counts, never on time
        return not self._dead

    def _next_fault(self, body: dict[str, Any]) -> str | None:
        with self._lock:
            index = self._chat_index
            self._chat_index += 1
        faults = self._faults
        if faults is None:
            return None
        if callable(faults):
            fault = faults(index, body)
        else:
            fault = faults[index] if index < len(faults) else None
        return None if fault in (None, "ok") else fault

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            if self._log is not None and request.path.endswith("/chat/completions"):
                digest = hashlib.sha256(
                    json.dumps(request.body, sort_keys=True).encode()
                ).hexdigest()
                line = {"status": request.status, "fault": request.fault, "body": digest}
                self._log.write(json.dumps(line) + "\n")
                request = RecordedRequest(
                    request.method,
                    request.path,
                    None,
                    request.has_authorization,
                    request.authorized,
                    request.fault,
                    request.status,
                )
            self.requests.append(request)
            if request.path.endswith("/chat/completions"):
                self.counts[request.status] += 1

    def _unsent(self, request: RecordedRequest) -> None:
        """An answer recorded before it left, whose write then failed (the client or a kill
        closed the connection): it never reached the client, so it is no generation."""
        import dataclasses

        with self._lock:
            if self._log is not None:
                digest = hashlib.sha256(json.dumps(request.body, sort_keys=True).encode())
                line = {"status": "unsent", "fault": request.fault, "body": digest.hexdigest()}
                self._log.write(json.dumps(line) + "\n")
            for i in range(len(self.requests) - 1, -1, -1):
                if self.requests[i] is request:
                    self.requests[i] = dataclasses.replace(request, status="unsent")
                    if request.path.endswith("/chat/completions"):
                        self.counts[request.status] -= 1
                        self.counts["unsent"] += 1
                    break

    def _check_auth(self, header: str | None) -> bool | None:
        if self._api_key is None:
            return None
        return header == f"Bearer {self._api_key}"

    def _latency(self) -> float:
        """This answer's delay: `latency_s`, or a lognormal draw around it (`latency_sigma`)."""
        if not self.latency_sigma:
            return self.latency_s
        with self._lock:
            delay = self.latency_s * math.exp(self.latency_sigma * self._latency_rng.gauss(0, 1))
            self.latency_waited += delay
            self.latency_draws += 1
        return delay

    def _sleep(self, seconds: float) -> bool:
        """Sleeps `seconds` or until the stub stops; True if it stops."""
        return seconds > 0 and self._stopping.wait(seconds)


class _Server(ThreadingHTTPServer):
    # socketserver's default backlog of 5 drops the SYNs of a burst of new connections, and the
    # client then waits a 1 s SYN retransmit: that would measure the kernel, not the client.
    request_queue_size = 1024
    # Handler threads may sit in a `slow` sleep; they must not keep the process alive.
    daemon_threads = True


class _Handler(BaseHTTPRequestHandler):
    stub: StubServer  # set on the per-server subclass
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
    server_version = "mtmcs-stub/1"

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes; with Nagle on, the body waits for the
        # client's delayed ACK (~40 ms on Linux) and every answer looks 40 ms slower.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.stub._lock:
            dead = self.stub._dead
            self.stub._connections.add(self.connection)
        if dead:
            self.close_connection = True
            self._drop()

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:
            # The client went away mid-request (reset, timeout): nothing to answer, no trace.
            self.close_connection = True

    def finish(self) -> None:
        with self.stub._lock:
            self.stub._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        # Silent: tests and benchmarks would drown in access logs.
        pass

    def do_GET(self) -> None:
        stub = self.stub
        authorized = stub._check_auth(self.headers.get("Authorization"))
        path = self.path.split("?", 1)[0].rstrip("/")
        self._unrecorded = (
            "GET",
            self.path,
            None,
            "Authorization" in self.headers,
            authorized,
            None,
        )
        if path in ("/health", "/v1/health"):
            status = self._send_json(200, {"status": "ok"})
        elif authorized is False:
            status = self._send_unauthorized()
        elif path in ("/v1/models", "/models"):
            cards = []
            for name in stub.models or (DEFAULT_MODEL,):
                card: dict[str, Any] = {
                    "id": name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "mtmcs-stub",
                    "root": name,
                    "parent": None,
                    "max_model_len": 32768,
                }
                if stub.revision is not None:
                    card["revision"] = stub.revision
                cards.append(card)
            status = self._send_json(200, {"object": "list", "data": cards})
        else:
            status = self._send_error(404, f"no route {path}", "not_found_error")
        self._record_once(status)

    def do_POST(self) -> None:
        stub = self.stub
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.split("?", 1)[0].rstrip("/")
        has_auth = "Authorization" in self.headers
        authorized = stub._check_auth(self.headers.get("Authorization"))
        self._unrecorded = ("POST", self.path, None, has_auth, authorized, None)
        if path not in ("/v1/chat/completions", "/chat/completions"):
            self._send_error(404, f"no route {path}", "not_found_error")
            return
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("the body is not a JSON object")
        except ValueError as exc:
            self._send_error(400, f"invalid JSON body: {exc}", "invalid_request_error")
            return

        stub._enter()
        fault: str | None = None
        answered: int | str
        try:
            if not stub._arrive():
                self._unrecorded = ("POST", self.path, body, has_auth, authorized, "killed")
                self._drop()
                self._record_once("drop")
                return
            fault = stub._next_fault(body)
            # Recorded just before the answer leaves (see _send_json): a client that has its
            # answer must find its request in the record, however loaded the machine.
            self._unrecorded = ("POST", self.path, body, has_auth, authorized, fault)
            answered = self._answer(body, fault, authorized)
        finally:
            stub._leave()
        self._record_once(answered)

    def _answer(
        self, body: dict[str, Any], fault: str | None, authorized: bool | None
    ) -> int | str:
        stub = self.stub
        stub._sleep(stub._latency())
        if authorized is False:
            return self._send_unauthorized()
        if fault == "drop":
            self._drop()
            return "drop"
        if fault == "slow":
            if stub._sleep(stub.slow_s):
                # Woken because the stub stops: a server going down drops the request it holds.
                # Never answered, so never a generation (an answer written now could still land
                # in the socket of a client that gave up on it, and be counted as one).
                self._drop()
                return "drop"
        elif fault == "spike":
            stub._sleep(stub.spike_s)
        elif fault == "429":
            return self._send_error(
                429,
                "rate limit exceeded, retry later",
                "rate_limit_error",
                headers={"Retry-After": _seconds(stub.retry_after)},
            )
        elif fault is not None and fault.isdigit():
            return self._send_error(int(fault), f"injected fault {fault}", "server_error")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._send_error(
                400, "'messages' must be a non-empty list", "invalid_request_error"
            )
        model = body.get("model")
        if not stub.served(model):
            # vLLM's wording, in OpenAI's error shape and code.
            return self._send_error(
                404,
                f"The model `{model}` does not exist.",
                "invalid_request_error",
                code="model_not_found",
                param="model",
            )
        if fault == "malformed":
            return self._send_json(200, {"id": "chatcmpl-stub", "object": "chat.completion"})
        if stub._dead:  # killed while this request waited: it never gets its answer
            self._drop()
            return "drop"
        try:
            text = stub.answer(body)
        except Exception as exc:  # a responder bug becomes a visible 500
            return self._send_error(500, f"responder failed: {exc!r}", "server_error")
        payload = {
            "id": f"chatcmpl-stub-{id(body):x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }
        if fault == "truncated":
            data = json.dumps(payload).encode()
            return self._send_raw(200, data[: len(data) // 2], len(data) // 2)
        if fault == "reset":
            data = json.dumps(payload).encode()
            self._send_raw(200, data[: len(data) // 2], len(data), reset=True)
            return "reset"
        return self._send_json(200, payload)

    def _drop(self) -> None:
        # No status line, no headers: the client sees the peer close mid-request.
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    _unrecorded: tuple[Any, ...] | None = None

    def _record_once(self, status: int | str) -> RecordedRequest | None:
        if self._unrecorded is None:
            return None
        fields: list[Any] = [*self._unrecorded, status]
        record = RecordedRequest(*fields)
        self.stub._record(record)
        self._unrecorded = None
        return record

    def _send_json(
        self, status: int, payload: Any, headers: Mapping[str, str] | None = None
    ) -> int:
        data = json.dumps(payload).encode()
        record = self._record_once(status)
        try:
            self.send_response(status, _reason(status))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            # The client went away (it timed out on a `slow` answer): nothing to tell it.
            self.close_connection = True
            if record is not None:
                self.stub._unsent(record)
        return status

    def _send_raw(self, status: int, data: bytes, length: int, reset: bool = False) -> int:
        """`data` under a Content-Length of `length`; `reset`: then abort the connection (RST)."""
        self._record_once(status if not reset else "reset")
        try:
            self.send_response(status, _reason(status))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(length))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
            if reset:
                # SO_LINGER 0: close() sends a RST instead of a FIN.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
                self.connection.close()
        except OSError:
            self.close_connection = True
        return status

    def _send_error(
        self,
        status: int,
        message: str,
        kind: str,
        headers: Mapping[str, str] | None = None,
        *,
        code: str | int | None = None,
        param: str | None = None,
    ) -> int:
        error = {
            "error": {
                "message": message,
                "type": kind,
                "param": param,
                "code": status if code is None else code,
            }
        }
        return self._send_json(status, error, headers)

    def _send_unauthorized(self) -> int:
        # OpenAI's wording and code; the key sent is never echoed (it may be someone's real one).
        if "Authorization" in self.headers:
            message = "Incorrect API key provided."
        else:
            message = (
                "You didn't provide an API key. Provide it in an Authorization header using "
                "Bearer auth (Authorization: Bearer YOUR_KEY)."
            )
        return self._send_error(
            401,
            message,
            "invalid_request_error",
            headers={"WWW-Authenticate": "Bearer"},
            code="invalid_api_key",
        )


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_mtmcs.testing.stub_server",
        description="A local OpenAI-compatible chat-completions stub on 127.0.0.1: checks the "
        "CI wiring of `--mtmcs-model=openai:MODEL`, and answers the model judges and guards in "
        "their formats (--mode), to try them without a GPU (docs/trying-judges.md).",
    )
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="model",
        help="what it answers: model (the model under test), rubric, safe-unsafe or guard (that "
        "judge's answer format), auto (a judge's prompt in that judge's format, anything else "
        "as the model under test) (default: model)",
    )
    parser.add_argument(
        "--replies",
        choices=REPLY_POLICIES,
        default=None,
        help="how the model under test answers: fixed (one reply, --reply) or varied (declines "
        "some requests and complies with others, by a hash of the last user message) "
        "(default: varied with --mode auto, else fixed)",
    )
    parser.add_argument(
        "--reply",
        default=None,
        metavar="TEXT",
        help="the fixed reply of the model under test (default: a benign offer to help)",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="NAME",
        help="a model name served, repeatable; requests naming another get 404 model_not_found "
        f"(default: any name; /v1/models lists {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help="require `Authorization: Bearer KEY` (give the plugin OPENAI_API_KEY=KEY); other "
        "requests get 401 (default: none required)",
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay of every answer")
    parser.add_argument(
        "--latency-sigma",
        type=float,
        default=0.0,
        help="lognormal delays with median --latency-ms and this sigma (0.99: p99 = 10x median)",
    )
    parser.add_argument(
        "--fault-rate", type=float, default=0.0, help="share of requests given a fault"
    )
    parser.add_argument(
        "--fault-kinds",
        default="429,503",
        help=f"comma-separated kinds for --fault-rate, from: {', '.join(FAULT_KINDS)}",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault and latency draws")
    parser.add_argument(
        "--log",
        default=None,
        help="write one JSON line per chat request (status, fault, sha256 of the body) to this "
        "file, and keep no bodies in memory (for long load runs)",
    )
    return parser


def server_from_args(args: argparse.Namespace, *, port: int | None = None) -> StubServer:
    """The (unstarted) server the command line describes; `port` overrides `--port`.

    Raises ValueError on a bad combination of flags."""
    faults: FaultPolicy | None = None
    if args.fault_rate > 0:
        kinds = [k.strip() for k in args.fault_kinds.split(",") if k.strip()]
        faults = random_faults(args.fault_rate, kinds, args.seed)
    respond: Responder | None = None
    if args.reply is not None:
        if args.replies == "varied":
            raise ValueError("--reply is the fixed reply: it cannot go with --replies varied")
        text = args.reply
        replies = "fixed"

        def respond(body: dict[str, Any]) -> str:
            return text

    else:
        replies = args.replies
    server = StubServer(
        respond,
        latency_s=args.latency_ms / 1000.0,
        latency_sigma=args.latency_sigma,
        latency_seed=args.seed,
        faults=faults,
        model=args.model,
        api_key=args.api_key,
        port=args.port if port is None else port,
        log=args.log,
        mode=args.mode,
        replies=replies,
    )
    if args.reply is not None:
        digest = hashlib.sha256(args.reply.encode("utf-8")).hexdigest()[:12]
        server.revision = f"mtmcs-stub-{server.mode}-fixed-{digest}"
    return server


def banner(server: StubServer) -> str:
    """The line the command prints when it starts: where, and what it serves."""
    models = ", ".join(server.models) if server.models else f"any name ({DEFAULT_MODEL} listed)"
    key = "API key required" if server._api_key is not None else "no API key"
    if server.mode in ("model", "auto"):
        what = f"mode {server.mode}, replies {server.replies}"
    else:
        what = f"mode {server.mode}"
    return (
        f"stub chat-completions server at {server.base_url} "
        f"({what}, models {models}, {key}; Ctrl-C to stop)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        server = server_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        server.start()
    except OSError as exc:
        parser.error(f"cannot listen on {HOST}:{args.port}: {exc}")
    print(banner(server), flush=True)

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # SIGTERM stops it as Ctrl-C does; so does SIGINT even when started in the background, where
    # a shell starts it with SIGINT ignored.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        answered = ", ".join(f"{k}: {v}" for k, v in sorted(server.counts.items(), key=str))
        print(f"stopped; answered {answered or 'nothing'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
