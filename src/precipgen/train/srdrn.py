"""Training the SRDRN downscaler with the shared loop (used by the augmentation experiment).

Loss: land-masked MSE in model space (log1p + z-score), as SRDRN trains on normalised
precipitation. Validation on the real validation split: ``val_loss`` (the same MSE, the
selection metric), ``val_MAE_all`` and ``val_MAE_tail`` in mm (tail: truth >= P95).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset

from precipgen.config import SRDRNConfig
from precipgen.data.datasets import DayDataset, EpochSampler, land_mask_tensor, statics_tensor
from precipgen.data.store import PreparedDataset
from precipgen.data.transforms import Normalization
from precipgen.models.checkpoint import load_checkpoint
from precipgen.models.srdrn import SRDRN, SRDRNGenerator, load_srdrn
from precipgen.train.distributed import seed_everything
from precipgen.train.loop import FitResult, LoopConfig, StepOutput, fit


class ArrayDayDataset(Dataset):
    """Days given as physical-unit arrays (synthetic samples), items as in :class:`DayDataset`."""

    def __init__(self, x_phys: np.ndarray, y_phys: np.ndarray, days: np.ndarray,
                 norm: Normalization):
        self.x_phys = np.asarray(x_phys, dtype=np.float32)
        self.y_phys = np.asarray(y_phys, dtype=np.float32)
        self.days, self.norm = np.asarray(days, dtype=np.int64), norm

    def __len__(self) -> int:
        return len(self.days)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        x, y_mm = torch.from_numpy(self.x_phys[i]), torch.from_numpy(self.y_phys[i])
        return {"x": self.norm.predictors_to_model(x), "y": self.norm.to_model(y_mm),
                "y_mm": y_mm, "day": torch.tensor(int(self.days[i]))}


class SRDRNTask:
    kind = "srdrn"

    def __init__(self, model: SRDRN, ds: PreparedDataset, batch_size: int, device: torch.device):
        self.model, self.ds, self.device = model, ds, device
        self.land = land_mask_tensor(ds).to(device)
        self.p95 = float(ds.thresholds["P95"])
        self.val = torch.utils.data.DataLoader(DayDataset(ds, ds.split["val"]),
                                               batch_size=batch_size, shuffle=False)

    def trainable_parameters(self) -> Any:
        return self.model.parameters()

    def train_step(self, model: SRDRN, batch: dict[str, Tensor], epoch: int) -> StepOutput:
        mse = (model(batch["x"]) - batch["y"]).pow(2)[..., self.land].mean()
        return StepOutput(mse, {"MSE": float(mse.detach())})

    @torch.no_grad()
    def validate(self, model: SRDRN, epoch: int) -> dict[str, float]:
        norm, land = self.ds.normalization, self.land
        se = ae = tail_ae = 0.0
        n = n_tail = 0
        for batch in self.val:
            x, y, y_mm = (batch[k].to(self.device) for k in ("x", "y", "y_mm"))
            pred = model(x)
            se += float((pred - y).pow(2)[..., land].sum())
            err = (norm.to_physical(pred) - y_mm).abs()[..., land]
            tail = y_mm[..., land] >= self.p95
            ae += float(err.sum())
            tail_ae += float(err[tail].sum())
            n += err.numel()
            n_tail += int(tail.sum())
        return {"val_loss": se / max(n, 1), "val_MAE_all": ae / max(n, 1),
                "val_MAE_tail": tail_ae / n_tail if n_tail else float("nan")}

    def checkpoint_extra(self) -> dict[str, Any]:
        return {"hparams": dict(self.model.hparams),
                "statics": self.model.statics.detach().cpu().clone(),
                "land_mask": self.land.detach().cpu().clone(),
                "normalization": self.ds.normalization.to_json()}


@dataclass
class Trained:
    generator: SRDRNGenerator
    result: FitResult
    n_train: int
    steps_per_epoch: int


def train_srdrn(ds: PreparedDataset, cfg: SRDRNConfig, seed: int, out_dir: Path,
                extra: Dataset | None = None, run: Any = None,
                device: torch.device | None = None,
                sampler: torch.utils.data.Sampler | None = None) -> Trained:
    """Train on the real training days (+ ``extra`` days, indexed after the real ones). The
    budget is fixed by the *real* training set: ``epochs`` x ``min(real batches,
    max_batches_per_epoch)`` optimiser steps whatever ``extra`` adds, so two arms differ only
    in what their batches contain. ``sampler`` (over real + extra): how they are mixed;
    default uniform over both."""
    device = device or torch.device("cpu")
    real = DayDataset(ds, ds.split["train"])
    data: Dataset = real if extra is None or len(extra) == 0 else ConcatDataset([real, extra])
    bs = min(cfg.batch_size, len(real))
    steps = len(real) // bs
    if cfg.max_batches_per_epoch > 0:
        steps = min(steps, cfg.max_batches_per_epoch)
    seed_everything(seed)  # same initial weights in both arms
    model = SRDRN(ds.n_channels, statics_tensor(ds), ds.lr_shape, cfg.filters, cfg.res_blocks)
    task = SRDRNTask(model, ds, bs, device)
    loop = LoopConfig.from_section(cfg, Path(out_dir), select_metric="val_loss", seed=seed,
                                   device=device.type, best_name="checkpoints/srdrn_best.pt",
                                   last_name="checkpoints/srdrn_last.pt")
    loop.max_batches_per_epoch = steps  # the budget of the real set, whatever extra adds
    res = fit(task, data, sampler or EpochSampler(len(data), seed), bs, loop, run=run)
    gen = load_srdrn(load_checkpoint(res.best_path), ds.normalization)
    return Trained(gen, res, len(data), steps)
