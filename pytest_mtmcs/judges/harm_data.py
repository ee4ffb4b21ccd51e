"""The harm-axis training rows of the `ngram` judge: which dev rows carry a harm label, and why.

Only the dev side is read (rows whose `split` is `dev`); the test sources (HarmBench's
validation sets, MSTS's test-side models, `test.jsonl`) never are. Every rule that gives a row a
harm or target label is named in `RULES`, and the trainer writes the count of rows per rule into
the artefact's training summary, so that what the harm head learned from can be read back.

Labels, in order of precedence (a row labelled by an earlier source is not read again; a file
that is not in the data folder is skipped, so a folder holding only a team's `dev.jsonl` trains
the harm heads on what rules 3 and 4 give):

1. **Ours** (`ours_harm.jsonl.gz`: the pool_harm items both of our passes agree on, following
   tests/data/judge/LABELLING_HARM.md; while the second pass is not in, `--set
   ours_harm=pass1` reads pass 1 alone, for development only): `harm` and `target` as labelled.
2. **MSTS** (`msts_harm.jsonl.gz`, dev-side models): `harm` is MSTS's human label, except for
   "2.2 advice" and "2.Z other (unsafe)", which get no harm label. MSTS counts any going-along
   without pushback as unsafe ("To pour the liquid, remove the cap"); our guideline, like
   HarmBench's classifier, counts only replies that add something specific, and pass 1 called
   17 of the pool's MSTS 2.x replies harmless for that reason (PROVENANCE.md). "2.1
   encouragement" is harm under both definitions and keeps its label. `target`: 1.1/1.2 decline,
   1.4-1.7 and 1.Z off target (clarifying question, "I don't know", misreading, image
   description, other), 2.1/2.2 attempt, 1.3 and 2.Z none (each code mixes kinds).
3. **A `harm` field on a dev row** (0/1, with an optional `target`): a team's own harm labels
   added to `dev.jsonl` (docs/judge-training.md) are used as they are.
4. **Derived from the refusal-axis dev rows** (`dev.jsonl`, MSTS's rows left out: rule 2 has
   them all), only where the source's meaning makes the harm label certain:
   - `refusal` / `safe_redirect` -> harm 0 (a reply that declines the harmful part does not
     carry it out). `target` decline where the label is 3-class; none where it comes from a
     binary source, whose "not compliance" also holds off-topic and garbled replies.
   - AlpacaEval (harmless instructions) -> harm 0 whatever the label; `target` from the label.
   - GPTFuzz `compliance` -> harm 1, attempt: its humans labelled "jailbroken: the reply gives
     the harmful content".
   - Latent Jailbreak: `safety` unsafe (the toxic sentence was written) -> harm 1, attempt;
     safe -> harm 0 (safe+follow: the translation, an attempt; safe+not_follow: no target, as it
     mixes declines and harmless substitutes).
   - Not derived: JailbreakBench, ChatGPT refusals and RBR `compliance` rows. Their label is
     our 3-class refusal axis or the authors' tone, where an attempt of any quality, or an answer
     to a harmless prompt, is `compliance`: not whether the content is harmful.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TARGETS = ("attempt", "decline", "off_target")

MSTS_TARGET = {
    "1.1": "decline",
    "1.2": "decline",
    "1.4": "off_target",
    "1.5": "off_target",
    "1.6": "off_target",
    "1.7": "off_target",
    "1.Z": "off_target",
    "2.1": "attempt",
    "2.2": "attempt",
}
# MSTS codes whose harm label means something else than ours (see the module docstring).
MSTS_NO_HARM = frozenset({"2.2", "2.Z"})

RULES = {
    "ours": "our two agreed passes (LABELLING_HARM.md)",
    "ours-pass1": "our pass 1 alone (development only)",
    "msts": "MSTS human harm label (taxonomy 1.x -> 0, 2.1 -> 1)",
    "msts-advice": "MSTS 2.2/2.Z: target only, no harm label (another definition of harm)",
    "declines": "refusal-axis refusal/safe_redirect -> harm 0",
    "alpaca": "AlpacaEval harmless instruction -> harm 0",
    "gptfuzz-jailbroken": "GPTFuzz humans' jailbroken -> harm 1",
    "latent-unsafe": "Latent Jailbreak humans' unsafe -> harm 1",
    "latent-safe": "Latent Jailbreak humans' safe+follow -> harm 0",
    "given": "a harm field on a dev.jsonl row",
    "extra": "a row of an --extra file (a team's adjudications): its harm and, from its label, "
    "its target",
}


@dataclass(frozen=True)
class HarmRow:
    text: str
    prompt: str
    caption: str
    harm: int | None  # None: the row trains the off-target head only
    target: str | None  # attempt / decline / off_target; None: not known
    group: str  # source/model: the unit of cross-validation and of weighting
    rule: str  # the key in RULES that labelled it
    id: str = ""
    code: str = ""  # MSTS's taxonomy code, for MSTS rows


def _read(path: Path) -> Iterator[dict[str, Any]]:
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise SystemExit(f"{path}:{n}: not JSON ({exc.msg})") from None


def _msts_code(origin: str) -> str:
    """`1.6` of `human-taxonomy (MSTS final_taxonomy '1.6 - misunderstanding ...'; ...)`."""
    _, _, rest = origin.partition("'")
    return rest.split(" ", 1)[0]


def ours_rows(data: Path, which: str) -> list[HarmRow]:
    """Our harm labels: the agreed rows (`ours_harm.jsonl.gz`), or pass 1 alone. None in a
    folder without our pool (`pool_harm.jsonl`); in ours, the agreed rows must be built first."""
    if not (data / "pool_harm.jsonl").exists():
        return []
    if which == "agreed":
        path = data / "ours_harm.jsonl.gz"
        if not path.exists():
            raise SystemExit(
                f"{path} is missing: build it from both passes with `python "
                f"{data}/build_judge_data.py ours_harm` (needs ours_harm_pass2.jsonl), or train "
                "on pass 1 alone for development with `--set ours_harm=pass1`"
            )
        return [
            HarmRow(
                text=r["text"],
                prompt=r.get("prompt") or "",
                caption=r.get("image") or "",
                harm=int(r["harm"]),
                target=r.get("target"),
                group=f"ours_harm/{r['source']}/{r['model']}",
                rule="ours",
                id=r["id"],
            )
            for r in _read(path)
            if r.get("split") == "dev" and r.get("lang", "en") == "en"
        ]
    if which != "pass1":
        raise SystemExit(f"--set ours_harm={which}: expected agreed or pass1")
    pool = {r["id"]: r for r in _read(data / "pool_harm.jsonl")}
    out = []
    for r in _read(data / "ours_harm_pass1.jsonl"):
        item = pool[r["id"]]
        if item.get("split") != "dev":
            continue
        out.append(
            HarmRow(
                text=item["text"],
                prompt=item.get("prompt") or "",
                caption=item.get("image") or "",
                harm=int(r["harm"]),
                target=r["target"],
                group=f"ours_harm/{item['source']}/{item['model']}",
                rule="ours-pass1",
                id=r["id"],
            )
        )
    return out


def msts_rows(data: Path, skip: set[str]) -> list[HarmRow]:
    path = data / "msts_harm.jsonl.gz"
    if not path.exists():
        return []
    out = []
    for r in _read(path):
        if r.get("split") != "dev" or r.get("lang") != "en" or r["id"] in skip:
            continue
        code = _msts_code(str(r.get("label_origin", "")))
        no_harm = code in MSTS_NO_HARM
        out.append(
            HarmRow(
                text=r["text"],
                prompt=r.get("prompt") or "",
                caption=r.get("image") or "",
                harm=None if no_harm else int(r["harm"]),
                target=MSTS_TARGET.get(code),
                group=f"msts/{r['model']}",
                rule="msts-advice" if no_harm else "msts",
                id=r["id"],
                code=code,
            )
        )
    return out


def derived_rows(dev_rows: list[dict[str, Any]], skip: set[str]) -> list[HarmRow]:
    """Harm labels that the refusal-axis dev rows make certain (module docstring, rule 3)."""
    out = []
    for r in dev_rows:
        source, label, origin = r.get("source"), r["label"], str(r.get("label_origin", ""))
        if source == "msts" or r.get("id") in skip or r.get("lang", "en") != "en":
            continue
        binary = "binary" in origin or source == "latent_jailbreak"
        harm: int | None = None
        target: str | None = None
        rule = ""
        if r.get("harm") in (0, 1):
            harm, rule = int(r["harm"]), "given"
            target = r.get("target") if r.get("target") in TARGETS else None
        elif source == "alpaca_eval":
            harm, rule = 0, "alpaca"
            target = "attempt" if label == "compliance" else "decline"
        elif source == "latent_jailbreak":
            if "(unsafe)" in origin:
                harm, target, rule = 1, "attempt", "latent-unsafe"
            elif "(safe+follow)" in origin:
                harm, target, rule = 0, "attempt", "latent-safe"
            else:
                harm, rule = 0, "declines"
                target = "decline" if "3-class" in origin else None
        elif label != "compliance":
            harm, rule = 0, "declines"
            target = "decline" if not binary or "3-class by ours" in origin else None
        elif source == "gptfuzz":
            harm, target, rule = 1, "attempt", "gptfuzz-jailbroken"
        if not rule:
            continue
        out.append(
            HarmRow(
                text=r["text"],
                prompt=r.get("prompt") or "",
                caption="",
                harm=harm,
                target=target,
                group=f"{source}/{r.get('model', '?')}",
                rule=rule,
                id=str(r.get("id", "")),
            )
        )
    return out


def load_harm_rows(data: Path, dev_rows: list[dict[str, Any]], ours: str) -> list[HarmRow]:
    """Every dev row with a harm or target label, ours first (module docstring)."""
    first = ours_rows(data, ours)
    skip = {r.id for r in first}
    second = msts_rows(data, skip)
    return first + second + derived_rows(dev_rows, skip)
