"""The run's settings: every option read once, checked, and frozen, at configure time.

Nothing downstream reads pytest options again: the roles of a run (collecting suites, running
dialogues, ending the run) receive this object, or the small plain objects it makes
(`BackendOptions`, `EndOptions`, the `BaselineSet`). A bad value fails here, in a second, naming
the option (or the ini key it came from), before any model loads.

Precedence: command line > ini key > the suite's `suite.toml [defaults]` > built-in default
(`defaults.py`). Suite defaults are applied per suite by `SuiteStore`; everything else is here.
Paths and specs have `~` and environment variables expanded (`paths.py`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mtmcs import defaults
from pytest_mtmcs.errors import ConfigError
from pytest_mtmcs.harness import options as opts
from pytest_mtmcs.paths import expand_path, expand_spec

if TYPE_CHECKING:
    import pytest

    from pytest_mtmcs.backends import BackendOptions
    from pytest_mtmcs.baseline.store import BaselineSet
    from pytest_mtmcs.outcome.finish import EndOptions
    from pytest_mtmcs.outcome.shards import Shard

# Model judges that need an OpenAI-compatible server of their own.
MODEL_JUDGES = ("rubric", "safe-unsafe", "guard")


@dataclass(frozen=True)
class Settings:
    """What one pytest run was asked to do. Plain data: built by `from_config`, read-only after."""

    model: str | None
    judge: str
    cascade_threshold: float
    # off | flips: a cascade also sends the replies that decide a flip to its model judge.
    escalate: str
    guards: tuple[str, ...]
    buckets: str | None
    thresholds: tuple[str, ...]
    threshold_origin: str
    image_placement: str | None
    max_new_tokens: int | None
    max_pixels: int | None
    batch_size: int | None
    # This process's share of --mtmcs-concurrency (the run's total: xdist workers split it).
    concurrency: int
    base_url: str | None
    judge_base_url: str | None
    guard_base_url: str | None
    dtype: str
    device: str | None
    timeout_s: float
    retries: int
    trust_remote_code: bool
    cache_path: str | None
    no_cache: bool
    lookahead: int | None  # None: auto (`engine.schedule`)
    schedule: str
    gate: str
    max_drop: float
    alpha: float
    allow_mismatch: bool
    rejudge: bool
    max_judge_errors: int
    fail_inconclusive: bool
    allow_missing_suite: bool
    baseline_names: tuple[str, ...]
    baseline_root: Path
    # The adjudications file (people's labels on exact replies); `adjudications_named`: the user
    # named it (then it must exist), rather than the default beside the baselines.
    adjudications_path: Path
    adjudications_named: bool
    baseline_transcripts: bool
    updating: bool
    report_dir: Path | None
    shard: Shard | None
    suite_specs: tuple[str, ...]
    splits: tuple[str, ...] | None
    modalities: tuple[str, ...] | None
    variant_images: bool
    # --mtmcs-captions, absolute (None: the importer looks beside the release).
    captions: str | None
    # --mtmcs-judge-images: model judges are sent the image instead of its caption.
    judge_images: bool
    progress: str
    # -k, -m or node ids: only some of the suites' dialogues may run.
    partial: bool
    collect_only: bool
    quiet: bool
    root: Path
    worker_id: str | None

    # -- building ------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        """Reads and checks every option; a bad one raises ConfigError naming it."""
        from pytest_mtmcs.analysis.buckets import Buckets
        from pytest_mtmcs.analysis.thresholds import parse_threshold
        from pytest_mtmcs.backends import REGISTRY as BACKENDS
        from pytest_mtmcs.baseline.store import baseline_path
        from pytest_mtmcs.engine.schedule import process_concurrency
        from pytest_mtmcs.judges import REGISTRY as JUDGES
        from pytest_mtmcs.outcome.shards import parse_shard

        def value(flag: str) -> Any:
            return opts.value(config, flag)

        def raw(flag: str) -> Any:
            return opts.raw(config, flag)

        def origin(flag: str) -> str:
            o = opts.BY_FLAG[flag]
            return flag if config.getoption(o.dest) is not None else f"ini {o.ini}"

        root = Path(config.rootpath)
        model = _spec(value("--mtmcs-model"))
        if model is not None:
            prefix, sep, _ = model.partition(":")
            if not sep or prefix not in BACKENDS.available():
                raise ConfigError(
                    f"{origin('--mtmcs-model')}={model!r}: expected PREFIX:VALUE with PREFIX one "
                    f"of {BACKENDS.known_text()}"
                )
        judge = _spec(value("--mtmcs-judge")) or defaults.JUDGE
        if judge.split(":", 1)[0] not in JUDGES.available():
            raise ConfigError(
                f"{origin('--mtmcs-judge')}={judge!r}: unknown judge; known: {JUDGES.known_text()}"
            )
        buckets = raw("--mtmcs-buckets")
        if buckets:
            Buckets.parse(str(buckets), origin("--mtmcs-buckets"))
        thresholds = tuple(raw("--mtmcs-threshold") or ())
        threshold_origin = origin("--mtmcs-threshold")
        for spec in thresholds:
            parse_threshold(spec, threshold_origin)
        for flag in ("--mtmcs-max-new-tokens", "--mtmcs-concurrency"):
            n = value(flag)
            if n is not None and int(n) < 1:
                raise ConfigError(f"{origin(flag)}={n}: expected a positive integer")
        for flag in ("--mtmcs-max-drop", "--mtmcs-alpha", "--mtmcs-cascade-threshold"):
            x = float(value(flag))
            if not 0.0 <= x <= 1.0:
                raise ConfigError(f"{origin(flag)}={x}: expected a value in [0.0, 1.0]")
        names = tuple(
            n.strip() for n in str(value("--mtmcs-baseline") or "").split(",") if n.strip()
        )
        folder = value("--mtmcs-baseline-dir")
        baseline_root = Path(expand_path(str(folder))) if folder else root / "baselines"
        if not baseline_root.is_absolute():
            baseline_root = root / baseline_root
        for n in names:
            baseline_path(baseline_root, n, "x")  # a bad name fails before anything runs
        escalate = str(value("--mtmcs-escalate"))
        if escalate != "off" and judge.partition(":")[0] != "cascade":
            raise ConfigError(
                f"{origin('--mtmcs-escalate')}={escalate}: escalating needs a model judge to "
                f"escalate to: pass --mtmcs-judge=cascade:LOCAL,MODEL_JUDGE (this run's judge is "
                f"{judge!r})"
            )
        adjudications = value("--mtmcs-adjudications")
        if adjudications:
            adjudications_path = Path(expand_path(str(adjudications)))
            if not adjudications_path.is_absolute():
                cli = config.getoption(opts.BY_FLAG["--mtmcs-adjudications"].dest) is not None
                adjudications_path = Path(
                    os.path.normpath(
                        (Path(config.invocation_params.dir) if cli else root) / adjudications_path
                    )
                )
        else:
            from pytest_mtmcs.baseline.adjudications import default_path

            adjudications_path = default_path(baseline_root)
        report = value("--mtmcs-report")
        report_dir = Path(expand_path(str(report))) if report else None
        if report_dir is not None and not report_dir.is_absolute():
            # As pytest's own --junitxml: a command-line path is relative to where pytest was
            # started; an ini key's to the rootdir (where the ini file is).
            cli = config.getoption(opts.BY_FLAG["--mtmcs-report"].dest) is not None
            report_dir = (Path(config.invocation_params.dir) if cli else root) / report_dir
        captions = _file_option(config, "--mtmcs-captions", origin, root)
        shard_text = raw("--mtmcs-shard")
        shard = parse_shard(str(shard_text), origin("--mtmcs-shard")) if shard_text else None
        cache = value("--mtmcs-cache")
        suite_specs = tuple(expand_spec(s) for s in (raw("--mtmcs-suite") or ()))
        _check_release_folders(config, suite_specs)
        wi = getattr(config, "workerinput", None)
        opt = config.option
        settings = cls(
            model=model,
            judge=judge,
            cascade_threshold=float(value("--mtmcs-cascade-threshold")),
            escalate=escalate,
            guards=tuple(raw("--mtmcs-guard") or ()),
            buckets=str(buckets) if buckets else None,
            thresholds=thresholds,
            threshold_origin=threshold_origin,
            image_placement=raw("--mtmcs-image-placement"),
            max_new_tokens=value("--mtmcs-max-new-tokens"),
            max_pixels=value("--mtmcs-max-pixels"),
            batch_size=opts.batch_size(config),
            concurrency=process_concurrency(int(value("--mtmcs-concurrency")), *_worker_slot(wi)),
            base_url=value("--mtmcs-base-url"),
            judge_base_url=value("--mtmcs-judge-base-url"),
            guard_base_url=value("--mtmcs-guard-base-url"),
            dtype=str(value("--mtmcs-dtype")),
            device=value("--mtmcs-device"),
            timeout_s=float(value("--mtmcs-timeout")),
            retries=int(value("--mtmcs-retries")),
            trust_remote_code=bool(value("--mtmcs-trust-remote-code")),
            cache_path=expand_path(str(cache)) if cache else None,
            no_cache=bool(value("--mtmcs-no-cache")),
            lookahead=opts.lookahead(config),
            schedule=str(value("--mtmcs-schedule")),
            gate=str(value("--mtmcs-gate")),
            max_drop=float(value("--mtmcs-max-drop")),
            alpha=float(value("--mtmcs-alpha")),
            allow_mismatch=bool(value("--mtmcs-allow-mismatch")),
            rejudge=bool(value("--mtmcs-rejudge")),
            max_judge_errors=int(value("--mtmcs-max-judge-errors") or 0),
            fail_inconclusive=bool(value("--mtmcs-fail-inconclusive")),
            allow_missing_suite=bool(value("--mtmcs-allow-missing-suite")),
            baseline_names=names,
            baseline_root=baseline_root,
            adjudications_path=adjudications_path,
            adjudications_named=bool(adjudications),
            baseline_transcripts=bool(value("--mtmcs-baseline-transcripts")),
            updating=bool(getattr(opt, "update_snapshots", False)),
            report_dir=report_dir,
            shard=shard,
            suite_specs=suite_specs,
            splits=opts.split_list(value("--mtmcs-splits")),
            modalities=opts.split_list(value("--mtmcs-modalities")),
            variant_images=bool(value("--mtmcs-variant-images")),
            captions=captions,
            judge_images=bool(value("--mtmcs-judge-images")),
            progress=str(value("--mtmcs-progress")),
            partial=bool(opt.keyword or opt.markexpr) or any("::" in str(a) for a in config.args),
            collect_only=bool(opt.collectonly),
            quiet=opt.verbose < 0,
            root=root,
            worker_id=wi.get("workerid") if wi else None,
        )
        settings.check_shard()
        settings.check_servers()
        settings.check_judge_images()
        return settings

    # -- checks that need more than one option -------------------------------------------

    def check_shard(self) -> None:
        """A shard writes no baseline and needs a report folder: the merge reads it."""
        if self.shard is None:
            return
        if self.updating:
            raise ConfigError(
                f"--mtmcs-shard={self.shard} with --snapshot-update: a shard never records a "
                "baseline; record it from the merged shards: pytest-mtmcs merge DIR... "
                "--update-baseline NAME"
            )
        if self.report_dir is None:
            raise ConfigError(
                f"--mtmcs-shard={self.shard} needs --mtmcs-report=DIR: the folder pytest-mtmcs "
                "merge reads"
            )

    def check_servers(self) -> None:
        """Every OpenAI-compatible client the run will build has a base URL."""
        if self.model and self.model.split(":", 1)[0] == "openai" and not self.base_url_of("model"):
            raise ConfigError(
                f"--mtmcs-model={self.model}: the OpenAI-compatible server needs a base URL: pass "
                f"--mtmcs-base-url=http://HOST:8000/v1 or set {defaults.ENV_BASE_URL}"
            )
        self._check_judge(self.judge)

    def check_judge_images(self) -> None:
        """`--mtmcs-judge-images` needs a judge that sends prompts to a model."""
        if self.judge_images and not _sends_to_model_judge(self.judge):
            raise ConfigError(
                f"--mtmcs-judge-images with --mtmcs-judge={self.judge}: only a model judge "
                "(rubric:, safe-unsafe:, guard:, or a cascade ending in one) can be sent images"
            )

    def _check_judge(self, spec: str) -> None:
        name, _, rest = spec.partition(":")
        if name == "cascade":
            # cascade:LOCAL,MODEL_JUDGE: both halves are judge specs of their own.
            for part in rest.split(",", 1):
                if part.strip() and part.strip().partition(":")[0] != "cascade":
                    self._check_judge(part.strip())
            return
        if name in MODEL_JUDGES:
            from pytest_mtmcs.judges.model_judges import check_judge_spec

            check_judge_spec(name, rest, self.backend_options("judge"))

    # -- what the run's parts receive ----------------------------------------------------

    @property
    def is_worker(self) -> bool:
        return self.worker_id is not None

    def base_url_of(self, server: str) -> str | None:
        url = {"model": self.base_url, "judge": self.judge_base_url, "guard": self.guard_base_url}[
            server
        ]
        return url or os.environ.get(defaults.ENV_BASE_URL) or None

    def backend_options(self, server: str = "model", device: str | None = None) -> BackendOptions:
        """Options of the backend of `server` ("model", "judge" or "guard"); the base URL is that
        server's option (`--mtmcs-base-url`, `--mtmcs-judge-base-url`, ...)."""
        from pytest_mtmcs.backends import BackendOptions

        return BackendOptions(
            batch_size=self.batch_size,
            concurrency=self.concurrency,
            base_url={
                "model": self.base_url,
                "judge": self.judge_base_url,
                "guard": self.guard_base_url,
            }[server],
            dtype=self.dtype,
            device=self.device if device is None else device,
            timeout_s=self.timeout_s,
            max_retries=self.retries,
            trust_remote_code=self.trust_remote_code,
            base_url_option={
                "model": "--mtmcs-base-url",
                "judge": "--mtmcs-judge-base-url",
                "guard": "--mtmcs-guard-base-url",
            }[server],
        )

    def baseline_set(self) -> BaselineSet:
        from pytest_mtmcs.baseline.store import BaselineSet

        return BaselineSet(self.baseline_root, list(self.baseline_names), rewrite=self.updating)

    def end_options(self, *, partial: bool | None = None) -> EndOptions:
        """The options the end of the run reads, as plain data (`outcome.finish.EndOptions`)."""
        from pytest_mtmcs.outcome.finish import EndOptions

        return EndOptions(
            gate=self.gate,
            max_drop=self.max_drop,
            alpha=self.alpha,
            allow_mismatch=self.allow_mismatch,
            rejudge=self.rejudge,
            max_judge_errors=self.max_judge_errors,
            fail_inconclusive=self.fail_inconclusive,
            allow_missing_suite=self.allow_missing_suite,
            thresholds=self.thresholds,
            threshold_origin=self.threshold_origin,
            buckets=self.buckets,
            update_baseline=self.updating,
            partial=self.partial if partial is None else partial,
            baseline_transcripts=self.baseline_transcripts,
            report_dir=str(self.report_dir) if self.report_dir is not None else None,
            guard=bool(self.guards),
            root=self.root,
            shard=self.shard,
        )

    def with_partial(self, partial: bool) -> Settings:
        return replace(self, partial=partial)


def _worker_slot(wi: Any) -> tuple[int | None, int | None]:
    """(this xdist worker's index, the number of workers), or (None, None) outside xdist."""
    if not wi or "workerid" not in wi:
        return None, None
    count = int(wi["workercount"]) if "workercount" in wi else None
    return int(str(wi["workerid"]).removeprefix("gw")), count


def _sends_to_model_judge(spec: str) -> bool:
    """Whether the judge spec has a model judge in it (`--mtmcs-judge-images` applies)."""
    name, _, rest = spec.partition(":")
    if name == "cascade":
        return any(_sends_to_model_judge(p.strip()) for p in rest.split(",", 1) if p.strip())
    return name in MODEL_JUDGES


def _file_option(config: pytest.Config, flag: str, origin: Any, root: Path) -> str | None:
    """An existing file named by an option, absolute: a command-line path is relative to where
    pytest was started, an ini key's to the rootdir (as --mtmcs-report)."""
    given = opts.value(config, flag)
    if not given:
        return None
    path = Path(expand_path(str(given)))
    if not path.is_absolute():
        cli = config.getoption(opts.BY_FLAG[flag].dest) is not None
        path = (Path(config.invocation_params.dir) if cli else root) / path
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "no such file"
        raise ConfigError(f"{origin(flag)}={given}: {what}")
    return str(path)


def _spec(v: Any) -> str | None:
    return expand_spec(str(v)) if v else None


def _check_release_folders(config: pytest.Config, suite_specs: tuple[str, ...]) -> None:
    """A benchmark release folder given as a native suite (a `--mtmcs-suite` path without its
    importer prefix, or a test path) is a usage error that names the spec to use: loaded as a
    native suite it would only fail as `missing suite.toml`."""
    from pytest_mtmcs.suite.specs import misnamed_release

    for spec in suite_specs:
        hint = misnamed_release(spec)
        if hint is not None:
            raise ConfigError(hint)
    # Only paths the user named (arguments or testpaths), never folders found below them: a
    # release sample kept under tests/ is data, not a mistake.
    if config.args_source == config.ArgsSource.INVOCATION_DIR:
        return
    for arg in config.args:
        path = str(arg).split("::", 1)[0]
        if not path or path.startswith("-"):
            continue
        full = path if os.path.isabs(path) else os.path.join(config.invocation_params.dir, path)
        hint = misnamed_release(full, shown=path)
        if hint is not None:
            raise ConfigError(hint)
