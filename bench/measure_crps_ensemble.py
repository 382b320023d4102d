"""Issue 14's bars for a CRPS-fine-tuned 3D VAE, on one split (default: test) of a prepared dir.

    python bench/measure_crps_ensemble.py --data DIR --generative CKPT --deterministic CKPT \
        [--members 16] [--split test] [--json bench/results/x.json] [--label NAME]

Scores every model with :func:`precipgen.evaluation.compare.evaluate_models` (the evaluate
step's own scores: fair CRPS in mm, corrected spread-skill, rank histogram with ties at zero
broken at random and a chi-square over days, RAPSD small-scale ratio, mass bias) and adds the
corrected spread-skill on heavy days. Prints each target with its value and pass/fail and
writes them, with every metric, to ``--json`` (appended under ``--label`` if the file exists).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from target_book import append, check, report

from precipgen.data.store import PreparedDataset
from precipgen.evaluation.compare import evaluate_models, oracle_params
from precipgen.models.registry import open_model
from precipgen.scores.calibration import spread_skill

# name -> (metric key, low, high); None = unbounded on that side
STANDARD_TARGETS: dict[str, tuple[str, float | None, float | None]] = {
    "gen/oracle CRPS <= 1.15": ("gen_oracle_ratio", None, 1.15),
    "det/oracle CRPS >= 1.3": ("det_oracle_ratio", 1.3, None),
    "spread-skill in [0.9, 1.1]": ("gen_spread_skill", 0.9, 1.1),
    "spread-skill heavy days in [0.9, 1.1]": ("gen_spread_skill_heavy", 0.9, 1.1),
    "rank chi-square p > 0.01": ("gen_rank_pvalue", 0.01, None),
    "spectral ratio in [0.7, 1.3]": ("gen_spectral_ratio", 0.7, 1.3),
}
MRMS_TARGETS: dict[str, tuple[str, float | None, float | None]] = {
    "CRPS improvement >= 10 %": ("crps_improvement_pct", 10.0, None),
    "spread-skill in [0.8, 1.2]": ("gen_spread_skill", 0.8, 1.2),
    "|mass bias| <= 15 %": ("gen_mass_bias_pct", -15.0, 15.0),
    "spectral ratio in [0.5, 1.5]": ("gen_spectral_ratio", 0.5, 1.5),
}
REPORTED = ("gen_CRPS", "det_CRPS", "oracle_CRPS", "gen_oracle_ratio", "det_oracle_ratio",
            "crps_improvement_pct", "gen_spread_skill", "gen_spread_skill_heavy",
            "oracle_spread_skill", "oracle_spread_skill_heavy", "gen_rank_pvalue",
            "gen_rank_chi2", "oracle_rank_pvalue", "gen_spectral_ratio", "oracle_spectral_ratio",
            "det_spectral_ratio", "gen_mass_bias", "gen_mass_bias_pct", "oracle_mass_bias",
            "det_mass_bias")


def heavy_spread_skill(ens: np.ndarray, truth: np.ndarray, land: np.ndarray,
                       heavy: np.ndarray) -> float:
    return spread_skill(ens[:, heavy], truth[heavy], land).ratio if heavy.any() else float("nan")


def measure(data: Path, gen_uri: str, det_uri: str, members: int, split: str, seed: int,
            max_days: int = 0) -> dict[str, Any]:
    ds = PreparedDataset.open(data)
    days = np.asarray(ds.split[split])
    if max_days:
        days = days[:max_days]
    models = {"deterministic": open_model(det_uri, ("vae3d", "srdrn"), flag="--deterministic"),
              "generative": open_model(gen_uri, ("vae3d", "cvae"), flag="--generative")}
    lines: list[str] = []
    t0 = time.perf_counter()
    ev = evaluate_models(models, ds, days, members, seed, 0.1, lines.append)
    metrics = dict(ev["metrics"])
    heavy = np.isin(days, ds.heavy_days)
    for p, ens in ev["ensembles"].items():
        metrics[f"{p}_spread_skill_heavy"] = heavy_spread_skill(ens, ev["truth"], ds.land_mask,
                                                                heavy)
    for p in ("gen", "det", "oracle"):
        if f"{p}_mass_bias" in metrics:  # mass_bias is a fraction: also in percent
            metrics[f"{p}_mass_bias_pct"] = 100.0 * metrics[f"{p}_mass_bias"]
    synthetic = oracle_params(ds) is not None
    return {"data": str(data), "split": split, "n_days": int(len(days)),
            "n_heavy_days": int(heavy.sum()), "members": members, "seed": seed,
            "generative": gen_uri, "deterministic": det_uri,
            "seconds": round(time.perf_counter() - t0, 1),
            "targets": check(metrics, STANDARD_TARGETS if synthetic else MRMS_TARGETS),
            "summary": {k: float(metrics[k]) for k in REPORTED if k in metrics},
            "metrics": {k: float(v) for k, v in metrics.items()}}


def markdown(book: dict[str, Any]) -> str:
    """One table row per measured setting: each target's value and pass/fail."""
    names = list(next(iter(book.values()))["targets"]) if book else []
    head = ["setting", "days", "m", *names, "mass bias %"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, r in book.items():
        cells = [f"{t['value']:.3g} {'✅' if t['pass'] else '❌'}" for t in r["targets"].values()]
        mb = r["summary"].get("gen_mass_bias_pct", float("nan"))
        rows.append("| " + " | ".join([f"`{label}`", str(r["n_days"]), str(r["members"]),
                                        *cells, f"{mb:+.1f}"]) + " |")
    notes = [f"- `{label}`: {r.get('settings', '')}" for label, r in book.items()]
    return "\n".join(rows + ["", "Settings:", *notes]) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path)
    p.add_argument("--generative", default="", help="fine-tuned vae3d checkpoint / URI")
    p.add_argument("--deterministic", default="", help="pretrained vae3d checkpoint / URI")
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--split", default="test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max_days", type=int, default=0, help="first N days of the split (0: all)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--label", default="")
    p.add_argument("--settings", default="", help="free text recorded with the result")
    p.add_argument("--render", action="store_true", help="only rewrite --json's .md table")
    a = p.parse_args()
    if a.render:
        a.json.with_suffix(".md").write_text(markdown(json.loads(a.json.read_text())))
        return
    torch.set_num_threads(1)
    res = measure(a.data, a.generative, a.deterministic, a.members, a.split, a.seed, a.max_days)
    res["settings"] = a.settings
    report(res, f"{a.label or a.generative}: {res['n_days']} {a.split} days "
                f"({res['n_heavy_days']} heavy), m={a.members}, {res['seconds']} s")
    if a.json:
        append(a.json, a.label or a.generative, res, markdown)

if __name__ == "__main__":
    main()
