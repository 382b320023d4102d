"""Does augmentation help? The SRDRN downscaler trained twice with the same seed and budget:
on the real training days only ("real"), and on real plus accepted synthetic days of the
training split ("augmented", from a ``precipgen sample`` output directory). Both arms are
nested MLflow runs under the evaluation run.

Scored on the evaluation split for all days and for heavy days: MAE_all, MAE_tail (truth >=
P95), P99 bias, FSS at P99; the difference augmented - real with a bootstrap confidence
interval over days (days resampled with replacement, both arms on the same resample). For
MAE and |P99 bias| a negative difference means augmentation helps; for FSS a positive one.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from precipgen import tracking
from precipgen.config import Config
from precipgen.data.store import DatasetError, PreparedDataset
from precipgen.scores.spatial import _integral_image, _window_counts
from precipgen.train.srdrn import ArrayDayDataset, train_srdrn

ARMS = ("real", "augmented")
FSS_SCALE = 8  # px: the window of "FSS at P99"
METRICS = ("MAE_all", "MAE_tail", "abs_P99_bias", "FSS_P99")
BETTER = {"MAE_all": "lower", "MAE_tail": "lower", "abs_P99_bias": "lower", "FSS_P99": "higher"}


@dataclass
class Synthetic:
    X: np.ndarray  # (M, C, h, w) physical
    Y: np.ndarray  # (M, 1, H, W) mm
    days: np.ndarray  # (M,)
    n_total: int  # accepted samples in the directory
    run_id: str | None


def load_synthetic(samples: str, ds: PreparedDataset) -> Synthetic:
    """Accepted samples of *training* days (a sample of a val/test day carries that day's
    predictors, and in posterior mode its target: using it would leak the evaluation)."""
    res = tracking.resolve(samples)
    root = res.path
    for name in ("Y_syn.npy", "X_ref.npy", "day_index.npy"):
        if not (root / name).is_file():
            raise FileNotFoundError(f"--samples {samples}: {root / name} not found (expected the "
                                    "output directory of `precipgen sample`)")
    Y = np.load(root / "Y_syn.npy", mmap_mode="r")
    X = np.load(root / "X_ref.npy", mmap_mode="r")
    days = np.load(root / "day_index.npy")
    C, (h, w), (H, W) = ds.n_channels, ds.lr_shape, ds.hr_shape
    if Y.shape[1:] != (1, H, W) or X.shape[1:] != (C, h, w) or not len(days) == len(Y) == len(X):
        raise DatasetError(f"--samples {root}: Y_syn {Y.shape}, X_ref {X.shape}, day_index "
                           f"{days.shape} do not fit dataset {ds.root} (C={C}, {h}x{w} -> {H}x{W})")
    keep = np.isin(days, ds.split["train"])
    rid = res.run_id or tracking.producing_run_id(root)
    return Synthetic(np.asarray(X[keep]), np.asarray(Y[keep]), days[keep], len(days), rid)


# ------------------------------------------------------------------ per-day statistics
def heavy_positions(ds: PreparedDataset, days: np.ndarray) -> tuple[np.ndarray, str]:
    """Positions of heavy days among ``days``; without any, the wettest tenth (noted)."""
    pos = np.flatnonzero(np.isin(days, ds.heavy_days))
    if len(pos):
        return pos, "heavy days (categories.json)"
    land_mean = np.asarray(ds.Y_hr[days])[:, 0][:, ds.land_mask].mean(axis=1)
    k = max(1, len(days) // 10)
    return np.sort(np.argsort(-land_mean)[:k]), f"no heavy day in the split: wettest {k} days"


def day_stats(pred: np.ndarray, truth: np.ndarray, land: np.ndarray, p95: float,
              p99: float) -> dict[str, np.ndarray]:
    """Additive per-day pieces (so a bootstrap resample is a weighted sum), plus the land
    pixels themselves for the pooled P99."""
    err = np.abs(pred - truth)[:, land]
    t = truth[:, land]
    tail = t >= p95
    ev_p, ev_t = _integral_image(pred >= p99), _integral_image(truth >= p99)
    cf, co = _window_counts(ev_p, FSS_SCALE), _window_counts(ev_t, FSS_SCALE)
    cf, co = cf[:, land].astype(float), co[:, land].astype(float)
    return {"ae": err.sum(1), "n": np.full(len(err), err.shape[1], float),
            "tail_ae": (err * tail).sum(1), "tail_n": tail.sum(1).astype(float),
            "fss_num": ((cf - co) ** 2).sum(1), "fss_den": (cf**2 + co**2).sum(1),
            "pix": pred[:, land]}


def aggregate(s: dict[str, np.ndarray], truth_pix: np.ndarray, idx: np.ndarray) -> dict[str, float]:
    def ratio(a: str, b: str) -> float:
        den = s[b][idx].sum()
        return float(s[a][idx].sum() / den) if den > 0 else float("nan")

    fss_den = s["fss_den"][idx].sum()
    p99 = (np.quantile(s["pix"][idx], 0.99) - np.quantile(truth_pix[idx], 0.99)
           if len(idx) else float("nan"))
    return {"MAE_all": ratio("ae", "n"), "MAE_tail": ratio("tail_ae", "tail_n"),
            "P99_bias": float(p99), "abs_P99_bias": float(abs(p99)),
            "FSS_P99": float(1 - s["fss_num"][idx].sum() / fss_den) if fss_den > 0 else float("nan")}


def compare(stats: dict[str, dict[str, np.ndarray]], truth_pix: np.ndarray, positions: np.ndarray,
            n_boot: int, seed: int) -> dict[str, float]:
    """Both arms' metrics on ``positions`` and the augmented - real difference with a 95%
    percentile bootstrap CI over days."""
    out: dict[str, float] = {}
    base = {arm: aggregate(stats[arm], truth_pix, positions) for arm in ARMS}
    for arm in ARMS:
        out.update({f"{arm}_{k}": v for k, v in base[arm].items()})
    rng = np.random.default_rng(seed)
    diffs = {k: [] for k in METRICS}
    for _ in range(n_boot if len(positions) > 1 else 0):
        idx = rng.choice(positions, size=len(positions), replace=True)
        a, r = (aggregate(stats[arm], truth_pix, idx) for arm in ("augmented", "real"))
        for k in METRICS:
            diffs[k].append(a[k] - r[k])
    for k in METRICS:
        out[f"diff_{k}"] = base["augmented"][k] - base["real"][k]
        d = np.asarray(diffs[k], float)
        d = d[np.isfinite(d)]
        lo, hi = (np.percentile(d, [2.5, 97.5]) if d.size else (np.nan, np.nan))
        out[f"diff_{k}_ci_low"], out[f"diff_{k}_ci_high"] = float(lo), float(hi)
    return out


# ------------------------------------------------------------------ the experiment
def run_experiment(ds: PreparedDataset, samples: str, cfg: Config, split: str, seed: int,
                   out_dir: Path, n_boot: int = 500, max_days: int | None = None,
                   device: torch.device | None = None) -> dict[str, Any]:
    """Train both arms (nested runs of the active run), score them; returns
    ``{"metrics": {...}, "curves": {...}, "notes": [...], "run_ids": {...}}``."""
    syn = load_synthetic(samples, ds)
    days = ds.split[split][:max_days] if max_days else ds.split[split]
    truth = np.asarray(ds.Y_hr[days], dtype=np.float32)[:, 0]
    x = np.asarray(ds.X_lr[days], dtype=np.float32)
    land = ds.land_mask
    p95, p99 = float(ds.thresholds["P95"]), float(ds.thresholds["P99"])
    notes = [f"synthetic: {len(syn.days)} accepted samples of training days used "
             f"(of {syn.n_total} accepted in {samples})"]
    if len(syn.days) == 0:
        notes.append("no synthetic sample of a training day: both arms see the same data")
    stats: dict[str, dict[str, np.ndarray]] = {}
    curves: dict[str, Any] = {}
    run_ids: dict[str, str] = {}
    preds: dict[str, np.ndarray] = {}
    for arm in tqdm(ARMS, desc="augmentation arms", leave=False):
        extra = (ArrayDayDataset(syn.X, syn.Y, syn.days, ds.normalization)
                 if arm == "augmented" else None)
        params = {"arm": arm, "seed": seed, "split": split, "samples": samples,
                  "n_synthetic": len(syn.days) if extra is not None else 0,
                  **{f"srdrn.{k}": v for k, v in vars(cfg.srdrn).items()}}
        with tracking.start_run(f"augmentation_{arm}", params=params, nested=True,
                                run_name=f"srdrn-{arm}") as r:
            r.set_lineage({"synthetic": syn.run_id if extra is not None else None,
                           "dataset": tracking.producing_run_id(ds.root)})
            trained = train_srdrn(ds, cfg.srdrn, seed, out_dir / arm, extra, run=r, device=device)
            pred = trained.generator.predict(x)[0, :, 0]
            stats[arm] = day_stats(pred, truth, land, p95, p99)
            r.log_params({"n_train_days": trained.n_train, "steps_per_epoch": trained.steps_per_epoch})
            test = aggregate(stats[arm], truth[:, land], np.arange(len(days)))
            r.log_metrics({f"test_{k}": v for k, v in test.items()})
            r.log_artifact(trained.result.best_path, "checkpoints")
            run_ids[arm] = r.run_id
            curves[arm] = [{k: h.get(k) for k in ("epoch", "train_loss", "val_loss", "val_MAE_all")}
                           for h in trained.result.history]
            preds[arm] = pred
    heavy, heavy_note = heavy_positions(ds, days)
    notes.append(f"heavy subset: {heavy_note} ({len(heavy)} of {len(days)} days)")
    truth_pix = truth[:, land]
    metrics: dict[str, float] = {}
    for subset, pos in (("all", np.arange(len(days))), ("heavy", heavy)):
        res = compare(stats, truth_pix, pos, n_boot, seed)
        metrics.update({f"aug_{subset}_{k}": v for k, v in res.items()})
    write_table(out_dir / "augmentation_days.csv", days, stats)
    return {"metrics": metrics, "curves": curves, "notes": notes, "run_ids": run_ids,
            "heavy_days": days[heavy].tolist(), "n_synthetic": int(len(syn.days)),
            "synthetic_run_id": syn.run_id, "predictions": preds}


def write_table(path: Path, days: np.ndarray, stats: dict[str, dict[str, np.ndarray]]) -> None:
    """Per-day MAE of both arms (what the bootstrap resamples)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["day", *[f"{arm}_MAE_all" for arm in ARMS]])
        for i, d in enumerate(days):
            w.writerow([int(d), *[f"{stats[a]['ae'][i] / stats[a]['n'][i]:.6g}" for a in ARMS]])


def console(result: dict[str, Any], out: Any = print) -> None:
    m = result["metrics"]
    out("🧪 Does AUGMENTATION help? (SRDRN, same seed and budget; augmented - real, 95% CI)")
    for note in result["notes"]:
        out(f"   📝 {note}")
    for subset in ("all", "heavy"):
        for k in METRICS:
            diff = m[f"aug_{subset}_diff_{k}"]
            lo, hi = m[f"aug_{subset}_diff_{k}_ci_low"], m[f"aug_{subset}_diff_{k}_ci_high"]
            helps = (hi < 0) if BETTER[k] == "lower" else (lo > 0)
            hurts = (lo > 0) if BETTER[k] == "lower" else (hi < 0)
            verdict = "helps" if helps else "hurts" if hurts else "no significant difference"
            out(f"   📊 {subset:5s} {k:12s} real {m[f'aug_{subset}_real_{k}']:.4f} | augmented "
                f"{m[f'aug_{subset}_augmented_{k}']:.4f} | diff {diff:+.4f} "
                f"[{lo:+.4f}, {hi:+.4f}] -> {verdict}")
    out("")
