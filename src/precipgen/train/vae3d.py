"""``precipgen pretrain_vae``: the deterministic 3D VAE, MSE + beta * KL (seed 000).

Windows of ``vae3d.window_days`` consecutive days, land-masked MSE in model space plus
``beta_kl`` times the KL averaged per latent element (so beta does not depend on the grid
size). Early stopping and the best checkpoint on ``val_MSE`` (deterministic, z = mu). Also
logged: ``val_loss`` (= val_MSE + beta * val_KL), ``val_KL``, and ``val_MAE_all`` /
``val_MAE_tail`` in mm (tail: observed >= P95 of the prepared dataset). The best model is
registered as ``vae3d-deterministic`` (alias ``latest``), the input of ``finetune_crps``.

Helpers shared with :mod:`precipgen.train.finetune_crps` live here too.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from precipgen import tracking
from precipgen.cli import add_flags, config_from_args, flag_overrides, opt
from precipgen.config import Config
from precipgen.data.datasets import EpochSampler, WindowDataset, land_mask_tensor, statics_tensor
from precipgen.data.store import PreparedDataset, dataset_digest
from precipgen.models.vae3d import SimpleVAE3D, checkpoint_extra
from precipgen.train.loop import (
    LoopConfig,
    StepOutput,
    dist_info,
    fit,
    pick_device,
    seed_everything,
)

REGISTERED_NAME = "vae3d-deterministic"


# ------------------------------------------------------------------ shared helpers
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
    d = Path(output_dir) / f"{prefix}_{timestamp()}"
    while d.exists():  # two runs in the same second
        d = d.with_name(d.name + "_1")
    d.mkdir(parents=True)
    return d


def val_loader(ds: PreparedDataset, window: int, batch_size: int) -> torch.utils.data.DataLoader:
    """Non-overlapping validation windows, in order (the same every epoch)."""
    val = WindowDataset(ds, ds.split["val"], window, stride=window)
    return torch.utils.data.DataLoader(val, batch_size=batch_size, shuffle=False)


def masked_mean(v: Tensor, mask: Tensor) -> tuple[float, int]:
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


# ------------------------------------------------------------------ the task
def kl_per_element(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(q(z|x) || N(0, I)), averaged over latent elements (and the batch)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()


class PretrainTask:
    kind = "vae3d"

    def __init__(self, model: SimpleVAE3D, ds: PreparedDataset, cfg: Config, device: torch.device):
        self.model, self.ds, self.cfg = model, ds, cfg
        self.beta = cfg.vae3d.beta_kl
        self.land = land_mask_tensor(ds).to(device)
        self.p95 = p95_mm(ds)
        self.val = val_loader(ds, cfg.vae3d.window_days, cfg.vae3d.batch_size)
        self.device = device

    def trainable_parameters(self):
        return self.model.parameters()

    def train_step(self, model, batch: dict[str, Tensor], epoch: int) -> StepOutput:
        recon, mu, logvar = model(batch["x"])
        mse = (recon - batch["y"]).pow(2)[..., self.land].mean()
        kl = kl_per_element(mu, logvar)
        return StepOutput(mse + self.beta * kl, {"MSE": float(mse.detach()), "KL": float(kl.detach())})

    @torch.no_grad()
    def validate(self, model, epoch: int) -> dict[str, float]:
        meter, land = Meter(), self.land
        norm = self.ds.normalization
        for batch in self.val:
            x, y, y_mm = (batch[k].to(self.device) for k in ("x", "y", "y_mm"))
            mu, logvar = model.encode(x)
            recon = model.decode(mu)  # deterministic: z = mu
            meter.add("val_MSE", *masked_mean((recon - y).pow(2), land))
            meter.add("val_KL", float(kl_per_element(mu, logvar)) * len(x), len(x))
            err = (norm.to_physical(recon) - y_mm).abs()
            meter.add("val_MAE_all", *masked_mean(err, land))
            meter.add("val_MAE_tail", *masked_mean(err, land & (y_mm >= self.p95)))
        m = meter.means()
        m["val_loss"] = m["val_MSE"] + self.beta * m["val_KL"]
        return m

    def checkpoint_extra(self) -> dict[str, Any]:
        return checkpoint_extra(self.model, self.land, self.ds.normalization,
                                self.cfg.vae3d.window_days)


# ------------------------------------------------------------------ the step
# named flags -> (config key, type, help); "" from MLproject = use the config
FLAGS: dict[str, tuple[str, type, str]] = {
    "data": ("data.path", str, "prepared dataset dir"),
    "epochs": ("vae3d.epochs", int, "default 50"),
    "batch_size": ("vae3d.batch_size", int, "default 4"),
    "lr": ("vae3d.lr", float, "default 1e-4"),
    "window_days": ("vae3d.window_days", int, "days per window (default 8)"),
    "beta_kl": ("vae3d.beta_kl", float, "KL weight (default 1e-3)"),
    "seed": ("train.seed", int, "default 42"),
    "output_dir": ("vae3d.output_dir", str, "runs go to <output_dir>/vae3d_<TIMESTAMP>/"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_flags(p, FLAGS)
    p.add_argument("--resume", type=opt(str), default=None, metavar="RUN_DIR",
                   help="continue the run in this vae3d_<TIMESTAMP> directory")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, flag_overrides(args, FLAGS))
    v = cfg.vae3d
    ds = PreparedDataset.open(cfg.data.path)
    train = WindowDataset(ds, ds.split["train"], v.window_days)
    seed_everything(cfg.train.seed)
    device = pick_device(cfg.train.device)
    model = SimpleVAE3D(ds.n_channels, statics_tensor(ds), ds.lr_shape, v.base_filters,
                        v.latent_channels)
    task = PretrainTask(model, ds, cfg, device)
    rank, world, _ = dist_info()
    # Under torchrun only rank 0 makes the run dir and the MLflow run; the others only train.
    out = run_dir(v.output_dir, "vae3d", args.resume) if rank == 0 or args.resume else Path(v.output_dir)
    loop_cfg = LoopConfig(
        epochs=v.epochs, lr=v.lr, output_dir=out, grad_clip=v.grad_clip,
        checkpoint_interval=v.checkpoint_interval, early_stopping_patience=v.early_stopping_patience,
        select_metric="val_MSE", max_batches_per_epoch=v.max_batches_per_epoch,
        seed=cfg.train.seed, device=cfg.train.device,
    )
    resume_id = tracking.producing_run_id(out) if args.resume else None
    sampler = EpochSampler(len(train), cfg.train.seed, rank=rank, world_size=world)
    if rank != 0:
        fit(task, train, sampler, v.batch_size, loop_cfg, run=None, resume=bool(args.resume))
        return 0
    with tracking.start_run("pretrain_vae", params=cfg.flat(), config_yaml=cfg.to_yaml(),
                            run_id=resume_id) as r:
        tracking.mark_output(out, r.run_id)
        r.set_lineage({"dataset": log_dataset(r, ds)})
        res = fit(task, train, sampler, v.batch_size, loop_cfg, run=r, resume=bool(args.resume))
        r.log_metrics({"best_val_MSE": res.best_metric, "best_epoch": res.best_epoch})
        r.log_artifact(res.best_path, "checkpoints")
        r.log_artifact(out / loop_cfg.log_csv, "logs")
        version = tracking.log_generator_model(
            res.best_path, ds.root / "metadata" / "normalization.json", REGISTERED_NAME,
            example_days(ds, v.window_days),
            {"num_samples": 1, "mode": "deterministic", "temperature": 1.0, "seed": 0},
        )
        print(f"pretrain_vae: best val_MSE={res.best_metric:.6f} at epoch {res.best_epoch}; "
              f"{res.best_path}; registered {REGISTERED_NAME} v{version} (@latest) | run {r.url}")
    return 0
