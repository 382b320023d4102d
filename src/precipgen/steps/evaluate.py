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

from precipgen import tracking
from precipgen.config import Config
from precipgen.data.store import PreparedDataset
from precipgen.evaluation import augmentation_gain, verdict
from precipgen.evaluation.compare import (
    build_figures,
    evaluate_models,
    log_curves,
    open_models,
    oracle_params,
    rare_event_notes,
    upstream_histories,
)
from precipgen.evaluation.console import Console
from precipgen.evaluation.report import write_evaluation
from precipgen.locks import claim_output
from precipgen.steps.flags import config_from_args, empty_to_none, opt, truthy


def add_arguments(p: argparse.ArgumentParser) -> None:
    for role, default in (("deterministic", "models:/vae3d-deterministic@latest"),
                          ("generative", "models:/vae3d-crps@latest"),
                          ("cvae", "models:/cvae@latest")):
        p.add_argument(f"--{role}", default=None,
                       help=f"path | runs:/<id>/<path> | models:/<name>@<alias> (default {default})")
    p.add_argument("--data", default=None,
                   help="prepared dataset dir to score on (default data.path); may be another "
                        "region or period than the models were trained on: their own "
                        "normalisation is used, channels, grids and units must fit")
    p.add_argument("--num_samples", type=opt(int), default=10, help="ensemble members (>= 2)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--augmentation", nargs="?", const="true", default="false",
                   help="also run the augmentation experiment (needs --samples)")
    p.add_argument("--skip_augmentation", nargs="?", const="true", default="false",
                   help="no augmentation experiment, even with --augmentation (as in main)")
    p.add_argument("--samples", default=None, help="a `precipgen sample` output directory")
    p.add_argument("--report_dir", default="reports", help="reports go to <report_dir>/<run-name>/")
    p.add_argument("--seed", type=opt(int), default=None, help="default train.seed")
    p.add_argument("--max_days", type=opt(int), default=None,
                   help="score only the first N days of the split (0/empty = all)")
    p.add_argument("--bootstrap", type=opt(int), default=500, help="bootstrap resamples (augmentation)")
    p.add_argument("--run_name", default=None, help="default evaluate_<TIMESTAMP>")
    p.add_argument("--verbose", nargs="?", const="true", default="false",
                   help="print the seed's full diagnostic printout (always in the report)")


# ------------------------------------------------------------------ the step
def run(args: argparse.Namespace) -> int:
    extra = [f"data.path={json.dumps(args.data)}"] if empty_to_none(args.data) else []
    cfg: Config = config_from_args(args, extra)
    m = args.num_samples
    if m is None or m < 2:
        raise ValueError(f"--num_samples must be >= 2 (an ensemble), got {m}")
    augment = truthy(args.augmentation) and not truthy(args.skip_augmentation)
    samples = empty_to_none(args.samples)
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
    models, notes = open_models({r: empty_to_none(getattr(args, r)) for r in
                                 ("deterministic", "generative", "cvae")}, ds)
    notes += rare_event_notes(ds, days)
    if oracle_params(ds) is None:
        notes.append("no synthetic-generator parameters in provenance.json: no oracle scores")
    run_name = empty_to_none(args.run_name) or f"evaluate_{time.strftime('%Y%m%d_%H%M%S')}"
    report_dir = Path(args.report_dir) / run_name

    params = {"split": args.split, "num_samples": m, "seed": seed, "n_days": len(days),
              "max_days": args.max_days or 0, "data": str(ds.root), "augmentation": augment,
              "samples": samples or "", "report_dir": str(report_dir),
              **{f"{r}_uri": lm.uri for r, lm in models.items()}}
    if augment:
        params.update({f"srdrn.{k}": v for k, v in vars(cfg.srdrn).items()})
        params.update({f"augmentation.{k}": v for k, v in vars(cfg.augmentation).items()})
        params["bootstrap"] = args.bootstrap
    out = Console(verbose=truthy(args.verbose))
    with claim_output(report_dir, "report directory") as owner, \
            tracking.start_run("evaluate", params=params, run_name=run_name,
                               config_yaml=cfg.to_yaml()) as r:
        owner.set_run_id(r.run_id)
        r.set_lineage({**{r_: lm.run_id for r_, lm in models.items()}, "dataset": data.run_id})
        r.log_dataset(ds.root, ds.digest, name=ds.root.name, context="evaluation",
                      profile={"split": args.split, "n_days": len(days)})
        ev = evaluate_models(models, ds, days, m, seed, cfg.data.wet_threshold_mm, out)
        metrics = dict(ev["metrics"])
        aug: dict[str, Any] | None = None
        if augment:
            srdrn_dir = Path(cfg.srdrn.output_dir) / run_name  # checkpoints: not in the report
            aug = augmentation_gain.run_experiment(ds, samples, cfg, args.split, seed, srdrn_dir,
                                              args.bootstrap, args.max_days)
            if not aug.get("skipped"):
                r.log_artifact(srdrn_dir / "augmentation_days.csv", "augmentation")
            r.set_lineage({"synthetic": aug["synthetic_run_id"]})
            metrics.update(aug["metrics"])
            notes += aug["notes"]
            augmentation_gain.console(aug, out)
        r.log_metrics(metrics)
        log_curves(r, ev["curves"])
        found = verdict.criteria(metrics, ev["indicators"], ds.normalization.units)
        champion = []
        if metrics["success_all"] and models["generative"].run_id:
            # the seed's success indicators pass: the generative model becomes the champion
            champion = tracking.promote(models["generative"].run_id, "champion")
            r.set_tags({"champion": ", ".join(champion)} if champion else {})
        r.set_description(verdict.markdown(found, ds.normalization.units))
        r.set_tags({"is_generative": bool(metrics["is_generative"]),
                    "success_all": bool(metrics["success_all"])})

        histories, hist_notes = upstream_histories(models)
        if aug is not None:
            for arm, rows in aug["curves"].items():
                histories[f"SRDRN {arm}"] = {
                    k: [(int(h["epoch"]), h[k]) for h in rows if h.get(k) is not None]
                    for k in ("train_loss", "val_loss")}
        notes += hist_notes
        write_evaluation(r, report_dir, run_name, models, ds, days, args.split, m, seed, ev,
                         metrics, histories, notes, out.text, aug,
                         build_figures(ev, ds, days, histories), found)
        _print_summary(metrics, found, notes, ds.normalization.units)
        if champion:
            print(f"alias champion set on {', '.join(champion)} (success indicators pass)")
        print(f"evaluate: {len(days)} {args.split} {ds.sample_word}s, m={m}: CRPS deterministic "
              f"{metrics['det_CRPS']:.4f} vs generative {metrics['gen_CRPS']:.4f} "
              f"{ds.normalization.units} ({metrics['crps_improvement_pct']:.1f}%), spread-skill "
              f"{metrics['gen_spread_skill']:.2f}; {verdict.summary_line(found)}; report "
              f"{report_dir / 'report.html'} | run {r.url}")
    return 0


def _print_summary(metrics: dict[str, float], found: list[verdict.Criterion], notes: list[str],
                   units: str) -> None:
    """At most a dozen lines: the verdict, then the few numbers people look for first."""
    print(f"verdict: {verdict.summary_line(found)}")
    for c in found[:8]:
        print(f"  {'PASS' if c.passed else 'FAIL'}  {c.name}: {c.value:.4g} ({c.threshold})")
    if len(found) > 8:
        print(f"  ... {len(found) - 8} more criteria in the report")
    if "oracle_CRPS" in metrics:
        print(f"CRPS ({units}): oracle {metrics['oracle_CRPS']:.4f}, generative "
              f"{metrics['gen_CRPS']:.4f}" + (f", cVAE {metrics['cvae_CRPS']:.4f}"
                                               if "cvae_CRPS" in metrics else ""))
    if notes:
        print(f"{len(notes)} note(s) in the report (first: {notes[0]})")
