"""The bundled `suites/mtmcs_mini` suite: its promised shape, and that its generator reproduces it.

The JSONL is read directly with `json` so these checks do not depend on the loader's behaviour;
one test also loads it through `pytest_mtmcs.suite.native.load_suite`.
"""

from __future__ import annotations

import json
import tomllib
from collections import Counter, defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.scripts import load_script

SUITE = Path(__file__).resolve().parents[1] / "suites" / "mtmcs_mini"
BUCKETS = {"1": range(1, 2), "2-3": range(2, 4), "4-5": range(4, 6), "6+": range(6, 100)}


def _load_rows() -> list[dict[str, Any]]:
    lines = (SUITE / "dialogues.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


ROWS = _load_rows()
BY_ID = {row["id"]: row for row in ROWS}


def _user_turns(row: dict[str, Any]) -> list[str]:
    return [turn["content"] for turn in row["turns"] if turn["role"] == "user"]


def _bucket(row: dict[str, Any]) -> str:
    n = len(_user_turns(row))
    return next(name for name, lengths in BUCKETS.items() if n in lengths)


def _pairs() -> dict[str, dict[str, dict[str, Any]]]:
    pairs: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in ROWS:
        pairs[row["pair"]][row["label"]] = row
    return pairs


def _generator() -> ModuleType:
    return load_script(SUITE / "build_suite.py", "mtmcs_mini_build")


def test_file_is_sorted_stable_and_unique() -> None:
    ids = [row["id"] for row in ROWS]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    fields = [
        "id", "pair", "label", "setting", "modality", "category", "intent", "image", "turns",
        "risk_turn", "questions", "source",
    ]  # fmt: skip
    lines = (SUITE / "dialogues.jsonl").read_text(encoding="utf-8").splitlines()
    for line, row in zip(lines, ROWS, strict=True):
        assert list(row) == fields
        assert line == json.dumps(row, ensure_ascii=False)


def test_ids_follow_the_naming_scheme() -> None:
    short = {"multimodal": "mm", "text": "text"}
    for row in ROWS:
        setting, scene, modality, label = row["id"].split("/")
        assert (setting, label) == (row["setting"], row["label"])
        assert modality == short[row["modality"]]
        assert row["pair"] == row["id"].rsplit("/", 1)[0]
        assert row["source"] == {"benchmark": "mtmcs_mini", "scene": scene}
        assert scene[-3] == "-" and scene[-2:].isdigit()


def test_counts_twins_and_settings() -> None:
    assert len(ROWS) >= 120
    pairs = _pairs()
    assert len(pairs) >= 60
    assert all(set(members) == {"safe", "unsafe"} for members in pairs.values())
    settings = Counter(row["setting"] for row in ROWS)
    assert set(settings) == {"escalation", "context_switch"}
    # Roughly half each, so neither setting dominates a bucket's numbers.
    assert abs(settings["escalation"] - settings["context_switch"]) <= len(ROWS) // 10


def test_every_bucket_holds_enough_dialogues_and_every_length_exists() -> None:
    buckets = Counter(_bucket(row) for row in ROWS)
    assert set(buckets) == set(BUCKETS)
    assert min(buckets.values()) >= 20, buckets
    lengths = {len(_user_turns(row)) for row in ROWS}
    assert lengths == set(range(1, 9))
    for name in BUCKETS:
        in_bucket = [row for row in ROWS if _bucket(row) == name]
        assert {row["setting"] for row in in_bucket} == {"escalation", "context_switch"}


def test_categories() -> None:
    scenes: dict[str, set[str]] = defaultdict(set)
    for row in ROWS:
        scenes[row["category"]].add(row["source"]["scene"])
    assert len(scenes) >= 8
    assert all(len(names) >= 2 for names in scenes.values()), scenes


def test_twins_differ_only_where_the_risk_is() -> None:
    for pair, members in _pairs().items():
        safe, unsafe = members["safe"], members["unsafe"]
        for field in ("setting", "modality", "category", "intent", "image", "source"):
            assert safe[field] == unsafe[field], (pair, field)
        assert unsafe["intent"], pair
        assert [t["role"] for t in safe["turns"]] == [t["role"] for t in unsafe["turns"]]
        safe_users, unsafe_users = _user_turns(safe), _user_turns(unsafe)
        differing = [
            i + 1 for i, (a, b) in enumerate(zip(safe_users, unsafe_users, strict=True)) if a != b
        ]
        assert differing == [unsafe["risk_turn"]], pair


def test_risk_turns_match_settings() -> None:
    for row in ROWS:
        n_user = len(_user_turns(row))
        if row["label"] == "safe":
            assert row["risk_turn"] is None, row["id"]
        elif row["setting"] == "escalation":
            assert row["risk_turn"] == n_user, row["id"]
        else:
            assert row["risk_turn"] == 1, row["id"]


def test_turns_are_well_formed() -> None:
    for row in ROWS:
        roles = [turn["role"] for turn in row["turns"]]
        assert roles[0] == "user" and roles[-1] == "user", row["id"]
        assert "assistant,assistant" not in ",".join(roles), row["id"]
        assert all(turn["content"].strip() for turn in row["turns"]), row["id"]


def test_scripted_rows_exist_and_script_all_but_the_last_turn() -> None:
    scripted_pairs = {
        row["pair"] for row in ROWS if any(t["role"] == "assistant" for t in row["turns"])
    }
    assert len(scripted_pairs) >= 8
    assert {BY_ID[f"{pair}/safe"]["setting"] for pair in scripted_pairs} == {
        "escalation",
        "context_switch",
    }
    for pair in scripted_pairs:
        for label in ("safe", "unsafe"):
            roles = [t["role"] for t in BY_ID[f"{pair}/{label}"]["turns"]]
            n_user = roles.count("user")
            assert roles == ["user", "assistant"] * (n_user - 1) + ["user"], pair


def test_multimodal_rows_have_text_rewrites() -> None:
    multimodal = [row for row in ROWS if row["modality"] == "multimodal"]
    assert multimodal
    for row in multimodal:
        text = BY_ID[row["id"].replace("/mm/", "/text/")]
        assert row["image"] and text["image"] is None
        assert text["modality"] == "text"
        for field in ("label", "setting", "category", "intent", "risk_turn"):
            assert text[field] == row[field], (row["id"], field)
        assert len(_user_turns(text)) == len(_user_turns(row))
        # The text version tells the picture in words: its opening is a rewrite, and longer.
        assert _user_turns(text)[0] != _user_turns(row)[0]
        assert len(_user_turns(text)[0]) > len(_user_turns(row)[0])
    assert sum(row["modality"] == "text" for row in ROWS) == len(multimodal)


def test_intent_questions_on_every_row() -> None:
    golds: Counter[str] = Counter()
    tf_answers: Counter[bool] = Counter()
    for row in ROWS:
        mcqs = [q for q in row["questions"] if q["type"] == "mcq"]
        tfs = [q for q in row["questions"] if q["type"] == "tf"]
        assert mcqs and tfs, row["id"]
        for q in mcqs:
            assert len(q["options"]) == 4 and len(set(q["options"])) == 4
            assert q["tag"] == f"{row['label']}_intent"
            gold = q["options"]["ABCD".index(q["answer"])]
            intent_option = row["intent"][0].upper() + row["intent"][1:]
            assert intent_option in q["options"], row["id"]
            # The unsafe twin's gold is its unsafe goal; the safe twin's is the benign one.
            assert (gold == intent_option) == (row["label"] == "unsafe"), row["id"]
            golds[q["answer"]] += 1
        for q in tfs:
            assert isinstance(q["answer"], bool) and q["tag"] == "tf"
            tf_answers[q["answer"]] += 1
    assert set(golds) == set("ABCD")
    assert max(golds.values()) - min(golds.values()) <= len(ROWS) // 10, golds
    assert tf_answers[True] and tf_answers[False]


def test_images_exist_decode_and_stay_small() -> None:
    from pytest_mtmcs.suite.images import verify_image

    used = {row["image"] for row in ROWS if row["image"]}
    files = {f"images/{p.name}" for p in (SUITE / "images").iterdir()}
    assert used == files
    total = 0
    for name in sorted(files):
        data = (SUITE / name).read_bytes()
        assert verify_image(data) == (256, 192), name
        total += len(data)
    assert total < 1_500_000


def test_suite_toml() -> None:
    meta = tomllib.loads((SUITE / "suite.toml").read_text(encoding="utf-8"))
    assert meta["name"] == "mtmcs_mini"
    assert meta["version"] == "1.0.0"
    assert meta["license"] == "CC0-1.0"
    assert meta["source"]
    assert meta["defaults"] == {"image_placement": "last", "buckets": "1,2-3,4-5,6+"}


def test_generator_reproduces_the_committed_files_byte_for_byte(tmp_path: Path) -> None:
    _generator().main([str(tmp_path)])
    committed = {"suite.toml", "dialogues.jsonl"} | {
        f"images/{p.name}" for p in (SUITE / "images").iterdir()
    }
    produced = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert produced == committed
    for name in sorted(committed):
        assert (tmp_path / name).read_bytes() == (SUITE / name).read_bytes(), (
            f"{name} differs: run `python suites/mtmcs_mini/build_suite.py` and commit the result"
        )


def test_generator_refuses_a_scene_with_the_risk_in_the_wrong_turn() -> None:
    build = _generator()
    scene = build.SCENES[0]
    moved = build.Scene(**{**scene.__dict__, "setting": "context_switch", "turns": ("Hi.",)})
    with pytest.raises(ValueError, match="risk must sit in user turn 1"):
        build._check_scene(1, moved)


def test_the_loader_accepts_the_suite() -> None:
    suite_module = pytest.importorskip("pytest_mtmcs.suite.native")
    suite = suite_module.load_suite(SUITE)
    assert suite.name == "mtmcs_mini"
    assert [d.id for d in suite.dialogues] == [row["id"] for row in ROWS]
