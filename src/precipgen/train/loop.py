"""The shared training loop: one readable epoch loop for every trainer in precipgen.

A trainer supplies a :class:`Task` (model, how to take a step, how to validate); the loop owns
the rest: optimiser, AMP on CUDA, gradient clipping, per-epoch reseeding (so a resumed run
replays exactly), heavy-day sampling, checkpoints (atomic; ``weights_only`` loadable), resume,
early stopping on a chosen metric, DDP under ``torchrun``, a tqdm bar, one summary line per
epoch, a CSV log, and metrics to MLflow (rank 0 only).
"""

from __future__ import annotations

import csv
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from precipgen.models import load_checkpoint


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/inf; the message names the epoch and batch."""


@dataclass
class StepOutput:
    """``loss`` to back-propagate, or None when the task already called backward itself
    (the chunked CRPS gradient); ``logs`` are floats averaged over the epoch."""

    loss: torch.Tensor | None
    logs: dict[str, float] = field(default_factory=dict)


class Task(Protocol):
    kind: str  # checkpoint "kind" (selects the loader in precipgen.models)
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


@dataclass
class FitResult:
    history: list[dict[str, float]]
    best_metric: float
    best_epoch: int
    best_path: Path
    last_path: Path
    stopped_early: bool


# ------------------------------------------------------------------ distributed helpers
def dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment (1 process otherwise)."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(device: torch.device) -> bool:
    rank, world, _ = dist_info()
    if world <= 1 or dist.is_initialized():
        return dist.is_initialized()
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return True


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        _, _, local = dist_info()
        return torch.device("cuda", local)
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# ------------------------------------------------------------------ checkpoints
def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic: write a temp file, then rename (a crash never leaves a torn checkpoint)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_model_state(model: nn.Module, state_dict: dict[str, torch.Tensor], source: Path | str) -> None:
    """Load weights, naming every mismatched tensor when the checkpoint does not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape
    )
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append("shape mismatch: " + "; ".join(wrong[:10]))
        if missing:
            parts.append("missing: " + ", ".join(missing[:10]))
        if unexpected:
            parts.append("unexpected: " + ", ".join(unexpected[:10]))
        raise ValueError(f"checkpoint {source} does not fit the configured model ({' | '.join(parts)})")
    model.load_state_dict(state_dict)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


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
        raise ValueError(
            f"batch size {batch_size} (x {world} processes) is larger than the training split "
            f"({len(train_data)} items)"
        )

    model = task.model.to(device)
    params = [p for p in task.trainable_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_epoch, history = 1, []
    best_metric, best_epoch, no_improve = math.inf, 0, 0
    logged_iter_steps = 0  # resume: iteration metrics up to here are already in MLflow
    if not resume and is_main:
        # A fresh run never inherits (and later registers) an earlier run's checkpoints.
        for stale in (best_path, last_path):
            stale.unlink(missing_ok=True)
    if resume:
        if not last_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint to resume from at {last_path}")
        ck = load_checkpoint(last_path)
        load_model_state(model, ck["model_state_dict"], last_path)
        opt.load_state_dict(ck["optimizer_state_dict"])
        if use_amp and "scaler" in ck:
            scaler.load_state_dict(ck["scaler"])
        start_epoch = int(ck["epoch"]) + 1
        history = list(ck["history"])
        best_metric, best_epoch = float(ck["best_metric"]), int(ck["best_epoch"])
        no_improve = int(ck["epochs_no_improve"])
        if is_main:
            _rewrite_history_csv(out / cfg.log_csv, history)
        if is_main and run is not None:
            _relog_missing(run, history)
            if cfg.iteration_csv:
                from precipgen.tracking import metric_history

                logged_iter_steps = max((s for s, _ in metric_history(run.run_id, "iter_loss")),
                                        default=0)

    ddp_model: nn.Module = model
    manual_allreduce = distributed and not getattr(task, "ddp_forward", True)
    if distributed and not manual_allreduce:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    loader = torch.utils.data.DataLoader(
        train_data, batch_size=batch_size, sampler=sampler, drop_last=True,
        num_workers=num_workers, pin_memory=device.type == "cuda",
    )
    iter_rows: list[dict[str, float]] = []
    stopped_early = False
    global_step = (start_epoch - 1) * _batches_per_epoch(loader, cfg)

    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        seed_everything(cfg.seed * 1000 + epoch)  # per-epoch reseed: resume replays exactly
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        ddp_model.train()
        sums: dict[str, float] = {}
        n_batches = _batches_per_epoch(loader, cfg)
        bar = tqdm(total=n_batches, desc=f"epoch {epoch}/{cfg.epochs}", disable=not is_main,
                   leave=False, dynamic_ncols=True)
        data_time = 0.0
        t_data = time.perf_counter()
        for i, batch in enumerate(loader):
            if i >= n_batches:
                break
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            data_time += time.perf_counter() - t_data
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=use_amp):
                step = task.train_step(ddp_model, batch, epoch)
            if step.loss is not None:
                if not torch.isfinite(step.loss):
                    raise NonFiniteLossError(_nan_message(epoch, i, step.loss, last_path))
                scaler.scale(step.loss).backward()
                loss_value = float(step.loss.detach())
            else:
                loss_value = float(step.logs.get("loss", float("nan")))
                if not math.isfinite(loss_value):
                    raise NonFiniteLossError(_nan_message(epoch, i, loss_value, last_path))
            if manual_allreduce:
                _average_gradients(params, world)
            if cfg.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            global_step += 1
            logs = {"loss": loss_value, **{k: float(v) for k, v in step.logs.items()}}
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            if cfg.iteration_csv:
                iter_rows.append({"epoch": epoch, "iteration": global_step, **logs})
                if is_main and run is not None and global_step > logged_iter_steps:
                    run.log_metrics({f"iter_{k}": v for k, v in logs.items()}, step=global_step)
            bar.set_postfix(loss=f"{sums['loss'] / (i + 1):.4f}")
            bar.update()
            t_data = time.perf_counter()
        bar.close()

        train_logs = {f"train_{k}" if k != "loss" else "train_loss": v / max(n_batches, 1)
                      for k, v in sums.items()}
        metrics: dict[str, float] = {"epoch": float(epoch), **train_logs}
        stop = torch.zeros(1)
        if is_main:
            ddp_model.eval()
            with torch.no_grad():
                metrics.update(task.validate(model, epoch))
            metrics["lr"] = opt.param_groups[0]["lr"]
            metrics["epoch_seconds"] = time.perf_counter() - t0
            metrics["data_fraction"] = data_time / max(metrics["epoch_seconds"], 1e-9)
            if cfg.select_metric not in metrics:
                raise KeyError(f"select metric '{cfg.select_metric}' not among {sorted(metrics)}")
            value = metrics[cfg.select_metric]
            # NaN (e.g. no validation pixel reached P95) never counts as better, but the first
            # epoch always writes a best checkpoint, and any finite value beats a NaN best.
            improved = best_epoch == 0 or (
                math.isfinite(value) and (value < best_metric or not math.isfinite(best_metric))
            )
            if improved:
                best_metric, best_epoch, no_improve = value, epoch, 0
            else:
                no_improve += 1
            history.append(metrics)
            state = {
                "kind": task.kind,
                "model_state_dict": _unwrap(model).state_dict(),
                "optimizer_state_dict": opt.state_dict(),
                "epoch": epoch,
                "history": history,
                "best_metric": best_metric,
                "best_epoch": best_epoch,
                "epochs_no_improve": no_improve,
                **task.checkpoint_extra(),
            }
            if use_amp:
                state["scaler"] = scaler.state_dict()
            if improved:
                save_checkpoint(best_path, state)
            if cfg.checkpoint_interval > 0 and epoch % cfg.checkpoint_interval == 0:
                save_checkpoint(out / cfg.epoch_name.format(epoch=epoch), state)
            save_checkpoint(last_path, state)  # after best: resume never skips a best
            _append_csv(out / cfg.log_csv, metrics)
            if cfg.iteration_csv:
                for row in iter_rows:
                    _append_csv(out / cfg.iteration_csv, row)
                iter_rows.clear()
            if run is not None:
                run.log_metrics(metrics, step=epoch)
            if on_epoch_end is not None:
                on_epoch_end(epoch, metrics, model)
            line = cfg.summary(epoch, metrics) if cfg.summary else _default_summary(epoch, metrics, cfg)
            tqdm.write(line)
            patience = cfg.early_stopping_patience
            if patience > 0 and no_improve >= patience:
                tqdm.write(f"early stopping: no improvement of {cfg.select_metric} in {patience} epochs")
                stop[0] = 1
        if distributed:
            dist.broadcast(stop, src=0)
        if stop.item():
            stopped_early = True
            break

    if distributed:
        dist.barrier()
        dist.destroy_process_group()  # post-fit logging on rank 0 needs no collectives
    return FitResult(history, best_metric, best_epoch, best_path, last_path, stopped_early)


def _average_gradients(params: list[nn.Parameter], world: int) -> None:
    """What DDP does in its backward hooks, for tasks that bypass ``forward``."""
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world


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


def _append_csv(path: Path, row: dict[str, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    if not new:
        with open(path) as f:
            header = next(csv.reader(f), [])
        if header != list(row):
            _rewrite_csv(path, row)
            return
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _rewrite_csv(path: Path, row: dict[str, float]) -> None:
    """Columns changed between epochs (a metric appeared): rewrite with the union header."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    fields = list(dict.fromkeys([*(rows[0].keys() if rows else []), *row]))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows([*rows, row])


def _rewrite_history_csv(path: Path, history: list[dict[str, float]]) -> None:
    """Resume: the CSV holds exactly the checkpointed epochs (a crash between checkpoint and CSV
    append would otherwise lose a row, or a crash after it leave one the checkpoint lacks)."""
    path.unlink(missing_ok=True)
    for row in history:
        _append_csv(path, row)


def _relog_missing(run: Any, history: list[dict[str, float]]) -> None:
    """After a crash between checkpoint and metric logging, log the epochs MLflow lacks."""
    from precipgen.tracking import metric_history

    logged = {step for step, _ in metric_history(run.run_id, "epoch")}
    for m in history:
        if int(m["epoch"]) not in logged:
            run.log_metrics(m, step=int(m["epoch"]))
