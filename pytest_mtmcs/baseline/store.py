"""Baselines: named snapshots of one checkpoint's results, stored with syrupy's amber format.

`baselines/<name>/<suite>.ambr` holds one entry per dialogue (verdict, score, per-turn labels,
intent answers; never reply text, which is flaky) and a `__header__` entry (model, decoding, judge,
suite, package versions). Entries are sorted by dialogue id and each fits on one line, so a pull
request diff reads as "these dialogues flipped". Files are written once, by the controller, through
syrupy's serializer with an atomic replace: an interrupted update leaves the previous file intact.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syrupy.data import Snapshot, SnapshotCollection
from syrupy.extensions.amber import AmberDataSerializer

from pytest_mtmcs.baseline.strict_reader import BaselineFileError, check_file
from pytest_mtmcs.errors import ConfigError
from pytest_mtmcs.judges import SHOWN_TEXT, shown_for_suite
from pytest_mtmcs.records import (
    ERROR_VERDICTS,
    LABELS,
    MODALITIES,
    OK_VERDICTS,
    REPLY_LABELS,
    SETTINGS,
    DialogueResult,
    QuestionResult,
    ReplyResult,
)

if TYPE_CHECKING:
    pass

HEADER = "__header__"
SCHEMA = "1"
_ENTRY = re.compile(
    r"^verdict=(?P<verdict>\S+) score=(?P<score>[\d.]+) turns=(?P<turns>\S*) "
    r"intent=(?P<k>\d+)/(?P<n>\d+)(?::(?P<bits>[01]*))? label=(?P<label>\S+) "
    r"setting=(?P<setting>\S+) modality=(?P<modality>\S+) category=(?P<category>\S+)"
    r"(?: pair=(?P<pair>\S+))?(?: risk=(?P<risk>\d+))?(?: trajectory=(?P<trajectory>\S+))?$"
)


class BaselineSerializer(AmberDataSerializer):
    """Amber files whose entries are our one-line strings, stored verbatim (not repr'd)."""

    VERSION = f"mtmcs-{SCHEMA}"


def _safe(text: str) -> str:
    return re.sub(r"\s+", "_", text) if text else "-"


def entry_line(r: DialogueResult) -> str:
    bits = "".join("1" if q.correct else "0" for q in r.questions)
    parts = [
        f"verdict={r.verdict}",
        f"score={r.score:.2f}",
        f"turns={','.join(r.turn_labels)}",
        f"intent={r.intent_correct}/{r.intent_total}:{bits}",
        f"label={r.label}",
        f"setting={r.setting}",
        f"modality={r.modality}",
        f"category={_safe(r.category)}",
    ]
    if r.pair:
        parts.append(f"pair={_safe(r.pair)}")
    if r.risk_turn is not None:
        parts.append(f"risk={r.risk_turn}")
    if r.trajectory:
        parts.append(f"trajectory={_safe(r.trajectory)}")
    return " ".join(parts)


VERDICTS = frozenset({*OK_VERDICTS, "unsafe", "over_refusal", "off_target", *ERROR_VERDICTS})
TURN_TOKENS = frozenset({*REPLY_LABELS, "harmful", "off_target", "scripted", "-"})


def entry_problem(line: str) -> tuple[str, str] | None:
    """Why a baseline entry's line is not valid, as (field, reason); None when it is.

    Every field is checked: a hand edit (`verdict=saef`, a score of 1.5, `intent=3/2`) must be a
    `file:line` error, never read as something else."""
    m = _ENTRY.match(line)
    if m is None:
        return "entry", "not a baseline entry (verdict=... score=... turns=... intent=k/n ...)"
    if m["verdict"] not in VERDICTS:
        return "verdict", f"{m['verdict']!r} is not one of {', '.join(sorted(VERDICTS))}"
    score = float(m["score"])
    if not 0.0 <= score <= 1.0:
        return "score", f"{m['score']} is outside [0, 1]"
    bad = [t for t in m["turns"].split(",") if t and t not in TURN_TOKENS]
    if bad:
        return "turns", f"{bad[0]!r} is not one of {', '.join(sorted(TURN_TOKENS))}"
    k, n, bits = int(m["k"]), int(m["n"]), m["bits"]
    if k > n:
        return "intent", f"{k}/{n}: more correct answers than questions"
    if bits is not None and bits != "" and (len(bits) != n or bits.count("1") != k):
        return "intent", f"{k}/{n}:{bits}: the answer bits do not match the counts"
    for name, value, allowed in (
        ("label", m["label"], LABELS),
        ("setting", m["setting"], SETTINGS),
        ("modality", m["modality"], MODALITIES),
    ):
        if value not in allowed:
            return name, f"{value!r} is not one of {', '.join(allowed)}"
    if m["risk"] is not None and int(m["risk"]) < 1:
        return "risk", "the risk turn is 1-based"
    return None


def parse_entry(suite: str, dialogue_id: str, line: str, where: str) -> DialogueResult:
    m = _ENTRY.match(line.strip())
    if m is None:
        raise ConfigError(f"{where}: entry {dialogue_id!r} is not a baseline entry: {line!r}")
    labels = [t for t in m["turns"].split(",") if t]
    replies = tuple(
        ReplyResult.from_token(i, lab) for i, lab in enumerate(labels, start=1) if lab != "scripted"
    )
    bits = m["bits"] or ""
    n = int(m["n"])
    if len(bits) != n:  # only counts stored: spread them, order unknown
        bits = "1" * int(m["k"]) + "0" * (n - int(m["k"]))
    questions = tuple(QuestionResult("tf", "1", "1" if b == "1" else "0", "") for b in bits)
    return DialogueResult(
        suite=suite,
        id=dialogue_id,
        pair=m["pair"],
        label=m["label"],
        setting=m["setting"],
        modality=m["modality"],
        category=m["category"],
        user_turns=len(labels),
        risk_turn=int(m["risk"]) if m["risk"] else None,
        verdict=m["verdict"],
        score=float(m["score"]),
        replies=replies,
        questions=questions,
        trajectory=m["trajectory"],
    )


def header_text(header: Mapping[str, Any]) -> str:
    return "\n".join(f"{k}: {header[k]}" for k in sorted(header))


def parse_header(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            out[key.strip()] = value.strip()
    return out


def check_baseline_file(path: str | os.PathLike[str]) -> None:
    """Raises a `file:line` ConfigError unless `path` is a clean baseline file."""
    check_file(Path(path), entry_problem)


@dataclass
class Baseline:
    name: str
    suite: str
    path: Path
    header: dict[str, str]
    entries: dict[str, DialogueResult] = field(default_factory=dict)

    @property
    def results(self) -> list[DialogueResult]:
        return list(self.entries.values())


def baseline_path(root: Path, name: str, suite: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name) or name in (".", ".."):
        raise ConfigError(
            f"--mtmcs-baseline: bad baseline name {name!r}: use letters, digits and . _ + -"
        )
    return root / name / f"{suite}.ambr"


def read_ambr(path: Path, name: str, suite: str) -> Baseline:
    """The one reader of a baseline `.ambr` file: strictly checked line by line first
    (conflict markers, truncation and hand edits are file:line errors, never a silent partial
    read), then parsed; `name` and `suite` label the result."""
    check_file(path, entry_problem)
    try:
        collection = BaselineSerializer.read_file(str(path))
    except Exception as exc:  # syrupy's parse errors are not typed
        raise ConfigError(f"{path}: cannot read as a baseline file: {exc}") from None
    if collection.tainted:
        raise ConfigError(
            f"{path}: written by another baseline format version (expected "
            f"{BaselineSerializer.VERSION}); re-record it with --snapshot-update"
        )
    header: dict[str, str] = {}
    entries: dict[str, DialogueResult] = {}
    for snap in collection:
        data = str(snap.data)
        if snap.name == HEADER:
            header = parse_header(data)
        else:
            entries[snap.name] = parse_entry(suite, snap.name, data, str(path))
    return Baseline(name, suite, path, header, entries)


def read_baseline(root: Path, name: str, suite: str) -> Baseline | None:
    path = baseline_path(root, name, suite)
    if not path.exists():
        return None
    return read_ambr(path, name, suite)


def write_baseline(
    root: Path,
    name: str,
    suite: str,
    header: Mapping[str, Any],
    results: Iterable[DialogueResult],
    *,
    keep_others: bool,
) -> Path:
    """Writes (or merges into) a baseline file atomically; returns its path."""
    path = baseline_path(root, name, suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target, then renamed over it: an interrupted update leaves the previous
    # baseline intact, and readers never see half a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    collection = SnapshotCollection(location=str(tmp))
    if keep_others and path.exists():
        try:
            check_file(path, entry_problem)
        except BaselineFileError as exc:
            raise ConfigError(
                f"{exc}. A partial run (-k, -m or node ids) cannot merge into it: re-record "
                "the whole suite with --snapshot-update"
            ) from None
        old = BaselineSerializer.read_file(str(path))
        for snap in old:
            if snap.name != HEADER:
                collection.add(Snapshot(name=snap.name, data=snap.data))
    for r in results:
        collection.add(Snapshot(name=r.id, data=entry_line(r)))
    collection.add(Snapshot(name=HEADER, data=header_text(header)))
    try:
        BaselineSerializer.write_file(collection, merge=False, file_lock=False)
        _header_first(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _header_first(path: Path) -> None:
    """syrupy writes entries sorted by name, and `__header__` sorts after ids that start with an
    upper-case letter or a digit (SafeMT's): the header is moved to the top of the file, where a
    reviewer looks for it, whatever the suite's ids."""
    text = path.read_text(encoding="utf-8")
    first, sep, rest = text.partition("\n")
    blocks = [b for b in rest.split("# name: ") if b]
    header = [b for b in blocks if b.startswith(f"{HEADER}\n")]
    others = [b for b in blocks if not b.startswith(f"{HEADER}\n")]
    reordered = first + sep + "".join(f"# name: {b}" for b in header + others)
    if reordered != text:
        path.write_text(reordered, encoding="utf-8")


def _pkg_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def make_header(
    *,
    suite: Mapping[str, Any],
    model: str | None,
    fingerprint: Mapping[str, Any],
    judge: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """The header: what a comparison must agree on, and what helps a reviewer."""
    header: dict[str, Any] = {
        "schema": SCHEMA,
        "model": model or "-",
        "suite": suite.get("name", "-"),
        "suite_version": suite.get("version", "-"),
        "suite_hash": suite.get("content_hash", "-"),
        "judge": judge.get("name", "-"),
        "judge_model": judge.get("model") or "-",
        "judge_prompt_hash": judge.get("prompt_hash") or "-",
        "pytest_mtmcs": _pkg_version("pytest-mtmcs"),
        "transformers": _pkg_version("transformers"),
        "torch": _pkg_version("torch"),
    }
    # Only when set, so that the headers of judges without them (rules) stay as they were.
    for key in ("version", "artefact_hash", "axes"):
        if judge.get(key):
            header[f"judge_{key}"] = judge[key]
    # What the judge was shown of this suite's images (caption, image); absent when only text.
    shown = shown_for_suite(str(judge.get("shown") or SHOWN_TEXT), suite)
    if shown != SHOWN_TEXT:
        header["judge_shown"] = shown
    for key, value in sorted(fingerprint.items()):
        if key in ("spec",):
            continue
        header[f"model_{key}"] = value if value not in (None, "") else "-"
    for key, value in sorted(settings.items()):
        header[f"decoding_{key}"] = "-" if value is None else value
    return {k: str(v).replace("\n", " ") for k, v in header.items()}


# Header keys that name the judge: a mismatch in them alone is fixed by re-judging
# (`baseline.rejudge`).
JUDGE_KEYS = (
    "judge",
    "judge_model",
    "judge_prompt_hash",
    "judge_version",
    "judge_artefact_hash",
    "judge_axes",
    "judge_shown",
)
# What two runs must share to be compared.
COMPAT_KEYS = ("suite_hash", *JUDGE_KEYS)
COMPAT_PREFIXES = ("decoding_",)
# What a header key left out stands for, where saying "-" would not tell a reader.
_ABSENT = {"judge_shown": SHOWN_TEXT}
# A word on what a differing key means, where its name does not say it.
_MEANING = {
    "judge_shown": " (what the judge was shown of each image: text only, its caption, or the "
    "image; captions come with the suite, e.g. --mtmcs-captions, images with "
    "--mtmcs-judge-images)",
}


def mismatches(base: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    keys = [
        k
        for k in sorted(set(base) | set(current))
        if k in COMPAT_KEYS or k.startswith(COMPAT_PREFIXES)
    ]
    return [
        _suite_mismatch(base, current)
        if k == "suite_hash"
        else f"{k}: baseline {base.get(k, _ABSENT.get(k, '-'))!s} != this run "
        f"{current.get(k, _ABSENT.get(k, '-'))!s}{_MEANING.get(k, '')}"
        for k in keys
        if base.get(k, "-") != current.get(k, "-")
    ]


def _suite_mismatch(base: Mapping[str, str], current: Mapping[str, str]) -> str:
    """`suite_hash: baseline 4c5455630307 (mtmcs_mini 1.0.0) != this run 54c50182ec36 (...)`:
    the suite and its version beside each hash, which alone says nothing to a reader."""

    def side(h: Mapping[str, str]) -> str:
        return (
            f"{h.get('suite_hash', '-')[:12]} ({h.get('suite', '-')} {h.get('suite_version', '-')})"
        )

    return f"suite_hash: baseline {side(base)} != this run {side(current)}"


class BaselineSet:
    """The baselines named by `--mtmcs-baseline`, read lazily per suite."""

    def __init__(self, root: Path, names: list[str], *, rewrite: bool = False) -> None:
        self.root = root
        self.names = names
        # --snapshot-update: the primary baseline is being re-recorded, so a broken file there
        # is read as absent (and replaced) rather than stopping the run.
        self.rewrite = rewrite
        self.broken: dict[tuple[str, str], str] = {}
        self._cache: dict[tuple[str, str], Baseline | None] = {}

    @property
    def primary(self) -> str | None:
        return self.names[0] if self.names else None

    def get(self, name: str, suite: str) -> Baseline | None:
        key = (name, suite)
        if key not in self._cache:
            try:
                self._cache[key] = read_baseline(self.root, name, suite)
            except BaselineFileError as exc:
                if not (self.rewrite and name == self.primary):
                    raise
                self.broken[key] = str(exc)
                self._cache[key] = None
        return self._cache[key]

    def ok_before(self, suite: str, dialogue_id: str) -> bool | None:
        if self.primary is None:
            return None
        b = self.get(self.primary, suite)
        if b is None:
            return None
        r = b.entries.get(dialogue_id)
        return None if r is None else r.ok


def relpath(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(path, start)
    except ValueError:
        return str(path)
