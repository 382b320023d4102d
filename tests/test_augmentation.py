"""Does augmentation help? The bootstrap comparison on hand-made cases, the leak guard on
synthetic days, and the experiment end to end: both arms as nested runs of the evaluation run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import make_prepared
from mlflow.tracking import MlflowClient

from precipgen import augmentation, tracking
from precipgen.config import load_config
from precipgen.data.store import PreparedDataset


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> PreparedDataset:
    return PreparedDataset.open(make_prepared(tmp_path_factory.mktemp("data"), days=48))


def fake_samples(ds: PreparedDataset, root: Path) -> Path:
    """A `precipgen sample`-like directory: samples of 6 training days and of one test day."""
    days = np.r_[ds.split["train"][:6], ds.split["test"][:1]]
    root.mkdir(parents=True)
    np.save(root / "Y_syn.npy", np.asarray(ds.Y_hr[days]) * 1.1)
    np.save(root / "X_ref.npy", np.asarray(ds.X_lr[days]))
    np.save(root / "day_index.npy", days)
    return root


def stats_for(pred, truth, land):
    return augmentation.day_stats(pred, truth, land, 1.0, 2.0)


def test_identical_arms_differ_by_zero():
    rng = np.random.default_rng(0)
    truth = rng.gamma(0.7, 2.0, (10, 8, 8))
    pred = truth + rng.normal(0, 0.5, truth.shape)
    land = np.ones((8, 8), bool)
    s = stats_for(pred, truth, land)
    res = augmentation.compare({"real": s, "augmented": s}, truth[:, land], np.arange(10), 50, 0)
    for k in augmentation.METRICS:
        assert res[f"diff_{k}"] == pytest.approx(0.0, abs=1e-12)
        assert res[f"diff_{k}_ci_low"] == pytest.approx(0.0, abs=1e-12)


def test_a_better_arm_has_a_ci_below_zero():
    rng = np.random.default_rng(1)
    truth = rng.gamma(0.7, 2.0, (20, 8, 8))
    land = np.ones((8, 8), bool)
    good = stats_for(truth + 0.1, truth, land)
    bad = stats_for(truth + 1.0, truth, land)
    res = augmentation.compare({"real": bad, "augmented": good}, truth[:, land],
                               np.arange(20), 200, 0)
    # MAE is exactly 1.0 vs 0.1 on every day
    assert res["real_MAE_all"] == pytest.approx(1.0) and res["augmented_MAE_all"] == pytest.approx(0.1)
    assert res["diff_MAE_all"] == pytest.approx(-0.9)
    assert res["diff_MAE_all_ci_high"] < 0


def test_synthetic_days_outside_the_training_split_are_dropped(ds, tmp_path):
    syn = augmentation.load_synthetic(str(fake_samples(ds, tmp_path / "s")), ds)
    assert len(syn.days) == 6 and np.isin(syn.days, ds.split["train"]).all()
    assert syn.n_total == 7


def test_samples_that_do_not_fit_are_refused(ds, tmp_path):
    root = fake_samples(ds, tmp_path / "s")
    np.save(root / "X_ref.npy", np.zeros((7, ds.n_channels + 1, *ds.lr_shape), np.float32))
    with pytest.raises(ValueError, match="do not fit dataset"):
        augmentation.load_synthetic(str(root), ds)
    with pytest.raises(FileNotFoundError, match="precipgen sample"):
        augmentation.load_synthetic(str(tmp_path), ds)


def test_experiment_reports_both_arms_as_nested_runs(tracking_server, ds, tmp_path):
    cfg = load_config(None, ["srdrn.filters=4", "srdrn.res_blocks=1", "srdrn.epochs=1",
                             "srdrn.batch_size=8"])
    samples = str(fake_samples(ds, tmp_path / "s"))
    with tracking.start_run("evaluate", run_name="aug-test") as parent:
        res = augmentation.run_experiment(ds, samples, cfg, "test", 3, tmp_path / "out", 50)
    m = res["metrics"]
    for subset in ("all", "heavy"):
        for arm in augmentation.ARMS:
            assert np.isfinite(m[f"aug_{subset}_{arm}_MAE_all"])
        assert m[f"aug_{subset}_diff_MAE_all"] == pytest.approx(
            m[f"aug_{subset}_augmented_MAE_all"] - m[f"aug_{subset}_real_MAE_all"])
    assert m["aug_all_diff_MAE_all_ci_low"] <= m["aug_all_diff_MAE_all_ci_high"]
    assert res["n_synthetic"] == 6
    client = MlflowClient(tracking_server)
    children = client.search_runs(
        [client.get_run(parent.run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}'")
    by_arm = {r.data.params["arm"]: r for r in children}
    assert set(by_arm) == {"real", "augmented"}
    assert by_arm["augmented"].data.params["n_synthetic"] == "6"
    assert by_arm["real"].data.params["n_synthetic"] == "0"
    for r in by_arm.values():
        assert "test_MAE_all" in r.data.metrics and "val_loss" in r.data.metrics
        assert r.data.params["steps_per_epoch"] == by_arm["real"].data.params["steps_per_epoch"]
    assert (tmp_path / "out" / "augmentation_days.csv").read_text().startswith("day,real_MAE_all")
