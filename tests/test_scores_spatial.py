"""Spatial scores: hand-computed cases and pysteps' RAPSD and FSS on the same fields."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from precipgen.scores import spatial


def smooth_rain(rng: np.random.Generator, shape, sigma: float = 3.0) -> np.ndarray:
    """Spatially correlated, zero-inflated fields (smoothed noise, thresholded)."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, axes=(-2, -1))
    noise /= noise.std()
    return np.maximum(noise - 0.3, 0.0) * 5.0


# --------------------------------------------------------------------------- RAPSD


@pytest.mark.parametrize("shape", [(156, 132), (31, 40), (33, 33), (20, 20)])
def test_rapsd_matches_pysteps(shape):
    from pysteps.utils.spectral import rapsd

    field = smooth_rain(np.random.default_rng(sum(shape)), shape, sigma=2.0)
    ours, freq = spatial.rapsd(field)
    theirs, their_freq = rapsd(field, fft_method=np.fft, return_freq=True)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(freq, their_freq)
    ours, _ = spatial.rapsd(field, normalize=True)
    np.testing.assert_allclose(ours, rapsd(field, fft_method=np.fft, normalize=True), rtol=1e-10)


def test_rapsd_stacks_fields_and_masks():
    rng = np.random.default_rng(0)
    fields = smooth_rain(rng, (2, 3, 24, 30))
    out, freq = spatial.rapsd(fields, d=2.0)
    assert out.shape == (2, 3, 15) and freq[1] == pytest.approx(1 / 60)
    np.testing.assert_allclose(out[1, 2], spatial.rapsd(fields[1, 2])[0])
    mask = np.ones((24, 30), bool)
    mask[:, :5] = False
    nan_outside = np.where(mask, fields, np.nan)
    np.testing.assert_allclose(
        spatial.rapsd(nan_outside, mask)[0], spatial.rapsd(np.where(mask, fields, 0.0))[0]
    )
    with pytest.raises(ValueError, match="NaN"):
        spatial.rapsd(nan_outside)


def test_rapsd_hand_computed():
    # constant c on 4x4: only the zero frequency, |sum|^2 / N = (16 c)^2 / 16
    out, freq = spatial.rapsd(np.full((4, 4), 2.0))
    np.testing.assert_allclose(out, [64.0, 0.0])
    np.testing.assert_allclose(freq, [0.0, 0.25])
    # a cosine of 2 cycles across 8 px: all power on ring r = 2 (freq 0.25 cycles/px);
    # |F| = 32 at kx = +-2 -> power 1024 / 64 = 16 each, averaged over the 12 ring pixels
    x = np.cos(2 * np.pi * 2 * np.arange(8) / 8)[None, :].repeat(8, axis=0)
    out, freq = spatial.rapsd(x)
    assert np.argmax(out) == 2 and freq[2] == 0.25
    r = np.rint(np.hypot(*np.meshgrid(np.arange(8) - 4, np.arange(8) - 4)))
    assert out[2] == pytest.approx(32.0 / (r == 2).sum())


def test_spectral_ratio_detects_smoothing():
    rng = np.random.default_rng(1)
    truth = smooth_rain(rng, (4, 64, 64), sigma=1.0)
    assert spatial.spectral_ratio(truth, truth) == pytest.approx(1.0)
    assert spatial.spectral_ratio(2.0 * truth, truth) == pytest.approx(4.0)
    blurred = ndimage.gaussian_filter(truth, 1.5, axes=(-2, -1))
    assert spatial.spectral_ratio(blurred, truth) < 0.2
    with pytest.raises(ValueError, match="min_freq"):
        spatial.spectral_ratio(truth, truth, min_freq=0.6)


# --------------------------------------------------------------------------- FSS


def test_fss_hand_computed():
    pred = np.zeros((3, 3))
    obs = np.zeros((3, 3))
    pred[1, 1] = 2.0  # event at the centre
    obs[0, 0] = 1.0  # event in a corner (== threshold counts as an event)
    assert spatial.fss(pred, obs, 1.0, 1) == 0.0  # disjoint at pixel scale
    # 3x3 windows, outside = no event: F = 1/9 everywhere; O = 1/9 on the 4 pixels whose
    # window reaches the corner. sum (F-O)^2 = 5/81, sum F^2 + sum O^2 = 13/81
    assert spatial.fss(pred, obs, 1.0, 3) == pytest.approx(8 / 13)
    assert spatial.fss(obs, obs, 1.0, 2) == 1.0
    assert np.isnan(spatial.fss(pred, obs, 5.0, 1))  # no events at all
    with pytest.raises(ValueError, match="scale"):
        spatial.fss(pred, obs, 1.0, 0)


def test_fss_matches_pysteps_over_scales_1_to_32():
    from pysteps.verification.spatialscores import fss as pysteps_fss

    rng = np.random.default_rng(2)
    obs = smooth_rain(rng, (60, 50))
    pred = np.roll(obs, (3, -4), axis=(0, 1)) + smooth_rain(rng, (60, 50))  # displaced + noise
    for thr in (0.5, float(np.quantile(obs, 0.95))):
        scales, ours = spatial.fss_curve(pred, obs, thr)
        assert scales.tolist() == list(range(1, 33))
        theirs = [pysteps_fss(pred, obs, thr, int(s)) for s in scales]
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
        assert ours[-1] > ours[0]  # displacement errors forgiven at larger scales


def test_fss_accumulates_days_like_pysteps():
    from pysteps.verification.spatialscores import fss_accum, fss_compute, fss_init

    rng = np.random.default_rng(3)
    obs = smooth_rain(rng, (3, 40, 40))
    pred = smooth_rain(rng, (3, 40, 40))
    for scale in (1, 4, 9):
        acc = fss_init(1.0, scale)
        for d in range(3):
            fss_accum(acc, pred[d], obs[d])
        assert spatial.fss(pred, obs, 1.0, scale) == pytest.approx(fss_compute(acc), rel=1e-12)


def test_fss_mask_ignores_outside_pixels():
    rng = np.random.default_rng(4)
    obs = smooth_rain(rng, (40, 40))
    mask = np.zeros((40, 40), bool)
    mask[5:30, 8:35] = True
    pred = np.where(mask, obs, rng.uniform(0, 20, obs.shape))  # different only outside
    pred[0, 0] = np.nan
    _, curve = spatial.fss_curve(pred, obs, 1.0, scales=[1, 5, 16], mask=mask)
    np.testing.assert_allclose(curve, 1.0)
    _, unmasked = spatial.fss_curve(pred, obs, 1.0, scales=[1, 5, 16])
    assert np.all(unmasked < 1.0)


def test_fss_target():
    obs = np.zeros((4, 5))
    obs[0, :2] = 3.0  # base rate 2 / 20
    assert spatial.fss_target(obs, 1.0) == pytest.approx(0.55)


# --------------------------------------------------------------------------- correlation


def test_spatial_correlation():
    rng = np.random.default_rng(5)
    obs = rng.gamma(0.7, 2.0, size=(3, 10, 12))
    assert spatial.spatial_correlation(2 * obs[0] + 1, obs[0]) == pytest.approx(1.0)
    assert spatial.spatial_correlation(-obs[0], obs[0]) == pytest.approx(-1.0)
    assert np.isnan(spatial.spatial_correlation(np.zeros((10, 12)), obs[0]))  # all dry
    pred = obs + rng.normal(0, 2.0, obs.shape)
    r = spatial.spatial_correlation(pred, obs)
    assert r.shape == (3,)
    assert r[1] == pytest.approx(np.corrcoef(pred[1].ravel(), obs[1].ravel())[0, 1])
    mask = np.zeros((10, 12), bool)
    mask[2:8, 3:9] = True
    r = spatial.spatial_correlation(pred, obs, mask)
    assert r[2] == pytest.approx(np.corrcoef(pred[2][mask], obs[2][mask])[0, 1])
