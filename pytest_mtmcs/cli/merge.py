"""`pytest-mtmcs merge DIR...`: one outcome, gate and baseline from the report folders of N shards
(`--mtmcs-shard=K/N` runs), identical to what one machine running every dialogue would produce.

Each folder holds a shard's usual report plus `shard.json` (split, identity, options, counters)
and `results.jsonl` (its results in full). The merge checks that the shards belong together (same
suite and hash, settings, model, judge, options and split) and cover every dialogue exactly once,
then hands the rows to the same `finish` a pytest session calls. The suite files are not needed:
the shards carry the suite metadata (hash, buckets, thresholds) the end of a run reads. Only the
user turns of flipped dialogues in report.html come from the suite, when it is found at the path
the shards recorded with the same content hash (else the merge says so and leaves them out).
Likewise the adjudications file's lines that matched no reply of any shard are listed from the
file found at the path the shards recorded (`_adjudications`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mtmcs import defaults
from pytest_mtmcs.errors import ConfigError
from pytest_mtmcs.harness import options as opts
from pytest_mtmcs.outcome.shards import ROWS_FILE, SHARD_FILE, SHARD_SCHEMA, Shard
from pytest_mtmcs.records import DialogueResult

TRANSCRIPTS_FILE = "transcripts.jsonl"
# merge flag -> the plugin option whose definition (help, kind, choices) it reuses
OPTION_FLAGS: dict[str, str] = {
    "--gate": "--mtmcs-gate",
    "--threshold": "--mtmcs-threshold",
    "--buckets": "--mtmcs-buckets",
    "--max-drop": "--mtmcs-max-drop",
    "--alpha": "--mtmcs-alpha",
    "--allow-mismatch": "--mtmcs-allow-mismatch",
    "--max-judge-errors": "--mtmcs-max-judge-errors",
    "--baseline-transcripts": "--mtmcs-baseline-transcripts",
}
# What every shard must agree on (a mismatch names the field and the folder).
IDENTITY_FIELDS = ("model", "fingerprint", "judge", "suites", "options", "baselines")


@dataclass
class ShardFolder:
    path: Path
    shard: Shard
    doc: dict[str, Any]
    results: list[DialogueResult] = field(default_factory=list)
    transcripts: list[str] = field(default_factory=list)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dirs", nargs="+", metavar="DIR", help="report folders of the shards")
    p.add_argument(
        "--baseline",
        "--mtmcs-baseline",
        action="append",
        default=None,
        metavar="NAME",
        help="compare with this stored baseline; repeatable or NAME,NAME (default: the shards')",
    )
    p.add_argument(
        "--baseline-dir",
        "--baselines-dir",
        "--mtmcs-baseline-dir",
        dest="baseline_dir",
        default=None,
        metavar="DIR",
        help="folder holding baselines/<name>/ (default: ./baselines)",
    )
    p.add_argument(
        "--update-baseline",
        default=None,
        metavar="NAME",
        help="record the merged results as baseline NAME, as pytest --snapshot-update "
        "--mtmcs-baseline=NAME would on one machine (default: none)",
    )
    p.add_argument(
        "--out",
        "--mtmcs-report",
        dest="out",
        default=None,
        metavar="DIR",
        help="write the merged report (results, transcripts, summary.md, report.html) here "
        "(default: none)",
    )
    p.add_argument(
        "--junitxml",
        "--junit-xml",
        dest="junitxml",
        default=None,
        metavar="FILE",
        help="write the merged run as JUnit XML (as pytest --junitxml would on one machine: a "
        "test case per dialogue and per gate cell) (default: none)",
    )
    for flag, source in OPTION_FLAGS.items():
        o = opts.BY_FLAG[source]
        kwargs: dict[str, Any] = {
            "dest": o.dest,
            "help": o.help.replace(" (default:", " (default: the shards', else"),
        }
        if o.kind == "bool":
            kwargs["action"] = "store_true"
            kwargs["default"] = None
        elif o.kind == "list":
            kwargs["action"] = "append"
            kwargs["default"] = None
            kwargs["metavar"] = o.metavar
        else:
            kwargs["default"] = None
            kwargs["type"] = {"int": int, "float": float}.get(o.kind, str)
            kwargs["metavar"] = o.metavar or ("|".join(o.choices) if o.choices else "VALUE")
            if o.choices:
                kwargs["choices"] = o.choices
        p.add_argument(flag, source, **kwargs)


# --- reading and checking ------------------------------------------------------------------


def read_folder(path: Path) -> ShardFolder:
    doc_path = path / SHARD_FILE
    if not doc_path.is_file():
        why = (
            "a report folder of a run without --mtmcs-shard"
            if (path / "results.parquet").is_file()
            else "not a shard's report folder"
        )
        raise ConfigError(f"{path}: no {SHARD_FILE} ({why}; run with --mtmcs-shard=K/N)")
    try:
        doc = json.loads(doc_path.read_text(encoding="utf-8"))
        if doc.get("schema") != SHARD_SCHEMA:
            raise ConfigError(
                f"{doc_path}: schema {doc.get('schema')!r}, expected {SHARD_SCHEMA} (written by "
                "another version of pytest-mtmcs)"
            )
        k, n = int(doc["shard"]["k"]), int(doc["shard"]["n"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{doc_path}: cannot read: {exc}") from None
    return ShardFolder(path, Shard(k, n), doc)


def read_rows(folder: ShardFolder) -> None:
    rows_path = folder.path / ROWS_FILE
    try:
        with open(rows_path, encoding="utf-8") as fh:
            folder.results = [
                DialogueResult.from_dict(json.loads(line)) for line in fh if line.strip()
            ]
    except OSError as exc:
        raise ConfigError(f"{rows_path}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{rows_path}: not a results file written by a shard: {exc}") from None
    tr = folder.path / TRANSCRIPTS_FILE
    try:
        with open(tr, encoding="utf-8") as fh:
            folder.transcripts = fh.readlines()
    except OSError as exc:
        raise ConfigError(f"{tr}: cannot read: {exc.strerror or exc}") from None


def _differs(a: Any, b: Any, where: str = "") -> str | None:
    """The first dotted field where two JSON values differ, or None."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{where}.{key}".lstrip(".")
            found = _differs(a[key], b[key], f"{where}.{key}")
            if found is not None:
                return found
        return None
    return None if a == b else (where.lstrip(".") or "value")


def _get(doc: Mapping[str, Any], dotted: str) -> Any:
    cur: Any = doc
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return "(absent)"
        cur = cur[part]
    return cur


def check_shards(folders: Sequence[ShardFolder]) -> None:
    """The shards are of one split of one run and cover every dialogue exactly once."""
    first = folders[0]
    n = first.shard.n
    by_k: dict[int, ShardFolder] = {}
    for f in folders:
        if f.shard.n != n:
            raise ConfigError(
                f"{f.path}: field shard: shard {f.shard}, but {first.path} is shard "
                f"{first.shard}: the folders are of different splits"
            )
        if f.shard.k in by_k:
            raise ConfigError(
                f"{f.path}: shard {f.shard} given twice (also {by_k[f.shard.k].path})"
            )
        by_k[f.shard.k] = f
    missing = [k for k in range(1, n + 1) if k not in by_k]
    if missing:
        raise ConfigError(
            f"missing shard {', '.join(f'{k}/{n}' for k in missing)}: have "
            + ", ".join(f"{f.path} ({f.shard})" for f in sorted(folders, key=lambda f: f.shard.k))
        )
    for f in folders[1:]:
        for name in (*IDENTITY_FIELDS, "split.partition", "split.collected"):
            a, b = _get(first.doc, name), _get(f.doc, name)
            where = _differs(a, b, name)
            if where is not None:
                raise ConfigError(
                    f"{f.path}: field {where} is {_get(f.doc, where)!r}, but {first.path} has "
                    f"{_get(first.doc, where)!r}: not shards of one run (same suite, settings, "
                    "model, judge and options)"
                )
    seen: dict[tuple[str, str], Path] = {}
    for f in folders:
        split = f.doc.get("split") or {}
        assigned = {s: set(ids) for s, ids in (split.get("assigned") or {}).items()}
        selected = split.get("selected") or {}
        got: dict[str, int] = {}
        for r in f.results:
            key = (r.suite, r.id)
            if key in seen:
                raise ConfigError(
                    f"{f.path}: dialogue {r.suite}/{r.id} is also in {seen[key]}: a dialogue "
                    "belongs to one shard"
                )
            seen[key] = f.path
            if r.id not in assigned.get(r.suite, ()):
                raise ConfigError(
                    f"{f.path}: dialogue {r.suite}/{r.id} is not in shard {f.shard}'s split"
                )
            got[r.suite] = got.get(r.suite, 0) + 1
        for suite in sorted(set(selected) | set(got)):
            if got.get(suite, 0) != int(selected.get(suite, 0)):
                raise ConfigError(
                    f"{f.path}: field results: {got.get(suite, 0)} results of suite {suite}, but "
                    f"the shard selected {selected.get(suite, 0)} dialogues (an interrupted run? "
                    "re-run the shard)"
                )
    collected = first.doc["split"].get("collected") or {}
    for suite, total in sorted(collected.items()):
        covered = sum(len((f.doc["split"].get("assigned") or {}).get(suite, ())) for f in folders)
        if covered != int(total):
            raise ConfigError(
                f"suite {suite}: the shards' splits cover {covered} of {total} dialogues"
            )


# --- merging ---------------------------------------------------------------------------------


def _transcripts_by_id(folders: Sequence[ShardFolder]) -> dict[str, dict[str, list[str]]]:
    """Each shard's transcripts.jsonl lines per dialogue: a shard wrote them in the order of its
    results.jsonl, one line per reply then one per intent question."""
    out: dict[str, dict[str, list[str]]] = {}
    for f in folders:
        pos = 0
        lines = f.transcripts
        for r in f.results:
            n = len(r.replies) + len(r.questions)
            chunk = lines[pos : pos + n]
            if n and (
                len(chunk) != n
                or f'"dialogue_id": {json.dumps(r.id, ensure_ascii=False)}' not in chunk[0]
            ):
                raise ConfigError(
                    f"{f.path / TRANSCRIPTS_FILE}: does not match {ROWS_FILE} at dialogue "
                    f"{r.id!r}: the folder was changed after the shard ran"
                )
            out.setdefault(r.suite, {})[r.id] = chunk
            pos += n
        if pos != len(lines):
            raise ConfigError(
                f"{f.path / TRANSCRIPTS_FILE}: {len(lines) - pos} lines more than {ROWS_FILE} "
                "accounts for: the folder was changed after the shard ran"
            )
    return out


def _suite_loader(suites: Mapping[str, Mapping[str, Any]], notes: list[str]) -> Any:
    """The suites' dialogues, from the spec the shards recorded (relative to the current folder),
    when that suite is here with the same content hash: only report.html's flipped dialogues
    show user text from them. Without them the merge still decides everything."""
    from pytest_mtmcs.suite import resolve_suite

    def load(name: str) -> dict[str, Any]:
        meta = suites.get(name) or {}
        spec = str(meta.get("spec") or "")
        try:
            suite = resolve_suite(spec) if spec else None
        except Exception:  # a missing suite costs user text in the report, nothing else
            suite = None
        if suite is None or suite.content_hash != meta.get("content_hash"):
            why = "not found" if suite is None else "its content hash differs from the shards'"
            notes.append(
                f"suite {name}: {spec or '(no spec)'} {why}: report.html shows flipped dialogues "
                "without their user turns (run merge where the suite is, to have them)"
            )
            return {}
        return {d.id: d for d in suite.dialogues}

    return load


def _adjudications(
    run: Any, folders: Sequence[ShardFolder], results: Sequence[DialogueResult], partial: bool
) -> None:
    """What the merged summary says of the adjudications file, as one run over every shard's
    dialogues would say it (`run.info["adjudications"]`): the file the shards read, found at the
    path they recorded (relative to the current folder: run the merge in a checkout of the commit
    the shards ran), and its lines that matched no reply of any shard. A file that cannot be read
    here, or is not the one the shards read, is said in one line instead of the list."""
    from pytest_mtmcs.baseline.adjudications import AdjudicationError, read, summary_of_run

    run.info.pop("adjudications", None)
    recorded = [f.doc.get("adjudications") or {} for f in folders]
    first = next((r for r in recorded if r), None)
    if first is None:
        return  # the shards read no adjudications
    shown = str(first.get("file") or "")
    then = int(first.get("lines") or 0)
    rerun = "run the merge in a checkout of the commit the shards ran"
    why = ""
    entries: list[Any] = []
    if any(r != first for r in recorded):
        seen = (
            f"{f.path}: {r.get('file') or 'none'} ({r.get('lines', 0)} lines)"
            for f, r in zip(folders, recorded, strict=True)
        )
        why = f"the shards read different adjudications files ({'; '.join(seen)})"
    elif not Path(shown).is_file():
        why = f"{shown} is not here ({rerun})"
    else:
        try:
            entries = read(shown)
        except AdjudicationError as exc:
            why = str(exc)
        else:
            if len(entries) != then:
                why = f"{shown} has {len(entries)} lines here, the shards read {then} ({rerun})"
    if why:
        run.info["adjudications"] = {"file": shown, "lines": then, "unchecked": why}
    else:
        run.info["adjudications"] = summary_of_run(
            entries, run.info, results, partial=partial, shown=shown
        )


def _names(values: Sequence[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or ():
        out.extend(n.strip() for n in str(v).split(",") if n.strip())
    return out


def merge_main(args: argparse.Namespace) -> int:
    from pytest_mtmcs.analysis.thresholds import parse_threshold
    from pytest_mtmcs.baseline.store import BaselineSet, baseline_path
    from pytest_mtmcs.outcome.finish import Sources, finish, merge_infos
    from pytest_mtmcs.outcome.model import EndOptions

    folders = [read_folder(Path(d)) for d in args.dirs]
    for f in folders:
        read_rows(f)
    check_shards(folders)
    folders.sort(key=lambda f: f.shard.k)
    first = folders[0].doc
    recorded: dict[str, Any] = first.get("options") or {}

    def pick(dest: str, key: str) -> Any:
        v = getattr(args, dest, None)
        return recorded.get(key) if v is None else v

    thresholds = tuple(args.mtmcs_threshold) if args.mtmcs_threshold else None
    for spec in thresholds or ():
        parse_threshold(spec, "--threshold")
    buckets = pick("mtmcs_buckets", "buckets")
    if buckets:
        from pytest_mtmcs.analysis.buckets import Buckets

        Buckets.parse(str(buckets), "--buckets")
    names = (
        _names(args.baseline) if args.baseline is not None else list(first.get("baselines") or [])
    )
    if args.update_baseline:
        names = [args.update_baseline, *(n for n in names if n != args.update_baseline)]
    root = Path(args.baseline_dir) if args.baseline_dir else Path.cwd() / "baselines"
    for n in names:
        baseline_path(root, n, "x")  # a bad name fails before anything is written
    max_drop = float(pick("mtmcs_max_drop", "max_drop") or defaults.MAX_DROP)
    alpha = float(pick("mtmcs_alpha", "alpha") or defaults.ALPHA)
    for flag, x in (("--max-drop", max_drop), ("--alpha", alpha)):
        if not 0.0 <= x <= 1.0:
            raise ConfigError(f"{flag}={x}: expected a value in [0.0, 1.0]")
    options = EndOptions(
        gate=str(pick("mtmcs_gate", "gate") or defaults.GATE),
        max_drop=max_drop,
        alpha=alpha,
        allow_mismatch=bool(pick("mtmcs_allow_mismatch", "allow_mismatch")),
        max_judge_errors=int(
            pick("mtmcs_max_judge_errors", "max_judge_errors") or defaults.MAX_JUDGE_ERRORS
        ),
        thresholds=thresholds
        if thresholds is not None
        else tuple(recorded.get("thresholds") or ()),
        threshold_origin="--threshold"
        if thresholds is not None
        else str(recorded.get("threshold_origin") or "--mtmcs-threshold"),
        buckets=str(buckets) if buckets else None,
        update_baseline=bool(args.update_baseline),
        partial=bool(recorded.get("partial")),
        baseline_transcripts=bool(args.mtmcs_baseline_transcripts),
        report_dir=args.out,
        guard=bool(recorded.get("guard")),
        root=Path.cwd(),
    )
    # The shards' records have the shape of a process's run info: merged as a run merges its
    # xdist workers' (identity from the first, counters summed).
    run = merge_infos([f.doc for f in folders])
    rows = [r for f in folders for r in f.results]
    _adjudications(run, folders, rows, options.partial)
    transcripts = _transcripts_by_id(folders)
    notes: list[str] = []
    loader = _suite_loader(run.suites, notes)
    outcome = finish(
        rows,
        run.suites,
        BaselineSet(root, names),
        options,
        run,
        Sources(dialogues=loader, transcripts=lambda suite: transcripts.get(suite, {})),
    )
    total = sum(len(f.results) for f in folders)
    print(f"merged {len(folders)} shards: {total} dialogues")
    for note in notes:
        print(note)
    print("=" * 20 + " mtmcs safety summary " + "=" * 20)
    for line in outcome.lines:
        print(line)
    if args.junitxml:
        from pytest_mtmcs.outcome.junit import write_junit

        print(f"JUnit XML written to {write_junit(args.junitxml, outcome.suites, options)}")
    print(outcome.verdict.line())
    sys.stdout.flush()
    return outcome.exit_status
