"""The `openai:` backend's HTTP: proxies from the environment, TLS, and clear errors.

End to end against the stub server, through a forward proxy started here (stdlib asyncio on
127.0.0.1: a `CONNECT` tunnel for `https://`, absolute-URI forwarding for `http://`) that counts
what it forwarded. The servers are reached by a name that does not resolve (`stub.mtmcs.test`;
`.test` is reserved): only the proxy knows where it is, so an answer proves the proxy carried the
request. For `https://`, a TLS front (a throwaway self-signed certificate made with `openssl`)
decrypts and passes the bytes on to the stub. No timing: counters only.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import re
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from pytest_mtmcs.backends import BackendOptions
from pytest_mtmcs.backends.http_transport import Proxy, proxy_for
from pytest_mtmcs.backends.openai_compat import OpenAICompatBackend, create, split_base_urls
from pytest_mtmcs.errors import BackendError, ConfigError
from pytest_mtmcs.records import ChatRequest, GenerationSettings, Message, RequestMeta
from pytest_mtmcs.testing import StubServer

NAME = "stub.mtmcs.test"  # resolves nowhere; the test proxy maps it to 127.0.0.1
FAST = {"backoff_base_s": 0.001, "backoff_cap_s": 0.005}
PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authorization", "proxy-connection", "te"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's proxy, CA or key settings must not leak into these tests.
    for name in (*PROXY_VARS, *(v.upper() for v in PROXY_VARS)):
        monkeypatch.delenv(name, raising=False)
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)


def request(text: str = "hi") -> ChatRequest:
    return ChatRequest((Message("user", text),), GenerationSettings(), RequestMeta("d/1", 1))


def backend(url: str, **kw: Any) -> OpenAICompatBackend:
    return create("stub-model", BackendOptions(base_url=url, extra=FAST, **kw))


# --- the servers around the stub: a forward proxy, a TLS front, a raw server ------------------


class Loop:
    """An asyncio loop in a daemon thread, for the servers of one test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._servers: list[asyncio.Server] = []

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def serve(self, handler: Any, ssl_context: ssl.SSLContext | None = None) -> int:
        async def start() -> asyncio.Server:
            return await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_context)

        server = self.run(start())
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def close(self) -> None:
        async def stop() -> None:
            for server in self._servers:
                server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture
def loop() -> Iterator[Loop]:
    servers = Loop()
    yield servers
    servers.close()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes]:
    """(method, target, headers in lower case, raw head) of one request."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return method, target, headers, head


class ForwardProxy:
    """An HTTP forward proxy on 127.0.0.1: `CONNECT host:port` tunnels and absolute-URI requests.

    `hosts` maps names to addresses (the proxy resolves, the client never does). With `auth`
    (user, password), requests without the matching `Proxy-Authorization` get a 407."""

    def __init__(
        self, loop: Loop, hosts: dict[str, str], auth: tuple[str, str] | None = None
    ) -> None:
        self.hosts = hosts
        self.expected = None
        if auth is not None:
            self.expected = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
        self.seen: list[str] = []  # "CONNECT host:port" / "POST http://..." as forwarded
        self.refused: list[str] = []  # the same, answered 407
        self.credentials: list[str] = []  # every Proxy-Authorization received
        self.heads: list[bytes] = []  # every request head the proxy itself read
        self.port = loop.serve(self._handle)
        self.url = f"http://127.0.0.1:{self.port}"

    def url_with(self, user: str, password: str) -> str:
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                method, target, headers, head = await read_head(reader)
                self.heads.append(head)
                if "proxy-authorization" in headers:
                    self.credentials.append(headers["proxy-authorization"])
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                what = f"{method} {target}"
                if self.expected and headers.get("proxy-authorization") != self.expected:
                    self.refused.append(what)
                    text = b"proxy authentication required"
                    writer.write(
                        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                        b'Proxy-Authenticate: Basic realm="test"\r\n'
                        + f"Content-Length: {len(text)}\r\n\r\n".encode()
                        + text
                    )
                    await writer.drain()
                    if method == "CONNECT":
                        return
                    continue
                if method == "CONNECT":
                    host, _, port = target.rpartition(":")
                    up_reader, up_writer = await asyncio.open_connection(
                        self.hosts.get(host, host), int(port)
                    )
                    self.seen.append(what)
                    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    await writer.drain()
                    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
                    return
                await self._forward(method, target, headers, body, writer, what)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _forward(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        writer: asyncio.StreamWriter,
        what: str,
    ) -> None:
        url = urlsplit(target)
        assert url.scheme == "http" and url.hostname, f"not an absolute http URI: {target}"
        up_reader, up_writer = await asyncio.open_connection(
            self.hosts.get(url.hostname, url.hostname), url.port or 80
        )
        self.seen.append(what)
        path = url.path + (f"?{url.query}" if url.query else "")
        lines = [f"{method} {path} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in headers.items() if k not in HOP_BY_HOP]
        lines.append("Connection: close")  # so that the answer ends where the stream does
        up_writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await up_writer.drain()
        answer = await up_reader.read()
        up_writer.close()
        writer.write(answer)
        await writer.drain()


def tls_front(loop: Loop, cert: tuple[Path, Path], to_port: int) -> int:
    """A TLS server on 127.0.0.1 passing the decrypted bytes on to 127.0.0.1:`to_port`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert[0], cert[1])

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", to_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return loop.serve(handle, context)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(certificate, key) for `stub.mtmcs.test` and 127.0.0.1, self-signed, made for this run."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a throwaway certificate")
    folder = tmp_path_factory.mktemp("tls")
    crt, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt"),
            *("ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(crt), "-subj", f"/CN={NAME}"),
            *("-addext", f"subjectAltName=DNS:{NAME},IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return crt, key


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer() as server:
        yield server


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- requests through the proxy ----------------------------------------------------------------


@pytest.mark.parametrize("var", ["HTTP_PROXY", "http_proxy"])
def test_http_goes_through_the_proxy(
    var: str, stub: StubServer, loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = ForwardProxy(loop, {NAME: "127.0.0.1"})
    monkeypatch.setenv(var, proxy.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-through-the-proxy")
    url = f"http://{NAME}:{stub.port}/v1"
    with backend(url) as b:
        assert b.generate([request("a"), request("b")]) == [stub.respond({})] * 2
        assert b.fingerprint()["served"] == {"id": "stub-model", "root": "stub-model"}
    assert sorted(proxy.seen) == [
        f"GET {url}/models",
        f"POST {url}/chat/completions",
        f"POST {url}/chat/completions",
    ]
    assert stub.counts[200] == 2 and all(r.has_authorization for r in stub.requests)
    assert proxy.credentials == []  # none configured: none sent (the API key least of all)


@pytest.mark.parametrize("var", ["HTTPS_PROXY", "https_proxy"])
def test_https_goes_through_a_connect_tunnel(
    var: str,
    stub: StubServer,
    loop: Loop,
    cert: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tls_port = tls_front(loop, cert, stub.port)
    proxy = ForwardProxy(loop, {NAME: "127.0.0.1"})
    monkeypatch.setenv(var, proxy.url)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))  # trust the throwaway certificate
    monkeypatch.setenv("OPENAI_API_KEY", "sk-for-the-server-only")
    with backend(f"https://{NAME}:{tls_port}/v1", concurrency=4) as b:
        out = b.generate([request(f"q{i}") for i in range(8)])
    assert out == [stub.respond({})] * 8
    assert stub.counts[200] == 8 and all(r.has_authorization for r in stub.requests)
    # The key travels inside the tunnel only: the proxy never reads it.
    assert proxy.heads and not any(b"sk-for-the-server-only" in h for h in proxy.heads)
    # Keep-alive connections: each tunnel carries several requests; every one was a tunnel.
    assert 1 <= len(proxy.seen) <= 4
    assert set(proxy.seen) == {f"CONNECT {NAME}:{tls_port}"}


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("var", ["NO_PROXY", "no_proxy"])
def test_no_proxy_bypasses_the_proxy(
    scheme: str,
    var: str,
    stub: StubServer,
    loop: Loop,
    cert: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = tls_front(loop, cert, stub.port) if scheme == "https" else stub.port
    proxy = ForwardProxy(loop, {})
    monkeypatch.setenv(f"{scheme.upper()}_PROXY", proxy.url)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))
    url = f"{scheme}://127.0.0.1:{port}/v1"
    # Loopback is not special: without NO_PROXY the request goes to the proxy...
    with backend(url) as b:
        assert isinstance(b.generate([request()])[0], str)
    assert len(proxy.seen) == 1
    # ...and with the host in NO_PROXY it does not.
    proxy.seen.clear()
    monkeypatch.setenv(var, f"example.com,127.0.0.1:{port}" if var == "no_proxy" else "127.0.0.1")
    with backend(url) as b:
        assert isinstance(b.generate([request()])[0], str)
    assert proxy.seen == []
    assert stub.counts[200] == 2


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_proxy_asking_for_credentials(
    scheme: str,
    stub: StubServer,
    loop: Loop,
    cert: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = tls_front(loop, cert, stub.port) if scheme == "https" else stub.port
    proxy = ForwardProxy(loop, {NAME: "127.0.0.1"}, auth=("ci", "s3cret-pw"))
    var = f"{scheme.upper()}_PROXY"
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-for-the-server-only")
    url = f"{scheme}://{NAME}:{port}/v1"
    # No credentials, then wrong ones: one clear error each, not retried, no secret shown.
    for proxy_url in (proxy.url, proxy.url_with("ci", "wrong-pw")):
        monkeypatch.setenv(var, proxy_url)
        with backend(url, max_retries=3) as b:
            (result,) = b.generate([request()])
            shown = [str(result), repr(b)]
        assert isinstance(result, BackendError)
        message = str(result)
        assert f"(through the proxy {proxy.url} from {var})" in message
        assert "407 Proxy Authentication Required" in message and "(not retried)" in message
        assert f"{var}=http://USER:PASSWORD@HOST:PORT" in message
        assert all("wrong-pw" not in s for s in shown)
    assert len(proxy.refused) == 2 and proxy.seen == [] and stub.requests == []
    # With the right ones in the URL: through.
    monkeypatch.setenv(var, proxy.url_with("ci", "s3cret-pw"))
    with backend(url) as b:
        assert b.generate([request()]) == [stub.respond({})]
        assert "s3cret-pw" not in repr(b)
    assert len(proxy.seen) == 1 and stub.counts[200] == 1
    assert stub.requests[0].has_authorization
    assert proxy.expected in proxy.credentials
    assert all(c.startswith("Basic ") for c in proxy.credentials)  # never the server's key


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_proxy_refusing_connections(scheme: str, monkeypatch: pytest.MonkeyPatch) -> None:
    var = f"{scheme.upper()}_PROXY"
    port = closed_port()
    monkeypatch.setenv(var, f"http://ci:s3cret-pw@127.0.0.1:{port}")
    with backend(f"{scheme}://{NAME}:8000/v1", max_retries=1) as b:
        (result,) = b.generate([request()])
    message = str(result)
    assert isinstance(result, BackendError)
    assert message.startswith(
        f"openai: POST {scheme}://{NAME}:8000/v1/chat/completions (through the proxy "
        f"http://127.0.0.1:{port} from {var}) failed after 2 attempts: connection error "
        f"(ConnectError: cannot connect to the proxy: Connection refused; check {var}"
    )
    assert "s3cret-pw" not in message


# --- TLS and name resolution -------------------------------------------------------------------


def test_an_untrusted_certificate_is_a_clear_error(
    stub: StubServer, loop: Loop, cert: tuple[Path, Path]
) -> None:
    port = tls_front(loop, cert, stub.port)
    with backend(f"https://127.0.0.1:{port}/v1", max_retries=0) as b:
        (result,) = b.generate([request()])
    assert isinstance(result, BackendError)
    assert "TLS: the certificate of 127.0.0.1:" in str(result)
    assert "CERTIFICATE_VERIFY_FAILED" in str(result) and "SSL_CERT_FILE" in str(result)
    assert stub.requests == []


def test_https_to_a_plain_http_server_is_a_clear_error(stub: StubServer) -> None:
    with backend(f"https://127.0.0.1:{stub.port}/v1", max_retries=0) as b:
        (result,) = b.generate([request()])
    assert "TLS handshake with 127.0.0.1:" in str(result)
    assert "speaks https" in str(result)


def test_a_name_that_does_not_resolve_is_a_clear_error() -> None:
    with backend(f"http://{NAME}:8000/v1", max_retries=0) as b:
        (result,) = b.generate([request()])
    assert isinstance(result, BackendError)
    assert f"cannot resolve {NAME} (DNS" in str(result)


# --- answers that are not HTTP -------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "text"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "ProtocolError: not a valid HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", "ReadError: the answer broke off"),
        (b"", "ReadError: the server closed the connection before answering"),
    ],
)
def test_broken_answers_are_retried_then_clear_errors(answer: bytes, text: str, loop: Loop) -> None:
    answered: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, _, headers, head = await read_head(reader)
        answered.append(head + await reader.readexactly(int(headers["content-length"])))
        writer.write(answer)
        await writer.drain()
        writer.close()

    port = loop.serve(handle)
    with backend(f"http://127.0.0.1:{port}/v1", max_retries=1) as b:
        (result,) = b.generate([request()])
    assert isinstance(result, BackendError)
    assert "failed after 2 attempts: connection error (" in str(result)
    assert text in str(result)
    assert len(answered) == 2


def test_chunked_and_interim_answers_are_read(loop: Loop) -> None:
    reply = b'{"choices":[{"message":{"role":"assistant","content":"chunked ok"}}]}'
    chunked = b"".join(
        b"%x\r\n%s\r\n" % (len(reply[i : i + 7]), reply[i : i + 7]) for i in range(0, len(reply), 7)
    )
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked
        + b"0\r\n\r\n"
    )
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                _, _, headers, _ = await read_head(reader)
                await reader.readexactly(int(headers["content-length"]))
                for i in range(len(answer)):  # byte by byte
                    writer.write(answer[i : i + 1])
                    await writer.drain()
        except asyncio.IncompleteReadError:
            writer.close()

    port = loop.serve(handle)
    with backend(f"http://127.0.0.1:{port}/v1", concurrency=1) as b:
        assert b.generate([request("a"), request("b"), request("c")]) == ["chunked ok"] * 3
    assert len(connections) == 1  # one keep-alive connection served all three


def test_a_backend_dropped_without_close_releases_its_loop_and_connections(
    stub: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    b = backend(stub.base_url)
    assert isinstance(b.generate([request()])[0], str)
    assert b._loop is not None
    thread = b._loop._thread
    del b
    gc.collect()
    thread.join(60)  # a bound on a hang only
    assert not thread.is_alive()
    assert not [r for r in caplog.records if "Unclosed" in r.getMessage()]


# --- configuration -------------------------------------------------------------------------


def test_proxy_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://upper:3128")
    monkeypatch.setenv("HTTP_PROXY", "plain:3128")
    assert proxy_for("https://models.example/v1") == Proxy("http://upper:3128", "HTTPS_PROXY")
    assert proxy_for("http://models.example/v1") == Proxy("http://plain:3128", "HTTP_PROXY")
    monkeypatch.setenv("https_proxy", "http://lower:3128")  # the lower-case one wins
    assert proxy_for("https://models.example/v1") == Proxy("http://lower:3128", "https_proxy")
    monkeypatch.setenv("NO_PROXY", ".internal, gpu-host:8000")
    assert proxy_for("https://a.b.internal/v1") is None  # domain suffix
    assert proxy_for("http://gpu-host:8000/v1") is None  # host:port
    assert proxy_for("http://gpu-host:9000/v1") is not None  # another port
    monkeypatch.setenv("NO_PROXY", "*")
    assert proxy_for("https://models.example/v1") is None


def test_a_proxy_variable_that_is_not_an_http_proxy_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "socks5://ci:s3cret-pw@proxy.corp:1080")
    with pytest.raises(
        ConfigError, match=re.escape("HTTPS_PROXY='socks5://proxy.corp:1080'")
    ) as info:
        backend("https://models.example/v1")
    assert "NO_PROXY" in str(info.value) and "s3cret-pw" not in str(info.value)
    backend("http://models.example/v1").close()  # HTTPS_PROXY is not for http:// servers


def test_base_urls_split() -> None:
    assert split_base_urls("http://a/v1, http://b/v1/,http://a/v1") == [
        "http://a/v1",
        "http://b/v1",
    ]
    assert split_base_urls(["http://a/v1", "http://c/v1,http://d/v1"]) == [
        "http://a/v1",
        "http://c/v1",
        "http://d/v1",
    ]
    assert split_base_urls(None) == []
