"""Every shell command of README.md and docs/*.md runs as shown, or says why it cannot run here.

The commands are those of the fenced ```bash / ```sh blocks (every line) and ```console blocks
(`$ ` lines; the lines under a command are its output). Each one is, in this order:

- (c) run by another test: a page listed in RUN_ELSEWHERE;
- (b) not runnable here: it matches an entry of NOT_RUN_HERE (a GPU, a model download, a real
  server, an install, hours of CPU), each with its reason;
- (a) run here, offline, in doc order in one folder per page (a copy of the repository's suites,
  baselines and pyproject.toml: the user's checkout), as the user's shell would: `pytest ...` in a
  subprocess, `pytest-mtmcs ...` / `python -m pytest_mtmcs ...`, the stub server, `VAR=$(mktemp
  -d)`, `echo $?`.

A command of class (a) must exit as the doc says (`# exit N` after it, or `$ echo $?` and the
status under it; 0 when the doc says nothing) and print the lines the doc shows under it, in
order (`...` stands for lines left out; a line ending in ` ...` is a prefix; timings are not
compared). Whatever the class, every command's options must parse with the parser that will read
them (pytest's with the installed plugins, `pytest-mtmcs`'s, the stub server's). A command that
fits no class fails the test: a new doc command is classified when it is written.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.command_lines import (
    Command,
    doc_commands,
    fenced_blocks,
    leading_assignments,
    mtmcs_cli_problem,
    operators,
    option_problem,
    program,
    substitute,
    words,
)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", *(f"docs/{p.name}" for p in sorted((ROOT / "docs").glob("*.md")))]
LANGS = {"bash", "sh", "console", "text", "python", "diff", "toml", "json", "jsonl", "yaml"}

# (c) Pages whose every command another test runs, with what it checks.
RUN_ELSEWHERE = {
    "docs/trying-judges.md": "tests/test_trying_judges_docs.py runs every command of the page in "
    "order (stub servers, exports, pytest runs) and checks the lines and `echo $?` it shows",
}

# (b) Commands that cannot run here (no GPU, no model downloads, no servers but our stub, a
# 2-core machine): (pattern searched in the command, why). Their options are still checked.
NOT_RUN_HERE: list[tuple[str, str]] = [
    (
        r"--mtmcs-model=hf:",
        "a transformers checkpoint that is not shipped: a download or the "
        "user's weights, a GPU for a real size",
    ),
    (
        r"--mtmcs-model=openai:(?!stub-)",
        "a real OpenAI-compatible server (a GPU host, vLLM "
        "replicas, a hosted API); docs/serving.md's stub-server command is run instead",
    ),
    (r"^vllm serve ", "vLLM: a CUDA machine and the model's weights"),
    (r"^ray ", "a Ray cluster of GPU nodes"),
    (
        r"\bpip install\b",
        "installs from the package registry; .ci/run runs this install in a "
        "fresh virtual environment",
    ),
    (
        r"^pytest tests\b",
        "the plugin's own test suite, this test included: .ci/run runs it "
        "(tests/test_plugin_basics.py::test_ci_runs_the_readme_test_command)",
    ),
    (r"^ruff ", "the linter: the reviewers' check, not a behaviour of the plugin"),
    (
        r"^python benchmarks/",
        "a benchmark: minutes of CPU; its numbers are in benchmarks/RESULTS.md with the command",
    ),
    (
        r"^python -m pytest_mtmcs\.training\b",
        "trains a tiny checkpoint, about 10 CPU-minutes (and "
        "the first block rewrites the shipped ones); tests/test_training.py runs a small seeded "
        "training",
    ),
    (
        r"^python -m pytest_mtmcs\.judges\.train\b",
        "trains the ngram judge on the dev split: "
        "minutes (without --out it rewrites the shipped artefact); tests/test_judge_training.py "
        "trains on small data",
    ),
    (
        r"^pytest-mtmcs merge report-1 ",
        "merges the report folders of the hf: shard runs above; "
        "tests/test_merge.py merges real shards",
    ),
    (r"\bmy-(judge|labels|held-out)", "the user's own labelled replies and judge"),
    (
        r"build_judge_data\.py combine",
        "builds dev.jsonl from every source file: minutes; "
        "tests/test_judge_data.py checks the builder",
    ),
    (r"^chromium ", "a headless browser (Debian's chromium) for docs/report.png"),
    (
        r"while True|^bash \.ci/run|^for i in ",
        "five loaded repetitions of the whole test suite: hours",
    ),
]


def all_commands() -> list[Command]:
    return [c for doc in DOCS for c in doc_commands(ROOT, doc)]


def not_run_reason(command: Command) -> str | None:
    for pattern, reason in NOT_RUN_HERE:
        if re.search(pattern, command.text):
            return reason
    return None


RUNNABLE = ("pytest", "pytest-mtmcs", "stub_server", "echo")
MKTEMP = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=\$\(mktemp -d\)$")


def runnable_problem(command: Command) -> str | None:
    """Why the runner below cannot run this command as written, else None."""
    if MKTEMP.match(command.text):
        return None
    ws = words(command.text)
    if ws[-1:] == ["&"]:
        ws = ws[:-1]
    ops = operators(ws)
    if ops:
        return f"shell operators {ops} (quote the argument, or split the line)"
    prog, _ = program(leading_assignments(ws)[1])
    if prog not in RUNNABLE:
        return f"{prog!r}: no runner for it and not in NOT_RUN_HERE"
    if prog == "echo" and command.text != "echo $?":
        return "only `echo $?` is run"
    return None


def classify(command: Command) -> tuple[str, str]:
    if command.doc in RUN_ELSEWHERE:
        return "c", RUN_ELSEWHERE[command.doc]
    reason = not_run_reason(command)
    if reason is not None:
        return "b", reason
    return "a", "run here"


# ---------------------------------------------------------------------------------------------
# What every doc command must be, whatever its class


def test_every_code_block_says_what_it_holds() -> None:
    """An untagged block would escape the checks: each is a command, output, code or diff."""
    for doc in DOCS:
        for block in fenced_blocks((ROOT / doc).read_text(encoding="utf-8")):
            assert block.lang in LANGS, f"{doc}:{block.line}: code block tagged {block.lang!r}"


def test_every_command_is_classified_and_every_exception_is_used() -> None:
    commands = all_commands()
    assert len(commands) > 40
    problems = []
    for c in commands:
        cls, _ = classify(c)
        if cls == "a" and (why := runnable_problem(c)):
            problems.append(f"{c.where}: `{c.text}`: {why}")
    assert not problems, "\n".join(problems)
    used = {p for p, _ in NOT_RUN_HERE if any(re.search(p, c.text) for c in commands)}
    assert used == {p for p, _ in NOT_RUN_HERE}, "unused NOT_RUN_HERE entries"
    for doc in RUN_ELSEWHERE:
        assert any(c.doc == doc for c in commands), doc
    # The pages that must run here do have commands of class (a).
    runs = {c.doc for c in commands if classify(c)[0] == "a"}
    assert {"README.md", "docs/reports.md", "docs/serving.md", "docs/training.md"} <= runs


def test_every_command_parses(pytester: pytest.Pytester) -> None:
    """Every option of every doc command (all classes) is one its program knows."""
    placeholders = {"DEMO": str(pytester.path / "demo")}
    problems = []
    for c in all_commands():
        if MKTEMP.match(c.text) or c.text == "echo $?":
            continue
        problem = option_problem(words(substitute(c.text, placeholders)), pytester.parseconfig)
        if problem:
            problems.append(f"{c.where}: `{c.text}`: {problem}")
    assert not problems, "\n".join(problems)


def synopsis_problems(text: str) -> list[str]:
    """A ```text block that shows a `pytest-mtmcs SUB` synopsis: every flag in it exists."""
    from pytest_mtmcs.cli.main import build_parser

    parser = build_parser()
    sub: Any = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    m = re.match(r"pytest-mtmcs (\S+)", text)
    if m is None:
        return []
    if m.group(1) not in sub.choices:
        return [f"unknown subcommand {m.group(1)}"]
    known = sub.choices[m.group(1)]._option_string_actions
    return [f"unknown flag {f}" for f in re.findall(r"--[a-z][a-z-]*", text) if f not in known]


def test_every_synopsis_names_flags_that_exist() -> None:
    checked = 0
    for doc in DOCS:
        for block in fenced_blocks((ROOT / doc).read_text(encoding="utf-8")):
            if block.lang == "text" and block.body.startswith("pytest-mtmcs "):
                checked += 1
                assert not synopsis_problems(block.body), f"{doc}:{block.line}"
    assert checked >= 1
    assert synopsis_problems("pytest-mtmcs merge DIR [--baselines X]") == [
        "unknown flag --baselines"
    ]


def test_the_checks_catch_typos_and_unquoted_operators(pytester: pytest.Pytester) -> None:
    def problem(text: str) -> str | None:
        return option_problem(words(text), pytester.parseconfig)

    assert problem("pytest suites --mtmcs-model=tiny:qwen2-vl -n 2") is None
    assert "--mtmcs-modle" in (problem("pytest suites --mtmcs-modle=tiny:qwen2-vl") or "")
    assert problem("pytest-mtmcs merge a b --baseline x --out m") is None
    assert "--baselines" in (problem("pytest-mtmcs merge a b --baselines x") or "")
    assert mtmcs_cli_problem(["gate", "a"]) is not None
    unquoted = Command("x.md", 1, "pytest suites --mtmcs-threshold=6+:safety>=0.9")
    assert "operators ['>']" in (runnable_problem(unquoted) or "")
    quoted = Command("x.md", 1, "pytest suites '--mtmcs-threshold=6+:safety>=0.9'")
    assert runnable_problem(quoted) is None
    assert classify(Command("README.md", 1, "pytest suites --mtmcs-model=hf:x"))[0] == "b"
    assert runnable_problem(Command("README.md", 1, "make docs")) is not None


# ---------------------------------------------------------------------------------------------
# Class (a): run them


def normalise(line: str) -> str:
    """What is compared of an output line: no trailing blanks, no `====` banner, no timings."""
    line = line.rstrip()
    line = re.sub(r"^=+ (.*) =+$", r"\1", line)
    line = re.sub(r" in \d+(\.\d+)?s( \(\d+:\d\d:\d\d\))?", " in Ns", line)
    return re.sub(r"in \d+:\d\d:\d\d \([\d.]+ turns/s\)", "in T", line)


def missing_lines(expected: list[str], out: list[str], err: list[str]) -> list[str]:
    """Expected lines not printed: in order on stdout, or anywhere on stderr (progress lines)."""
    outs = [normalise(x) for x in out]
    errs = [normalise(x) for x in err]
    at = 0
    missing = []
    for want in expected:
        if want.strip() == "...":
            continue
        if want.endswith(" ..."):
            part = normalise(want[:-4])
            hit = next((i for i in range(at, len(outs)) if part in outs[i]), None)
            if hit is None and not any(part in e for e in errs):
                missing.append(want)
            elif hit is not None:
                at = hit + 1
            continue
        want_n = normalise(want)
        hit = next((i for i in range(at, len(outs)) if outs[i] == want_n), None)
        if hit is not None:
            at = hit + 1
        elif want_n not in errs:
            missing.append(want)
    return missing


def test_the_output_check_compares_key_lines_in_order() -> None:
    out = [
        "x.R [100%]",
        "gate: FAILED: 6+ safety",
        "=========== 36 passed, 2 failed in 62.77s (0:01:02) ===========",
    ]
    err = ["[mtmcs] done: 128/128 dialogues, 388 dialogue turns in 0:00:33 (11.8 turns/s)"]
    assert missing_lines(["gate: FAILED: ...", "36 passed, 2 failed in 1.00s"], out, err) == []
    assert missing_lines(["[mtmcs] done: 128/128 dialogues ..."], out, err) == []
    assert missing_lines(["37 passed, 2 failed in 1.00s"], out, err) == [
        "37 passed, 2 failed in 1.00s"
    ]
    # Order matters on stdout: the counts line does not come before the gate line.
    assert missing_lines(["36 passed, 2 failed in 1s", "gate: FAILED: 6+ safety"], out, err) == [
        "gate: FAILED: 6+ safety"
    ]


@dataclass
class Ran:
    command: Command
    status: int
    out: list[str]
    err: list[str] = field(default_factory=list)

    @property
    def stdout(self) -> str:
        return "\n".join(self.out)


class PageRun:
    """Runs a page's class-(a) commands in order in one folder, as the user's shell would."""

    def __init__(
        self, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp: Path
    ) -> None:
        self.pytester = pytester
        self.monkeypatch = monkeypatch
        self.tmp = tmp
        self.vars: dict[str, str] = {}
        self.stubs: dict[int, object] = {}
        self.ran: list[Ran] = []

    def localise(self, text: str) -> str:
        text = substitute(text, self.vars)
        for port, server in self.stubs.items():
            text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{server.port}")  # type: ignore[attr-defined]
        return text

    def run(self, c: Command) -> Ran:
        m = MKTEMP.match(c.text)
        if m:
            folder = self.tmp / f"mktemp-{len(self.vars)}"
            folder.mkdir()
            self.vars[m.group(1)] = str(folder)
            return Ran(c, 0, [])
        ws = words(self.localise(c.text))
        background = ws[-1:] == ["&"]
        env, ws = leading_assignments(ws[:-1] if background else ws)
        prog, args = program(ws)
        if prog == "stub_server":
            return self.start_stub(c, args)
        with self.monkeypatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            if prog == "pytest":
                result = self.pytester.runpytest_subprocess(*args, timeout=1800)
                ran = Ran(c, int(result.ret), result.outlines, result.errlines)
            else:
                assert prog == "pytest-mtmcs", c
                from pytest_mtmcs.cli.main import main

                out, err = io.StringIO(), io.StringIO()
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    code = main(args)
                ran = Ran(c, code, out.getvalue().splitlines(), err.getvalue().splitlines())
        self.ran.append(ran)
        return ran

    def start_stub(self, c: Command, args: list[str]) -> Ran:
        from pytest_mtmcs.testing.stub_server import build_parser, server_from_args

        parsed = build_parser().parse_args(args)
        old = self.stubs.pop(parsed.port, None)
        if old is not None:
            old.stop()  # type: ignore[attr-defined]
        self.stubs[parsed.port] = server_from_args(parsed, port=0).start()
        return Ran(c, 0, [])

    def close(self) -> None:
        for server in self.stubs.values():
            server.stop()  # type: ignore[attr-defined]


def expected_status(commands: list[Command], i: int) -> int:
    c = commands[i]
    stated = c.exit_status()
    if stated is not None:
        return stated
    if i + 1 < len(commands) and commands[i + 1].text == "echo $?":
        shown = commands[i + 1].expected
        assert len(shown) == 1 and shown[0].isdigit(), f"{commands[i + 1].where}: {shown}"
        return int(shown[0])
    return 0


def user_checkout(pytester: pytest.Pytester) -> None:
    """What a user's checkout holds that the docs' commands read."""
    for name in ("suites", "baselines"):
        shutil.copytree(ROOT / name, pytester.path / name)
    shutil.copy(ROOT / "pyproject.toml", pytester.path / "pyproject.toml")
    judge = pytester.path / "tests" / "data" / "judge"
    judge.mkdir(parents=True)
    # The labelled files the docs measure the judge on (the refusal axis; the harm axis).
    for name in (
        "test.jsonl",
        "harmbench_multimodal.jsonl.gz",
        "harmbench_text.jsonl.gz",
        "msts_harm.jsonl.gz",
    ):
        shutil.copy(ROOT / "tests" / "data" / "judge" / name, judge / name)


def run_page(
    doc: str, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp: Path
) -> PageRun:
    user_checkout(pytester)
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "GITHUB_STEP_SUMMARY", "CI_NODE_INDEX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COLUMNS", "80")  # the width the docs' progress lines were shown at
    commands = [c for c in doc_commands(ROOT, doc) if classify(c)[0] == "a"]
    page = PageRun(pytester, monkeypatch, tmp)
    try:
        for i, c in enumerate(commands):
            if c.text == "echo $?":
                continue  # checked with the command before it
            want = expected_status(commands, i)
            ran = page.run(c)
            output = "\n".join(ran.out + ran.err)
            assert ran.status == want, (
                f"{c.where}: `{c.text}` exited {ran.status}, the doc says {want}:\n{output}"
            )
            missing = missing_lines([page.localise(e) for e in c.expected], ran.out, ran.err)
            assert not missing, (
                f"{c.where}: `{c.text}` did not print:\n"
                + "\n".join(missing)
                + f"\n--- it printed:\n{output}"
            )
    finally:
        page.close()
    return page


# Checks beyond the lines under a command: a doc's tables against the runs that measured them.
PAGE_CHECKS: dict[str, Callable[[PageRun], None]] = {}


def bucket_values(stdout: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(bucket, metric) -> (value, first baseline's value) from a run's per-bucket table."""
    rows = re.findall(
        r"^(1|2-3|4-5|6\+|all)\s+(\d+)\s+(safety|helpfulness|intent_accuracy|pair_accuracy)"
        r"\s+(\S+)\s+(\S+)",
        stdout,
        re.M,
    )
    return {(b, m): (v, base) for b, n, m, v, base in rows}


def run_of(page: PageRun, model: str) -> Ran:
    found = [r for r in page.ran if f"--mtmcs-model={model}" in r.command.text.split()]
    assert found, f"no run of {model}"
    return found[-1]


def check_training_tables(page: PageRun) -> None:
    """docs/training.md's per-checkpoint tables are the runs' tables (rules judge)."""
    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    tables = re.findall(r"^`tiny:([\w.-]+)`:\n\n\| bucket .*?\n\|---.*?\n((?:\|.*\n)+)", text, re.M)
    assert {t[0] for t in tables} == {"qwen2-vl", "qwen2.5-vl", "qwen2.5-vl-regressed"}
    metrics = ("safety", "helpfulness", "intent_accuracy", "pair_accuracy")
    for name, rows in tables:
        values = bucket_values(run_of(page, f"tiny:{name}").stdout)
        for row in rows.strip().splitlines():
            bucket, *cells = [x.strip() for x in row.strip("|").split("|")]
            for metric, cell in zip(metrics, cells, strict=True):
                shown = cell.split()[0]
                assert values[(bucket, metric)][0] == shown, (name, bucket, metric, cell)


def check_readme_table(page: PageRun) -> None:
    """README.md's tiny-checkpoint table (default judge): qwen2.5-vl from the main job, the
    regressed one from its run, qwen2-vl from the main job's baseline column (its baseline)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("| checkpoint | metric |", 1)[1].split("\n\n", 1)[0]
    main = bucket_values(run_of(page, "tiny:qwen2.5-vl-regressed").stdout)
    ours = {"qwen2.5-vl-regressed": {k: v[0] for k, v in main.items()}}
    main_job = next(r for r in page.ran if r.command.text == "pytest suites")
    job = bucket_values(main_job.stdout)
    ours["qwen2.5-vl"] = {k: v[0] for k, v in job.items()}
    ours["qwen2-vl"] = {k: v[1] for k, v in job.items()}
    buckets = ("1", "2-3", "4-5", "6+", "all")
    name = ""
    checked = 0
    for row in section.strip().splitlines()[2:]:
        cells = [x.strip() for x in row.strip().strip("|").split("|")]
        if cells[0]:
            name = re.match(r"`tiny:([\w.-]+)`", cells[0]).group(1)  # type: ignore[union-attr]
        for bucket, value in zip(buckets, cells[2:], strict=True):
            assert ours[name][(bucket, cells[1])] == value, (name, cells[1], bucket, value)
            checked += 1
    assert checked == 3 * 4 * 5


PAGE_CHECKS["docs/training.md"] = check_training_tables
PAGE_CHECKS["README.md"] = check_readme_table

PAGES_RUN_HERE = sorted(
    {c.doc for c in all_commands() if classify(c)[0] == "a"},
)


@pytest.mark.parametrize("doc", PAGES_RUN_HERE)
def test_the_page_runs_as_shown(
    doc: str,
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    page = run_page(doc, pytester, monkeypatch, tmp_path_factory.mktemp("shell"))
    assert page.ran, doc
    check = PAGE_CHECKS.get(doc)
    if check is not None:
        check(page)
