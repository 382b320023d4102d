"""The shared training loop: one readable epoch loop for every trainer in precipgen.

A trainer supplies a :class:`Task` (model, how to take a step, how to validate); the loop owns
the rest: optimiser, AMP on CUDA, gradient clipping, per-epoch reseeding (so a resumed run
replays exactly), checkpoints (atomic; ``weights_only`` loadable), resume, early stopping on a
chosen metric, DDP under ``torchrun``, a tqdm bar, one summary line per epoch, a CSV log, and
metrics to MLflow (rank 0 only). :func:`fit` reads top to bottom; each stage is a small
function below it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from precipgen.config import LoopSection
from precipgen.models.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from precipgen.models.memory_format import fast_layout
from precipgen.train import history as hist
from precipgen.train.distributed import (
    average_gradients,
    broadcast_stop,
    broadcast_value,
    dist_info,
    init_distributed,
    pick_device,
    seed_everything,
    shutdown_distributed,
    unwrap,
)


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/inf; the message names the epoch and batch."""


@dataclass
class StepOutput:
    """``loss`` to back-propagate, or None when the task already called backward itself
    (the chunked CRPS gradient); ``logs`` are floats averaged over the epoch."""

    loss: torch.Tensor | None
    logs: dict[str, float] = field(default_factory=dict)


class Task(Protocol):
    kind: str  # checkpoint "kind" (selects the loader in precipgen.models.registry)
    model: nn.Module
    # False when train_step calls model methods other than forward (the chunked CRPS step calls
    # encode/decode_members): DDP only syncs gradients through forward, so the loop then
    # averages gradients across ranks itself. Optional; default True.
    ddp_forward: bool

    def trainable_parameters(self) -> Iterable[nn.Parameter]: ...

    def train_step(self, model: nn.Module, batch: dict[str, torch.Tensor], epoch: int) -> StepOutput: ...

    def validate(self, model: nn.Module, epoch: int) -> dict[str, float]: ...

    def checkpoint_extra(self) -> dict[str, Any]: ...


@dataclass
class LoopConfig:
    epochs: int
    lr: float
    output_dir: Path
    weight_decay: float = 0.0
    grad_clip: float = 0.0
    amp: bool = False
    checkpoint_interval: int = 5
    early_stopping_patience: int = 0
    lr_decay_patience: int = 0  # x lr_decay_factor after this many epochs without improvement
    lr_decay_factor: float = 0.3
    select_metric: str = "val_loss"  # lower is better
    max_batches_per_epoch: int = 0
    seed: int = 42
    device: str = "auto"
    # file names (the seeds name them differently per trainer)
    best_name: str = "checkpoints/model_best.pt"
    last_name: str = "checkpoints/model_last.pt"
    epoch_name: str = "checkpoints/model_epoch_{epoch:03d}.pt"
    log_csv: str = "logs/train_log.csv"
    iteration_csv: str | None = None  # per-iteration history (finetune_crps)
    summary: Callable[[int, dict[str, float]], str] | None = None  # console line per epoch

    @classmethod
    def from_section(cls, s: LoopSection, output_dir: Path, **kw: Any) -> LoopConfig:
        """The loop fields of a config section; ``kw`` adds the rest (select_metric, names)."""
        return cls(epochs=s.epochs, lr=s.lr, output_dir=Path(output_dir),
                   weight_decay=s.weight_decay, grad_clip=s.grad_clip,
                   checkpoint_interval=s.checkpoint_interval,
                   early_stopping_patience=s.early_stopping_patience,
                   lr_decay_patience=s.lr_decay_patience, lr_decay_factor=s.lr_decay_factor,
                   max_batches_per_epoch=s.max_batches_per_epoch, **kw)


@dataclass
class FitResult:
    history: list[dict[str, float]]
    best_metric: float
    best_epoch: int
    best_path: Path
    last_path: Path
    stopped_early: bool


@dataclass
class _Progress:
    """What a checkpoint carries forward: enough to resume with no epoch lost or repeated."""

    start_epoch: int = 1
    history: list[dict[str, float]] = field(default_factory=list)
    best_metric: float = math.inf
    best_epoch: int = 0
    no_improve: int = 0

    def improve(self, value: float, epoch: int) -> bool:
        """NaN (e.g. no validation pixel reached P95) never counts as better, but the first
        epoch always writes a best checkpoint, and any finite value beats a NaN best."""
        improved = self.best_epoch == 0 or (
            math.isfinite(value) and (value < self.best_metric or not math.isfinite(self.best_metric)))
        if improved:
            self.best_metric, self.best_epoch, self.no_improve = value, epoch, 0
        else:
            self.no_improve += 1
        return improved


@dataclass
class _Optimiser:
    """AdamW with AMP's scaler, gradient clipping and (for tasks bypassing DDP's forward)
    the gradient averaging DDP would have done."""

    opt: torch.optim.Optimizer
    scaler: Any
    params: list[nn.Parameter]
    grad_clip: float
    allreduce_world: int = 0  # > 0: average gradients over this many ranks by hand

    def step(self) -> None:
        if self.allreduce_world:
            average_gradients(self.params, self.allreduce_world)
        if self.grad_clip > 0:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()


# ------------------------------------------------------------------ the loop
def fit(
    task: Task,
    train_data: torch.utils.data.Dataset,
    sampler: torch.utils.data.Sampler,
    batch_size: int,
    cfg: LoopConfig,
    run: Any | None = None,
    resume: bool = False,
    on_epoch_end: Callable[[int, dict[str, float], nn.Module], None] | None = None,
    num_workers: int = 0,
) -> FitResult:
    """Train ``task`` for ``cfg.epochs`` epochs (or until early stopping).

    ``run`` is a :class:`precipgen.tracking.Run` on rank 0 (None elsewhere or untracked).
    ``resume`` continues from ``cfg.last_name`` with no epoch lost or logged twice.
    """
    rank, world, _ = dist_info()
    device = pick_device(cfg.device)
    distributed = init_distributed(device)
    is_main = rank == 0
    out = Path(cfg.output_dir)
    best_path, last_path = out / cfg.best_name, out / cfg.last_name
    if len(train_data) < batch_size * world:
        raise ValueError(f"batch size {batch_size} (x {world} processes) is larger than the "
                         f"training split ({len(train_data)} items)")

    model = fast_layout(task.model.to(device))
    params = [p for p in task.trainable_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if resume:
        progress = _resume(model, opt, scaler, use_amp, last_path)
    else:
        progress = _Progress()
        if is_main:  # a fresh run never inherits (and later registers) an earlier run's files
            for stale in (best_path, last_path):
                stale.unlink(missing_ok=True)
    logged_iters = _sync_logs(progress, cfg, out, run) if resume and is_main else 0

    manual_allreduce = distributed and not getattr(task, "ddp_forward", True)
    ddp_model: nn.Module = model
    if distributed and not manual_allreduce:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    loader = torch.utils.data.DataLoader(
        train_data, batch_size=batch_size, sampler=sampler, drop_last=True,
        num_workers=num_workers, pin_memory=device.type == "cuda")
    n_batches = _batches_per_epoch(loader, cfg)
    optim = _Optimiser(opt, scaler, params, cfg.grad_clip, world if manual_allreduce else 0)
    step = (progress.start_epoch - 1) * n_batches
    stopped_early = False

    for epoch in range(progress.start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        seed_everything(cfg.seed * 1000 + epoch)  # per-epoch reseed: resume replays exactly
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        ddp_model.train()
        epoch_logs, iter_rows, data_time, step = _train_epoch(
            task, ddp_model, loader, n_batches, optim, cfg, epoch, step, device, use_amp,
            run if is_main else None, logged_iters, show=is_main)
        stop = False
        if is_main:
            metrics = _validate(task, model, ddp_model, epoch_logs, opt, t0, data_time, epoch)
            if cfg.select_metric not in metrics:
                raise KeyError(f"select metric '{cfg.select_metric}' not among {sorted(metrics)}")
            improved = progress.improve(metrics[cfg.select_metric], epoch)
            decay = cfg.lr_decay_patience
            if decay > 0 and progress.no_improve > 0 and progress.no_improve % decay == 0:
                _set_lr(opt, opt.param_groups[0]["lr"] * cfg.lr_decay_factor)  # saved below
                tqdm.write(f"no improvement of {cfg.select_metric} in {progress.no_improve} "
                           f"epochs: lr -> {opt.param_groups[0]['lr']:.3g}")
            progress.history.append(metrics)
            _save(task, model, opt, scaler, use_amp, progress, improved, epoch, cfg, out, run)
            _log(metrics, iter_rows, cfg, out, run, epoch)
            if on_epoch_end is not None:
                on_epoch_end(epoch, metrics, model)
            tqdm.write(cfg.summary(epoch, metrics) if cfg.summary
                       else _default_summary(epoch, metrics, cfg))
            patience = cfg.early_stopping_patience
            if patience > 0 and progress.no_improve >= patience:
                tqdm.write(f"early stopping: no improvement of {cfg.select_metric} in {patience} epochs")
                stop = True
        if distributed:  # rank 0 decided any decay: every rank steps with the same lr
            _set_lr(opt, broadcast_value(opt.param_groups[0]["lr"], distributed))
        if broadcast_stop(stop, distributed):
            stopped_early = True
            break

    if distributed:
        torch.distributed.barrier()
        shutdown_distributed()  # post-fit logging on rank 0 needs no collectives
    return FitResult(progress.history, progress.best_metric, progress.best_epoch, best_path,
                     last_path, stopped_early)


# ------------------------------------------------------------------ its stages
def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def _resume(model: nn.Module, opt: torch.optim.Optimizer, scaler: Any, use_amp: bool,
            last_path: Path) -> _Progress:
    if not last_path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint to resume from at {last_path}")
    ck = load_checkpoint(last_path)
    load_model_state(model, ck["model_state_dict"], last_path)
    opt.load_state_dict(ck["optimizer_state_dict"])
    if use_amp and "scaler" in ck:
        scaler.load_state_dict(ck["scaler"])
    return _Progress(int(ck["epoch"]) + 1, list(ck["history"]), float(ck["best_metric"]),
                     int(ck["best_epoch"]), int(ck["epochs_no_improve"]))


def _sync_logs(progress: _Progress, cfg: LoopConfig, out: Path, run: Any | None) -> int:
    """Resume: the CSV and MLflow hold exactly the checkpointed epochs; returns the last
    per-iteration step MLflow already has."""
    hist.rewrite_history_csv(out / cfg.log_csv, progress.history)
    if run is None:
        return 0
    hist.relog_missing(run, progress.history)
    return hist.logged_iterations(run) if cfg.iteration_csv else 0


def _train_epoch(task: Task, model: nn.Module, loader: torch.utils.data.DataLoader,
                 n_batches: int, optim: _Optimiser, cfg: LoopConfig, epoch: int, step: int,
                 device: torch.device, use_amp: bool, run: Any | None, logged_iters: int,
                 show: bool) -> tuple[dict[str, float], list[dict[str, float]], float, int]:
    """One pass over ``n_batches`` batches; returns (epoch means, iteration rows, seconds
    spent waiting for data, the global step reached)."""
    sums: dict[str, float] = {}
    iter_rows: list[dict[str, float]] = []
    bar = tqdm(total=n_batches, desc=f"epoch {epoch}/{cfg.epochs}", disable=not show,
               leave=False, dynamic_ncols=True)
    data_time, t_data = 0.0, time.perf_counter()
    for i, batch in enumerate(loader):
        if i >= n_batches:
            break
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        data_time += time.perf_counter() - t_data
        optim.opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=use_amp):
            out = task.train_step(model, batch, epoch)
        loss = _backward(out, optim.scaler, epoch, i, Path(cfg.output_dir) / cfg.last_name)
        optim.step()
        step += 1
        logs = {"loss": loss, **{k: float(v) for k, v in out.logs.items()}}
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + v
        if cfg.iteration_csv:
            iter_rows.append({"epoch": epoch, "iteration": step, **logs})
            if run is not None and step > logged_iters:
                run.log_metrics({f"iter_{k}": v for k, v in logs.items()}, step=step)
        bar.set_postfix(loss=f"{sums['loss'] / (i + 1):.4f}")
        bar.update()
        t_data = time.perf_counter()
    bar.close()
    means = {f"train_{k}" if k != "loss" else "train_loss": v / max(n_batches, 1)
             for k, v in sums.items()}
    return means, iter_rows, data_time, step


def _backward(out: StepOutput, scaler: Any, epoch: int, batch: int, last_path: Path) -> float:
    """Back-propagate the step's loss (unless the task did) and return its value; a
    non-finite loss stops training, naming where."""
    if out.loss is not None:
        if not torch.isfinite(out.loss):
            raise NonFiniteLossError(_nan_message(epoch, batch, out.loss, last_path))
        scaler.scale(out.loss).backward()
        return float(out.loss.detach())
    value = float(out.logs.get("loss", float("nan")))
    if not math.isfinite(value):
        raise NonFiniteLossError(_nan_message(epoch, batch, value, last_path))
    return value


def _validate(task: Task, model: nn.Module, ddp_model: nn.Module, train_logs: dict[str, float],
              opt: torch.optim.Optimizer, t0: float, data_time: float, epoch: int
              ) -> dict[str, float]:
    metrics: dict[str, float] = {"epoch": float(epoch), **train_logs}
    ddp_model.eval()
    with torch.no_grad():
        metrics.update(task.validate(model, epoch))
    metrics["lr"] = opt.param_groups[0]["lr"]
    metrics["epoch_seconds"] = time.perf_counter() - t0
    metrics["data_fraction"] = data_time / max(metrics["epoch_seconds"], 1e-9)
    return metrics


def _save(task: Task, model: nn.Module, opt: torch.optim.Optimizer, scaler: Any, use_amp: bool,
          p: _Progress, improved: bool, epoch: int, cfg: LoopConfig, out: Path,
          run: Any | None) -> None:
    state = {
        "kind": task.kind,
        "model_state_dict": unwrap(model).state_dict(),
        "optimizer_state_dict": opt.state_dict(),
        "epoch": epoch,
        "history": p.history,
        "best_metric": p.best_metric,
        "best_epoch": p.best_epoch,
        "epochs_no_improve": p.no_improve,
        "run_id": run.run_id if run is not None else "",  # who wrote it (never log another's)
        **task.checkpoint_extra(),
    }
    if use_amp:
        state["scaler"] = scaler.state_dict()
    if improved:
        save_checkpoint(out / cfg.best_name, state)
    if cfg.checkpoint_interval > 0 and epoch % cfg.checkpoint_interval == 0:
        save_checkpoint(out / cfg.epoch_name.format(epoch=epoch), state)
    save_checkpoint(out / cfg.last_name, state)  # after best: resume never skips a best


def _log(metrics: dict[str, float], iter_rows: list[dict[str, float]], cfg: LoopConfig,
         out: Path, run: Any | None, epoch: int) -> None:
    hist.append_csv(out / cfg.log_csv, metrics)
    if cfg.iteration_csv:
        for row in iter_rows:
            hist.append_csv(out / cfg.iteration_csv, row)
    if run is not None:
        run.log_metrics(metrics, step=epoch)


def _batches_per_epoch(loader: torch.utils.data.DataLoader, cfg: LoopConfig) -> int:
    n = len(loader)
    return min(n, cfg.max_batches_per_epoch) if cfg.max_batches_per_epoch > 0 else n


def _nan_message(epoch: int, batch: int, value: Any, last: Path) -> str:
    keep = f"; last good checkpoint: {last}" if last.exists() else ""
    return f"non-finite loss ({value}) at epoch {epoch}, batch {batch}: training stopped{keep}"


def _default_summary(epoch: int, m: dict[str, float], cfg: LoopConfig) -> str:
    keys = ["train_loss", "val_loss", cfg.select_metric]
    shown = ", ".join(f"{k}={m[k]:.6f}" for k in dict.fromkeys(keys) if k in m)
    return f"Epoch {epoch}/{cfg.epochs}: {shown} ({m.get('epoch_seconds', 0):.1f}s)"
