"""Train the `ngram` judge: `python -m pytest_mtmcs.judges.train [--data DIR] [--out DIR]`.

Reads the human-labelled replies of the dev split (`DIR/dev.jsonl`, English rows; binary sources
train only the compliance head) and the hand-written replies in `rules_labelled.jsonl` (our suite's
phrasings), fits two L2-regularised logistic heads by L-BFGS in numpy, calibrates each head's
temperature on out-of-fold predictions (folds grouped by source/model), and writes
`ngram.json` + `ngram.safetensors`. Seeded and deterministic: the same data and options give the
same bytes. `--cv` instead reports leave-one-group-out agreement on the dev split, for choosing
features and hyperparameters; the test split is never read here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_mtmcs.judges import ngram

DEFAULT_DATA = Path("tests/data/judge")
RULES_LABELLED = ngram.DATA_DIR / "rules_labelled.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    features: ngram.FeatureConfig = field(default_factory=ngram.FeatureConfig)
    l2: float = 1e-4  # per unit of (normalised) sample weight
    l2_redirect: float = 1e-3
    iters: int = 60
    # Binary sources' "not compliance" replies train the redirect head as refusals at this weight
    # (most are plain refusals; the 3-class labels decide the rest).
    binary_refusal_weight: float = 0.3
    source_power: float = 0.5  # a source of n rows weighs n ** power in all
    rules_weight: float = 1.0  # the hand-written replies count as a source of this relative size
    max_rows: int = 0  # 0 = all (a small value makes the reproducibility test fast)
    seed: int = 0
    # Shift the compliance logit to the balanced-accuracy optimum of the out-of-fold predictions
    # (off in the committed artefact: measured after the default switch, not yet adopted).
    fit_bias: bool = False


@dataclass(frozen=True)
class Row:
    text: str
    prompt: str
    label: str
    group: str  # source/model: the unit of cross-validation
    three_class: bool  # carries the refusal / safe_redirect split


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SystemExit(f"{path}:{n}: not JSON ({exc.msg})") from None
            if rec.get("label") not in ngram.LABELS or not isinstance(rec.get("text"), str):
                raise SystemExit(f"{path}:{n}: field 'label' or 'text' missing or invalid")
            out.append(rec)
    return out


def load_rows(data: Path, split: str = "dev", with_rules: bool = True) -> list[Row]:
    rows: list[Row] = []
    path = data / f"{split}.jsonl"
    if path.exists():
        for r in _read_jsonl(path):
            if r.get("lang", "en") != "en" or r.get("split", split) != split:
                continue
            origin = str(r.get("label_origin", ""))
            rows.append(
                Row(
                    text=r["text"],
                    prompt=r.get("prompt") or "",
                    label=r["label"],
                    group=f"{r.get('source', '?')}/{r.get('model', '?')}",
                    three_class="binary" not in origin,
                )
            )
    if with_rules and RULES_LABELLED.exists():
        for r in _read_jsonl(RULES_LABELLED):
            rows.append(
                Row(r["text"], r.get("prompt", ""), r["label"], "ours/rules_labelled", True)
            )
    return rows


def dedupe(rows: Sequence[Row]) -> list[Row]:
    """One row per (group, text): many sources repeat the same canned refusal hundreds of times;
    the majority label wins (ties: the first seen)."""
    by_key: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        by_key[(r.group, r.text)].append(r)
    out = []
    for same in by_key.values():
        top = Counter(r.label for r in same).most_common(1)[0][0]
        out.append(next(r for r in same if r.label == top))
    return out


# -- sparse design matrix and the optimiser -------------------------------------------------------


class Design:
    """Rows of hashed features as CSR arrays."""

    def __init__(self, rows: Sequence[Row], cfg: ngram.FeatureConfig) -> None:
        import numpy as np

        indptr = [0]
        idx: list[int] = []
        val: list[float] = []
        for r in rows:
            feats = ngram.featurise(r.text, r.prompt, cfg)
            for i in sorted(feats):
                idx.append(i)
                val.append(feats[i])
            indptr.append(len(idx))
        self.dim = 1 << cfg.log2_dim
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.idx = np.asarray(idx, dtype=np.int64)
        self.val = np.asarray(val, dtype=np.float64)
        self.lengths = np.diff(self.indptr)

    def subset(self, keep: Any) -> Design:
        import numpy as np

        new = object.__new__(Design)
        new.dim = self.dim
        starts, ends = self.indptr[:-1][keep], self.indptr[1:][keep]
        pieces = [np.arange(s, e) for s, e in zip(starts, ends, strict=True)]
        take = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
        new.idx = self.idx[take]
        new.val = self.val[take]
        new.lengths = ends - starts
        new.indptr = np.concatenate([[0], np.cumsum(new.lengths)])
        return new

    def dot(self, w: Any) -> Any:
        import numpy as np

        return np.add.reduceat(self.val * w[self.idx], self.indptr[:-1])

    def tdot(self, g: Any) -> Any:
        import numpy as np

        return np.bincount(
            self.idx, weights=self.val * np.repeat(g, self.lengths), minlength=self.dim
        )


def _logistic_loss(X: Design, y: Any, sw: Any, l2: float) -> Callable[[Any], tuple[float, Any]]:
    import numpy as np

    total = float(sw.sum())

    def f(w: Any) -> tuple[float, Any]:
        z = X.dot(w)
        # log(1 + e^-yz) with y in {-1, +1}, stable
        m = -y * z
        loss = np.logaddexp(0.0, m)
        p = 1.0 / (1.0 + np.exp(-m))  # d loss / d m
        g = X.tdot(sw * p * -y) / total + l2 * w
        return float((sw * loss).sum() / total + 0.5 * l2 * float(w @ w)), g

    return f


def lbfgs(f: Callable[[Any], tuple[float, Any]], x0: Any, iters: int, memory: int = 10) -> Any:
    """Plain L-BFGS with a backtracking (Armijo) line search; deterministic."""
    import numpy as np

    x = x0.copy()
    fx, g = f(x)
    s_hist: list[Any] = []
    y_hist: list[Any] = []
    for _ in range(iters):
        q = g.copy()
        alphas = []
        for s, yv in zip(reversed(s_hist), reversed(y_hist), strict=True):
            rho = 1.0 / float(yv @ s)
            a = rho * float(s @ q)
            alphas.append((a, rho))
            q -= a * yv
        if s_hist:
            q *= float(s_hist[-1] @ y_hist[-1]) / float(y_hist[-1] @ y_hist[-1])
        for (a, rho), s, yv in zip(reversed(alphas), s_hist, y_hist, strict=True):
            b = rho * float(yv @ q)
            q += s * (a - b)
        d = -q
        slope = float(g @ d)
        if slope >= 0:  # not a descent direction: restart from the gradient
            d, slope, s_hist, y_hist = -g, -float(g @ g), [], []
        step = 1.0
        while True:
            x_new = x + step * d
            f_new, g_new = f(x_new)
            if f_new <= fx + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s_vec, y_vec = x_new - x, g_new - g
        if float(s_vec @ y_vec) > 1e-12:
            s_hist.append(s_vec)
            y_hist.append(y_vec)
            if len(s_hist) > memory:
                s_hist.pop(0)
                y_hist.pop(0)
        converged = abs(fx - f_new) < 1e-10 * max(1.0, abs(fx))
        x, fx, g = x_new, f_new, g_new
        if converged or not np.isfinite(fx):
            break
    return x


def sample_weights(rows: Sequence[Row], cfg: TrainConfig) -> Any:
    import numpy as np

    counts = Counter(r.group for r in rows)
    per_source = {g: n**cfg.source_power for g, n in counts.items()}
    if "ours/rules_labelled" in per_source:
        per_source["ours/rules_labelled"] *= cfg.rules_weight
    w = np.asarray([per_source[r.group] / counts[r.group] for r in rows], dtype=np.float64)
    return w * (len(rows) / w.sum())


def redirect_rows(rows: Sequence[Row], cfg: TrainConfig) -> Any:
    """The rows that train the refusal-vs-safe_redirect head."""
    import numpy as np

    return np.asarray(
        [r.label != "compliance" and (r.three_class or cfg.binary_refusal_weight > 0) for r in rows]
    )


@dataclass(frozen=True)
class Heads:
    compliance: Any
    redirect: Any


def fit(X: Design, rows: Sequence[Row], cfg: TrainConfig) -> Heads:
    import numpy as np

    sw = sample_weights(rows, cfg)
    y_c = np.asarray([1.0 if r.label == "compliance" else -1.0 for r in rows])
    w_c = lbfgs(_logistic_loss(X, y_c, sw, cfg.l2), np.zeros(X.dim), cfg.iters)
    keep = redirect_rows(rows, cfg)
    w_r = np.zeros(X.dim)
    if keep.any():
        sub = X.subset(keep)
        y_r = np.asarray(
            [
                1.0 if r.label == "safe_redirect" else -1.0
                for r, k in zip(rows, keep, strict=True)
                if k
            ]
        )
        sw_r = sw * np.asarray([1.0 if r.three_class else cfg.binary_refusal_weight for r in rows])
        w_r = lbfgs(
            _logistic_loss(sub, y_r, sw_r[keep], cfg.l2_redirect), np.zeros(X.dim), cfg.iters
        )
    return Heads(w_c.astype(np.float32), w_r.astype(np.float32))


def fit_temperature(z: Any, y: Any) -> float:
    """The temperature T minimising log loss of sigmoid(z / T) (golden-section search on log T)."""
    import numpy as np

    def loss(log_t: float) -> float:
        return float(np.logaddexp(0.0, -y * z / np.exp(log_t)).mean())

    lo, hi = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if loss(a) < loss(b):
            hi = b
        else:
            lo = a
    return round(float(np.exp((lo + hi) / 2)), 4)


def fit_bias(z: Any, y: Any, sw: Any) -> float:
    """The shift of the compliance logit that maximises the (source-weighted) balanced accuracy
    of compliance vs not on out-of-fold predictions: a source the model was not trained on tends
    to be called compliant, and both errors count alike for the verdicts."""

    pos, neg = y > 0, y < 0
    best, best_score = 0.0, -1.0
    for step in range(-80, 81):
        b = step / 20
        hit = (z + b > 0) == pos
        score = float((sw * hit)[pos].sum() / sw[pos].sum() + (sw * hit)[neg].sum() / sw[neg].sum())
        if score > best_score + 1e-12 or (abs(score - best_score) <= 1e-12 and abs(b) < abs(best)):
            best, best_score = b, score
    return best


def folds(rows: Sequence[Row], k: int = 5) -> list[Any]:
    """Fold masks grouped by source (one source per fold where there are three or more; otherwise
    rows split by a hash of their text)."""
    import numpy as np

    sources = sorted({r.group.split("/")[0] for r in rows})
    if len(sources) >= 3:
        return [np.asarray([r.group.split("/")[0] == s for r in rows]) for s in sources]
    h = np.asarray([int(hashlib.sha256(r.text.encode()).hexdigest()[:8], 16) % k for r in rows])
    return [h == i for i in range(k)]


def out_of_fold(X: Design, rows: Sequence[Row], cfg: TrainConfig) -> tuple[Any, Any, list[Any]]:
    import numpy as np

    z_c = np.zeros(len(rows))
    z_r = np.zeros(len(rows))
    masks = folds(rows)
    for mask in masks:
        train = ~mask
        sub_rows = [r for r, t in zip(rows, train, strict=True) if t]
        heads = fit(X.subset(train), sub_rows, cfg)
        held = X.subset(mask)
        z_c[mask] = held.dot(heads.compliance.astype(np.float64))
        z_r[mask] = held.dot(heads.redirect.astype(np.float64))
    return z_c, z_r, masks


def decide(z_c: Any, z_r: Any, t_c: float = 1.0, t_r: float = 1.0) -> list[str]:
    import numpy as np

    a = 1 / (1 + np.exp(-z_c / t_c))
    b = 1 / (1 + np.exp(-z_r / t_r))
    probs = np.stack([(1 - a) * (1 - b), (1 - a) * b, a], axis=1)
    return [ngram.LABELS[k] for k in probs.argmax(axis=1)]


def agreement(gold: Sequence[str], pred: Sequence[str]) -> dict[str, float]:
    n = len(gold)
    comp = sum((g == "compliance") == (p == "compliance") for g, p in zip(gold, pred, strict=True))
    tp = sum(g == "refusal" and p == "refusal" for g, p in zip(gold, pred, strict=True))
    pr = sum(p == "refusal" for p in pred)
    gr = sum(g == "refusal" for g in gold)
    acc = sum(g == p for g, p in zip(gold, pred, strict=True)) / n
    exp = sum(
        (sum(g == c for g in gold) / n) * (sum(p == c for p in pred) / n) for c in ngram.LABELS
    )
    return {
        "n": n,
        "compliance_acc": comp / n,
        "refusal_precision": tp / pr if pr else float("nan"),
        "refusal_recall": tp / gr if gr else float("nan"),
        "accuracy": acc,
        "kappa": (acc - exp) / (1 - exp) if exp < 1 else float("nan"),
    }


# -- the artefact ---------------------------------------------------------------------------------


def train(data: Path, out: Path, cfg: TrainConfig, stem: str = ngram.ARTEFACT_STEM) -> Path:
    import numpy as np

    rows = dedupe(load_rows(data))
    if cfg.max_rows and len(rows) > cfg.max_rows:
        rng = np.random.default_rng(cfg.seed)
        pick = np.sort(rng.choice(len(rows), size=cfg.max_rows, replace=False))
        rows = [rows[i] for i in pick]
    if not rows:
        raise SystemExit(f"{data}: no labelled rows to train on")
    X = Design(rows, cfg.features)
    z_c, z_r, _ = out_of_fold(X, rows, cfg)
    y_c = np.asarray([1.0 if r.label == "compliance" else -1.0 for r in rows])
    bias = fit_bias(z_c, y_c, sample_weights(rows, cfg)) if cfg.fit_bias else 0.0
    t_c = fit_temperature(z_c + bias, y_c)
    keep = np.asarray([r.three_class and r.label != "compliance" for r in rows])
    y_r = np.asarray([1.0 if r.label == "safe_redirect" else -1.0 for r in rows])
    t_r = fit_temperature(z_r[keep], y_r[keep]) if keep.any() else 1.0
    heads = fit(X, rows, cfg)

    out.mkdir(parents=True, exist_ok=True)
    cfg_path, w_path = ngram.artefact_paths(out, stem)
    ngram.write_safetensors(w_path, {"compliance": heads.compliance, "redirect": heads.redirect})
    counts = Counter((r.group, r.label) for r in rows)
    meta = {
        "format": 1,
        "version": ngram.NGRAM_VERSION,
        "labels": list(ngram.LABELS),
        "features": cfg.features.as_dict(),
        "calibration": (
            {"compliance": t_c, "compliance_bias": bias, "redirect": t_r}
            if cfg.fit_bias
            else {"compliance": t_c, "redirect": t_r}
        ),
        "training": {
            "command": "python -m pytest_mtmcs.judges.train",
            "l2": cfg.l2,
            "l2_redirect": cfg.l2_redirect,
            "iters": cfg.iters,
            "binary_refusal_weight": cfg.binary_refusal_weight,
            "source_power": cfg.source_power,
            "rules_weight": cfg.rules_weight,
            "max_rows": cfg.max_rows,
            "seed": cfg.seed,
            "rows": {f"{g} {lab}": n for (g, lab), n in sorted(counts.items())},
            "data_sha256": _data_hash(rows),
        },
    }
    cfg_path.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return cfg_path


def _data_hash(rows: Sequence[Row]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps([r.group, r.label, r.prompt, r.text], ensure_ascii=True).encode())
    return h.hexdigest()


def cross_validate(data: Path, cfg: TrainConfig) -> dict[str, dict[str, float]]:

    rows = dedupe(load_rows(data))
    X = Design(rows, cfg.features)
    z_c, z_r, _ = out_of_fold(X, rows, cfg)
    pred = decide(z_c, z_r)
    report: dict[str, dict[str, float]] = {}
    names = sorted({r.group for r in rows} | {r.group.split("/")[0] + "/*" for r in rows})
    for name in names:
        idx = [
            i
            for i, r in enumerate(rows)
            if r.group == name or (name.endswith("/*") and r.group.startswith(name[:-1]))
        ]
        report[name] = agreement([rows[i].label for i in idx], [pred[i] for i in idx])
    real = [i for i, r in enumerate(rows) if r.group != "ours/rules_labelled"]
    report["ALL real"] = agreement([rows[i].label for i in real], [pred[i] for i in real])
    return report


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pytest_mtmcs.judges.train", description=__doc__)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labelled data folder")
    p.add_argument("--out", type=Path, default=ngram.DATA_DIR, help="artefact folder")
    p.add_argument("--cv", action="store_true", help="leave-one-group-out report; no artefact")
    p.add_argument("--log2-dim", type=int, default=None)
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--l2", type=float, default=None)
    p.add_argument("--max-rows", type=int, default=None)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a feature setting (e.g. char_ngrams=false)",
    )
    args = p.parse_args(argv)
    cfg = TrainConfig()
    feats = cfg.features
    if args.log2_dim is not None:
        feats = replace(feats, log2_dim=args.log2_dim)
    for kv in args.set:
        key, _, value = kv.partition("=")
        if key in feats.__dataclass_fields__:
            cur = getattr(feats, key)
            new: Any = (
                value.lower() in ("1", "true", "yes") if isinstance(cur, bool) else type(cur)(value)
            )
            feats = replace(feats, **{key: new})
        elif key in TrainConfig.__dataclass_fields__:
            cfg = replace(cfg, **{key: type(getattr(cfg, key))(value)})
        else:
            p.error(f"--set {kv}: unknown setting {key!r}")
    cfg = replace(cfg, features=feats)
    if args.iters is not None:
        cfg = replace(cfg, iters=args.iters)
    if args.l2 is not None:
        cfg = replace(cfg, l2=args.l2)
    if args.max_rows is not None:
        cfg = replace(cfg, max_rows=args.max_rows)
    if args.cv:
        for name, m in cross_validate(args.data, cfg).items():
            print(
                f"{name:40s} n={m['n']:5d} comp={m['compliance_acc']:.3f} "
                f"refP={m['refusal_precision']:.3f} refR={m['refusal_recall']:.3f} "
                f"acc={m['accuracy']:.3f} kappa={m['kappa']:.3f}"
            )
        return 0
    path = train(args.data, args.out, cfg)
    print(f"wrote {path} and {path.with_suffix('.safetensors')}")
    print(f"artefact sha256 {ngram.artefact_hash(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
