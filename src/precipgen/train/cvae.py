"""Training the conditional VAE on a prepared dataset (seed 001, ``precipgen train_cvae``).

The epoch loop lives in :mod:`precipgen.train.loop`; this module supplies the task (step,
validation, checkpoint contents), heavy-day oversampling, figures and the MLflow run.

Metrics per epoch (MLflow + ``logs/train_log.csv``): ``train_loss``, ``val_loss``, ``val_L_rec``
and ``val_KL`` are loss terms (model space; KL in nats per day); ``val_MAE_all``,
``val_MAE_tail`` (pixels >= P95), ``val_RMSE_all`` and ``val_CRPS`` (8 samples from X alone) are
in mm over land pixels; ``val_mass_bias`` is the signed relative land-total bias of the reconstructions,
``val_mass_bias_prior`` that of the members from X alone (what sampling and evaluation use);
``beta`` and ``lr`` are the schedule values.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from precipgen import plots, tracking
from precipgen.config import Config
from precipgen.data.datasets import (
    DayDataset,
    EpochSampler,
    heavy_weights,
    land_mask_tensor,
    statics_tensor,
)
from precipgen.data.store import DatasetError, PreparedDataset
from precipgen.data.transforms import Normalization
from precipgen.locks import OutputClaim, claim_output
from precipgen.models.checkpoint import load_checkpoint, load_model_state
from precipgen.models.cvae import CVAE
from precipgen.models.registry import open_generator
from precipgen.plots import train as plots_train
from precipgen.scores.crps import crps_ensemble
from precipgen.train.distributed import (
    dist_info,
    pick_device,
    seed_everything,
    shutdown_distributed,
)
from precipgen.train.loop import FitResult, LoopConfig, StepOutput, fit
from precipgen.train.losses import CVAELoss

CKPT_BEST = "checkpoints/cvae_best.pt"
CKPT_LAST = "checkpoints/cvae_last.pt"
CKPT_EPOCH = "checkpoints/cvae_epoch_{epoch:03d}.pt"
LOG_CSV = "logs/train_log.csv"
FIGURE_DAYS, FIGURE_SAMPLES = 2, 3

# ------------------------------------------------------------------ the task for loop.fit
class CVAETask:
    kind = "cvae"

    def __init__(self, model: CVAE, loss_fn: CVAELoss, ds: PreparedDataset, val_data: DayDataset,
                 cfg: Config, statics: torch.Tensor, land: torch.Tensor):
        self.model, self.loss_fn, self.ds, self.val_data, self.cfg = model, loss_fn, ds, val_data, cfg
        self.norm: Normalization = ds.normalization
        self.statics, self.land = statics, land  # CPU masters (saved in checkpoints)
        self._dev: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self.p95 = float(ds.thresholds["P95"])
        self.run: Any = None
        self.figure_days = pick_figure_days(ds, val_data)

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._dev:
            self._dev[device] = (self.statics.to(device), self.land.to(device))
        return self._dev[device]

    def trainable_parameters(self) -> Any:
        return self.model.parameters()

    @property
    def sample_based(self) -> bool:
        return self.loss_fn.recon == "crps" or self.loss_fn.lambda_prior_crps > 0

    @property
    def ddp_forward(self) -> bool:  # the sample-based step calls encode/decode_members
        return not self.sample_based

    def train_step(self, model: nn.Module, batch: dict[str, torch.Tensor], epoch: int) -> StepOutput:
        s, _ = self.on(batch["x"].device)
        x, y = batch["x"], batch["y"]
        keys = ("L_rec", "L_mass", "KL")
        if not self.sample_based:
            y_hat, mu, logvar, pmu, plv = model(x, y, s)
            t = self.loss_fn(y_hat, y, mu, logvar, pmu, plv, epoch)
            return StepOutput(t["loss"], {k: float(t[k].detach()) for k in keys})
        m, lf = self.cfg.loss.crps_samples, self.loss_fn
        hx, s_full = model.encode_x(x, s)
        mu, logvar = model.posterior(y, hx, s_full)
        pmu, plv = model.prior_params(hx)
        post = model.decode_members(mu, logvar, hx, s_full, m) if lf.recon == "crps" else None
        y_hat = post[0] if post is not None else model.decoder(
            mu + torch.randn_like(mu) * (0.5 * logvar).exp(), hx, s_full)
        prior = model.decode_members(pmu, plv, hx, s_full, m) if lf.lambda_prior_crps > 0 else None
        t = lf(y_hat, y, mu, logvar, pmu, plv, epoch, post_ens=post, prior_ens=prior)
        return StepOutput(t["loss"], {k: float(t[k].detach()) for k in (*keys, "CRPS_prior")})

    def validate(self, model: nn.Module, epoch: int) -> dict[str, float]:
        """Posterior reconstructions (z = mu) for the loss terms and errors; ``val_samples``
        members from X alone for val_CRPS. Physical units over land pixels."""
        device = next(model.parameters()).device
        s, land = self.on(device)
        t = self.cfg.train
        # the same draws every epoch (as finetune's Val_CRPS): epochs are compared on their
        # models, not on the luck of their 8 members (which moved val_CRPS by ~1 %)
        g = torch.Generator(device=device).manual_seed(t.seed * 1000)
        loader = torch.utils.data.DataLoader(self.val_data, batch_size=t.batch_size, shuffle=False)
        cap = t.max_batches_per_epoch
        acc = dict.fromkeys(("n_days", "loss", "L_rec", "KL", "abs", "sq", "n_pix", "tail_abs",
                             "tail_n", "mass_pred", "mass_true", "mass_prior", "crps"), 0.0)
        for i, batch in enumerate(loader):
            if cap > 0 and i >= cap:
                break
            x, y, y_mm = (batch[k].to(device) for k in ("x", "y", "y_mm"))
            b = x.shape[0]
            y_hat, mu, logvar, pmu, plv = model(x, y, s)
            terms = self.loss_fn.deterministic_terms(y_hat, y, mu, logvar, pmu, plv, epoch)
            for k in ("loss", "L_rec", "KL"):
                acc[k] += float(terms[k]) * b
            acc["n_days"] += b
            pred, obs = self.norm.to_physical(y_hat)[..., land], y_mm[..., land]
            err = pred - obs
            tail = obs >= self.p95
            acc["abs"] += float(err.abs().sum())
            acc["sq"] += float(err.pow(2).sum())
            acc["n_pix"] += err.numel()
            acc["tail_abs"] += float(err[tail].abs().sum())
            acc["tail_n"] += float(tail.sum())
            acc["mass_pred"] += float(pred.sum())
            acc["mass_true"] += float(obs.sum())
            ens = self.norm.to_physical(model.sample(x, s, t.val_samples, "prior", generator=g))
            acc["crps"] += float(crps_ensemble(ens[..., land], obs, kind="fair").sum())
            acc["mass_prior"] += float(ens[..., land].mean(dim=0).sum())
        n, npix = max(acc["n_days"], 1), max(acc["n_pix"], 1)
        return {
            "val_loss": acc["loss"] / n,
            "val_L_rec": acc["L_rec"] / n,
            "val_KL": acc["KL"] / n,
            "val_MAE_all": acc["abs"] / npix,
            "val_MAE_tail": acc["tail_abs"] / acc["tail_n"] if acc["tail_n"] else float("nan"),
            "val_RMSE_all": (acc["sq"] / npix) ** 0.5,
            "val_mass_bias": (acc["mass_pred"] - acc["mass_true"]) / max(acc["mass_true"], 1e-9),
            "val_mass_bias_prior": (acc["mass_prior"] - acc["mass_true"]) / max(acc["mass_true"], 1e-9),
            "val_CRPS": acc["crps"] / npix,
            "beta": self.loss_fn.beta(epoch),
        }

    def checkpoint_extra(self) -> dict[str, Any]:
        """Everything the loader needs, weights_only-safe (tensors and plain containers)."""
        return {
            "model_hparams": dict(self.model.hparams),
            "statics": self.statics,
            "land_mask": self.land,
            "normalization": self.norm.to_json(),
            "thresholds": dict(self.ds.thresholds),
            "channel_names": list(self.ds.channel_names),
            "static_names": list(self.ds.static_names),
            "config": self.cfg.to_dict(),
            "run_id": self.run.run_id if self.run is not None else "",
        }

    # ---- figures (rank 0, every train.figure_interval epochs) ----
    def on_epoch_end(self, epoch: int, metrics: dict[str, float], model: nn.Module) -> None:
        every = self.cfg.train.figure_interval
        if every <= 0 or epoch % every or not self.figure_days:
            return
        device = next(model.parameters()).device
        s, _ = self.on(device)
        items = [self.val_data[i] for i in self.figure_days]
        x = torch.stack([it["x"] for it in items]).to(device)
        y = torch.stack([it["y"] for it in items]).to(device)
        g = torch.Generator(device=device).manual_seed(self.cfg.train.seed + 7 * epoch)
        model.eval()
        with torch.no_grad():
            recon = model(x, y, s)[0]
            samples = model.sample(x, s, FIGURE_SAMPLES, "prior", generator=g)
        phys = self.norm.to_physical
        days = [int(it["day"]) for it in items]
        fig = plots_train.cvae_validation_figure(
            days, torch.stack([it["y_mm"] for it in items])[:, 0].numpy(),
            phys(recon)[:, 0].cpu().numpy(), phys(samples)[:, :, 0].cpu().numpy(),
            self.land.numpy(), epoch,
        )
        path = Path(self.cfg.train.output_dir) / "figures" / f"val_heavy_days_epoch_{epoch:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
        plots.close(fig)
        if self.run is not None:
            self.run.log_artifact(path, "figures")


def pick_figure_days(ds: PreparedDataset, val: DayDataset) -> list[int]:
    """Positions in ``val`` of two heavy days (topped up with the wettest validation days)."""
    heavy_ids = set(ds.heavy_days.tolist())
    heavy = [i for i, d in enumerate(val.indices) if int(d) in heavy_ids]
    land = ds.land_mask
    wettest = np.argsort(-val.y_phys[:, 0][:, land].mean(axis=1)).tolist() if len(val) else []
    picks = list(dict.fromkeys([*heavy[:FIGURE_DAYS], *wettest]))
    return picks[:FIGURE_DAYS]


def summary_line(epochs: int, units: str = "mm") -> Any:
    def line(epoch: int, m: dict[str, float]) -> str:
        return (
            f"Epoch {epoch}/{epochs} | train_loss {m['train_loss']:.4f} | val_loss {m['val_loss']:.4f}"
            f" | val_MAE_tail {m['val_MAE_tail']:.3f} {units} | val_CRPS {m['val_CRPS']:.3f} {units}"
            f" | val_mass_bias {m['val_mass_bias']:+.3f} | beta {m['beta']:.3f}"
            f" | {m.get('epoch_seconds', 0.0):.1f}s"
        )

    return line


# ------------------------------------------------------------------ the step
def open_dataset(path: Path, batch_size: int, world: int) -> PreparedDataset:
    ds = PreparedDataset.open(path)
    if "P95" not in ds.thresholds:
        raise DatasetError(f"{ds.root / 'metadata' / 'thresholds.json'} has no 'P95' threshold")
    sizes = {k: len(v) for k, v in ds.split.items()}
    for split in ("train", "val"):
        need = batch_size * (world if split == "train" else 1)
        if sizes[split] < need:
            raise ValueError(
                f"batch size {batch_size}{f' (x {world} processes)' if split == 'train' and world > 1 else ''}"
                f" is larger than the {split} split of {ds.root} ({sizes[split]} days); "
                f"lower --batch_size"
            )
    return ds


def train(
    cfg: Config,
    *,
    resume: bool = False,
    run: tracking.Run | None = None,
    on_epoch_end: Callable[[int, dict[str, float], nn.Module], None] | None = None,
    register: bool = True,
) -> tuple[str | None, FitResult]:
    """Train the cVAE described by ``cfg``; the library form of ``precipgen train_cvae``.

    ``run``: log into this (already active, e.g. nested) run instead of starting one; used by
    ``precipgen tune``. ``on_epoch_end(epoch, metrics, model)`` runs after each epoch's metrics
    are logged; raising from it stops training (pruning). ``register=False`` skips the
    checkpoint artifacts and the model registry. Returns (run id or None off rank 0, result).
    """
    rank, _, _ = dist_info()
    out = Path(cfg.train.output_dir)
    # One run per output dir (rank 0 holds it): two runs there would log each other's files.
    claim: Any = (claim_output(out, "--output_dir", inside=True) if rank == 0
                  else contextlib.nullcontext())
    with claim as owner:
        return _train(cfg, out, owner, resume=resume, run=run, on_epoch_end=on_epoch_end,
                      register=register)


def _train(cfg: Config, out: Path, owner: OutputClaim | None, *, resume: bool,
           run: tracking.Run | None,
           on_epoch_end: Callable[[int, dict[str, float], nn.Module], None] | None,
           register: bool) -> tuple[str | None, FitResult]:
    rank, world, _ = dist_info()
    is_main = rank == 0
    t = cfg.train
    device = pick_device(t.device)
    if world > 1 and device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))  # no oversubscription

    data = tracking.resolve(cfg.data.path)  # local path or runs:/ URI
    ds = open_dataset(data.path, t.batch_size, world)
    split = ds.split
    train_data, val_data = DayDataset(ds, split["train"]), DayDataset(ds, split["val"])
    statics, land = statics_tensor(ds), land_mask_tensor(ds)

    seed_everything(t.seed)  # same initial weights on every rank and every run
    m = cfg.model
    model = CVAE(ds.n_channels, len(ds.static_names), ds.lr_shape, ds.hr_shape,
                 d_z=m.d_z, base_filters=m.base_filters, d_x=m.d_x, d_y=m.d_y, prior=m.prior,
                 noise_channels=m.noise_channels, noise_grid=m.noise_grid)
    if world == 1:  # ~10% faster convolutions on CPU (bench/); DDP buckets want contiguous grads
        model = model.to(memory_format=torch.channels_last)
    L = cfg.loss
    loss_fn = CVAELoss(ds.normalization, float(ds.thresholds["P95"]), land,
                       lambda_base=L.lambda_base, lambda_ext=L.lambda_ext,
                       lambda_mass=L.lambda_mass, beta_kl=L.beta_kl,
                       warmup_epochs=L.warmup_epochs, free_bits=L.free_bits,
                       conditional_prior=m.prior == "conditional", recon=L.recon,
                       lambda_prior_crps=L.lambda_prior_crps, crps_space=L.crps_space,
                       crps_scales=tuple(L.crps_scales))
    task = CVAETask(model, loss_fn, ds, val_data, cfg, statics, land)

    run_id = None
    if resume:  # check the checkpoint fits *before* reopening its MLflow run
        last = out / CKPT_LAST
        if not last.exists():
            raise FileNotFoundError(f"--resume: no checkpoint to resume from at {last}")
        ck = load_checkpoint(last)
        load_model_state(model, ck["model_state_dict"], last)
        run_id = str(ck.get("run_id") or "") or None
        del ck
    elif is_main and (out / LOG_CSV).exists():
        (out / LOG_CSV).unlink()  # a fresh run starts a fresh log

    sampler = EpochSampler(len(train_data), seed=t.seed,
                           weights=heavy_weights(ds, split["train"], t.heavy_oversample),
                           rank=rank, world_size=world)
    loop_cfg = LoopConfig.from_section(
        t, out, amp=t.amp, select_metric=t.select_metric, seed=t.seed, device=t.device,
        best_name=CKPT_BEST, last_name=CKPT_LAST, epoch_name=CKPT_EPOCH, log_csv=LOG_CSV,
        summary=summary_line(t.epochs, ds.normalization.units),
    )
    params, tags = cfg.flat(), {"precipgen.model_kind": "cvae"}
    if not is_main:
        run_ctx: Any = contextlib.nullcontext(None)
    elif run is not None:  # the caller owns the run: log what start_run would have
        run.log_params(params)
        run.set_tags(tags)
        run.log_text(cfg.to_yaml(), "config.yaml")
        run_ctx = contextlib.nullcontext(run)
    else:
        run_ctx = tracking.start_run("train_cvae", params=params, run_id=run_id,
                                     config_yaml=cfg.to_yaml(), tags=tags)

    def epoch_end(epoch: int, metrics: dict[str, float], model: nn.Module) -> None:
        task.on_epoch_end(epoch, metrics, model)  # figures first: a pruned epoch keeps them
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics, model)

    try:
        with run_ctx as active:
            task.run = active
            if owner is not None and active is not None:
                owner.set_run_id(active.run_id)
            if active is not None:
                active.log_dataset(ds.root, ds.digest, name=ds.root.name, context="training",
                                   profile={"n_days": ds.n_days, "hr_shape": ds.hr_shape,
                                            "lr_shape": ds.lr_shape, "channels": ds.n_channels})
                active.set_lineage({"dataset": data.run_id})
            result = fit(task, train_data, sampler, t.batch_size, loop_cfg, run=active,
                         resume=resume, on_epoch_end=epoch_end,
                         num_workers=cfg.data.num_workers)
            if active is not None:
                finish(active, result, ds, out, t.select_metric, register=register)
            return (active.run_id if active is not None else None), result
    finally:
        shutdown_distributed()


def finish(run: tracking.Run, result: FitResult, ds: PreparedDataset, out: Path, select: str,
           register: bool = True) -> None:
    """Artifacts, the registered model, and the final console line (rank 0).

    ``register=False`` (tuning trials): metrics and the CSV log only; checkpoints stay in
    ``out`` and nothing enters the model registry.
    """
    best = result.best_path if result.best_path.exists() else result.last_path
    written_by = str(load_checkpoint(best).get("run_id") or "")
    if written_by != run.run_id:  # never log or register another run's checkpoint
        raise RuntimeError(f"checkpoint {best} was written by run {written_by or '?'}, not by "
                           f"this run {run.run_id}: not logging it")
    run.log_metrics({f"best_{select}": result.best_metric, "best_epoch": result.best_epoch})
    run.log_artifact(out / LOG_CSV, "logs")
    tracking.mark_output(out, run.run_id)
    stopped = " (early stopping)" if result.stopped_early else ""
    if not register:
        print(f"train_cvae done{stopped}: best {select}={result.best_metric:.4f} at epoch "
              f"{result.best_epoch}; checkpoint {best}\nMLflow run: {run.url}")
        return
    run.log_artifact(best, "checkpoints")
    run.log_artifact(result.last_path, "checkpoints")
    version = tracking.log_generator_model(
        best, ds.root / "metadata" / "normalization.json", registered_name="cvae",
        example_input=np.asarray(ds.X_lr[:1], dtype=np.float32),
        default_params={"num_samples": 1, "mode": "prior", "temperature": 1.0, "seed": 0},
        loader=open_generator,
    )
    print(
        f"train_cvae done{stopped}: best {select}={result.best_metric:.4f} at epoch "
        f"{result.best_epoch}; checkpoint {best}; registered model cvae version {version} "
        f"(@candidate)\nMLflow run: {run.url}"
    )
