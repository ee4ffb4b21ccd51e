"""`pytest-mtmcs judge-agreement`: scores a judge against a labelled file of replies.

The measures and the reading of labelled files are `judges.agreement`'s; this module is the
command: its options, the default labelled set, the printout and `--record`.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_mtmcs import defaults
from pytest_mtmcs.errors import MtmcsError
from pytest_mtmcs.judges.agreement import (
    LabelledDataError,
    LabelledReply,
    breakdown,
    build_judge,
    format_agreement,
    format_breakdown,
    format_measures,
    judge_rows,
    load_labelled_records,
    measure,
)
from pytest_mtmcs.outcome.verdict import EXIT_USAGE

# The rules judge's own hand-written set: what the command scores when no file is given.
DEFAULT_LABELLED = Path(__file__).resolve().parents[1] / "judges" / "data" / "rules_labelled.jsonl"


def add_arguments(p: Any) -> None:
    """The options of `pytest-mtmcs judge-agreement`."""
    p.add_argument(
        "--labelled",
        help="JSONL or CSV (either may be gzipped) with text, label "
        "(refusal|safe_redirect|compliance) and optional prompt, source, model, split "
        "(default: the rules judge's own hand-written set)",
    )
    p.add_argument(
        "--judge",
        default=None,
        help=f"judge spec; cascade:LOCAL,oracle escalates to the human labels "
        f"(default: the plugin's, {defaults.JUDGE})",
    )
    p.add_argument("--split", default=None, help="only rows of this split, e.g. dev or test")
    p.add_argument(
        "--cascade-threshold",
        type=float,
        default=None,
        help="confidence threshold of a cascade judge (default: the plugin's)",
    )
    p.add_argument(
        "--judge-base-url",
        default=None,
        help="server of an openai: model judge (default: $OPENAI_BASE_URL)",
    )
    p.add_argument(
        "--record",
        action="store_true",
        help="store the numbers as this judge identity's datasheet for the split",
    )
    p.add_argument(
        "--datasheets",
        default=None,
        help="datasheet file to --record into (default: the package's)",
    )
    p.add_argument(
        "--show-errors",
        type=int,
        default=5,
        metavar="N",
        help="print the first N judge errors/abstentions (default: 5)",
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_agreement(args: Any) -> int:
    """`pytest-mtmcs judge-agreement`: prints the numbers; 2 on bad input."""
    path = Path(args.labelled) if args.labelled else DEFAULT_LABELLED
    spec = args.judge or defaults.JUDGE
    try:
        rows = load_labelled_records(path)
        if args.split:
            rows = [r for r in rows if r.split == args.split]
            if not rows:
                raise LabelledDataError(str(path), f"no rows with split {args.split!r}")
        if not rows:
            raise LabelledDataError(str(path), "no labelled rows")
        judge = build_judge(
            spec, rows, threshold=args.cascade_threshold, base_url=args.judge_base_url
        )
    except MtmcsError as exc:
        print(f"pytest-mtmcs: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    start = time.perf_counter()
    try:
        judged = judge_rows(judge, rows)
    finally:
        close = getattr(judge, "close", None)
        if close is not None:
            close()
    seconds = time.perf_counter() - start
    m = measure([r.label for r in rows], judged.labels)
    split = args.split or _only_split(rows) or path.stem
    print(f"judge: {judge.identity}")
    print(f"labelled: {path.name} ({len(rows)} replies, split {split})")
    print(
        f"judged in {seconds:.2f} s ({len(rows) / seconds if seconds > 0 else float('inf'):,.0f} "
        "replies/s)"
    )
    counts = getattr(judge, "counts", None)
    if counts is not None:
        from pytest_mtmcs.judges.cascade import counts_text

        print(f"cascade: {counts_text(counts)} (threshold {judge.threshold:g})")
    print()
    print("\n".join(format_measures(m)))
    print()
    print(format_agreement(m.three_class))
    for key in ("source", "model"):
        groups = breakdown(rows, judged.labels, key)
        if len(groups) > 1 or key == "source":
            print()
            print("\n".join(format_breakdown(f"by {key}", groups)))
    errors = [(r, e) for r, e in zip(rows, judged.errors, strict=True) if e]
    if errors:
        print()
        print(f"judge errors/abstentions: {len(errors)} (counted as wrong)")
        for r, e in errors[: max(0, args.show_errors)]:
            print(f"  {path.name}:{r.line}: {e}")
    if args.record:
        from pytest_mtmcs.judges import datasheet

        entry = {
            "judge": str(judge.identity),
            "split": split,
            "labelled_file": path.name,
            "labelled_sha256": _sha256(path),
            "command": f"pytest-mtmcs judge-agreement --labelled {path.name} --judge {spec}"
            + (f" --split {args.split}" if args.split else "")
            + (
                f" --cascade-threshold {args.cascade_threshold:g}"
                if args.cascade_threshold is not None
                else ""
            ),
            **m.as_dict(),
        }
        where = datasheet.record(judge.identity, split, entry, args.datasheets)
        print()
        print(f"recorded: datasheet of {judge.identity} on split {split} in {where.name}")
    return 0


def _only_split(rows: Sequence[LabelledReply]) -> str:
    splits = {r.split for r in rows}
    return splits.pop() if len(splits) == 1 and "" not in splits else ""
