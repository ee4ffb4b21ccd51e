"""SafeMT importer: the release's `Data/` folder -> a Suite.

`Data/{1,2,4,6,8}_turn.json` (whichever exist) are JSON arrays of records
`{id, scenario, image_path, dialogue: [{role, content}], question}`. Each record becomes one
unsafe dialogue whose history is scripted (assistant turns kept as they are) and whose final user
turn is answered live. The same record id across lengths is one trajectory.

Texts are kept byte for byte: the release has contents starting with a space or a newline, and
the model must see exactly what the benchmark sends.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from pytest_mtmcs.errors import SuiteError
from pytest_mtmcs.records import Dialogue, ImageRef, Suite, Turn
from pytest_mtmcs.suite.content import content_hash
from pytest_mtmcs.suite.images import ImageProblem, verify_image

SUITE_NAME = "safemt"
BENCHMARK = "SafeMT"
LENGTHS: tuple[int, ...] = (1, 2, 4, 6, 8)
DEFAULTS = {"image_placement": "first"}

_FILE_RE = re.compile(r"^(\d+)_turn\.json$")
_ID_OK = re.compile(r"^[A-Za-z0-9_.-]+$")
_WS = re.compile(r"[ \t\n\r]*")


class RecordError(SuiteError):
    """A SuiteError about one record: `2_turn.json:57: record 3 (id 'x'), field 'y': message`.

    `line` is the line where the record starts (or where the JSON breaks).
    """

    def __init__(
        self,
        file: str,
        message: str,
        *,
        line: int | None = None,
        record: int | None = None,
        record_id: str | None = None,
        field: str | None = None,
        option: str | None = None,
    ) -> None:
        self.record = record
        self.record_id = record_id
        self.option = option
        super().__init__(file, message, line=line, field=field or option)

    def __str__(self) -> str:
        head = self.file if self.line is None else f"{self.file}:{self.line}"
        where = []
        if self.record is not None:
            rid = f" (id {self.record_id!r})" if self.record_id else ""
            where.append(f"record {self.record}{rid}")
        if self.option:
            where.append(f"option '{self.option}'")
        elif self.field:
            where.append(f"field '{self.field}'")
        if where:
            head += ": " + ", ".join(where)
        return f"{head}: {self.message}"


@dataclass(frozen=True)
class _Image:
    ref: ImageRef
    path: Path


def load(
    path: str | os.PathLike[str],
    *,
    lengths: Sequence[int] | str | None = None,
    verify_images: bool = True,
) -> Suite:
    """Loads SafeMT's `Data/` folder (or the folder holding `Data/`).

    `lengths`: which `N_turn.json` files to read (default: all present).
    `verify_images`: decode each distinct image once at load.
    """
    # Loading builds many small acyclic objects; the cyclic collector would rescan them again
    # and again (measured: about a third of the load time at benchmark scale).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _load(path, lengths=lengths, verify_images=verify_images)
    finally:
        if was_enabled:
            gc.enable()


def _load(
    path: str | os.PathLike[str],
    *,
    lengths: Sequence[int] | str | None = None,
    verify_images: bool = True,
) -> Suite:
    data = _data_dir(Path(path))
    files = _find_files(data)
    chosen = _choose_lengths(data, files, lengths)

    images: dict[Path, _Image] = {}
    dialogues: list[Dialogue] = []
    for n in chosen:
        file = files[n]
        raw = file.read_bytes()
        dialogues.extend(_dialogues_of_file(data, file, n, raw, images, verify_images))
    return Suite(
        name=SUITE_NAME,
        version="release",
        root=str(data),
        dialogues=tuple(dialogues),
        # The same rule as a native suite's: an imported copy of this release hashes the same.
        content_hash=content_hash(dialogues, DEFAULTS),
        source=f"{BENCHMARK} release (arXiv 2510.12133), lengths {', '.join(map(str, chosen))}",
        defaults=dict(DEFAULTS),
    )


# --- finding the files ------------------------------------------------------------------------


def _data_dir(root: Path) -> Path:
    if not root.is_dir():
        raise RecordError(str(root), "no such folder; expected SafeMT's Data/ folder")
    if not any(_FILE_RE.match(p.name) for p in root.iterdir()) and (root / "Data").is_dir():
        return root / "Data"
    return root


def _find_files(data: Path) -> dict[int, Path]:
    files: dict[int, Path] = {}
    for p in sorted(data.iterdir()):
        m = _FILE_RE.match(p.name)
        if m and p.is_file():
            files[int(m.group(1))] = p
    if not files:
        raise RecordError(
            str(data),
            "no SafeMT files here (expected 1_turn.json, 2_turn.json, 4_turn.json, "
            "6_turn.json, 8_turn.json in Data/)",
        )
    return files


def _choose_lengths(
    data: Path, files: dict[int, Path], lengths: Sequence[int] | str | None
) -> list[int]:
    present = sorted(files)
    if lengths is None:
        return present
    items = lengths.split(",") if isinstance(lengths, str) else list(lengths)
    chosen: list[int] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            n = int(text)
        except ValueError:
            raise RecordError(
                str(data), f"{text!r} is not a dialogue length", option="lengths"
            ) from None
        if n not in files:
            raise RecordError(
                str(data),
                f"no {n}_turn.json here; lengths present: {', '.join(map(str, present))}",
                option="lengths",
            )
        chosen.append(n)
    if not chosen:
        raise RecordError(str(data), "no length selected", option="lengths")
    return sorted(set(chosen))


# --- parsing with positions -------------------------------------------------------------------


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _parse_array(file: Path, raw: bytes) -> tuple[list[Any], list[int], str]:
    """Parses a JSON array; returns its items, each item's start offset, and the text.

    Items are decoded one at a time by the C scanner so each one's position is known, which a
    plain `json.loads` would lose.
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise RecordError(str(file), f"not UTF-8 text: {exc.reason}", line=line) from None
    decoder = json.JSONDecoder()
    items: list[Any] = []
    starts: list[int] = []
    pos = _WS.match(text, 0).end()  # type: ignore[union-attr]
    if not text.startswith("[", pos):
        raise RecordError(str(file), "expected a JSON array of records", line=_line_of(text, pos))
    pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            try:
                item, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                raise RecordError(
                    str(file), f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno
                ) from None
            items.append(item)
            starts.append(pos)
            pos = _WS.match(text, end).end()  # type: ignore[union-attr]
            if text.startswith(",", pos):
                pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
                continue
            if text.startswith("]", pos):
                pos += 1
                break
            line = _line_of(text, pos)
            raise RecordError(str(file), "invalid JSON: expected ',' or ']'", line=line)
    pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
    if pos != len(text):
        raise RecordError(
            str(file), "invalid JSON: extra data after the array", line=_line_of(text, pos)
        )
    return items, starts, text


# --- records -> dialogues ---------------------------------------------------------------------


def _dialogues_of_file(
    data: Path, file: Path, n: int, raw: bytes, images: dict[Path, _Image], verify: bool
) -> list[Dialogue]:
    items, starts, text = _parse_array(file, raw)
    fname = str(file)

    def err(
        index: int, message: str, field: str | None = None, rid: str | None = None
    ) -> Exception:
        return RecordError(
            fname,
            message,
            line=_line_of(text, starts[index]),
            record=index,
            record_id=rid,
            field=field,
        )

    seen: dict[str, int] = {}
    pending: list[tuple[int, Path, str | None]] = []
    out: list[Dialogue] = []
    for index, rec in enumerate(items):
        if not isinstance(rec, dict):
            raise err(index, f"expected an object, found {type(rec).__name__}")
        rid = rec.get("id")
        if not isinstance(rid, str) or not rid.strip():
            raise err(index, "missing or empty id (a string)", "id")
        # Characters a test id cannot hold become `_`; the original id stays the trajectory.
        safe_id = rid if _ID_OK.match(rid) else re.sub(r"[^A-Za-z0-9_.-]", "_", rid)
        if not safe_id.strip("."):
            safe_id = safe_id.replace(".", "_")  # `.` and `..` are not id segments
        if safe_id in seen:
            other = seen[safe_id]
            line = _line_of(text, starts[other])
            raise err(index, f"duplicate id (also record {other}, line {line})", "id", rid)
        seen[safe_id] = index
        scenario = rec.get("scenario")
        if not isinstance(scenario, str) or not scenario.strip():
            raise err(index, "missing or empty scenario (a string)", "scenario", rid)
        turns = _turns(rec.get("dialogue"), partial(_bind_field, err, index, rid))
        question = rec.get("question")
        if question is not None and not isinstance(question, str):
            raise err(index, f"expected a string, found {type(question).__name__}", "question", rid)
        if question is None or not question.strip():
            # Older releases have no `question`: the last user turn is the request.
            question = turns[-1].text.strip()
        image_path = rec.get("image_path")
        if not isinstance(image_path, str) or not image_path.strip():
            raise err(index, "missing or empty image_path (a string)", "image_path", rid)
        img_file = _image_file(data, image_path, partial(err, index, field="image_path", rid=rid))
        if img_file not in images:
            try:
                blob = img_file.read_bytes()
            except OSError as exc:
                raise err(index, f"cannot read image: {exc.strerror}", "image_path", rid) from None
            # One ImageRef per file, shared by every length that shows it.
            ref = ImageRef(hashlib.sha256(blob).hexdigest(), _reader(img_file), image_path)
            images[img_file] = _Image(ref, img_file)
            if verify:
                pending.append((index, img_file, rid))
        user_turns = sum(1 for t in turns if t.role == "user")
        out.append(
            Dialogue(
                suite=SUITE_NAME,
                id=f"{n}turn/{safe_id}",
                label="unsafe",
                setting="scripted",
                modality="multimodal",
                category=scenario,
                turns=turns,
                pair=None,
                intent=question,
                image=images[img_file].ref,
                risk_turn=user_turns,
                questions=(),
                source={
                    "benchmark": BENCHMARK,
                    "file": file.name,
                    "record": index,
                    "id": rid,
                    "length": n,
                },
                trajectory=rid,
            )
        )
    _verify(pending, lambda i, m, rid: err(i, m, "image_path", rid))
    return out


def _bind_field(err: Any, index: int, rid: str, message: str, field: str) -> Exception:
    return err(index, message, field, rid)  # type: ignore[no-any-return]


def _reader(path: Path) -> Any:
    return lambda: path.read_bytes()


def _turns(value: Any, err: Any) -> tuple[Turn, ...]:
    if not isinstance(value, list) or not value:
        raise err("expected a non-empty list of {role, content} messages", "dialogue")
    turns: list[Turn] = []
    for k, msg in enumerate(value):
        field = f"dialogue[{k}]"
        if not isinstance(msg, dict):
            raise err(f"expected an object, found {type(msg).__name__}", field)
        want = "user" if k % 2 == 0 else "assistant"
        role = msg.get("role")
        if role != want:
            raise err(
                f"role {role!r}; roles must alternate user, assistant, ... starting with user",
                f"{field}.role",
            )
        content = msg.get("content")
        if not isinstance(content, str):
            raise err(f"expected a string, found {type(content).__name__}", f"{field}.content")
        if not content.strip():
            raise err("empty content", f"{field}.content")
        turns.append(Turn(role, content))
    if turns[-1].role != "user":
        raise err("the dialogue must end with a user turn (the one the model answers)", "dialogue")
    return tuple(turns)


def _image_file(data: Path, image_path: str, err: Any) -> Path:
    rel = Path(image_path)
    if rel.is_absolute() or "\\" in image_path:
        raise err(f"{image_path!r} must be a relative POSIX path inside the Data folder")
    target = (data / rel).resolve()
    if not target.is_relative_to(data.resolve()):
        raise err(f"{image_path!r} leaves the Data folder")
    if not target.is_file():
        raise err(f"image file {image_path!r} not found in {data}")
    return target


def _verify(pending: list[tuple[int, Path, str | None]], err: Any) -> None:
    """Decodes each new image once; Pillow releases the GIL while decoding, so threads help."""

    def check(item: tuple[int, Path, str | None]) -> str | None:
        try:
            verify_image(item[1].read_bytes())
        except ImageProblem as exc:
            return str(exc)
        return None

    workers = min(8, os.cpu_count() or 1, max(1, len(pending) // 64))
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            problems = list(pool.map(check, pending, chunksize=16))
    else:
        problems = [check(item) for item in pending]
    for (index, _, rid), problem in zip(pending, problems, strict=True):
        if problem is not None:
            raise err(index, problem, rid)
