"""The evaluation's score families (issue 6, scores 1-7) on physical-unit fields.

Shapes: ``truth (N, H, W)``, a deterministic ``pred (N, H, W)``, an ensemble
``ens (m, N, H, W)``, ``land (H, W)`` bool; mm per time step. Every function returns flat
metrics ``{f"{prefix}_{name}": float}`` (what MLflow logs) and, where a figure needs more than
a number, ``curves`` (lists, JSON-ready for ``evaluation.json``).

The scores themselves live in :mod:`precipgen.scores` (scoringrules-backed CRPS / twCRPS /
Brier, own FSS / RAPSD / rank histogram checked against pysteps); this module only chooses
what to compute and names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from precipgen.scores import calibration as cal
from precipgen.scores import ensemble as ens_scores
from precipgen.scores import extremes as ext
from precipgen.scores import spatial as sp

FSS_SCALES = tuple(range(1, 33))
FSS_REPORTED_SCALES = (1, 4, 16)  # FSS values logged as scalar metrics (curves in JSON)
SPECTRAL_MIN_FREQ = 0.25  # wavelengths of 4 px and less: "the smallest scales"


@dataclass
class Scored:
    """Scalars (logged as metrics) and curves (figures, evaluation.json) of one model."""

    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, Any] = field(default_factory=dict)

    def add(self, prefix: str, values: dict[str, float]) -> None:
        self.metrics.update({f"{prefix}_{k}": float(v) for k, v in values.items()})


def _nanmean0(a: np.ndarray) -> np.ndarray:
    """Mean over axis 0 ignoring NaN; NaN (no warning) where every entry is NaN (no event)."""
    ok = np.isfinite(a)
    n = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(ok, a, 0.0).sum(axis=0) / n, np.nan)


def _list(a: Any) -> list:
    return np.asarray(a, dtype=float).tolist()


# ------------------------------------------------------------------ 1-2: generative checks
def repeat_variance(outputs: np.ndarray, land: np.ndarray) -> dict[str, float]:
    """Repeated outputs ``(n, ...)`` for one input: max and mean per-pixel variance (ddof=1)."""
    return {"output_max_variance": ens_scores.generative_variance(outputs, land),
            "output_mean_variance": ens_scores.diversity_score(outputs, land)}


def uncertainty(ens: np.ndarray, land: np.ndarray) -> dict[str, float]:
    u = ens_scores.uncertainty_stats(ens, land)
    return {"mean_min": u.mean_min, "mean_max": u.mean_max, "std_min": u.std_min,
            "std_max": u.std_max, "uncertainty": u.std_mean}


# ------------------------------------------------------------------ 3: CRPS
def crps_scores(ens: np.ndarray, truth: np.ndarray, land: np.ndarray,
                thr: dict[str, float]) -> dict[str, float]:
    fair = ens_scores.crps_ensemble(ens, truth, land, kind="fair")
    out = {"CRPS": fair, "CRPS_fair": fair,
           "CRPS_standard": ens_scores.crps_ensemble(ens, truth, land, kind="standard")}
    for name, t in thr.items():
        out[f"twCRPS_{name}"] = ens_scores.twcrps_ensemble(ens, truth, t, land, kind="fair")
    return out


def deterministic_crps(pred: np.ndarray, truth: np.ndarray, land: np.ndarray,
                       thr: dict[str, float]) -> dict[str, float]:
    out = {"CRPS": ens_scores.crps_deterministic(pred, truth, land)}
    for name, t in thr.items():
        out[f"twCRPS_{name}"] = ens_scores.twcrps_deterministic(pred, truth, t, land)
    return out


# ------------------------------------------------------------------ 4: calibration
def calibration(ens: np.ndarray, truth: np.ndarray, land: np.ndarray, thr: dict[str, float],
                seed: int, res: Scored, prefix: str) -> None:
    ss = cal.spread_skill(ens, truth, land)
    counts = cal.rank_histogram(ens, truth, land, rng=np.random.default_rng(seed))
    # neighbouring pixels are not independent: the chi-square uses days as the sample size
    flat = cal.rank_histogram_flatness(counts, n_eff=truth.shape[0])
    vals = {"spread": ss.spread, "rmse_ens_mean": ss.rmse, "spread_skill": ss.ratio,
            "rank_chi2": flat.chi2, "rank_pvalue": flat.p_value,
            "rank_reliability_index": flat.reliability_index}
    spread_b, rmse_b, n_b = cal.spread_skill_binned(ens, truth, land)
    curves: dict[str, Any] = {
        "rank_histogram": counts.tolist(),
        "spread_skill_binned": {"spread": _list(spread_b), "rmse": _list(rmse_b),
                                "counts": n_b.tolist()},
    }
    for name, t in thr.items():
        vals[f"brier_{name}"] = cal.brier_score(ens, truth, t, land)
        vals[f"bss_{name}"] = cal.brier_skill_score(ens, truth, t, land)
        rel = cal.reliability_diagram(ens, truth, t, land)
        curves[f"reliability_{name}"] = {"forecast": _list(rel.forecast),
                                         "observed": _list(rel.observed),
                                         "counts": rel.counts.tolist(),
                                         "base_rate": rel.base_rate}
    res.add(prefix, vals)
    res.curves.update(curves)


def deterministic_brier(pred: np.ndarray, truth: np.ndarray, land: np.ndarray,
                        thr: dict[str, float]) -> dict[str, float]:
    out = {}
    for name, t in thr.items():
        out[f"brier_{name}"] = cal.brier_score(pred[None], truth, t, land)
        out[f"bss_{name}"] = cal.brier_skill_score(pred[None], truth, t, land)
    return out


# ------------------------------------------------------------------ 5: extremes, distribution
def extremes(pred: np.ndarray, truth: np.ndarray, land: np.ndarray, thr: dict[str, float],
             wet: float, res: Scored, prefix: str, one_member: np.ndarray | None = None) -> None:
    """``pred`` (N, H, W) or an ensemble (m, N, H, W): pixel scores average the members,
    distribution scores pool them (see :mod:`precipgen.scores.extremes`)."""
    point = pred.mean(axis=0) if pred.ndim == truth.ndim + 1 else pred
    wf_p, wf_t = ext.wet_frequency(pred, land, wet), ext.wet_frequency(truth, land, wet)
    si_p, si_t = ext.sdii(pred, land, wet), ext.sdii(truth, land, wet)
    vals = {
        "MAE_all": ens_scores.crps_deterministic(point, truth, land),
        "MAE_tail": ext.mae_tail(pred, truth, thr["P95"], land),
        "P95_bias": ext.quantile_bias(pred, truth, 0.95, land),
        "P99_bias": ext.quantile_bias(pred, truth, 0.99, land),
        "max_bias": ext.max_bias(pred if one_member is None else one_member, truth, land),
        "wet_frequency": wf_p, "wet_frequency_bias": wf_p - wf_t,
        "SDII": si_p, "SDII_bias": si_p - si_t,
        "mass_bias": ext.mass_bias(pred, truth, land),
    }
    qq = ext.qq_data(pred, truth, land, wet_threshold=wet)
    res.add(prefix, vals)
    res.curves["qq"] = {"levels": _list(qq.levels), "model": _list(qq.pred),
                        "truth": _list(qq.truth)}


# ------------------------------------------------------------------ 6: spatial structure
def spatial(pred: np.ndarray, truth: np.ndarray, land: np.ndarray, thr: dict[str, float],
            res: Scored, prefix: str) -> None:
    members = pred if pred.ndim == truth.ndim + 1 else pred[None]
    psd, freq = sp.rapsd(members, land)
    psd_t, _ = sp.rapsd(truth, land)
    vals = {"spectral_ratio": sp.spectral_ratio(members, truth, land,
                                                min_freq=SPECTRAL_MIN_FREQ)}
    curves: dict[str, Any] = {"spectrum": {"freq": _list(freq),
                                           "model": _list(psd.reshape(-1, freq.size).mean(0)),
                                           "truth": _list(psd_t.reshape(-1, freq.size).mean(0))}}
    corr = np.stack([sp.spatial_correlation(m, truth, land) for m in members])
    vals["spatial_corr"] = float(np.nanmean(corr)) if np.isfinite(corr).any() else float("nan")
    for name, t in thr.items():
        # an ensemble's FSS: each member scored against the truth, then averaged
        curve = _nanmean0(np.stack([sp.fss_curve(m, truth, t, FSS_SCALES, land)[1]
                                    for m in members]))
        curves[f"fss_{name}"] = {"scales": list(FSS_SCALES), "fss": _list(curve),
                                 "target": sp.fss_target(truth, t, land)}
        for s in FSS_REPORTED_SCALES:
            vals[f"FSS_{name}_{s}px"] = float(curve[FSS_SCALES.index(s)])
    res.add(prefix, vals)
    res.curves.update(curves)


# ------------------------------------------------------------------ whole models
def score_ensemble(ens: np.ndarray, truth: np.ndarray, land: np.ndarray,
                   thr: dict[str, float], wet: float, prefix: str, seed: int) -> Scored:
    """Scores 2-6 of an ensemble ``(m, N, H, W)``."""
    res = Scored()
    res.add(prefix, uncertainty(ens, land))
    res.add(prefix, crps_scores(ens, truth, land, thr))
    calibration(ens, truth, land, thr, seed, res, prefix)
    extremes(ens, truth, land, thr, wet, res, prefix, one_member=ens[0])
    spatial(ens, truth, land, thr, res, prefix)
    return res


def score_deterministic(pred: np.ndarray, truth: np.ndarray, land: np.ndarray,
                        thr: dict[str, float], wet: float, prefix: str) -> Scored:
    """Scores 3-6 of a point forecast ``(N, H, W)`` (its CRPS is its MAE)."""
    res = Scored()
    res.add(prefix, deterministic_crps(pred, truth, land, thr))
    res.add(prefix, deterministic_brier(pred, truth, land, thr))
    extremes(pred, truth, land, thr, wet, res, prefix)
    spatial(pred, truth, land, thr, res, prefix)
    return res


def success(gen_variance: float, diversity: float, improvement: float,
            uncertainty_value: float) -> dict[str, ens_scores.Indicator]:
    """Score 7: the seed's four success indicators."""
    return ens_scores.success_indicators(gen_variance, diversity, improvement, uncertainty_value)
