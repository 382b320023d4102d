"""Calibrate the noise scale of an existing fine-tuned 3D VAE on a prepared dataset's
validation split (what ``finetune.calibrate_noise`` does at the end of training), writing a
calibrated copy: for measuring the calibration on models trained without it.

    python bench/calibrate_checkpoint.py --data DIR --checkpoint best_model.pth --out calib.pth \
        [--members 4] [--seed 42]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from precipgen.data.datasets import land_mask_tensor
from precipgen.data.store import PreparedDataset
from precipgen.models.checkpoint import load_checkpoint
from precipgen.train.common import p95_mm, val_loader
from precipgen.train.crps import evaluate_ensemble
from precipgen.train.spread_calibration import calibrate_checkpoint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()
    ds = PreparedDataset.open(a.data)
    loader = val_loader(ds, int(load_checkpoint(a.checkpoint)["window_days"]), 4)
    land, p95, cpu = land_mask_tensor(ds), p95_mm(ds), torch.device("cpu")
    cal = calibrate_checkpoint(a.checkpoint, lambda m: evaluate_ensemble(
        m, loader, ds, land, p95, a.members, a.members, a.seed, cpu), out=a.out)
    for f, crps, ss in cal.curve:
        print(f"coarse-block noise x{f:4.2f}  Val_CRPS {crps:.4f}  spread-skill {ss:.3f}")
    print(cal.summary(ds.normalization.units), "->", a.out)


if __name__ == "__main__":
    main()
