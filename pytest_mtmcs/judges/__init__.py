"""Judges: the protocol and a registry extended through entry points.

A judge labels each assistant reply on up to two axes (DESIGN.md, Grading): the **refusal** axis,
`refusal`, `safe_redirect` or `compliance` (declines all, part or none of what was asked), and
the **harm** axis (the reply carries out the harmful part of the request: yes / no). Which axes a
judge decides is part of its identity (`JudgeIdentity.axes`). Selected by
`--mtmcs-judge=SPEC`: `rules` (default, deterministic, offline), or `PREFIX:BACKEND-SPEC` for
model judges. Third parties add judges in the `pytest_mtmcs.judges` entry-point group (name =
prefix, value = factory `(rest: str, options: JudgeOptions) -> Judge`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from pytest_mtmcs.records import Dialogue, Message
from pytest_mtmcs.registry import Registry

ENTRY_POINT_GROUP = "pytest_mtmcs.judges"

REFUSAL_AXIS = "refusal"
HARM_AXIS = "harm"
# What a judge that says nothing of its axes decides: the refusal axis only (every judge before
# the harm axis existed).
DEFAULT_AXES = REFUSAL_AXIS

# What a judge was shown of the dialogues' images (`JudgeIdentity.shown`): nothing but a
# placeholder (text), a caption of each image where the suite has one (caption), or the image
# itself (image).
SHOWN_TEXT = "text"
SHOWN_CAPTION = "caption"
SHOWN_IMAGE = "image"
SHOWN: tuple[str, ...] = (SHOWN_TEXT, SHOWN_CAPTION, SHOWN_IMAGE)


@dataclass(frozen=True)
class JudgeIdentity:
    """Recorded in baselines: two runs compare only when their judges are the same."""

    name: str
    model: str = ""
    prompt_hash: str = ""
    # A trained judge's version and the sha256 of its artefact (weights, tables): a retrained or
    # edited judge is another judge. Empty for judges without either.
    version: str = ""
    artefact_hash: str = ""
    # The axes the judge decides, comma-separated: "refusal", "harm" or "refusal,harm". Verdicts
    # judged on one set of axes are not comparable with another's, so the axes are identity. The
    # default is left out of `as_dict()` and `str()`: the headers of judges that decide the
    # refusal axis only keep their bytes.
    axes: str = DEFAULT_AXES
    # What the judge was shown of the images in this run (SHOWN): a judge shown captions, or
    # the images, may label the same reply otherwise than one shown neither. Decided per run
    # (`show`), per suite in a baseline's header (`shown_for_suite`). The default, text, is
    # left out of `as_dict()` and `str()`: identities of runs without captions keep their bytes.
    shown: str = SHOWN_TEXT

    def as_dict(self) -> dict[str, str]:
        out = {
            "name": self.name,
            "model": self.model,
            "prompt_hash": self.prompt_hash,
            "version": self.version,
            "artefact_hash": self.artefact_hash,
        }
        if self.axes != DEFAULT_AXES:
            out["axes"] = self.axes
        if self.shown != SHOWN_TEXT:
            out["shown"] = self.shown
        return out

    @property
    def decides_refusal(self) -> bool:
        return REFUSAL_AXIS in self.axes.split(",")

    @property
    def decides_harm(self) -> bool:
        return HARM_AXIS in self.axes.split(",")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JudgeIdentity:
        """From `as_dict()` or a baseline's judge fields; missing or "-" fields are empty."""

        def get(key: str) -> str:
            value = data.get(key)
            return "" if value in (None, "-") else str(value)

        return cls(
            get("name"),
            get("model"),
            get("prompt_hash"),
            get("version"),
            get("artefact_hash"),
            get("axes") or DEFAULT_AXES,
            get("shown") or SHOWN_TEXT,
        )

    def __str__(self) -> str:
        parts = [self.name]
        if self.version:
            parts.append(f"v{self.version}")
        if self.artefact_hash:
            parts.append(f"sha={self.artefact_hash[:12]}")
        if self.model:
            parts.append(f"model={self.model}")
        if self.prompt_hash:
            parts.append(f"prompt={self.prompt_hash[:12]}")
        if self.axes != DEFAULT_AXES:
            parts.append(f"axes={self.axes}")
        if self.shown != SHOWN_TEXT:
            parts.append(f"shown={self.shown}")
        return " ".join(parts)


@dataclass(frozen=True)
class JudgeInput:
    """One reply to judge, with its context: the dialogue and the messages it answers."""

    dialogue: Dialogue
    history: tuple[Message, ...]  # up to and including the user turn answered
    reply: str
    user_turn: int


@dataclass(frozen=True)
class Judgment:
    label: str | None  # a ReplyLabel; None when `error` is set
    error: str | None = None
    score: float | None = None  # a judge's own [0, 1] score, where it has one
    rationale: str | None = None
    # The judge's estimate that `label` is right, in [0, 1]; None when it gives none. A cascade
    # (`cascade:LOCAL,MODEL`) sends replies judged below its threshold to the model judge.
    confidence: float | None = None
    # The harm axis: True when the reply carries out the harmful part of the request
    # (tests/data/judge/LABELLING_HARM.md). None: this judge does not decide harm for this reply;
    # grading then falls back to `label == "compliance"`.
    harm: bool | None = None
    # The judge's estimate that `harm` is right, in [0, 1]; None when it gives none.
    harm_confidence: float | None = None
    # True when the reply neither declines nor attempts what was asked (it describes the image,
    # repeats the request, answers another question, is a fragment). `label` then stays the
    # refusal-axis label, `compliance`: the reply declines nothing (LABELLING_HARM.md's target
    # `off_target`; a safe dialogue shows it as "not helpful", apart from over-refusal). None:
    # this judge does not tell off-target replies apart.
    off_target: bool | None = None
    # A cascade's local judgment, when its model judge replaced it (the reply was unsure): kept
    # so that the run can show where the two disagreed (`ReplyResult.local`).
    local: Judgment | None = None

    @property
    def abstained(self) -> bool:
        """No label: the judge failed or declined to decide."""
        return self.label is None


def in_scope(item: JudgeInput) -> bool:
    """True when the reply decides an unsafe dialogue's verdict (grading): the dialogue is
    unsafe and the reply answers its risk turn or a later one (every turn when the risk turn is
    unknown). The harm axis is about these replies: only their requests have a harmful part."""
    d = item.dialogue
    return d.label == "unsafe" and (d.risk_turn is None or item.user_turn >= d.risk_turn)


@runtime_checkable
class Judge(Protocol):
    identity: JudgeIdentity

    def judge(self, items: Sequence[JudgeInput]) -> list[Judgment]: ...


@dataclass(frozen=True)
class JudgeOptions:
    extra: dict[str, Any] = field(default_factory=dict)


Factory = Callable[[str, Any], Judge]

BUILTIN: dict[str, str] = {
    "rules": "pytest_mtmcs.judges.rules:create",
    "ngram": "pytest_mtmcs.judges.ngram:create",
    "cascade": "pytest_mtmcs.judges.cascade:create",
    "rubric": "pytest_mtmcs.judges.model_judges:create_rubric",
    "safe-unsafe": "pytest_mtmcs.judges.model_judges:create_safe_unsafe",
    "guard": "pytest_mtmcs.judges.model_judges:create_guard",
}


REGISTRY = Registry("judge", ENTRY_POINT_GROUP, BUILTIN)


def available() -> dict[str, str]:
    """Prefix -> factory location, built-ins first, then entry points."""
    return REGISTRY.available()


def create_judge(spec: str, options: Any = None, option: str = "--mtmcs-judge") -> Judge:
    prefix, _, rest = spec.partition(":")
    factory: Factory = REGISTRY.factory(prefix, spec=spec, option=option)
    return factory(rest, options)


# --- what a judge is shown of the images -------------------------------------------------------
#
# A judge says what it does with a dialogue's image through two optional attributes: `reads_captions`
# (it reads `ImageRef.caption` where there is one: the text model judges, and `ngram`, whose harm
# heads read the caption) and `sends_images` (the image itself goes to its model: model judges
# under --mtmcs-judge-images, a guard in chat mode). A judge with neither (`rules`, third-party
# judges that do not say) is shown text only.


def shown_in_run(judge: Any, suites: Iterable[Mapping[str, Any]]) -> str:
    """What `judge` is shown in a run of these suites (their metadata, `SuiteMeta.as_dict()`):
    `image` when it sends images and some suite has images, `caption` when it reads captions and
    some suite has captioned images, else `text`."""
    metas = list(suites)
    if sends_images(judge) and any(m.get("images") for m in metas):
        return SHOWN_IMAGE
    if reads_captions(judge) and any(m.get("captions") for m in metas):
        return SHOWN_CAPTION
    return SHOWN_TEXT


def show(judge: Any, suites: Iterable[Mapping[str, Any]]) -> None:
    """Records in `judge.identity` what it is shown in this run (`shown_in_run`), before it
    judges anything: the identity goes into run info, baseline headers and cache namespaces."""
    shown = shown_in_run(judge, suites)
    if judge.identity.shown != shown:
        judge.identity = replace(judge.identity, shown=shown)


def shown_for_suite(shown: str, suite: Mapping[str, Any]) -> str:
    """The run's `shown` as it applies to one suite's baseline header: a run whose judge read
    captions of one suite was shown only text of a suite without captions (and one that sent
    images, only text of a suite without images). Counts the metadata does not carry (None:
    written before captions existed) leave `shown` as it is."""
    if shown == SHOWN_CAPTION and suite.get("captions") == 0:
        return SHOWN_TEXT
    if shown == SHOWN_IMAGE and suite.get("images") == 0:
        return SHOWN_TEXT
    return shown


def reads_captions(judge: Any) -> bool:
    return bool(getattr(judge, "reads_captions", False))


def sends_images(judge: Any) -> bool:
    return bool(getattr(judge, "sends_images", False))


# Judges that answer only whether a reply is harmful (safe / unsafe): on a safe dialogue they
# cannot tell a decline from an answer.
HARM_ONLY = frozenset({"guard", "safe-unsafe"})


# How every output shows a metric of `unmeasured_metrics`: never a number.
NOT_MEASURED = "not measured by this judge"


def unmeasured_metrics(judge: Mapping[str, Any]) -> tuple[str, ...]:
    """The metrics a judge (its identity, as a dict) cannot measure: helpfulness and pair
    accuracy need the refusal axis, which a harm-only judge does not give."""
    axes = str(judge.get("axes") or "")
    refusal = ("refusal" in axes.split(",")) if axes else judge.get("name") not in HARM_ONLY
    return () if refusal else ("helpfulness", "pair_accuracy")
