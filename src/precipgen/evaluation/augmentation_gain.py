"""Does augmentation help? The SRDRN downscaler trained with the same seeds and budget: on
the real training days only ("real"), and on real plus accepted synthetic days of the
training split ("augmented", from a ``precipgen sample`` output directory), mixed by option
A or B (:mod:`.mixing`, ``augmentation.*``), ``augmentation.n_seeds`` training seeds per arm.
Every (arm, seed) is a nested MLflow run under the evaluation run. Without any accepted
synthetic sample of a training day the experiment is skipped and says so (two identical arms
compared would only measure noise).

Scored on the evaluation split for all days and for heavy days: MAE_all, MAE_tail (truth >=
P95), P99 bias, FSS at P99; the difference augmented - real with a bootstrap confidence
interval over training seeds and days (days resampled with replacement, both arms on the
same days; each arm's seeds resampled too), its percentage of the real arm's value, and a
verdict per metric (helps / hurts / no significant difference; ``aug_*_verdict_*`` is +1 / -1
/ 0). For MAE and |P99 bias| a negative difference means augmentation helps; for FSS a
positive one.
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
from precipgen.data.datasets import EpochSampler
from precipgen.data.store import DatasetError, PreparedDataset
from precipgen.evaluation.mixing import PerHeavyDaySampler, subsample_synthetic
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


def pooled(per_seed: list[dict[str, np.ndarray]], seeds: np.ndarray, days: np.ndarray
           ) -> dict[str, np.ndarray]:
    """The per-day pieces of the chosen training seeds on the chosen days, stacked."""
    return {k: np.concatenate([per_seed[i][k][days] for i in seeds]) for k in per_seed[0]}


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


def _score(per_seed: list[dict[str, np.ndarray]], truth_pix: np.ndarray, seeds: np.ndarray,
           days: np.ndarray) -> dict[str, float]:
    s = pooled(per_seed, seeds, days)
    return aggregate(s, np.concatenate([truth_pix[days]] * len(seeds)), np.arange(len(s["ae"])))


def verdict(lo: float, hi: float, better: str) -> str:
    """helps / hurts / no significant difference, from the CI of augmented - real."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "no significant difference"
    helps = hi < 0 if better == "lower" else lo > 0
    hurts = lo > 0 if better == "lower" else hi < 0
    return "helps" if helps else "hurts" if hurts else "no significant difference"


VERDICT_CODE = {"helps": 1.0, "hurts": -1.0, "no significant difference": 0.0}


def compare(stats: dict[str, Any], truth_pix: np.ndarray, positions: np.ndarray,
            n_boot: int, seed: int) -> dict[str, float]:
    """Both arms' metrics on ``positions`` and the augmented - real difference with a 95%
    percentile bootstrap CI over training seeds and days: each resample draws the days (shared
    by both arms) and, per arm, its training seeds, with replacement. ``stats[arm]`` is one
    :func:`day_stats` dict or a list of them (one per training seed)."""
    per = {arm: stats[arm] if isinstance(stats[arm], list) else [stats[arm]] for arm in ARMS}
    out: dict[str, float] = {}
    all_seeds = {arm: np.arange(len(per[arm])) for arm in ARMS}
    base = {arm: _score(per[arm], truth_pix, all_seeds[arm], positions) for arm in ARMS}
    for arm in ARMS:
        out.update({f"{arm}_{k}": v for k, v in base[arm].items()})
    rng = np.random.default_rng(seed)
    diffs: dict[str, list[float]] = {k: [] for k in METRICS}
    n_seeds = min(len(per[arm]) for arm in ARMS)
    for _ in range(n_boot if len(positions) > 1 or n_seeds > 1 else 0):
        idx = rng.choice(positions, size=len(positions), replace=True)
        sc = {arm: _score(per[arm], truth_pix,
                          rng.choice(len(per[arm]), size=len(per[arm]), replace=True), idx)
              for arm in ARMS}
        for k in METRICS:
            diffs[k].append(sc["augmented"][k] - sc["real"][k])
    for k in METRICS:
        out[f"diff_{k}"] = base["augmented"][k] - base["real"][k]
        d = np.asarray(diffs[k], float)
        d = d[np.isfinite(d)]
        lo, hi = (np.percentile(d, [2.5, 97.5]) if d.size else (np.nan, np.nan))
        out[f"diff_{k}_ci_low"], out[f"diff_{k}_ci_high"] = float(lo), float(hi)
        ref = base["real"][k]
        scale = 100.0 / abs(ref) if np.isfinite(ref) and ref != 0 else float("nan")
        out[f"diff_{k}_pct"] = out[f"diff_{k}"] * scale
        out[f"diff_{k}_pct_ci_low"], out[f"diff_{k}_pct_ci_high"] = lo * scale, hi * scale
        out[f"verdict_{k}"] = VERDICT_CODE[verdict(lo, hi, BETTER[k])]
    return out


# ------------------------------------------------------------------ the experiment
def skipped_result(syn: Synthetic, samples: str) -> dict[str, Any]:
    """No accepted synthetic sample of a training day: the arms would be identical, so the
    experiment is not run (and nothing is compared)."""
    note = (f"augmentation experiment SKIPPED: 0 accepted synthetic samples of training days in "
            f"{samples} ({syn.n_total} accepted in all): both arms would train on the same data")
    return {"metrics": {"aug_skipped": 1.0, "aug_n_synthetic": 0.0}, "curves": {},
            "notes": [note], "run_ids": {}, "heavy_days": [], "n_synthetic": 0,
            "synthetic_run_id": syn.run_id, "predictions": {}, "skipped": True, "verdicts": {}}


def mixing_plan(ds: PreparedDataset, syn: Synthetic, cfg: Config, seed: int
                ) -> tuple[ArrayDayDataset, Any, str]:
    """The augmented arm's extra days and sampler (option A or B), and a note saying so."""
    a = cfg.augmentation
    n_real = len(ds.split["train"])
    if a.mixing == "A":
        extra = ArrayDayDataset(syn.X, syn.Y, syn.days, ds.normalization)
        sampler = PerHeavyDaySampler(n_real, ds.split["train"], ds.heavy_days, syn.days, a.k, seed)
        note = (f"mixing A: {a.k} synthetic sample(s) per real heavy day per epoch "
                f"({len(sampler.groups)} heavy training days have samples)")
        return extra, sampler, note
    keep = subsample_synthetic(len(syn.days), n_real, a.ratio, seed)
    extra = ArrayDayDataset(syn.X[keep], syn.Y[keep], syn.days[keep], ds.normalization)
    sampler = EpochSampler(n_real + len(keep), seed)
    note = (f"mixing B: concatenated, {len(keep)} synthetic + {n_real} real days "
            f"(ratio {a.ratio:g}{' = all accepted' if a.ratio <= 0 else ''})")
    return extra, sampler, note


def run_experiment(ds: PreparedDataset, samples: str, cfg: Config, split: str, seed: int,
                   out_dir: Path, n_boot: int = 500, max_days: int | None = None,
                   device: torch.device | None = None) -> dict[str, Any]:
    """Train both arms with ``augmentation.n_seeds`` seeds each (nested runs of the active
    run), score them; returns ``{"metrics", "curves", "notes", "run_ids", "verdicts", ...}``;
    ``skipped`` when there is no synthetic sample to add."""
    syn = load_synthetic(samples, ds)
    if len(syn.days) == 0:
        return skipped_result(syn, samples)
    days = ds.split[split][:max_days] if max_days else ds.split[split]
    truth = np.asarray(ds.Y_hr[days], dtype=np.float32)[:, 0]
    x = np.asarray(ds.X_lr[days], dtype=np.float32)
    land = ds.land_mask
    p95, p99 = float(ds.thresholds["P95"]), float(ds.thresholds["P99"])
    n_seeds = cfg.augmentation.n_seeds
    seeds = [seed + i for i in range(n_seeds)]
    notes = [f"synthetic: {len(syn.days)} accepted samples of training days available "
             f"(of {syn.n_total} accepted in {samples})",
             f"{n_seeds} SRDRN training seed(s) per arm ({', '.join(map(str, seeds))}); "
             "CI over seeds and days"]
    stats: dict[str, list[dict[str, np.ndarray]]] = {arm: [] for arm in ARMS}
    curves: dict[str, Any] = {}
    run_ids: dict[str, str] = {}
    preds: dict[str, np.ndarray] = {}
    for sd in tqdm(seeds, desc="augmentation seeds", leave=False):
        extra, sampler, mix_note = mixing_plan(ds, syn, cfg, sd)
        if sd == seeds[0]:
            notes.append(mix_note)
        for arm in ARMS:
            aug = arm == "augmented"
            params = {"arm": arm, "seed": sd, "split": split, "samples": samples,
                      "n_synthetic": len(extra) if aug else 0,
                      **{f"augmentation.{k}": v for k, v in vars(cfg.augmentation).items()},
                      **{f"srdrn.{k}": v for k, v in vars(cfg.srdrn).items()}}
            name = arm if n_seeds == 1 else f"{arm}_seed{sd}"
            with tracking.start_run(f"augmentation_{arm}", params=params, nested=True,
                                    run_name=f"srdrn-{name}") as r:
                r.set_lineage({"synthetic": syn.run_id if aug else None,
                               "dataset": tracking.producing_run_id(ds.root)})
                trained = train_srdrn(ds, cfg.srdrn, sd, out_dir / name, extra if aug else None,
                                      run=r, device=device, sampler=sampler if aug else None)
                pred = trained.generator.predict(x)[0, :, 0]
                st = day_stats(pred, truth, land, p95, p99)
                stats[arm].append(st)
                r.log_params({"n_train_days": trained.n_train,
                              "steps_per_epoch": trained.steps_per_epoch})
                test = aggregate(st, truth[:, land], np.arange(len(days)))
                r.log_metrics({f"test_{k}": v for k, v in test.items()})
                r.log_artifact(trained.result.best_path, "checkpoints")
                run_ids[name] = r.run_id
                curves[name] = [{k: h.get(k) for k in ("epoch", "train_loss", "val_loss",
                                                       "val_MAE_all")}
                                for h in trained.result.history]
                preds.setdefault(arm, pred)
    heavy, heavy_note = heavy_positions(ds, days)
    notes.append(f"heavy subset: {heavy_note} ({len(heavy)} of {len(days)} days)")
    truth_pix = truth[:, land]
    metrics: dict[str, float] = {"aug_skipped": 0.0, "aug_n_synthetic": float(len(syn.days)),
                                 "aug_n_seeds": float(n_seeds)}
    verdicts: dict[str, str] = {}
    for subset, pos in (("all", np.arange(len(days))), ("heavy", heavy)):
        res = compare(stats, truth_pix, pos, n_boot, seed)
        metrics.update({f"aug_{subset}_{k}": v for k, v in res.items()})
        for k in METRICS:
            verdicts[f"{subset}_{k}"] = verdict(res[f"diff_{k}_ci_low"], res[f"diff_{k}_ci_high"],
                                                BETTER[k])
    write_table(out_dir / "augmentation_days.csv", days, {a: stats[a][0] for a in ARMS})
    return {"metrics": metrics, "curves": curves, "notes": notes, "run_ids": run_ids,
            "heavy_days": days[heavy].tolist(), "n_synthetic": int(len(syn.days)),
            "synthetic_run_id": syn.run_id, "predictions": preds, "skipped": False,
            "verdicts": verdicts}


def write_table(path: Path, days: np.ndarray, stats: dict[str, dict[str, np.ndarray]]) -> None:
    """Per-day MAE of both arms (first training seed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["day", *[f"{arm}_MAE_all" for arm in ARMS]])
        for i, d in enumerate(days):
            w.writerow([int(d), *[f"{stats[a]['ae'][i] / stats[a]['n'][i]:.6g}" for a in ARMS]])


def console(result: dict[str, Any], out: Any = print) -> None:
    m = result["metrics"]
    out("🧪 Does AUGMENTATION help? (SRDRN, same budget; augmented - real, 95% CI over seeds "
        "and days)")
    for note in result["notes"]:
        out(f"   📝 {note}")
    if result.get("skipped"):
        out("")
        return
    for subset in ("all", "heavy"):
        for k in METRICS:
            diff = m[f"aug_{subset}_diff_{k}"]
            lo, hi = m[f"aug_{subset}_diff_{k}_ci_low"], m[f"aug_{subset}_diff_{k}_ci_high"]
            v = verdict(lo, hi, BETTER[k])
            out(f"   📊 {subset:5s} {k:12s} real {m[f'aug_{subset}_real_{k}']:.4f} | augmented "
                f"{m[f'aug_{subset}_augmented_{k}']:.4f} | diff {diff:+.4f} "
                f"({m[f'aug_{subset}_diff_{k}_pct']:+.1f} %) [{lo:+.4f}, {hi:+.4f}] -> {v}")
    out("")
