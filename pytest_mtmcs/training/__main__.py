"""`python -m pytest_mtmcs.training --recipe NAME --out DIR`: train one tiny fixture checkpoint."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_mtmcs.training.data import RECIPES


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_mtmcs.training",
        description="Train a tiny Qwen-VL fixture checkpoint on CPU (seeded, a few minutes).",
    )
    parser.add_argument("--recipe", choices=RECIPES, required=True)
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder to write (pytest_mtmcs/checkpoints/tiny-RECIPE replaces the committed one)",
    )
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    parser.add_argument("--seed", type=int, default=None, help="override the recipe's init seed")
    args = parser.parse_args(argv)
    from pytest_mtmcs.training.train import train_checkpoint

    overrides = {k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None}
    train_checkpoint(args.recipe, args.out, **overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
