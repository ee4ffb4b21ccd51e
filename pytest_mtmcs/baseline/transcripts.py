"""Baseline transcripts: the reply texts of a baseline run, stored beside it for re-judging.

Opt-in (`--mtmcs-baseline-transcripts`): `baselines/<name>/<suite>.transcripts.jsonl.gz`, gzip'd
JSON lines. The first line is a header, version field first:
`{"mtmcs_transcripts": 1, "suite": ..., "header_sha256": ...}` where `header_sha256` binds the file
to the baseline header written with it (a transcript file left over from another recording is
refused). Then one line per live reply, sorted by dialogue id and user turn:
`{"id": ..., "user_turn": k, "text": ...}`.

The bytes depend only on the results: gzip's timestamp and file name are fixed, so a file written
under xdist is byte-identical to one written without. Writes are atomic (temporary file + rename).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pytest_mtmcs.errors import ConfigError
from pytest_mtmcs.jsonl import objects
from pytest_mtmcs.records import DialogueResult

SCHEMA = 1
SUFFIX = ".transcripts.jsonl.gz"
# A transcript file is data we read back; refuse anything absurdly large once decompressed
# (a gzip bomb in a baseline folder must not exhaust memory).
MAX_BYTES = 2 * 1024**3

Transcripts = dict[tuple[str, int], str]


def transcripts_path(root: Path, name: str, suite: str) -> Path:
    """`<root>/<name>/<suite>.transcripts.jsonl.gz` (the baseline name is validated)."""
    from pytest_mtmcs.baseline.store import baseline_path

    return baseline_path(root, name, suite).with_name(f"{suite}{SUFFIX}")


def header_digest(header: Mapping[str, Any]) -> str:
    """sha256 of a baseline header, insensitive to how the .ambr round trip spells values."""
    text = "\n".join(f"{k}: {str(header[k]).strip()}" for k in sorted(header))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _entries(results: Iterable[DialogueResult]) -> Transcripts:
    out: Transcripts = {}
    for r in results:
        for reply in r.replies:
            out[(r.id, reply.user_turn)] = reply.text
    return out


def encode(suite: str, entries: Mapping[tuple[str, int], str], header_sha256: str | None) -> bytes:
    lines = [
        json.dumps(
            {"mtmcs_transcripts": SCHEMA, "suite": suite, "header_sha256": header_sha256},
            ensure_ascii=False,
        )
    ]
    for did, turn in sorted(entries):
        lines.append(
            json.dumps(
                {"id": did, "user_turn": turn, "text": entries[(did, turn)]}, ensure_ascii=False
            )
        )
    raw = ("\n".join(lines) + "\n").encode("utf-8")
    buffer = io.BytesIO()
    # mtime=0 and no file name: the same results give the same bytes.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as gz:
        gz.write(raw)
    return buffer.getvalue()


def write_transcripts(
    path: str | os.PathLike[str],
    results: Iterable[DialogueResult],
    *,
    suite: str,
    header: Mapping[str, Any] | None = None,
    keep_others: bool = False,
) -> Path:
    """Write the reply texts of `results` atomically; with `keep_others`, keep the entries of
    dialogues not in `results` (a partial re-record, as for the .ambr)."""
    target = Path(path)
    results = list(results)
    entries: Transcripts = {}
    if keep_others and target.exists():
        fresh_ids = {r.id for r in results}
        old, _ = read_transcripts_with_header(target)
        entries.update({k: v for k, v in old.items() if k[0] not in fresh_ids})
    entries.update(_entries(results))
    data = encode(suite, entries, header_digest(header) if header is not None else None)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target


def read_transcripts_with_header(
    path: str | os.PathLike[str],
) -> tuple[Transcripts, dict[str, Any]]:
    """(entries, header) from a transcripts file; ConfigError naming file and line when bad."""
    where = str(path)
    try:
        with gzip.open(path, "rb") as gz:
            raw = gz.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(
            f"{where}: no transcripts stored with this baseline; re-record the baseline with "
            "--snapshot-update --mtmcs-baseline-transcripts to allow --mtmcs-rejudge"
        ) from None
    except (OSError, EOFError) as exc:
        raise ConfigError(f"{where}: not a readable gzip file ({exc})") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{where}: more than {MAX_BYTES} bytes once decompressed; refused")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 ({exc})") from None
    header: dict[str, Any] | None = None
    entries: Transcripts = {}
    for lineno, obj in objects(
        text.splitlines(), lambda n, why: ConfigError(f"{where}:{n}: {why}")
    ):
        if header is None:
            version = obj.get("mtmcs_transcripts")
            if version != SCHEMA:
                raise ConfigError(
                    f"{where}:{lineno}: field 'mtmcs_transcripts': expected {SCHEMA}, got "
                    f"{version!r} (not a transcripts file, or written by another version)"
                )
            header = obj
            continue
        did, turn, reply = obj.get("id"), obj.get("user_turn"), obj.get("text")
        if not isinstance(did, str) or not did:
            raise ConfigError(f"{where}:{lineno}: field 'id': expected a non-empty string")
        if not isinstance(turn, int) or isinstance(turn, bool) or turn < 1:
            raise ConfigError(f"{where}:{lineno}: field 'user_turn': expected an integer >= 1")
        if not isinstance(reply, str):
            raise ConfigError(f"{where}:{lineno}: field 'text': expected a string")
        if (did, turn) in entries:
            raise ConfigError(f"{where}:{lineno}: duplicate entry for {did!r} turn {turn}")
        entries[(did, turn)] = reply
    if header is None:
        raise ConfigError(f"{where}: empty transcripts file")
    return entries, header
