"""The lean HTTP/1.1 client of the `openai:` backend, against scripted raw servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from pytest_mtmcs.backends import BackendOptions
from pytest_mtmcs.backends.http_client import (
    ConnectError,
    ConnectionPool,
    Origin,
    ProtocolError,
    ReadError,
    RequestTimeout,
    check_no_proxy,
)
from pytest_mtmcs.backends.openai_compat import create, split_base_urls
from pytest_mtmcs.errors import ConfigError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


def serve(handler: Handler, *, ssl_context: ssl.SSLContext | None = None) -> Callable[..., object]:
    """Runs `body(pool_url)` in a loop with a raw server answering by `handler`."""

    def run(body: Callable[[str], Awaitable[object]]) -> object:
        async def main() -> object:
            server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_context)
            port = server.sockets[0].getsockname()[1]
            scheme = "https" if ssl_context else "http"
            try:
                return await body(f"{scheme}://127.0.0.1:{port}/v1")
            finally:
                server.close()

        return asyncio.run(main())

    return run


def answering(*responses: bytes, close_after: bool = False) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for response in responses:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            # Byte by byte: the parser must not rely on whole answers arriving at once.
            for i in range(len(response)):
                writer.write(response[i : i + 1])
                await writer.drain()
        if close_after:
            writer.close()
        else:
            await reader.read()  # until the client closes

    return handler


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"


def test_content_length_and_keep_alive() -> None:
    async def body(url: str) -> tuple[int, int]:
        pool = ConnectionPool(url)
        first = await pool.request("POST", "/chat/completions", b'{"a":1}')
        second = await pool.request("POST", "/chat/completions", [b'{"a":', b"2}"])
        pool.close()
        assert (first.status, first.body, second.body) == (200, b"{}", b"{}")
        assert first.headers["content-type"] == "application/json"
        return pool.opened, second.status

    assert serve(answering(OK, OK))(body) == (1, 200)


def test_chunked_body_with_extensions_and_trailers() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: yes\r\n\r\n"
    )

    async def body(url: str) -> tuple[bytes, bytes, int]:
        pool = ConnectionPool(url)
        a = await pool.request("POST", "/x", b"1")
        b = await pool.request("POST", "/x", b"2")
        pool.close()
        return a.body, b.body, pool.opened

    assert serve(answering(chunked, chunked))(body) == (b"hello world", b"hello world", 1)


def test_connection_close_framing_and_interim_answers() -> None:
    # 100 Continue first, then an HTTP/1.0 answer whose body ends when the connection does.
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\nuntil close"

    async def body(url: str) -> tuple[int, bytes]:
        pool = ConnectionPool(url)
        response = await pool.request("GET", "/models")
        pool.close()
        return response.status, response.body

    assert serve(answering(answer, close_after=True))(body) == (200, b"until close")


def test_connection_close_header_means_a_new_connection() -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(closing)
        await writer.drain()
        writer.close()

    async def body(url: str) -> int:
        pool = ConnectionPool(url)
        for _ in range(3):
            assert (await pool.request("POST", "/x", b"{}")).body == b"{}"
        pool.close()
        return pool.opened

    assert serve(handler)(body) == 3


@pytest.mark.parametrize(
    ("answer", "error", "text"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", ProtocolError, "not an HTTP/1.x response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", ProtocolError, "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", ProtocolError, "chunk"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", ReadError, "part of the answer"),
        (b"", ReadError, "no answer"),
    ],
)
def test_broken_answers_are_transport_errors(
    answer: bytes, error: type[Exception], text: str
) -> None:
    async def body(url: str) -> None:
        pool = ConnectionPool(url)
        with pytest.raises(error, match=text):
            await pool.request("POST", "/x", b"{}")
        pool.close()

    serve(answering(answer, close_after=True))(body)


def test_no_answer_within_the_deadline_is_a_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers

    async def body(url: str) -> None:
        pool = ConnectionPool(url, timeout_s=0.1)
        with pytest.raises(RequestTimeout, match=r"within 0\.1 s"):
            await pool.request("POST", "/x", b"{}")
        pool.close()

    serve(silent)(body)


def test_refused_is_a_connect_error() -> None:
    async def body() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        pool = ConnectionPool(f"http://127.0.0.1:{port}/v1")
        with pytest.raises(ConnectError, match=r"cannot connect to 127\.0\.0\.1"):
            await pool.request("POST", "/x", b"{}")

    asyncio.run(body())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_with_a_checked_certificate(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def trusted(url: str) -> bytes:
        client_ctx = ssl.create_default_context(cafile=str(cert))
        pool = ConnectionPool(url, ssl_context=client_ctx)
        response = await pool.request("POST", "/x", b"{}")
        pool.close()
        return response.body

    assert serve(answering(OK), ssl_context=server_ctx)(trusted) == b"{}"

    async def untrusted(url: str) -> None:
        pool = ConnectionPool(url, ssl_context=ssl.create_default_context())
        with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await pool.request("POST", "/x", b"{}")

    serve(answering(OK), ssl_context=server_ctx)(untrusted)


def test_origin_and_host_header() -> None:
    assert Origin.parse("http://h:8000/v1/") == Origin("http", "h", 8000, "/v1")
    assert Origin.parse("https://h/v1").port == 443
    assert Origin.parse("https://h/v1").host_header == "h"
    assert Origin.parse("http://[::1]:81/").host_header == "[::1]:81"


def test_proxies_are_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pw@proxy.example:3128")
    assert check_no_proxy(Origin.parse("https://models.example/v1")) is not None
    assert check_no_proxy(Origin.parse("http://127.0.0.1:8000/v1")) is None  # never for loopback
    with pytest.raises(ConfigError, match="NO_PROXY") as info:
        create("m", BackendOptions(base_url="https://models.example/v1"))
    assert "pw" not in str(info.value)
    monkeypatch.setenv("NO_PROXY", "models.example")
    assert check_no_proxy(Origin.parse("https://models.example/v1")) is None


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
