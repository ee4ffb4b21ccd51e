"""A strict reading of a baseline `.ambr` file, line by line, before syrupy reads it.

Baselines live under version control, so they meet merges, hand edits and interrupted copies.
syrupy's reader is lenient: it skips lines it does not know (git conflict markers), joins two
versions of an entry into one, drops a last entry that lost its closing line, and lets a later
duplicate replace an earlier one. Each of those would silently change what the run is compared
with. Here each is an error naming the file and the line, and saying how to recover
(`--snapshot-update` rewrites the file cleanly).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from pytest_mtmcs.errors import ConfigError

VERSION_PREFIX = "# serializer version:"
NAME_PREFIX = "# name:"
DIVIDER = "# ---"
INDENT = "  "
HEADER = "__header__"
_CONFLICT = re.compile(r"^(<{7}|={7}|>{7}|\|{7})(?: |$)")
FIX = "resolve it by hand, or re-record the baseline with --snapshot-update"


class BaselineFileError(ConfigError):
    """A baseline file that is not a well-formed baseline: `file:line: message`."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {message}")


# Checks one dialogue entry's data line: None when it is a valid entry, else (field, why).
EntryCheck = Callable[[str], "tuple[str, str] | None"]


def check_text(text: str, path: str | Path, entry_check: EntryCheck | None = None) -> None:
    """Raises BaselineFileError at the first line that makes `text` not a clean baseline.

    `entry_check`, when given, must accept every dialogue entry's (single) data line.
    """
    if not text.strip():
        raise BaselineFileError(path, None, f"the file is empty (truncated?); {FIX}")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines[0].startswith(VERSION_PREFIX):
        raise BaselineFileError(
            path, 1, f"expected '{VERSION_PREFIX} ...' on the first line; {FIX}"
        )
    names: dict[str, int] = {}
    open_name: str | None = None
    open_line = 0
    data_lines: list[tuple[int, str]] = []
    for number, raw in enumerate(lines[1:], start=2):
        line = raw.removesuffix("\r")
        if _CONFLICT.match(line):
            raise BaselineFileError(
                path, number, f"git conflict marker {line[:7]!r} (an unresolved merge); {FIX}"
            )
        if line.startswith(NAME_PREFIX):
            if open_name is not None:
                raise BaselineFileError(
                    path,
                    number,
                    f"entry {open_name!r} (line {open_line}) is not closed with '{DIVIDER}' "
                    f"before the next entry; {FIX}",
                )
            name = line[len(NAME_PREFIX) :].strip()
            if not name:
                raise BaselineFileError(path, number, f"an entry without a name; {FIX}")
            if name in names:
                raise BaselineFileError(
                    path, number, f"entry {name!r} also on line {names[name]}; {FIX}"
                )
            names[name] = number
            open_name, open_line, data_lines = name, number, []
            continue
        if line == DIVIDER:
            if open_name is None:
                raise BaselineFileError(path, number, f"'{DIVIDER}' outside an entry; {FIX}")
            _check_entry(path, open_name, open_line, data_lines, entry_check)
            open_name = None
            continue
        if open_name is not None and line.startswith(INDENT):
            data_lines.append((number, line[len(INDENT) :]))
            continue
        if not line.strip() and open_name is None:
            continue
        raise BaselineFileError(
            path, number, f"not a baseline line: {_shown(line)} (hand-edited?); {FIX}"
        )
    if open_name is not None:
        raise BaselineFileError(
            path,
            open_line,
            f"entry {open_name!r} has no closing '{DIVIDER}': the file is truncated; {FIX}",
        )


def _check_entry(
    path: str | Path,
    name: str,
    line: int,
    data: list[tuple[int, str]],
    entry_check: EntryCheck | None,
) -> None:
    if not data:
        raise BaselineFileError(path, line, f"entry {name!r} has no data; {FIX}")
    if name == HEADER:
        for number, text in data:
            if ": " not in text and not text.endswith(":"):
                raise BaselineFileError(
                    path, number, f"header line is not 'key: value': {_shown(text)}; {FIX}"
                )
        return
    if len(data) != 1:
        raise BaselineFileError(
            path, data[1][0], f"entry {name!r} holds {len(data)} lines, expected one; {FIX}"
        )
    number, text = data[0]
    problem = entry_check(text.strip()) if entry_check is not None else None
    if problem is not None:
        field, why = problem
        raise BaselineFileError(
            path, number, f"entry {name!r}: field '{field}': {why}: {_shown(text)}; {FIX}"
        )


def check_file(path: str | Path, entry_check: EntryCheck | None = None) -> None:
    """`check_text` on the file at `path` (which must exist); undecodable bytes are an error."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BaselineFileError(path, None, f"cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = data[: exc.start].count(b"\n") + 1
        raise BaselineFileError(path, at, f"not valid UTF-8 text; {FIX}") from None
    check_text(text, path, entry_check)


def _shown(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


__all__ = ["BaselineFileError", "check_file", "check_text"]
