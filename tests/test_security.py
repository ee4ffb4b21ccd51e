"""Security: suites, baselines, caches and transcripts are data; secrets never leave the
environment; HTTP goes only where configured; reports escape and the terminal strips what
models and suites supply."""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import pytest

from pytest_mtmcs.backends import BackendOptions
from pytest_mtmcs.outcome.text import printable
from pytest_mtmcs.testing import StubServer
from tests.test_reliability import small_suite

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_mtmcs"
SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "checkpoints" not in p.parts)
SECRET = "sk-planted-" + "7f3c9a1e5b2d4086"

# --- no code execution on data -----------------------------------------------------------------


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    """Every call with its callee spelled `name`, `module.attr` or `.attr` (other receivers)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name):
                name = f.id
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                name = f"{f.value.id}.{f.attr}"
            elif isinstance(f, ast.Attribute):
                name = f".{f.attr}"
            else:
                name = ""
            out.append((name, node))
    return out


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_unsafe_deserialisation_or_code_execution(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            for banned in ("pickle", "cPickle", "dill", "marshal", "shelve", "joblib"):
                assert banned not in names, f"{path}:{node.lineno}: imports {banned}"
    for name, call in _calls(tree):
        where = f"{path}:{call.lineno}"
        assert name not in ("eval", "exec", "compile", "__import__", "builtins.eval"), where
        assert name not in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"), where
        if name == "torch.load":
            kw = {k.arg: k.value for k in call.keywords}
            assert (
                isinstance(kw.get("weights_only"), ast.Constant)
                and kw["weights_only"].value is True
            ), f"{where}: torch.load without weights_only=True"
        for kw in call.keywords:
            if kw.arg == "trust_remote_code":
                assert not (isinstance(kw.value, ast.Constant) and kw.value.value is True), (
                    f"{where}: trust_remote_code=True literal"
                )


def test_trust_remote_code_only_with_its_option(pytester):
    assert BackendOptions().trust_remote_code is False
    sources = {p: p.read_text(encoding="utf-8") for p in SOURCES}
    users = sorted(
        str(p.relative_to(PACKAGE)) for p, s in sources.items() if "trust_remote_code" in s
    )
    # Where it is read from the run's options, and where it is handed to transformers.
    assert set(users) <= {
        "backends/__init__.py",
        "backends/hf.py",
        "harness/settings.py",
        "harness/options.py",
    }, users
    result = pytester.runpytest("--help")
    help_text = result.stdout.str()
    assert "--mtmcs-trust-remote-code" in help_text
    hf = sources[PACKAGE / "backends" / "hf.py"]
    assert re.search(r"trust_remote_code\s*=\s*(self\.)?\w*options\.trust_remote_code", hf) or (
        "options.trust_remote_code" in hf
    )


NETWORK = ("socket", "http.client", "urllib.request", "httpx", "httpx2", "aiohttp", "requests")
NETWORK_MODULES = {
    "backends/openai_compat.py",
    "backends/http_transport.py",
    "testing/stub_server.py",
}


def test_network_code_lives_only_in_the_http_backend():
    """HTTP only to configured URLs: the only modules that can open a connection are the
    OpenAI-compatible backend's (to --mtmcs-base-url / OPENAI_BASE_URL) and the test stub."""
    for path in SOURCES:
        rel = str(path.relative_to(PACKAGE))
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                continue
            for m in mods:
                if m.split(".")[0] in {n.split(".")[0] for n in NETWORK} and m in NETWORK:
                    assert rel in NETWORK_MODULES, f"{rel}:{node.lineno}: imports {m}"


# --- the planted key ---------------------------------------------------------------------------


def test_planted_api_key_is_absent_from_every_file_and_all_output(pytester, monkeypatch):
    small_suite(pytester.path / "suites" / "mini")

    def leaky(body):
        text = json.dumps(body)
        if "weapon" in text or "pick" in text:  # some dialogues: a server error echoing the key
            raise RuntimeError(f"upstream said: Authorization: Bearer {SECRET}")
        return "I'm sorry, but I can't help with that."

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with StubServer(respond=leaky, api_key=SECRET, retry_after=0) as server:
        result = pytester.runpytest_subprocess(
            "suites", "--mtmcs-model=openai:stub-model", f"--mtmcs-base-url={server.base_url}",
            "--mtmcs-retries=0", "--mtmcs-cache=cache/c.sqlite", "--mtmcs-report=rep",
            "--junitxml=junit.xml", "--mtmcs-baseline=b", "--snapshot-update",
            "--mtmcs-baseline-transcripts", "-v", "-rA",
        )  # fmt: skip
        # The key was really used: every request carried it.
        assert server.requests and all(r.authorized for r in server.requests)
        assert all(r.path.startswith("/v1/") for r in server.requests), (
            "a request outside the configured base URL"
        )
    output = result.stdout.str() + result.stderr.str()
    assert "mtmcs safety summary" in output or "error" in output
    assert SECRET not in output
    written = [p for p in pytester.path.rglob("*") if p.is_file()]
    names = {p.name for p in written}
    assert {"c.sqlite", "junit.xml", "report.html"} <= names, names
    assert any(p.suffix == ".ambr" for p in written) or "NOT updated" in output
    for p in written:
        assert SECRET.encode() not in p.read_bytes(), f"the key is in {p}"


# --- escaping and control sequences ------------------------------------------------------------

PAYLOADS = (
    "<script>alert('x')</script>",
    '<img src=x onerror="alert(1)">',
    "</style><b>bold</b>",
)
CONTROL = "\x1b[31mRED\x1b[0m \x1b]0;title\x07 back\rspace\x08 nul\x00 c1\x9b2J bell\x07 del\x7f"


def _replay_project(pytester) -> Path:
    suite = small_suite(pytester.path / "suites" / "mini")
    lines = (suite / "dialogues.jsonl").read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines:
        rec = json.loads(line)
        rec["category"] = PAYLOADS[1] + PAYLOADS[2]
        rec["intent"] = PAYLOADS[0]
        rec["turns"][0]["content"] = PAYLOADS[0] + " " + rec["turns"][0]["content"]
        out.append(json.dumps(rec))
    (suite / "dialogues.jsonl").write_text("\n".join(out) + "\n", encoding="utf-8")
    first = pytester.runpytest_subprocess(
        "suites", "-p", "no:cacheprovider", "--mtmcs-model=scripted:comply-from=2",
        "--mtmcs-report=rec",
    )  # fmt: skip
    assert (pytester.path / "rec" / "transcripts.jsonl").is_file(), first.stdout.str()
    rec_path = pytester.path / "rec" / "transcripts.jsonl"
    rows = [json.loads(line) for line in rec_path.read_text(encoding="utf-8").splitlines()]
    turns = [row for row in rows if row.get("kind") == "turn"]
    assert turns, rows[:2]
    for row in turns:
        row["text"] = f"{PAYLOADS[0]} {PAYLOADS[1]} {PAYLOADS[2]} {CONTROL} " + row["text"]
    (pytester.path / "replay.jsonl").write_text(
        "\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8"
    )
    shutil.rmtree(pytester.path / "rec")
    # A baseline the replayed run regresses against: its flipped dialogues are shown in the
    # report with their replies.
    base = pytester.runpytest_subprocess(
        "suites", "-p", "no:cacheprovider", "--mtmcs-model=scripted:refuse-all",
        "--mtmcs-baseline=b", "--snapshot-update",
    )  # fmt: skip
    assert base.ret == 0, base.stdout.str()
    return pytester.path / "replay.jsonl"


def test_report_escapes_and_terminal_strips_what_models_and_suites_supply(pytester):
    replay = _replay_project(pytester)
    result = pytester.runpytest_subprocess(
        "suites", "-p", "no:cacheprovider", f"--mtmcs-model=replay:{replay}",
        "--mtmcs-report=rep", "--mtmcs-gate=items", "--mtmcs-baseline=b",
    )  # fmt: skip
    out = result.stdout.str() + result.stderr.str()
    assert "model[" in out, out[-3000:]  # failure transcripts were printed
    assert "RED" in out  # the reply text reached the terminal...
    for ch in ("\x1b", "\x07", "\x00", "\x9b", "\x08", "\x7f"):
        assert ch not in out, f"{ch!r} reached the terminal"  # ...without its controls
    html = (pytester.path / "rep" / "report.html").read_text(encoding="utf-8")
    # Each payload is in the page, as text.
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert "&lt;/style&gt;&lt;b&gt;bold&lt;/b&gt;" in html
    assert "<script>alert" not in html
    assert "<img src=x" not in html and 'onerror="alert' not in html
    assert "<b>bold</b>" not in html
    assert html.count("</style>") == html.count("<style")


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[31mred\x1b[0m", "red"),
        ("a\x1b]8;;http://x\x07link\x1b]8;;\x07b", "alinkb"),
        ("tab\tnew\nline\rcr", "tab\tnew\nline cr"),
        ("\x00\x01\x7f\x80\x9b\x9f", ""),
        ("\u202eevil\u2066", "evil"),
        ("plain é ü 中", "plain é ü 中"),
    ],
)
def test_printable_strips_control_sequences(raw, shown):
    assert printable(raw) == shown
