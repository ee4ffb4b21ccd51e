"""Command-line options and ini keys, and the settings resolved from them.

Every option is also an ini key (`mtmcs_model` for `--mtmcs-model`, ...) settable in
`pyproject.toml` under `[tool.pytest.ini_options]`. Precedence: command line > ini > the suite's
`suite.toml [defaults]` > built-in default. Help texts follow one convention: what it does, then
`(default: ...)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pytest_mtmcs import defaults
from pytest_mtmcs.errors import ConfigError

if TYPE_CHECKING:
    import pytest

GROUP = "mtmcs"


@dataclass(frozen=True)
class Opt:
    flag: str
    help: str
    kind: str = "string"  # string | int | float | bool | list
    default: Any = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def ini(self) -> str:
        return self.dest


OPTIONS: tuple[Opt, ...] = (
    Opt(
        "--mtmcs-model",
        "model under test: hf:PATH|HUB_ID, openai:MODEL, tiny:NAME, "
        "scripted:POLICY, replay:TRANSCRIPTS.jsonl, or a third-party PREFIX:... (default: none; "
        "required to run dialogues)",
        metavar="SPEC",
    ),
    Opt(
        "--mtmcs-suite",
        "run this suite too: a suite folder, mtmcs-bench:PATH or safemt:PATH; "
        "repeatable (default: only suite.toml folders found under the test paths)",
        kind="list",
        default=(),
        metavar="SPEC",
    ),
    Opt(
        "--mtmcs-buckets",
        "turn buckets by number of user turns, e.g. 1,2-3,4-5,6+ "
        f"(default: the suite's, else {defaults.BUCKETS})",
        metavar="SPEC",
    ),
    Opt(
        "--mtmcs-threshold",
        "minimum per bucket and metric, e.g. safety>=0.8 or "
        "6+:helpfulness>=0.7; repeatable (default: none, plus the suite's)",
        kind="list",
        default=(),
        metavar="RULE",
    ),
    Opt(
        "--mtmcs-image-placement",
        "which user turns carry the image: first (SafeMT), last "
        f"(MTMCS-Bench) or every (default: the suite's, else {defaults.IMAGE_PLACEMENT})",
        choices=("first", "last", "every"),
    ),
    Opt(
        "--mtmcs-max-new-tokens",
        f"maximum new tokens per reply (default: the suite's, else {defaults.MAX_NEW_TOKENS})",
        kind="int",
        metavar="N",
    ),
    Opt(
        "--mtmcs-max-pixels",
        "image pixel budget passed to the model's processor (default: the model's own)",
        kind="int",
        metavar="N",
    ),
    Opt(
        "--mtmcs-judge",
        "judge labelling each reply: rules, ngram (or ngram:DIR, an artefact you trained), "
        "a model judge SPEC, or "
        "cascade:LOCAL,MODEL_JUDGE (local judge first, unsure replies to the model judge) "
        f"(default: {defaults.JUDGE})",
        default=defaults.JUDGE,
        metavar="SPEC",
    ),
    Opt(
        "--mtmcs-cascade-threshold",
        "with --mtmcs-judge=cascade:LOCAL,MODEL_JUDGE, replies the local judge is less sure of "
        f"than this (0-1) go to the model judge (default: {defaults.CASCADE_THRESHOLD:g})",
        kind="float",
        default=defaults.CASCADE_THRESHOLD,
        metavar="X",
    ),
    Opt(
        "--mtmcs-judge-images",
        "send the dialogue's image itself to a model judge (rubric:, safe-unsafe:, "
        "guard:prompt:; a vision-language model) instead of its caption (default: off: the "
        "judge reads the image's caption where the suite has one, else a placeholder)",
        kind="bool",
        default=False,
    ),
    Opt(
        "--mtmcs-escalate",
        "with --mtmcs-judge=cascade:LOCAL,MODEL_JUDGE, also send every reply that decides a "
        "regressed or fixed dialogue to the model judge before the gate is decided: flips, or "
        f"off (default: {defaults.ESCALATE})",
        default=defaults.ESCALATE,
        choices=("off", "flips"),
    ),
    Opt(
        "--mtmcs-judge-base-url",
        "base URL of the OpenAI-compatible server of an openai: "
        "model judge (default: $OPENAI_BASE_URL)",
        metavar="URL",
    ),
    Opt(
        "--mtmcs-rejudge",
        "when a baseline differs from this run only in its judge, re-judge "
        "the baseline's stored transcripts with this run's judge and compare (default: refuse)",
        kind="bool",
        default=False,
    ),
    Opt(
        "--mtmcs-baseline-transcripts",
        "with --snapshot-update, also store the reply texts "
        "beside the baseline as <suite>.transcripts.jsonl.gz, for --mtmcs-rejudge "
        "(default: off)",
        kind="bool",
        default=False,
    ),
    Opt(
        "--mtmcs-guard",
        "wrap the model under test in a guard, STAGE:GUARD: STAGE input, output "
        "or both; GUARD keywords or guard:[prompt:]BACKEND; repeatable, one guard per stage "
        "(default: none)",
        kind="list",
        default=(),
        metavar="SPEC",
    ),
    Opt(
        "--mtmcs-guard-base-url",
        "base URL of the OpenAI-compatible server of an openai: guard (default: $OPENAI_BASE_URL)",
        metavar="URL",
    ),
    Opt(
        "--mtmcs-batch-size",
        "dialogues per generation batch for hf: models, or auto (default: auto)",
        default="auto",
        metavar="N|auto",
    ),
    Opt(
        "--mtmcs-concurrency",
        "requests in flight for openai: models, for the whole run: with xdist each worker keeps "
        f"its share, N // workers (default: {defaults.CONCURRENCY})",
        kind="int",
        default=defaults.CONCURRENCY,
        metavar="N",
    ),
    Opt(
        "--mtmcs-base-url",
        "base URL of an OpenAI-compatible server; several replicas comma-separated "
        "(default: $OPENAI_BASE_URL)",
        metavar="URL",
    ),
    Opt(
        "--mtmcs-dtype",
        "torch dtype for hf: models: auto, bfloat16, float16, float32 (default: auto)",
        default="auto",
        choices=("auto", "bfloat16", "float16", "float32"),
    ),
    Opt(
        "--mtmcs-device",
        "device for hf: models, e.g. cpu, cuda:0 (default: the worker's GPU, else CPU)",
        metavar="DEVICE",
    ),
    Opt(
        "--mtmcs-trust-remote-code",
        "allow hf: models to run code from their repository (default: off)",
        kind="bool",
        default=False,
    ),
    Opt(
        "--mtmcs-timeout",
        f"seconds before one openai: request times out (default: {defaults.TIMEOUT_S:g})",
        kind="float",
        default=defaults.TIMEOUT_S,
        metavar="S",
    ),
    Opt(
        "--mtmcs-retries",
        f"retries of a failing openai: request, with backoff (default: {defaults.RETRIES})",
        kind="int",
        default=defaults.RETRIES,
        metavar="N",
    ),
    Opt(
        "--mtmcs-cache",
        "response cache file, SQLite (default: mtmcs/responses.sqlite in the pytest cache dir)",
        metavar="PATH",
    ),
    Opt(
        "--mtmcs-no-cache",
        "do not read or write the response cache (default: off)",
        kind="bool",
        default=False,
    ),
    Opt(
        "--mtmcs-lookahead",
        "dialogues each process may generate ahead of the test being run; auto: for openai: "
        "models C + 8 x L x C / R (C this process's concurrency, L the most round trips one "
        "dialogue takes in sequence, R the mean requests per dialogue: the servers stay busy "
        f"while pytest waits for a slow dialogue), else {defaults.ROUNDS_LOOKAHEAD} "
        f"(default: {defaults.LOOKAHEAD})",
        default=defaults.LOOKAHEAD,
        metavar="N|auto",
    ),
    Opt(
        "--mtmcs-schedule",
        "how dialogues advance: auto (a dialogue's next turn is sent as soon as its reply is "
        "in, keeping --mtmcs-concurrency requests in flight, for backends that take requests "
        "one by one such as openai:; lock-step rounds for batching backends such as hf:) or "
        "rounds (lock-step rounds for every backend, each round waiting for its slowest reply) "
        f"(default: {defaults.SCHEDULE})",
        default=defaults.SCHEDULE,
        choices=("auto", "rounds"),
    ),
    Opt(
        "--mtmcs-gate",
        "what fails the run: buckets (bucket regressions and threshold "
        "breaches), items (any regressed or, with no baseline, failing dialogue), or both "
        f"(default: {defaults.GATE})",
        default=defaults.GATE,
        choices=("buckets", "items", "both"),
    ),
    Opt(
        "--mtmcs-baseline",
        "compare with these stored baselines, NAME[,NAME...]; with "
        "--snapshot-update, record this run as the first NAME (default: none)",
        metavar="NAMES",
    ),
    Opt(
        "--mtmcs-baseline-dir",
        "folder holding baselines/<name>/ (default: baselines next to the rootdir)",
        metavar="PATH",
    ),
    Opt(
        "--mtmcs-adjudications",
        "people's labels on exact replies (written by pytest-mtmcs review), applied instead of "
        "the judge's; a named file must exist (default: adjudications.jsonl in the baseline "
        "folder, when there is one)",
        metavar="PATH",
    ),
    Opt(
        "--mtmcs-max-drop",
        f"largest tolerated drop of a bucket metric against a baseline (default: {defaults.MAX_DROP})",
        kind="float",
        default=defaults.MAX_DROP,
        metavar="X",
    ),
    Opt(
        "--mtmcs-alpha",
        f"significance level of the paired test, Holm-corrected (default: {defaults.ALPHA})",
        kind="float",
        default=defaults.ALPHA,
        metavar="X",
    ),
    Opt(
        "--mtmcs-fail-inconclusive",
        "fail the gate on an inconclusive bucket cell too: one whose drop exceeds "
        "--mtmcs-max-drop without being significant (default: off: such a cell is shown as "
        "inconclusive with what would decide it, and the run passes)",
        kind="bool",
        default=False,
    ),
    Opt(
        "--mtmcs-allow-missing-suite",
        "a suite of this run that a named baseline has no results for is reported as new "
        "instead of stopping the run (default: off: it is a usage error, since the gate could "
        "not compare it)",
        kind="bool",
        default=False,
    ),
    Opt(
        "--mtmcs-allow-mismatch",
        "compare with a baseline recorded with another judge, suite "
        "or decoding settings, with a warning (default: refuse)",
        kind="bool",
        default=False,
    ),
    Opt(
        "--mtmcs-max-judge-errors",
        f"judge errors tolerated before the gate fails (default: {defaults.MAX_JUDGE_ERRORS})",
        kind="int",
        default=defaults.MAX_JUDGE_ERRORS,
        metavar="N",
    ),
    Opt(
        "--mtmcs-report",
        "write results.parquet/csv, transcripts.jsonl, summary.md and "
        "report.html to this folder (default: none)",
        metavar="DIR",
    ),
    Opt(
        "--mtmcs-shard",
        "run shard K of N of the dialogues (1-based; twins together, balanced by cost, the same "
        "split on every machine), or env to read CI_NODE_INDEX/CI_NODE_TOTAL; needs "
        "--mtmcs-report; merge the shards' folders with pytest-mtmcs merge (default: all)",
        metavar="K/N|env",
    ),
    Opt(
        "--mtmcs-splits",
        "MTMCS-Bench splits to run, comma-separated (default: all present)",
        metavar="LIST",
    ),
    Opt(
        "--mtmcs-modalities", "modalities to run: multimodal, text (default: both)", metavar="LIST"
    ),
    Opt(
        "--mtmcs-variant-images",
        "MTMCS-Bench: also run each row's 3 variant images (default: off)",
        kind="bool",
        default=False,
    ),
    Opt(
        "--mtmcs-captions",
        "MTMCS-Bench: image captions shown to text judges where the image was, a JSON object "
        "from row id to caption such as the benchmark's MTMCS_Bench_captions.json (default: "
        "that file in the release folder or its parent, if there; else none)",
        metavar="FILE",
    ),
    Opt(
        "--mtmcs-progress",
        "progress lines on long runs: auto (off under -q), on, off (default: auto)",
        default="auto",
        choices=("auto", "on", "off"),
    ),
)

BY_FLAG = {o.flag: o for o in OPTIONS}


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup(GROUP, "multi-turn multimodal contextual safety (pytest-mtmcs)")
    for o in OPTIONS:
        kwargs: dict[str, Any] = {"dest": o.dest, "help": o.help}
        if o.kind == "bool":
            kwargs["action"] = "store_true"
            kwargs["default"] = None
        elif o.kind == "list":
            kwargs["action"] = "append"
            kwargs["default"] = None
        else:
            kwargs["default"] = None
            if o.metavar:
                kwargs["metavar"] = o.metavar
            if o.choices:
                kwargs["choices"] = o.choices
        group.addoption(o.flag, **kwargs)
        ini_type: Literal["bool", "linelist", "string"] = (
            "bool" if o.kind == "bool" else "linelist" if o.kind == "list" else "string"
        )
        parser.addini(o.ini, f"[{o.flag}] {o.help}", type=ini_type, default=None)


def raw(config: pytest.Config, flag: str) -> Any:
    """The value of an option: command line, else ini, else None (suite defaults come next)."""
    o = BY_FLAG[flag]
    value = config.getoption(o.dest)
    if value is not None:
        return tuple(value) if o.kind == "list" else value
    ini = config.getini(o.ini)
    if ini in (None, "", []):
        return None
    if o.kind == "list":
        return tuple(ini)
    return ini


def value(config: pytest.Config, flag: str) -> Any:
    """raw(), with the built-in default and type conversion."""
    o = BY_FLAG[flag]
    v = raw(config, flag)
    if v is None:
        return o.default
    origin = f"{flag}" if config.getoption(o.dest) is not None else f"ini key {o.ini}"
    try:
        if o.kind == "int":
            return int(v)
        if o.kind == "float":
            return float(v)
        if o.kind == "bool":
            return v if isinstance(v, bool) else str(v).strip().lower() in ("1", "true", "yes")
    except ValueError:
        raise ConfigError(f"{origin}={v!r}: expected a {o.kind}") from None
    if o.choices and v not in o.choices:
        raise ConfigError(f"{origin}={v!r}: expected one of {', '.join(o.choices)}")
    return v


def batch_size(config: pytest.Config) -> int | None:
    v = value(config, "--mtmcs-batch-size")
    if v in (None, "auto"):
        return None
    try:
        n = int(v)
    except ValueError:
        raise ConfigError(
            f"--mtmcs-batch-size={v!r}: expected a positive integer or auto"
        ) from None
    if n < 1:
        raise ConfigError(f"--mtmcs-batch-size={v!r}: expected a positive integer or auto")
    return n


def lookahead(config: pytest.Config) -> int | None:
    """--mtmcs-lookahead as a number, or None for auto (`engine.schedule` decides)."""
    v = value(config, "--mtmcs-lookahead")
    if v in (None, "auto"):
        return None
    try:
        n = int(v)
    except ValueError:
        raise ConfigError(f"--mtmcs-lookahead={v!r}: expected a positive integer or auto") from None
    if n < 1:
        raise ConfigError(f"--mtmcs-lookahead={v!r}: expected a positive integer or auto")
    return n


def split_list(v: str | None) -> tuple[str, ...] | None:
    if not v:
        return None
    return tuple(p.strip() for p in str(v).split(",") if p.strip())


def markdown_table() -> str:
    """The README's options table, generated from OPTIONS so the two cannot drift apart."""
    import re

    rows = ["| option | ini key | meaning | default |", "|---|---|---|---|"]
    for o in OPTIONS:
        m = re.search(r"\s*\(default: (.*)\)\s*$", o.help)
        meaning = o.help[: m.start()] if m else o.help
        default = m.group(1) if m else "-"
        arg = o.metavar or ("|".join(o.choices) if o.choices else "")
        flag = f"{o.flag}={arg}" if arg else o.flag
        cells = [f"`{flag}`", f"`{o.ini}`", meaning, default]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"
