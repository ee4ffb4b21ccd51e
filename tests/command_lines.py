"""Shell command lines as the docs and the CI example files show them, and the check that each
one's options exist, through the same parsers that will read them (pytest's with every installed
plugin, `pytest-mtmcs`'s, the stub server's).

Used by tests/test_docs_commands.py and tests/test_ci_examples.py. A command line here is what a
user types: backslash continuations joined, a trailing `# comment` kept apart (it may say the
expected exit status, `# exit 1`).
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Shell operators: a command line holding one is not a single command.
OPERATORS = {"&&", "||", "|", ";", "&", ">", ">>", "<", "(", ")", "$(", "`"}
EXIT_COMMENT = re.compile(r"\bexit (\d+)\b")


@dataclass
class Command:
    """One command of a doc: where it is, what is typed, and what the doc shows under it."""

    doc: str  # repository-relative path, e.g. docs/training.md
    line: int  # 1-based line of the command in the doc
    text: str  # continuations joined, comment removed
    comment: str = ""  # the trailing comment, without '#'
    expected: list[str] = field(default_factory=list)  # console output lines shown under it
    lang: str = "bash"

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    def exit_status(self) -> int | None:
        """The exit status the doc states in a trailing `# exit N` comment, else None."""
        m = EXIT_COMMENT.search(self.comment)
        return int(m.group(1)) if m else None


@dataclass
class Block:
    lang: str
    body: str
    line: int  # 1-based line of the block's first content line


def fenced_blocks(text: str) -> list[Block]:
    """Every fenced code block of a Markdown text, with its language tag ('' when untagged)."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)```(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        indent, lang = m.group(1), m.group(2)
        start = i + 1
        j = start
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        body = "\n".join(
            ln[len(indent) :] if ln.startswith(indent) else ln for ln in lines[start:j]
        )
        blocks.append(Block(lang, body, start + 1))
        i = j + 1
    return blocks


def split_comment(line: str) -> tuple[str, str]:
    """`cmd  # comment` -> (cmd, comment); a '#' inside quotes or a word is not a comment."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line.rstrip(), ""


def logical_lines(body: str) -> list[tuple[int, str]]:
    """(offset of the first physical line, text) with backslash continuations joined."""
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for k, raw in enumerate(body.splitlines()):
        if pending is not None:
            at, text = pending
            text = text + " " + raw.strip()
        else:
            at, text = k, raw
        if text.endswith("\\"):
            pending = (at, text[:-1].rstrip())
            continue
        pending = None
        out.append((at, text))
    if pending is not None:
        out.append(pending)
    return out


def block_commands(doc: str, block: Block) -> list[Command]:
    """The commands of a bash/sh block (every non-comment line) or a console block (`$ ` lines,
    the other lines being their output; `# ...` lines are remarks)."""
    commands: list[Command] = []
    for at, text in logical_lines(block.body):
        line = block.line + at
        if block.lang in ("bash", "sh"):
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            cmd, comment = split_comment(text.strip())
            commands.append(Command(doc, line, cmd, comment, lang=block.lang))
        elif block.lang == "console":
            if text.startswith("$ "):
                cmd, comment = split_comment(text[2:].strip())
                commands.append(Command(doc, line, cmd, comment, lang="console"))
            elif text.startswith("# ") and not commands:
                continue
            elif text.startswith("# ") and not commands[-1].expected:
                continue  # a remark between commands (docs/serving.md's Ray steps)
            elif text.strip():
                assert commands, f"{doc}:{line}: output before any command: {text!r}"
                commands[-1].expected.append(text.rstrip())
    return commands


def doc_commands(root: Path, rel: str) -> list[Command]:
    text = (root / rel).read_text(encoding="utf-8")
    return [c for b in fenced_blocks(text) for c in block_commands(rel, b)]


def substitute(text: str, variables: Mapping[str, str]) -> str:
    """`$NAME`, `${NAME}` and GitHub's `${{ expr }}` replaced from `variables` (unknown ones
    are left as they are)."""

    def gh(m: re.Match[str]) -> str:
        return variables.get(m.group(1).strip(), m.group(0))

    text = re.sub(r"\$\{\{\s*(.*?)\s*\}\}", gh, text)
    return re.sub(
        r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: variables.get(m.group(1), m.group(0)), text
    )


def words(text: str) -> list[str]:
    """Shell words, with unquoted operators (`>`, `&&`, `|`, `&` ...) as words of their own, so
    that `--mtmcs-threshold=6+:safety>=0.9` unquoted shows as the redirection it is."""
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    return list(lex)


def operators(ws: list[str]) -> list[str]:
    return [w for w in ws if w in OPERATORS or (set(w) <= set("&|;<>()") and w)]


def leading_assignments(ws: list[str]) -> tuple[dict[str, str], list[str]]:
    """`A=1 B=2 cmd args` -> ({A: 1, B: 2}, [cmd, args])."""
    env: dict[str, str] = {}
    i = 0
    while i < len(ws) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", ws[i]):
        name, _, value = ws[i].partition("=")
        env[name] = value
        i += 1
    return env, ws[i:]


def program(ws: list[str]) -> tuple[str, list[str]]:
    """(what runs, its arguments): `pytest`, `pytest-mtmcs`, `stub_server`, or the first word.
    `python -m pytest` is pytest, `python -m pytest_mtmcs` is pytest-mtmcs."""
    if len(ws) >= 3 and ws[0] in ("python", "python3") and ws[1] == "-m":
        module, rest = ws[2], ws[3:]
        if module == "pytest":
            return "pytest", rest
        if module == "pytest_mtmcs":
            return "pytest-mtmcs", rest
        if module == "pytest_mtmcs.testing.stub_server":
            return "stub_server", rest
        return f"python -m {module}", rest
    return (ws[0], ws[1:]) if ws else ("", [])


def mtmcs_cli_problem(args: list[str]) -> str | None:
    """Why `pytest-mtmcs ARGS` does not parse (argparse's own message), else None."""
    from pytest_mtmcs.cli.main import build_parser

    return _argparse_problem(build_parser().parse_args, args, "pytest-mtmcs")


def stub_server_problem(args: list[str]) -> str | None:
    from pytest_mtmcs.testing.stub_server import build_parser

    return _argparse_problem(build_parser().parse_args, args, "stub_server")


def _argparse_problem(parse: Callable[[list[str]], Any], args: list[str], name: str) -> str | None:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parse(args)
    except SystemExit as exc:
        if exc.code not in (0, None):
            return f"{name}: " + (err.getvalue().strip().splitlines() or ["does not parse"])[-1]
    return None


def pytest_problem(parseconfig: Callable[..., Any], args: list[str]) -> str | None:
    """Why pytest (with the installed plugins: this one, xdist, syrupy) refuses ARGS, else None.
    `parseconfig` is `pytester.parseconfig`: pytest's own option parser, nothing run."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parseconfig(*args)
    except SystemExit as exc:
        if exc.code not in (0, None):
            return "pytest: " + (err.getvalue().strip().splitlines() or ["usage error"])[-1]
    except Exception as exc:  # pytest's UsageError
        return f"pytest: {exc}"
    return None


def option_problem(ws: list[str], parseconfig: Callable[..., Any]) -> str | None:
    """Why the command's options would be refused by the program that reads them, else None
    (programs other than pytest, pytest-mtmcs and the stub server are not checked here)."""
    _, ws = leading_assignments(ws)
    if "&" in ws and ws[-1] == "&":
        ws = ws[:-1]
    prog, args = program(ws)
    if prog == "pytest":
        return pytest_problem(parseconfig, args)
    if prog == "pytest-mtmcs":
        return mtmcs_cli_problem(args)
    if prog == "stub_server":
        return stub_server_problem(args)
    return None
