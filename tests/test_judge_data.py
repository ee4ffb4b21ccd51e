"""The judge's labelled data: the split is by model (or whole source), never by row, and the
committed test split is exactly what the builder makes from the per-source files. (Identical
canned replies, "I'm sorry, but I can't assist with that.", do occur on both sides: different
models write them.)"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from pytest_mtmcs.judges.ngram_training import ensure_split
from tests.scripts import load_script

DATA = Path(__file__).parent / "data" / "judge"


@pytest.fixture(scope="module")
def b() -> ModuleType:
    return load_script(DATA / "build_judge_data.py", "build_judge_data")


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("splits")
    subprocess.run(
        [sys.executable, str(DATA / "build_judge_data.py"), "combine", "--out", str(out)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return out


def test_the_committed_test_split_is_what_the_builder_makes(splits: Path) -> None:
    assert (splits / "test.jsonl").read_bytes() == (DATA / "test.jsonl").read_bytes()


def test_no_model_and_no_reply_is_on_both_sides(b: ModuleType, splits: Path) -> None:
    dev = list(b.read_jsonl(splits / "dev.jsonl"))
    test = list(b.read_jsonl(splits / "test.jsonl"))
    assert len(dev) > 10_000 and len(test) > 1_000
    dev_models = {b.norm_model(str(r["model"])) for r in dev}
    test_models = {b.norm_model(str(r["model"])) for r in test}
    assert not dev_models & test_models
    assert not dev_models & b.TEST_MODELS
    assert {r["split"] for r in dev} == {"dev"} and {r["split"] for r in test} == {"test"}
    assert {r["lang"] for r in dev + test} == {"en"}


def test_sources_with_three_class_labels_map_every_kept_row(b: ModuleType) -> None:
    # Only labels the source's humans gave, mapped by the tables the provenance file documents.
    assert set(b.CHATGPT_REFUSALS_TONE.values()) == set(b.LABELS)
    assert set(b.MSTS_TAXONOMY.values()) == {"refusal", "compliance"}
    for name in ("chatgpt_refusals", "rbr_gold", "msts"):
        rows = list(b.read_jsonl(b.source_path(name)))
        assert rows, name
        assert {r["source"] for r in rows} == {name}
        assert {r["label"] for r in rows} <= set(b.LABELS)
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids)), f"{name}: duplicate ids"


def test_latin_lang_marks_non_latin_text(b: ModuleType) -> None:
    assert b.latin_lang("I'm sorry, but I can't help with that.") == "en"
    assert b.latin_lang("Если вы заметили у себя такое поведение") == "other"
    assert b.latin_lang("") == "en"


def test_msts_maps_rebuttals_to_refusal_and_keeps_a_models_repeated_reply_once(
    b: ModuleType, tmp_path: Path
) -> None:
    cols = ["case_id", "prompt_type", "prompt_text", "model", "response", "final_taxonomy"]
    rows = [
        ("c1", "intent", "Should I sell this?", "org--m1", "No, you should not.", "1.1 - rejection or rebuttal"),
        ("c2", "intent", "Should I eat this?", "org--m1", "No, you should not.", "1.2 - refusal only"),
        ("c3", "intent", "I am going to jump.", "org--m1", "Be careful.", "1.3 - safety considerations / contexts"),
        ("c4", "intent", "Should I buy it?", "org--m2", "Yes, go for it!", "2.1 - explicit encouragement"),
        ("c5", "intent", "Should I cut it?", "org--m2", "No, you should not.", "1.1 - rejection or rebuttal"),
    ]  # fmt: skip
    for part in ("textonly", "multimodal"):
        with (tmp_path / f"english_{part}.csv").open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(cols)
            w.writerows(rows if part == "textonly" else [])
    got = list(b.msts(argparse.Namespace(root=str(tmp_path))))
    assert [(r["model"], r["label"], r["id"].split("/")[2]) for r in got] == [
        ("org/m1", "refusal", "c1"),  # c2 repeats m1's reply with the same label: kept once
        ("org/m2", "compliance", "c4"),
        ("org/m2", "refusal", "c5"),  # the same text by another model is another row
    ]
    assert "1.1 - rejection or rebuttal" in str(got[0]["label_origin"])


def test_per_source_files_are_gzip_with_stable_bytes_and_feed_the_trainers_dev_split(
    b: ModuleType, tmp_path: Path
) -> None:
    def rows(n: int) -> list[dict[str, object]]:
        return [
            b.record(source="x", row_id=str(i), text=f"reply {i}", label="refusal", prompt="q",
                     model="some-dev-model", label_origin="test")
            for i in range(n)
        ]  # fmt: skip

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(DATA / "build_judge_data.py", data)
    src = data / "x.jsonl.gz"
    b.write_jsonl(src, rows(2))
    first = src.read_bytes()
    b.write_jsonl(src, rows(2))
    assert src.read_bytes() == first and first[:2] == b"\x1f\x8b"  # gzip, the same bytes again
    assert [r["id"] for r in b.read_jsonl(src)] == ["x/0", "x/1"]

    dev = ensure_split(data, "dev")
    assert len(list(b.read_jsonl(dev))) == 2
    # A newer per-source file makes the generated dev split stale: it is built again.
    b.write_jsonl(src, rows(3))
    later = dev.stat().st_mtime_ns + 1_000_000_000
    os.utime(src, ns=(later, later))
    assert len(list(b.read_jsonl(ensure_split(data, "dev")))) == 3
