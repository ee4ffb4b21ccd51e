"""HTTP for the `openai:` backend: one aiohttp session, proxies from the environment, clear errors.

Why aiohttp: it is what vLLM's own serving benchmark drives servers with, it honours proxies
(plain forwarding for `http://`, a `CONNECT` tunnel for `https://`), and it is kept by others. The
hand-written HTTP/1.1 client it replaces was ~2x cheaper per request but refused every proxy, and a
protocol parser of our own was code to keep correct forever. Measured side by side
(`benchmarks/bench_http.py`, figures in `benchmarks/RESULTS.md`), the backend on aiohttp stays well
under its budget of 1 ms of client CPU per request at 256 in flight.

Proxies: read once, when the backend is built, with the rules of Python's `urllib` (which aiohttp,
requests and pip share): `https_proxy`/`HTTPS_PROXY` for `https://` servers, `http_proxy`/
`HTTP_PROXY` for `http://` ones (the lower-case name wins when both are set), and `no_proxy`/
`NO_PROXY` (comma-separated host names, domain suffixes, `host:port`, or `*`) for hosts reached
directly. Loopback addresses are not special: list them in `NO_PROXY` when a proxy is set. aiohttp's
own `trust_env` is not used: it reads the environment and `~/.netrc` again on every request (two
thread hops each), and it would add `.netrc` credentials for the model server to a request that
already carries its API key. Proxy credentials go in the proxy's URL
(`http://USER:PASSWORD@proxy:3128`); they are sent as `Proxy-Authorization` and shown nowhere.
`ALL_PROXY` is not read (aiohttp does not read it either; it is mostly used for SOCKS proxies, which
aiohttp does not speak).

TLS: the system's trust store (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured, as by every OpenSSL
program) plus certifi's bundle when it is installed; certificates and host names are checked.

Errors are `TransportError` subclasses with one-line messages that say what failed and where:
`ConnectError` (refused, unreachable, DNS, TLS, the proxy unreachable), `ReadError` (the connection
closed or reset before the whole answer came), `ProtocolError` (an answer that is not HTTP),
`RequestTimeout`. A proxy that answers a `CONNECT` with anything but 200 comes back as a `Response`
marked `from_proxy`, so that its status is handled like any other answer's (407 is not retried, 502
is).
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# Idle keep-alive connections are closed after this long: just under uvicorn's default of 5 s
# (vLLM, SGLang), so that we do not send a request down a connection the server is closing.
KEEPALIVE_S = 4.0


class TransportError(Exception):
    """A request that got no complete HTTP answer."""


class ConnectError(TransportError):
    pass


class ReadError(TransportError):
    pass


class ProtocolError(TransportError):
    pass


class RequestTimeout(TransportError):
    pass


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: Mapping[str, str]  # case-insensitive
    body: bytes
    from_proxy: bool = False  # the proxy's own answer to CONNECT, not the server's

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def redact_url(url: str) -> str:
    """The URL without user:password@ (never echo credentials embedded in a URL)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class Proxy:
    """The proxy the environment sets for one server: its URL (credentials included, never shown),
    the URL as shown, and the variable it came from."""

    url: str
    env: str

    @property
    def shown(self) -> str:
        return redact_url(self.url)

    @property
    def secret(self) -> str | None:
        """The password in the proxy URL, to scrub from any text we show."""
        return urlsplit(self.url).password or None

    def __repr__(self) -> str:
        return f"Proxy({self.shown!r}, env={self.env!r})"


class ProxyConfigError(ValueError):
    """A proxy variable whose value cannot be used (message names the variable)."""


def proxy_for(url: str) -> Proxy | None:
    """The proxy that the environment sets for requests to `url`, or None (direct).

    The same rules as `urllib.request.getproxies()` and `proxy_bypass()`, which aiohttp's
    `trust_env` applies too."""
    import urllib.request

    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    proxies = urllib.request.getproxies_environment()
    value = proxies.get(scheme)
    if not value:
        return None
    netloc = parts.netloc.rpartition("@")[2].lower()
    # Public in urllib.request, missing from typeshed.
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if bypass(netloc, proxies):
        return None
    # Which variable it came from: urllib lets the lower-case one win.
    lower = f"{scheme}_proxy"
    env = lower if os.environ.get(lower) == value else lower.upper()
    if "://" not in value:
        value = f"http://{value}"  # `proxy.corp:3128`, as curl and urllib accept it
    proxy = Proxy(value, env)
    try:
        p = urlsplit(value)
        p.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        p = urlsplit("")
    if p.scheme not in ("http", "https") or not p.hostname:
        raise ProxyConfigError(
            f"{env}={proxy.shown!r}: expected an http(s) proxy URL such as http://HOST:3128 "
            f"(applies to {redact_url(url)}; add its host to NO_PROXY to reach it directly)"
        )
    return proxy


_CONTEXTS: dict[tuple[str | None, str | None], ssl.SSLContext] = {}


def ssl_context() -> ssl.SSLContext:
    """System CAs (honouring SSL_CERT_FILE / SSL_CERT_DIR), plus certifi's bundle if installed.
    One per value of those variables: building one costs milliseconds, and a test or a CI step
    may point them elsewhere between runs."""
    key = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    context = _CONTEXTS.get(key)
    if context is None:
        context = ssl.create_default_context()
        try:
            import certifi

            context.load_verify_locations(certifi.where())
        except (ImportError, OSError):
            pass
        _CONTEXTS[key] = context
    return context


@dataclass(frozen=True)
class Endpoint:
    """Where one replica's requests go: its base URL (as shown), and the proxy for it."""

    base_url: str
    proxy: Proxy | None

    @property
    def shown(self) -> str:
        return redact_url(self.base_url)

    def describe(self, path: str) -> str:
        """`URL` or `URL (through the proxy P from HTTPS_PROXY)`, for messages."""
        where = f"{self.shown}{path}"
        if self.proxy is not None:
            where += f" (through the proxy {self.proxy.shown} from {self.proxy.env})"
        return where


class Transport:
    """One aiohttp session on the caller's event loop, shared by every replica.

    Build it on the loop that will use it (aiohttp binds the session to it). The caller bounds the
    requests in flight; the connector does not (no second queue)."""

    def __init__(
        self,
        *,
        headers: Mapping[str, str],
        secret_headers: Mapping[str, str] | None = None,
        timeout_s: float,
    ) -> None:
        """`headers` go with every request; `secret_headers` (the API key) too, but never into
        the session's defaults: aiohttp copies those into its request to the proxy, where an
        `Authorization` header becomes `Proxy-Authorization` (aiohttp 3.14): the key would go to
        the proxy."""
        import aiohttp
        import yarl

        self._aiohttp = aiohttp
        self._url = yarl.URL
        self.timeout_s = timeout_s
        connector = aiohttp.TCPConnector(
            limit=0,
            keepalive_timeout=KEEPALIVE_S,
            ssl=ssl_context(),  # for the servers and for https:// proxies alike
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=dict(headers),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            trust_env=False,  # proxies are resolved once, by `proxy_for`
            auto_decompress=True,
        )
        self._urls: dict[str, Any] = {}
        self._errors = _error_classes(aiohttp)
        secret = dict(secret_headers or {})
        self._get_headers = secret or None
        self._post_headers = {"Content-Type": "application/json", **secret}

    async def close(self) -> None:
        await self._session.close()

    def _yarl(self, url: str) -> Any:
        # Parsed once per URL, not once per request.
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = self._urls[url] = self._url(url)
        return parsed

    async def request(
        self,
        method: str,
        endpoint: Endpoint,
        path: str,
        body: bytes | None = None,
        timeout_s: float | None = None,
    ) -> Response:
        """`method` `base_url + path` with a JSON `body`; raises a TransportError when no
        answer comes."""
        url = self._yarl(endpoint.base_url + path)
        proxy = endpoint.proxy
        kwargs: dict[str, Any] = {"allow_redirects": False}
        if body is not None:
            kwargs["data"] = body
            kwargs["headers"] = self._post_headers
        elif self._get_headers:
            kwargs["headers"] = self._get_headers
        if proxy is not None:
            kwargs["proxy"] = self._yarl(proxy.url)
        if timeout_s is not None:
            kwargs["timeout"] = self._aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with self._session.request(method, url, **kwargs) as resp:
                data = await resp.read()
                return Response(resp.status, resp.reason or "", resp.headers, data)
        except Exception as exc:
            translated = self._translate(exc, endpoint, timeout_s or self.timeout_s)
            if isinstance(translated, Response):
                return translated
            raise translated from None

    def _translate(
        self, exc: Exception, endpoint: Endpoint, timeout_s: float
    ) -> Exception | Response:
        """Our error for an aiohttp exception; the proxy's answer for a refused CONNECT."""
        e = self._errors
        proxy = endpoint.proxy
        target = _host_port(endpoint.base_url)
        if isinstance(exc, TimeoutError):
            phase = "connecting" if isinstance(exc, e.connect_timeout) else "no complete answer"
            return RequestTimeout(f"{phase} within {timeout_s:g} s")
        if isinstance(exc, e.proxy_status):
            reason = exc.message or _phrase(exc.status)
            return Response(exc.status, reason, exc.headers or {}, b"", from_proxy=True)
        if isinstance(exc, e.certificate):
            detail = _os_detail(getattr(exc, "certificate_error", exc))
            return ConnectError(
                f"TLS: the certificate of {target} is not trusted ({detail}); if the server's "
                "certificate comes from a private CA, point SSL_CERT_FILE at a PEM bundle that "
                "holds that CA"
            )
        if isinstance(exc, e.tls):
            return ConnectError(
                f"TLS handshake with {target} failed ({_os_detail(exc)}); check that the "
                "server speaks https on that port (or use http:// in the URL)"
            )
        if isinstance(exc, e.proxy_connect) and proxy is not None:
            os_error = getattr(exc, "os_error", None)
            if isinstance(os_error, socket.gaierror):
                return ConnectError(
                    f"cannot resolve the proxy's host {_host_port(proxy.url)} "
                    f"({_os_detail(exc)}); check {proxy.env}"
                )
            return ConnectError(
                f"cannot connect to the proxy: {_os_detail(exc)}; check {proxy.env}, or add the "
                "server's host to NO_PROXY to reach it directly"
            )
        if isinstance(exc, e.connector):
            if isinstance(getattr(exc, "os_error", None), socket.gaierror):
                return ConnectError(
                    f"cannot resolve {urlsplit(endpoint.base_url).hostname} "
                    f"(DNS: {_os_detail(exc)}); check the host name in the URL"
                )
            return ConnectError(f"cannot connect to {target}: {_os_detail(exc)}")
        if isinstance(exc, e.disconnected):
            return ReadError("the server closed the connection before answering")
        if isinstance(exc, e.payload):
            return ReadError(f"the answer broke off mid-body: {_one_line(str(exc), 160)}")
        if isinstance(exc, e.response):
            # aiohttp reports an answer it could not parse as a ClientResponseError.
            return ProtocolError(f"not a valid HTTP answer: {_one_line(exc.message, 160)}")
        if isinstance(exc, OSError | e.connection):
            return ReadError(f"the connection broke: {_os_detail(exc)}")
        if isinstance(exc, e.client):
            return TransportError(f"{type(exc).__name__}: {_one_line(str(exc), 160)}")
        return exc


@dataclass(frozen=True)
class _Errors:
    connect_timeout: type[BaseException]
    proxy_status: Any
    certificate: type[BaseException]
    tls: type[BaseException]
    proxy_connect: type[BaseException]
    connector: type[BaseException]
    disconnected: type[BaseException]
    payload: type[BaseException]
    response: Any
    connection: type[BaseException]
    client: type[BaseException]


def _error_classes(aiohttp: Any) -> _Errors:
    return _Errors(
        # ConnectionTimeoutError is aiohttp >= 3.10; before, every timeout reads "no answer".
        connect_timeout=getattr(aiohttp, "ConnectionTimeoutError", _Never),
        proxy_status=aiohttp.ClientHttpProxyError,
        certificate=aiohttp.ClientConnectorCertificateError,
        tls=aiohttp.ClientConnectorSSLError,
        proxy_connect=aiohttp.ClientProxyConnectionError,
        connector=aiohttp.ClientConnectorError,
        disconnected=aiohttp.ServerDisconnectedError,
        payload=aiohttp.ClientPayloadError,
        response=aiohttp.ClientResponseError,
        connection=aiohttp.ClientConnectionError,
        client=aiohttp.ClientError,
    )


class _Never(Exception):
    pass


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _os_detail(exc: BaseException) -> str:
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, OSError):
        exc = os_error
    if isinstance(exc, ssl.SSLError):
        parts = [getattr(exc, "reason", None), getattr(exc, "verify_message", None)]
        return ": ".join(str(p) for p in parts if p) or _one_line(str(exc), 160)
    if isinstance(exc, OSError):
        # aiohttp's happy-eyeballs wraps "Connection refused" as "Connect call failed (...)".
        if not isinstance(exc, socket.gaierror) and exc.errno and exc.errno > 0:
            return os.strerror(exc.errno)
        if exc.strerror:
            return exc.strerror
    return _one_line(str(exc) or type(exc).__name__, 160)


def _phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
