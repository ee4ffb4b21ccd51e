"""Builds a synthetic MTMCS-Bench-scale release folder for benchmarks.

Same layout, column types and Hugging Face feature metadata as the real release
(`OUT/data/type_a-00000-of-00001.parquet`, `type_b-...`), 752 rows per split by default, every
row with a main image and 3 variant images as distinct PNG bytes, and texts of realistic length.

    python benchmarks/make_mtmcs_scale.py --out /tmp/mtmcs-scale [--rows 752] [--shards 1]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import time
from pathlib import Path
from typing import Any

SPLITS = ("type_a", "type_b")
DIALOGUE_KEYS = ("r1", "unsafe_r1", "safe_r1", "r2", "r3", "unsafe_r3", "safe_r3")
# The keys each split fills; the others are empty strings, as in the release.
USED_KEYS = {
    "type_a": ("r1", "r2", "safe_r3", "unsafe_r3"),
    "type_b": ("safe_r1", "unsafe_r1", "r2", "r3"),
}
WORDS = (
    "image photo person table office laptop device security gate fence network traffic field "
    "staff visible layout setup which would most practical place looking given these area "
    "people could someone there safety maintenance inspect route access door window kitchen "
    "tools chemical store street car parking camera badge screen cable router lock drawer"
).split()


def _features() -> dict[str, Any]:
    s = {"dtype": "string", "_type": "Value"}
    mcq = {
        "feature": {
            "question": s,
            "options": {"feature": s, "_type": "List"},
            "ground_truth": s,
            "question_type": s,
        },
        "_type": "List",
    }
    tf = {
        "feature": {"question": s, "ground_truth": {"dtype": "bool", "_type": "Value"}},
        "_type": "List",
    }
    dialogue = {k: s for k in DIALOGUE_KEYS}
    return {
        "id": {"dtype": "int64", "_type": "Value"},
        "image": {"_type": "Image"},
        "variant_images": {"feature": {"_type": "Image"}, "_type": "List"},
        "unsafe_intent": s,
        "multimodal_dialogue": dialogue,
        "multimodal_mcq": mcq,
        "multimodal_tf": tf,
        "unimodal_dialogue": dialogue,
        "unimodal_mcq": mcq,
        "unimodal_tf": tf,
    }


def schema() -> Any:
    """The release's arrow schema, with the `huggingface` feature metadata."""
    import pyarrow as pa

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    dialogue = pa.struct([(k, pa.string()) for k in DIALOGUE_KEYS])
    mcq = pa.list_(
        pa.struct(
            [
                ("question", pa.string()),
                ("options", pa.list_(pa.string())),
                ("ground_truth", pa.string()),
                ("question_type", pa.string()),
            ]
        )
    )
    tf = pa.list_(pa.struct([("question", pa.string()), ("ground_truth", pa.bool_())]))
    fields = [("id", pa.int64()), ("image", image), ("variant_images", pa.list_(image))]
    fields += [("unsafe_intent", pa.string())]
    for prefix in ("multimodal", "unimodal"):
        fields += [(f"{prefix}_dialogue", dialogue), (f"{prefix}_mcq", mcq), (f"{prefix}_tf", tf)]
    meta = {"huggingface": json.dumps({"info": {"features": _features()}})}
    return pa.schema(fields, metadata=meta)


def _sentence(rng: random.Random, lo: int = 14, hi: int = 34) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]
    words[0] = words[0].capitalize()
    return " ".join(words) + "?"


def _png(rng: random.Random, size: tuple[int, int], label: str) -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    w, h = size
    for _ in range(6):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        box = (x0, y0, min(w, x0 + rng.randint(10, w // 2)), min(h, y0 + rng.randint(10, h // 2)))
        draw.rectangle(box, fill=tuple(rng.randrange(256) for _ in range(3)))
    draw.text((8, 8), label, fill=(0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # fast to write; decoding cost is similar
    return buf.getvalue()


def _questions(rng: random.Random, kind: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    mcq = []
    for qtype in ("safe_intent", "safe_intent", "unsafe_intent", "unsafe_intent"):
        mcq.append(
            {
                "question": f"In this {kind} conversation, {_sentence(rng, 8, 16).lower()}",
                "options": [_sentence(rng, 6, 14) for _ in range(4)],
                "ground_truth": "ABCD"[rng.randrange(4)],
                "question_type": qtype,
            }
        )
    tf = [{"question": _sentence(rng, 8, 16), "ground_truth": rng.random() < 0.5} for _ in range(2)]
    return mcq, tf


def _row(rng: random.Random, split: str, rid: int, size: tuple[int, int]) -> dict[str, Any]:
    row: dict[str, Any] = {"id": rid}
    name = f"mtmcs_{split}_{rid}"
    row["image"] = {"bytes": _png(rng, size, f"{split} {rid}"), "path": f"{name}_main.png"}
    row["variant_images"] = [
        {"bytes": _png(rng, size, f"{split} {rid} v{k}"), "path": f"{name}_variant{k}.png"}
        for k in range(3)
    ]
    row["unsafe_intent"] = _sentence(rng, 6, 12).rstrip("?")
    for prefix, kind in (("multimodal", "image-based"), ("unimodal", "text-only")):
        row[f"{prefix}_dialogue"] = {
            k: (_sentence(rng) if k in USED_KEYS[split] else "") for k in DIALOGUE_KEYS
        }
        row[f"{prefix}_mcq"], row[f"{prefix}_tf"] = _questions(rng, kind)
    return row


def build(
    out: str | Path,
    *,
    rows: int = 752,
    shards: int = 1,
    seed: int = 0,
    image_size: tuple[int, int] = (320, 240),
) -> Path:
    """Writes OUT/data/{type_a,type_b}-0000i-of-0000N.parquet; returns OUT."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    sch = schema()
    for split in SPLITS:
        rng = random.Random(f"{seed}-{split}")
        all_rows = [_row(rng, split, rid, image_size) for rid in range(rows)]
        per = -(-rows // shards) if rows else 0
        for k in range(shards):
            part = all_rows[k * per : (k + 1) * per]
            table = pa.Table.from_pylist(part, schema=sch)
            pq.write_table(table, data / f"{split}-{k:05d}-of-{shards:05d}.parquet")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder to write (created)")
    parser.add_argument("--rows", type=int, default=752, help="rows per split (default 752)")
    parser.add_argument("--shards", type=int, default=1, help="parquet files per split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", default="320x240", help="WxH of the PNGs")
    parser.add_argument(
        "--time-load", action="store_true", help="then time the mtmcs-bench importer on it"
    )
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.image_size.lower().split("x"))
    start = time.perf_counter()
    out = build(args.out, rows=args.rows, shards=args.shards, seed=args.seed, image_size=(w, h))
    size = sum(p.stat().st_size for p in (out / "data").glob("*.parquet"))
    print(
        f"wrote {out}/data: {len(SPLITS)} splits x {args.rows} rows in {args.shards} shard(s), "
        f"{size / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s"
    )
    if args.time_load:
        time_load(out)


def time_load(out: Path, repeat: int = 3) -> None:
    """Prints the best of `repeat` loads (Suite built, images verified) per importer option set."""
    from pytest_mtmcs.suite.importers import mtmcs_bench

    cases: list[dict[str, Any]] = [
        {},
        {"verify_images": False},
        {"variant_images": True},
        {"variant_images": True, "verify_images": False},
    ]
    mtmcs_bench.load(out, splits=["type_a"], modalities=["text"])  # imports pyarrow once
    for options in cases:
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            suite = mtmcs_bench.load(out, **options)
            best = min(best, time.perf_counter() - start)
        print(f"load {options or 'defaults'}: {len(suite.dialogues)} dialogues, {best:.2f} s")


if __name__ == "__main__":
    main()
