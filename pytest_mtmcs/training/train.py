"""Seeded CPU training of the tiny Qwen2-VL / Qwen2.5-VL fixture checkpoints.

One call of `train_checkpoint` builds a byte-level BPE from the generated training text, a small
Qwen2-VL or Qwen2.5-VL model (text hidden 128, 2 layers; a 2-layer vision tower of width 32),
trains it on the recipe's chats (loss on the assistant replies only) and writes a folder that the
`tiny:` backend loads. torch and transformers are imported inside the functions.

Determinism: every random choice comes from the seed (data, images, init, batch order); the
training runs on CPU with deterministic algorithms and a fixed thread count.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_mtmcs.training.data import RECIPES, Sample, corpus_text, generate

SYSTEM_PROMPT = "You are a helpful assistant."
IGNORE = -100


@dataclass(frozen=True)
class Recipe:
    """Everything a training run depends on besides the code."""

    name: str
    arch: str  # qwen2-vl | qwen2.5-vl
    dialogues: int = 2000
    steps: int = 300
    batch_tokens: int = 4096
    lr: float = 3e-3
    warmup: int = 30
    hidden: int = 128
    layers: int = 2
    vocab_merges: int = 1500
    seed: int = 0
    data_seed: int = 1234
    threads: int = 2
    image_share: float = 0.5


def recipe(name: str, **overrides: Any) -> Recipe:
    """The recipe of a named checkpoint, with optional overrides (for quick tests)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; expected one of {', '.join(RECIPES)}")
    arch = "qwen2-vl" if name == "qwen2-vl" else "qwen2.5-vl"
    return Recipe(name=name, arch=arch, **overrides)


# --- tokenizer, config, processor --------------------------------------------------------------


def build_tokenizer(texts: Sequence[str], merges: int) -> Any:
    """A byte-level BPE trained on `texts`, with the Qwen special tokens, wrapped for transformers."""
    from pytest_mtmcs.backends.tiny import bpe_tokenizer

    # Sorted, deduplicated input: the merges then do not depend on sample order.
    return bpe_tokenizer(sorted(set(texts)), merges)


def build_config(arch: str, tokenizer: Any, hidden: int, layers: int) -> Any:
    from pytest_mtmcs.backends.tiny import qwen_vl_config

    half = hidden // 4 // 2  # 4 heads
    # mrope splits each head's rotary half-dimension into temporal / height / width sections.
    t_sec = half // 4
    section = [t_sec, (half - t_sec) // 2, half - t_sec - (half - t_sec) // 2]
    return qwen_vl_config(
        arch,
        tokenizer,
        hidden=hidden,
        layers=layers,
        intermediate=hidden * 3,
        init_range=0.02,
        rope_theta=10_000.0,
        mrope_section=section,
    )


def synthetic_image(seed: int) -> Any:
    """A seeded picture of coloured shapes, sized like the suite's images (the model may ignore it)."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    size = rng.choice(((256, 192), (192, 256), (224, 224), (320, 240)))
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(2, 6)):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        box = (x0, y0, x0 + rng.randint(10, 120), y0 + rng.randint(10, 120))
        fill = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return image


# --- encoding --------------------------------------------------------------------------------


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    pixel_values: Any | None
    grid_thw: Any | None


def render(sample: Sample, image_tokens: int) -> tuple[str, list[tuple[int, int]]]:
    """The chat-template text of a sample and the character spans of its supervised replies."""
    parts = [f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"]
    spans: list[tuple[int, int]] = []
    length = len(parts[0])
    for i, (role, text) in enumerate(sample.messages):
        head = f"<|im_start|>{role}\n"
        if i == sample.image_message:
            head += "<|vision_start|>" + "<|image_pad|>" * image_tokens + "<|vision_end|>"
        start = length + len(head)
        chunk = f"{head}{text}<|im_end|>\n"
        if i in sample.train_on:
            spans.append((start, start + len(text) + len("<|im_end|>")))
        parts.append(chunk)
        length += len(chunk)
    return "".join(parts), spans


def encode(samples: Sequence[Sample], tokenizer: Any, image_processor: Any) -> list[Encoded]:
    import torch

    out: list[Encoded] = []
    # Processing a picture costs tens of ms: each pool picture is processed once.
    pictures: dict[int, tuple[Any, Any]] = {}
    for sample in samples:
        pixel_values = grid = None
        image_tokens = 0
        if sample.image_message is not None:
            if sample.image_seed not in pictures:
                processed = image_processor(images=[synthetic_image(sample.image_seed)])
                pictures[sample.image_seed] = (
                    torch.as_tensor(processed["pixel_values"]),
                    torch.as_tensor(processed["image_grid_thw"]),
                )
            pixel_values, grid = pictures[sample.image_seed]
            image_tokens = int(grid.prod().item()) // (image_processor.merge_size**2)
        text, spans = render(sample, image_tokens)
        enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        labels = [
            tid if any(s <= a and b <= e for s, e in spans) else IGNORE
            for tid, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)
        ]
        out.append(Encoded(list(enc["input_ids"]), labels, pixel_values, grid))
    return out


def batches(encoded: Sequence[Encoded], batch_tokens: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar lengths, each holding about `batch_tokens` padded tokens."""
    order = list(range(len(encoded)))
    rng.shuffle(order)
    out: list[list[int]] = []
    for start in range(0, len(order), 256):
        pool = sorted(order[start : start + 256], key=lambda i: len(encoded[i].input_ids))
        current: list[int] = []
        longest = 0
        for i in pool:
            n = len(encoded[i].input_ids)
            if current and max(longest, n) * (len(current) + 1) > batch_tokens:
                out.append(current)
                current, longest = [], 0
            current.append(i)
            longest = max(longest, n)
        if current:
            out.append(current)
    rng.shuffle(out)
    return out


def collate(encoded: Sequence[Encoded], pad_id: int, image_token_id: int) -> dict[str, Any]:
    import torch

    width = max(len(e.input_ids) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, e in enumerate(encoded):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    batch: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    pixels = [e.pixel_values for e in encoded if e.pixel_values is not None]
    if pixels:
        # As the processor marks them at inference: M-RoPE gives image tokens 2-D positions.
        batch["mm_token_type_ids"] = (ids == image_token_id).long()
        batch["pixel_values"] = torch.cat(pixels)
        batch["image_grid_thw"] = torch.cat([e.grid_thw for e in encoded if e.grid_thw is not None])
    return batch


# --- training --------------------------------------------------------------------------------


def _garbage_tokens(tokenizer: Any) -> list[int]:
    from pytest_mtmcs.backends import tiny

    return list(tiny._garbage_tokens(tokenizer))


def build(r: Recipe) -> tuple[Any, Any, Any, list[Sample]]:
    """(model, tokenizer, processor, samples) for a recipe, before training."""
    import torch
    from transformers import AutoModelForImageTextToText

    from pytest_mtmcs.backends import tiny

    samples = generate(r.name, r.dialogues, seed=r.data_seed, image_share=r.image_share)
    # The tokenizer sees the text of every recipe, so all three checkpoints share one vocabulary.
    texts = corpus_text(generate("qwen2-vl", r.dialogues, seed=r.data_seed))
    texts += corpus_text(generate("qwen2.5-vl-regressed", r.dialogues, seed=r.data_seed))
    tokenizer = build_tokenizer(texts, r.vocab_merges)
    config = build_config(r.arch, tokenizer, r.hidden, r.layers)
    torch.manual_seed(r.seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    processor = tiny._build_processor(r.arch, tokenizer)
    return model, tokenizer, processor, samples


def train(
    r: Recipe,
    log: Callable[[str], None] = print,
) -> tuple[Any, Any, Any, list[float]]:
    """Trains a recipe; returns (model, tokenizer, processor, per-step losses)."""
    import torch

    torch.set_num_threads(r.threads)
    torch.use_deterministic_algorithms(True)
    started = time.perf_counter()
    model, tokenizer, processor, samples = build(r)
    encoded = encode(samples, tokenizer, processor.image_processor)
    log(
        f"{r.name}: {len(samples)} samples, {sum(len(e.input_ids) for e in encoded)} tokens, "
        f"vocab {len(tokenizer)}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params "
        f"({time.perf_counter() - started:.1f} s)"
    )
    torch.manual_seed(r.seed)
    rng = random.Random(r.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=r.lr, betas=(0.9, 0.98), weight_decay=0.01)

    def lr_at(step: int) -> float:
        if step < r.warmup:
            return r.lr * (step + 1) / r.warmup
        progress = (step - r.warmup) / max(1, r.steps - r.warmup)
        return r.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    pad_id = tokenizer.pad_token_id
    queue: list[list[int]] = []
    losses: list[float] = []
    model.train()
    for step in range(r.steps):
        if not queue:
            queue = batches(encoded, r.batch_tokens, rng)
        batch = collate([encoded[i] for i in queue.pop()], pad_id, model.config.image_token_id)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.item()))
        if step % 20 == 0 or step == r.steps - 1:
            recent = losses[-20:]
            log(
                f"step {step:4d}  loss {sum(recent) / len(recent):.4f}  "
                f"lr {lr_at(step):.2e}  {time.perf_counter() - started:.0f} s"
            )
    model.eval()
    return model, tokenizer, processor, losses


def save(model: Any, tokenizer: Any, processor: Any, out_dir: Path) -> Path:
    """Writes the checkpoint folder the `tiny:` backend loads."""
    from transformers import GenerationConfig

    text = model.config.text_config
    model.generation_config = GenerationConfig(
        bos_token_id=text.bos_token_id,
        eos_token_id=[text.eos_token_id, text.pad_token_id],
        pad_token_id=text.pad_token_id,
        do_sample=False,
        suppress_tokens=_garbage_tokens(tokenizer),
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def train_checkpoint(
    name: str, out_dir: Path, log: Callable[[str], None] = print, **overrides: Any
) -> Path:
    """Trains recipe `name` and saves it to `out_dir`; returns out_dir."""
    r = recipe(name, **overrides)
    started = time.perf_counter()
    model, tokenizer, processor, _ = train(r, log=log)
    path = save(model, tokenizer, processor, out_dir)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    log(f"{name}: saved {path} ({size / 1e6:.2f} MB) in {time.perf_counter() - started:.0f} s")
    return path
