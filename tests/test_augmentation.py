"""Does augmentation help? The bootstrap comparison on hand-made cases, the leak guard on
synthetic days, and the experiment end to end: both arms as nested runs of the evaluation run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import make_prepared
from mlflow.tracking import MlflowClient

from precipgen import tracking
from precipgen.config import load_config
from precipgen.data.store import PreparedDataset
from precipgen.evaluation import augmentation_gain as augmentation


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


# ------------------------------------------------------------------ issue 13: A/B, seeds, skip
def test_option_a_adds_k_samples_per_heavy_day_each_epoch():
    from precipgen.evaluation.mixing import PerHeavyDaySampler

    real_days = np.array([10, 11, 12, 13])
    syn_days = np.array([11, 11, 11, 13, 99])  # 99: not a heavy training day
    s = PerHeavyDaySampler(4, real_days, np.array([11, 13]), syn_days, k=2, seed=0)
    s.set_epoch(1)
    idx = list(s)
    assert len(idx) == len(s) == 4 + 2 * 2
    assert sorted(i for i in idx if i < 4) == [0, 1, 2, 3]  # every real day once
    syn = [i - 4 for i in idx if i >= 4]
    assert sum(syn_days[j] == 11 for j in syn) == 2 and sum(syn_days[j] == 13 for j in syn) == 2
    s.set_epoch(2)
    assert list(s) != idx  # a fresh draw per epoch
    s.set_epoch(1)
    assert list(s) == idx  # reproducible


def test_option_b_ratio_cuts_the_synthetic_part():
    from precipgen.evaluation.mixing import subsample_synthetic

    assert len(subsample_synthetic(50, 20, 0.5, 0)) == 10
    assert len(subsample_synthetic(50, 20, 0.0, 0)) == 50
    assert len(subsample_synthetic(5, 20, 1.0, 0)) == 5


def test_ci_covers_training_seeds():
    """Two seeds that disagree widen the CI beyond what the days alone give."""
    rng = np.random.default_rng(0)
    land = np.ones((8, 8), dtype=bool)
    truth = rng.gamma(1, 2, (40, 8, 8))
    real = [stats_for(truth + rng.normal(0, 1, truth.shape), truth, land)]
    aug_same = [stats_for(truth + rng.normal(0, 1, truth.shape) * 0.9, truth, land)]
    aug_two = aug_same + [stats_for(truth + rng.normal(0, 3, truth.shape), truth, land)]
    one = augmentation.compare({"real": real, "augmented": aug_same}, truth[:, land],
                               np.arange(40), 200, 0)
    two = augmentation.compare({"real": real, "augmented": aug_two}, truth[:, land],
                               np.arange(40), 200, 0)
    w1 = one["diff_MAE_all_ci_high"] - one["diff_MAE_all_ci_low"]
    w2 = two["diff_MAE_all_ci_high"] - two["diff_MAE_all_ci_low"]
    assert w2 > 2 * w1
    assert one["verdict_MAE_all"] == 1.0  # 10 % less noise: helps
    assert augmentation.verdict(-2, -1, "lower") == "helps"
    assert augmentation.verdict(-1, 1, "lower") == "no significant difference"
    assert augmentation.verdict(-2, -1, "higher") == "hurts"


def test_no_synthetic_sample_skips_the_experiment(ds, tmp_path):
    root = fake_samples(ds, tmp_path / "s")
    for name in ("Y_syn.npy", "X_ref.npy"):
        a = np.load(root / name)
        np.save(root / name, a[:0])
    np.save(root / "day_index.npy", np.zeros(0, dtype=np.int64))
    cfg = load_config(None, ["srdrn.filters=4", "srdrn.res_blocks=1", "srdrn.epochs=1"])
    res = augmentation.run_experiment(ds, str(root), cfg, "test", 3, tmp_path / "out", 10)
    assert res["skipped"] and res["metrics"]["aug_skipped"] == 1.0
    assert "SKIPPED" in res["notes"][0] and "0 accepted" in res["notes"][0]
    assert not any(k.startswith("aug_all_") for k in res["metrics"])  # nothing compared
    lines: list[str] = []
    augmentation.console(res, lines.append)
    assert any("SKIPPED" in line for line in lines) and not any("📊" in line for line in lines)
