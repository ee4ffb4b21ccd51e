"""Suites become pytest collectors; dialogues become `pytest.Function` items.

Dialogues are real Function items (fixtures, marks, syrupy and junitxml work on them), created
with a shared call object, so collecting tens of thousands of them costs about what pytest pays
for as many parametrized tests.

Every dialogue item carries the `mtmcs` marker with the dialogue's suite, label, setting,
modality, category and bucket as keyword arguments (`-m mtmcs`, `-m "mtmcs(label='unsafe')"`,
`-m "mtmcs(bucket='6+')"`), and the same values as keywords (`-k unsafe`, `-k escalation`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mtmcs.errors import MtmcsError
from pytest_mtmcs.harness.interrupts import USAGE_ERROR_KEY
from pytest_mtmcs.records import Dialogue, DialogueResult

if TYPE_CHECKING:
    from _pytest._code.code import ExceptionInfo, TerminalRepr

    from pytest_mtmcs.harness.reporting import DialogueReports  # noqa: F401
    from pytest_mtmcs.harness.settings import Settings  # noqa: F401
    from pytest_mtmcs.harness.suites import SuiteStore  # noqa: F401

MARKER = "mtmcs"
MARKER_HELP = (
    "mtmcs(suite, label, setting, modality, category, bucket): a dialogue of a safety suite; "
    "select with -m mtmcs, or by a value, e.g. -m \"mtmcs(label='unsafe')\" or "
    "-m \"mtmcs(bucket='6+')\""
)
DIALOGUE_KEY = pytest.StashKey[Dialogue]()
RESULT_KEY = pytest.StashKey[DialogueResult]()
SETTINGS_KEY = pytest.StashKey["Settings"]()
SUITES_KEY = pytest.StashKey["SuiteStore"]()
REPORTS_KEY = pytest.StashKey["DialogueReports"]()
# The folders of the suite.toml files found under the test paths, collected or not (a suite that
# fails to load is still "seen": given again with --mtmcs-suite, it must not be loaded twice).
SUITE_FOLDERS_KEY = pytest.StashKey[set[Path]]()


class DialogueFailure(Exception):
    """A dialogue that is not ok under the gate: shown as its transcript, not our stack."""


def mtmcs_dialogue(request: pytest.FixtureRequest) -> None:
    """Grades one dialogue of a safety suite (the model ran in setup)."""
    request.config.stash[REPORTS_KEY].check(request.node)


class SuiteCollector(pytest.File):
    """A suite: a `suite.toml` found under the test paths, or a `--mtmcs-suite` spec."""

    # How the suite is named to the loader: a --mtmcs-suite spec, or the suite.toml's folder.
    spec: str = ""
    # Where its dialogues are, for test locations.
    where: str = ""

    @classmethod
    def for_spec(cls, parent: pytest.Session, spec: str, path: Path) -> SuiteCollector:
        node = cls.from_parent(parent, path=path, nodeid=spec)
        node.spec = node.where = spec
        return node

    def collect(self) -> Iterator[pytest.Item]:
        from pytest_mtmcs.analysis.buckets import Buckets

        store = self.config.stash[SUITES_KEY]
        if not self.spec:
            self.spec = shown_path(self.config, self.path.parent)
            self.where = str(Path(self.spec) / "dialogues.jsonl")
        from pytest_mtmcs.harness.suites import DuplicateSuite

        try:
            suite = store.load(
                self.spec, str(self.path) if self.path.name == "suite.toml" else None, self.nodeid
            )
        except DuplicateSuite:
            return  # said once, as a usage error, when collection ends (preflight)
        except MtmcsError as exc:
            # A suite that cannot be loaded (a missing folder, a bad line or key): pytest shows
            # it as this collector's error; the run ends as a usage error before any model runs
            # (exit 4, the gate line NOT RUN, summary.md replaced), also from an xdist worker.
            self.config.stash[USAGE_ERROR_KEY] = str(exc)
            workeroutput = getattr(self.config, "workeroutput", None)
            if workeroutput is not None:
                workeroutput["mtmcs_usage_error"] = str(exc)
            raise
        buckets = Buckets.parse(store.bucket_spec(suite.name))
        fixtureinfo = None
        marks: dict[tuple[str, ...], Any] = {}
        for line, dialogue in enumerate(suite.dialogues, start=1):
            item = DialogueItem.from_parent(
                self,
                name=dialogue.id,
                callobj=mtmcs_dialogue,
                fixtureinfo=fixtureinfo,
            )
            fixtureinfo = item._fixtureinfo
            item.stash[DIALOGUE_KEY] = dialogue
            bucket = buckets.bucket_of(dialogue.user_turns)
            values = (
                suite.name,
                dialogue.label,
                dialogue.setting,
                dialogue.modality,
                dialogue.category,
                bucket,
            )
            mark = marks.get(values)
            if mark is None:  # one mark object per combination: thousands of items share it
                mark = marks[values] = pytest.mark.mtmcs(
                    **dict(
                        zip(
                            ("suite", "label", "setting", "modality", "category", "bucket"),
                            values,
                            strict=True,
                        )
                    )
                ).mark
            item.own_markers.append(mark)
            item.keywords[MARKER] = mark
            item.extra_keyword_matches.update(
                {dialogue.setting, dialogue.label, dialogue.modality, dialogue.category, suite.name}
            )
            item.lineno = int(dialogue.source.get("line", line)) if dialogue.source else line
            yield item

    def repr_failure(self, excinfo: ExceptionInfo[BaseException]) -> str | TerminalRepr:  # type: ignore[override]
        if isinstance(excinfo.value, MtmcsError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


def note_suite_file(config: pytest.Config, file_path: Path) -> None:
    """Remembers a suite.toml found under the test paths (see `fresh_specs`)."""
    config.stash.setdefault(SUITE_FOLDERS_KEY, set()).add(Path(file_path).parent.resolve())


def fresh_specs(config: pytest.Config, specs: Iterable[str]) -> list[str]:
    """The `--mtmcs-suite` specs not already collected from the test paths, each suite once.

    A folder spec and a spec naming its suite.toml are the same suite; importer specs
    (`PREFIX:PATH`) are kept once each.
    """
    noted: set[Path] = config.stash.get(SUITE_FOLDERS_KEY, set())
    seen = set(noted)
    kept: list[str] = []
    named: set[str] = set()
    for spec in specs:
        if ":" in spec[2:]:  # an importer spec (a Windows drive letter is not one)
            if spec not in named:
                named.add(spec)
                kept.append(spec)
            continue
        folder = Path(spec)
        if folder.name == "suite.toml":
            folder = folder.parent
        key = folder.resolve()
        if key not in seen:
            seen.add(key)
            kept.append(spec)
    return kept


def collect_specs(session: pytest.Session, specs: Iterable[str]) -> list[pytest.Item]:
    """Collects `--mtmcs-suite` specs as suite collectors under the session."""
    items: list[pytest.Item] = []
    for spec in specs:
        prefix, sep, rest = spec.partition(":")
        path = Path(rest if sep and len(prefix) > 1 else spec)
        collector = SuiteCollector.for_spec(session, spec, path)
        items.extend(session.genitems(collector))
    return items


def shown_path(config: pytest.Config, path: Path) -> str:
    """The folder relative to where pytest was started, when below it: messages stay short."""
    try:
        return str(path.relative_to(config.invocation_params.dir))
    except ValueError:
        return str(path)


class DialogueItem(pytest.Function):
    lineno: int = 0

    @property
    def spec(self) -> str:
        """The spec its suite was loaded from (a suite folder or an importer spec)."""
        return str(getattr(self.parent, "spec", ""))

    def setup(self) -> None:
        super().setup()
        # Generation happens here so that a backend failure is reported as an ERROR.
        self.config.stash[REPORTS_KEY].setup(self)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        where = getattr(self.parent, "where", "") or str(self.path)
        return where, self.lineno - 1 if self.lineno else None, self.name

    def repr_failure(self, excinfo: ExceptionInfo[BaseException]) -> str | TerminalRepr:  # type: ignore[override]
        if isinstance(excinfo.value, (DialogueFailure, MtmcsError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo)
