"""Test helpers shared across test modules (no dependency on ``precipgen prepare``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from precipgen.data.store import AtomicDir, dataset_digest, write_json, write_prepared
from precipgen.data.transforms import fit_normalization

STATIC_NAMES = ["land_sea_mask", "dist_to_coast_km", "elevation_m"]


def make_prepared(
    tmp_path: Path, days: int = 64, H: int = 24, W: int = 24, factor: int = 4, C: int = 3,
    seed: int = 0,
) -> Path:
    """A tiny prepared dataset written directly with the store (returns its directory).

    Precipitation is gamma-ish with ~40% dry pixels and a day-to-day intensity that the
    predictors carry (so a model has something to learn); the land mask has sea along the
    left edge; the split is contiguous (70/15/15); heavy days are the top 10% of training-day
    land means; thresholds are P95/P99 of wet land pixels of the training split.
    """
    if H % factor or W % factor:
        raise ValueError(f"H, W = {H}, {W} must be divisible by factor {factor}")
    rng = np.random.default_rng(seed)
    h, w = H // factor, W // factor

    land = np.ones((H, W), dtype=bool)
    land[:, : max(1, W // 6)] = False  # a strip of sea on the west coast
    cols = np.arange(W, dtype=np.float32)[None, :].repeat(H, 0)
    dist = np.where(land, cols - W // 6 + 1, 0).astype(np.float32) * 4.0
    elev = (np.linspace(0, 1500, H, dtype=np.float32)[:, None] * np.ones((1, W), np.float32))
    statics = np.stack([land.astype(np.float32), dist, elev])

    intensity = rng.gamma(0.8, 2.0, size=days).astype(np.float32)  # mm, per day
    X = rng.normal(size=(days, C, h, w)).astype(np.float32)
    X[:, 0] = intensity[:, None, None] * (1 + 0.3 * rng.random((days, h, w)))  # "pr" channel
    Y = rng.gamma(0.7, 1.0, size=(days, 1, H, W)).astype(np.float32) * intensity[:, None, None, None]
    Y[rng.random(Y.shape) < 0.4] = 0.0
    Y[:, :, ~land] = 0.0  # sea pixels are 0 (masked)

    n_val = max(1, int(round(0.15 * days)))
    n_test = max(1, int(round(0.15 * days)))
    n_train = days - n_val - n_test
    ids = np.arange(days)
    split = {
        "train": ids[:n_train].tolist(),
        "val": ids[n_train : n_train + n_val].tolist(),
        "test": ids[n_train + n_val :].tolist(),
    }
    land_mean = Y[:, 0][:, land].mean(axis=1)
    cut = float(np.percentile(land_mean[:n_train], 90))
    heavy = ids[land_mean >= cut].tolist()
    wet = Y[:n_train, 0][:, land]
    wet = wet[wet > 0.1]
    thresholds = {"P95": float(np.percentile(wet, 95)), "P99": float(np.percentile(wet, 99)),
                  "heavy_day_land_mean_mm": cut, "units": "mm per time step"}

    channels = ["pr", *[f"var{c}" for c in range(1, C)]]
    norm = fit_normalization(X[:n_train], Y[:n_train], land, channels)
    dry = ids[land_mean < 0.1].tolist()
    categories = {
        "heavy": heavy,
        "dry": dry,
        "moderate": sorted(set(ids.tolist()) - set(heavy) - set(dry)),
    }
    target = Path(tmp_path) / f"prepared_{days}_{H}x{W}_f{factor}_c{C}_s{seed}"
    with AtomicDir(target, overwrite=True) as tmp:
        write_prepared(
            tmp, X, Y, statics, STATIC_NAMES, channels,
            {
                "split.json": split,
                "categories.json": categories,
                "thresholds.json": thresholds,
                "H_W.json": {"H": H, "W": W, "h": h, "w": w, "factor": factor},
                "normalization.json": norm.to_json(),
                "provenance.json": {"source": "tests.helpers.make_prepared", "seed": seed},
            },
        )
        prov = {"source": "tests.helpers.make_prepared", "seed": seed,
                "digest": dataset_digest(tmp)}
        write_json(tmp / "metadata" / "provenance.json", prov)
    return target
