"""docs/trying-judges.md runs as written: every command on the page, in order, with the output
lines the page shows under it.

The page's ```console blocks are the script: `$ python -m pytest_mtmcs.testing.stub_server ...`
starts that stub (in this process, from the same command-line parser, on a free port that
replaces the page's port everywhere after), `$ export K=V` sets the environment, `$ pytest ...`
runs through pytester in one folder (so the response cache carries over from command to command,
as in the user's shell), and `$ echo $?` shows the exit status of the pytest before it (0 when the
page shows none). Every other line of a block is output the command must print, in that order;
`...` stands for lines left out.
"""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pytest_mtmcs.testing.stub_server import StubServer, banner, build_parser, server_from_args

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "trying-judges.md"
SUITE = ROOT / "suites" / "mtmcs_mini"
STUB_COMMAND = ["python", "-m", "pytest_mtmcs.testing.stub_server"]


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)


def console_steps(text: str) -> list[Step]:
    """The commands of the page's console blocks, each with the output lines shown under it."""
    steps: list[Step] = []
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            if line.startswith("$ "):
                steps.append(Step(line[2:].strip()))
            elif line.strip() and line.strip() != "...":
                assert steps, f"output before any command in {DOC.name}: {line!r}"
                steps[-1].expected.append(line.rstrip())
    return steps


def missing_lines(expected: list[str], output: list[str]) -> list[str]:
    """The expected lines not found in `output` in that order (trailing blanks ignored)."""
    lines = [ln.rstrip() for ln in output]
    at = 0
    missing: list[str] = []
    for want in expected:
        try:
            at = lines.index(want, at) + 1
        except ValueError:
            missing.append(want)
    return missing


class PageRun:
    """Runs the page's steps in order, as a user would in their shells."""

    def __init__(self, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pytester = pytester
        self.monkeypatch = monkeypatch
        self.stubs: dict[int, StubServer] = {}  # the page's port -> the stub standing for it
        self.last: pytest.RunResult | None = None
        self.runs: list[tuple[str, pytest.RunResult]] = []

    def localise(self, text: str) -> str:
        for port, server in self.stubs.items():
            text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{server.port}")
        return text

    def step(self, step: Step, status_shown: bool) -> None:
        words = shlex.split(step.command)
        if words[:3] == STUB_COMMAND:
            args = build_parser().parse_args(words[3:])
            old = self.stubs.pop(args.port, None)
            if old is not None:
                old.stop()
            self.stubs[args.port] = server = server_from_args(args, port=0).start()
            shown = self.localise("\n".join(step.expected))
            assert not missing_lines(shown.splitlines(), [banner(server)]), step.command
        elif words[0] == "export":
            name, _, value = words[1].partition("=")
            self.monkeypatch.setenv(name, value)
        elif words[0] == "pytest":
            result = self.pytester.runpytest_subprocess(*(self.localise(w) for w in words[1:]))
            self.last = result
            self.runs.append((step.command, result))
            output = result.outlines + result.errlines
            missing = missing_lines([self.localise(e) for e in step.expected], output)
            assert not missing, (
                f"{DOC.name}: `{step.command}` did not print:\n"
                + "\n".join(missing)
                + "\n--- it printed:\n"
                + "\n".join(output)
            )
            if not status_shown:
                assert result.ret == 0, f"`{step.command}` exited {result.ret}:\n" + "\n".join(
                    output
                )
        elif words == ["echo", "$?"]:
            assert self.last is not None, "`echo $?` before any pytest"
            assert step.expected == [str(int(self.last.ret))], step.command
        else:
            pytest.fail(f"{DOC.name}: a command the page test does not know: {step.command}")

    def close(self) -> None:
        for server in self.stubs.values():
            server.stop()


def test_the_page_has_what_the_test_relies_on() -> None:
    steps = console_steps(DOC.read_text(encoding="utf-8"))
    commands = [s.command for s in steps]
    judges = {m.group(1) for c in commands for m in [re.search(r"--mtmcs-judge=(\S+)", c)] if m}
    assert {
        "rubric:openai:stub-judge",
        "safe-unsafe:openai:stub-judge",
        "guard:openai:stub-guard",
        "cascade:ngram,rubric:openai:stub-judge",
    } <= judges
    assert any("--mtmcs-guard=output:guard:openai:" in c for c in commands)
    assert any(c.startswith(" ".join(STUB_COMMAND)) and "--mode auto" in c for c in commands)
    # Every pytest command shows its summary header, which names the judge.
    for s in steps:
        if s.command.startswith("pytest "):
            assert any(e.startswith("model openai:stub-model | judge ") for e in s.expected), s


@pytest.mark.slow
def test_every_command_of_the_page_prints_what_the_page_shows(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(SUITE, pytester.path / "suites" / SUITE.name)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    steps = console_steps(DOC.read_text(encoding="utf-8"))
    page = PageRun(pytester, monkeypatch)
    try:
        for i, step in enumerate(steps):
            shown = i + 1 < len(steps) and steps[i + 1].command == "echo $?"
            page.step(step, status_shown=shown)
    finally:
        page.close()
    # What the page claims beyond its lines: the cascade sent some replies on, not all.
    cascade = [r for c, r in page.runs if "--mtmcs-judge=cascade:" in c]
    assert cascade
    for result in cascade:
        m = re.search(r"escalated (\d+) of (\d+) replies", result.stdout.str())
        assert m and 0 < int(m.group(1)) < int(m.group(2)), result.stdout.str()
    # The model judges disagree with ngram: the safety of the first (ngram) and the rubric run.
    safety = {
        c: re.search(r"^all\s+\d+\s+safety\s+(\S+)", r.stdout.str(), re.M) for c, r in page.runs
    }
    values = {c: m.group(1) for c, m in safety.items() if m}
    ngram = next(v for c, v in values.items() if "--mtmcs-judge=" not in c)
    rubric = next(
        v for c, v in values.items() if "--mtmcs-judge=rubric:" in c and "--mtmcs-guard" not in c
    )
    assert ngram != rubric
