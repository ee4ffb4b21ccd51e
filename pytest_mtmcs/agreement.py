"""How well a judge agrees with hand labels: accuracy, Cohen's kappa, and a confusion matrix."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_mtmcs.records import REPLY_LABELS


@dataclass(frozen=True)
class Agreement:
    accuracy: float
    # Cohen's kappa; NaN when chance agreement is 1 (both sides used one and the same label),
    # where kappa is undefined.
    kappa: float
    confusion: dict[str, dict[str, int]]  # confusion[gold][predicted] -> count
    n: int


@dataclass(frozen=True)
class LabelledReply:
    text: str
    label: str
    kind: str = ""
    split: str = ""


def agreement(
    gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str] = REPLY_LABELS
) -> Agreement:
    """Compare predictions with gold labels. Labels outside `labels` get their own row/column."""
    if len(gold) != len(predicted):
        raise ValueError(f"gold has {len(gold)} labels but predicted has {len(predicted)}")
    names = list(labels)
    for value in [*gold, *predicted]:
        if value not in names:
            names.append(value)
    confusion = {g: {p: 0 for p in names} for g in names}
    for g, p in zip(gold, predicted, strict=True):
        confusion[g][p] += 1
    n = len(gold)
    if n == 0:
        return Agreement(math.nan, math.nan, confusion, 0)
    observed = sum(confusion[x][x] for x in names) / n
    chance = sum(
        (sum(confusion[x].values()) / n) * (sum(confusion[g][x] for g in names) / n) for x in names
    )
    kappa = math.nan if chance >= 1.0 else (observed - chance) / (1.0 - chance)
    return Agreement(observed, kappa, confusion, n)


def format_agreement(a: Agreement) -> str:
    """A plain-text table: rows are gold labels, columns predictions."""

    def num(x: float) -> str:
        return "n/a" if math.isnan(x) else f"{x:.3f}"

    names = list(a.confusion)
    width = max([len("gold \\ predicted"), *(len(x) for x in names)])
    cols = [max(len(x), 5) for x in names]
    head = (
        "gold \\ predicted".ljust(width)
        + "  "
        + "  ".join(x.rjust(c) for x, c in zip(names, cols, strict=True))
    )
    lines = [f"n={a.n}  accuracy={num(a.accuracy)}  kappa={num(a.kappa)}", head]
    for g in names:
        cells = "  ".join(str(a.confusion[g][p]).rjust(c) for p, c in zip(names, cols, strict=True))
        lines.append(g.ljust(width) + "  " + cells)
    return "\n".join(lines)


def load_labelled_records(path: str | Path) -> list[LabelledReply]:
    """Read a JSONL file of `{"text", "label", "kind"?, "split"?}` records."""
    path = Path(path)
    out: list[LabelledReply] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON: {e.msg}") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object")
            for key in ("text", "label"):
                if not isinstance(rec.get(key), str):
                    raise ValueError(f"{path}:{lineno}: field '{key}': missing or not a string")
            if rec["label"] not in REPLY_LABELS:
                raise ValueError(
                    f"{path}:{lineno}: field 'label': {rec['label']!r} is not one of "
                    f"{', '.join(REPLY_LABELS)}"
                )
            out.append(
                LabelledReply(
                    rec["text"], rec["label"], str(rec.get("kind", "")), str(rec.get("split", ""))
                )
            )
    return out


def load_labelled(path: str | Path) -> list[tuple[str, str]]:
    """(text, label) pairs from a labelled JSONL file."""
    return [(r.text, r.label) for r in load_labelled_records(path)]
