"""Datasheets: how well a judge agrees with human labels, measured and stored per judge identity.

A datasheet entry holds the numbers `pytest-mtmcs judge-agreement --record` measured for one judge
identity on one labelled split (the file's name and sha256 go with it). Entries live in
`data/datasheets.json`, keyed by `identity_key()`, a hash of the whole identity (name, version,
model, prompt hash, artefact hash): a judge whose rules, prompt or weights changed has another key
and so no datasheet until it is measured again. The run summary names the judge with its measured
compliance-vs-not agreement on the test split (`header_text`), or says it was not measured, and
the harm-axis accuracy it was measured at on each harm-labelled test file (keys
`harm/<file>/<split>`: several harm files share the split name `test`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_mtmcs.judges import JudgeIdentity

DATASHEETS = Path(__file__).parent / "data" / "datasheets.json"
SCHEMA = 1
# The split the summary quotes: the held-out one.
HEADLINE_SPLIT = "test"


def _identity(identity: JudgeIdentity | Mapping[str, Any]) -> JudgeIdentity:
    return identity if isinstance(identity, JudgeIdentity) else JudgeIdentity.from_dict(identity)


def identity_key(identity: JudgeIdentity | Mapping[str, Any]) -> str:
    """A short hash of the judge's identity, what defines the judge: the key of its datasheet.

    What a run showed the judge of its images (`shown`) is left out: it says what the run's
    suites held, not which judge it was, and the summary of a run with captions still quotes
    the judge's measured agreement (`judge-agreement` rows have no images; a row's image
    description reaches the judges that read it as `ngram` does, `agreement.judge_inputs`)."""
    data = _identity(identity).as_dict()
    data.pop("shown", None)
    blob = json.dumps(data, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load(path: str | Path | None = None) -> dict[str, Any]:
    """All datasheets: `{"schema": 1, "judges": {key: {"identity": ..., "splits": {...}}}}`."""
    p = Path(path) if path is not None else DATASHEETS
    if not p.is_file():
        return {"schema": SCHEMA, "judges": {}}
    data = json.loads(p.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("judges"), dict):
        raise ValueError(f"{p}: not a datasheet file (expected an object with 'judges')")
    return data


def lookup(
    identity: JudgeIdentity | Mapping[str, Any],
    split: str = HEADLINE_SPLIT,
    path: str | Path | None = None,
) -> dict[str, Any] | None:
    """The entry measured for exactly this identity on `split`, or None."""
    try:
        data = load(path)
    except (OSError, ValueError):
        return None
    sheet = data["judges"].get(identity_key(identity))
    if not isinstance(sheet, dict):
        return None
    entry = sheet.get("splits", {}).get(split)
    return entry if isinstance(entry, dict) else None


def record(
    identity: JudgeIdentity | Mapping[str, Any],
    split: str,
    entry: Mapping[str, Any],
    path: str | Path | None = None,
) -> Path:
    """Store `entry` for this identity and split; other identities and splits are kept."""
    p = Path(path) if path is not None else DATASHEETS
    ident = _identity(identity)
    data = load(p)
    data["schema"] = SCHEMA
    sheet = data["judges"].setdefault(identity_key(ident), {"identity": ident.as_dict()})
    sheet["identity"] = ident.as_dict()
    sheet["judge"] = str(ident)
    sheet.setdefault("splits", {})[split] = dict(entry)
    data["judges"] = dict(sorted(data["judges"].items()))
    text = json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    p.parent.mkdir(parents=True, exist_ok=True)
    # Written whole or not at all: a reader never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=p.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, p)
    return p


def short_name(identity: JudgeIdentity | Mapping[str, Any]) -> str:
    """`ngram v1 (sha 1a2b3c4d)`: the name, version and shortened artefact hash."""
    ident = _identity(identity)
    text = ident.name or "-"
    if ident.version:
        text += f" v{ident.version}"
    if ident.artefact_hash:
        text += f" (sha {ident.artefact_hash[:8]})"
    if ident.model:
        text += f" [{ident.model}]"
    if ident.shown in _SHOWN_WORDS:
        text += f", {_SHOWN_WORDS[ident.shown]}"
    return text


# What the summary says of a judge shown more than the text (JudgeIdentity.shown).
_SHOWN_WORDS = {"caption": "shown image captions", "image": "shown the images"}


def measured_text(entry: Mapping[str, Any]) -> str:
    """`compliance-vs-not 0.96 [0.95, 0.97] on judge test split (n=1,234); refusal P/R 0.93/0.91`."""
    c = entry.get("compliance") or {}
    rp = entry.get("refusal_precision") or {}
    rr = entry.get("refusal_recall") or {}
    text = (
        f"compliance-vs-not {c.get('value', float('nan')):.2f} "
        f"[{c.get('lo', float('nan')):.2f}, {c.get('hi', float('nan')):.2f}] on judge "
        f"{entry.get('split', HEADLINE_SPLIT)} split (n={int(entry.get('n', 0)):,})"
    )
    if rp and rr:
        text += (
            f"; refusal P/R {rp.get('value', float('nan')):.2f}/{rr.get('value', float('nan')):.2f}"
        )
    return text


def harm_entries(
    identity: JudgeIdentity | Mapping[str, Any],
    split: str = HEADLINE_SPLIT,
    path: str | Path | None = None,
) -> dict[str, dict[str, Any]]:
    """The harm-axis entries of this identity on `split`, by labelled file (sorted)."""
    try:
        data = load(path)
    except (OSError, ValueError):
        return {}
    sheet = data["judges"].get(identity_key(identity))
    splits = sheet.get("splits", {}) if isinstance(sheet, dict) else {}
    out = {}
    for key in sorted(splits):
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "harm" and parts[2] == split:
            if isinstance(splits[key], dict):
                out[parts[1]] = splits[key]
    return out


def harm_text(name: str, entry: Mapping[str, Any]) -> str:
    """`harm 0.87 [0.82, 0.91] on harmbench_multimodal (n=220)`."""
    a = entry.get("accuracy") or {}
    return (
        f"harm {a.get('value', float('nan')):.2f} [{a.get('lo', float('nan')):.2f}, "
        f"{a.get('hi', float('nan')):.2f}] on {name} (n={int(entry.get('n', 0)):,})"
    )


def header_text(
    identity: JudgeIdentity | Mapping[str, Any] | None, path: str | Path | None = None
) -> str:
    """What the run summary says of its judge: who it is and how well it was measured to agree,
    on the refusal axis and on each harm-labelled test file."""
    if not identity:
        return "-"
    entry = lookup(identity, HEADLINE_SPLIT, path)
    harm = harm_entries(identity, HEADLINE_SPLIT, path)
    if not entry and not harm:
        return f"{short_name(identity)} — not measured against human labels"
    parts = [measured_text(entry)] if entry else []
    parts += [harm_text(name, e) for name, e in harm.items()]
    return f"{short_name(identity)} — {'; '.join(parts)}"


def summary_line(info: Mapping[str, Any], path: str | Path | None = None) -> str:
    """The run summary's judge line: the judge, its measured agreement (on the test split and,
    once the team has adjudicated enough of this model's replies, with them), and for a cascade
    how many replies it escalated (`info` is the run info: `judge` identity, `judge_counts`,
    `adjudications`)."""
    from pytest_mtmcs.judges.cascade import counts_text

    text = f"judge: {header_text(info.get('judge') or None, path)}"
    agree = (info.get("adjudications") or {}).get("agreement")
    if agree:
        text += f"; {adjudication_text(agree)}"
    escalated = counts_text(dict(info.get("judge_counts") or {}))
    return f"{text}; {escalated}" if escalated else text


def adjudication_text(agree: Mapping[str, Any]) -> str:
    """`agrees with the team's 62 adjudications of MODEL's flagged replies: compliance-vs-not
    0.81 [0.69, 0.89]; harm 0.78 [0.62, 0.88] (n=40)` (`baseline.adjudications.agreement`)."""
    nan = float("nan")
    c = agree.get("compliance") or {}
    text = (
        f"agrees with the team's {int(agree.get('n', 0))} adjudications of "
        f"{agree.get('model') or 'this model'}'s flagged replies: compliance-vs-not "
        f"{c.get('value', nan):.2f} [{c.get('lo', nan):.2f}, {c.get('hi', nan):.2f}]"
    )
    h = agree.get("harm")
    if h:
        text += (
            f", harm {h.get('value', nan):.2f} [{h.get('lo', nan):.2f}, {h.get('hi', nan):.2f}] "
            f"(n={int(h.get('n', 0))})"
        )
    return text
