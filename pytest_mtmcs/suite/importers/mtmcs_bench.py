"""MTMCS-Bench importer: the Hugging Face parquet release folder -> a Suite.

Reads `type_a` / `type_b` parquet files (sharded `type_a-00000-of-00002.parquet` or plain
`type_a.parquet`) under PATH or PATH/data with pyarrow; the `datasets` package is not needed.
Each row yields 4 dialogues, {multimodal, text} x {safe, unsafe}, built as the benchmark does:

- type_a (escalation): r1, r2, then safe_r3 / unsafe_r3; the risk is at user turn 3.
- type_b (context switch): safe_r1 / unsafe_r1, then r2, r3; the risk is at user turn 1.

MCQs go to the transcript their `question_type` names; true/false items to the unsafe one.
Columns are read whole (`to_pylist` per column), never row by row through pandas: a
752-rows-per-split folder must load in well under a second or two.

Image captions (`suite/captions.py`): the official judge is shown a caption of each image, from
`MTMCS_Bench_captions.json` (the benchmark's GitHub repository). The file given (`captions=`,
`--mtmcs-captions`), else one of that name in the release folder or its parent, captions each
row's main image: key = the row's `id` column (not its position in the file), the same key in both
splits. The official harness keys captions by `id` (its caption script skips an id already
captioned, so one caption serves both splits), and row `id` N of `type_a` and of `type_b` show the
same image: in the reference rows `type_a` 0 and `type_b` 0 both ask about "the batter in this
photo" and the official key "0" captions a baseball player at bat, `type_a` 1 and `type_b` 1 both
about the laptops on a table and key "1" captions people at an office table with laptops. Variant
images have no caption (the official harness captions only `image`); text dialogues have no image.
"""

from __future__ import annotations

import gc
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mtmcs.errors import SuiteError
from pytest_mtmcs.records import Dialogue, ImageRef, Question, Suite, Turn
from pytest_mtmcs.suite.captions import read_captions
from pytest_mtmcs.suite.content import content_hash
from pytest_mtmcs.suite.images import ImageProblem, verify_image

if TYPE_CHECKING:
    import pyarrow as pa

SUITE_NAME = "mtmcs-bench"
BENCHMARK = "MTMCS-Bench"
SPLITS: tuple[str, ...] = ("type_a", "type_b")
SETTING_OF_SPLIT = {"type_a": "escalation", "type_b": "context_switch"}
# Dialogue keys each split builds its dialogues from, and where its risk becomes evident.
NEEDED_KEYS = {
    "type_a": ("r1", "r2", "safe_r3", "unsafe_r3"),
    "type_b": ("safe_r1", "unsafe_r1", "r2", "r3"),
}
RISK_TURN = {"type_a": 3, "type_b": 1}
# Column prefix in the release -> modality in the data model, and the id segment for it.
MODALITY_PREFIX = {"multimodal": "multimodal", "text": "unimodal"}
MODALITY_SEGMENT = {"multimodal": "mm", "text": "text"}
MODALITY_ALIASES = {
    "multimodal": "multimodal",
    "mm": "multimodal",
    "unimodal": "text",
    "text": "text",
}
DEFAULTS = {"image_placement": "last"}
# The official captions file's name: looked for in the release folder and in its parent.
CAPTIONS_FILE = "MTMCS_Bench_captions.json"

_SHARD_RE = re.compile(
    r"^(?P<split>[A-Za-z0-9_]+?)(?:-(?P<index>\d+)-of-(?P<count>\d+)(?:-[0-9a-fA-F]+)?)?\.parquet$"
)
_LETTER_PREFIX_RE = re.compile(r"^([A-Z])[.)]\s+")


class ReleaseError(SuiteError):
    """A SuiteError about a release file, rendered `file: row 3, column 'x': message`.

    `line` carries the row index (0-based, as pandas and pyarrow number rows) for callers that
    only know SuiteError.
    """

    def __init__(
        self,
        file: str,
        message: str,
        *,
        row: int | None = None,
        column: str | None = None,
        option: str | None = None,
    ) -> None:
        self.row = row
        self.column = column
        self.option = option
        super().__init__(file, message, line=row, field=column or option)

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column:
            where.append(f"column '{self.column}'")
        if self.option:
            where.append(f"option '{self.option}'")
        head = f"{self.file}: {', '.join(where)}" if where else self.file
        return f"{head}: {self.message}"


# Per row of a table: the questions of one transcript.
_PerRow = list[tuple[Question, ...]]


@dataclass(frozen=True)
class _Shard:
    path: Path
    index: int
    count: int


def load(
    path: str | os.PathLike[str],
    *,
    splits: Sequence[str] | str | None = None,
    modalities: Sequence[str] | str | None = None,
    variant_images: bool = False,
    verify_images: bool = True,
    captions: str | os.PathLike[str] | None = None,
) -> Suite:
    """Loads an MTMCS-Bench release folder (PATH or PATH/data holding the parquet files).

    `splits`: `type_a`, `type_b` (default: those present). `modalities`: `multimodal`
    (alias `mm`), `text` (alias `unimodal`); default both. `variant_images`: also emit the
    multimodal dialogues of each of the row's 3 variant images (ids `.../mm/v1/unsafe`).
    `verify_images`: decode every used image once at load (an image that does not decode is an
    error here rather than in the middle of a run). `captions`: a captions file (image index ->
    caption, keyed by row id; see the module docstring); default: `MTMCS_Bench_captions.json` in
    the release folder or its parent when there is one, else no captions.
    """
    # Loading builds many small acyclic objects; the cyclic collector would rescan them again
    # and again (measured: about a third of the load time at benchmark scale).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _load(
            path,
            splits=splits,
            modalities=modalities,
            variant_images=variant_images,
            verify_images=verify_images,
            captions=captions,
        )
    finally:
        if was_enabled:
            gc.enable()


def _load(
    path: str | os.PathLike[str],
    *,
    splits: Sequence[str] | str | None = None,
    modalities: Sequence[str] | str | None = None,
    variant_images: bool = False,
    verify_images: bool = True,
    captions: str | os.PathLike[str] | None = None,
) -> Suite:
    import pyarrow.parquet as pq

    root = Path(path)
    if not root.exists():
        raise ReleaseError(str(root), "no such folder; expected the MTMCS-Bench release folder")
    if not root.is_dir():
        raise ReleaseError(str(root), "not a folder; expected the MTMCS-Bench release folder")
    found = _find_splits(root)
    chosen = _choose_splits(root, found, splits)
    mods = _choose_modalities(root, modalities)
    caption_file = Path(captions) if captions is not None else None
    if caption_file is None and "multimodal" in mods:
        caption_file = find_captions(root)
    caption_of = read_captions(caption_file) if caption_file is not None else None

    dialogues: list[Dialogue] = []
    images: dict[str, tuple[bytes, ReleaseError]] = {}
    for split in chosen:
        seen_ids: dict[int, tuple[str, int]] = {}
        for shard in found[split]:
            schema = _read_schema(pq, shard.path)
            columns = _check_schema(shard.path, schema, split, mods, variant_images)
            try:
                table = pq.read_table(shard.path, columns=columns)
            except Exception as exc:  # pyarrow raises several types for bad files
                raise ReleaseError(str(shard.path), f"cannot read parquet data: {exc}") from None
            dialogues.extend(
                _dialogues_of_table(
                    table, shard.path, split, mods, variant_images, seen_ids, images, caption_of
                )
            )
    if verify_images:
        _verify_images(images)
    source = f"{BENCHMARK} release (arXiv 2601.06757), splits {', '.join(chosen)}"
    if caption_file is not None and caption_of is not None and "multimodal" in mods:
        _check_captions_used(caption_file, caption_of, dialogues)
        source += f"; image captions from {caption_file.name}"
    return Suite(
        name=SUITE_NAME,
        version=_release_version(root),
        root=str(root),
        dialogues=tuple(dialogues),
        # The same rule as a native suite's: an imported copy of this release hashes the same.
        content_hash=content_hash(dialogues, DEFAULTS),
        source=source,
        defaults=dict(DEFAULTS),
    )


def find_captions(root: Path) -> Path | None:
    """`MTMCS_Bench_captions.json` in the release folder or its parent (where a clone of the
    benchmark's GitHub repository keeps it beside the downloaded data), or None."""
    for folder in (root, root.resolve().parent):
        candidate = folder / CAPTIONS_FILE
        if candidate.is_file():
            return candidate
    return None


def _check_captions_used(file: Path, captions: dict[int, str], dialogues: list[Dialogue]) -> None:
    """A captions file that captions none of the rows is the wrong file: say so, rather than
    run a judge that silently sees no caption."""
    ids = sorted({d.source["id"] for d in dialogues if d.image is not None})
    if not ids or any(d.image is not None and d.image.caption for d in dialogues):
        return
    keys = sorted(captions)
    shown = f"{keys[0]}..{keys[-1]}" if keys else "none"
    raise SuiteError(
        str(file),
        f"captions none of this release's images: its keys ({shown}) match no row id "
        f"({ids[0]}..{ids[-1]}); a captions file maps each row's id to a caption of its image, "
        f"as MTMCS-Bench's {CAPTIONS_FILE}",
    )


# --- finding the files ------------------------------------------------------------------------


def _find_splits(root: Path) -> dict[str, list[_Shard]]:
    base = root / "data" if any((root / "data").glob("*.parquet")) else root
    shards: dict[str, list[_Shard]] = {}
    for p in sorted(base.glob("*.parquet")):
        m = _SHARD_RE.match(p.name)
        if m is None:
            continue
        if m["index"] is None:
            shard = _Shard(p, 0, 1)
        else:
            shard = _Shard(p, int(m["index"]), int(m["count"]))
        shards.setdefault(m["split"], []).append(shard)
    if not shards:
        raise ReleaseError(
            str(root),
            "no MTMCS-Bench parquet files here or in its data/ folder "
            "(expected type_a-00000-of-00001.parquet, type_b-00000-of-00001.parquet)",
        )
    for split, group in shards.items():
        group.sort(key=lambda s: (s.index, s.path.name))
        _check_shards(base, split, group)
    return shards


def _check_shards(base: Path, split: str, group: list[_Shard]) -> None:
    counts = {s.count for s in group}
    if len(counts) > 1:
        names = ", ".join(s.path.name for s in group)
        raise ReleaseError(str(base), f"split {split}: shard files disagree on the count: {names}")
    count = counts.pop()
    indexes = [s.index for s in group]
    if len(set(indexes)) != len(indexes):
        names = ", ".join(s.path.name for s in group)
        raise ReleaseError(str(base), f"split {split}: more than one file per shard: {names}")
    missing = sorted(set(range(count)) - set(indexes))
    if missing or max(indexes) >= count:
        want = ", ".join(f"{split}-{i:05d}-of-{count:05d}.parquet" for i in missing) or "none"
        raise ReleaseError(
            str(base),
            f"split {split}: incomplete shards, {len(group)} file(s) of {count}; missing: {want}",
        )


def _as_names(value: Sequence[str] | str) -> list[str]:
    # A CLI value arrives as one comma-separated string; a caller may pass a list.
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(v).strip() for v in items if str(v).strip()]


def _choose_splits(
    root: Path, found: dict[str, list[_Shard]], splits: Sequence[str] | str | None
) -> list[str]:
    present = [s for s in SPLITS if s in found]
    if splits is None:
        if not present:
            others = ", ".join(sorted(found))
            raise ReleaseError(
                str(root),
                f"no type_a or type_b parquet files (found splits: {others}); "
                f"known splits: {', '.join(SPLITS)}",
            )
        return present
    chosen: list[str] = []
    for name in _as_names(splits):
        if name not in SPLITS:
            raise ReleaseError(
                str(root),
                f"unknown split {name!r}; known splits: {', '.join(SPLITS)}",
                option="splits",
            )
        if name not in found:
            raise ReleaseError(
                str(root),
                f"split {name!r} was requested but has no parquet files here "
                f"(present: {', '.join(present) or 'none'})",
                option="splits",
            )
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise ReleaseError(str(root), "no split selected", option="splits")
    return [s for s in SPLITS if s in chosen]


def _choose_modalities(root: Path, modalities: Sequence[str] | str | None) -> list[str]:
    if modalities is None:
        return ["multimodal", "text"]
    chosen: set[str] = set()
    for name in _as_names(modalities):
        if name not in MODALITY_ALIASES:
            raise ReleaseError(
                str(root),
                f"unknown modality {name!r}; known: multimodal (or mm), text (or unimodal)",
                option="modalities",
            )
        chosen.add(MODALITY_ALIASES[name])
    if not chosen:
        raise ReleaseError(str(root), "no modality selected", option="modalities")
    return [m for m in ("multimodal", "text") if m in chosen]


def _release_version(root: Path) -> str:
    """The version a dataset card states (`version:` in README front matter), else `release`."""
    for card in (root / "README.md", root.parent / "README.md" if root.name == "data" else None):
        if card is None or not card.is_file():
            continue
        text = card.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):
            front = text.split("---", 2)[1] if text.count("---") >= 2 else ""
            m = re.search(r"^\s*version:\s*['\"]?([^'\"\s#]+)", front, re.MULTILINE)
            if m:
                return m.group(1)
    return "release"


# --- schema -----------------------------------------------------------------------------------


def _read_schema(pq: Any, path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except Exception as exc:  # pyarrow raises several types for bad files
        raise ReleaseError(str(path), f"not a readable parquet file: {exc}") from None


def _type_name(t: pa.DataType) -> str:
    return str(t) if len(str(t)) < 80 else str(t)[:77] + "..."


def _check_schema(
    path: Path, schema: pa.Schema, split: str, mods: list[str], variants: bool
) -> list[str]:
    """Checks the columns this load needs; returns them (the others are not read)."""
    import pyarrow as pa

    def col(name: str) -> pa.DataType:
        if name not in schema.names:
            raise ReleaseError(
                str(path),
                f"missing column; the file has: {', '.join(schema.names)}",
                column=name,
            )
        return schema.field(name).type

    def fail(name: str, want: str, got: pa.DataType) -> ReleaseError:
        return ReleaseError(str(path), f"expected {want}, found {_type_name(got)}", column=name)

    def is_str(t: pa.DataType) -> bool:
        return bool(pa.types.is_string(t) or pa.types.is_large_string(t))

    def is_list(t: pa.DataType) -> bool:
        return bool(pa.types.is_list(t) or pa.types.is_large_list(t))

    def struct_child(name: str, t: pa.DataType, key: str, check: Callable[[Any], bool]) -> None:
        idx = t.get_field_index(key)
        if idx < 0:
            raise ReleaseError(str(path), "missing struct field", column=f"{name}.{key}")
        child = t.field(idx).type
        if not check(child):
            raise ReleaseError(
                str(path), f"unexpected type {_type_name(child)}", column=f"{name}.{key}"
            )

    def image_struct(name: str, t: pa.DataType) -> None:
        if not pa.types.is_struct(t):
            raise fail(name, "an image struct {bytes, path}", t)
        struct_child(
            name, t, "bytes", lambda c: pa.types.is_binary(c) or pa.types.is_large_binary(c)
        )

    used = ["id", "unsafe_intent"]
    t = col("id")
    if not pa.types.is_integer(t):
        raise fail("id", "an integer column", t)
    t = col("unsafe_intent")
    if not is_str(t):
        raise fail("unsafe_intent", "a string column", t)
    if "multimodal" in mods:
        image_struct("image", col("image"))
        used.append("image")
        if variants:
            t = col("variant_images")
            if not is_list(t):
                raise fail("variant_images", "a list of image structs", t)
            image_struct("variant_images", t.value_type)
            used.append("variant_images")
    for mod in mods:
        prefix = MODALITY_PREFIX[mod]
        name = f"{prefix}_dialogue"
        t = col(name)
        if not pa.types.is_struct(t):
            raise fail(name, "a struct of dialogue texts {r1, r2, ...}", t)
        for key in NEEDED_KEYS[split]:
            struct_child(name, t, key, is_str)
        name = f"{prefix}_mcq"
        t = col(name)
        if not (is_list(t) and pa.types.is_struct(t.value_type)):
            raise fail(name, "a list of {question, options, ground_truth, question_type}", t)
        item = t.value_type
        struct_child(name, item, "question", is_str)
        struct_child(name, item, "options", lambda c: is_list(c) and is_str(c.value_type))
        struct_child(name, item, "ground_truth", is_str)
        struct_child(name, item, "question_type", is_str)
        name = f"{prefix}_tf"
        t = col(name)
        if not (is_list(t) and pa.types.is_struct(t.value_type)):
            raise fail(name, "a list of {question, ground_truth}", t)
        struct_child(name, t.value_type, "question", is_str)
        struct_child(name, t.value_type, "ground_truth", pa.types.is_boolean)
        used += [f"{prefix}_dialogue", f"{prefix}_mcq", f"{prefix}_tf"]
    return used


# --- rows -> dialogues ------------------------------------------------------------------------


def _pylist(table: pa.Table, name: str) -> list[Any]:
    return table.column(name).to_pylist()  # type: ignore[no-any-return]


def _struct_nulls(table: pa.Table, name: str) -> list[bool]:
    return table.column(name).is_null().to_pylist()  # type: ignore[no-any-return]


def _struct_field(table: pa.Table, name: str, key: str) -> list[Any]:
    # Per chunk: combining chunks of a binary column over 2 GiB would overflow its offsets.
    out: list[Any] = []
    for chunk in table.column(name).chunks:
        out.extend(chunk.field(key).to_pylist())
    return out


def _dialogues_of_table(
    table: pa.Table,
    path: Path,
    split: str,
    mods: list[str],
    variants: bool,
    seen_ids: dict[int, tuple[str, int]],
    images: dict[str, tuple[bytes, ReleaseError]],
    captions: dict[int, str] | None = None,
) -> Iterable[Dialogue]:
    file = str(path)
    setting = SETTING_OF_SPLIT[split]
    risk = RISK_TURN[split]

    ids = _pylist(table, "id")
    for row, rid in enumerate(ids):
        if rid is None:
            raise ReleaseError(file, "null id", row=row, column="id")
        if rid < 0:
            raise ReleaseError(file, f"negative id {rid}", row=row, column="id")
        if rid in seen_ids:
            other_file, other_row = seen_ids[rid]
            where = "" if other_file == file else f" of {Path(other_file).name}"
            raise ReleaseError(
                file,
                f"duplicate id {rid} in split {split} (also row {other_row}{where})",
                row=row,
                column="id",
            )
        seen_ids[rid] = (file, row)
    intents = _pylist(table, "unsafe_intent")

    main_images: list[ImageRef | None] = [None] * len(ids)
    variant_refs: list[list[ImageRef]] = [[] for _ in ids]
    if "multimodal" in mods:
        nulls = _struct_nulls(table, "image")
        data = _struct_field(table, "image", "bytes")
        for row, blob in enumerate(data):
            caption = captions.get(ids[row]) if captions else None
            main_images[row] = _image_ref(
                file, row, "image", None if nulls[row] else blob, images, caption
            )
        if variants:
            for row, items in enumerate(_pylist(table, "variant_images")):
                if items is None:
                    raise ReleaseError(file, "null list", row=row, column="variant_images")
                for k, item in enumerate(items):
                    blob = None if item is None else item.get("bytes")
                    ref = _image_ref(file, row, f"variant_images[{k}]", blob, images)
                    variant_refs[row].append(ref)

    per_mod: dict[str, tuple[list[dict[str, list[str]]], _PerRow, _PerRow]] = {}
    for mod in mods:
        prefix = MODALITY_PREFIX[mod]
        texts = _dialogue_texts(table, file, split, f"{prefix}_dialogue")
        per_mod[mod] = (texts, *_questions(table, file, prefix))

    for row, rid in enumerate(ids):
        base = f"{split}/{rid:04d}"
        intent = intents[row] if intents[row] and intents[row].strip() else None
        for mod in mods:
            texts, safe_qs, unsafe_qs = per_mod[mod]
            seg = MODALITY_SEGMENT[mod]
            if mod == "multimodal":
                versions: list[tuple[str, ImageRef | None]] = [("", main_images[row])]
                versions += [(f"/v{k + 1}", ref) for k, ref in enumerate(variant_refs[row])]
            else:
                versions = [("", None)]
            for suffix, image in versions:
                pair = f"{base}/{seg}{suffix}"
                for label in ("safe", "unsafe"):
                    yield Dialogue(
                        suite=SUITE_NAME,
                        id=f"{pair}/{label}",
                        label=label,
                        setting=setting,  # type: ignore[arg-type]
                        modality=mod,  # type: ignore[arg-type]
                        category=setting,
                        turns=tuple(Turn("user", t) for t in texts[row][label]),
                        pair=pair,
                        intent=intent,
                        image=image,
                        risk_turn=risk if label == "unsafe" else None,
                        questions=safe_qs[row] if label == "safe" else unsafe_qs[row],
                        source={
                            "benchmark": BENCHMARK,
                            "split": split,
                            "file": path.name,
                            "row": row,
                            "id": rid,
                            "variant": int(suffix[2:]) if suffix else 0,
                        },
                    )


def _image_ref(
    file: str,
    row: int,
    column: str,
    blob: bytes | None,
    images: dict[str, tuple[bytes, ReleaseError]],
    caption: str | None = None,
) -> ImageRef:
    where = f"{Path(file).name} row {row} column {column}"
    if not blob:
        raise ReleaseError(file, "no image bytes (null or empty)", row=row, column=column)
    sha = hashlib.sha256(blob).hexdigest()
    if sha not in images:
        # The error is built now, raised only if the image fails to verify.
        images[sha] = (blob, ReleaseError(file, "", row=row, column=column))
    return ImageRef(sha, lambda: blob, where, caption)


def _verify_images(images: dict[str, tuple[bytes, ReleaseError]]) -> None:
    """Decodes each distinct image once; Pillow releases the GIL while decoding, so threads help."""
    items = list(images.values())

    def check(item: tuple[bytes, ReleaseError]) -> str | None:
        try:
            verify_image(item[0])
        except ImageProblem as exc:
            return str(exc)
        return None

    workers = min(8, os.cpu_count() or 1, max(1, len(items) // 64))
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            problems = list(pool.map(check, items, chunksize=32))
    else:
        problems = [check(item) for item in items]
    for (_, err), problem in zip(items, problems, strict=True):
        if problem is not None:
            raise ReleaseError(err.file, problem, row=err.row, column=err.column)


def _dialogue_texts(
    table: pa.Table, file: str, split: str, name: str
) -> list[dict[str, list[str]]]:
    nulls = _struct_nulls(table, name)
    cols = {key: _struct_field(table, name, key) for key in NEEDED_KEYS[split]}
    needed = ", ".join(NEEDED_KEYS[split])
    out: list[dict[str, list[str]]] = []
    for row in range(table.num_rows):
        if nulls[row]:
            raise ReleaseError(file, "null dialogue", row=row, column=name)
        for key, values in cols.items():
            text = values[row]
            if text is None or not text.strip():
                raise ReleaseError(
                    file,
                    f"empty text; {split} dialogues need {needed}",
                    row=row,
                    column=f"{name}.{key}",
                )
        if split == "type_a":
            r1, r2 = cols["r1"][row], cols["r2"][row]
            out.append(
                {
                    "safe": [r1, r2, cols["safe_r3"][row]],
                    "unsafe": [r1, r2, cols["unsafe_r3"][row]],
                }
            )
        else:
            r2, r3 = cols["r2"][row], cols["r3"][row]
            out.append(
                {
                    "safe": [cols["safe_r1"][row], r2, r3],
                    "unsafe": [cols["unsafe_r1"][row], r2, r3],
                }
            )
    return out


def _questions(table: pa.Table, file: str, prefix: str) -> tuple[_PerRow, _PerRow]:
    """Per row: (questions of the safe transcript, questions of the unsafe transcript)."""
    mcq_col, tf_col = f"{prefix}_mcq", f"{prefix}_tf"
    safe_out: list[tuple[Question, ...]] = []
    unsafe_out: list[tuple[Question, ...]] = []
    for row, (mcqs, tfs) in enumerate(
        zip(_pylist(table, mcq_col), _pylist(table, tf_col), strict=True)
    ):
        safe: list[Question] = []
        unsafe: list[Question] = []
        for k, item in enumerate(mcqs or ()):
            column = f"{mcq_col}[{k}]"
            if item is None:
                raise ReleaseError(file, "null item", row=row, column=column)
            q = _mcq(file, row, column, item)
            tag = item.get("question_type")
            if not isinstance(tag, str) or not tag.strip():
                raise ReleaseError(
                    file, "missing question_type", row=row, column=f"{column}.question_type"
                )
            # `safe_intent` / `unsafe_intent` in the release; any safe.../unsafe... type routes.
            if tag.strip().lower().startswith("unsafe"):
                unsafe.append(q)
            elif tag.strip().lower().startswith("safe"):
                safe.append(q)
            else:
                raise ReleaseError(
                    file,
                    f"unknown question_type {tag!r}; expected safe_intent or unsafe_intent",
                    row=row,
                    column=f"{column}.question_type",
                )
        for k, item in enumerate(tfs or ()):
            column = f"{tf_col}[{k}]"
            if item is None:
                raise ReleaseError(file, "null item", row=row, column=column)
            text = item.get("question")
            if not isinstance(text, str) or not text.strip():
                raise ReleaseError(file, "empty question", row=row, column=f"{column}.question")
            truth = item.get("ground_truth")
            if not isinstance(truth, bool):
                raise ReleaseError(
                    file,
                    "ground_truth must be true or false",
                    row=row,
                    column=f"{column}.ground_truth",
                )
            unsafe.append(Question("tf", text, "true" if truth else "false", tag="tf"))
        safe_out.append(tuple(safe))
        unsafe_out.append(tuple(unsafe))
    return safe_out, unsafe_out


def _mcq(file: str, row: int, column: str, item: dict[str, Any]) -> Question:
    text = item.get("question")
    if not isinstance(text, str) or not text.strip():
        raise ReleaseError(file, "empty question", row=row, column=f"{column}.question")
    options = item.get("options")
    if not options or len(options) < 2 or len(options) > 26:
        n = 0 if not options else len(options)
        raise ReleaseError(
            file, f"{n} options; an MCQ needs 2 to 26", row=row, column=f"{column}.options"
        )
    for j, opt in enumerate(options):
        if not isinstance(opt, str) or not opt.strip():
            raise ReleaseError(file, "empty option", row=row, column=f"{column}.options[{j}]")
    options = _strip_letters(options)
    if any(not opt.strip() for opt in options):
        raise ReleaseError(file, "empty option", row=row, column=f"{column}.options")
    truth = item.get("ground_truth")
    letter = truth.strip().upper() if isinstance(truth, str) else ""
    if len(letter) != 1 or not "A" <= letter <= "Z":
        raise ReleaseError(
            file,
            f"ground_truth {truth!r} is not an option letter",
            row=row,
            column=f"{column}.ground_truth",
        )
    if ord(letter) - ord("A") >= len(options):
        last = chr(ord("A") + len(options) - 1)
        raise ReleaseError(
            file,
            f"ground_truth {letter!r} is outside the {len(options)} options (A-{last})",
            row=row,
            column=f"{column}.ground_truth",
        )
    tag = item.get("question_type")
    return Question("mcq", text, letter, tuple(options), tag=tag.strip() if tag else None)


def _strip_letters(options: list[str]) -> list[str]:
    """Drops `A. ` / `B) ` prefixes when every option carries its own letter, in order.

    The runner letters the options itself; a stored prefix would be shown twice.
    """
    stripped: list[str] = []
    for j, opt in enumerate(options):
        m = _LETTER_PREFIX_RE.match(opt)
        if m is None or m.group(1) != chr(ord("A") + j):
            return list(options)
        stripped.append(opt[m.end() :])
    return stripped
