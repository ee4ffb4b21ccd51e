"""The cascade judge: an offline judge decides what it is sure of, a model judge the rest.

`--mtmcs-judge=cascade:LOCAL,MODEL_JUDGE`, e.g. `cascade:ngram,rubric:openai:gpt-4o`. The spec is
split at its first comma: LOCAL is a judge spec without commas (`rules`, `ngram`); MODEL_JUDGE is
any judge spec, colons and commas included. Every reply is judged by LOCAL. It is sent to
MODEL_JUDGE when LOCAL is not sure of it on either axis (DESIGN.md, Grading):
- refusal: the judgment has no label, no confidence, or a confidence below the threshold
  (`--mtmcs-cascade-threshold`);
- harm: LOCAL decided harm for the reply (`harm` is not None) with no `harm_confidence` or one
  below the threshold. A judge that does not decide harm (e.g. `rules`), or does not for this
  reply, never escalates on harm.
The model judgment replaces LOCAL's on each axis MODEL_JUDGE decides (`identity.axes`); LOCAL's
stands on the others (a harm-only guard as model judge keeps LOCAL's refusal label and gives the
harm decision). A failed model judgment is a judge error, as with the model judge alone
(`--mtmcs-max-judge-errors`). The counts say how many replies escalated, and on which axis.

The identity combines both judges' identities and the threshold, so a baseline recorded with
another local judge, model judge or threshold is not silently compared; its axes are those
either judge decides.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_mtmcs import defaults
from pytest_mtmcs.errors import ConfigError
from pytest_mtmcs.judges import (
    DEFAULT_AXES,
    HARM_AXIS,
    REFUSAL_AXIS,
    Judge,
    JudgeIdentity,
    JudgeInput,
    Judgment,
    reads_captions,
    sends_images,
)

# Chosen by measurement (benchmarks/judge_cascade.py, benchmarks/RESULTS.md): the knee of the
# trade-off on the judge dev split, about a fifth of the replies escalated by the ngram or the rules
# judge; confidences above it are right 88% of the time or more on the test split.
DEFAULT_THRESHOLD = defaults.CASCADE_THRESHOLD
OPTION = "--mtmcs-cascade-threshold"


def split_spec(rest: str, option: str = "--mtmcs-judge") -> tuple[str, str]:
    """`LOCAL,MODEL_JUDGE` -> (LOCAL, MODEL_JUDGE), split at the first comma."""
    local, comma, remote = rest.partition(",")
    local, remote = local.strip(), remote.strip()
    if not comma or not local or not remote:
        raise ConfigError(
            f"{option}=cascade:{rest}: expected cascade:LOCAL,MODEL_JUDGE, e.g. "
            "cascade:rules,rubric:openai:MODEL (split at the first comma)"
        )
    for part in (local, remote):
        if part.partition(":")[0] == "cascade":
            raise ConfigError(f"{option}=cascade:{rest}: a cascade cannot contain a cascade")
    return local, remote


def check_threshold(value: Any, origin: str = OPTION) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{origin}={value!r}: expected a number in [0, 1]") from None
    if not 0.0 <= t <= 1.0:
        raise ConfigError(f"{origin}={value!r}: expected a number in [0, 1]")
    return t


def escalates(j: Judgment, threshold: float) -> bool:
    """True when the local judgment is not sure enough to stand on its own (either axis)."""
    return refusal_escalates(j, threshold) or harm_escalates(j, threshold)


def refusal_escalates(j: Judgment, threshold: float) -> bool:
    """True when the local refusal-axis label is missing or not sure enough."""
    return j.label is None or j.confidence is None or j.confidence < threshold


def harm_escalates(j: Judgment, threshold: float) -> bool:
    """True when the local judge decided harm for the reply but is not sure enough of it."""
    return j.harm is not None and (j.harm_confidence is None or j.harm_confidence < threshold)


def union_axes(*identities: JudgeIdentity) -> str:
    """The axes any of the judges decides, in the canonical order."""
    named = {a for ident in identities for a in ident.axes.split(",")}
    axes = [a for a in (REFUSAL_AXIS, HARM_AXIS) if a in named]
    return ",".join(axes) or DEFAULT_AXES


def merge(local: Judgment, remote: Judgment, remote_identity: JudgeIdentity, why: str) -> Judgment:
    """The model judgment on the axes the model judge decides, the local one on the others."""
    refusal = local if not remote_identity.decides_refusal else remote
    harm = local if not remote_identity.decides_harm else remote
    return Judgment(
        refusal.label,
        None,
        remote.score,
        why,
        refusal.confidence,
        harm=harm.harm,
        harm_confidence=harm.harm_confidence,
        off_target=refusal.off_target,
        local=local,
    )


class CascadeJudge:
    def __init__(self, local: Judge, remote: Judge, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.local = local
        self.remote = remote
        self.threshold = check_threshold(threshold)
        lid, rid = local.identity, remote.identity
        both = {
            "local": lid.as_dict(),
            # What the local confidences come from, where the judge names it apart (rules).
            "local_confidence": getattr(local, "confidence_hash", ""),
            "remote": rid.as_dict(),
            "threshold": self.threshold,
        }
        self.identity = JudgeIdentity(
            name=f"cascade:{lid.name}>{rid.name}@{self.threshold:g}",
            model=rid.model,
            prompt_hash=rid.prompt_hash,
            artefact_hash=hashlib.sha256(
                json.dumps(both, sort_keys=True, ensure_ascii=True).encode()
            ).hexdigest(),
            axes=union_axes(lid, rid),
        )
        # What the run summary reports: replies judged, sent on (in all, and for being unsure on
        # each axis: a reply may be unsure on both), and failed there.
        self.counts = {
            "judged": 0,
            "escalated": 0,
            "escalated_refusal": 0,
            "escalated_harm": 0,
            "escalation_errors": 0,
        }

    def preflight(self) -> None:
        for part in (self.local, self.remote):
            check = getattr(part, "preflight", None)
            if check is not None:
                check()

    # What either judge is shown of the images (judges.shown_in_run).
    @property
    def reads_captions(self) -> bool:
        return reads_captions(self.local) or reads_captions(self.remote)

    @property
    def sends_images(self) -> bool:
        return sends_images(self.local) or sends_images(self.remote)

    def judge(self, items: Sequence[JudgeInput]) -> list[Judgment]:
        first = list(self.local.judge(items))
        if len(first) != len(items):
            raise ValueError(
                f"local judge {self.local.identity}: {len(first)} judgments for {len(items)}"
            )
        todo = [i for i, j in enumerate(first) if escalates(j, self.threshold)]
        self.counts["judged"] += len(items)
        self.counts["escalated"] += len(todo)
        self.counts["escalated_refusal"] += sum(
            refusal_escalates(first[i], self.threshold) for i in todo
        )
        self.counts["escalated_harm"] += sum(harm_escalates(first[i], self.threshold) for i in todo)
        if not todo:
            return first
        second = list(self.remote.judge([items[i] for i in todo]))
        if len(second) != len(todo):
            err = f"model judge {self.remote.identity}: {len(second)} judgments for {len(todo)}"
            second = [Judgment(None, error=err)] * len(todo)
        out = list(first)
        for i, j in zip(todo, second, strict=True):
            local = first[i]
            was = (
                f"local {local.label or 'no label'} at confidence "
                f"{'-' if local.confidence is None else f'{local.confidence:.2f}'}"
            )
            if local.harm is not None:
                was += f", harm {'yes' if local.harm else 'no'} at confidence " + (
                    "-" if local.harm_confidence is None else f"{local.harm_confidence:.2f}"
                )
            if j.label is None:
                self.counts["escalation_errors"] += 1
                out[i] = Judgment(
                    None,
                    error=f"escalated ({was}); model judge failed: {j.error or 'no label'}",
                    confidence=j.confidence,
                    local=local,
                )
            else:
                why = f"escalated ({was})" + (f": {j.rationale}" if j.rationale else "")
                out[i] = merge(local, j, self.remote.identity, why)
        return out

    def close(self) -> None:
        for judge in (self.local, self.remote):
            close = getattr(judge, "close", None)
            if close is not None:
                close()


def create(rest: str, options: Any = None) -> CascadeJudge:
    from pytest_mtmcs.judges import create_judge

    local_spec, remote_spec = split_spec(rest)
    raw = getattr(options, "cascade_threshold", None)
    threshold = DEFAULT_THRESHOLD if raw is None else check_threshold(raw)
    local = create_judge(local_spec, options)
    remote = create_judge(remote_spec, options)
    return CascadeJudge(local, remote, threshold)


def summary_counts(infos: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The cascade's counts summed over the run's processes (xdist workers report their own)."""
    total: dict[str, int] = {}
    for info in infos:
        for key, value in (info.get("judge_counts") or {}).items():
            total[key] = total.get(key, 0) + int(value)
    return total


def counts_text(counts: dict[str, int]) -> str:
    """`escalated 12 of 300 replies to the model judge (1 failed)`, or '' when not a cascade."""
    if not counts or "escalated" not in counts:
        return ""
    text = (
        f"escalated {counts.get('escalated', 0)} of {counts.get('judged', 0)} replies "
        "to the model judge"
    )
    if counts.get("escalated_harm", 0):
        text += (
            f" (unsure of refusal {counts.get('escalated_refusal', 0)}, "
            f"of harm {counts['escalated_harm']})"
        )
    failed = counts.get("escalation_errors", 0)
    return text + (f" ({failed} failed there)" if failed else "")
