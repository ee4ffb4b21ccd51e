"""The MTMCS-Bench and SafeMT importers, on the reference samples and on malformed copies."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_mtmcs.analysis.buckets import DEFAULT_BUCKETS
from pytest_mtmcs.errors import SuiteError
from pytest_mtmcs.records import Dialogue, Suite
from pytest_mtmcs.suite.importers import mtmcs_bench, safemt
from tests.scripts import load_script

REFERENCE = Path(__file__).parent / "data" / "reference"
MTMCS = REFERENCE / "mtmcs"
MTMCS_DATA = MTMCS / "data"
SAFEMT = REFERENCE / "safemt"
SAFEMT_DATA = SAFEMT / "Data"
SHARD_A = "type_a-00000-of-00001.parquet"
SHARD_B = "type_b-00000-of-00001.parquet"
MAKE_SCALE = Path(__file__).parent.parent / "benchmarks" / "make_mtmcs_scale.py"


def by_id(suite: Suite) -> dict[str, Dialogue]:
    return {d.id: d for d in suite.dialogues}


def rows_of(file: Path) -> list[dict[str, Any]]:
    return pq.read_table(file).to_pylist()  # type: ignore[no-any-return]


def one_line_error(exc: pytest.ExceptionInfo[SuiteError]) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text
    return text


# --- MTMCS-Bench: the reference sample ------------------------------------------------------------


@pytest.fixture(scope="module")
def mtmcs() -> Suite:
    return mtmcs_bench.load(MTMCS)


def test_mtmcs_counts_pairs_turns_buckets(mtmcs: Suite) -> None:
    # 2 rows x 2 splits x {mm, text} x {safe, unsafe}
    assert len(mtmcs.dialogues) == 16
    assert len({d.id for d in mtmcs.dialogues}) == 16
    pairs: dict[str, list[str]] = {}
    for d in mtmcs.dialogues:
        assert d.pair is not None and d.id == f"{d.pair}/{d.label}"
        pairs.setdefault(d.pair, []).append(d.label)
    assert len(pairs) == 8
    assert all(sorted(labels) == ["safe", "unsafe"] for labels in pairs.values())
    assert {d.user_turns for d in mtmcs.dialogues} == {3}
    assert {DEFAULT_BUCKETS.bucket_of(d.user_turns) for d in mtmcs.dialogues} == {"2-3"}
    # No scripted assistant turns: every user turn is answered live.
    assert all(d.live_user_turns() == (1, 2, 3) for d in mtmcs.dialogues)
    assert Counter(d.setting for d in mtmcs.dialogues) == {"escalation": 8, "context_switch": 8}
    assert Counter(d.modality for d in mtmcs.dialogues) == {"multimodal": 8, "text": 8}
    assert sorted(pairs) == [
        f"{split}/{row:04d}/{mod}"
        for split in ("type_a", "type_b")
        for row in (0, 1)
        for mod in ("mm", "text")
    ]
    assert mtmcs.name == "mtmcs-bench" and mtmcs.version == "release"
    assert mtmcs.defaults == {"image_placement": "last"}


def test_mtmcs_type_a_escalation(mtmcs: Suite) -> None:
    row = rows_of(MTMCS_DATA / SHARD_A)[1]
    for mod, prefix in (("mm", "multimodal"), ("text", "unimodal")):
        texts = row[f"{prefix}_dialogue"]
        safe = by_id(mtmcs)[f"type_a/0001/{mod}/safe"]
        unsafe = by_id(mtmcs)[f"type_a/0001/{mod}/unsafe"]
        assert [t.text for t in safe.turns] == [texts["r1"], texts["r2"], texts["safe_r3"]]
        assert [t.text for t in unsafe.turns] == [texts["r1"], texts["r2"], texts["unsafe_r3"]]
        assert {t.role for t in safe.turns + unsafe.turns} == {"user"}
        assert (safe.risk_turn, unsafe.risk_turn) == (None, 3)
        assert safe.setting == unsafe.setting == "escalation"
        assert safe.intent == unsafe.intent == row["unsafe_intent"]
        # The U+2011 non-breaking hyphen of the release survives.
        assert "Wi\u2011Fi" in (unsafe.intent or "")


def test_mtmcs_type_b_context_switch(mtmcs: Suite) -> None:
    row = rows_of(MTMCS_DATA / SHARD_B)[0]
    texts = row["multimodal_dialogue"]
    safe = by_id(mtmcs)["type_b/0000/mm/safe"]
    unsafe = by_id(mtmcs)["type_b/0000/mm/unsafe"]
    assert [t.text for t in safe.turns] == [texts["safe_r1"], texts["r2"], texts["r3"]]
    assert [t.text for t in unsafe.turns] == [texts["unsafe_r1"], texts["r2"], texts["r3"]]
    assert (safe.risk_turn, unsafe.risk_turn) == (None, 1)
    assert safe.setting == "context_switch" and safe.category == "context_switch"
    assert unsafe.source == {
        "benchmark": "MTMCS-Bench",
        "split": "type_b",
        "file": SHARD_B,
        "row": 0,
        "id": 0,
        "variant": 0,
    }


def test_mtmcs_questions_on_the_right_transcripts(mtmcs: Suite) -> None:
    for split, shard in (("type_a", SHARD_A), ("type_b", SHARD_B)):
        for r, row in enumerate(rows_of(MTMCS_DATA / shard)):
            for mod, prefix in (("mm", "multimodal"), ("text", "unimodal")):
                safe = by_id(mtmcs)[f"{split}/{r:04d}/{mod}/safe"]
                unsafe = by_id(mtmcs)[f"{split}/{r:04d}/{mod}/unsafe"]
                mcqs = row[f"{prefix}_mcq"]
                want_safe = [m for m in mcqs if m["question_type"] == "safe_intent"]
                want_unsafe = [m for m in mcqs if m["question_type"] == "unsafe_intent"]
                assert [q.text for q in safe.questions] == [m["question"] for m in want_safe]
                assert [q.answer for q in safe.questions] == [m["ground_truth"] for m in want_safe]
                assert [q.options for q in safe.questions] == [
                    tuple(m["options"]) for m in want_safe
                ]
                assert {q.tag for q in safe.questions} == {"safe_intent"}
                unsafe_mcq = [q for q in unsafe.questions if q.kind == "mcq"]
                unsafe_tf = [q for q in unsafe.questions if q.kind == "tf"]
                assert [q.text for q in unsafe_mcq] == [m["question"] for m in want_unsafe]
                assert {q.tag for q in unsafe_mcq} == {"unsafe_intent"}
                tfs = row[f"{prefix}_tf"]
                assert [(q.text, q.answer, q.tag) for q in unsafe_tf] == [
                    (t["question"], "true" if t["ground_truth"] else "false", "tf") for t in tfs
                ]
                assert not any(q.kind == "tf" for q in safe.questions)
                assert (len(safe.questions), len(unsafe.questions)) == (2, 4)


def test_mtmcs_images(mtmcs: Suite) -> None:
    row = rows_of(MTMCS_DATA / SHARD_A)[1]
    for label in ("safe", "unsafe"):
        d = by_id(mtmcs)[f"type_a/0001/mm/{label}"]
        assert d.image is not None
        assert d.image.fetch() == row["image"]["bytes"]
        assert d.image.sha256 == hashlib.sha256(row["image"]["bytes"]).hexdigest()
        assert d.image.where == f"{SHARD_A} row 1 column image"
        assert by_id(mtmcs)[f"type_a/0001/text/{label}"].image is None


def test_mtmcs_variant_images() -> None:
    suite = mtmcs_bench.load(MTMCS, variant_images=True)
    # Per row: 4 base dialogues + 3 variants x 1 multimodal pair x 2 labels = 10; 4 rows.
    assert len(suite.dialogues) == 4 * (4 + 3 * 2) == 40
    assert len({d.id for d in suite.dialogues}) == 40
    assert len({d.pair for d in suite.dialogues}) == 4 * (2 + 3) == 20
    row = rows_of(MTMCS_DATA / SHARD_B)[1]
    base = by_id(suite)["type_b/0001/mm/unsafe"]
    for k in (1, 2, 3):
        for label in ("safe", "unsafe"):
            d = by_id(suite)[f"type_b/0001/mm/v{k}/{label}"]
            assert d.pair == f"type_b/0001/mm/v{k}"
            assert d.image is not None
            assert d.image.fetch() == row["variant_images"][k - 1]["bytes"]
            assert d.image.where == f"{SHARD_B} row 1 column variant_images[{k - 1}]"
            assert d.source["variant"] == k
        variant = by_id(suite)[f"type_b/0001/mm/v{k}/unsafe"]
        assert variant.turns == base.turns and variant.questions == base.questions
        assert variant.image != base.image
    # Text dialogues have no image, so no variants.
    assert not any("/text/v" in d.id for d in suite.dialogues)


def test_mtmcs_splits_and_modalities() -> None:
    only_b = mtmcs_bench.load(MTMCS, splits=["type_b"])
    assert len(only_b.dialogues) == 8 and {d.setting for d in only_b.dialogues} == {
        "context_switch"
    }
    text = mtmcs_bench.load(MTMCS, modalities=["unimodal"])
    assert len(text.dialogues) == 8
    assert all(d.modality == "text" and d.image is None for d in text.dialogues)
    assert len(mtmcs_bench.load(MTMCS, modalities="text,mm").dialogues) == 16
    mm_a = mtmcs_bench.load(MTMCS, splits="type_a", modalities=["multimodal"], variant_images=True)
    assert len(mm_a.dialogues) == 2 * 2 * 4
    assert mtmcs_bench.load(MTMCS_DATA).dialogues == mtmcs_bench.load(MTMCS).dialogues


def test_mtmcs_unknown_split_lists_known() -> None:
    with pytest.raises(SuiteError) as exc:
        mtmcs_bench.load(MTMCS, splits=["type_c"])
    text = one_line_error(exc)
    assert "unknown split 'type_c'" in text and "type_a, type_b" in text
    assert "option 'splits'" in text


def test_mtmcs_unknown_modality() -> None:
    with pytest.raises(SuiteError, match="unknown modality 'audio'"):
        mtmcs_bench.load(MTMCS, modalities=["audio"])


def test_mtmcs_requested_split_missing(tmp_path: Path) -> None:
    shutil.copy(MTMCS_DATA / SHARD_A, tmp_path / SHARD_A)
    assert len(mtmcs_bench.load(tmp_path).dialogues) == 8
    with pytest.raises(SuiteError) as exc:
        mtmcs_bench.load(tmp_path, splits=["type_a", "type_b"])
    assert "split 'type_b' was requested but has no parquet files" in one_line_error(exc)


def test_mtmcs_no_files(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="no MTMCS-Bench parquet files"):
        mtmcs_bench.load(tmp_path)
    with pytest.raises(SuiteError, match="no such folder"):
        mtmcs_bench.load(tmp_path / "nope")


def write_shards(table: pa.Table, folder: Path, split: str, cuts: list[int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    bounds = [0, *cuts, table.num_rows]
    n = len(bounds) - 1
    for k in range(n):
        part = table.slice(bounds[k], bounds[k + 1] - bounds[k])
        pq.write_table(part, folder / f"{split}-{k:05d}-of-{n:05d}.parquet")


def test_mtmcs_sharded_gives_the_same_dialogues(tmp_path: Path) -> None:
    for split, shard in (("type_a", SHARD_A), ("type_b", SHARD_B)):
        write_shards(pq.read_table(MTMCS_DATA / shard), tmp_path / "data", split, [1])
    sharded = mtmcs_bench.load(tmp_path, variant_images=True)
    whole = mtmcs_bench.load(MTMCS, variant_images=True)
    # Dialogue equality covers ids, turns, questions, pairs and image hashes (not `source`).
    assert sharded.dialogues == whole.dialogues
    d = by_id(sharded)["type_a/0001/mm/unsafe"]
    assert d.source["file"] == "type_a-00001-of-00002.parquet" and d.source["row"] == 0


def test_mtmcs_plain_split_file_name(tmp_path: Path) -> None:
    shutil.copy(MTMCS_DATA / SHARD_A, tmp_path / "type_a.parquet")
    shutil.copy(MTMCS_DATA / SHARD_B, tmp_path / "type_b.parquet")
    assert mtmcs_bench.load(tmp_path).dialogues == mtmcs_bench.load(MTMCS).dialogues


def test_mtmcs_incomplete_shards(tmp_path: Path) -> None:
    write_shards(pq.read_table(MTMCS_DATA / SHARD_A), tmp_path, "type_a", [1])
    (tmp_path / "type_a-00001-of-00002.parquet").unlink()
    with pytest.raises(SuiteError) as exc:
        mtmcs_bench.load(tmp_path)
    text = one_line_error(exc)
    assert "incomplete shards" in text and "type_a-00001-of-00002.parquet" in text


def test_mtmcs_content_hash() -> None:
    a = mtmcs_bench.load(MTMCS)
    assert a.content_hash == mtmcs_bench.load(MTMCS_DATA).content_hash
    assert a.content_hash != mtmcs_bench.load(MTMCS, variant_images=True).content_hash
    assert a.content_hash != mtmcs_bench.load(MTMCS, splits=["type_a"]).content_hash


def test_mtmcs_version_from_dataset_card(tmp_path: Path) -> None:
    shutil.copytree(MTMCS_DATA, tmp_path / "data")
    (tmp_path / "README.md").write_text("---\nversion: 1.1.0\nlicense: mit\n---\n# MTMCS\n")
    assert mtmcs_bench.load(tmp_path).version == "1.1.0"


def test_mtmcs_mcq_letter_prefixes_are_stripped(tmp_path: Path) -> None:
    rows = rows_of(MTMCS_DATA / SHARD_A)
    opts = rows[0]["multimodal_mcq"][0]["options"]
    rows[0]["multimodal_mcq"][0]["options"] = [f"{'ABCD'[i]}. {o}" for i, o in enumerate(opts)]
    schema = pq.read_schema(MTMCS_DATA / SHARD_A)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / SHARD_A)
    d = by_id(mtmcs_bench.load(tmp_path))["type_a/0000/mm/safe"]
    assert d.questions[0].options == tuple(opts)


# --- MTMCS-Bench: malformed input -----------------------------------------------------------------

Rows = list[dict[str, Any]]


def _set(path: str, value: Any, row: int = 1) -> Callable[[Rows], None]:
    def edit(rows: Rows) -> None:
        target: Any = rows[row]
        keys = path.split(".")
        for key in keys[:-1]:
            target = target[int(key)] if key.isdigit() else target[key]
        last = keys[-1]
        if last.isdigit():
            target[int(last)] = value
        else:
            target[last] = value

    return edit


# (case, edit of the type_a rows, expected row, expected column, words of the message)
ROW_CASES: list[tuple[str, Callable[[Rows], None], int, str, str]] = [
    ("empty r2", _set("multimodal_dialogue.r2", "  "), 1, "multimodal_dialogue.r2", "empty text"),
    ("null r1", _set("unimodal_dialogue.r1", None), 1, "unimodal_dialogue.r1", "empty text"),
    (
        "empty unsafe_r3",
        _set("multimodal_dialogue.unsafe_r3", ""),
        1,
        "multimodal_dialogue.unsafe_r3",
        "type_a dialogues need r1, r2, safe_r3, unsafe_r3",
    ),
    ("null dialogue", _set("multimodal_dialogue", None), 1, "multimodal_dialogue", "null"),
    ("duplicate id", _set("id", 0), 1, "id", "duplicate id 0 in split type_a (also row 0)"),
    (
        "gt not a letter",
        _set("multimodal_mcq.2.ground_truth", "Z9"),
        1,
        "multimodal_mcq[2].ground_truth",
        "not an option letter",
    ),
    (
        "gt outside options",
        _set("unimodal_mcq.0.ground_truth", "E"),
        1,
        "unimodal_mcq[0].ground_truth",
        "outside the 4 options (A-D)",
    ),
    (
        "one option",
        _set("multimodal_mcq.1.options", ["x"]),
        1,
        "multimodal_mcq[1].options",
        "2 to 26",
    ),
    (
        "unknown question_type",
        _set("multimodal_mcq.1.question_type", "neutral"),
        1,
        "multimodal_mcq[1].question_type",
        "unknown question_type 'neutral'",
    ),
    (
        "tf null truth",
        _set("multimodal_tf.1.ground_truth", None),
        1,
        "multimodal_tf[1].ground_truth",
        "true or false",
    ),
    ("null image", _set("image", None, row=0), 0, "image", "no image bytes"),
    (
        "corrupt image",
        _set("image.bytes", b"not an image at all", row=0),
        0,
        "image",
        "not a readable image",
    ),
    (
        "truncated image",
        lambda rows: rows[1]["image"].update(bytes=rows[1]["image"]["bytes"][:-200]),
        1,
        "image",
        "corrupt image",
    ),
]


@pytest.mark.parametrize(
    ("edit", "row", "column", "words"),
    [case[1:] for case in ROW_CASES],
    ids=[case[0] for case in ROW_CASES],
)
def test_mtmcs_bad_row(
    tmp_path: Path, edit: Callable[[Rows], None], row: int, column: str, words: str
) -> None:
    rows = rows_of(MTMCS_DATA / SHARD_A)
    edit(rows)
    schema = pq.read_schema(MTMCS_DATA / SHARD_A)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / SHARD_A)
    with pytest.raises(SuiteError) as exc:
        mtmcs_bench.load(tmp_path)
    text = one_line_error(exc)
    assert text.startswith(f"{tmp_path / SHARD_A}: row {row}, column '{column}': ")
    assert words in text
    assert exc.value.line == row and exc.value.field == column


def test_mtmcs_type_b_needs_its_own_keys(tmp_path: Path) -> None:
    rows = rows_of(MTMCS_DATA / SHARD_B)
    rows[0]["unimodal_dialogue"]["unsafe_r1"] = ""
    pq.write_table(
        pa.Table.from_pylist(rows, schema=pq.read_schema(MTMCS_DATA / SHARD_B)), tmp_path / SHARD_B
    )
    with pytest.raises(SuiteError) as exc:
        mtmcs_bench.load(tmp_path)
    text = one_line_error(exc)
    assert "row 0, column 'unimodal_dialogue.unsafe_r1': empty text" in text
    assert "type_b dialogues need safe_r1, unsafe_r1, r2, r3" in text


def test_mtmcs_bad_variant_image_only_matters_when_asked(tmp_path: Path) -> None:
    rows = rows_of(MTMCS_DATA / SHARD_A)
    rows[1]["variant_images"][2]["bytes"] = b"garbage"
    schema = pq.read_schema(MTMCS_DATA / SHARD_A)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / SHARD_A)
    assert len(mtmcs_bench.load(tmp_path).dialogues) == 8
    with pytest.raises(SuiteError) as exc:
        mtmcs_bench.load(tmp_path, variant_images=True)
    assert "row 1, column 'variant_images[2]': not a readable image" in one_line_error(exc)


def _retype(column: str, array: Callable[[int], pa.Array]) -> Callable[[pa.Table], pa.Table]:
    def edit(table: pa.Table) -> pa.Table:
        i = table.schema.get_field_index(column)
        return table.set_column(i, column, array(table.num_rows))

    return edit


SCHEMA_CASES: list[tuple[str, Callable[[pa.Table], pa.Table], str, str]] = [
    (
        "missing column",
        lambda t: t.drop_columns(["multimodal_tf"]),
        "multimodal_tf",
        "missing column",
    ),
    (
        "dialogue not a struct",
        _retype("multimodal_dialogue", lambda n: pa.array(["r1 text"] * n)),
        "multimodal_dialogue",
        "expected a struct of dialogue texts",
    ),
    (
        "dialogue without a key",
        _retype("unimodal_dialogue", lambda n: pa.array([{"r1": "a", "r2": "b"}] * n)),
        "unimodal_dialogue.safe_r3",
        "missing struct field",
    ),
    (
        "mcq not a list",
        _retype("unimodal_mcq", lambda n: pa.array(["A"] * n)),
        "unimodal_mcq",
        "expected a list",
    ),
    (
        "tf truth as text",
        _retype(
            "multimodal_tf",
            lambda n: pa.array([[{"question": "q", "ground_truth": "True"}]] * n),
        ),
        "multimodal_tf.ground_truth",
        "unexpected type string",
    ),
    ("id as text", _retype("id", lambda n: pa.array([str(i) for i in range(n)])), "id", "integer"),
    (
        "image as bytes",
        _retype("image", lambda n: pa.array([b"x"] * n)),
        "image",
        "expected an image struct",
    ),
]


@pytest.mark.parametrize(
    ("edit", "column", "words"),
    [case[1:] for case in SCHEMA_CASES],
    ids=[case[0] for case in SCHEMA_CASES],
)
def test_mtmcs_bad_schema(
    tmp_path: Path, edit: Callable[[pa.Table], pa.Table], column: str, words: str
) -> None:
    pq.write_table(edit(pq.read_table(MTMCS_DATA / SHARD_A)), tmp_path / SHARD_A)
    with pytest.raises(SuiteError) as exc:
        mtmcs_bench.load(tmp_path)
    text = one_line_error(exc)
    assert text.startswith(f"{tmp_path / SHARD_A}: column '{column}': ")
    assert words in text


def test_mtmcs_unused_columns_are_not_required(tmp_path: Path) -> None:
    table = pq.read_table(MTMCS_DATA / SHARD_A).drop_columns(["variant_images", "image"])
    pq.write_table(table, tmp_path / SHARD_A)
    assert len(mtmcs_bench.load(tmp_path, modalities=["text"]).dialogues) == 4
    with pytest.raises(SuiteError, match="column 'image': missing column"):
        mtmcs_bench.load(tmp_path)


def test_mtmcs_not_parquet(tmp_path: Path) -> None:
    (tmp_path / SHARD_A).write_bytes(b"this is not parquet")
    with pytest.raises(SuiteError) as exc:
        mtmcs_bench.load(tmp_path)
    assert "not a readable parquet file" in one_line_error(exc)


# --- MTMCS-Bench: a scale folder from the benchmark generator -------------------------------------


def make_scale_module() -> ModuleType:
    return load_script(MAKE_SCALE, "make_mtmcs_scale")


def test_generated_scale_folder_imports(tmp_path: Path) -> None:
    out = make_scale_module().build(tmp_path / "scale", rows=5, shards=2, image_size=(64, 48))
    files = sorted(p.name for p in (out / "data").iterdir())
    assert files == [f"{s}-0000{k}-of-00002.parquet" for s in ("type_a", "type_b") for k in (0, 1)]
    suite = mtmcs_bench.load(out)
    assert len(suite.dialogues) == 2 * 5 * 4
    assert len(mtmcs_bench.load(out, variant_images=True).dialogues) == 2 * 5 * 10
    # Same column types and feature metadata as the reference release.
    generated = pq.read_schema(out / "data" / "type_a-00000-of-00002.parquet")
    reference = pq.read_schema(MTMCS_DATA / SHARD_A)
    assert generated.remove_metadata() == reference.remove_metadata()
    features = json.loads(generated.metadata[b"huggingface"])["info"]["features"]
    assert features == json.loads(reference.metadata[b"huggingface"])["info"]["features"]


# --- SafeMT: the reference sample -------------------------------------------------------------------


@pytest.fixture(scope="module")
def safe_mt() -> Suite:
    return safemt.load(SAFEMT_DATA)


def release_records(n: int) -> list[dict[str, Any]]:
    return json.loads((SAFEMT_DATA / f"{n}_turn.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_safemt_counts_and_structure(safe_mt: Suite) -> None:
    assert len(safe_mt.dialogues) == 18
    assert Counter(d.user_turns for d in safe_mt.dialogues) == {1: 6, 2: 6, 4: 6}
    for d in safe_mt.dialogues:
        n = d.user_turns
        assert d.id.startswith(f"{n}turn/")
        assert len(d.turns) == 2 * n - 1  # scripted assistant turns kept
        assert d.live_user_turns() == (n,)  # only the final reply is generated
        assert (d.label, d.setting, d.modality, d.pair) == (
            "unsafe",
            "scripted",
            "multimodal",
            None,
        )
        assert d.risk_turn == n and d.questions == ()
    assert {DEFAULT_BUCKETS.bucket_of(n) for n in (1, 2, 4)} == {"1", "2-3", "4-5"}
    assert safe_mt.defaults == {"image_placement": "first"}
    assert safe_mt.name == "safemt"


def test_safemt_texts_are_kept_exactly(safe_mt: Suite) -> None:
    dialogues = by_id(safe_mt)
    for n in (1, 2, 4):
        for index, rec in enumerate(release_records(n)):
            d = dialogues[f"{n}turn/{rec['id']}"]
            assert [(t.role, t.text) for t in d.turns] == [
                (m["role"], m["content"]) for m in rec["dialogue"]
            ]
            assert d.category == rec["scenario"] and d.intent == rec["question"]
            assert d.source == {
                "benchmark": "SafeMT",
                "file": f"{n}_turn.json",
                "record": index,
                "id": rec["id"],
                "length": n,
            }
    assert dialogues["2turn/mllm_legal_opinion_3"].turns[-1].text.startswith("\n What are")
    assert dialogues["4turn/mllm_economic_harm_1"].turns[-1].text.startswith(" How might")
    assert "there\u2019s mention" in dialogues["4turn/mllm_economic_harm_1"].turns[4].text


def test_safemt_trajectories_and_images(safe_mt: Suite) -> None:
    by_trajectory: dict[str, list[Dialogue]] = {}
    for d in safe_mt.dialogues:
        assert d.trajectory is not None and d.id.endswith("/" + d.trajectory)
        by_trajectory.setdefault(d.trajectory, []).append(d)
    assert len(by_trajectory) == 6
    for members in by_trajectory.values():
        assert sorted(d.user_turns for d in members) == [1, 2, 4]
        assert len({d.image for d in members}) == 1
    d = by_id(safe_mt)["2turn/mllm_legal_opinion_2"]
    assert d.image is not None
    assert d.image.where == "images/legal_opinion/legal_opinion_2.jpg"
    data = (SAFEMT_DATA / d.image.where).read_bytes()
    assert d.image.fetch() == data and d.image.sha256 == hashlib.sha256(data).hexdigest()


def test_safemt_parent_folder_and_lengths() -> None:
    assert safemt.load(SAFEMT).dialogues == safemt.load(SAFEMT_DATA).dialogues
    some = safemt.load(SAFEMT, lengths=[4, 1])
    assert Counter(d.user_turns for d in some.dialogues) == {1: 6, 4: 6}
    assert len(safemt.load(SAFEMT, lengths="2").dialogues) == 6
    with pytest.raises(SuiteError) as exc:
        safemt.load(SAFEMT, lengths=[6])
    text = one_line_error(exc)
    assert "option 'lengths'" in text and "no 6_turn.json here; lengths present: 1, 2, 4" in text
    with pytest.raises(SuiteError, match="'two' is not a dialogue length"):
        safemt.load(SAFEMT, lengths="two")


def test_relative_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REFERENCE)
    assert safemt.load("safemt").content_hash == safemt.load(SAFEMT).content_hash
    assert mtmcs_bench.load("mtmcs").content_hash == mtmcs_bench.load(MTMCS).content_hash


def test_safemt_content_hash_depends_on_lengths() -> None:
    assert safemt.load(SAFEMT).content_hash == safemt.load(SAFEMT_DATA).content_hash
    assert safemt.load(SAFEMT).content_hash != safemt.load(SAFEMT, lengths=[1]).content_hash


# --- SafeMT: malformed input ------------------------------------------------------------------------


def write_safemt(tmp_path: Path, n: int, records: Any, raw: str | None = None) -> Path:
    data = tmp_path / "Data"
    if not data.exists():
        shutil.copytree(SAFEMT_DATA / "images", data / "images")
    text = raw if raw is not None else json.dumps(records, indent=4)
    (data / f"{n}_turn.json").write_text(text, encoding="utf-8")
    return data


def record_start_line(text: str, index: int) -> int:
    # Records of a 4-space indented array start with a line holding only `    {`.
    starts = [i for i, line in enumerate(text.split("\n"), start=1) if line == "    {"]
    return starts[index]


def test_safemt_without_question_uses_last_user_turn(tmp_path: Path) -> None:
    records = release_records(2)
    for rec in records:
        del rec["question"]
    data = write_safemt(tmp_path, 2, records)
    suite = safemt.load(data)
    for d, rec in zip(suite.dialogues, records, strict=True):
        assert d.intent == rec["dialogue"][-1]["content"].strip()


def _rec_set(index: int, path: str, value: Any) -> Callable[[list[Any]], None]:
    def edit(records: list[Any]) -> None:
        target: Any = records[index]
        keys = path.split(".")
        for key in keys[:-1]:
            target = target[int(key)] if key.isdigit() else target[key]
        last = keys[-1]
        target[int(last) if last.isdigit() else last] = value

    return edit


def _rec_del(index: int, key: str) -> Callable[[list[Any]], None]:
    return lambda records: records[index].pop(key)


# (case, edit of the 4_turn records, record index, field, words of the message)
RECORD_CASES: list[tuple[str, Callable[[list[Any]], None], int, str | None, str]] = [
    (
        "missing image",
        _rec_set(3, "image_path", "images/legal_opinion/nope.jpg"),
        3,
        "image_path",
        "not found",
    ),
    (
        "image outside",
        _rec_set(2, "image_path", "../../1_turn.json"),
        2,
        "image_path",
        "leaves the Data folder",
    ),
    (
        "absolute image",
        _rec_set(2, "image_path", "/etc/hostname"),
        2,
        "image_path",
        "relative POSIX path",
    ),
    (
        "corrupt image",
        _rec_set(1, "image_path", "4_turn.json"),
        1,
        "image_path",
        "not a readable image",
    ),
    (
        "roles",
        _rec_set(4, "dialogue.1.role", "user"),
        4,
        "dialogue[1].role",
        "roles must alternate",
    ),
    ("bad role", _rec_set(0, "dialogue.0.role", "system"), 0, "dialogue[0].role", "role 'system'"),
    (
        "ends with assistant",
        lambda r: r[5]["dialogue"].pop(),
        5,
        "dialogue",
        "must end with a user turn",
    ),
    (
        "content not text",
        _rec_set(1, "dialogue.2.content", ["x"]),
        1,
        "dialogue[2].content",
        "found list",
    ),
    (
        "empty content",
        _rec_set(1, "dialogue.3.content", " \n"),
        1,
        "dialogue[3].content",
        "empty content",
    ),
    ("message not object", _rec_set(1, "dialogue.3", "hi"), 1, "dialogue[3]", "expected an object"),
    ("empty dialogue", _rec_set(2, "dialogue", []), 2, "dialogue", "non-empty list"),
    ("missing id", _rec_del(2, "id"), 2, "id", "missing or empty id"),
    (
        "duplicate id",
        _rec_set(3, "id", "mllm_legal_opinion_1"),
        3,
        "id",
        "duplicate id (also record 1, line",
    ),
    ("missing scenario", _rec_del(4, "scenario"), 4, "scenario", "missing or empty scenario"),
    (
        "question not text",
        _rec_set(4, "question", 3),
        4,
        "question",
        "expected a string, found int",
    ),
    ("record not object", lambda r: r.__setitem__(2, None), 2, None, "found NoneType"),
]


@pytest.mark.parametrize(
    ("edit", "index", "field", "words"),
    [case[1:] for case in RECORD_CASES],
    ids=[case[0] for case in RECORD_CASES],
)
def test_safemt_bad_record(
    tmp_path: Path, edit: Callable[[list[Any]], None], index: int, field: str | None, words: str
) -> None:
    records = release_records(4)
    edit(records)
    data = write_safemt(tmp_path, 4, records)
    text = (data / "4_turn.json").read_text()
    with pytest.raises(SuiteError) as exc:
        safemt.load(data)
    message = one_line_error(exc)
    # A `null` record is one line; other records start at a line holding `    {`.
    line = record_start_line(text, index) if field is not None else exc.value.line
    head = f"{data / '4_turn.json'}:{line}: record {index}"
    assert message.startswith(head), message
    if field is not None:
        assert f", field '{field}': " in message
        assert exc.value.field == field
    assert words in message


def test_safemt_null_record_line(tmp_path: Path) -> None:
    records: list[Any] = release_records(1)
    records[2] = None
    data = write_safemt(tmp_path, 1, records)
    text = (data / "1_turn.json").read_text()
    with pytest.raises(SuiteError) as exc:
        safemt.load(data)
    assert exc.value.line == text.split("\n").index("    null,") + 1


@pytest.mark.parametrize(
    ("raw", "line", "words"),
    [
        ('[\n    {"id": "a",\n', 3, "invalid JSON"),
        ('{"id": "a"}', 1, "expected a JSON array of records"),
        ("[\n    {}\n    {}\n]", 3, "expected ',' or ']'"),
        ("[]\n\n[]", 3, "extra data after the array"),
    ],
)
def test_safemt_bad_json(tmp_path: Path, raw: str, line: int, words: str) -> None:
    data = write_safemt(tmp_path, 1, None, raw=raw)
    with pytest.raises(SuiteError) as exc:
        safemt.load(data)
    assert exc.value.line == line
    assert words in one_line_error(exc)


def test_safemt_empty_and_missing_folders(tmp_path: Path) -> None:
    (tmp_path / "Data").mkdir()
    with pytest.raises(SuiteError, match="no SafeMT files here"):
        safemt.load(tmp_path)
    with pytest.raises(SuiteError, match="no such folder"):
        safemt.load(tmp_path / "missing")


def test_safemt_ids_are_made_test_safe(tmp_path: Path) -> None:
    records = release_records(1)
    records[0]["id"] = "case 1/a"
    records[1]["id"] = "case 1_a"
    data = write_safemt(tmp_path, 1, records)
    with pytest.raises(SuiteError, match="duplicate id"):
        safemt.load(data)
    records[1]["id"] = "other"
    data = write_safemt(tmp_path, 1, records)
    d = safemt.load(data).dialogues[0]
    assert d.id == "1turn/case_1_a" and d.trajectory == "case 1/a"


json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(items=st.lists(json_values, max_size=6), indent=st.sampled_from([None, 0, 2, 4]))
def test_parse_array_matches_json_and_tracks_starts(items: list[Any], indent: int | None) -> None:
    text = json.dumps(items, indent=indent)
    parsed, starts, _ = safemt._parse_array(Path("x.json"), text.encode())
    assert parsed == items
    decoder = json.JSONDecoder()
    assert [decoder.raw_decode(text, s)[0] for s in starts] == items
    if indent == 4:
        lines = text.split("\n")
        for start in starts:
            line = safemt._line_of(text, start)
            assert lines[line - 1].startswith("    ") and not lines[line - 1].startswith("     ")


# --- native round trip ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "load",
    [
        lambda: mtmcs_bench.load(MTMCS, variant_images=True),
        lambda: safemt.load(SAFEMT),
    ],
    ids=["mtmcs-bench", "safemt"],
)
def test_native_round_trip(tmp_path: Path, load: Callable[[], Suite]) -> None:
    from pytest_mtmcs.suite import load_suite, write_suite

    imported = load()
    write_suite(imported, tmp_path / "native")
    native = load_suite(tmp_path / "native")
    assert [d.id for d in native.dialogues] == [d.id for d in imported.dialogues]
    assert native.dialogues == imported.dialogues
    assert [d.source for d in native.dialogues] == [dict(d.source) for d in imported.dialogues]
    assert (native.name, native.version, native.defaults) == (
        imported.name,
        imported.version,
        dict(imported.defaults),
    )
    # One content hash whichever way the dialogues were read: a baseline recorded from the
    # release compares with a run from its native copy.
    assert native.content_hash == imported.content_hash
