"""``precipgen evaluate``: honest verification of the deterministic 3D VAE, its CRPS-fine-tuned
generative version and the cVAE, plus (``--augmentation``) whether synthetic days help the
SRDRN downscaler. Writes ``reports/<run-name>/report.{md,html}`` + ``evaluation.json`` and logs
every number as an MLflow metric of the evaluation run.

    precipgen evaluate --deterministic URI --generative URI [--cvae URI] --data DIR \
        --num_samples 10 [--split test] [--augmentation --samples DIR] [--report_dir reports] \
        [--seed S] [--max_days N]

URIs: a path, ``runs:/<id>/<path>`` or ``models:/<name>@<alias>``; empty = the registry's
``vae3d-deterministic`` / ``vae3d-crps`` / ``cvae`` @latest (the cVAE is skipped, with a note,
when none is registered). All scores are in physical units over land pixels of ``--split``.

Metric names: ``det_*`` (deterministic), ``gen_*`` (generative), ``cvae_*``, ``oracle_*`` (exact
samples of the synthetic generator, synthetic data only) with the same score names (``CRPS``,
``twCRPS_P95``, ``spread_skill``, ``MAE_tail``, ``FSS_P99_4px``, ...), plus comparisons
(``crps_improvement_pct``, ``<model>_oracle_ratio``), indicators (``is_deterministic``,
``is_generative``, ``success_*``) and the experiment (``aug_<all|heavy>_*``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from precipgen import cli, tracking
from precipgen.config import Config
from precipgen.data.store import PreparedDataset
from precipgen.evaluation import console, scoring
from precipgen.evaluation.models import LoadedModel, MissingModelError, load_model
from precipgen.scores.ensemble import DETERMINISTIC_VARIANCE, SUCCESS_THRESHOLDS, crps_improvement

UPSTREAM_KEYS = {  # training curves shown in the report, per upstream role
    "deterministic": ("train_loss", "val_loss", "val_MSE", "val_MAE_all"),
    "generative": ("CRPS", "Val_CRPS", "val_spread_skill"),
    "cvae": ("train_loss", "val_loss", "val_CRPS", "val_MAE_tail"),
}
N_FIGURE_DAYS, N_FIGURE_MEMBERS = 3, 4


def add_arguments(p: argparse.ArgumentParser) -> None:
    for role, default in (("deterministic", "models:/vae3d-deterministic@latest"),
                          ("generative", "models:/vae3d-crps@latest"),
                          ("cvae", "models:/cvae@latest")):
        p.add_argument(f"--{role}", default=None,
                       help=f"path | runs:/<id>/<path> | models:/<name>@<alias> (default {default})")
    p.add_argument("--data", default=None, help="prepared dataset dir (default data.path)")
    p.add_argument("--num_samples", type=cli.opt(int), default=10, help="ensemble members (>= 2)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--augmentation", nargs="?", const="true", default="false",
                   help="also run the augmentation experiment (needs --samples)")
    p.add_argument("--samples", default=None, help="a `precipgen sample` output directory")
    p.add_argument("--report_dir", default="reports", help="reports go to <report_dir>/<run-name>/")
    p.add_argument("--seed", type=cli.opt(int), default=None, help="default train.seed")
    p.add_argument("--max_days", type=cli.opt(int), default=None,
                   help="score only the first N days of the split (0/empty = all)")
    p.add_argument("--bootstrap", type=cli.opt(int), default=500, help="bootstrap resamples (augmentation)")
    p.add_argument("--run_name", default=None, help="default evaluate_<TIMESTAMP>")


class Console:
    """Prints and keeps the lines (the report reproduces them)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


# ------------------------------------------------------------------ inputs
def load_models(args: argparse.Namespace, ds: PreparedDataset) -> tuple[dict[str, LoadedModel], list[str]]:
    notes: list[str] = []
    models = {
        "deterministic": load_model("deterministic", cli.empty_to_none(args.deterministic), ds,
                                    ("vae3d", "srdrn")),
        "generative": load_model("generative", cli.empty_to_none(args.generative), ds,
                                 ("vae3d", "cvae")),
    }
    try:
        models["cvae"] = load_model("cvae", cli.empty_to_none(args.cvae), ds, ("cvae",))
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
def evaluate_models(models: dict[str, LoadedModel], ds: PreparedDataset, days: np.ndarray,
                    m: int, seed: int, wet: float, out: Console) -> dict[str, Any]:
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
    reps = np.stack([det.predict(x[:window], 1, seed + 101 * i, deterministic=True)[0, :, 0]
                     for i in range(max(2, min(m, 5)))])
    det_var = scoring.repeat_variance(reps, land)
    metrics.update({f"det_{k}": v for k, v in det_var.items()})
    metrics["is_deterministic"] = float(det_var["output_max_variance"] < DETERMINISTIC_VARIANCE)
    console.deterministic_test(metrics, out)

    # The generative checks probe the wettest day: a dry day has no spread to show.
    probe = int(np.argmax(truth[:, land].mean(axis=1)))
    ensembles: dict[str, np.ndarray] = {}
    ensembles["gen"] = gen.predict(x, m, seed)[:, :, 0]
    gwin = min(len(days), int(getattr(gen.generator, "window_days", 1)))
    g0 = min(probe, len(days) - gwin)
    metrics.update({f"gen_{k}": v for k, v in
                    scoring.repeat_variance(ensembles["gen"][:, g0:g0 + gwin], land).items()})
    threshold = SUCCESS_THRESHOLDS["generative_variance"]
    metrics["gen_is_generative"] = float(metrics["gen_output_max_variance"] > threshold)
    metrics["is_generative"] = metrics["gen_is_generative"]
    console.generative_test(metrics, "gen", out=out)

    if "cvae" in models:
        ensembles["cvae"] = models["cvae"].predict(x, m, seed)[:, :, 0]
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
    det_pred = det.predict(x, 1, seed, deterministic=True)[0, :, 0]
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
            "ensembles": ensembles, "thresholds": thr}


def upstream_histories(models: dict[str, LoadedModel]) -> tuple[dict[str, dict[str, list]], list[str]]:
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
    from precipgen import plots_eval as pe
    from precipgen.report import ReportFigure

    land, units, curves, thr = ds.land_mask, ds.normalization.units, ev["curves"], ev["thresholds"]
    ens = ev["ensembles"]["gen"]
    pos = figure_days(ds, days, ev["truth"], N_FIGURE_DAYS)
    members = ens[:N_FIGURE_MEMBERS][:, pos]
    ens_curves = {p: c for p, c in curves.items() if p != "det"}
    return [
        ReportFigure("heavy_days", "Truth vs deterministic vs four generative members",
                     pe.heavy_days([int(days[i]) for i in pos], ev["truth"][pos], ev["det"][pos],
                                   members, land, units),
                     "Three heavy days of the split (topped up with the wettest), one colour scale."),
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


# ------------------------------------------------------------------ the step
def run(args: argparse.Namespace) -> int:
    extra = [f"data.path={json.dumps(args.data)}"] if cli.empty_to_none(args.data) else []
    cfg: Config = cli.config_from_args(args, extra)
    m = args.num_samples
    if m is None or m < 2:
        raise ValueError(f"--num_samples must be >= 2 (an ensemble), got {m}")
    augment = cli.truthy(args.augmentation)
    samples = cli.empty_to_none(args.samples)
    if augment and not samples:
        raise ValueError("--augmentation needs --samples DIR (an output of `precipgen sample`)")
    seed = args.seed if args.seed is not None else cfg.train.seed

    # every input is checked before the MLflow run starts: bad input leaves no run behind
    data = tracking.resolve(cfg.data.path)
    ds = PreparedDataset.open(data.path)
    days = ds.split[args.split]
    if args.max_days:
        days = days[: args.max_days]
    if len(days) == 0:
        raise ValueError(f"split '{args.split}' of {ds.root} has no days")
    models, notes = load_models(args, ds)
    notes += rare_event_notes(ds, days)
    if oracle_params(ds) is None:
        notes.append("no synthetic-generator parameters in provenance.json: no oracle scores")
    run_name = cli.empty_to_none(args.run_name) or f"evaluate_{time.strftime('%Y%m%d_%H%M%S')}"
    report_dir = Path(args.report_dir) / run_name

    params = {"split": args.split, "num_samples": m, "seed": seed, "n_days": len(days),
              "max_days": args.max_days or 0, "data": str(ds.root), "augmentation": augment,
              "samples": samples or "", "report_dir": str(report_dir),
              **{f"{r}_uri": lm.uri for r, lm in models.items()}}
    if augment:
        params.update({f"srdrn.{k}": v for k, v in vars(cfg.srdrn).items()})
        params["bootstrap"] = args.bootstrap
    out = Console()
    with tracking.start_run("evaluate", params=params, run_name=run_name,
                            config_yaml=cfg.to_yaml()) as r:
        r.set_lineage({**{r_: lm.run_id for r_, lm in models.items()}, "dataset": data.run_id})
        r.log_dataset(ds.root, ds.digest, name=ds.root.name, context="evaluation",
                      profile={"split": args.split, "n_days": len(days)})
        ev = evaluate_models(models, ds, days, m, seed, cfg.data.wet_threshold_mm, out)
        metrics = dict(ev["metrics"])
        aug: dict[str, Any] | None = None
        if augment:
            from precipgen import augmentation

            srdrn_dir = Path(cfg.srdrn.output_dir) / run_name  # checkpoints: not in the report
            aug = augmentation.run_experiment(ds, samples, cfg, args.split, seed, srdrn_dir,
                                              args.bootstrap, args.max_days)
            r.log_artifact(srdrn_dir / "augmentation_days.csv", "augmentation")
            r.set_lineage({"synthetic": aug["synthetic_run_id"]})
            metrics.update(aug["metrics"])
            notes += aug["notes"]
            augmentation.console(aug, out)
        r.log_metrics(metrics)
        log_curves(r, ev["curves"])
        r.set_tags({"is_generative": bool(metrics["is_generative"]),
                    "success_all": bool(metrics["success_all"])})

        histories, hist_notes = upstream_histories(models)
        if aug is not None:
            for arm, rows in aug["curves"].items():
                histories[f"SRDRN {arm}"] = {
                    k: [(int(h["epoch"]), h[k]) for h in rows if h.get(k) is not None]
                    for k in ("train_loss", "val_loss")}
        notes += hist_notes
        write_outputs(r, report_dir, run_name, models, ds, days, args, m, seed, ev, metrics,
                      histories, notes, out.text, aug)
        for note in notes:
            print(f"note: {note}")
        print(f"evaluate: {len(days)} {args.split} days, m={m}: CRPS deterministic "
              f"{metrics['det_CRPS']:.4f} vs generative {metrics['gen_CRPS']:.4f} "
              f"({metrics['crps_improvement_pct']:.1f}%), spread-skill "
              f"{metrics['gen_spread_skill']:.2f}; report {report_dir / 'report.html'} | "
              f"run {r.url}")
    return 0


def write_outputs(r: tracking.Run, report_dir: Path, run_name: str,
                  models: dict[str, LoadedModel], ds: PreparedDataset, days: np.ndarray,
                  args: argparse.Namespace, m: int, seed: int, ev: dict[str, Any],
                  metrics: dict[str, float], histories: dict[str, dict[str, list]],
                  notes: list[str], console_text: str, aug: dict[str, Any] | None) -> None:
    from precipgen.report import Report, write_report

    header: dict[str, Any] = {"MLflow run": f"{run_name} ({r.run_id})", "dataset": str(ds.root),
                              "split": f"{args.split} ({len(days)} days)",
                              "ensemble members": m, "seed": seed,
                              "units": ds.normalization.units,
                              "P95 / P99": f"{ev['thresholds']['P95']:.3f} / "
                                           f"{ev['thresholds']['P99']:.3f}"}
    for role, lm in models.items():
        header[role] = f"{lm.uri} (kind {lm.kind}, run {lm.run_id or 'unknown'})"
    evaluation = {
        "run_id": r.run_id, "run_name": run_name, "header": header, "notes": notes,
        "days": days.tolist(), "metrics": metrics, "curves": ev["curves"],
        "upstream_histories": histories,
        "models": {role: {"uri": lm.uri, "kind": lm.kind, "run_id": lm.run_id,
                          "checkpoint": str(lm.checkpoint)} for role, lm in models.items()},
    }
    if aug is not None:
        evaluation["augmentation"] = {k: aug[k] for k in ("metrics", "curves", "notes", "run_ids",
                                                          "heavy_days", "n_synthetic")}
    figures = build_figures(ev, ds, days, histories)
    rep = Report(title=f"precipgen evaluation {run_name}", header=header, metrics=metrics,
                 figures=figures, notes=notes, console=console_text)
    write_report(report_dir, rep, evaluation)
    for f in figures:
        f.figure.clf()
    r.log_artifacts(report_dir, "report")
