"""How much CRPS a wrong conditional mean costs, measured with the synthetic oracle itself:
oracle ensembles whose mean field g is degraded (a physical term dropped or weakened, or a
multiplicative log-normal error) scored against the stored truth of the standard profile's
test days, as ratios to the exact oracle's CRPS.

    python bench/oracle_sensitivity.py [--days 2400] [--height 72] [--width 60] [--members 16]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy import ndimage

from precipgen.data import synthetic as S
from precipgen.scores.crps import crps_ensemble


def fair_crps(ens: np.ndarray, y: np.ndarray, land: np.ndarray) -> float:
    """Mean fair CRPS over days and land pixels; ``ens`` (m, N, H, W), ``y`` (N, H, W)."""
    per_pixel = crps_ensemble(torch.from_numpy(ens[:, :, land]), torch.from_numpy(y[:, land]))
    return float(per_pixel.mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=2400)
    p.add_argument("--height", type=int, default=72)
    p.add_argument("--width", type=int, default=60)
    p.add_argument("--members", type=int, default=16)
    a = p.parse_args()
    d = S.generate(days=a.days, height=a.height, width=a.width, factor=12, seed=0,
                   show_progress=False)
    land = d.statics[0] > 0.5
    test = np.arange(int(a.days * 0.8), a.days)  # the profile's last 20 %: its test split
    X, Y = d.X_lr[test], d.Y_hr[test][:, 0]

    def oracle(params: dict) -> np.ndarray:
        return S.oracle_sample(params, X, d.statics, a.members, seed=42, day_ids=test)[:, :, 0]

    exact = oracle(d.params)
    base = fair_crps(exact, Y, land)
    print(f"exact oracle: CRPS {base:.4f} mm/day")
    for key, value in [("oro_gain", 0.0), ("oro_gain", 1.5), ("oro_smooth_px", 4.0),
                       ("elev_gain", 0.0), ("coast_gain", 0.0)]:
        params = {**d.params, key: value}
        print(f"{key}={value:g} (default {d.params[key]:g}): {fair_crps(oracle(params), Y, land) / base:.3f}x")
    rng = np.random.default_rng(0)
    for sigma in (0.1, 0.2, 0.3, 0.5):
        z = ndimage.gaussian_filter(rng.standard_normal(Y.shape), (0, 3, 3))
        err = np.exp(sigma * z / z.std() - sigma**2 / 2).astype(np.float32)
        print(f"log-normal mean error sigma={sigma:g} (3 px smooth): "
              f"{fair_crps(exact * err[None], Y, land) / base:.3f}x")


if __name__ == "__main__":
    main()
