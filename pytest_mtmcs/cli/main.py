"""`pytest-mtmcs` (or `python -m pytest_mtmcs`): offline commands that need no model run.

- `import SPEC OUT`: writes a native suite folder from a benchmark release
  (`mtmcs-bench:PATH`, `safemt:PATH`) or another suite, to pin, edit or review it in git.
- `compare A B`: compares two result tables or two baselines, with the run's statistics.
- `merge DIR...`: one outcome, gate and baseline from the report folders of `--mtmcs-shard` runs.
- `judge-agreement`: scores a judge against a labelled set of replies.
- `review REPORT_DIR`: a person confirms or overturns the labels of a run's flagged replies.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pytest_mtmcs import defaults
from pytest_mtmcs.errors import ConfigError, MtmcsError
from pytest_mtmcs.outcome.verdict import EXIT_USAGE


def _import(args: argparse.Namespace) -> int:
    from pytest_mtmcs.suite import resolve_suite, write_suite
    from pytest_mtmcs.suite.specs import misnamed_release

    hint = misnamed_release(args.spec, f"pytest-mtmcs import {{spec}} {args.out}")
    if hint is not None:
        raise ConfigError(hint)
    kwargs = {}
    if args.captions and not args.spec.startswith("mtmcs-bench:"):
        raise ConfigError(
            f"--captions={args.captions}: captions are read for an MTMCS-Bench release "
            f"(mtmcs-bench:PATH), not for {args.spec}"
        )
    if args.spec.startswith("mtmcs-bench:"):
        kwargs = {
            "splits": args.splits.split(",") if args.splits else None,
            "modalities": args.modalities.split(",") if args.modalities else None,
            "variant_images": args.variant_images,
            "captions": args.captions,
        }
    suite = resolve_suite(args.spec, **kwargs)
    write_suite(suite, args.out)
    print(f"wrote {len(suite.dialogues)} dialogues of {suite.name} {suite.version} to {args.out}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from pytest_mtmcs.cli.compare import compare_main

    return compare_main(args)


def _merge(args: argparse.Namespace) -> int:
    from pytest_mtmcs.cli.merge import merge_main

    return merge_main(args)


def _agreement(args: argparse.Namespace) -> int:
    from pytest_mtmcs.cli.judge_agreement import run_agreement

    return run_agreement(args)


def _review(args: argparse.Namespace) -> int:
    from pytest_mtmcs.cli.review import run_review

    return run_review(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pytest-mtmcs", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("import", help="write a native suite folder from a benchmark release")
    p.add_argument("spec", help="mtmcs-bench:PATH, safemt:PATH or a suite folder")
    p.add_argument("out", help="folder to write (suite.toml, dialogues.jsonl, images/)")
    p.add_argument("--splits", help="MTMCS-Bench splits, comma-separated (default: all)")
    p.add_argument("--modalities", help="multimodal,text (default: both)")
    p.add_argument("--variant-images", action="store_true", help="also the 3 variant images")
    p.add_argument(
        "--captions",
        metavar="FILE",
        help="MTMCS-Bench image captions, row id -> caption, written as each dialogue's "
        "image_caption (default: MTMCS_Bench_captions.json in the release folder or its "
        "parent, if there)",
    )
    p.set_defaults(func=_import)

    p = sub.add_parser("compare", help="compare two result tables or baselines, offline")
    p.add_argument(
        "current",
        help="a run's report folder (--mtmcs-report), its results.parquet/csv, or a baseline "
        ".ambr file",
    )
    p.add_argument("baseline", help="the same kind of thing for the earlier checkpoint")
    p.add_argument(
        "--buckets",
        default=None,
        help="turn buckets (default: the ones the run recorded in run.json, else "
        f"{defaults.BUCKETS})",
    )
    p.add_argument(
        "--max-drop",
        type=float,
        default=defaults.MAX_DROP,
        help=f"tolerated drop (default: {defaults.MAX_DROP})",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=defaults.ALPHA,
        help=f"significance level (default: {defaults.ALPHA})",
    )
    p.add_argument(
        "--fail-inconclusive",
        action="store_true",
        help="exit 1 on an inconclusive cell too (a drop beyond --max-drop that is not "
        "significant) (default: such cells warn, exit 0)",
    )
    p.add_argument("--out", help="folder for summary.md and report.html (default: print only)")
    p.set_defaults(func=_compare)

    p = sub.add_parser(
        "merge",
        help="merge the report folders of --mtmcs-shard runs into one outcome, gate and baseline",
        # `--baselines x` must not pass for `--baselines-dir x`.
        allow_abbrev=False,
    )
    from pytest_mtmcs.cli.merge import add_arguments as add_merge_arguments

    add_merge_arguments(p)
    p.set_defaults(func=_merge)

    p = sub.add_parser(
        "judge-agreement",
        help="score a judge against human-labelled replies",
        description="Score a judge against human-labelled replies: 3-class accuracy and kappa, "
        "compliance vs not, refusal vs not (Wilson 95%% intervals), confusion matrix, per source "
        "and model. A reply the judge cannot label counts as wrong.",
    )
    from pytest_mtmcs.cli.judge_agreement import add_arguments

    add_arguments(p)
    p.set_defaults(func=_agreement)

    p = sub.add_parser(
        "review",
        help="confirm or overturn the judge's labels on a run's flagged replies, into the "
        "adjudications file kept with the baselines",
        description="Walk a run's flagged replies (regressed dialogues, then fixed ones, then "
        "replies a model judge overturned) and label each one; answers are appended to the "
        "adjudications file, which later runs apply instead of the judge.",
    )
    from pytest_mtmcs.cli.review import add_arguments as add_review_arguments

    add_review_arguments(p)
    p.set_defaults(func=_review)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes as pytest's (`outcome/verdict.py`): 0 passed, 1 the gate failed, 4 a usage
    error (a bad option or input file), one line on stderr, no traceback."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a bad option (2, pytest says 4)
        return EXIT_USAGE if exc.code not in (0, None) else 0
    try:
        return int(args.func(args))
    except MtmcsError as exc:
        print(f"pytest-mtmcs: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
