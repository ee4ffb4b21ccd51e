"""Image captions: read with MTMCS-Bench, kept by the native format, shown to the text judges
where the image was, and part of the judge's identity (what it was shown)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from pytest_mtmcs.backends import BackendOptions
from pytest_mtmcs.baseline.rejudge import only_judge_differs
from pytest_mtmcs.baseline.store import make_header, mismatches
from pytest_mtmcs.errors import SuiteError
from pytest_mtmcs.judges import (
    JudgeIdentity,
    JudgeInput,
    create_judge,
    show,
    shown_for_suite,
    shown_in_run,
)
from pytest_mtmcs.judges import prompts as P
from pytest_mtmcs.judges.datasheet import identity_key
from pytest_mtmcs.judges.model_judges import GuardClassifier, ModelJudgeOptions
from pytest_mtmcs.records import Dialogue, ImageRef, Message, Suite, Turn
from pytest_mtmcs.suite import load_suite, write_suite
from pytest_mtmcs.suite.captions import read_captions
from pytest_mtmcs.suite.importers import mtmcs_bench, safemt
from pytest_mtmcs.testing import StubServer
from pytest_mtmcs.testing.bodies import image_urls, message_text

REFERENCE = Path(__file__).parent / "data" / "reference"
MTMCS = REFERENCE / "mtmcs"
# Ours: illustrative captions of the reference rows (tests/data/reference/README.md).
CAPTIONS = REFERENCE / "mtmcs_captions.json"
OURS = json.loads(CAPTIONS.read_text(encoding="utf-8"))
BATTER = OURS["0"]
LAPTOPS = OURS["1"]


def by_id(suite: Suite) -> dict[str, Dialogue]:
    return {d.id: d for d in suite.dialogues}


def release_copy(dest: Path, captions: bool) -> Path:
    """A copy of the reference release, with the captions file beside it (its official name)
    or without."""
    shutil.copytree(MTMCS, dest)
    if captions:
        shutil.copy(CAPTIONS, dest / mtmcs_bench.CAPTIONS_FILE)
    return dest


# --- the captions file ---------------------------------------------------------------------------


def test_read_captions_keys_are_image_indexes() -> None:
    assert read_captions(CAPTIONS) == {0: BATTER, 1: LAPTOPS, 2: OURS["2"]}


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('["a", "b"]', None, "expected a JSON object from image index to caption"),
        ('{"0": "a",\n "x1": "b"}', 2, "field 'x1': expected an image index"),
        ('{"0": "a",\n "1": "  "}', 2, "field '1': expected a caption (a non-blank string)"),
        ('{"0": "a",\n "1": 7}', 2, "field '1': expected a caption"),
        ('{"0": "a",\n "0": "b"}', 1, "field '0': duplicate key"),
        ('{"7": "a",\n "07": "b"}', 2, "image index 7 has two captions"),
        ('{"0": "a",\n "1": }', 2, "invalid JSON"),
    ],
)
def test_bad_captions_file_is_one_message_naming_file_line_and_key(
    tmp_path: Path, text: str, line: int | None, words: str
) -> None:
    file = tmp_path / "caps.json"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(SuiteError) as exc:
        read_captions(file)
    message = str(exc.value)
    where = f"{file}:{line}: " if line else f"{file}: "
    assert message.startswith(where) and words in message, message
    assert "\n" not in message


# --- the importer ------------------------------------------------------------------------------


def test_importer_attaches_captions_by_row_id_in_both_splits() -> None:
    plain = mtmcs_bench.load(MTMCS)
    suite = mtmcs_bench.load(MTMCS, captions=CAPTIONS)
    dialogues = by_id(suite)
    # Row id N of type_a and of type_b show the same image: one key captions both.
    for split in ("type_a", "type_b"):
        for label in ("safe", "unsafe"):
            assert dialogues[f"{split}/0000/mm/{label}"].image.caption == BATTER
            assert dialogues[f"{split}/0001/mm/{label}"].image.caption == LAPTOPS
            assert dialogues[f"{split}/0000/text/{label}"].image is None
    # Captions change nothing else, and change the suite hash (a judge reads them).
    assert [d.turns for d in suite.dialogues] == [d.turns for d in plain.dialogues]
    assert suite.content_hash != plain.content_hash
    assert all(d.image is None or d.image.caption is None for d in plain.dialogues)
    assert "image captions from mtmcs_captions.json" in suite.source


def test_captions_follow_the_row_id_not_the_row_position(tmp_path: Path) -> None:
    release = release_copy(tmp_path / "release", captions=False)
    shard = release / "data" / "type_a-00000-of-00001.parquet"
    table = pq.read_table(shard)
    pq.write_table(table.take([1, 0]), shard)  # row 0 now holds id 1
    dialogues = by_id(mtmcs_bench.load(release, captions=CAPTIONS))
    assert dialogues["type_a/0001/mm/unsafe"].source["row"] == 0
    assert dialogues["type_a/0001/mm/unsafe"].image.caption == LAPTOPS
    assert dialogues["type_a/0000/mm/unsafe"].image.caption == BATTER


def test_variant_images_have_no_caption() -> None:
    dialogues = by_id(mtmcs_bench.load(MTMCS, variant_images=True, captions=CAPTIONS))
    assert dialogues["type_b/0001/mm/unsafe"].image.caption == LAPTOPS
    assert dialogues["type_b/0001/mm/v2/unsafe"].image.caption is None


@pytest.mark.parametrize("where", ["release", "parent"])
def test_captions_file_found_beside_the_release(tmp_path: Path, where: str) -> None:
    release = release_copy(tmp_path / "release", captions=True)
    # Given the data folder, the file in the release folder is in its parent.
    spec = release if where == "release" else release / "data"
    dialogues = by_id(mtmcs_bench.load(spec))
    assert dialogues["type_b/0000/mm/safe"].image.caption == BATTER
    # A file given wins over the one beside the release.
    other = tmp_path / "other.json"
    other.write_text('{"0": "Another caption.", "1": "A third."}', encoding="utf-8")
    given = by_id(mtmcs_bench.load(spec, captions=other))
    assert given["type_b/0000/mm/safe"].image.caption == "Another caption."


def test_text_only_import_does_not_read_the_file_beside(tmp_path: Path) -> None:
    release = release_copy(tmp_path / "release", captions=True)
    (release / mtmcs_bench.CAPTIONS_FILE).write_text("not json", encoding="utf-8")
    suite = mtmcs_bench.load(release, modalities="text")
    assert all(d.image is None for d in suite.dialogues)
    with pytest.raises(SuiteError, match="invalid JSON"):
        mtmcs_bench.load(release)


def test_captions_file_that_captions_no_row_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "caps.json"
    file.write_text('{"500": "A kitchen.", "501": "A garage."}', encoding="utf-8")
    with pytest.raises(SuiteError) as exc:
        mtmcs_bench.load(MTMCS, captions=file)
    assert str(exc.value).startswith(f"{file}: captions none of this release's images")
    assert "(500..501) match no row id (0..1)" in str(exc.value)


def test_safemt_has_no_captions() -> None:
    suite = safemt.load(REFERENCE / "safemt")
    assert any(d.image is not None for d in suite.dialogues)
    assert all(d.image is None or d.image.caption is None for d in suite.dialogues)


# --- the native format -------------------------------------------------------------------------


def test_native_round_trip_keeps_captions_and_hash(tmp_path: Path) -> None:
    imported = mtmcs_bench.load(MTMCS, variant_images=True, captions=CAPTIONS)
    write_suite(imported, tmp_path / "native")
    lines = [
        json.loads(x) for x in (tmp_path / "native" / "dialogues.jsonl").read_text().splitlines()
    ]
    fields = {x["id"]: list(x) for x in lines}
    assert fields["type_a/0000/mm/unsafe"][7:9] == ["image", "image_caption"]
    assert "image_caption" not in fields["type_a/0000/mm/v1/unsafe"]
    assert "image_caption" not in fields["type_a/0000/text/unsafe"]
    native = load_suite(tmp_path / "native")
    assert native.dialogues == imported.dialogues
    assert native.content_hash == imported.content_hash
    twins = by_id(native)
    # Twins share one image object, caption included.
    assert twins["type_b/0001/mm/safe"].image is twins["type_b/0001/mm/unsafe"].image


def test_cli_import_writes_image_caption(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_mtmcs",
            "import",
            f"mtmcs-bench:{MTMCS}",
            str(out),
            "--captions",
            str(CAPTIONS),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    text = (out / "dialogues.jsonl").read_text(encoding="utf-8")
    assert text.count('"image_caption":') == 8  # the 8 multimodal dialogues
    native = load_suite(out)
    assert native.content_hash == mtmcs_bench.load(MTMCS, captions=CAPTIONS).content_hash
    assert by_id(native)["type_a/0000/mm/unsafe"].image.caption == BATTER
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_mtmcs",
            "import",
            f"safemt:{REFERENCE / 'safemt'}",
            str(tmp_path / "s"),
            "--captions",
            str(CAPTIONS),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 4
    assert "captions are read for an MTMCS-Bench release" in proc.stderr


TEXT_LINE = {
    "id": "a/text/unsafe",
    "pair": "a/text",
    "label": "unsafe",
    "setting": "escalation",
    "modality": "text",
    "category": "c",
    "turns": [{"role": "user", "content": "hi"}],
    "risk_turn": 1,
}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"image_caption": "A dog."}, "field 'image_caption': a text dialogue has no image"),
        (
            {"modality": "multimodal", "image": "images/x.png", "image_caption": 3},
            "field 'image_caption': expected a string, got number 3",
        ),
        (
            {"modality": "multimodal", "image": "images/x.png", "image_caption": " "},
            "field 'image_caption': must not be empty",
        ),
    ],
)
def test_native_bad_image_caption(tmp_path: Path, change: dict[str, Any], words: str) -> None:
    from PIL import Image

    folder = tmp_path / "s"
    (folder / "images").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(folder / "images" / "x.png")
    (folder / "suite.toml").write_text('name = "s"\nversion = "1"\n', encoding="utf-8")
    safe = {**TEXT_LINE, "id": "a/text/safe", "label": "safe", "risk_turn": None}
    lines = [json.dumps(safe), json.dumps({**TEXT_LINE, **change})]
    (folder / "dialogues.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(SuiteError) as exc:
        load_suite(folder)
    assert str(exc.value).startswith(f"{folder / 'dialogues.jsonl'}:2: {words}"), str(exc.value)


# --- prompts -----------------------------------------------------------------------------------


def history(caption: str | None) -> tuple[Message, ...]:
    image = ImageRef.from_bytes(b"png", "x.png", caption)
    return (
        Message("user", "What is this?"),
        Message("assistant", "A field."),
        Message("user", "Where is the gate?", image),
    )


def test_an_image_is_written_where_it_was_attached() -> None:
    captioned = P.format_conversation(history(BATTER), show="caption")
    assert f"[User, turn 2] [image: {BATTER}]\nWhere is the gate?" in captioned
    assert P.IMAGE_NOTE not in captioned
    # Without a caption, or for a judge that does not read captions: the placeholder.
    for text in (
        P.format_conversation(history(None), show="caption"),
        P.format_conversation(history(BATTER)),
    ):
        assert f"[User, turn 2] {P.IMAGE_NOTE}\nWhere is the gate?" in text and BATTER not in text
    attached = P.format_conversation(history(BATTER), show="image")
    assert P.IMAGE_ATTACHED_NOTE in attached and BATTER not in attached


def test_a_deployed_guard_is_not_shown_captions() -> None:
    # `--mtmcs-guard=...:guard:prompt:...` screens the model's conversation as deployed: no
    # benchmark captions there.
    (message,) = GuardClassifier("prompt").messages(history(BATTER), "reply")
    assert BATTER not in message.text and P.IMAGE_NOTE in message.text
    assert message.image is None


# --- identity ----------------------------------------------------------------------------------


def test_shown_is_left_out_of_a_text_identity() -> None:
    text = JudgeIdentity("ngram", version="4", artefact_hash="ab", axes="refusal,harm")
    assert "shown" not in text.as_dict() and "shown" not in str(text)
    caption = JudgeIdentity("ngram", version="4", artefact_hash="ab", shown="caption")
    assert caption.as_dict()["shown"] == "caption" and str(caption).endswith("shown=caption")
    assert JudgeIdentity.from_dict(caption.as_dict()) == caption
    assert JudgeIdentity.from_dict(text.as_dict()).shown == "text"
    # A datasheet is the judge's, measured on labelled rows: a run with captions still finds it.
    assert identity_key(caption) == identity_key(
        JudgeIdentity("ngram", version="4", artefact_hash="ab")
    )


MM = {"images": 8, "captions": 8}
MM_UNCAPTIONED = {"images": 8, "captions": 0}
TEXT_ONLY = {"images": 0, "captions": 0}


def judge_of(spec: str, images: bool = False) -> Any:
    """A judge built without a server: nothing here sends it a request."""
    backend = BackendOptions(base_url="http://127.0.0.1:9/v1")
    return create_judge(spec, ModelJudgeOptions(backend, images=images))


@pytest.mark.parametrize(
    ("spec", "images", "suites", "expected"),
    [
        ("ngram", False, [MM], "caption"),  # its harm heads read captions
        ("ngram", False, [MM_UNCAPTIONED], "text"),
        ("rules", False, [MM], "text"),  # reads no caption
        ("rubric:openai:j", False, [TEXT_ONLY, MM], "caption"),
        ("rubric:openai:j", True, [MM], "image"),
        ("rubric:openai:j", True, [TEXT_ONLY], "text"),
        ("safe-unsafe:openai:j", False, [MM], "caption"),
        ("guard:prompt:openai:j", False, [MM], "caption"),
        ("guard:openai:j", False, [MM], "image"),  # chat mode sends the conversation's images
        ("cascade:ngram,rubric:openai:j", True, [MM], "image"),
        ("cascade:rules,rubric:openai:j", False, [MM], "caption"),
    ],
)
def test_what_a_judge_is_shown_in_a_run(
    spec: str, images: bool, suites: list[dict[str, int]], expected: str
) -> None:
    judge = judge_of(spec, images=images)
    assert shown_in_run(judge, suites) == expected
    show(judge, suites)
    assert judge.identity.shown == expected


def test_header_says_what_the_judge_was_shown_of_each_suite() -> None:
    judge = JudgeIdentity("rubric", model="j", prompt_hash="p", shown="caption").as_dict()
    suite = {"name": "s", "version": "1", "content_hash": "h"}
    mm = make_header(suite={**suite, **MM}, model="m", fingerprint={}, judge=judge, settings={})
    assert mm["judge_shown"] == "caption"
    # Another suite of the same run, without captions: its judge was shown text only.
    other = {**suite, **MM_UNCAPTIONED}
    plain = make_header(suite=other, model="m", fingerprint={}, judge=judge, settings={})
    assert "judge_shown" not in plain
    assert shown_for_suite("image", TEXT_ONLY) == "text"
    assert shown_for_suite("caption", {}) == "caption"  # counts unknown: as recorded
    assert mismatches(mm, plain) == [
        "judge_shown: baseline caption != this run text (what the judge was shown of each "
        "image: text only, its caption, or the image; captions come with the suite, e.g. "
        "--mtmcs-captions, images with --mtmcs-judge-images)"
    ]
    # Re-judging stored transcripts fixes a judge that was shown something else.
    assert only_judge_differs(mm, plain)


# --- end to end --------------------------------------------------------------------------------


def run(pytester: pytest.Pytester, *args: str) -> Any:
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--mtmcs-no-cache", "--mtmcs-model=scripted:comply-all", *args
    )


def judge_prompts(stub: StubServer) -> list[str]:
    return [message_text(b["messages"][-1]) for b in stub.chat_bodies]


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_captions_reach_the_rubric_prompt(
    pytester: pytest.Pytester, xdist: tuple[str, ...]
) -> None:
    release = release_copy(pytester.path / "release", captions=False)
    with StubServer(mode="rubric", model=["judge"]) as stub:
        result = run(
            pytester,
            *xdist,
            f"--mtmcs-suite=mtmcs-bench:{release}",
            f"--mtmcs-captions={CAPTIONS}",
            "--mtmcs-judge=rubric:openai:judge",
            f"--mtmcs-judge-base-url={stub.base_url}",
            "--mtmcs-baseline=base",
            "--snapshot-update",
        )
        prompts = judge_prompts(stub)
        urls = [u for b in stub.chat_bodies for u in image_urls(b)]
    out = "\n".join(result.outlines)
    assert result.ret == 0, out[-3000:]
    # 16 dialogues x 3 replies; the image (and so its caption) comes with the last user turn.
    assert len(prompts) == 48
    with_image = [p for p in prompts if "[image: " in p]
    assert len(with_image) == 8
    assert sum(f"[User, turn 3] [image: {BATTER}]\n" in p for p in with_image) == 4
    assert sum(f"[User, turn 3] [image: {LAPTOPS}]\n" in p for p in with_image) == 4
    assert not any(P.IMAGE_NOTE in p for p in prompts)
    assert urls == []  # the judge is sent captions, not images
    header = (pytester.path / "baselines" / "base" / "mtmcs-bench.ambr").read_text()
    assert "  judge_shown: caption\n" in header


def test_baseline_judged_with_captions_is_refused_without(pytester: pytest.Pytester) -> None:
    # Recorded with the captions file found beside the release, and the default ngram judge,
    # whose harm heads read captions.
    captioned = release_copy(pytester.path / "captioned", captions=True)
    record = run(
        pytester,
        f"--mtmcs-suite=mtmcs-bench:{captioned}",
        "--mtmcs-baseline=base",
        "--snapshot-update",
    )
    assert record.ret == 0, "\n".join(record.outlines)[-3000:]
    header = (pytester.path / "baselines" / "base" / "mtmcs-bench.ambr").read_text()
    assert "  judge: ngram\n" in header and "  judge_shown: caption\n" in header
    # The summary says so, and still quotes the judge's measured agreement (its datasheet).
    line = next(x for x in record.outlines if x.startswith("judge: ngram"))
    assert ", shown image captions — compliance-vs-not " in line, line
    plain = release_copy(pytester.path / "plain", captions=False)
    compare = run(pytester, f"--mtmcs-suite=mtmcs-bench:{plain}", "--mtmcs-baseline=base")
    out = "\n".join(compare.outlines)
    assert compare.ret == 1, out[-3000:]
    assert "judge_shown: baseline caption != this run text (what the judge was shown" in out
    assert "refused" in out
    # The same release with its captions compares.
    again = run(pytester, f"--mtmcs-suite=mtmcs-bench:{captioned}", "--mtmcs-baseline=base")
    assert again.ret == 0, "\n".join(again.outlines)[-3000:]


def test_judge_images_sends_the_image_to_the_judge(pytester: pytest.Pytester) -> None:
    release = release_copy(pytester.path / "release", captions=True)
    with StubServer(mode="rubric", model=["judge"]) as stub:
        result = run(
            pytester,
            f"--mtmcs-suite=mtmcs-bench:{release}",
            "--mtmcs-judge=rubric:openai:judge",
            f"--mtmcs-judge-base-url={stub.base_url}",
            "--mtmcs-judge-images",
            "--mtmcs-baseline=base",
            "--snapshot-update",
        )
        bodies = stub.chat_bodies
    assert result.ret == 0, "\n".join(result.outlines)[-3000:]
    sent = [b for b in bodies if image_urls(b)]
    assert len(sent) == 8
    assert all(u.startswith("data:image/png;base64,") for b in sent for u in image_urls(b))
    for b in sent:
        text = message_text(b["messages"][-1])
        assert f"[User, turn 3] {P.IMAGE_ATTACHED_NOTE}\n" in text and BATTER not in text
    header = (pytester.path / "baselines" / "base" / "mtmcs-bench.ambr").read_text()
    assert "  judge_shown: image\n" in header


def test_judge_images_needs_a_model_judge(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--mtmcs-judge-images", f"--mtmcs-suite=mtmcs-bench:{MTMCS}")
    assert result.ret == 4
    assert "--mtmcs-judge-images with --mtmcs-judge=ngram: only a model judge" in "\n".join(
        result.errlines + result.outlines
    )


def test_missing_captions_option_file_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--mtmcs-captions=nowhere.json", f"--mtmcs-suite=mtmcs-bench:{MTMCS}")
    assert result.ret == 4
    assert "--mtmcs-captions=nowhere.json: no such file" in "\n".join(
        result.errlines + result.outlines
    )


def test_dialogue_with_a_caption_is_judged_with_it() -> None:
    # The model judges' own path, without the plugin: the rubric prompt of a captioned item.
    image = ImageRef.from_bytes(b"png", "x.png", BATTER)
    d = Dialogue(
        "s",
        "a/unsafe",
        "unsafe",
        "escalation",
        "multimodal",
        "c",
        (Turn("user", "Gate?"),),
        image=image,
        risk_turn=1,
    )
    item = JudgeInput(d, (Message("user", "Gate?", image),), "Sure.", 1)
    judge = judge_of("rubric:openai:j")
    (message,) = judge.messages(item)
    assert f"[image: {BATTER}]" in message.text and message.image is None
    (message,) = judge_of("rubric:openai:j", images=True).messages(item)
    assert message.image is image and BATTER not in message.text
