"""Recognising a benchmark release folder given where a native suite folder was expected.

`--mtmcs-suite=path/to/Data` (no `safemt:` prefix) or `pytest path/to/Data` would otherwise fail
as `missing suite.toml`, which does not tell the user that the folder is fine and only the spec
lacks its importer prefix. The layouts are those of the releases as downloaded (see
`tests/data/reference/`): SafeMT's `Data/{1,2,4,6,8}_turn.json` (or the folder holding `Data/`),
MTMCS-Bench's Hugging Face folder (`data/type_a-00000-of-00001.parquet`, or the parquet files
directly in the folder given). Only file names are looked at: nothing is read.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# native.SUITE_TOML, not imported from there: native imports this module.
SUITE_TOML = "suite.toml"

# prefix -> (name with its article, file-name pattern, sub-folder the importer also looks in)
_RELEASES: dict[str, tuple[str, re.Pattern[str], str]] = {
    "safemt": ("a SafeMT", re.compile(r"\d+_turn\.json"), "Data"),
    "mtmcs-bench": (
        "an MTMCS-Bench",
        re.compile(r"type_[ab](?:-\d+-of-\d+(?:-[0-9a-fA-F]+)?)?\.parquet"),
        "data",
    ),
}


def _has_match(folder: Path, pattern: re.Pattern[str]) -> bool:
    try:
        with os.scandir(folder) as entries:
            return any(pattern.fullmatch(e.name) for e in entries)
    except OSError:
        return False


def release_kind(folder: Path) -> str | None:
    """The importer prefix (`safemt`, `mtmcs-bench`) of the release `folder` looks like, or None."""
    for prefix, (_, pattern, sub) in _RELEASES.items():
        if _has_match(folder, pattern) or _has_match(folder / sub, pattern):
            return prefix
    return None


def release_advice(
    path: str, use: str = "--mtmcs-suite={spec}", shown: str | None = None
) -> str | None:
    """`no suite.toml here; this looks like a SafeMT release: use --mtmcs-suite=safemt:PATH` when
    `path` is a folder without a suite.toml that looks like a release; else None. `use` words
    the fix around the spec (the command line's `pytest-mtmcs import {spec} OUT`); `shown` is
    the path as the user wrote it, when `path` was resolved."""
    folder = Path(path)
    if not folder.is_dir() or (folder / SUITE_TOML).exists():
        return None
    prefix = release_kind(folder)
    if prefix is None:
        return None
    name = _RELEASES[prefix][0]
    fix = use.replace("{spec}", f"{prefix}:{shown or path}")
    return f"no suite.toml here; this looks like {name} release: use {fix}"


def release_hint(
    path: str, use: str = "--mtmcs-suite={spec}", shown: str | None = None
) -> str | None:
    """`release_advice` as one message about the path (`PATH: no suite.toml here; ...`)."""
    advice = release_advice(path, use, shown)
    return None if advice is None else f"{shown or path}: {advice}"
