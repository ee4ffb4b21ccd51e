"""results.csv keeps its columns' meaning: read with pandas' defaults, `intent_bits` stays the
per-question string it is; read with the dtypes docs/reports.md gives, every column equals
results.parquet's; and `pytest-mtmcs compare` reads tables written before the `b` prefix too."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from pytest_mtmcs.outcome.results_table import RESULT_COLUMNS, results_from_rows

ROOT = Path(__file__).resolve().parents[1]
REPORTS_DOC = ROOT / "docs" / "reports.md"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report of the bundled suite: a scripted model answering every intent question wrongly
    (bits all 0: digits alone would read as the number 0), one baseline column."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("csv")
    shutil.copytree(ROOT / "suites", root / "suites")
    shutil.copytree(ROOT / "baselines", root / "baselines")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "suites", "-q", "-p", "no:cacheprovider",
         "--mtmcs-no-cache", "--mtmcs-model=scripted:comply-from=4,wrong-intent",
         "--mtmcs-baseline=tiny-qwen2-vl", "--mtmcs-report=out"],
        cwd=root, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert (root / "out" / "results.csv").is_file(), proc.stdout + proc.stderr
    return root / "out"


def documented_read_csv(path: Path) -> Any:
    """What docs/reports.md's code that reads results.csv gives for `path`."""
    text = REPORTS_DOC.read_text(encoding="utf-8")
    section = text.split("### Reading `results.csv`", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    assert '"report/results.csv"' in code
    namespace: dict[str, Any] = {}
    exec(code.replace('"report/results.csv"', repr(str(path))), namespace)
    return namespace["df"]


def values(series: Any) -> list[Any]:
    """Cell values with every kind of missing value as None."""
    import pandas as pd

    return [None if pd.isna(v) else v for v in series.astype(object)]


def test_read_with_defaults_intent_bits_is_the_string_written(report: Path) -> None:
    import pandas as pd

    parquet = pd.read_parquet(report / "results.parquet")
    csv = pd.read_csv(report / "results.csv")
    assert list(csv.columns) == list(parquet.columns)
    assert list(parquet.columns[: len(RESULT_COLUMNS)]) == list(RESULT_COLUMNS)
    # wrong-intent: every answer is wrong, the bits are zeros: "b000", never the number 0.
    assert set(parquet["intent_bits"]) == {"b" + "0" * n for n in set(parquet["intent_total"])}
    assert not pd.api.types.is_numeric_dtype(csv["intent_bits"])
    assert values(csv["intent_bits"]) == values(parquet["intent_bits"])
    assert all(
        len(b) == n + 1 for b, n in zip(csv["intent_bits"], csv["intent_total"], strict=True)
    )
    # The columns the defaults keep, with their type.
    for column in (
        "id",
        "bucket",
        "verdict",
        "turn_labels",
        "flip",
        "baseline_tiny-qwen2-vl_verdict",
    ):
        assert values(csv[column]) == values(parquet[column]), column
    assert csv["ok"].dtype == bool and pd.api.types.is_integer_dtype(csv["user_turns"])
    # What the defaults cannot keep, and the docs say so: an integer column with blanks.
    assert str(parquet["risk_turn"].dtype) == "Int64"
    assert csv["risk_turn"].dtype == float
    assert "`risk_turn` (an integer with blanks" in REPORTS_DOC.read_text(encoding="utf-8")


def test_the_documented_reading_equals_the_parquet_table(report: Path) -> None:
    import pandas as pd

    parquet = pd.read_parquet(report / "results.parquet")
    csv = documented_read_csv(report / "results.csv")
    assert list(csv.columns) == list(parquet.columns)
    assert str(csv["risk_turn"].dtype) == "Int64"
    for column in parquet.columns:
        if column == "latency_s":  # a float through text: equal to its printed digits
            assert csv[column].to_numpy() == pytest.approx(parquet[column].to_numpy())
            continue
        assert values(csv[column]) == values(parquet[column]), column
    numeric = (
        "user_turns",
        "risk_turn",
        "intent_correct",
        "intent_total",
        "unparsed",
        "cache_hits",
    )
    for column in numeric:
        assert pd.api.types.is_integer_dtype(csv[column]), column


def test_compare_reads_the_bits_with_and_without_the_prefix() -> None:
    row = {
        "suite": "s", "id": "a", "pair": "", "label": "unsafe", "setting": "escalation",
        "modality": "text", "category": "c", "user_turns": "3", "risk_turn": "2",
        "verdict": "safe", "score": "1.0", "turn_labels": "refusal refusal refusal",
        "intent_correct": "1", "intent_total": "3", "error": "",
    }  # fmt: skip
    new, old, number = (
        results_from_rows([{**row, "intent_bits": bits}], "results.csv")[0]
        for bits in ("b010", "010", "10")  # "10": an old file read with pandas' defaults
    )
    assert [q.correct for q in new.questions] == [False, True, False]
    assert [q.correct for q in old.questions] == [False, True, False]
    assert sum(q.correct for q in number.questions) == 1 and len(number.questions) == 3
    assert new.risk_turn == 2 and new.pair is None
