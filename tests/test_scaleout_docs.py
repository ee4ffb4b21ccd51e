"""The scale-out docs' CI files parse, and every `--mtmcs-*` option and every `pytest-mtmcs`
subcommand and flag they (and docs/scale-out.md's code blocks) use exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from pytest_mtmcs.cli.main import build_parser
from pytest_mtmcs.harness.options import BY_FLAG

DOCS = Path(__file__).resolve().parents[1] / "docs"
EXAMPLES = DOCS / "examples"
MTMCS_OPTION = re.compile(r"--mtmcs-[a-z0-9-]+")


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def yaml_commands(path: Path) -> list[str]:
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict) and doc, f"{path.name}: not a YAML mapping"
    return strings(doc)


def shell_commands(text: str) -> list[str]:
    """Logical lines (backslash continuations joined), comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [ln.split(" #", 1)[0] for ln in joined.splitlines() if not ln.lstrip().startswith("#")]


def markdown_commands(path: Path) -> list[str]:
    blocks = re.findall(r"```(?:bash|sh|text)?\n(.*?)```", path.read_text(encoding="utf-8"), re.S)
    return [c for b in blocks for c in shell_commands(b)]


def all_commands() -> dict[str, list[str]]:
    out = {p.name: yaml_commands(p) for p in sorted(EXAMPLES.glob("*.yml"))}
    for p in sorted(EXAMPLES.glob("*.sh")):
        out[p.name] = shell_commands(p.read_text(encoding="utf-8"))
    out["scale-out.md"] = markdown_commands(DOCS / "scale-out.md")
    return out


def subcommands() -> dict[str, set[str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return {name: set(p._option_string_actions) for name, p in sub.choices.items()}


def problems(command: str, known_subcommands: dict[str, set[str]]) -> list[str]:
    found = [f"unknown option {o}" for o in MTMCS_OPTION.findall(command) if o not in BY_FLAG]
    for m in re.finditer(r"pytest-mtmcs\s+(\S+)([^;&|\n]*)", command):
        name = m.group(1)
        if name not in known_subcommands:
            found.append(f"unknown subcommand pytest-mtmcs {name}")
            continue
        try:
            words = shlex.split(m.group(2))
        except ValueError:
            words = m.group(2).split()
        for w in words:
            flag = w.split("=", 1)[0]
            if flag.startswith("--") and flag not in known_subcommands[name]:
                found.append(f"pytest-mtmcs {name}: unknown flag {flag}")
    return found


def test_the_example_files_exist_and_parse() -> None:
    names = {p.name for p in EXAMPLES.iterdir()}
    assert {"github-actions-shards.yml", "gitlab-ci-shards.yml"} <= names
    commands = all_commands()
    gh = " ".join(commands["github-actions-shards.yml"])
    assert "--mtmcs-shard=${{ matrix.shard }}/4" in gh and "pytest-mtmcs merge" in gh
    gl = " ".join(commands["gitlab-ci-shards.yml"])
    assert "--mtmcs-shard=env" in gl and "pytest-mtmcs merge" in gl


def test_commands_use_only_options_that_exist() -> None:
    known = subcommands()
    used_options: set[str] = set()
    merges = 0
    for name, commands in all_commands().items():
        for command in commands:
            assert not problems(command, known), f"{name}: {command!r}"
            used_options.update(MTMCS_OPTION.findall(command))
            merges += command.count("pytest-mtmcs merge")
    assert {"--mtmcs-shard", "--mtmcs-report", "--mtmcs-base-url"} <= used_options
    assert merges >= 3


def test_the_check_catches_what_does_not_exist() -> None:
    known = subcommands()
    assert problems("pytest suites --mtmcs-shards=1/2", known) == ["unknown option --mtmcs-shards"]
    assert problems("pytest-mtmcs merge a b --baselines x --out m", known) == [
        "pytest-mtmcs merge: unknown flag --baselines"
    ]
    assert problems("pytest-mtmcs gate a", known) == ["unknown subcommand pytest-mtmcs gate"]
