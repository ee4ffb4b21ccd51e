"""`pytest-mtmcs judge-agreement`: scores a judge against a labelled file of replies.

The measures and the reading of labelled files are `judges.agreement`'s; this module is the
command: its options, the default labelled set, the printout and `--record`. A file is measured
on the axes its rows label (DESIGN.md, Grading): the refusal axis on the rows with a `label`, the
harm axis on the rows with a `harm`, both when it holds both; `--axis` picks one.
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
    format_harm_breakdown,
    format_harm_measures,
    format_measures,
    harm_breakdown,
    judge_rows,
    load_labelled_records,
    measure,
    measure_harm,
)
from pytest_mtmcs.outcome.verdict import EXIT_USAGE

# The rules judge's own hand-written set: what the command scores when no file is given.
DEFAULT_LABELLED = Path(__file__).resolve().parents[1] / "judges" / "data" / "rules_labelled.jsonl"


DESCRIPTION = (
    "Score a judge against human-labelled replies, on the axes the file's rows label. Refusal "
    "axis (rows with a label): 3-class accuracy and kappa, compliance vs not, refusal vs not, "
    "confusion matrix. Harm axis (rows with a harm): harmful vs not, accuracy, precision, "
    "recall, kappa. Wilson 95%% intervals, per source and model. A reply the judge cannot label "
    "counts as wrong."
)


def add_arguments(p: Any) -> None:
    """The options of `pytest-mtmcs judge-agreement` (and its description, which names both
    axes)."""
    p.description = DESCRIPTION
    p.add_argument(
        "--labelled",
        help="JSONL or CSV (either may be gzipped) with text, and label "
        "(refusal|safe_redirect|compliance, the refusal axis) or harm (0|1, the harm axis) or "
        "both, and optional prompt, image (a caption), source, model, split, history (the "
        "conversation, as in the adjudications file pytest-mtmcs review writes) "
        "(default: the rules judge's own hand-written set)",
    )
    p.add_argument(
        "--axis",
        choices=AXES,
        default=None,
        help="measure the refusal axis (rows with a label), the harm axis (rows with a harm) "
        "or both (default: each axis the file's rows label)",
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


AXES = ("refusal", "harm", "both")


def _axes(rows: Sequence[LabelledReply], forced: str | None, path: Path) -> tuple[bool, bool]:
    """(refusal, harm): which axes to measure; an axis asked for that no row labels is an error."""
    has_label = any(r.label is not None for r in rows)
    has_harm = any(r.harm is not None for r in rows)
    if forced is None:
        return has_label, has_harm
    want_r, want_h = forced in ("refusal", "both"), forced in ("harm", "both")
    for want, has, field in ((want_r, has_label, "label"), (want_h, has_harm, "harm")):
        if want and not has:
            raise LabelledDataError(
                str(path), f"--axis {forced}: no row has a '{field}'", field=field
            )
    return want_r, want_h


def harm_key(split: str, path: Path) -> str:
    """The datasheet key of a harm-axis measurement: several harm files share a split name."""
    stem = path.name
    for suffix in (".gz", ".jsonl", ".json", ".ndjson", ".csv", ".tsv"):
        stem = stem.removesuffix(suffix)
    return f"harm/{stem}/{split}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_agreement(args: Any) -> int:
    """`pytest-mtmcs judge-agreement`: prints the numbers; a usage error (EXIT_USAGE) on bad input."""
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
        refusal, harm = _axes(rows, args.axis, path)
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
    command = (
        f"pytest-mtmcs judge-agreement --labelled {path.name} --judge {spec}"
        + (f" --split {args.split}" if args.split else "")
        + (f" --axis {args.axis}" if args.axis else "")
        + (
            f" --cascade-threshold {args.cascade_threshold:g}"
            if args.cascade_threshold is not None
            else ""
        )
    )
    common = {
        "judge": str(judge.identity),
        "split": split,
        "labelled_file": path.name,
        "labelled_sha256": _sha256(path) if args.record else "",
        "command": command,
    }
    records: list[tuple[str, dict[str, Any]]] = []
    if refusal:
        idx = [i for i, r in enumerate(rows) if r.label is not None]
        sub = [rows[i] for i in idx]
        labels = [judged.labels[i] for i in idx]
        m = measure([r.label or "" for r in sub], labels)
        print()
        print(f"== refusal axis: {len(sub)} replies with a label ==")
        print("\n".join(format_measures(m)))
        print()
        print(format_agreement(m.three_class))
        for key in ("source", "model"):
            groups = breakdown(sub, labels, key)
            if len(groups) > 1 or key == "source":
                print()
                print("\n".join(format_breakdown(f"by {key}", groups)))
        records.append((split, {**common, **m.as_dict()}))
    if harm:
        idx = [i for i, r in enumerate(rows) if r.harm is not None]
        sub = [rows[i] for i in idx]
        decided = [judged.harm[i] for i in idx]
        from_label = sum(1 for i in idx if judged.harm[i] is not None and not judged.harm_own[i])
        hm = measure_harm([r.harm or 0 for r in sub], decided, from_label)
        print()
        print(f"== harm axis: {len(sub)} replies with a harm label ==")
        print("\n".join(format_harm_measures(hm)))
        for key in ("source", "model"):
            hgroups = harm_breakdown(sub, decided, key)
            if len(hgroups) > 1 or key == "source":
                print()
                print("\n".join(format_harm_breakdown(f"by {key}", hgroups)))
        records.append((harm_key(split, path), {**common, "axis": "harm", **hm.as_dict()}))
    errors = [(r, e) for r, e in zip(rows, judged.errors, strict=True) if e]
    if errors:
        print()
        print(f"judge errors/abstentions: {len(errors)} (counted as wrong)")
        for r, e in errors[: max(0, args.show_errors)]:
            print(f"  {path.name}:{r.line}: {e}")
    if args.record:
        from pytest_mtmcs.judges import datasheet

        for key, entry in records:
            where = datasheet.record(judge.identity, key, entry, args.datasheets)
            print()
            print(f"recorded: datasheet of {judge.identity} on {key} in {where.name}")
    return 0


def _only_split(rows: Sequence[LabelledReply]) -> str:
    splits = {r.split for r in rows}
    return splits.pop() if len(splits) == 1 and "" not in splits else ""
