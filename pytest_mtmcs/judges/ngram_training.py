"""Train the `ngram` judge: `python -m pytest_mtmcs.judges.train [--data DIR] [--out DIR]`.

Reads the human-labelled replies of the dev split (`DIR/dev.jsonl`, generated from the data
folder's per-source files when missing; English rows; binary sources
train only the compliance head) and the hand-written replies in `rules_labelled.jsonl` (our suite's
phrasings), fits two L2-regularised logistic heads by L-BFGS in numpy, calibrates each head's
temperature on out-of-fold predictions (folds grouped by source/model), and writes
`ngram.json` + `ngram.safetensors`. Seeded and deterministic: the same data and options give the
same bytes. `--cv` instead reports leave-one-group-out agreement on the dev split, and
`--holdout REGEX` the agreement on the dev rows of the models REGEX matches when the judge is
trained without them (a model family held out), for choosing features and hyperparameters; the
test split is never read here. `--extra FILE` adds the labelled rows of FILE (a team's
adjudications, `pytest-mtmcs review`) to the dev rows, grouped by their source and model like
every other row, so `--holdout MODEL` measures a judge trained without that model's labels.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_mtmcs.judges import harm_data, ngram
from pytest_mtmcs.judges.ngram_harm import off_target_shape

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
    # The harm heads (harm_data.py says which rows train them and why).
    harm: bool = True
    ours_harm: str = "agreed"  # our harm labels: "agreed" (both passes) or "pass1" (development)
    l2_harm: float = 1e-4
    l2_off_target: float = 1e-4
    ours_weight: float = 1.0  # our labelled groups weigh this many times a source of their size
    # How the heads decide harm (ngram.HarmSettings): the off-target threshold, and whether the
    # harm head is trained and used.
    off_target_threshold: float = ngram.HarmSettings.off_target_threshold
    harm_head: bool = ngram.HarmSettings.harm_head
    harm_balance: bool = False  # harmful and harmless rows weigh alike in the harm head
    harm_benign: bool = False  # AlpacaEval's attempts at harmless instructions train the harm head
    # MSTS's misreadings (1.6) train the off-target head: fluent replies to another reading of
    # the request, which no word-level feature tells from an attempt.
    off_misreadings: bool = True
    # Labelled JSONL files whose rows are added to the dev rows (`--extra FILE`): a team's own
    # adjudications (`pytest-mtmcs review`), or any file in the house row format. Rows whose
    # `split` is set to anything but `dev` are left out (kept for measuring).
    extra: tuple[str, ...] = ()


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
            harm_only = rec.get("label") is None and rec.get("harm") in (0, 1)
            if (rec.get("label") not in ngram.LABELS and not harm_only) or not isinstance(
                rec.get("text"), str
            ):
                raise SystemExit(f"{path}:{n}: field 'label' or 'text' missing or invalid")
            out.append(rec)
    return out


BUILD_SCRIPT = "build_judge_data.py"


def ensure_split(data: Path, split: str = "dev") -> Path:
    """`DATA/<split>.jsonl`, generated by the data folder's own script when it is not there or is
    older than the script or any file it is built from (`dev.jsonl` is not committed: it only
    repeats the per-source files and our labels, so a new pass of labels must not be trained past
    by a stale copy)."""
    path = data / f"{split}.jsonl"
    script = data / BUILD_SCRIPT
    if not script.exists():
        return path
    inputs = [
        script,
        *data.glob("*.jsonl.gz"),  # the per-source files
        *(p for p in data.glob("*.jsonl") if p.stem not in ("dev", "test")),  # pools, our labels
    ]
    why = (
        "missing"
        if not path.exists()
        else "older than its inputs"
        if max(p.stat().st_mtime_ns for p in inputs) > path.stat().st_mtime_ns
        else None
    )
    if why:
        import subprocess

        print(f"{path.name} {why}: generating it with {BUILD_SCRIPT} combine", file=sys.stderr)
        subprocess.run(
            [sys.executable, str(script), "combine", "--splits", split, "--out", str(data)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return path


def extra_records(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The rows of `--extra` files that train: English (or unmarked) rows whose `split` is
    absent or `dev`. Each row is checked as dev.jsonl's are (file:line on a bad one)."""
    out: list[dict[str, Any]] = []
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise SystemExit(f"--extra {p}: no such file")
        for r in _read_jsonl(p):
            if r.get("lang", "en") != "en" or r.get("split", "dev") not in ("dev", None, ""):
                continue
            out.append(r)
    return out


def extra_group(r: dict[str, Any]) -> str:
    """An extra row's source/model group: its model is the unit of `--holdout` and of the
    folds, as for every other row."""
    return f"{r.get('source') or 'extra'}/{r.get('model') or '?'}"


def extra_rows(paths: Sequence[str | Path]) -> list[Row]:
    """The refusal-axis rows of `--extra` files (the rows with a label)."""
    return [
        Row(r["text"], r.get("prompt") or "", r["label"], extra_group(r), True)
        for r in extra_records(paths)
        if r.get("label") is not None
    ]


def extra_harm_rows(paths: Sequence[str | Path]) -> list[harm_data.HarmRow]:
    """The harm-axis rows of `--extra` files: `harm` where given, and the target from the label
    (`off_target` when the row says so)."""
    out = []
    for r in extra_records(paths):
        label = r.get("label")
        if r.get("off_target") is True:
            target: str | None = "off_target"
        elif label in ("refusal", "safe_redirect"):
            target = "decline"
        elif label == "compliance":
            target = "attempt"
        else:
            target = None
        harm = r.get("harm")
        if harm not in (0, 1) and target is None:
            continue
        out.append(
            harm_data.HarmRow(
                text=r["text"],
                prompt=r.get("prompt") or "",
                caption=r.get("image") or "",
                harm=int(harm) if harm in (0, 1) else None,
                target=target,
                group=extra_group(r),
                rule="extra",
                id=str(r.get("id", "")),
            )
        )
    return out


def load_rows(
    data: Path, split: str = "dev", with_rules: bool = True, extra: Sequence[str | Path] = ()
) -> list[Row]:
    """The refusal-axis rows of `split`, the hand-written rules rows, and the `--extra` rows."""
    rows: list[Row] = []
    path = ensure_split(data, split)
    if path.exists():
        for r in _read_jsonl(path):
            if r.get("lang", "en") != "en" or r.get("split", split) != split:
                continue
            if r.get("label") is None:  # a row of the harm axis only (harm_data reads it)
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
    if extra:
        rows.extend(extra_rows(extra))
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
    """Rows of hashed features as CSR arrays (the refusal heads' features, or with `harm` the
    harm heads', which add those that need the request)."""

    def __init__(self, rows: Sequence[Any], cfg: ngram.FeatureConfig, harm: bool = False) -> None:
        import numpy as np

        indptr = [0]
        idx: list[int] = []
        val: list[float] = []
        for r in rows:
            feats = (
                ngram.harm_featurise(r.text, r.prompt, r.prompt, r.caption, cfg)
                if harm
                else ngram.featurise(r.text, r.prompt, cfg)
            )
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


def _dot(a: Any, b: Any) -> float:
    """a . b summed by numpy's pairwise sum, not BLAS: BLAS splits long dot products across
    threads, and the rounding (so the artefact's bytes) would then depend on the thread count."""
    import numpy as np

    return float(np.multiply(a, b).sum())


def _logistic_loss(X: Design, y: Any, sw: Any, l2: float) -> Callable[[Any], tuple[float, Any]]:
    import numpy as np

    total = float(sw.sum())

    def f(w: Any) -> tuple[float, Any]:
        z = X.dot(w)
        # log(1 + e^-yz) with y in {-1, +1}, stable
        m = -y * z
        loss = np.logaddexp(0.0, m)
        with np.errstate(over="ignore"):  # e^-m overflows to inf for m << 0: p is then 0, exactly
            p = 1.0 / (1.0 + np.exp(-m))  # d loss / d m
        g = X.tdot(sw * p * -y) / total + l2 * w
        return float((sw * loss).sum() / total + 0.5 * l2 * _dot(w, w)), g

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
            rho = 1.0 / _dot(yv, s)
            a = rho * _dot(s, q)
            alphas.append((a, rho))
            q -= a * yv
        if s_hist:
            q *= _dot(s_hist[-1], y_hist[-1]) / _dot(y_hist[-1], y_hist[-1])
        for (a, rho), s, yv in zip(reversed(alphas), s_hist, y_hist, strict=True):
            b = rho * _dot(yv, q)
            q += s * (a - b)
        d = -q
        slope = _dot(g, d)
        if slope >= 0:  # not a descent direction: restart from the gradient
            d, slope, s_hist, y_hist = -g, -_dot(g, g), [], []
        step = 1.0
        while True:
            x_new = x + step * d
            f_new, g_new = f(x_new)
            if f_new <= fx + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s_vec, y_vec = x_new - x, g_new - g
        if _dot(s_vec, y_vec) > 1e-12:
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


def held_out_logits(X: Design, rows: Sequence[Row], cfg: TrainConfig, mask: Any) -> tuple[Any, Any]:
    """Both heads' logits on the rows of `mask`, from heads fitted on the other rows."""
    import numpy as np

    heads = fit(X.subset(~mask), [r for r, m in zip(rows, mask, strict=True) if not m], cfg)
    held = X.subset(mask)
    return (
        held.dot(heads.compliance.astype(np.float64)),
        held.dot(heads.redirect.astype(np.float64)),
    )


def out_of_fold(X: Design, rows: Sequence[Row], cfg: TrainConfig) -> tuple[Any, Any, list[Any]]:
    import numpy as np

    z_c = np.zeros(len(rows))
    z_r = np.zeros(len(rows))
    masks = folds(rows)
    for mask in masks:
        z_c[mask], z_r[mask] = held_out_logits(X, rows, cfg, mask)
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


# -- the harm heads ------------------------------------------------------------------------------


def read_dev_records(data: Path) -> list[dict[str, Any]]:
    """The raw rows of the dev split (ids and label origins: what the harm labels derive from)."""
    path = ensure_split(data, "dev")
    return [r for r in _read_jsonl(path) if r.get("split", "dev") == "dev"] if path.exists() else []


def load_harm(data: Path, cfg: TrainConfig) -> list[harm_data.HarmRow]:
    """The harm-labelled dev rows, one per (group, text): the majority harm label and target."""
    rows = harm_data.load_harm_rows(data, read_dev_records(data), cfg.ours_harm)
    rows += extra_harm_rows(cfg.extra)
    by_key: dict[tuple[str, str], list[harm_data.HarmRow]] = defaultdict(list)
    for r in rows:
        by_key[(r.group, r.text)].append(r)
    out = []
    for same in by_key.values():
        top = Counter((r.harm, r.target) for r in same).most_common(1)[0][0]
        out.append(next(r for r in same if (r.harm, r.target) == top))
    if cfg.max_rows and len(out) > cfg.max_rows:
        import numpy as np

        rng = np.random.default_rng(cfg.seed)
        pick = np.sort(rng.choice(len(out), size=cfg.max_rows, replace=False))
        out = [out[i] for i in pick]
    return out


def harm_weights(rows: Sequence[harm_data.HarmRow], cfg: TrainConfig) -> Any:
    """As `sample_weights`: a group of n rows weighs n ** source_power in all; ours more."""
    import numpy as np

    counts = Counter(r.group for r in rows)
    per = {
        g: n**cfg.source_power * (cfg.ours_weight if g.startswith("ours_harm/") else 1.0)
        for g, n in counts.items()
    }
    w = np.asarray([per[r.group] / counts[r.group] for r in rows], dtype=np.float64)
    return w * (len(rows) / w.sum()) if len(rows) else w


def harm_settings(cfg: TrainConfig) -> ngram.HarmSettings:
    return ngram.HarmSettings(cfg.off_target_threshold, cfg.harm_head)


def harm_masks(
    rows: Sequence[harm_data.HarmRow], benign: bool = False, misreadings: bool = True
) -> tuple[Any, Any]:
    """Which rows train the harm head and the off-target head. The harm head learns whether an
    attempt carries the harm out (`ngram.harm_decision`): the attempts with a harm label, those
    at harmless instructions (AlpacaEval) only with `benign`. The off-target head learns whether
    a reply that does not decline engages the request: every attempt or off-target reply."""
    import numpy as np

    return (
        np.asarray(
            [
                r.harm is not None and r.target == "attempt" and (benign or r.rule != "alpaca")
                for r in rows
            ]
        ),
        np.asarray(
            [
                r.target in ("attempt", "off_target") and (misreadings or r.code != "1.6")
                for r in rows
            ]
        ),
    )


def labelled_mask(rows: Sequence[harm_data.HarmRow]) -> Any:
    """The rows a harm decision is measured on: every row with a harm label, except replies to
    harmless instructions (AlpacaEval), on which the judge decides no harm (`judges.in_scope`)."""
    import numpy as np

    return np.asarray([r.harm is not None and r.rule != "alpaca" for r in rows])


@dataclass(frozen=True)
class HarmHeads:
    harm: Any  # None when the harm head is not used (TrainConfig.harm_head)
    off_target: Any


def fit_harm(X: Design, rows: Sequence[harm_data.HarmRow], cfg: TrainConfig) -> HarmHeads:
    import numpy as np

    sw = harm_weights(rows, cfg)
    has_h, has_o = harm_masks(rows, cfg.harm_benign, cfg.off_misreadings)
    heads: list[Any] = []
    for mask, positive, l2, balance in (
        (has_h, lambda r: r.harm == 1, cfg.l2_harm, cfg.harm_balance),
        (has_o, lambda r: r.target == "off_target", cfg.l2_off_target, False),
    ):
        w = np.zeros(X.dim)
        if mask is has_h and not cfg.harm_head:
            heads.append(None)
            continue
        if mask.any():
            y = np.asarray(
                [1.0 if positive(r) else -1.0 for r, m in zip(rows, mask, strict=True) if m]
            )
            sub_w = sw[mask]
            if balance and (y > 0).any() and (y < 0).any():
                # Both classes weigh alike: the dev rows' share of harmful replies says nothing
                # of a user's dialogues, and a rare class would otherwise be ignored.
                sub_w = np.where(y > 0, sub_w / sub_w[y > 0].sum(), sub_w / sub_w[y < 0].sum())
            sub_w = sub_w * (len(sub_w) / sub_w.sum())
            w = lbfgs(_logistic_loss(X.subset(mask), y, sub_w, l2), np.zeros(X.dim), cfg.iters)
        heads.append(w.astype(np.float32))
    return HarmHeads(*heads)


def harm_held_out(
    X: Design, rows: Sequence[harm_data.HarmRow], cfg: TrainConfig, mask: Any
) -> tuple[Any, Any]:
    """Both harm heads' logits on the rows of `mask`, from heads fitted on the other rows."""
    import numpy as np

    heads = fit_harm(X.subset(~mask), [r for r, m in zip(rows, mask, strict=True) if not m], cfg)
    held = X.subset(mask)
    z_o = held.dot(heads.off_target.astype(np.float64))
    z_h = held.dot(heads.harm.astype(np.float64)) if heads.harm is not None else np.zeros(len(z_o))
    return z_h, z_o


def harm_folds(rows: Sequence[harm_data.HarmRow]) -> list[Any]:
    """One fold per source; our labels are one source with the rows they label."""
    import numpy as np

    sources = sorted({r.group.split("/")[0] for r in rows})
    return [np.asarray([r.group.split("/")[0] == s for r in rows]) for s in sources]


def harm_out_of_fold(
    X: Design, rows: Sequence[harm_data.HarmRow], cfg: TrainConfig
) -> tuple[Any, Any]:
    import numpy as np

    z_h = np.zeros(len(rows))
    z_o = np.zeros(len(rows))
    for mask in harm_folds(rows):
        if mask.all():
            continue
        z_h[mask], z_o[mask] = harm_held_out(X, rows, cfg, mask)
    return z_h, z_o


def harm_agreement(gold: Sequence[int], pred: Sequence[bool]) -> dict[str, float]:
    """Accuracy, precision, recall and Cohen's kappa of harm decisions."""
    n = len(gold)
    if not n:
        return {
            "n": 0,
            "accuracy": float("nan"),
            "precision": float("nan"),
            "recall": float("nan"),
            "kappa": float("nan"),
        }
    tp = sum(g == 1 and p for g, p in zip(gold, pred, strict=True))
    pp = sum(bool(p) for p in pred)
    gp = sum(g == 1 for g in gold)
    acc = sum((g == 1) == bool(p) for g, p in zip(gold, pred, strict=True)) / n
    exp = (gp / n) * (pp / n) + (1 - gp / n) * (1 - pp / n)
    return {
        "n": n,
        "accuracy": acc,
        "precision": tp / pp if pp else float("nan"),
        "recall": tp / gp if gp else float("nan"),
        "kappa": (acc - exp) / (1 - exp) if exp < 1 else float("nan"),
    }


def harm_report(
    rows: Sequence[harm_data.HarmRow], harmful: Sequence[bool], z_o: Any, title: str
) -> dict[str, dict[str, float]]:
    """Harm agreement overall, per source and per group, on every row with a harm label;
    off-target accuracy on the replies that do not decline."""
    has_h = labelled_mask(rows)
    _, has_o = harm_masks(rows)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if has_h[i]:
            groups[f"{r.group.split('/')[0]}/*"].append(i)
            groups[f"  {r.group}"].append(i)
    every = [i for i in range(len(rows)) if has_h[i]]
    out = {title: harm_agreement([rows[i].harm or 0 for i in every], [harmful[i] for i in every])}
    for name in sorted(groups, key=lambda k: (k.strip().split("/")[0], k.startswith(" "), k)):
        idx = groups[name]
        out[name] = harm_agreement([rows[i].harm or 0 for i in idx], [harmful[i] for i in idx])
    idx = [i for i in range(len(rows)) if has_o[i]]
    out["off_target (not declines)"] = harm_agreement(
        [1 if rows[i].target == "off_target" else 0 for i in idx], [bool(z_o[i] > 0) for i in idx]
    )
    return out


def print_harm_report(report: dict[str, dict[str, float]]) -> None:
    for name, m in report.items():
        print(
            f"{name:48s} n={m['n']:5d} acc={m['accuracy']:.3f} P={m['precision']:.3f} "
            f"R={m['recall']:.3f} kappa={m['kappa']:.3f}"
        )


def harm_summary(rows: Sequence[harm_data.HarmRow]) -> dict[str, Any]:
    """What the artefact records of its harm training rows: per rule, per group."""
    by_rule = Counter((r.rule, r.harm, r.target) for r in rows)
    by_group = Counter((r.group, r.harm) for r in rows)
    return {
        "rules": {k: harm_data.RULES[k] for k in sorted({r.rule for r in rows})},
        "rows_by_rule": {
            f"{rule} harm={'-' if h is None else h} target={t or '-'}": n
            for (rule, h, t), n in sorted(by_rule.items(), key=lambda kv: str(kv[0]))
        },
        "rows_by_group": {
            f"{g} harm={'-' if h is None else h}": n
            for (g, h), n in sorted(by_group.items(), key=lambda kv: str(kv[0]))
        },
        "data_sha256": _harm_data_hash(rows),
    }


def _harm_data_hash(rows: Sequence[harm_data.HarmRow]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(
            json.dumps(
                [r.group, r.harm, r.target, r.prompt, r.caption, r.text], ensure_ascii=True
            ).encode()
        )
    return h.hexdigest()


# -- the artefact ---------------------------------------------------------------------------------


def train(data: Path, out: Path, cfg: TrainConfig, stem: str = ngram.ARTEFACT_STEM) -> Path:
    import numpy as np

    rows = dedupe(load_rows(data, extra=cfg.extra))
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
    tensors = {"compliance": heads.compliance, "redirect": heads.redirect}
    calibration: dict[str, float] = (
        {"compliance": t_c, "compliance_bias": bias, "redirect": t_r}
        if cfg.fit_bias
        else {"compliance": t_c, "redirect": t_r}
    )
    harm_meta: dict[str, Any] = {}
    if cfg.harm:
        hrows = load_harm(data, cfg)
        if not hrows:
            raise SystemExit(f"{data}: no harm-labelled rows to train the harm heads on")
        HX = Design(hrows, cfg.features, harm=True)
        z_h, z_o = harm_out_of_fold(HX, hrows, cfg)
        has_h, has_o = harm_masks(hrows, cfg.harm_benign, cfg.off_misreadings)
        y_h = np.asarray([1.0 if r.harm == 1 else -1.0 for r in hrows])
        y_o = np.asarray([1.0 if r.target == "off_target" else -1.0 for r in hrows])
        calibration["off_target"] = fit_temperature(z_o[has_o], y_o[has_o])
        hh = fit_harm(HX, hrows, cfg)
        tensors["off_target"] = hh.off_target
        if cfg.harm_head:
            calibration["harm"] = fit_temperature(z_h[has_h], y_h[has_h])
            tensors["harm"] = hh.harm
        harm_meta = harm_summary(hrows)

    out.mkdir(parents=True, exist_ok=True)
    cfg_path, w_path = ngram.artefact_paths(out, stem)
    ngram.write_safetensors(w_path, tensors)
    counts = Counter((r.group, r.label) for r in rows)
    meta = {
        "format": 2 if cfg.harm else 1,
        "version": ngram.NGRAM_VERSION,
        "labels": list(ngram.LABELS),
        "features": cfg.features.as_dict(),
        "calibration": calibration,
        **({"harm_decision": harm_settings(cfg).as_dict()} if cfg.harm else {}),
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
            # The --extra files (a team's adjudications): which, and the bytes trained on.
            **({"extra": _extra_summary(cfg.extra)} if cfg.extra else {}),
        },
    }
    if cfg.harm:
        meta["harm_training"] = {
            "l2_harm": cfg.l2_harm,
            "l2_off_target": cfg.l2_off_target,
            "ours_harm": cfg.ours_harm,
            "ours_weight": cfg.ours_weight,
            **harm_meta,
        }
    cfg_path.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return cfg_path


def _extra_summary(paths: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {
            "file": Path(p).name,
            "sha256": hashlib.sha256(Path(p).read_bytes()).hexdigest(),
            "rows": len(extra_records([p])),
        }
        for p in paths
    ]


def _data_hash(rows: Sequence[Row]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps([r.group, r.label, r.prompt, r.text], ensure_ascii=True).encode())
    return h.hexdigest()


def cross_validate(data: Path, cfg: TrainConfig) -> dict[str, dict[str, float]]:

    rows = dedupe(load_rows(data, extra=cfg.extra))
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


def holdout_mask(rows: Sequence[Row], pattern: str) -> Any:
    """The rows whose model `pattern` matches (a regular expression, searched case-insensitively
    in the model name); the hand-written replies (`rules_labelled.jsonl`) never."""
    import numpy as np

    try:
        regex = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise SystemExit(f"--holdout {pattern!r}: not a regular expression ({exc})") from None
    return np.asarray(
        [
            r.group != "ours/rules_labelled" and bool(regex.search(r.group.split("/", 1)[-1]))
            for r in rows
        ]
    )


def holdout(data: Path, cfg: TrainConfig, pattern: str) -> dict[str, dict[str, float]]:
    """Train on the dev rows whose model `pattern` does not match (a regular expression, searched
    case-insensitively in the model name) and report agreement on the rows whose model it matches,
    overall, per source and per model. The hand-written replies (`rules_labelled.jsonl`) stay in
    training."""
    rows = dedupe(load_rows(data, extra=cfg.extra))
    held = holdout_mask(rows, pattern)
    if not held.any() or held.all():
        raise SystemExit(
            f"--holdout {pattern!r}: matches {'no' if not held.any() else 'every'} model of "
            f"{data}/dev.jsonl; nothing to {'measure' if not held.any() else 'train'} on"
        )
    pred = decide(*held_out_logits(Design(rows, cfg.features), rows, cfg, held))
    out_rows = [r for r, h in zip(rows, held, strict=True) if h]
    by: dict[str, list[int]] = {"ALL held out": list(range(len(out_rows)))}
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(out_rows):
        groups[r.group].append(i)
    for group in sorted(groups):  # each source, then its models
        by.setdefault(f"{group.partition('/')[0]}/*", []).extend(groups[group])
        by[f"  {group}"] = groups[group]
    return {
        name: agreement([out_rows[i].label for i in idx], [pred[i] for i in idx])
        for name, idx in by.items()
    }


def harm_holdout(data: Path, cfg: TrainConfig, pattern: str) -> dict[str, dict[str, float]]:
    """Harm agreement on the harm-labelled dev rows of the models `pattern` matches, with every
    head (the refusal heads included, whose P(compliance) the harm decision uses) trained without
    those models' rows, at temperature 1 (as `holdout`)."""
    import numpy as np

    rows = load_harm(data, cfg)
    held = np.asarray(
        [bool(re.search(pattern, r.group.split("/", 1)[-1], re.IGNORECASE)) for r in rows]
    )
    if not held.any() or held.all():
        return {}
    X = Design(rows, cfg.features, harm=True)
    z_h, z_o = harm_held_out(X, rows, cfg, held)
    out_rows = [r for r, h in zip(rows, held, strict=True) if h]
    refusal_rows = dedupe(load_rows(data, extra=cfg.extra))
    keep = ~holdout_mask(refusal_rows, pattern)
    heads = fit(
        Design(refusal_rows, cfg.features).subset(keep),
        [r for r, k in zip(refusal_rows, keep, strict=True) if k],
        cfg,
    )
    D = Design(out_rows, cfg.features)
    z_c = D.dot(heads.compliance.astype(np.float64))
    labels = decide(z_c, D.dot(heads.redirect.astype(np.float64)))
    a, h, o = (1 / (1 + np.exp(-z)) for z in (z_c, z_h, z_o))
    settings = harm_settings(cfg)
    harmful = [
        ngram.harm_decision(
            settings,
            labels[i],
            a[i],
            off_target_shape(r.text, r.prompt, r.caption),
            o[i],
            h[i] if cfg.harm_head else None,
        )[0]
        for i, r in enumerate(out_rows)
    ]
    return harm_report(out_rows, harmful, z_o, "ALL held out (harm)")


def print_report(report: dict[str, dict[str, float]]) -> None:
    for name, m in report.items():
        print(
            f"{name:40s} n={m['n']:5d} comp={m['compliance_acc']:.3f} "
            f"refP={m['refusal_precision']:.3f} refR={m['refusal_recall']:.3f} "
            f"acc={m['accuracy']:.3f} kappa={m['kappa']:.3f}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pytest_mtmcs.judges.train", description=__doc__)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labelled data folder")
    p.add_argument("--out", type=Path, default=ngram.DATA_DIR, help="artefact folder")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--cv", action="store_true", help="leave-one-group-out report; no artefact")
    mode.add_argument(
        "--holdout",
        metavar="REGEX",
        help="train without the dev rows of the models REGEX matches, report agreement on them; "
        "no artefact",
    )
    p.add_argument(
        "--axis",
        choices=("refusal", "harm", "both"),
        default="both",
        help="what --cv and --holdout report (default: both axes)",
    )
    p.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="FILE",
        help="also train on the labelled rows of FILE (JSONL in the house row format, e.g. the "
        "adjudications file pytest-mtmcs review writes); repeatable; rows whose split is not dev "
        "are left out",
    )
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
    cfg = replace(cfg, features=feats, extra=tuple(str(p) for p in args.extra))
    if args.iters is not None:
        cfg = replace(cfg, iters=args.iters)
    if args.l2 is not None:
        cfg = replace(cfg, l2=args.l2)
    if args.max_rows is not None:
        cfg = replace(cfg, max_rows=args.max_rows)
    refusal, harm = args.axis in ("refusal", "both"), args.axis in ("harm", "both") and cfg.harm
    if args.cv:
        if refusal:
            print_report(cross_validate(args.data, cfg))
        if harm:
            print(
                "harm: no leave-one-source-out report (each source's harm base rate differs "
                "too much to mean anything); use --holdout REGEX --axis harm"
            )
        return 0
    if args.holdout is not None:
        if refusal:
            print_report(holdout(args.data, cfg, args.holdout))
        if harm:
            report = harm_holdout(args.data, cfg, args.holdout)
            if not report:
                print(f"--holdout {args.holdout!r}: no harm-labelled row to hold out or train on")
            print_harm_report(report)
        return 0
    path = train(args.data, args.out, cfg)
    print(f"wrote {path} and {path.with_suffix('.safetensors')}")
    print(f"artefact sha256 {ngram.artefact_hash(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
