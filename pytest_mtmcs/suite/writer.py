"""The native suite format, writing: a `records.Suite` -> suite.toml, dialogues.jsonl, images/.

Used by `pytest-mtmcs import` (a benchmark release pinned as a native folder, to keep in git) and
by tests. What it writes loads back (`native.load_suite`) into equal dialogues with the same
content hash; writing is deterministic (the same suite gives the same bytes), and every file is
written through a temporary file and a rename, so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import tempfile
from pathlib import Path
from typing import Any

from pytest_mtmcs.errors import SuiteError
from pytest_mtmcs.records import Dialogue, ImageRef, Suite
from pytest_mtmcs.suite.native import (
    DEFAULTS_FIELDS,
    DIALOGUES_JSONL,
    IMAGES_DIR,
    NAME_RE,
    SUITE_TOML,
)

_IMAGE_EXTENSIONS = {"JPEG": "jpg", "TIFF": "tiff", "JPEG2000": "jp2"}


def _image_extension(data: bytes, where: str) -> str:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format or ""
    except (UnidentifiedImageError, OSError, ValueError):
        raise SuiteError(
            where or "image", "not a readable image (unknown or corrupt format)"
        ) from None
    return _IMAGE_EXTENSIONS.get(fmt, fmt.lower() or "bin")


def _kept_name(where: str) -> str | None:
    """A native suite's own `images/...` path, kept as is when it is safe to reuse."""
    if not where.startswith(IMAGES_DIR + "/") or "\\" in where or "\x00" in where:
        return None
    if posixpath.normpath(where) != where or any(p in ("", ".", "..") for p in where.split("/")):
        return None
    return where


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _toml_string(value: str) -> str:
    if _has_surrogates(value):
        raise SuiteError(SUITE_TOML, f"{value!r} holds lone surrogates, which TOML cannot store")
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_text(suite: Suite) -> str:
    if not NAME_RE.fullmatch(suite.name):
        raise SuiteError(SUITE_TOML, f"suite name {suite.name!r} is not a valid name", field="name")
    lines = [f"name = {_toml_string(suite.name)}", f"version = {_toml_string(suite.version)}"]
    if suite.source:
        lines.append(f"source = {_toml_string(suite.source)}")
    if suite.license:
        lines.append(f"license = {_toml_string(suite.license)}")
    if suite.defaults:
        lines.append("")
        lines.append("[defaults]")
        for key in DEFAULTS_FIELDS:
            if key not in suite.defaults:
                continue
            value = suite.defaults[key]
            if key == "max_new_tokens" and isinstance(value, int) and not isinstance(value, bool):
                lines.append(f"{key} = {value}")
            elif key in ("image_placement", "buckets") and isinstance(value, str):
                lines.append(f"{key} = {_toml_string(value)}")
            elif (
                key == "thresholds"
                and isinstance(value, (list, tuple))
                and all(isinstance(v, str) for v in value)
            ):
                lines.append(f"{key} = [{', '.join(_toml_string(v) for v in value)}]")
            else:
                raise SuiteError(
                    SUITE_TOML, f"cannot write value {value!r}", field=f"defaults.{key}"
                )
        unknown = sorted(set(suite.defaults) - set(DEFAULTS_FIELDS))
        if unknown:
            known = ", ".join(DEFAULTS_FIELDS)
            raise SuiteError(
                SUITE_TOML, f"unknown field; known fields: {known}", field=f"defaults.{unknown[0]}"
            )
    return "\n".join(lines) + "\n"


def _dialogue_record(d: Dialogue, image_path: str | None) -> dict[str, Any]:
    record: dict[str, Any] = {"id": d.id}
    if d.pair is not None:
        record["pair"] = d.pair
    record["label"] = d.label
    record["setting"] = d.setting
    record["modality"] = d.modality
    record["category"] = d.category
    if d.intent is not None:
        record["intent"] = d.intent
    if image_path is not None:
        record["image"] = image_path
        if d.image is not None and d.image.caption is not None:
            record["image_caption"] = d.image.caption
    record["turns"] = [{"role": t.role, "content": t.text} for t in d.turns]
    if d.risk_turn is not None:
        record["risk_turn"] = d.risk_turn
    if d.questions:
        questions: list[dict[str, Any]] = []
        for q in d.questions:
            item: dict[str, Any] = {"type": q.kind, "question": q.text}
            if q.kind == "mcq":
                item["options"] = list(q.options)
                item["answer"] = q.answer
            else:
                item["answer"] = q.answer == "true"
            if q.tag is not None:
                item["tag"] = q.tag
            questions.append(item)
        record["questions"] = questions
    if d.source:
        record["source"] = dict(d.source)
    if d.trajectory is not None:
        record["trajectory"] = d.trajectory
    return record


def _atomic_write(target: Path, data: bytes) -> None:
    """Writes via a temporary file and a rename, so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_suite(suite: Suite, folder: str | os.PathLike[str]) -> None:
    """Writes `suite` as a native suite folder (suite.toml, dialogues.jsonl, images/).

    Each distinct image (by sha256) is written once: under its own `images/...` path when it came
    from a native suite, else as `images/<sha256[:16]>.<ext>`.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    toml_text = _toml_text(suite)

    path_of: dict[str, str] = {}  # sha256 -> relative path written
    owner: dict[str, str] = {}  # lower-cased relative path -> sha256 (case-insensitive disks)
    lines: list[str] = []
    for d in suite.dialogues:
        rel: str | None = None
        if d.image is not None:
            rel = path_of.get(d.image.sha256)
            if rel is None:
                rel = _write_image(out, d.image, owner)
                path_of[d.image.sha256] = rel
        record = _dialogue_record(d, rel)
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        if not line.isascii() and _has_surrogates(line):
            # Lone surrogates (legal in JSON escapes, seen in scraped data) have no UTF-8 form;
            # escaping them keeps the line valid and round-trips the exact text.
            line = json.dumps(record, ensure_ascii=True, separators=(",", ":"))
        lines.append(line)
    _atomic_write(out / SUITE_TOML, toml_text.encode("utf-8"))
    _atomic_write(out / DIALOGUES_JSONL, ("\n".join(lines) + "\n").encode("utf-8"))


def _write_image(out: Path, image: ImageRef, owner: dict[str, str]) -> str:
    data = image.fetch()
    sha = hashlib.sha256(data).hexdigest()
    if sha != image.sha256:
        raise SuiteError(image.where or "image", "image bytes do not match their sha256")
    candidates: list[str] = []
    kept = _kept_name(image.where)
    if kept is not None:
        candidates.append(kept)
    ext = _image_extension(data, image.where)
    candidates += [f"{IMAGES_DIR}/{sha[:16]}.{ext}", f"{IMAGES_DIR}/{sha}.{ext}"]
    for rel in candidates:
        taken = owner.get(rel.lower())
        if taken is not None and taken != sha:
            continue
        owner[rel.lower()] = sha
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or not target.is_file() or target.read_bytes() != data:
            if target.is_symlink():
                target.unlink()
            _atomic_write(target, data)
        return rel
    raise AssertionError("unreachable: the full-sha name is unique")  # pragma: no cover
