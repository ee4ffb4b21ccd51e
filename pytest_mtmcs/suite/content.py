"""A suite's content hash: what the run asks and how it grades, whichever loader read it.

One rule for every loader (the native reader, the MTMCS-Bench and SafeMT importers), so that a
baseline recorded from a release folder (`--mtmcs-suite=safemt:PATH`) compares with a run from
`pytest-mtmcs import`'s native copy of the same release, and the other way round. Hashing the
files instead would tie the hash to a file format: the same dialogues read from parquet and from
JSON Lines would never agree.

What counts is what changes the questions put to the model or the grading of its replies:

- per dialogue: id, label, setting, modality, category, pair, intent, risk_turn, trajectory, the
  image's sha256, the turns (role, text) and the intent questions (kind, text, options, answer,
  tag), and the image's caption where it has one (a judge reads it: with another caption, or
  none, the same replies may be graded otherwise);
- the suite's `[defaults]` that change results: buckets, thresholds, image_placement,
  max_new_tokens.

What does not count: the suite's name, version, source and licence texts, each dialogue's
`source` (provenance: a file name and a row), the order of the dialogue lines, and how the files
are formatted. The suite's name and version are in a baseline's header anyway.

The canonical text is JSON Lines (ASCII, no spaces): `[1, defaults]`, then one array per dialogue
in the field order of `_FIELDS`, sorted by id. Arrays, not objects: building and encoding them is
the cheap part of collecting a 30,080-dialogue suite. A dialogue whose image has a caption has one
more element, the caption, at the end: the rows of uncaptioned dialogues, and so the hashes of
suites without captions, are what they were before captions existed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from pytest_mtmcs.records import Dialogue

# Bump when the canonical form changes: every stored suite_hash changes with it.
SCHEMA = 1
# The `[defaults]` keys that change what is asked or how it is graded.
RESULT_DEFAULTS: tuple[str, ...] = ("buckets", "thresholds", "image_placement", "max_new_tokens")
# The order of a dialogue's fields in its canonical array (documentation; see _row).
_FIELDS: tuple[str, ...] = (
    "id",
    "label",
    "setting",
    "modality",
    "category",
    "pair",
    "intent",
    "risk_turn",
    "trajectory",
    "image_sha256",
    "turns",
    "questions",
    "image_caption",  # only when the image has one
)


def _row(d: Dialogue) -> list[Any]:
    row = [
        d.id,
        d.label,
        d.setting,
        d.modality,
        d.category,
        d.pair,
        d.intent,
        d.risk_turn,
        d.trajectory,
        None if d.image is None else d.image.sha256,
        [[t.role, t.text] for t in d.turns],
        [[q.kind, q.text, list(q.options), q.answer, q.tag] for q in d.questions],
    ]
    if d.image is not None and d.image.caption is not None:
        row.append(d.image.caption)
    return row


def result_defaults(defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The `[defaults]` entries that count, thresholds as a list (a tuple once loaded)."""
    out: dict[str, Any] = {}
    for key in RESULT_DEFAULTS:
        if key in defaults and defaults[key] is not None:
            value = defaults[key]
            out[key] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def content_hash(dialogues: Iterable[Dialogue], defaults: Mapping[str, Any]) -> str:
    """sha256 (hex) of the suite's canonical content; see the module docstring."""
    # ensure_ascii: lone surrogates (legal in JSON escapes, seen in scraped data) have no UTF-8
    # form; escaped, every text hashes, and identically in every loader.
    dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode
    digest = hashlib.sha256()
    digest.update(dumps([SCHEMA, result_defaults(defaults)]).encode("ascii") + b"\n")
    # One row at a time, in id order, rows separated by newlines: a suite's whole text is
    # never held at once (at MTMCS-Bench scale it would be over 100 MB at the peak).
    for i, d in enumerate(sorted(dialogues, key=lambda d: d.id)):
        digest.update((b"\n" if i else b"") + dumps(_row(d)).encode("ascii"))
    return digest.hexdigest()
