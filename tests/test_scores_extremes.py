"""Extremes and distribution scores on tiny hand-computed fields (mm per step)."""

from __future__ import annotations

import numpy as np
import pytest

from precipgen.scores import extremes as ex

TRUTH = np.array([[0.0, 1.0, 5.0], [10.0, 0.05, 2.0]])  # wet (> 0.1): 1, 5, 10, 2
PRED = np.array([[0.5, 1.0, 3.0], [12.0, 0.0, 2.0]])  # wet: 0.5, 1, 3, 12, 2


def test_masked_points():
    x = np.arange(12.0).reshape(2, 2, 3)
    mask = np.array([[True, False, True], [False, False, True]])
    np.testing.assert_array_equal(ex.masked_points(x, mask), [0, 2, 5, 6, 8, 11])
    np.testing.assert_array_equal(ex.masked_points(x, mask, keep=1), [[0, 2, 5], [6, 8, 11]])
    assert ex.masked_points(x).shape == (12,)
    with pytest.raises(ValueError, match=r"mask of shape \(3, 2\)"):
        ex.masked_points(x, mask.T)
    with pytest.raises(TypeError, match="boolean"):
        ex.masked_points(x, mask.astype(int))


def test_mae_tail():
    # tail pixels: truth 5 and 10; errors |3-5| and |12-10|
    assert ex.mae_tail(PRED, TRUTH, 5.0) == pytest.approx(2.0)
    # conditioned on the truth: a prediction of 12 where the truth is 2 is not in the tail
    assert ex.mae_tail(np.where(TRUTH == 2.0, 12.0, TRUTH), TRUTH, 5.0) == 0.0
    # ensemble: mean member MAE over the tail (members PRED and TRUTH -> (2 + 2 + 0 + 0) / 4)
    assert ex.mae_tail(np.stack([PRED, TRUTH]), TRUTH, 5.0) == pytest.approx(1.0)
    mask = np.array([[True, True, True], [False, True, True]])  # drops the 10
    assert ex.mae_tail(PRED, TRUTH, 5.0, mask) == pytest.approx(2.0)
    assert ex.mae_tail(PRED + np.where(mask, 0, 100), TRUTH, 5.0, mask) == pytest.approx(2.0)
    assert np.isnan(ex.mae_tail(PRED, TRUTH, 50.0))


def test_quantile_and_max_bias():
    # all pixels: medians 1.5 (0, .05, 1, 2, 5, 10) and 1.5 (0, .5, 1, 2, 3, 12)
    assert ex.quantile_bias(PRED, TRUTH, 0.5) == pytest.approx(0.0)
    assert ex.quantile_bias(PRED, TRUTH, 1.0) == pytest.approx(2.0)
    # P80 (linear interpolation): sorted position 0.8 * 5 = 4 -> truth 5, pred 3
    assert ex.quantile_bias(PRED, TRUTH, 0.8) == pytest.approx(3.0 - 5.0)
    # wet pixels only: medians 2 (0.5, 1, 2, 3, 12) and 3.5 (1, 2, 5, 10)
    assert ex.quantile_bias(PRED, TRUTH, 0.5, wet_threshold=0.1) == pytest.approx(-1.5)
    assert ex.max_bias(PRED, TRUTH) == pytest.approx(2.0)
    mask = np.array([[True, True, True], [False, True, True]])
    assert ex.max_bias(PRED, TRUTH, mask) == pytest.approx(3.0 - 5.0)
    with pytest.raises(ValueError, match="pred shape"):
        ex.quantile_bias(PRED[:, :2], TRUTH, 0.5)


def test_wet_frequency_and_sdii():
    assert ex.wet_frequency(TRUTH) == pytest.approx(4 / 6)
    assert ex.wet_frequency(PRED) == pytest.approx(5 / 6)
    assert ex.wet_frequency(TRUTH, wet_threshold=1.0) == pytest.approx(3 / 6)  # strictly >
    assert ex.sdii(TRUTH) == pytest.approx((1 + 5 + 10 + 2) / 4)
    assert ex.sdii(PRED) == pytest.approx((0.5 + 1 + 3 + 12 + 2) / 5)
    mask = np.array([[True, True, True], [False, True, True]])
    assert ex.sdii(TRUTH, mask) == pytest.approx((1 + 5 + 2) / 3)
    assert np.isnan(ex.sdii(np.zeros((2, 2))))


def test_mass_bias():
    assert ex.mass_bias(PRED, TRUTH) == pytest.approx((18.5 - 18.05) / 18.05)
    assert ex.mass_bias(TRUTH * 0.9, TRUTH) == pytest.approx(-0.1)
    mask = np.array([[True, True, True], [False, True, True]])
    assert ex.mass_bias(PRED, TRUTH, mask) == pytest.approx((6.5 - 8.05) / 8.05)
    # an ensemble pools its members: members 0.5x and 1.5x average out
    assert ex.mass_bias(np.stack([0.5 * TRUTH, 1.5 * TRUTH]), TRUTH) == pytest.approx(0.0)
    assert np.isnan(ex.mass_bias(PRED, np.zeros_like(TRUTH)))


def test_qq_data():
    qq = ex.qq_data(PRED, TRUTH, levels=[0.0, 0.5, 1.0])
    np.testing.assert_allclose(qq.levels, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(qq.pred, [0.5, 2.0, 12.0])
    np.testing.assert_allclose(qq.truth, [1.0, 3.5, 10.0])
    qq = ex.qq_data(PRED, TRUTH)
    assert qq.levels.size == qq.pred.size == qq.truth.size == 101
    assert np.all(np.diff(qq.truth) >= 0) and qq.levels[-1] == 0.999
    assert np.all(np.isnan(ex.qq_data(np.zeros_like(TRUTH), TRUTH).pred))


def test_scores_of_a_perfect_prediction():
    rng = np.random.default_rng(0)
    truth = np.where(rng.random((5, 20, 30)) < 0.5, 0.0, rng.gamma(0.7, 4.0, (5, 20, 30)))
    for q in (0.95, 0.99):
        assert ex.quantile_bias(truth, truth, q) == 0.0
    assert ex.mae_tail(truth, truth, float(np.quantile(truth, 0.95))) == 0.0
    assert ex.mass_bias(truth, truth) == 0.0
    # a drizzling, peak-clipping model (the usual deterministic failure) is caught
    smooth = np.clip(truth, 0.3, np.quantile(truth, 0.9))
    assert ex.wet_frequency(smooth) > ex.wet_frequency(truth)
    assert ex.quantile_bias(smooth, truth, 0.99) < 0
    assert ex.sdii(smooth) < ex.sdii(truth)
