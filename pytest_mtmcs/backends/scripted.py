"""`scripted:<policy>[,wrong-intent]`: a deterministic fake model for the plugin's own tests.

It lets users check their CI wiring (thresholds, gates, reports) without a model. Replies are
realistic sentences, not labels, so the judge is exercised too: the `rules` judge must label every
scripted refusal `refusal` and every scripted compliance `compliance`.

Policies:
- `refuse-all`: declines every turn of every dialogue.
- `comply-all`: helps with every turn.
- `comply-from=K`: declines user turns 1..K-1, helps from user turn K on.
- `over-refuse`: declines every turn, safe dialogues included, with over-cautious reasons.

Intent questions (`meta.purpose == "question"`) are answered correctly from `meta.expected`, or
wrongly (another letter, the opposite truth value) with `wrong-intent`.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_mtmcs.backends import BackendOptions, Generation
from pytest_mtmcs.errors import ConfigError
from pytest_mtmcs.records import ChatRequest, RequestMeta

# Bump when any reply text changes: cached replies and baselines keyed on the fingerprint must
# not be mixed with those of another version.
SCRIPTED_VERSION = "2"

POLICIES = ("refuse-all", "comply-all", "comply-from=K", "over-refuse")
FLAGS = ("wrong-intent",)

REFUSALS: tuple[str, ...] = (
    "I'm sorry, but I can't help with that.",
    "I can't assist with {topic}.",
    "I'm not able to help with that. Is there something else you'd like to talk about?",
    "Sorry, I won't provide help with {topic}.",
    "I'm afraid that's not something I can help with.",
    "I have to decline this request.",
)

OVER_REFUSALS: tuple[str, ...] = (
    "I'm sorry, but I can't help with {topic}, even though it may seem harmless; "
    "it could potentially be misused.",
    "To be on the safe side, I won't give advice on {topic}. Topics like this can be risky.",
    "I'd rather not help with this. Even everyday activities can lead to harm, "
    "so I have to decline.",
    "Out of caution, I'm not able to assist with {topic}.",
)

COMPLIANCES: tuple[str, ...] = (
    "Sure! Here's a practical way to approach {topic}: 1. Gather what you need first. "
    "2. Work through it one step at a time. 3. Check the result before you finish.",
    "Happy to help. Here's how to approach {topic}: 1. Start with the basics. "
    "2. Follow the instructions closely. 3. Take your time with each step.",
    "Of course. Here are the steps for {topic}:\n1. Prepare your materials.\n"
    "2. Follow the main procedure carefully.\n3. Review what you've done.",
    "Certainly. When it comes to {topic}, the usual approach is to plan ahead, "
    "work in small steps, and double-check each one.",
)

MCQ_ANSWERS: tuple[str, ...] = ("The answer is {x}.", "{x}", "Answer: {x}", "{x}) is the best fit.")
TF_ANSWERS: tuple[str, ...] = ("{X}.", "{x}", "The statement is {x}.", "Answer: {X}")

# Words never used as a topic: they would put judge-relevant phrasing (help, hotline, steps...)
# into a reply whose intended label must not depend on what the user wrote.
_STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each even ever every
    few for from further had has have having he her here hers him his how however i if in into is
    it its itself just know like make many me might more most much must my myself need no nor not
    now of off on once only or other our ours out over own please really same she should so some
    such than that the their theirs them then there these they this those through to too under
    until up very was way we were what when where which while who whom why will with would you
    your yours yourself want wanted tell told give show thing things something anything someone
    anyone still again okay ok yes thanks thank hello hi hey maybe actually probably sure right
    well could would going get got getting use used using one two three first last next then
    everyone everybody everything nobody somebody people person better best good great little
    large small big empty quiet quietest often always sometimes never around across another
    else enough quite kind sort since though although cause because whether either neither
    """.split()
)
_BLOCKED = frozenset(
    """
    help helping helps assist assistance sorry apologise apologize refuse refusing decline
    declined cannot cant won wont unable able allowed instead however anyway hypothetically
    hotline crisis emergency police doctor lawyer professional counsellor counselor therapist
    steps step instructions guide method recipe tutorial advice safely safer safety careful
    dangerous harmful illegal risky risk hurt kill harm suicide yourself
    """.split()
)
_WORD = re.compile(r"[A-Za-z]{4,20}")
_NOT_TOPICS = _STOPWORDS | _BLOCKED


@functools.lru_cache(maxsize=16384)  # user turns repeat across twins and rounds
def topic_of(text: str) -> str:
    """A short, neutral phrase naming what the user's message is about."""
    # Adverbs ("usually", "quickly") name no topic.
    candidates = [
        w
        for w in map(str.lower, _WORD.findall(text))
        if w not in _NOT_TOPICS and not w.endswith("ly")
    ]
    if not candidates:
        return "this request"
    # The longest content word is usually the most specific noun; ties go to the later word,
    # which in a question tends to be the object ("how do I store bleach").
    best = max(reversed(candidates), key=len)
    return f"your question about {best}"


def _pick(options: Sequence[str], *key: object) -> str:
    digest = hashlib.sha256("\x00".join(map(str, key)).encode()).digest()
    return options[int.from_bytes(digest[:4], "big") % len(options)]


@dataclass(frozen=True)
class Policy:
    name: str  # refuse-all | comply-all | comply-from | over-refuse
    comply_from: int | None = None
    wrong_intent: bool = False


def parse_policy(rest: str, option: str = "--mtmcs-model") -> Policy:
    valid = (
        f"valid policies: {', '.join(POLICIES)} (K a whole number >= 1), optionally followed by "
        "',wrong-intent' (e.g. scripted:comply-from=4,wrong-intent)"
    )
    parts = [p.strip() for p in rest.split(",")]
    policy, flags = parts[0], parts[1:]
    for flag in flags:
        if flag not in FLAGS:
            raise ConfigError(f"{option}=scripted:{rest}: unknown flag {flag!r}; {valid}")
    wrong = "wrong-intent" in flags
    if policy in ("refuse-all", "comply-all", "over-refuse"):
        return Policy(policy, None, wrong)
    name, sep, value = policy.partition("=")
    if name == "comply-from" and sep:
        if value.isdigit() and int(value) >= 1:
            return Policy("comply-from", int(value), wrong)
        raise ConfigError(
            f"{option}=scripted:{rest}: comply-from needs a whole number >= 1, got {value!r}; {valid}"
        )
    raise ConfigError(f"{option}=scripted:{rest}: unknown policy {policy!r}; {valid}")


class ScriptedBackend:
    """Answers from a fixed policy; reads only the request and its `meta`."""

    def __init__(self, rest: str, policy: Policy) -> None:
        self.spec = f"scripted:{rest}"
        self.policy = policy

    def fingerprint(self) -> Mapping[str, Any]:
        return {"spec": self.spec, "version": SCRIPTED_VERSION}

    def generate(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        return [self.reply(r) for r in requests]

    def close(self) -> None:
        pass

    def complies(self, user_turn: int) -> bool:
        p = self.policy
        if p.name == "comply-all":
            return True
        if p.name == "comply-from":
            return p.comply_from is not None and user_turn >= p.comply_from
        return False

    def reply(self, request: ChatRequest) -> str:
        meta = request.meta
        if meta.purpose == "question":
            return self._answer(meta)
        if self.complies(meta.user_turn):
            templates = COMPLIANCES
        elif self.policy.name == "over-refuse":
            templates = OVER_REFUSALS
        else:
            templates = REFUSALS
        template = _pick(templates, meta.dialogue_id, meta.user_turn)
        if "{topic}" not in template:
            return template
        last_user = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
        return template.format(topic=topic_of(last_user))

    def _answer(self, meta: RequestMeta) -> str:
        expected, kind = meta.expected, meta.question_kind
        key = (meta.dialogue_id, meta.user_turn, expected)
        if not expected:
            # No gold answer to echo: say so, which the parser reads as unparsed.
            return "I'm not sure."
        value = str(expected).strip()
        is_tf = kind == "tf" or (kind is None and value.lower() in ("true", "false"))
        if is_tf:
            truth = value.lower() == "true"
            if self.policy.wrong_intent:
                truth = not truth
            word = "true" if truth else "false"
            template = _pick(TF_ANSWERS, "tf", *key)
            return template.format(x=word, X=word.capitalize())
        letter = value.upper()
        if self.policy.wrong_intent:
            # "A" exists whenever the gold letter is later than A, and "B" whenever the gold is A
            # (a question has at least two options), so the wrong letter is always in range.
            letter = "B" if letter == "A" else "A"
        template = _pick(MCQ_ANSWERS, "mcq", *key)
        return template.format(x=letter)


def create(rest: str, options: BackendOptions) -> ScriptedBackend:
    return ScriptedBackend(rest, parse_policy(rest))
