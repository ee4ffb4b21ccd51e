"""`pytest-mtmcs review REPORT_DIR`: a person confirms or overturns the judge's flagged labels.

Every regression the gate reports is a claim made by a judge. This command walks the replies that
decide the run's flips, in the terminal, one at a time: the regressed dialogues first, then the
fixed ones, then the replies whose label a model judge overturned (`--mtmcs-escalate=flips`, or a
cascade's unsure replies). For each it shows the dialogue so far (with the image's path and
caption, when the suite has them), the reply, and the judge's label and reason, and reads one
answer per line from standard input:

    r  refusal          d  safe redirect      c  compliance
    h  harmful          o  off target         s  skip          q  quit

(`h` only on an unsafe dialogue's replies from its risk turn, where harm is read; text after the
key is kept as a note: `r declines, then lectures`). Each answer is appended at once to the
adjudications file kept with the baselines (`baseline/adjudications.py`); replies already there are
skipped, so a review stopped at any point resumes where it stopped. The next run applies each
label to the exact same request and reply, instead of judging it.

It reads the report folder a run wrote (`--mtmcs-report`): `run.json` (model, judge, each suite's
spec), `results.csv` (each dialogue's flip) and `transcripts.jsonl` (the replies, their labels
and exchange keys), and reloads the suites from their specs to show the user turns (run it from
where the run ran, or name a suite with `--suite`).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from pytest_mtmcs.baseline import adjudications as adj
from pytest_mtmcs.engine.adjudicated import HumanLabel
from pytest_mtmcs.engine.escalation import deciding_turns
from pytest_mtmcs.errors import ConfigError
from pytest_mtmcs.jsonl import objects
from pytest_mtmcs.records import Dialogue, ReplyResult

KEYS: dict[str, str] = {
    "r": "refusal",
    "d": "safe_redirect",
    "c": "compliance",
    "h": "harmful",
    "o": "off_target",
}
SKIP, QUIT = "s", "q"
PROMPT = (
    "label? [r]efusal [d] safe redirect [c]ompliance [h]armful [o]ff target [s]kip [q]uit "
    "(a note may follow the key): "
)
WIDTH = 100


def add_arguments(p: Any) -> None:
    p.add_argument("report", help="a run's report folder (--mtmcs-report=DIR)")
    p.add_argument(
        "--adjudications",
        default=None,
        help="the adjudications file to append to (default: baselines/adjudications.jsonl "
        "under the current folder, where the plugin reads it by default)",
    )
    p.add_argument(
        "--reviewer",
        default=None,
        help="your name in each line (default: git config user.name, else $USER)",
    )
    p.add_argument(
        "--suite",
        action="append",
        default=[],
        metavar="SPEC",
        help="load a suite from this spec instead of the one run.json names (repeatable)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="stop after N answers (default: every flagged reply)",
    )


@dataclass(frozen=True)
class Flagged:
    """One reply to review: why it is flagged, where it is."""

    why: str  # regressed | fixed | overturned
    suite: str
    dialogue: str
    turn: int


@dataclass
class Report:
    folder: Path
    run: dict[str, Any]
    # (suite, id) -> results.csv row
    rows: dict[tuple[str, str], dict[str, str]]
    # (suite, id) -> its replies, by user turn
    replies: dict[tuple[str, str], dict[int, ReplyResult]]


def _read_report(folder: Path) -> Report:
    run_file, results, transcripts = (
        folder / "run.json",
        folder / "results.csv",
        folder / "transcripts.jsonl",
    )
    for f in (run_file, results, transcripts):
        if not f.is_file():
            raise ConfigError(
                f"{folder}: not a report folder ({f.name} is missing): pass the folder a run "
                "wrote with --mtmcs-report=DIR"
            )
    try:
        run = json.loads(run_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{run_file}: not valid JSON ({exc.msg})") from None
    rows: dict[tuple[str, str], dict[str, str]] = {}
    with open(results, encoding="utf-8", newline="") as fh:
        for n, row in enumerate(csv.DictReader(fh), start=2):
            if not row.get("suite") or not row.get("id") or "flip" not in row:
                raise ConfigError(f"{results}:{n}: expected suite, id and flip columns")
            rows[(row["suite"], row["id"])] = row
    replies: dict[tuple[str, str], dict[int, ReplyResult]] = {}
    fields = set(ReplyResult.__dataclass_fields__)
    with open(transcripts, encoding="utf-8") as fh:
        for _, rec in objects(fh, lambda n, why: ConfigError(f"{transcripts}:{n}: {why}")):
            if rec.get("kind") != "turn":
                continue
            values = {k: v for k, v in rec.items() if k in fields}
            try:
                reply = ReplyResult(**values)
            except TypeError as exc:
                raise ConfigError(f"{transcripts}:{n}: {exc}") from None
            replies.setdefault((rec["suite"], rec["dialogue_id"]), {})[reply.user_turn] = reply
    return Report(folder, run, rows, replies)


def _risk(row: Mapping[str, str]) -> int | None:
    text = (row.get("risk_turn") or "").strip()
    return int(float(text)) if text else None


def flagged(report: Report) -> list[Flagged]:
    """The replies to review, in order: the regressed dialogues' deciding replies, the fixed
    ones', then the replies a model judge overturned (each reply once)."""
    out: list[Flagged] = []
    seen: set[tuple[str, str, int]] = set()

    def add(why: str, suite: str, rid: str, turn: int) -> None:
        if (suite, rid, turn) not in seen:
            seen.add((suite, rid, turn))
            out.append(Flagged(why, suite, rid, turn))

    for why in ("regressed", "fixed"):
        for (suite, rid), row in sorted(report.rows.items()):
            if row.get("flip") != why:
                continue
            replies = report.replies.get((suite, rid), {})
            ordered = [replies[t] for t in sorted(replies)]
            for t in deciding_turns(row.get("label", ""), _risk(row), ordered, why):
                add(why, suite, rid, t)
    for (suite, rid), replies in sorted(report.replies.items()):
        for t, r in sorted(replies.items()):
            if r.local is not None and r.label is not None and r.local != r.token:
                add("overturned", suite, rid, t)
    return out


def reviewer_name(given: str | None) -> str:
    if given:
        return given
    try:
        name = subprocess.run(
            ["git", "config", "user.name"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        name = ""
    return name or os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"


class Suites:
    """The run's suites, loaded from their specs (run.json, or --suite) when first needed."""

    def __init__(self, report: Report, overrides: Sequence[str]) -> None:
        self.report = report
        self.overrides = list(overrides)
        self._loaded: dict[str, dict[str, Dialogue] | None] = {}
        self.roots: dict[str, str] = {}
        self.problems: dict[str, str] = {}

    def dialogue(self, suite: str, rid: str) -> Dialogue | None:
        if suite not in self._loaded:
            self._loaded[suite] = self._load(suite)
        found = self._loaded[suite]
        return None if found is None else found.get(rid)

    def _load(self, suite: str) -> dict[str, Dialogue] | None:
        from pytest_mtmcs.errors import MtmcsError
        from pytest_mtmcs.suite import resolve_suite

        for spec in self.overrides:
            try:
                s = resolve_suite(spec)
            except MtmcsError as exc:
                raise ConfigError(f"--suite {spec}: {exc}") from None
            if s.name == suite:
                self.roots[suite] = s.root
                return {d.id: d for d in s.dialogues}
        spec = ((self.report.run.get("suites") or {}).get(suite) or {}).get("spec")
        if not spec:
            self.problems[suite] = "run.json names no spec for it"
            return None
        prefix, sep, _ = spec.partition(":")
        tries = [spec]
        if not (sep and len(prefix) > 1) and not os.path.isabs(spec):
            # A folder spec relative to the run's rootdir: here, or beside the report folder.
            tries.append(str(self.report.folder.resolve().parent / spec))
        for attempt in tries:
            try:
                s = resolve_suite(attempt)
            except MtmcsError as exc:
                self.problems[suite] = f"{spec}: {exc}"
                continue
            self.roots[suite] = s.root
            return {d.id: d for d in s.dialogues}
        return None


def _clip(text: str, width: int = WIDTH * 4) -> str:
    from pytest_mtmcs.outcome.text import printable

    text = printable(text).strip()
    return text if len(text) <= width else text[: width - 3] + "..."


def _caption(d: Dialogue) -> str | None:
    """The image's caption, where the suite has one (a caption on the image, the dialogue, or
    its source record)."""
    for holder, name in ((d.image, "caption"), (d, "image_caption"), (d.image, "image_caption")):
        text = getattr(holder, name, None) if holder is not None else None
        if isinstance(text, str) and text.strip():
            return text.strip()
    source = d.source if isinstance(d.source, Mapping) else {}
    text = source.get("image_caption") or source.get("caption")
    return text.strip() if isinstance(text, str) and text.strip() else None


def show(
    item: Flagged,
    index: int,
    total: int,
    row: Mapping[str, str],
    replies: Mapping[int, ReplyResult],
    dialogue: Dialogue | None,
    root: str | None,
    placement: str,
    problem: str | None,
    judge: Mapping[str, Any],
    out: TextIO,
) -> None:
    """The dialogue so far, the reply under review, and the judge's label and reason."""
    risk = _risk(row)
    label = row.get("label", "?")
    head = {
        "regressed": "REGRESSED",
        "fixed": "FIXED",
        "overturned": "OVERTURNED by the model judge",
    }[item.why]
    print("", file=out)
    print("=" * WIDTH, file=out)
    print(
        f"[{index}/{total}] {head}: {item.suite} {item.dialogue} ({label}"
        + (f", risk from user turn {risk}" if risk else "")
        + f"; verdict {row.get('verdict', '?')}) - user turn {item.turn}",
        file=out,
    )
    reply = replies[item.turn]
    if dialogue is None:
        print(f"(the suite's dialogue is not available: {problem or 'not found'})", file=out)
    else:
        with_image = dialogue.image_turns(placement)
        if dialogue.image is not None:
            where = dialogue.image.where or dialogue.image.sha256[:12]
            shown = (
                os.path.join(root, where) if root and where and not os.path.isabs(where) else where
            )
            caption = _caption(dialogue)
            print(f"image: {shown}" + (f"\ncaption: {_clip(caption)}" if caption else ""), file=out)
        k = 0
        turns = dialogue.turns
        for i, t in enumerate(turns):
            if t.role == "assistant":
                print(f"  assistant (scripted): {_clip(t.text)}", file=out)
                continue
            k += 1
            mark = " [image]" if k in with_image else ""
            print(f"  user[{k}]{mark}: {_clip(t.text)}", file=out)
            scripted = i + 1 < len(turns) and turns[i + 1].role == "assistant"
            if k == item.turn:
                break
            if not scripted and k in replies:
                print(f"  model[{k}] ({replies[k].token}): {_clip(replies[k].text)}", file=out)
    print(f">>> model[{item.turn}], the reply under review:", file=out)
    print(_clip(reply.text, WIDTH * 20), file=out)
    print(f"judge{_judge_name(judge)}: {reply.token}", file=out)
    if reply.local is not None:
        how = reply.escalation or "escalated"
        print(f"  local judge: {reply.local}; model judge: {reply.token} ({how})", file=out)
    if reply.rationale:
        print(f"  reason: {_clip(reply.rationale)}", file=out)


def _judge_name(judge: Mapping[str, Any]) -> str:
    return f" ({judge.get('name')})" if judge.get("name") else ""


def _harm_axis(row: Mapping[str, str], turn: int) -> bool:
    risk = _risk(row)
    return row.get("label") == "unsafe" and (risk is None or turn >= risk)


def record(
    item: Flagged,
    reply: ReplyResult,
    human: HumanLabel,
    token: str,
    note: str,
    *,
    dialogue: Dialogue | None,
    replies: Mapping[int, ReplyResult],
    run: Mapping[str, Any],
    reviewer: str,
) -> dict[str, Any]:
    """One line of the adjudications file (`baseline/adjudications.py` names its fields)."""
    prompt = ""
    caption = None
    history = conversation(dialogue, replies, item.turn) if dialogue is not None else []
    if history:
        prompt = history[-1]["text"]
    if dialogue is not None:
        caption = _caption(dialogue)
    sha = reply.exchange_sha256 or ""
    rec: dict[str, Any] = {
        "id": f"{adj.SOURCE}/{item.suite}/{item.dialogue}/{item.turn}/{sha[:12]}",
        "text": reply.text,
        "label": human.label,
    }
    if human.harm is not None:
        rec["harm"] = int(human.harm)
    rec.update(
        {
            "off_target": human.off_target,
            "prompt": prompt,
            **({"image": caption} if caption else {}),
            **({"history": history} if len(history) > 1 else {}),
            "source": adj.SOURCE,
            "model": str(run.get("model") or ""),
            "label_origin": f"adjudicated by {reviewer} (pytest-mtmcs review)",
            "suite": item.suite,
            "dialogue": item.dialogue,
            "turn": item.turn,
            "sha256": sha,
            "human": token,
            "judge": dict(run.get("judge") or {}),
            "judge_label": reply.token,
            **({"judge_local": reply.local} if reply.local is not None else {}),
            "flip": item.why,
            "reviewer": reviewer,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "note": note,
        }
    )
    return rec


def conversation(
    dialogue: Dialogue, replies: Mapping[int, ReplyResult], turn: int
) -> list[dict[str, str]]:
    """The messages the reply at user turn `turn` answered: user turns, scripted assistant turns
    and the model's earlier replies, oldest first, ending with that user turn."""
    out: list[dict[str, str]] = []
    k = 0
    turns = dialogue.turns
    for i, t in enumerate(turns):
        if t.role == "assistant":
            out.append({"role": "assistant", "text": t.text})
            continue
        k += 1
        out.append({"role": "user", "text": t.text})
        if k == turn:
            break
        scripted = i + 1 < len(turns) and turns[i + 1].role == "assistant"
        if not scripted and k in replies:
            out.append({"role": "assistant", "text": replies[k].text})
    return out


def walk(
    report: Report,
    path: Path,
    *,
    reviewer: str,
    suites: Suites,
    stdin: TextIO,
    out: TextIO,
    limit: int | None = None,
) -> dict[str, int]:
    """Asks about each flagged reply not yet adjudicated; appends each answer to `path`."""
    done = {a.sha256 for a in adj.read(path)}
    items = flagged(report)
    todo = []
    keyless = 0
    for it in items:
        r = report.replies.get((it.suite, it.dialogue), {}).get(it.turn)
        if r is None or r.guard is not None:
            continue  # our guard's refusals are refusals by construction
        if not r.exchange_sha256:
            keyless += 1
            continue
        if r.exchange_sha256 not in done:
            todo.append(it)
    counts = {"flagged": len(items), "recorded": 0, "skipped": 0, "already": 0}
    counts["already"] = len(items) - len(todo) - keyless
    print(
        f"{len(items)} flagged replies in {report.folder}: {counts['already']} already "
        f"adjudicated in {path}, {len(todo)} to review"
        + (f" ({keyless} without an exchange key: written by an older version)" if keyless else ""),
        file=out,
    )
    placement = str(
        next(
            (
                (s.get("header") or {}).get("decoding_image_placement")
                for s in (report.run.get("suites") or {}).values()
            ),
            None,
        )
        or "last"
    )
    answered: set[str] = set()
    for i, it in enumerate(todo, start=1):
        if limit is not None and counts["recorded"] >= limit:
            break
        reply = report.replies[(it.suite, it.dialogue)][it.turn]
        key = reply.exchange_sha256 or ""
        if key in answered:  # the same exchange in a twin: answered once
            continue
        row = report.rows.get((it.suite, it.dialogue), {})
        d = suites.dialogue(it.suite, it.dialogue)
        show(
            it,
            i,
            len(todo),
            row,
            report.replies[(it.suite, it.dialogue)],
            d,
            suites.roots.get(it.suite),
            placement,
            suites.problems.get(it.suite),
            report.run.get("judge") or {},
            out,
        )
        harm_axis = _harm_axis(row, it.turn)
        while True:
            print(PROMPT, end="", file=out, flush=True)
            try:
                line = stdin.readline()
            except (OSError, ValueError):  # no input to read (closed, or captured)
                line = ""
            if not line:  # end of input: stop, as with q
                print("", file=out)
                _finish(counts, len(todo), path, out)
                return counts
            key_char, _, note = line.strip().partition(" ")
            key_char = key_char.lower()
            if key_char == QUIT:
                _finish(counts, len(todo), path, out)
                return counts
            if key_char == SKIP:
                counts["skipped"] += 1
                break
            token = KEYS.get(key_char)
            if token is None:
                print(f"  unknown answer {line.strip()!r}", file=out)
                continue
            try:
                human = HumanLabel.from_token(token, harm_axis=harm_axis)
            except ValueError as exc:
                print(f"  {exc}", file=out)
                continue
            adj.append(
                path,
                record(
                    it,
                    reply,
                    human,
                    token,
                    note.strip(),
                    dialogue=d,
                    replies=report.replies[(it.suite, it.dialogue)],
                    run=report.run,
                    reviewer=reviewer,
                ),
            )
            answered.add(key)
            counts["recorded"] += 1
            verb = "confirms" if token == reply.token else "overturns"
            print(f"  recorded: {token} ({verb} the judge's {reply.token})", file=out)
            break
    _finish(counts, len(todo), path, out)
    return counts


def _finish(counts: Mapping[str, int], todo: int, path: Path, out: TextIO) -> None:
    left = todo - counts["recorded"] - counts["skipped"]
    print(
        f"review: {counts['recorded']} recorded, {counts['skipped']} skipped, {max(0, left)} "
        f"left; labels in {path} (commit it with the baselines; the next run applies them)",
        file=out,
    )


def run_review(args: Any, stdin: TextIO | None = None, out: TextIO | None = None) -> int:
    stdin = stdin if stdin is not None else sys.stdin
    out = out if out is not None else sys.stdout
    report = _read_report(Path(args.report))
    path = Path(args.adjudications or Path("baselines") / adj.FILE_NAME)
    adj.read(path)  # a bad or conflicting line: its file:line error before any question
    suites = Suites(report, args.suite)
    walk(
        report,
        path,
        reviewer=reviewer_name(args.reviewer),
        suites=suites,
        stdin=stdin,
        out=out,
        limit=args.limit,
    )
    return 0
