"""Comparing models on one dataset split: the deterministic 3D VAE, its CRPS-fine-tuned
generative version, the cVAE and (synthetic data) the oracle, scored with every score family
(:mod:`.scoring`), printed in the seed's wording (:mod:`.console`), drawn for the report.

All scores are in physical units over land pixels. Metric names: ``det_*``, ``gen_*``,
``cvae_*``, ``oracle_*`` with the same score names (``CRPS``, ``twCRPS_P95``, ``spread_skill``,
``MAE_tail``, ``FSS_P99_4px``, ...), plus comparisons (``crps_improvement_pct``,
``<model>_oracle_ratio``) and indicators (``is_deterministic``, ``is_generative``, ``success_*``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from precipgen import tracking
from precipgen.data.store import PreparedDataset
from precipgen.evaluation import console, scoring
from precipgen.evaluation.report import ReportFigure
from precipgen.models.registry import MissingModelError, OpenedModel, open_model
from precipgen.plots import evaluate as pe
from precipgen.scores.ensemble import DETERMINISTIC_VARIANCE, SUCCESS_THRESHOLDS, crps_improvement

# role -> (checkpoint kinds it accepts, default registry URI, the step that registers it)
ROLES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "deterministic": (("vae3d", "srdrn"), "models:/vae3d-deterministic@latest", "pretrain_vae"),
    "generative": (("vae3d", "cvae"), "models:/vae3d-crps@latest", "finetune_crps"),
    "cvae": (("cvae",), "models:/cvae@latest", "train_cvae"),
}
UPSTREAM_KEYS = {  # training curves shown in the report, per upstream role
    "deterministic": ("train_loss", "val_loss", "val_MSE", "val_MAE_all"),
    "generative": ("CRPS", "Val_CRPS", "val_spread_skill"),
    "cvae": ("train_loss", "val_loss", "val_CRPS", "val_MAE_tail"),
}
N_FIGURE_DAYS, N_FIGURE_MEMBERS = 3, 4


# ------------------------------------------------------------------ inputs
def open_role(role: str, uri: str | None, ds: PreparedDataset) -> OpenedModel:
    """One model under evaluation (empty ``uri``: the registry's default for the role)."""
    kinds, default, producer = ROLES[role]
    m = open_model(uri, kinds, default=default, producer=producer, flag=f"--{role}")
    m.check_fits(ds, f"--{role}")
    m.use_dataset(ds)
    return m


def open_models(uris: dict[str, str | None], ds: PreparedDataset
                ) -> tuple[dict[str, OpenedModel], list[str]]:
    """The deterministic and generative models (required) and the cVAE (skipped, with a
    note, when none is given or registered)."""
    notes: list[str] = []
    models = {role: open_role(role, uris.get(role), ds) for role in ("deterministic", "generative")}
    try:
        models["cvae"] = open_role("cvae", uris.get("cvae"), ds)
    except MissingModelError as e:
        notes.append(f"cVAE skipped: {e}")
    return models, notes


def oracle_params(ds: PreparedDataset) -> dict[str, Any] | None:
    gen = ds.provenance.get("generator")
    return gen.get("params") if isinstance(gen, dict) and gen.get("params") else None


MIN_EVENT_PIXELS = 100  # below this, threshold scores at that level are noise


def rare_event_notes(ds: PreparedDataset, days: np.ndarray) -> list[str]:
    """Warn where a threshold is reached by so few truth pixels of the split that FSS, Brier
    and twCRPS at that level say little (FSS is exactly 0 when no event overlaps)."""
    land = ds.land_mask
    truth = np.concatenate([np.asarray(ds.Y_hr[days[i:i + 256]])[:, 0][:, land].ravel()
                            for i in range(0, len(days), 256)])
    notes = []
    for name in ("P95", "P99"):
        n = int((truth >= float(ds.thresholds[name])).sum())
        if n < MIN_EVENT_PIXELS:
            notes.append(f"only {n} truth pixels of the split reach {name} "
                         f"({float(ds.thresholds[name]):.2f} {ds.normalization.units}): scores at "
                         f"{name} (FSS, Brier, twCRPS) are not meaningful here")
    return notes


def figure_days(ds: PreparedDataset, days: np.ndarray, truth: np.ndarray, n: int) -> list[int]:
    """Positions of ``n`` heavy days of the split, topped up with the wettest ones."""
    heavy = np.flatnonzero(np.isin(days, ds.heavy_days)).tolist()
    wettest = np.argsort(-truth[:, ds.land_mask].mean(axis=1)).tolist()
    heavy.sort(key=lambda i: -truth[i][ds.land_mask].mean())
    return list(dict.fromkeys([*heavy, *wettest]))[:n]


# ------------------------------------------------------------------ the evaluation proper
def evaluate_models(models: dict[str, OpenedModel], ds: PreparedDataset, days: np.ndarray,
                    m: int, seed: int, wet: float, out: console.Print) -> dict[str, Any]:
    """Scores 1-7 of every model; returns metrics, curves and the arrays the figures need."""
    land, units = ds.land_mask, ds.normalization.units
    thr = {"P95": float(ds.thresholds["P95"]), "P99": float(ds.thresholds["P99"])}
    x = np.asarray(ds.X_lr[days], dtype=np.float32)
    truth = np.asarray(ds.Y_hr[days], dtype=np.float32)[:, 0]
    det, gen = models["deterministic"], models["generative"]
    metrics: dict[str, float] = {}
    curves: dict[str, dict[str, Any]] = {}

    # 1. deterministic vs generative: repeated outputs for one input (the first window)
    window = min(len(days), int(getattr(det.generator, "window_days", 1)))
    reps = np.stack([det.ensemble(x[:window], 1, seed + 101 * i, deterministic=True)[0, :, 0]
                     for i in range(max(2, min(m, 5)))])
    det_var = scoring.repeat_variance(reps, land)
    metrics.update({f"det_{k}": v for k, v in det_var.items()})
    metrics["is_deterministic"] = float(det_var["output_max_variance"] < DETERMINISTIC_VARIANCE)
    console.deterministic_test(metrics, out)

    # The generative checks probe the wettest day: a dry day has no spread to show.
    probe = int(np.argmax(truth[:, land].mean(axis=1)))
    ensembles: dict[str, np.ndarray] = {}
    ensembles["gen"] = gen.ensemble(x, m, seed)[:, :, 0]
    gwin = min(len(days), int(getattr(gen.generator, "window_days", 1)))
    g0 = min(probe, len(days) - gwin)
    metrics.update({f"gen_{k}": v for k, v in
                    scoring.repeat_variance(ensembles["gen"][:, g0:g0 + gwin], land).items()})
    threshold = SUCCESS_THRESHOLDS["generative_variance"]
    metrics["gen_is_generative"] = float(metrics["gen_output_max_variance"] > threshold)
    metrics["is_generative"] = metrics["gen_is_generative"]
    console.generative_test(metrics, "gen", out=out)

    if "cvae" in models:
        ensembles["cvae"] = models["cvae"].ensemble(x, m, seed)[:, :, 0]
        metrics.update({f"cvae_{k}": v for k, v in
                        scoring.repeat_variance(ensembles["cvae"][:, probe:probe + 1], land).items()})
        metrics["cvae_is_generative"] = float(metrics["cvae_output_max_variance"] > threshold)
        console.generative_test(metrics, "cvae", "cVAE (from X alone)", out=out)

    params = oracle_params(ds)
    if params is not None:
        from precipgen.data.synthetic import oracle_sample

        ensembles["oracle"] = oracle_sample(params, x, np.asarray(ds.statics), m, seed,
                                            day_ids=days, static_names=ds.static_names,
                                            show_progress=True)[:, :, 0]

    # 2-6: every ensemble and the deterministic prediction
    det_pred = det.ensemble(x, 1, seed, deterministic=True)[0, :, 0]
    scored = {"det": scoring.score_deterministic(det_pred, truth, land, thr, wet, "det")}
    for p, ens in ensembles.items():
        scored[p] = scoring.score_ensemble(ens, truth, land, thr, wet, p, seed)
    for p, s in scored.items():
        metrics.update(s.metrics)
        curves[p] = s.curves
    console.uncertainty_test(metrics, (m, len(days), 1, *ds.hr_shape), "gen", out)

    metrics["crps_improvement_pct"] = crps_improvement(metrics["det_CRPS"], metrics["gen_CRPS"])
    metrics["crps_improvement_pct_standard"] = crps_improvement(metrics["det_CRPS"],
                                                                metrics["gen_CRPS_standard"])
    if "cvae" in ensembles:
        metrics["cvae_crps_improvement_pct"] = crps_improvement(metrics["det_CRPS"],
                                                                metrics["cvae_CRPS"])
    if "oracle" in ensembles:
        for p in ("det", *[q for q in ensembles if q != "oracle"]):
            metrics[f"{p}_oracle_ratio"] = metrics[f"{p}_CRPS"] / metrics["oracle_CRPS"]
    console.crps_comparison(metrics, units, out)
    ens_names = list(ensembles)
    console.calibration_section(metrics, ens_names, out)
    console.extremes_section(metrics, ["det", *ens_names], units, out)
    console.spatial_section(metrics, ["det", *ens_names], out)

    # 7. the seed's success indicators
    ind = scoring.success(metrics["gen_output_max_variance"], metrics["gen_output_mean_variance"],
                          metrics["crps_improvement_pct"], metrics["gen_uncertainty"])
    for k, i in ind.items():
        metrics[f"success_{k}"] = float(i.passed)
    metrics["success_all"] = float(all(i.passed for i in ind.values()))
    console.success_section(ind, out)
    return {"metrics": metrics, "curves": curves, "truth": truth, "det": det_pred,
            "ensembles": ensembles, "thresholds": thr, "indicators": ind}


def upstream_histories(models: dict[str, OpenedModel]) -> tuple[dict[str, dict[str, list]], list[str]]:
    hist: dict[str, dict[str, list]] = {}
    notes = []
    for role, lm in models.items():
        if not lm.run_id:
            notes.append(f"{role}: no producing run known, no training curve")
            continue
        try:
            hist[f"{role} ({lm.run_id[:8]})"] = {
                k: tracking.metric_history(lm.run_id, k) for k in UPSTREAM_KEYS[role]}
        except Exception as e:  # a run in another tracking store: the report says so
            notes.append(f"{role}: training history of run {lm.run_id} unavailable ({e})")
    return hist, notes


def build_figures(ev: dict[str, Any], ds: PreparedDataset, days: np.ndarray,
                  histories: dict[str, dict[str, list]]) -> list[Any]:

    land, units, curves, thr = ds.land_mask, ds.normalization.units, ev["curves"], ev["thresholds"]
    ens = ev["ensembles"]["gen"]
    pos = figure_days(ds, days, ev["truth"], N_FIGURE_DAYS)
    members = ens[:N_FIGURE_MEMBERS][:, pos]
    ens_curves = {p: c for p, c in curves.items() if p != "det"}
    return [
        ReportFigure("heavy_days", "Truth vs deterministic vs four generative members",
                     pe.heavy_days([int(days[i]) for i in pos], ev["truth"][pos], ev["det"][pos],
                                   members, land, units, ds.sample_word),
                     f"Three heavy {ds.sample_word}s of the split (topped up with the wettest), "
                     "one colour scale."),
        ReportFigure("std_map", "Ensemble standard deviation (generative, mean over days)",
                     pe.std_map(ens.std(axis=0, ddof=1).mean(axis=0), land, units,
                                "generative ensemble std, mean over days")),
        ReportFigure("rank_histogram", "Rank histograms", pe.rank_histograms(ens_curves),
                     "Ties (dry pixels) broken at random; flat = calibrated, U = under-dispersive."),
        ReportFigure("spread_skill", "Spread-skill", pe.spread_skill(ens_curves, units)),
        ReportFigure("reliability", "Reliability diagrams (P95, P99)",
                     pe.reliability(ens_curves, thr, units)),
        ReportFigure("spectra", "Radially averaged power spectra", pe.spectra(curves)),
        ReportFigure("fss", "Fractions skill score", pe.fss_curves(curves, thr)),
        ReportFigure("qq", "Quantile-quantile plot of wet pixels", pe.qq(curves, units)),
        ReportFigure("training_curves", "Training curves of the upstream runs",
                     pe.training_curves(histories)),
    ]


def log_curves(run: tracking.Run, curves: dict[str, dict[str, Any]]) -> None:
    """FSS by window size as metric histories (step = px), so MLflow plots the curve."""
    for p, c in curves.items():
        for key, v in c.items():
            if key.startswith("fss_"):
                for s, f in zip(v["scales"], v["fss"]):
                    run.log_metrics({f"{p}_FSS_{key[4:]}_curve": f}, step=int(s))
