"""The SRDRN-style downscaler: shapes for several scale factors, training with the shared loop,
a loadable checkpoint, and a fixed budget whatever extra data an arm gets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import make_prepared

from precipgen.config import SRDRNConfig
from precipgen.data.datasets import statics_tensor
from precipgen.data.store import PreparedDataset
from precipgen.models.checkpoint import load_checkpoint
from precipgen.models.registry import open_generator as load_generator
from precipgen.models.srdrn import SRDRN
from precipgen.train.distributed import seed_everything
from precipgen.train.srdrn import ArrayDayDataset, SRDRNTask, train_srdrn


@pytest.mark.parametrize("factor", [2, 4, 6, 12])
def test_learned_upsampling_reaches_the_high_res_grid(factor):
    h, w = 3, 2
    statics = torch.zeros(2, h * factor, w * factor)
    model = SRDRN(5, statics, (h, w), filters=8, res_blocks=2)
    y = model(torch.randn(3, 5, h, w))
    assert y.shape == (3, 1, h * factor, w * factor)
    shuffles = [m for m in model.up if isinstance(m, torch.nn.PixelShuffle)]
    assert np.prod([m.upscale_factor for m in shuffles]) == factor


def test_size_follows_config():
    statics = torch.zeros(1, 8, 8)
    small = SRDRN(2, statics, (2, 2), filters=8, res_blocks=2)
    big = SRDRN(2, statics, (2, 2), filters=8, res_blocks=6)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(big) > n(small)
    with pytest.raises(ValueError, match="not an integer multiple"):
        SRDRN(2, torch.zeros(1, 9, 8), (2, 2))


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> PreparedDataset:
    return PreparedDataset.open(make_prepared(tmp_path_factory.mktemp("data"), days=48))


def test_training_learns_and_checkpoint_loads(ds, tmp_path):
    cfg = SRDRNConfig(filters=8, res_blocks=2, epochs=3, batch_size=4, lr=3e-3,
                      max_batches_per_epoch=6)
    t = train_srdrn(ds, cfg, seed=0, out_dir=tmp_path)
    assert len(t.result.history) == 3
    # the untrained model (same seed, same initial weights) scores worse on validation
    seed_everything(0)
    untrained = SRDRN(ds.n_channels, statics_tensor(ds), ds.lr_shape, 8, 2).eval()
    before = SRDRNTask(untrained, ds, 4, torch.device("cpu")).validate(untrained, 0)["val_loss"]
    assert t.result.best_metric < before
    assert np.isfinite(t.result.history[-1]["val_MAE_all"])
    ck = load_checkpoint(t.result.best_path)
    assert ck["kind"] == "srdrn"
    gen = load_generator(t.result.best_path, ds.root / "metadata" / "normalization.json")
    x = np.asarray(ds.X_lr[ds.split["test"]])
    y = gen.predict(x, num_samples=2)
    assert y.shape == (2, len(x), 1, *ds.hr_shape)
    assert (y >= 0).all() and np.array_equal(y[0], y[1])  # deterministic members
    assert (y[..., ~ds.land_mask] == 0).all()  # sea is masked


def test_extra_days_do_not_change_the_budget(ds, tmp_path):
    cfg = SRDRNConfig(filters=4, res_blocks=1, epochs=1, batch_size=4, max_batches_per_epoch=0)
    train = ds.split["train"]
    extra = ArrayDayDataset(ds.X_lr[train], ds.Y_hr[train], train, ds.normalization)
    a = train_srdrn(ds, cfg, 0, tmp_path / "a")
    b = train_srdrn(ds, cfg, 0, tmp_path / "b", extra=extra)
    assert a.steps_per_epoch == b.steps_per_epoch == len(train) // 4
    assert b.n_train == 2 * a.n_train
