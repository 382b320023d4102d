"""Issue 13's bars for a cVAE (item 2), on one split (default: test) of a synthetic prepared dir.

    python bench/measure_cvae.py --data DIR --cvae CKPT [--members 16] [--split test] \
        [--json bench/results/x.json] [--label NAME] [--settings TEXT]

Members are drawn from X alone (the prior, what `sample --mode prior` and evaluate use) and
scored with the evaluate step's own scores (:func:`precipgen.evaluation.scoring.score_ensemble`)
beside the oracle's exact samples. Added here: the P99 of heavy days (members pooled vs truth,
land pixels) and the posterior-copy check (the seed's default `mode=posterior`: each sample's
correlation with its source day, against the oracle's sample-to-truth correlation + 0.1).
Prints each target, its value and pass/fail; ``--json`` appends under ``--label``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from target_book import append, check, report

from precipgen.data.store import PreparedDataset
from precipgen.data.synthetic import oracle_sample
from precipgen.evaluation.compare import oracle_params
from precipgen.evaluation.scoring import score_ensemble
from precipgen.models.registry import open_model

TARGETS: dict[str, tuple[str, float | None, float | None]] = {
    "CRPS / oracle <= 1.3": ("cvae_oracle_ratio", None, 1.3),
    "spread-skill in [0.8, 1.2]": ("cvae_spread_skill", 0.8, 1.2),
    "land mass bias within +-10 %": ("cvae_mass_bias_pct", -10.0, 10.0),
    "heavy-day P99 within +-10 %": ("cvae_heavy_P99_bias_pct", -10.0, 10.0),
    "spectral ratio in [0.7, 1.3]": ("cvae_spectral_ratio", 0.7, 1.3),
    "reliability index <= 2x oracle": ("cvae_reliability_vs_oracle", None, 2.0),
    "posterior corr < oracle corr + 0.1": ("cvae_posterior_copy_margin", None, 0.0),
}
REPORTED = ("cvae_CRPS", "oracle_CRPS", "cvae_oracle_ratio", "cvae_spread_skill",
            "oracle_spread_skill", "cvae_mass_bias_pct", "oracle_mass_bias", "cvae_heavy_P99",
            "truth_heavy_P99", "cvae_spectral_ratio", "oracle_spectral_ratio",
            "cvae_rank_reliability_index", "oracle_rank_reliability_index",
            "cvae_posterior_corr", "oracle_corr")


def mean_corr(samples: np.ndarray, truth: np.ndarray, land: np.ndarray) -> float:
    """Mean Pearson correlation over land between each sample ``(m, N, H, W)`` and its day."""
    a = samples[..., land]
    b = np.broadcast_to(truth[..., land], a.shape)
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(-1) / den
    return float(np.nanmean(r))


def posterior_samples(model: Any, ds: PreparedDataset, x: np.ndarray, truth: np.ndarray,
                      m: int, seed: int) -> np.ndarray:
    """``(m, N, H, W)`` mm from q(z | Y, X, S) of each real day (the seed's default mode)."""
    g = model.generator
    norm, gen = g.norm, torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(x), 32):
        xm = norm.predictors_to_model(torch.from_numpy(x[i:i + 32]))
        ym = norm.to_model(torch.from_numpy(truth[i:i + 32, None]))
        s = g.model.sample(xm, g.statics, m, "posterior", y=ym, generator=gen)
        out.append((norm.to_physical(s) * g.land)[:, :, 0].numpy())
    return np.concatenate(out, axis=1)


def measure(data: Path, cvae_uri: str, members: int, split: str, seed: int) -> dict[str, Any]:
    ds = PreparedDataset.open(data)
    params = oracle_params(ds)
    if params is None:
        raise SystemExit(f"{data}: no oracle (not synthetic data); issue 13's bars need one")
    days = np.asarray(ds.split[split])
    land = ds.land_mask
    thr = {"P95": float(ds.thresholds["P95"]), "P99": float(ds.thresholds["P99"])}
    x = np.asarray(ds.X_lr[days], dtype=np.float32)
    truth = np.asarray(ds.Y_hr[days], dtype=np.float32)[:, 0]
    model = open_model(cvae_uri, ("cvae",), flag="--cvae")
    t0 = time.perf_counter()
    ens = {"cvae": model.ensemble(x, members, seed)[:, :, 0],
           "oracle": oracle_sample(params, x, np.asarray(ds.statics), members, seed,
                                   day_ids=days, static_names=ds.static_names)[:, :, 0]}
    metrics: dict[str, float] = {}
    for p, e in ens.items():
        metrics.update(score_ensemble(e, truth, land, thr, 0.1, p, seed).metrics)
    heavy = np.isin(days, ds.heavy_days)
    metrics["cvae_oracle_ratio"] = metrics["cvae_CRPS"] / metrics["oracle_CRPS"]
    metrics["cvae_mass_bias_pct"] = 100.0 * metrics["cvae_mass_bias"]
    metrics["truth_heavy_P99"] = float(np.percentile(truth[heavy][:, land], 99))
    metrics["cvae_heavy_P99"] = float(np.percentile(ens["cvae"][:, heavy][..., land], 99))
    metrics["cvae_heavy_P99_bias_pct"] = 100.0 * (metrics["cvae_heavy_P99"]
                                                  / metrics["truth_heavy_P99"] - 1)
    metrics["cvae_reliability_vs_oracle"] = (metrics["cvae_rank_reliability_index"]
                                             / metrics["oracle_rank_reliability_index"])
    post = posterior_samples(model, ds, x, truth, min(members, 4), seed)
    metrics["cvae_posterior_corr"] = mean_corr(post, truth, land)
    metrics["oracle_corr"] = mean_corr(ens["oracle"], truth, land)
    metrics["cvae_posterior_copy_margin"] = (metrics["cvae_posterior_corr"]
                                             - metrics["oracle_corr"] - 0.1)
    targets = check(metrics, TARGETS)
    return {"data": str(data), "split": split, "n_days": int(len(days)),
            "n_heavy_days": int(heavy.sum()), "members": members, "seed": seed,
            "cvae": cvae_uri, "seconds": round(time.perf_counter() - t0, 1),
            "targets": targets, "summary": {k: float(metrics[k]) for k in REPORTED if k in metrics},
            "metrics": {k: float(v) for k, v in metrics.items() if np.isscalar(v)}}


def markdown(book: dict[str, Any]) -> str:
    names = list(next(iter(book.values()))["targets"]) if book else []
    head = ["setting", "days (heavy)", "m", *names]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, r in book.items():
        cells = [f"{t['value']:.3g} {'✅' if t['pass'] else '❌'}" for t in r["targets"].values()]
        rows.append("| " + " | ".join([f"`{label}`", f"{r['n_days']} ({r['n_heavy_days']})",
                                        str(r["members"]), *cells]) + " |")
    notes = [f"- `{label}`: {r.get('settings', '')}" for label, r in book.items()]
    return "\n".join(rows + ["", "Settings:", *notes]) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--cvae", required=True, help="cVAE checkpoint / URI")
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--split", default="test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--label", default="")
    p.add_argument("--settings", default="", help="free text recorded with the result")
    a = p.parse_args()
    res = measure(a.data, a.cvae, a.members, a.split, a.seed)
    res["settings"] = a.settings
    report(res, f"{a.label or a.cvae}: {res['n_days']} {a.split} days "
                f"({res['n_heavy_days']} heavy), m={a.members}, {res['seconds']} s", width=38)
    if a.json:
        append(a.json, a.label or a.cvae, res, markdown)

if __name__ == "__main__":
    main()
