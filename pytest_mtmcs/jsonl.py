"""Reading JSON-lines files: one JSON object per line, a bad line one `file:line` error.

Every JSON-lines reader of the project (stored transcripts, replayed runs, labelled replies, the
adjudications file, the review's transcripts) walks its lines with `objects`, and raises its own
error type, with its own wording of where, through the `error` it passes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any


def objects(
    lines: Iterable[str], error: Callable[[int, str], Exception]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number from 1, object) for each non-blank line; a line that is not JSON, or not a
    JSON object, raises `error(line number, what is wrong)`."""
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise error(n, f"not valid JSON: {getattr(exc, 'msg', exc)}") from None
        if not isinstance(obj, dict):
            raise error(n, "expected a JSON object")
        yield n, obj
