"""Pretraining the deterministic 3D VAE (seed 000): MSE + beta * KL.

Windows of ``vae3d.window_days`` consecutive days, land-masked MSE in model space plus
``beta_kl`` times the KL averaged per latent element (so beta does not depend on the grid
size). Early stopping and the best checkpoint on ``val_MSE`` (deterministic, z = mu). Also
logged: ``val_loss`` (= val_MSE + beta * val_KL), ``val_KL``, and ``val_MAE_all`` /
``val_MAE_tail`` in mm (tail: observed >= P95 of the prepared dataset). The best model is
registered as ``vae3d-deterministic`` (alias ``latest``), the input of ``finetune_crps``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from precipgen import tracking
from precipgen.config import Config
from precipgen.data.datasets import EpochSampler, WindowDataset, land_mask_tensor, statics_tensor
from precipgen.data.store import PreparedDataset
from precipgen.locks import claim_output
from precipgen.models.registry import open_generator
from precipgen.models.vae3d import SimpleVAE3D, checkpoint_extra
from precipgen.train.common import (
    Meter,
    example_days,
    log_dataset,
    masked_sum,
    p95_mm,
    run_dir,
    val_loader,
)
from precipgen.train.distributed import dist_info, pick_device, seed_everything
from precipgen.train.loop import FitResult, LoopConfig, StepOutput, fit
from precipgen.train.losses import kl_per_element

REGISTERED_NAME = "vae3d-deterministic"


def window_batch_size(n_windows: int, batch_size: int, window: int, what: str) -> int:
    """The batch size that fits ``n_windows`` training windows (the loop drops incomplete
    batches): short series (few hours of radar) get one smaller batch per epoch, with a note;
    no window at all is a clear error."""
    if n_windows == 0:
        raise ValueError(
            f"{what}: no training window of {window} consecutive samples in the training split "
            f"(series too short or too gappy for window_days={window}): lower vae3d.window_days "
            f"or give more consecutive time steps")
    if n_windows < batch_size:
        print(f"⚠️  {what}: only {n_windows} training windows of {window} samples, fewer than "
              f"batch_size={batch_size}: using batch_size={n_windows} (one batch per epoch); "
              f"lower window_days for more windows")
        return n_windows
    return batch_size


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
            meter.add("val_MSE", *masked_sum((recon - y).pow(2), land))
            meter.add("val_KL", float(kl_per_element(mu, logvar)) * len(x), len(x))
            err = (norm.to_physical(recon) - y_mm).abs()
            meter.add("val_MAE_all", *masked_sum(err, land))
            meter.add("val_MAE_tail", *masked_sum(err, land & (y_mm >= self.p95)))
        m = meter.means()
        m["val_loss"] = m["val_MSE"] + self.beta * m["val_KL"]
        return m

    def checkpoint_extra(self) -> dict[str, Any]:
        return checkpoint_extra(self.model, self.land, self.ds.normalization,
                                self.cfg.vae3d.window_days)


def pretrain(cfg: Config, resume_dir: str | None = None) -> tuple[str | None, FitResult]:
    """Pretrain the 3D VAE described by ``cfg`` (``resume_dir``: continue that run directory);
    the library form of ``precipgen pretrain_vae``. Returns (run id or None off rank 0, result)."""
    v = cfg.vae3d
    ds = PreparedDataset.open(cfg.data.path)
    train = WindowDataset(ds, ds.split["train"], v.window_days, stride=v.window_stride)
    batch_size = window_batch_size(len(train), v.batch_size, v.window_days, "pretrain_vae")
    seed_everything(cfg.train.seed)
    device = pick_device(cfg.train.device)
    model = SimpleVAE3D(ds.n_channels, statics_tensor(ds), ds.lr_shape, v.base_filters,
                        v.latent_channels, terrain_features=v.terrain_features)
    task = PretrainTask(model, ds, cfg, device)
    rank, world, _ = dist_info()
    # Under torchrun only rank 0 makes the run dir and the MLflow run; the others only train.
    out = run_dir(v.output_dir, "vae3d", resume_dir) if rank == 0 or resume_dir else Path(v.output_dir)
    loop_cfg = LoopConfig.from_section(v, out, select_metric="val_MSE", seed=cfg.train.seed,
                                       device=cfg.train.device)
    sampler = EpochSampler(len(train), cfg.train.seed, rank=rank, world_size=world)
    if rank != 0:
        return None, fit(task, train, sampler, batch_size, loop_cfg, resume=bool(resume_dir))
    resume_id = tracking.producing_run_id(out) if resume_dir else None
    with claim_output(out, "run directory", inside=True) as owner, \
            tracking.start_run("pretrain_vae", params=cfg.flat(), config_yaml=cfg.to_yaml(),
                               run_id=resume_id) as r:
        owner.set_run_id(r.run_id)
        tracking.mark_output(out, r.run_id)
        r.set_lineage({"dataset": log_dataset(r, ds)})
        res = fit(task, train, sampler, batch_size, loop_cfg, run=r, resume=bool(resume_dir))
        r.log_metrics({"best_val_MSE": res.best_metric, "best_epoch": res.best_epoch})
        r.log_artifact(res.best_path, "checkpoints")
        r.log_artifact(out / loop_cfg.log_csv, "logs")
        version = tracking.log_generator_model(
            res.best_path, ds.root / "metadata" / "normalization.json", REGISTERED_NAME,
            example_days(ds, v.window_days),
            {"num_samples": 1, "mode": "deterministic", "temperature": 1.0, "seed": 0},
            loader=open_generator,
        )
        print(f"pretrain_vae: best val_MSE={res.best_metric:.6f} at epoch {res.best_epoch}; "
              f"{res.best_path}; registered {REGISTERED_NAME} v{version} (@candidate) | run {r.url}")
        return r.run_id, res
