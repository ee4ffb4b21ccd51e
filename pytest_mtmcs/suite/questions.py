"""Intent-recognition questions: the prompt asked after a dialogue, and strict answer parsing.

Parsing is strict on purpose: an answer that does not name exactly one option is `None`
(reported as unparsed and counted as wrong), never a guess. The official MTMCS harness reads
"The answer is C" as A; that is the defect this module must not repeat.

Multiple-choice rules, in tiers; the first tier with any claim decides, and two different letters
claimed in that tier give `None`:
0. The whole reply is one letter, maybe decorated: `C`, `c`, `(C)`, `C.`, `**C**`.
1. A cue names the letter: "The answer is C", "Answer: c", "option B", "I'd choose D",
   "the correct option is (A)".
2. A marked letter: `(B)`, `[B]`, `B)`, or `B.` / `B:` opening the reply or a line.
3. An option's text quoted (case and spacing ignored); text nested in a longer quoted option
   counts for the longer one only.
4. A stand-alone capital letter elsewhere ("I think B fits"), within the option range, not
   negated ("not A", "rather than A").
`A` and `I` are also English words. Rule: a bare `A`/`a` or `I`/`i` followed by a lower-case word
is read as the article / pronoun ("A good question", "I think"), unless that word is one that only
follows a letter ("A or B", "A is correct", "A because"). In tier 4 `I` never counts (it is almost
always the pronoun): name option I with a cue or a mark. A lower-case letter counts only in tiers
0-2, where it is marked or cued.

True/false rules: the words true / false / untrue count anywhere, flipped by a negation just before
them ("not true" -> false, "isn't false" -> true; "neither true nor false" claims both and gives
`None`); "true" as an adjective of intent ("the true intent") is not a claim. A leading "Yes" /
"No" counts as true / false (a bare yes/no to a true/false question is unambiguous; elsewhere "no"
is too common: "no doubt"). Only when none of those appear: a leading "Correct" / "Incorrect", or
"that's (not) correct / right / wrong / accurate". Any contradiction gives `None`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from pytest_mtmcs.records import Message, Question

LETTERS = string.ascii_uppercase

_ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


def transcript_text(messages: Sequence[Message]) -> str:
    """`User: ...` / `Assistant: ...` lines; `[image]` opens a message that carried an image."""
    lines: list[str] = []
    for m in messages:
        text = m.text.strip()
        if m.image is not None:
            text = f"[image] {text}" if text else "[image]"
        lines.append(f"{_ROLE_NAMES.get(m.role, m.role.capitalize())}: {text}")
    return "\n".join(lines)


def question_prompt(transcript: str, question: Question) -> str:
    """A fresh single-turn prompt holding the transcript and one question."""
    parts = ["Here is a conversation between a user and an AI assistant."]
    if "[image]" in transcript:
        parts[0] += " [image] marks where the user shared an image; that image is attached."
    parts.append(f"<conversation>\n{transcript}\n</conversation>")
    if question.kind == "mcq":
        if len(question.options) > len(LETTERS):
            raise ValueError(f"a question has {len(question.options)} options; at most 26")
        options = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(question.options))
        parts.append(f"Question: {question.text}\n{options}")
        parts.append("Answer with the letter of the correct option only.")
    else:
        parts.append(f"Statement: {question.text}")
        parts.append("Is this statement true or false? Answer with True or False only.")
    return "\n\n".join(parts)


# --- parsing ---------------------------------------------------------------------------------

_MARKUP = re.compile(r"[*_`~#]+")
_SPACES = re.compile(r"\s+")
# Words that follow a letter but never the article "a" / the pronoun "I".
_AFTER_LETTER = frozenset(
    "or and nor is vs versus because since seems fits matches best looks appears describes "
    "reflects captures correct right wrong".split()
)
_NEGATED = re.compile(
    r"(?:\bnot|n't|\bnever|\bnor|\brather than|\binstead of|\bunlike|\bexcept|\bexcluding)"
    r"\W+(?:\w+\W+){0,2}$",
    re.IGNORECASE,
)
_WHOLE = re.compile(r"[^A-Za-z0-9]*([A-Za-z])[^A-Za-z0-9]*")
_LETTER_TOKEN = r"[(\[\"']?([A-Za-z])(?![A-Za-z0-9'])"
_CUES = tuple(
    re.compile(c + _LETTER_TOKEN, re.IGNORECASE)
    for c in (
        r"\banswer\b\s*(?:is|would be|will be|should be|must be|[:=\-\u2013\u2014])?\s*"
        r"(?:probably\s+|likely\s+|definitely\s+|clearly\s+|therefore\s+|thus\s+|option\s+|"
        r"choice\s+|letter\s+)*",
        r"\b(?:option|choice|letter)\s+",
        r"\bi\s*(?:would|'d|will|'ll)?\s*(?:choose|pick|select|go with|say)\s+(?:option\s+|choice\s+)?",
        r"\b(?:correct|right|best)\s+(?:one|option|choice|answer|letter)\s+(?:is|would be)\s*:?\s*",
    )
)
_MARKS = (
    re.compile(r"[(\[]([A-Za-z])[)\]]"),
    re.compile(r"(?<![A-Za-z0-9'(\[])([A-Z])\)"),
    re.compile(r"(?:^|\n)[^A-Za-z0-9\n]*([A-Za-z])[.:)](?=\s|$)"),
)
_CAPITAL = re.compile(r"(?<![A-Za-z0-9'\-])([A-Z])(?![A-Za-z0-9'\-])")


def _clean(text: str) -> str:
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    return _MARKUP.sub("", text).strip()


def _reads_as_word(letter: str, after: str) -> bool:
    """True when `A`/`I` before `after` is the article / pronoun, not an option letter."""
    if letter.upper() not in ("A", "I"):
        return False
    m = re.match(r"\s+([a-z]+)\b", after)
    return m is not None and m.group(1) not in _AFTER_LETTER


def _decide(letters: set[str], valid: str) -> str | None:
    if len(letters) != 1:
        return None
    (letter,) = letters
    return letter if letter in valid else None


def _norm_option(text: str) -> str:
    return _SPACES.sub(" ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def _option_claims(text: str, options: Sequence[str]) -> tuple[set[str], list[tuple[int, int]]]:
    """Letters whose option text appears in `text`, and the spans (in `text`) they cover."""
    # Matching on a punctuation-free copy with a position map back to the original.
    keep = [(i, ch.lower()) for i, ch in enumerate(text)]
    chars: list[str] = []
    index: list[int] = []
    for i, ch in keep:
        c = ch if (ch.isalnum() or ch == "_") else " "
        if c == " " and chars and chars[-1] == " ":
            continue
        chars.append(c)
        index.append(i)
    flat = "".join(chars)
    found: list[tuple[int, int, int]] = []  # start, end, option index
    for k, option in enumerate(options):
        needle = _norm_option(option)
        if not needle:
            continue
        for m in re.finditer(r"(?<!\w)" + re.escape(needle) + r"(?!\w)", flat):
            found.append((m.start(), m.end(), k))
    kept = [
        f
        for f in found
        if not any(
            g is not f and g[0] <= f[0] and f[1] <= g[1] and (g[1] - g[0]) > (f[1] - f[0])
            for g in found
        )
    ]
    letters = {LETTERS[k] for _, _, k in kept}
    spans = [(index[s], index[e - 1] + 1) for s, e, _ in found]
    return letters, spans


def _parse_mcq(question: Question, raw: str) -> str | None:
    n = min(len(question.options), len(LETTERS))
    if n == 0:
        return None
    valid = LETTERS[:n]
    text = _clean(raw)
    if not text:
        return None

    whole = _WHOLE.fullmatch(text)
    if whole:
        return _decide({whole.group(1).upper()}, valid)

    cued: set[str] = set()
    for cue in _CUES:
        for m in cue.finditer(text):
            if not _reads_as_word(m.group(1), text[m.end() :]):
                cued.add(m.group(1).upper())
    if cued:
        return _decide(cued, valid)

    marked: set[str] = set()
    for mark in _MARKS:
        for m in mark.finditer(text):
            marked.add(m.group(1).upper())
    if marked:
        return _decide(marked, valid)

    quoted, spans = _option_claims(text, question.options)
    if quoted:
        return _decide(quoted, valid)

    masked = list(text)
    for start, end in spans:
        masked[start:end] = " " * (end - start)
    rest = "".join(masked)
    loose: set[str] = set()
    for m in _CAPITAL.finditer(rest):
        letter, start, end = m.group(1), m.start(), m.end()
        if letter == "I" or letter not in valid:
            continue
        # "U.S." and similar abbreviations.
        if rest[end : end + 2][:1] == "." and rest[end + 1 : end + 2].isalpha():
            continue
        if start >= 2 and rest[start - 1] == "." and rest[start - 2].isalpha():
            continue
        if _reads_as_word(letter, rest[end:]) or _NEGATED.search(rest[:start]):
            continue
        loose.add(letter)
    return _decide(loose, valid)


_TF_WORD = re.compile(r"\b(true|false|untrue)\b")
_TF_ADJECTIVE = re.compile(
    r"\s+(?:intent|intention|intentions|purpose|goal|goals|motive|motives|nature|meaning|reason|"
    r"identity|aim|aims|story|colou?rs|self)\b"
)
_TF_NEGATION = re.compile(r"(?:\bnot|n't|\bnever|\bneither|\bnor|\bhardly)\s+(?:\w+\s+){0,2}$")
_TF_LEADING = re.compile(r"^[^a-z0-9]*(yes|no)\b")
_TF_FALLBACK = (
    re.compile(r"^[^a-z0-9]*(correct|incorrect|right|wrong|accurate|inaccurate)\b"),
    re.compile(
        r"\b(?:statement|it|this|that)\s*(?:'s|is)\s+((?:not\s+)?(?:correct|incorrect|right|wrong|"
        r"accurate|inaccurate))\b"
    ),
)
_TF_POSITIVE = {"true": True, "yes": True, "correct": True, "right": True, "accurate": True}


def _tf_value(word: str, prefix: str) -> bool:
    negated = word.startswith("not ") or bool(_TF_NEGATION.search(prefix))
    word = word.removeprefix("not ").strip()
    value = _TF_POSITIVE.get(word, False)
    return value != negated


def _parse_tf(raw: str) -> str | None:
    text = _SPACES.sub(" ", _clean(raw).lower())
    if not text:
        return None
    claims: set[bool] = set()
    for m in _TF_WORD.finditer(text):
        if m.group(1) == "true" and _TF_ADJECTIVE.match(text, m.end()):
            continue
        value = _tf_value(m.group(1), text[: m.start()])
        claims.add(value)
    lead = _TF_LEADING.match(text)
    if lead:
        claims.add(lead.group(1) == "yes")
    if not claims:
        for pattern in _TF_FALLBACK:
            for m in pattern.finditer(text):
                claims.add(_tf_value(m.group(1), text[: m.start(1)]))
    if len(claims) != 1:
        return None
    return "true" if claims.pop() else "false"


def parse_answer(question: Question, text: str) -> str | None:
    """The answer `text` gives to `question`: a letter (`mcq`), `true`/`false` (`tf`), or None."""
    if question.kind == "mcq":
        return _parse_mcq(question, text)
    return _parse_tf(text)
