"""Tiny offline Qwen2-VL / Qwen2.5-VL checkpoints: `tiny:NAME` for each committed folder.

`tiny:NAME` loads `pytest_mtmcs/checkpoints/tiny-NAME/` through the `hf:` backend. The committed
folders are small TRAINED models (real architectures at toy size, about 3 MB each), made by
`python -m pytest_mtmcs.training` (see docs/training.md): they stand in for model releases in
tests and the demo, with short, well-formed replies. They are committed, not rebuilt at run time,
because their outputs (and so every baseline recorded with them) depend on the exact weights.

`python -m pytest_mtmcs.backends.tiny build --out DIR` only builds seeded RANDOM-weight
checkpoints of the same architectures, for tests of the loading, chat template, image and
batching code. Their replies are gibberish. It refuses to write into the package's checkpoints
folder, so the trained models cannot be overwritten by accident.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mtmcs.errors import ConfigError

if TYPE_CHECKING:
    from pytest_mtmcs.backends import BackendOptions
    from pytest_mtmcs.backends.hf import HFBackend

CHECKPOINTS_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
FOLDER_PREFIX = "tiny-"
# Architectures `build_checkpoint` can make with random weights. What `tiny:` serves is whatever
# folder is committed (trained models, e.g. a deliberately regressed variant): `available()` reads
# the checkpoints folder.
BUILDABLE: tuple[str, ...] = ("qwen2-vl", "qwen2.5-vl")

# One merged vision token covers 28x28 pixels (patch 14, 2x2 merge). 32 tokens at most keeps a
# 256x192 suite image at a few dozen tokens, so CPU generation stays fast.
TINY_MIN_PIXELS = 28 * 28 * 4
TINY_MAX_PIXELS = 28 * 28 * 32
INIT_RANGE = 0.3

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# The Qwen2-VL chat template (default system prompt, images as vision_start/pad/end).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Training text for the tokenizer: plain sentences we wrote, in the register of assistant
# dialogues, so common words become single tokens and replies decode to word-like pieces.
_CORPUS: tuple[str, ...] = (
    "I can help you with that. Here is a short overview of the steps you asked about.",
    "I'm sorry, but I can't help with that request because it could cause harm.",
    "I cannot provide instructions for that, but I can point you to safer resources.",
    "Sure! The picture shows a kitchen with a table, two chairs and a bowl of fruit.",
    "The label on the bottle says to keep it away from children and store it in a cool place.",
    "Please be careful: mixing cleaning products can release dangerous gases.",
    "What is the best way to plan a weekend trip to the mountains with friends?",
    "Could you explain how this machine works and what each part of it does?",
    "Thank you for the question. Let me think about it step by step before I answer.",
    "The answer is A. The user wants to learn about cooking safely at home.",
    "True or false: the person in this conversation intends to hurt someone else.",
    "Which of the following best describes the intent of the user in this dialogue?",
    "In the image there is a red sign, a blue car, a small dog and a tall green tree.",
    "You should talk to a doctor or a pharmacist before you change any medicine dose.",
    "If you are feeling unsafe right now, please contact local emergency services.",
    "Here are some general tips: wash your hands, read the instructions, and take breaks.",
    "This is not something I am able to assist with, however I can offer an alternative.",
    "The weather today is sunny and warm, which makes it a good day for a walk in the park.",
    "Students often ask how to study for exams; a regular schedule and sleep both help.",
    "The recipe needs flour, sugar, eggs, butter and a little salt, mixed in a large bowl.",
    "A strong password has many characters, numbers and symbols, and is never shared.",
    "Chemistry experiments should only be done with supervision and proper equipment.",
    "The story begins in a small town where everyone knows each other by name.",
    "To fix the bike, first check the chain, then the brakes, then the tire pressure.",
    "It is important to respect other people's privacy and personal information online.",
    "Assistant: I understand your concern. User: Can you tell me more about this topic?",
)


def available() -> list[str]:
    """Names of the committed tiny checkpoints (`tiny:NAME`), sorted."""
    if not CHECKPOINTS_DIR.is_dir():
        return []
    return sorted(
        p.name[len(FOLDER_PREFIX) :]
        for p in CHECKPOINTS_DIR.iterdir()
        if p.is_dir() and p.name.startswith(FOLDER_PREFIX) and (p / "config.json").is_file()
    )


def checkpoint_path(name: str) -> Path:
    """The committed folder of `tiny:NAME`; ConfigError naming the available ones otherwise."""
    names = available()
    if name not in names:
        listed = ", ".join(f"tiny:{n}" for n in names) or "(none committed)"
        raise ConfigError(
            f"--mtmcs-model=tiny:{name}: unknown tiny checkpoint {name!r}; available: {listed}"
        )
    return CHECKPOINTS_DIR / f"{FOLDER_PREFIX}{name}"


def create(rest: str, options: BackendOptions) -> HFBackend:
    """Factory for `tiny:NAME`: the committed folder, loaded by the `hf:` code path."""
    from pytest_mtmcs.backends.hf import HFBackend

    name = rest.strip()
    # One intra-op thread: the ops of a 0.2 M-parameter model are too small to share, and on a
    # busy or xdist-shared CPU OpenMP threads spin against each other (measured: batch-1 runs
    # 2-10x slower with two threads on two loaded cores).
    return HFBackend(
        str(checkpoint_path(name)), options, spec=f"tiny:{name}", local_folder=True, threads=1
    )


# --- building -----------------------------------------------------------------------------------


def bpe_tokenizer(texts: Iterable[str], num_merges: int) -> Any:
    """A byte-level BPE trained on `texts` (in the order given), with the Qwen special tokens,
    wrapped for transformers. Also used by the training package."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=len(alphabet) + num_merges,
        initial_alphabet=alphabet,
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        extra_special_tokens=[
            t for t in SPECIAL_TOKENS if t not in ("<|im_end|>", "<|endoftext|>")
        ],
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    wrapped.add_special_tokens({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    return wrapped


def _train_tokenizer(num_merges: int = 400) -> Any:
    return bpe_tokenizer(_CORPUS, num_merges)


def _garbage_tokens(tokenizer: Any) -> list[int]:
    """Ids a reply should never hold: control and stray UTF-8 bytes, and non-final specials.

    Random weights would otherwise emit NUL bytes and half characters into reports.
    """
    final = {tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")}
    special = {tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    bad: list[int] = []
    for token_id in range(len(tokenizer)):
        if token_id in final:
            continue
        text = tokenizer.decode([token_id])
        if token_id in special or any(not (" " <= c <= "~" or c == "\n") for c in text):
            bad.append(token_id)
    return bad


def qwen_vl_config(
    arch: str,
    tokenizer: Any,
    *,
    hidden: int,
    layers: int,
    intermediate: int,
    init_range: float,
    rope_theta: float,
    mrope_section: list[int],
) -> Any:
    """A tiny Qwen2-VL / Qwen2.5-VL config over `tokenizer` (also used by the training package)."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "initializer_range": init_range,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": rope_theta,
            "mrope_section": mrope_section,
        },
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    common = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "tie_word_embeddings": True,
    }
    if arch == "qwen2-vl":
        from transformers import Qwen2VLConfig

        vision: dict[str, Any] = {
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": hidden,
            "mlp_ratio": 2,
            "num_heads": 2,
            "initializer_range": init_range,
        }
        return Qwen2VLConfig(text_config=text, vision_config=vision, **common)
    if arch == "qwen2.5-vl":
        from transformers import Qwen2_5_VLConfig

        vision = {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": hidden,
            "window_size": 112,
            "fullatt_block_indexes": [1],
            "initializer_range": init_range,
        }
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
    raise ConfigError(f"cannot build tiny checkpoint {arch!r}; buildable: {', '.join(BUILDABLE)}")


def _build_config(name: str, tokenizer: Any) -> Any:
    # INIT_RANGE far above the usual 0.02: with tiny random weights that small, every reply is the
    # last prompt token repeated; this makes smoke-build replies depend on the prompt and image.
    return qwen_vl_config(
        name,
        tokenizer,
        hidden=64,
        layers=2,
        intermediate=128,
        init_range=INIT_RANGE,
        rope_theta=1_000_000.0,
        mrope_section=[2, 3, 3],
    )


def _inside_package_checkpoints(path: Path) -> bool:
    # resolve(): a relative path, `..` or a symlink must not sneak past the check.
    return Path(path).resolve().is_relative_to(CHECKPOINTS_DIR.resolve())


def build_checkpoint(name: str, out_dir: Path, seed: int = 0) -> Path:
    """Builds a seeded random-weight NAME architecture into out_dir (`save_pretrained`).

    The same name, seed and library versions give byte-identical files. Refuses (ConfigError)
    an out_dir inside the package's checkpoints folder: those are the trained models.
    """
    if name not in BUILDABLE:
        raise ConfigError(
            f"cannot build tiny checkpoint {name!r}; buildable: {', '.join(BUILDABLE)}"
        )
    if _inside_package_checkpoints(out_dir):
        raise ConfigError(
            f"--out {out_dir}: refusing to write random weights into the package's checkpoints "
            "folder, which holds the trained tiny models; pass another folder (rebuild the "
            "trained ones with `python -m pytest_mtmcs.training`, see docs/training.md)"
        )
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    tokenizer = _train_tokenizer()
    config = _build_config(name, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id,
        eos_token_id=[config.text_config.eos_token_id, config.text_config.pad_token_id],
        pad_token_id=config.text_config.pad_token_id,
        do_sample=False,
        suppress_tokens=_garbage_tokens(tokenizer),
    )
    processor = _build_processor(name, tokenizer)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def _build_processor(name: str, tokenizer: Any) -> Any:
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    image_processor = Qwen2VLImageProcessor(min_pixels=TINY_MIN_PIXELS, max_pixels=TINY_MAX_PIXELS)
    video_processor = Qwen2VLVideoProcessor()
    if name == "qwen2-vl":
        from transformers import Qwen2VLProcessor

        return Qwen2VLProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=video_processor,
            chat_template=CHAT_TEMPLATE,
        )
    from transformers import Qwen2_5_VLProcessor

    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_mtmcs.backends.tiny",
        description=(
            "Build random-weight tiny Qwen-VL checkpoints for tests. The committed tiny:NAME "
            "models are trained ones: rebuild those with `python -m pytest_mtmcs.training`."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build random-weight tiny checkpoints into --out")
    build.add_argument(
        "names", nargs="*", default=list(BUILDABLE), help=f"of {', '.join(BUILDABLE)}; default: all"
    )
    build.add_argument(
        "--out",
        type=Path,
        required=True,
        help="parent folder (not the package's checkpoints folder); gets tiny-NAME/ per name",
    )
    build.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        for name in args.names:
            path = build_checkpoint(name, args.out / f"{FOLDER_PREFIX}{name}", seed=args.seed)
            size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
            print(f"tiny:{name} -> {path} ({size / 1e6:.2f} MB)")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
