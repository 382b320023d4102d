"""Helpers the trainers share: thresholds, run directories, validation windows, running means,
dataset lineage and the registered models' example input."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from precipgen import tracking
from precipgen.data.datasets import WindowDataset
from precipgen.data.store import PreparedDataset, dataset_digest


def p95_mm(ds: PreparedDataset) -> float:
    """The heavy-pixel threshold (mm): thresholds.json's P95, else the train split's wet P95."""
    thr = ds.thresholds
    if "P95" in thr:
        return float(thr["P95"])
    y = np.asarray(ds.Y_hr[ds.split["train"]])[:, 0][:, ds.land_mask]
    wet = y[y > 0.1]
    return float(np.percentile(wet, 95)) if wet.size else float("inf")


def timestamp() -> str:
    return time.strftime("%Y%m%d_%H%M%S")


def run_dir(output_dir: str, prefix: str, resume: str | None) -> Path:
    """A fresh ``<output_dir>/<prefix>_<TIMESTAMP>/``, or the directory being resumed."""
    if resume:
        d = Path(resume)
        if not d.is_dir():
            raise FileNotFoundError(f"--resume: run directory not found: {d}")
        return d
    base = Path(output_dir) / f"{prefix}_{timestamp()}"
    base.parent.mkdir(parents=True, exist_ok=True)
    for i in range(1000):  # two runs in the same second: mkdir is the atomic test
        d = base if i == 0 else base.with_name(f"{base.name}_{i}")
        try:
            d.mkdir()
            return d
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a fresh run directory beside {base}")


def val_loader(ds: PreparedDataset, window: int, batch_size: int) -> torch.utils.data.DataLoader:
    """Non-overlapping validation windows, in order (the same every epoch)."""
    val = WindowDataset(ds, ds.split["val"], window, stride=window)
    return torch.utils.data.DataLoader(val, batch_size=batch_size, shuffle=False)


def masked_sum(v: Tensor, mask: Tensor) -> tuple[float, int]:
    """(sum, count) of ``v`` (..., H, W) over the True pixels of ``mask`` (..., H, W)."""
    mask = mask.expand_as(v)
    return float(v[mask].sum()), int(mask.sum())


class Meter:
    """Sums and counts per metric name; ``means()`` at the end."""

    def __init__(self) -> None:
        self.s: dict[str, float] = {}
        self.n: dict[str, int] = {}

    def add(self, name: str, total: float, count: int) -> None:
        self.s[name] = self.s.get(name, 0.0) + total
        self.n[name] = self.n.get(name, 0) + count

    def means(self) -> dict[str, float]:
        return {k: self.s[k] / self.n[k] if self.n[k] else float("nan") for k in self.s}


def log_dataset(run: tracking.Run, ds: PreparedDataset) -> str | None:
    """Record the dataset as an input; return the run id that prepared it (lineage)."""
    digest = ds.digest or dataset_digest(ds.root)
    run.log_dataset(ds.root, digest, name=ds.root.name, context="training",
                    profile={"days": ds.n_days, "grid_hr": "x".join(map(str, ds.hr_shape)),
                             "grid_lr": "x".join(map(str, ds.lr_shape))})
    return tracking.producing_run_id(ds.root)


def example_days(ds: PreparedDataset, days: int) -> np.ndarray:
    """Consecutive days ``(days, C, h, w)`` in physical units: the registered models' input."""
    return np.asarray(ds.X_lr[: min(days, ds.n_days)], dtype=np.float32)
