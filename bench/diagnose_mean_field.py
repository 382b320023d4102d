"""Where a generative model's CRPS gap to the synthetic oracle comes from: its mean field or
its noise. On the first ``--days`` days of a split: the model's members, the oracle's, and two
hybrids: the oracle's members rescaled to the model's 64-member mean ("oracle noise, model
mean") and the model's members rescaled to the true mean g ("model noise, true mean"; the
rescaling uses those members' own mean, so it flatters the model a little).

    python bench/diagnose_mean_field.py --data DIR --generative CKPT [--split test] [--days 160]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from oracle_sensitivity import fair_crps

from precipgen.data import synthetic as S
from precipgen.data.store import PreparedDataset
from precipgen.evaluation.compare import oracle_params
from precipgen.models.registry import open_generator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--generative", type=Path, required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--days", type=int, default=160)
    a = p.parse_args()
    ds = PreparedDataset.open(a.data)
    params = oracle_params(ds)
    if params is None:
        raise SystemExit(f"{a.data} has no synthetic oracle (real data)")
    days = np.asarray(ds.split[a.split])[: a.days]
    X, Y = np.asarray(ds.X_lr[days]), np.asarray(ds.Y_hr[days])[:, 0]
    land, statics = ds.land_mask, np.asarray(ds.statics)
    g = S.conditional_mean_field(params, X, statics, static_names=ds.static_names)[:, 0]
    orc = S.oracle_sample(params, X, statics, 16, seed=11, day_ids=days,
                          static_names=ds.static_names)[:, :, 0]
    ens64 = open_generator(a.generative).predict(X, num_samples=64, seed=3)[:, :, 0]
    ens, ghat = ens64[:16], ens64.mean(0)
    c_or = fair_crps(orc, Y, land)
    print(f"{a.split}, {len(days)} days: model / oracle CRPS {fair_crps(ens, Y, land) / c_or:.3f}")
    oracle_noise = orc * np.where(g > 1e-3, ghat / np.maximum(g, 1e-3), 1.0)[None]
    print(f"oracle noise, model mean: {fair_crps(oracle_noise, Y, land) / c_or:.3f}")
    model_noise = ens * np.where(ghat > 1e-3, g / np.maximum(ghat, 1e-3), 0.0)[None]
    print(f"model noise, true mean:   {fair_crps(model_noise, Y, land) / c_or:.3f}")
    for lo, hi in [(0.1, 1), (1, 3), (3, 10), (10, np.inf)]:
        sel = land[None] & (g >= lo) & (g < hi)
        print(f"g in [{lo:g}, {hi:g}) mm/day: wet fraction oracle {(orc[:, sel] > 0.1).mean():.3f}, "
              f"model {(ens[:, sel] > 0.1).mean():.3f}; model mean / g {ghat[sel].mean() / g[sel].mean():.3f}")


if __name__ == "__main__":
    main()
