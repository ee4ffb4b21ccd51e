"""Image captions files: a JSON object from an image index to a caption of that image.

MTMCS-Bench's official harness shows its judge a caption of each image instead of the image
(`MTMCS_Bench_captions.json` at the root of the benchmark's GitHub repository: `{"0": "A baseball
player is shown holding a bat ...", "1": ..., ..., "751": ...}`, one 2-4 sentence caption per
image, written by a vision-language model). The importer reads such a file so that our text judges
are shown what the paper's judge is shown (`records.ImageRef.caption`, `judges/prompts.py`).

The file is untrusted data like a suite: a problem is one `SuiteError` naming the file, the line
and the key, never a traceback. Keys are decimal image indexes (`"0"`, `"17"`); values are
non-blank strings. Blank captions are refused rather than read as "no caption": the official
harness treats an empty caption as missing, and a file that says nothing of an image should simply
leave the image out.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from pytest_mtmcs.errors import SuiteError

_INDEX_RE = re.compile(r"[0-9]{1,9}")


def _line_of(text: str, key: str) -> int | None:
    """The 1-based line of `"key":` in the file's text (json gives no positions of valid keys)."""
    m = re.search(re.escape(json.dumps(key)) + r"\s*:", text)
    return text.count("\n", 0, m.start()) + 1 if m else None


def _short(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def read_captions(path: str | os.PathLike[str]) -> dict[int, str]:
    """The captions of `path` by image index; raises SuiteError naming file, line and key."""
    file = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise SuiteError(file, "no such captions file") from None
    except IsADirectoryError:
        raise SuiteError(file, "expected a captions file (JSON), found a folder") from None
    except OSError as exc:
        raise SuiteError(file, f"cannot read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        at = data[: exc.start].count(b"\n") + 1
        raise SuiteError(file, "not valid UTF-8 text", line=at) from None

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise SuiteError(file, "duplicate key: each image has one caption", field=key)
            out[key] = value
        return out

    try:
        doc = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise SuiteError(
            file, f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno
        ) from None
    except RecursionError:
        raise SuiteError(file, "invalid JSON: nested too deeply") from None
    except SuiteError as exc:  # a duplicate key, raised inside the parser: add its line
        raise SuiteError(
            file, exc.message, line=_line_of(text, exc.field or ""), field=exc.field
        ) from None
    if not isinstance(doc, dict):
        raise SuiteError(
            file,
            'expected a JSON object from image index to caption, e.g. {"0": "A person ..."}',
        )
    captions: dict[int, str] = {}
    for key, value in doc.items():
        if not _INDEX_RE.fullmatch(key):
            raise SuiteError(
                file,
                f'expected an image index ("0", "1", ...) as key, got {_short(key)}',
                line=_line_of(text, key),
                field=key,
            )
        if not isinstance(value, str) or not value.strip():
            raise SuiteError(
                file,
                f"expected a caption (a non-blank string), got {_short(value)}",
                line=_line_of(text, key),
                field=key,
            )
        index = int(key)
        if index in captions:  # "7" and "07"
            raise SuiteError(
                file,
                f"image index {index} has two captions",
                line=_line_of(text, key),
                field=key,
            )
        captions[index] = value.strip()
    return captions
