"""The shared training loop (precipgen.train.loop) on a toy regression task."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from precipgen.data.datasets import EpochSampler
from precipgen.models.checkpoint import load_checkpoint, load_model_state
from precipgen.train.loop import (
    LoopConfig,
    NonFiniteLossError,
    StepOutput,
    fit,
)


class DictData(TensorDataset):
    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x, y = super().__getitem__(i)
        return {"x": x, "y": y}


def data(n: int = 32) -> DictData:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return DictData(x, x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(n, generator=g))


class ToyTask:
    kind = "toy"

    def __init__(self, val_metric=None, nan_at: tuple[int, int] | None = None):
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 1))
        self.val = data(16)
        self.val_metric = val_metric
        self.nan_at = nan_at
        self.calls = 0

    def trainable_parameters(self):
        return self.model.parameters()

    def train_step(self, model, batch, epoch):
        loss = (model(batch["x"]).squeeze(-1) - batch["y"]).pow(2).mean()
        if self.nan_at == (epoch, self.calls % 4):
            loss = loss * float("nan")
        self.calls += 1
        return StepOutput(loss, {"mse": float(loss.detach())})

    def validate(self, model, epoch):
        x, y = self.val.tensors
        val = float((model(x).squeeze(-1) - y).pow(2).mean())
        out = {"val_loss": val}
        if self.val_metric is not None:
            out["val_other"] = self.val_metric(epoch)
        return out

    def checkpoint_extra(self):
        return {"note": "toy"}


def cfg(tmp: Path, **kw) -> LoopConfig:
    base = dict(epochs=4, lr=0.05, output_dir=tmp, checkpoint_interval=2, seed=3, device="cpu")
    return LoopConfig(**{**base, **kw})


def train(tmp: Path, task: ToyTask | None = None, resume: bool = False, **kw):
    task = task or ToyTask()
    d = data()
    return fit(task, d, EpochSampler(len(d), seed=3), 8, cfg(tmp, **kw), resume=resume), task


def test_resume_replays_the_uninterrupted_run(tmp_path: Path) -> None:
    straight, _ = train(tmp_path / "a")
    train(tmp_path / "b", epochs=2)
    resumed, _ = train(tmp_path / "b", resume=True)
    keys = ("epoch", "train_loss", "val_loss")
    assert [h[k] for h in resumed.history for k in keys] == pytest.approx(
        [h[k] for h in straight.history for k in keys], abs=1e-6)
    # the CSV has each epoch once, in order
    with open(tmp_path / "b" / "logs" / "train_log.csv") as f:
        assert [int(float(r["epoch"])) for r in csv.DictReader(f)] == [1, 2, 3, 4]
    # and the weights match
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "model_last.pt")["model_state_dict"]
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "model_last.pt")["model_state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_checkpoints_weights_only_and_best_on_select_metric(tmp_path: Path) -> None:
    other = {1: 5.0, 2: 1.0, 3: 3.0, 4: 2.0}  # best at epoch 2, whatever val_loss does
    res, _ = train(tmp_path, ToyTask(val_metric=other.get), select_metric="val_other")
    assert res.best_epoch == 2 and res.best_metric == 1.0
    ck = torch.load(res.best_path, weights_only=True)
    assert ck["epoch"] == 2 and ck["kind"] == "toy" and ck["note"] == "toy"
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["model_best.pt", "model_epoch_002.pt", "model_epoch_004.pt", "model_last.pt"]


def test_early_stopping(tmp_path: Path) -> None:
    res, _ = train(tmp_path, ToyTask(val_metric=lambda e: float(e)), select_metric="val_other",
                   early_stopping_patience=2, epochs=10)
    assert res.stopped_early and len(res.history) == 3 and res.best_epoch == 1


def test_lr_decays_on_a_plateau_and_a_resumed_run_keeps_it(tmp_path: Path) -> None:
    worse = {1: 1.0, 2: 2.0, 3: 3.0, 4: 0.5, 5: 4.0, 6: 5.0}  # plateaus at 2-3, 5-6
    res, _ = train(tmp_path / "a", ToyTask(val_metric=worse.get), select_metric="val_other",
                   epochs=6, lr_decay_patience=2, lr_decay_factor=0.5)
    # the lr of an epoch is the one it trained with; each decay shows from the next epoch on
    assert [h["lr"] for h in res.history] == pytest.approx([0.05, 0.05, 0.05, 0.025, 0.025, 0.025])
    assert load_checkpoint(res.last_path)["optimizer_state_dict"]["param_groups"][0]["lr"] == \
        pytest.approx(0.0125)
    train(tmp_path / "b", ToyTask(val_metric=worse.get), select_metric="val_other", epochs=3,
          lr_decay_patience=2, lr_decay_factor=0.5)
    resumed, _ = train(tmp_path / "b", ToyTask(val_metric=worse.get), resume=True,
                       select_metric="val_other", epochs=6, lr_decay_patience=2,
                       lr_decay_factor=0.5)
    assert [h["lr"] for h in resumed.history] == [h["lr"] for h in res.history]


def test_nan_loss_names_epoch_and_batch_and_keeps_last_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, batch 1.*last good checkpoint"):
        train(tmp_path, ToyTask(nan_at=(2, 1)))
    assert load_checkpoint(tmp_path / "checkpoints" / "model_last.pt")["epoch"] == 1


def test_batch_larger_than_split_is_clear(tmp_path: Path) -> None:
    d = data(4)
    with pytest.raises(ValueError, match=r"batch size 8 .* larger than the training split \(4 items\)"):
        fit(ToyTask(), d, EpochSampler(4, seed=0), 8, cfg(tmp_path))


def test_resume_without_checkpoint_is_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        train(tmp_path, resume=True)


def test_mismatched_checkpoint_names_tensors() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 1))
    other = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 1), nn.Linear(1, 1))
    with pytest.raises(ValueError) as e:
        load_model_state(model, other.state_dict(), "other.pt")
    msg = str(e.value)
    assert "0.weight: checkpoint (6, 4) vs model (8, 4)" in msg
    assert "unexpected: 2.bias, 2.weight" in msg and "other.pt" in msg


def test_metrics_are_finite_and_lr_logged(tmp_path: Path) -> None:
    res, _ = train(tmp_path, epochs=1)
    m = res.history[0]
    assert m["lr"] == 0.05 and all(math.isfinite(v) for v in m.values())
    assert "train_mse" in m and 0 <= m["data_fraction"] <= 1


def test_nan_select_metric_never_keeps_an_earlier_runs_best(tmp_path: Path) -> None:
    """A dry validation block makes val_MAE_tail NaN; the run must still write (and later
    register) its own best checkpoint, not one left in the directory by an earlier run."""
    best = tmp_path / "checkpoints" / "model_best.pt"
    best.parent.mkdir(parents=True)
    torch.save({"kind": "toy", "marker": "OLD RUN"}, best)
    res, _ = train(tmp_path, ToyTask(val_metric=lambda e: math.nan), select_metric="val_other")
    ck = load_checkpoint(res.best_path)
    assert "marker" not in ck and ck["epoch"] == 1

    nan_until = {1: math.nan, 2: math.nan, 3: 0.5, 4: 0.7}
    res, _ = train(tmp_path, ToyTask(val_metric=lambda e: nan_until[e]), select_metric="val_other")
    assert res.best_epoch == 3  # the first finite value beats a NaN best
    assert load_checkpoint(res.best_path)["epoch"] == 3
