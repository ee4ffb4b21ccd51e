"""Client CPU per chat-completions request: our `openai:` backend (now and before) vs plain clients.

Side by side in one run, against one stub server in another process answering at once:

- `backend`: the backend as it is now (on aiohttp);
- `backend-own`: the backend on our own hand-written HTTP/1.1 client (its two modules taken from
  git at OWN_COMMIT into a temp folder), the version before aiohttp;
- `backend-httpx`: the backend as it was on httpx (from git at HTTPX_COMMIT), once with
  `sniffio` importable and once with it hidden (anyio >= 4.11 no longer installs it, and
  httpcore then retries the failed import on every lock it makes);
- plain clients POSTing the same, pre-built bodies: aiohttp, httpx (with / without sniffio),
  httpx2, the `openai` SDK (those installed; `pip install httpx openai httpx2 sniffio` to have
  them all), each with one pool of N connections and N requests in flight.

Text requests are a three-message chat; image requests carry one JPEG (448x448 noise, ~90 KB as
base64) in their first user message, as a dialogue's turns do. The backends get `ChatRequest`s
whose messages are shared between requests (as the engine's turns share their history), so
encoding and caching costs are in their figures; the plain clients send ready bytes.

Each client runs in its own process; its CPU (user + system, all threads) is measured with
`time.process_time()` around N requests after a warm-up. The figure is that CPU / N.

    python benchmarks/bench_http.py [--requests 2000] [--inflight 32,256] [--clients all]

Goal (issue 25): the backend on aiohttp costs <= 1 ms of client CPU per request at 256 in flight,
text and image: `--clients backend-own,backend,aiohttp --inflight 256` is the comparison that
decided it (figures in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The last commit of the httpx-based backend.
HTTPX_COMMIT = "02041cb3bf601f1f4350447810534f832d364268"
# The last commit of the backend on our own HTTP/1.1 client (backends/http_client.py).
OWN_COMMIT = "fa61e2a29b415d800523b2876c89292532ffc048"
CLIENTS = (
    "backend",
    "backend-own",
    "backend-httpx",
    "backend-httpx+sniffio",
    "aiohttp",
    "httpx",
    "httpx+sniffio",
    "httpx2",
    "openai-sdk",
)
MODEL = "stub-model"


def image_jpeg() -> bytes:
    from PIL import Image

    img = Image.effect_noise((448, 448), 40).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def plain_bodies(kind: str, n_distinct: int = 64) -> list[bytes]:
    import base64

    url = None
    if kind == "image":
        url = "data:image/jpeg;base64," + base64.b64encode(image_jpeg()).decode()
    bodies = []
    for i in range(n_distinct):
        first: Any = f"Question {i}: what is shown here, and how is it used?"
        if url is not None:
            first = [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": first},
            ]
        body = {
            "model": MODEL,
            "messages": [
                {"role": "user", "content": first},
                {"role": "assistant", "content": "It is a common household object."},
                {"role": "user", "content": f"Follow-up {i}: tell me more."},
            ],
            "max_tokens": 128,
            "temperature": 0.0,
            "seed": 0,
            "n": 1,
            "stream": False,
        }
        bodies.append(json.dumps(body, separators=(",", ":")).encode())
    return bodies


def chat_requests(kind: str, n: int, n_distinct: int = 64) -> list[Any]:
    from pytest_mtmcs.records import (
        ChatRequest,
        GenerationSettings,
        ImageRef,
        Message,
        RequestMeta,
    )

    image = ImageRef.from_bytes(image_jpeg(), "bench.jpg") if kind == "image" else None
    settings = GenerationSettings(max_new_tokens=128, temperature=0.0)
    histories = []
    for i in range(n_distinct):
        histories.append(
            (
                Message("user", f"Question {i}: what is shown here, and how is it used?", image),
                Message("assistant", "It is a common household object."),
                Message("user", f"Follow-up {i}: tell me more."),
            )
        )
    return [
        ChatRequest(histories[k % n_distinct], settings, RequestMeta(f"d/{k}", 2)) for k in range(n)
    ]


# --- workers (one per process) -------------------------------------------------------------


def hide_sniffio() -> None:
    """Make `import sniffio` fail as it does when it is not installed (a full path search)."""
    import importlib.abc
    import importlib.machinery

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
            if name == "sniffio":
                importlib.machinery.PathFinder.find_spec("sniffio_is_not_installed", path)
                raise ModuleNotFoundError("No module named 'sniffio'", name="sniffio")
            return None

    sys.modules.pop("sniffio", None)
    sys.meta_path.insert(0, Hide())


def git_show(commit: str, path: str) -> str:
    return subprocess.run(
        ["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def load_old_backend(commit: str) -> Any:
    """The `openai:` backend of `commit`, as module `openai_compat_old` (with the HTTP client
    module it imported then, when it had one of its own)."""
    source = git_show(commit, "pytest_mtmcs/backends/openai_compat.py")
    folder = tempfile.mkdtemp(prefix="mtmcs-bench-")
    own = "from pytest_mtmcs.backends.http_client import"
    if own in source:
        client = git_show(commit, "pytest_mtmcs/backends/http_client.py")
        (Path(folder) / "http_client_old.py").write_text(client)
        source = source.replace(own, "from http_client_old import")
        sys.path.insert(0, folder)
    path = Path(folder) / "openai_compat_old.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("openai_compat_old", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["openai_compat_old"] = module
    spec.loader.exec_module(module)
    return module


def run_backend(module: Any, url: str, kind: str, inflight: int, n: int) -> float:
    from pytest_mtmcs.backends import BackendOptions

    backend = module.create(MODEL, BackendOptions(base_url=url, concurrency=inflight))
    try:
        warm = chat_requests(kind, inflight * 2)
        assert all(isinstance(r, str) for r in backend.generate(warm))
        requests = chat_requests(kind, n)
        start = time.process_time()
        out = backend.generate(requests)
        cpu = time.process_time() - start
        bad = [r for r in out if not isinstance(r, str)]
        assert not bad, bad[:1]
    finally:
        backend.close()
    return cpu


async def _drive(post: Any, bodies: list[bytes], inflight: int, n: int) -> None:
    import asyncio

    sem = asyncio.Semaphore(inflight)

    async def one(k: int) -> None:
        async with sem:
            text = await post(k % len(bodies))
            assert text, "empty answer"

    await asyncio.gather(*(one(k) for k in range(n)))


def run_plain(client: str, url: str, kind: str, inflight: int, n: int) -> float:
    import asyncio

    bodies = plain_bodies(kind)
    chat = f"{url}/chat/completions"
    headers = {"Content-Type": "application/json"}

    async def main() -> float:
        if client.startswith("httpx"):
            if client.startswith("httpx2"):
                import httpx2 as hx
            else:
                import httpx as hx
            limits = hx.Limits(max_connections=inflight, max_keepalive_connections=inflight)
            async with hx.AsyncClient(limits=limits, timeout=120) as c:

                async def post(k: int) -> str:
                    r = await c.post(chat, content=bodies[k], headers=headers)
                    return str(r.json()["choices"][0]["message"]["content"])

                return await measure(post)
        if client == "aiohttp":
            import aiohttp

            conn = aiohttp.TCPConnector(limit=inflight)
            async with aiohttp.ClientSession(connector=conn) as s:

                async def post(k: int) -> str:
                    async with s.post(chat, data=bodies[k], headers=headers) as r:
                        payload = await r.json(content_type=None)
                    return str(payload["choices"][0]["message"]["content"])

                return await measure(post)
        if client == "openai-sdk":
            import httpx2  # the SDK's own HTTP stack
            import openai

            sdk = openai.AsyncOpenAI(
                api_key="none",
                base_url=url,
                max_retries=0,
                timeout=300,
                http_client=openai.DefaultAsyncHttpxClient(
                    limits=httpx2.Limits(
                        max_connections=inflight, max_keepalive_connections=inflight
                    )
                ),
            )
            decoded = [json.loads(b) for b in bodies]

            async def post(k: int) -> str:
                d = decoded[k]
                r = await sdk.chat.completions.create(
                    model=d["model"],
                    messages=d["messages"],
                    max_tokens=d["max_tokens"],
                    temperature=d["temperature"],
                    seed=0,
                    n=1,
                )
                return str(r.choices[0].message.content)

            try:
                return await measure(post)
            finally:
                await sdk.close()
        raise SystemExit(f"unknown client {client}")

    async def measure(post: Any) -> float:
        await _drive(post, bodies, inflight, inflight * 2)
        start = time.process_time()
        await _drive(post, bodies, inflight, n)
        return time.process_time() - start

    return asyncio.run(main())


def worker(client: str, url: str, kinds: list[str], inflights: list[int], n: int) -> None:
    if client in ("backend-httpx", "httpx"):
        hide_sniffio()
    elif client.endswith("+sniffio"):
        import sniffio  # noqa: F401  (must be installed for this row)
    base = client.removesuffix("+sniffio")
    for kind in kinds:
        for inflight in inflights:
            if base == "backend-httpx":
                cpu = run_backend(load_old_backend(HTTPX_COMMIT), url, kind, inflight, n)
            elif base == "backend-own":
                cpu = run_backend(load_old_backend(OWN_COMMIT), url, kind, inflight, n)
            elif base == "backend":
                from pytest_mtmcs.backends import openai_compat

                cpu = run_backend(openai_compat, url, kind, inflight, n)
            else:
                cpu = run_plain(base, url, kind, inflight, n)
            row = {"client": client, "kind": kind, "inflight": inflight, "n": n, "cpu_s": cpu}
            print(json.dumps(row), flush=True)


# --- the driver ------------------------------------------------------------------------------


def available(client: str) -> bool:
    needs = {
        "httpx": ["httpx"],
        "httpx2": ["httpx2"],
        "openai-sdk": ["openai"],
        "backend-httpx": ["httpx"],
        "backend-httpx+sniffio": ["httpx", "sniffio"],
        "httpx+sniffio": ["httpx", "sniffio"],
    }.get(client, [])
    return all(importlib.util.find_spec(n) is not None for n in needs)


def start_stub() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_mtmcs.testing.stub_server", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    url = line.split(" at ", 1)[1].split(" ", 1)[0]
    return proc, url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--inflight", default="32,256")
    parser.add_argument("--kinds", default="text,image")
    parser.add_argument("--clients", default="all", help=f"comma-separated: {', '.join(CLIENTS)}")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    inflights = [int(x) for x in args.inflight.split(",")]
    if args.worker:
        worker(args.worker, args.url, kinds, inflights, args.requests)
        return 0
    clients = CLIENTS if args.clients == "all" else tuple(args.clients.split(","))
    stub, url = start_stub()
    rows: list[dict[str, Any]] = []
    try:
        for client in clients:
            if not available(client):
                print(f"{client}: not installed, skipped", file=sys.stderr)
                continue
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                client,
                "--url",
                url,
                "--requests",
                str(args.requests),
                "--inflight",
                args.inflight,
                "--kinds",
                args.kinds,
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=os.environ)
            if out.returncode != 0:
                print(f"{client}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            for line in out.stdout.splitlines():
                row = json.loads(line)
                rows.append(row)
                ms = 1000 * row["cpu_s"] / row["n"]
                print(
                    f"{client:22s} {row['kind']:5s} {row['inflight']:4d} in flight: "
                    f"{ms:.3f} ms CPU/request",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        stub.terminate()
        stub.wait(timeout=10)
    print(
        f"\nClient CPU per request (ms), {args.requests} requests per cell, stub in another "
        "process answering at once:\n"
    )
    cols = [(k, f) for k in kinds for f in inflights]
    print("| client | " + " | ".join(f"{k} @{f}" for k, f in cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for client in clients:
        cells = {(r["kind"], r["inflight"]): r for r in rows if r["client"] == client}
        if not cells:
            continue
        vals = [
            f"{1000 * cells[c]['cpu_s'] / cells[c]['n']:.3f}" if c in cells else "-" for c in cols
        ]
        print(f"| {client} | " + " | ".join(vals) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
