"""The `openai:` backend against the local stub server (a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import base64
import io
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_mtmcs.backends import BackendOptions, create_backend
from pytest_mtmcs.backends.openai_compat import (
    OpenAICompatBackend,
    RetryPolicy,
    create,
    parse_retry_after,
    sniff_mime,
)
from pytest_mtmcs.errors import BackendError, ConfigError
from pytest_mtmcs.records import (
    ChatRequest,
    GenerationSettings,
    ImageRef,
    Message,
    RequestMeta,
)
from pytest_mtmcs.testing import StubServer, image_urls, last_user_text

SECRET = "sk-test-0123456789abcdef"
FAST = {"backoff_base_s": 0.001, "backoff_cap_s": 0.005}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own settings must not leak into these tests (nor their key onto the stub).
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer(retry_after=0) as server:
        yield server


def backend_for(server: StubServer, model: str = "stub-model", **kw: Any) -> OpenAICompatBackend:
    extra = {**FAST, **kw.pop("extra", {})}
    options = BackendOptions(base_url=server.base_url, extra=extra, **kw)
    return create(model, options)


def request(*texts: str, image: ImageRef | None = None, **settings: Any) -> ChatRequest:
    messages = [Message("user", t) for t in texts]
    if image is not None:
        last = messages[-1]
        messages[-1] = Message(last.role, last.text, image)
    return ChatRequest(tuple(messages), GenerationSettings(**settings), RequestMeta("d/1", 1))


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (8, 6)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


def decode_data_url(url: str) -> tuple[str, bytes]:
    match = re.fullmatch(r"data:([\w/+.-]+);base64,(.*)", url, re.S)
    assert match, url[:60]
    return match.group(1), base64.b64decode(match.group(2))


def echo(body: dict[str, Any]) -> str:
    return f"echo: {last_user_text(body)}"


# --- request format ----------------------------------------------------------------------


def test_texts_and_images_arrive_in_openai_format(stub: StubServer) -> None:
    png = image_bytes()
    req = ChatRequest(
        (
            Message("system", "Be careful."),
            Message("user", "Hello"),
            Message("assistant", "Hi, how can I help?"),
            Message("user", "What is in this picture?", ImageRef.from_bytes(png, "a.png")),
        ),
        GenerationSettings(max_new_tokens=77, temperature=0.0),
        RequestMeta("d/1", 2),
    )
    with backend_for(stub, model="Qwen/Qwen2.5-VL-7B-Instruct") as backend:
        assert backend.generate([req]) == [stub.respond({})]
    (body,) = stub.chat_bodies
    assert body["model"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert (body["max_tokens"], body["temperature"], body["seed"], body["n"]) == (77, 0.0, 0, 1)
    assert body["messages"][:3] == [
        {"role": "system", "content": "Be careful."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi, how can I help?"},
    ]
    last = body["messages"][3]
    assert last["role"] == "user"
    assert [p["type"] for p in last["content"]] == ["image_url", "text"]
    assert last["content"][1]["text"] == "What is in this picture?"
    mime, data = decode_data_url(last["content"][0]["image_url"]["url"])
    assert (mime, data) == ("image/png", png)


def test_jpeg_is_sent_as_jpeg_and_unknown_formats_as_png(stub: StubServer) -> None:
    jpeg, tiff = image_bytes("JPEG"), image_bytes("TIFF")
    with backend_for(stub) as backend:
        backend.generate(
            [
                request("a", image=ImageRef.from_bytes(jpeg)),
                request("b", image=ImageRef.from_bytes(tiff)),
            ]
        )
    sent = {last_user_text(b): decode_data_url(image_urls(b)[0]) for b in stub.chat_bodies}
    assert sent["a"] == ("image/jpeg", jpeg)
    assert sent["b"][0] == "image/png" and sent["b"][1].startswith(b"\x89PNG")


def test_images_over_the_pixel_budget_are_downscaled(stub: StubServer) -> None:
    from PIL import Image

    big, small = image_bytes(size=(120, 80)), image_bytes(size=(20, 10))
    with backend_for(stub) as backend:
        backend.generate(
            [
                request("big", image=ImageRef.from_bytes(big), max_pixels=2400),
                request("small", image=ImageRef.from_bytes(small), max_pixels=2400),
            ]
        )
    sent = {last_user_text(b): decode_data_url(image_urls(b)[0])[1] for b in stub.chat_bodies}
    with Image.open(io.BytesIO(sent["big"])) as img:
        width, height = img.size
    assert width * height <= 2400 and width > height  # aspect ratio kept
    assert sent["small"] == small  # within budget: sent as stored


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (b"\x89PNG\r\n\x1a\n....", "image/png"),
        (b"\xff\xd8\xff\xe0....", "image/jpeg"),
        (b"GIF89a....", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"BM\x00\x00", "image/bmp"),
        (b"II*\x00....", None),
        (b"", None),
    ],
)
def test_sniff_mime(data: bytes, mime: str | None) -> None:
    assert sniff_mime(data) == mime


def test_images_are_read_when_their_request_goes_out_and_reused(stub: StubServer) -> None:
    answered_at_fetch: list[int] = []

    def counted(data: bytes) -> ImageRef:
        def fetch() -> bytes:
            answered_at_fetch.append(stub.counts[200])
            return data

        return ImageRef(ImageRef.from_bytes(data).sha256, fetch)

    images = [counted(image_bytes(size=(8, 6 + i))) for i in range(6)]
    with backend_for(stub, concurrency=2) as backend:
        out = backend.generate([request(f"q{i}", image=img) for i, img in enumerate(images)])
        assert all(isinstance(o, str) for o in out)
        # Not all bodies up front: the last image is read after earlier requests were answered.
        assert answered_at_fetch[0] == 0 and answered_at_fetch[-1] >= 2
        backend.generate([request("again", image=images[0])])
    assert len(answered_at_fetch) == 6  # the repeated image came from the encoder's cache


def test_a_bad_image_fails_only_its_own_request(stub: StubServer) -> None:
    broken = ImageRef("0" * 64, lambda: b"not an image", "images/broken.png")
    with backend_for(stub) as backend:
        good, bad = backend.generate([request("ok"), request("x", image=broken)])
    assert isinstance(good, str)
    assert isinstance(bad, BackendError) and "images/broken.png" in str(bad)


# --- concurrency and order ---------------------------------------------------------------


def test_results_come_back_in_request_order(stub: StubServer) -> None:
    rng = random.Random(1)
    delays = [rng.uniform(0, 0.03) for _ in range(24)]

    def shuffled(body: dict[str, Any]) -> str:
        text = last_user_text(body)
        time.sleep(delays[int(text[1:])])  # finish out of order
        return f"echo: {text}"

    stub.respond = shuffled
    with backend_for(stub, concurrency=24) as backend:
        out = backend.generate([request(f"q{i}") for i in range(24)])
    assert out == [f"echo: q{i}" for i in range(24)]


def test_requests_really_overlap() -> None:
    # The stub holds every answer until 32 requests have arrived: only a client that really has
    # 32 in flight at once gets any answer (no timing involved).
    with StubServer(hold=32) as server, backend_for(server, concurrency=32) as backend:
        out = backend.generate([request(f"q{i}") for i in range(32)])
        assert all(isinstance(o, str) for o in out)
        assert server.max_in_flight == 32


def test_concurrency_is_a_ceiling_across_threads() -> None:
    # hold=4: the first four answers wait until four requests are in flight (so the ceiling is
    # reached); the ceiling itself can never be exceeded, however the threads interleave.
    with StubServer(hold=4, respond=echo) as server:
        with backend_for(server, concurrency=4) as backend:
            results: dict[int, list[Any]] = {}

            def work(k: int) -> None:
                results[k] = backend.generate([request(f"t{k}-{i}") for i in range(8)])

            threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert server.max_in_flight == 4
        for k in range(3):
            assert results[k] == [f"echo: t{k}-{i}" for i in range(8)]


def test_generate_with_nothing_and_after_close(stub: StubServer) -> None:
    backend = backend_for(stub)
    assert backend.generate([]) == []
    backend.close()
    backend.close()  # idempotent
    assert isinstance(backend.generate([request("again")])[0], str)  # reopens
    backend.close()


# --- retries -----------------------------------------------------------------------------


def test_429_then_success_is_retried() -> None:
    with StubServer(faults=["429", "429"], retry_after=0) as server:
        with backend_for(server) as backend:
            assert backend.generate([request("hi")]) == [server.respond({})]
        assert server.counts == {429: 2, 200: 1}


def test_retry_after_is_honoured() -> None:
    # The wait is read off the backend's sleep (no clock involved): never less than Retry-After.
    waits: list[float] = []
    with StubServer(faults=["429", "429"], retry_after=7) as server:
        with backend_for(server) as backend:
            backend._sleep = recording_sleep(waits)
            assert isinstance(backend.generate([request("hi")])[0], str)
    assert len(waits) == 2 and all(w >= 7 for w in waits)


def recording_sleep(waits: list[float]) -> Any:
    import asyncio

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0)

    return sleep


def test_500s_exhaust_retries_into_a_clear_error() -> None:
    with StubServer(faults=["500"] * 10) as server:
        with backend_for(server, max_retries=2) as backend:
            (result,) = backend.generate([request("hi")])
        assert server.counts == {500: 3}
    assert isinstance(result, BackendError)
    message = str(result)
    assert message.startswith(f"openai: POST {server.base_url}/chat/completions failed after 3 ")
    assert "500 Internal Server Error: injected fault 500" in message


def test_503_exhausts_with_its_status_in_the_message() -> None:
    with StubServer(faults=["503"] * 2) as server:
        with backend_for(server, max_retries=1) as backend:
            (result,) = backend.generate([request("hi")])
    assert "failed after 2 attempts: 503 Service Unavailable" in str(result)


def test_a_dropped_connection_is_retried() -> None:
    with StubServer(faults=["drop", "drop"]) as server:
        with backend_for(server) as backend:
            assert isinstance(backend.generate([request("hi")])[0], str)
        assert server.counts == {"drop": 2, 200: 1}


def test_a_response_slower_than_the_timeout_is_retried_then_reported() -> None:
    # `slow` answers only when the stub stops; the normal answer after it has 5 tries of 1 s.
    with StubServer(faults=["slow"], slow_s=600) as server:
        with backend_for(server, timeout_s=1.0) as backend:
            assert isinstance(backend.generate([request("hi")])[0], str)
    with StubServer(faults=["slow"], slow_s=600) as server:
        with backend_for(server, timeout_s=0.2, max_retries=0) as backend:
            (result,) = backend.generate([request("hi")])
    assert isinstance(result, BackendError)
    assert "failed after 1 attempt: timed out after 0.2 s" in str(result)


def test_a_400_is_not_retried() -> None:
    with StubServer(faults=["400"]) as server:
        with backend_for(server, max_retries=5) as backend:
            (result,) = backend.generate([request("hi")])
        assert server.counts == {400: 1}
    assert isinstance(result, BackendError)
    assert "returned 400 Bad Request: injected fault 400 (not retried)" in str(result)


def test_an_unknown_model_says_where_to_look() -> None:
    with StubServer(model="served-model") as server:
        with backend_for(server, model="typo-model") as backend:
            (result,) = backend.generate([request("hi")])
        assert server.counts == {404: 1}
    assert "The model `typo-model` does not exist." in str(result)
    assert "/models" in str(result) and "/v1" in str(result)


@pytest.mark.parametrize("fault", ["malformed", "truncated", "reset"])
def test_a_broken_200_is_retried_like_a_transient_failure(fault: str) -> None:
    # A 200 without choices, a 200 whose JSON is cut short, a reset in the middle of the body:
    # proxies and overloaded servers send them; the next attempt gets the answer.
    with StubServer(faults=[fault, fault]) as server, backend_for(server) as backend:
        (result,) = backend.generate([request("hi")])
        assert result == server.respond({})
        assert server.counts[200 if fault != "reset" else "reset"] >= 2
        assert len(server.answered_bodies) == 1


def test_a_reply_without_content_is_an_error_when_it_persists() -> None:
    with StubServer(faults=["malformed"] * 10) as server:
        with backend_for(server, max_retries=2) as backend:
            (result,) = backend.generate([request("hi")])
        assert server.counts == {200: 3}
    assert isinstance(result, BackendError)
    assert "failed after 3 attempts: 200 OK without choices[0].message.content" in str(result)


def test_truncated_json_is_an_error_when_it_persists() -> None:
    with StubServer(faults=["truncated"] * 10) as server:
        with backend_for(server, max_retries=1) as backend:
            (result,) = backend.generate([request("hi")])
    assert "failed after 2 attempts: 200 OK with a body that is not JSON" in str(result)


def test_an_unreachable_server_is_an_error_per_request() -> None:
    with StubServer() as server:
        url = server.base_url  # a port that was free a moment ago and is closed now
    backend = create("m", BackendOptions(base_url=url, max_retries=1, extra=FAST))
    with backend:
        results = backend.generate([request("a"), request("b")])
    assert all(isinstance(r, BackendError) for r in results)
    assert "failed after 2 attempts: connection error (ConnectError" in str(results[0])


# --- secrets, fingerprint, configuration -------------------------------------------------


def test_api_key_is_sent_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)

    def leaky(body: dict[str, Any]) -> str:
        if last_user_text(body) == "leak":
            raise RuntimeError(f"I saw {SECRET}")  # the stub returns this text in a 500
        return "fine"

    with StubServer(respond=leaky, api_key=SECRET, model="m") as server:
        with backend_for(server, model="m", max_retries=0) as backend:
            ok, failed = backend.generate([request("hi"), request("leak")])
            fingerprint = backend.fingerprint()
            shown = [repr(backend), str(fingerprint), str(failed)]
        assert ok == "fine"
        assert all(r.authorized for r in server.requests)  # GET /models too
        assert all(SECRET not in s for s in shown)
        assert "***" in str(failed)
        assert "api_key=set" in repr(backend)


def test_a_wrong_key_is_a_401_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with StubServer(api_key=SECRET) as server, backend_for(server) as backend:
        (result,) = backend.generate([request("hi")])
        assert server.counts == {401: 1}
        assert server.chat_requests[0].has_authorization
    assert "401 Unauthorized" in str(result) and "OPENAI_API_KEY" in str(result)
    assert "sk-wrong" not in str(result)


def test_no_key_no_authorization_header(stub: StubServer) -> None:
    with backend_for(stub) as backend:
        backend.generate([request("hi")])
    assert not stub.chat_requests[0].has_authorization
    assert "api_key=unset" in repr(backend)


def test_fingerprint_names_the_served_model() -> None:
    with StubServer(model="Qwen/Qwen2.5-VL-7B-Instruct") as server:
        with backend_for(server, model="Qwen/Qwen2.5-VL-7B-Instruct") as backend:
            fingerprint = backend.fingerprint()
    assert fingerprint == {
        "backend": "openai",
        "spec": "openai:Qwen/Qwen2.5-VL-7B-Instruct",
        "model": "Qwen/Qwen2.5-VL-7B-Instruct",
        "host": f"127.0.0.1:{server_port(fingerprint)}",
        "served": {"id": "Qwen/Qwen2.5-VL-7B-Instruct", "root": "Qwen/Qwen2.5-VL-7B-Instruct"},
    }


def server_port(fingerprint: Any) -> int:
    return int(str(fingerprint["host"]).rsplit(":", 1)[1])


def test_fingerprint_without_a_models_endpoint() -> None:
    with StubServer() as server:
        url = server.base_url
    backend = create("m", BackendOptions(base_url=url + "/", extra=FAST))
    fingerprint = backend.fingerprint()  # nothing listens: no exception, no server card
    assert fingerprint["served"] is None and fingerprint["spec"] == "openai:m"


def test_fingerprint_keeps_only_the_host_of_the_base_url() -> None:
    backend = create("m", BackendOptions(base_url="https://user:pw@Example.com:8443/v1"))
    assert backend._host == "example.com:8443"
    assert "pw" not in repr(backend)


def test_missing_base_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        create("m", BackendOptions())
    assert "--mtmcs-base-url" in str(info.value) and "OPENAI_BASE_URL" in str(info.value)


def test_base_url_from_the_environment(stub: StubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
    backend = create_backend("openai:stub-model", BackendOptions(extra=FAST))
    try:
        assert isinstance(backend, OpenAICompatBackend)
        assert backend.spec == "openai:stub-model"
        assert isinstance(backend.generate([request("hi")])[0], str)
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("rest", "options", "names"),
    [
        ("", BackendOptions(base_url="http://h/v1"), "openai:MODEL"),
        ("m", BackendOptions(base_url="ftp://h/v1"), "--mtmcs-base-url"),
        ("m", BackendOptions(base_url="http://h/v1", concurrency=0), "--mtmcs-concurrency"),
        ("m", BackendOptions(base_url="http://h/v1", timeout_s=0), "--mtmcs-timeout"),
        ("m", BackendOptions(base_url="http://h/v1", max_retries=-1), "--mtmcs-retries"),
        ("m", BackendOptions(base_url="http://h/v1", extra={"backoff_base_s": "x"}), "backoff"),
    ],
)
def test_bad_configuration(rest: str, options: BackendOptions, names: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(names)):
        create(rest, options)


# --- retry policy ------------------------------------------------------------------------


@given(
    retry=st.integers(0, 200),
    base=st.floats(0.0, 5.0),
    cap=st.floats(0.0, 60.0),
    retry_after=st.none() | st.floats(0.0, 1e6),
    seed=st.integers(0, 2**32),
)
def test_backoff_stays_within_its_bounds(
    retry: int, base: float, cap: float, retry_after: float | None, seed: int
) -> None:
    policy = RetryPolicy(base_s=base, cap_s=cap, retry_after_max_s=60.0)
    wait = policy.delay(retry, random.Random(seed), retry_after)
    floor = 0.0 if retry_after is None else min(retry_after, 60.0)
    assert floor <= wait <= max(floor, min(cap, base * 2.0**retry))


def test_backoff_grows_exponentially_on_average() -> None:
    policy = RetryPolicy(base_s=0.5, cap_s=20.0)
    rng = random.Random(0)
    means = [sum(policy.delay(k, rng) for _ in range(2000)) / 2000 for k in range(7)]
    expected = [min(20.0, 0.5 * 2**k) / 2 for k in range(7)]  # full jitter: uniform(0, bound)
    assert means == pytest.approx(expected, rel=0.1)


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": later}, now=now.timestamp()) == pytest.approx(30)
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


# --- the stub itself ---------------------------------------------------------------------


def test_stub_listens_on_loopback_only_and_stops(stub: StubServer) -> None:
    assert stub.base_url.startswith("http://127.0.0.1:")
    assert stub._httpd is not None and stub._httpd.server_address[0] == "127.0.0.1"
    stub.stop()
    assert stub._httpd is None


def test_stub_rejects_unknown_fault_kinds() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        StubServer(faults=["teapot"])


def test_stub_command_line() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_mtmcs.testing.stub_server", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        base_url = re.search(r"http://127\.0\.0\.1:\d+/v1", line)
        assert base_url, line
        with create("any", BackendOptions(base_url=base_url.group(0), extra=FAST)) as backend:
            assert isinstance(backend.generate([request("hi")])[0], str)
    finally:
        proc.send_signal(2)  # SIGINT: the CLI's Ctrl-C path
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "answered 200: 1" in out
    assert "RuntimeWarning" not in err


# --- measurement for the lead: `python tests/test_openai_backend.py` ---------------------


def measure(concurrencies: Sequence[int] = (1, 32), n: int = 64, latency_s: float = 0.05) -> None:
    """Requests/s against the in-process stub (not a test: timing is the machine's business)."""
    with StubServer(latency_s=latency_s) as server:
        rates = {}
        for c in concurrencies:
            with backend_for(server, concurrency=c) as backend:
                backend.generate([request("warm-up")] * c)
                start = time.perf_counter()
                out = backend.generate([request(f"q{i}") for i in range(n)])
                elapsed = time.perf_counter() - start
            assert all(isinstance(o, str) for o in out)
            rates[c] = n / elapsed
            print(f"concurrency {c:3d}: {n} requests in {elapsed:.3f} s = {rates[c]:.1f} req/s")
        low, high = min(concurrencies), max(concurrencies)
        print(f"ratio {high} vs {low}: {rates[high] / rates[low]:.1f}x")


if __name__ == "__main__":
    measure()
