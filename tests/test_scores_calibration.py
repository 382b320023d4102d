"""Calibration scores: hand-computed cases, pysteps' rank histogram, perfect vs overconfident."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from precipgen.scores import calibration as cal


def gamma_with_zeros(rng: np.random.Generator, size, scale, p_dry: float = 0.4) -> np.ndarray:
    """Precipitation-like draws: a point mass at 0 plus a gamma (shape 0.7) tail."""
    wet = rng.random(size) >= p_dry
    return np.where(wet, rng.gamma(0.7, 1.0, size) * scale, 0.0)


@pytest.fixture(scope="module")
def perfect():
    """Members and observation drawn from the same per-pixel distribution (an oracle)."""
    rng = np.random.default_rng(20240607)
    scale = rng.uniform(0.5, 8.0, size=(8, 40, 60))  # a different distribution per pixel
    ens = gamma_with_zeros(rng, (10, *scale.shape), scale)
    obs = gamma_with_zeros(rng, scale.shape, scale)
    return ens, obs, scale


@pytest.fixture(scope="module")
def overconfident(perfect):
    """A deterministic-like ensemble: a noisy, biased mean with a tiny spread."""
    _, obs, scale = perfect
    rng = np.random.default_rng(7)
    centre = 0.6 * 0.7 * scale * 1.3 + rng.normal(0.0, 0.3, scale.shape) * scale
    ens = np.maximum(centre + 1e-3 * rng.standard_normal((10, *scale.shape)), 0.0)
    return ens, obs


# --------------------------------------------------------------------------- spread-skill


def test_spread_skill_hand_computed():
    # point 1: members 0, 1, 2 (mean 1, unbiased var 1), obs 0 -> sq. error 1
    # point 2: members 2, 2, 2 (mean 2, var 0),          obs 4 -> sq. error 4
    ens = np.array([[0.0, 2.0], [1.0, 2.0], [2.0, 2.0]])
    obs = np.array([0.0, 4.0])
    s = cal.spread_skill(ens, obs)
    assert s.spread == pytest.approx(np.sqrt(4 / 3 * 0.5))
    assert s.rmse == pytest.approx(np.sqrt(2.5))
    assert s.ratio == pytest.approx(np.sqrt(4 / 15))
    assert (s.m, s.n) == (3, 2)
    assert cal.spread_skill_ratio(ens, obs) == pytest.approx(np.sqrt(4 / 15))


def test_spread_skill_mask_ignores_outside_pixels():
    ens = np.array([[[0.0, np.nan]], [[1.0, np.nan]], [[2.0, np.nan]]])  # (3, 1, 2)
    obs = np.array([[0.0, np.nan]])
    mask = np.array([[True, False]])
    s = cal.spread_skill(ens, obs, mask)
    assert s.n == 1 and s.spread == pytest.approx(np.sqrt(4 / 3)) and s.rmse == pytest.approx(1.0)
    with pytest.raises(ValueError, match="mask"):
        cal.spread_skill(ens, obs, np.array([True, False]))


def test_spread_skill_binned_matches_overall_in_one_bin(perfect):
    ens, obs, _ = perfect
    spread, rmse, counts = cal.spread_skill_binned(ens, obs, n_bins=1)
    s = cal.spread_skill(ens, obs)
    assert counts.tolist() == [obs.size]
    assert spread[0] == pytest.approx(s.spread) and rmse[0] == pytest.approx(s.rmse)
    spread, rmse, counts = cal.spread_skill_binned(ens, obs, n_bins=5)
    assert counts.sum() == obs.size
    assert np.all(np.diff(spread) > 0)  # bins are ordered by spread
    assert np.all(np.diff(rmse) > 0)  # the spread is informative: error grows with it
    # a Gaussian oracle with known per-pixel std: bins follow the diagonal within sampling noise
    rng = np.random.default_rng(3)
    sd = rng.uniform(0.1, 3.0, size=50_000)
    spread, rmse, _ = cal.spread_skill_binned(
        rng.normal(0, sd, (40, sd.size)), rng.normal(0, sd), n_bins=4
    )
    np.testing.assert_allclose(spread / rmse, 1.0, atol=0.1)


def test_perfect_ensemble_spread_skill_near_one(perfect):
    ens, obs, _ = perfect
    assert cal.spread_skill_ratio(ens, obs) == pytest.approx(1.0, abs=0.1)


def test_overconfident_ensemble_is_underdispersive(overconfident):
    ens, obs = overconfident
    assert cal.spread_skill_ratio(ens, obs) < 0.1


# --------------------------------------------------------------------------- rank histogram


def test_rank_histogram_hand_computed_without_ties():
    ens = np.array([[1.0] * 4, [2.0] * 4, [3.0] * 4])  # members 1, 2, 3 at 4 points
    obs = np.array([0.0, 2.5, 4.0, 1.5])  # ranks 0, 2, 3, 1
    np.testing.assert_array_equal(cal.rank_histogram(ens, obs), [1, 1, 1, 1])
    obs = np.array([0.0, 0.5, 4.0, 1.5])
    np.testing.assert_array_equal(cal.rank_histogram(ens, obs), [2, 1, 0, 1])


def test_rank_histogram_ties_are_spread_over_the_tied_ranks():
    n = 30_000
    # obs 0 tied with two zero members, below the third: rank uniform on {0, 1, 2}, never 3
    ens = np.stack([np.zeros(n), np.zeros(n), np.ones(n)])
    h = cal.rank_histogram(ens, np.zeros(n), rng=1)
    assert h[3] == 0 and h.sum() == n
    np.testing.assert_allclose(h[:3] / n, 1 / 3, atol=0.015)
    # seeded: the same generator seed gives the same histogram, another seed another one
    np.testing.assert_array_equal(h, cal.rank_histogram(ens, np.zeros(n), rng=1))
    assert not np.array_equal(h, cal.rank_histogram(ens, np.zeros(n), rng=2))
    # all dry: uniform over all m + 1 ranks (counting ties as "below" would give [n, 0, 0, 0])
    h = cal.rank_histogram(np.zeros((3, n)), np.zeros(n), rng=np.random.default_rng(3))
    assert cal.rank_histogram_flatness(h).p_value > 0.01


def test_rank_histogram_x_min_and_nan_like_pysteps():
    ens = np.array([[0.0, 0.05, 3.0, np.nan], [0.0, 0.02, 1.0, 1.0]])
    obs = np.array([0.0, 0.5, 2.0, 1.0])
    # x_min=0.1: the all-below pair (0, 0, 0) is skipped; NaN member -> skipped
    h = cal.rank_histogram(ens, obs, x_min=0.1)
    # pair 2: obs 0.5 above members 0.05, 0.02 (both below x_min) -> rank 2; pair 3: rank 1
    np.testing.assert_array_equal(h, [0, 1, 1])


def test_rank_histogram_matches_pysteps_without_ties():
    from pysteps.verification.ensscores import rankhist

    rng = np.random.default_rng(11)
    ens = rng.gamma(0.8, 2.0, size=(6, 30, 40))
    obs = rng.gamma(0.8, 2.0, size=(30, 40)) * 1.3
    ours = cal.rank_histogram(ens, obs)
    theirs = rankhist(ens, obs, normalize=False)
    np.testing.assert_array_equal(ours, theirs)


def test_rank_histogram_matches_pysteps_ties_in_distribution(perfect):
    from pysteps.verification.ensscores import rankhist

    ens, obs, _ = perfect  # ~40 % zeros: many ties
    np.random.seed(5)  # pysteps breaks ties with the global numpy generator
    theirs = rankhist(ens, obs, normalize=True)
    ours = cal.rank_histogram(ens, obs, rng=5) / obs.size
    np.testing.assert_allclose(ours, theirs, atol=0.01)
    # with x_min, pysteps drops the all-dry pairs and treats sub-threshold values as ties
    np.random.seed(6)
    theirs = rankhist(ens, obs, X_min=0.5, normalize=True)
    h = cal.rank_histogram(ens, obs, rng=6, x_min=0.5)
    np.testing.assert_allclose(h / h.sum(), theirs, atol=0.01)


def test_flatness_hand_computed():
    f = cal.rank_histogram_flatness([10, 10, 10, 10])
    assert (f.chi2, f.dof, f.p_value, f.reliability_index) == (0.0, 3, 1.0, 0.0)
    f = cal.rank_histogram_flatness([20, 0, 0, 20])  # N=40, expected 10 per bin
    assert f.chi2 == pytest.approx(40.0)
    assert f.p_value == pytest.approx(stats.chi2.sf(40.0, 3))
    assert f.reliability_index == pytest.approx(1.0)
    assert cal.rank_histogram_flatness([20, 0, 0, 20], n_eff=4).chi2 == pytest.approx(4.0)
    # scipy's chisquare agrees with the statistic
    assert cal.rank_histogram_flatness([3, 9, 5, 7]).p_value == pytest.approx(
        stats.chisquare([3, 9, 5, 7]).pvalue
    )


def test_perfect_ensemble_rank_histogram_is_flat(perfect):
    ens, obs, _ = perfect
    h = cal.rank_histogram(ens, obs, rng=0)
    assert h.shape == (11,) and h.sum() == obs.size
    f = cal.rank_histogram_flatness(h)
    assert f.p_value > 0.01
    assert f.reliability_index < 0.05


def test_overconfident_ensemble_rank_histogram_is_u_shaped(overconfident):
    ens, obs = overconfident
    h = cal.rank_histogram(ens, obs, rng=0)
    middle = h[1:-1].mean()
    assert h[0] > 5 * middle and h[-1] > 5 * middle
    f = cal.rank_histogram_flatness(h)
    assert f.p_value < 1e-6 and f.reliability_index > 0.5


# --------------------------------------------------------------------------- reliability, Brier


def test_reliability_and_brier_hand_computed():
    # 2 members, 4 points, threshold 1 (event: x >= 1)
    ens = np.array([[0.0, 1.0, 0.5, 2.0], [0.5, 0.0, 1.0, 1.0]])
    obs = np.array([0.0, 1.0, 0.9, 3.0])  # events 0, 1 (== threshold counts), 0, 1
    np.testing.assert_allclose(cal.exceedance_probability(ens, 1.0), [0, 0.5, 0.5, 1])
    r = cal.reliability_diagram(ens, obs, 1.0)
    np.testing.assert_allclose(r.bin_edges, [0, 0.25, 0.75, 1])
    np.testing.assert_array_equal(r.counts, [1, 2, 1])
    np.testing.assert_allclose(r.forecast, [0, 0.5, 1])
    np.testing.assert_allclose(r.observed, [0, 0.5, 1])
    assert r.base_rate == 0.5
    r = cal.reliability_diagram(ens, obs, 1.0, n_bins=4)  # equal-width bins; one is empty
    np.testing.assert_array_equal(r.counts, [1, 0, 2, 1])
    assert np.isnan(r.forecast[1]) and np.isnan(r.observed[1])
    # Brier: ((0-0)^2 + (0.5-1)^2 + (0.5-0)^2 + (1-1)^2) / 4
    assert cal.brier_score(ens, obs, 1.0) == pytest.approx(0.125)
    assert cal.brier_skill_score(ens, obs, 1.0) == pytest.approx(1 - 0.125 / 0.25)
    # a deterministic forecast is the one-member case
    assert cal.brier_score(ens[1:], obs, 1.0) == pytest.approx(0.5)  # p = 0, 0, 1, 1


def test_brier_mask():
    ens = np.array([[[5.0, 0.0]], [[5.0, 0.0]]])
    obs = np.array([[0.0, 0.0]])
    assert cal.brier_score(ens, obs, 1.0) == pytest.approx(0.5)
    assert cal.brier_score(ens, obs, 1.0, np.array([[False, True]])) == 0.0


def test_perfect_ensemble_is_reliable(perfect):
    ens, obs, scale = perfect
    thr = float(np.quantile(obs, 0.9))
    r = cal.reliability_diagram(ens, obs, thr)
    # calibration in the large: mean forecast probability == observed base rate
    mean_fc = np.nansum(r.counts * r.forecast) / r.counts.sum()
    assert mean_fc == pytest.approx(r.base_rate, abs=0.01)
    # With 10 members the curve is flattened towards the base rate (sampling noise in p);
    # a large oracle ensemble follows the diagonal.
    rng = np.random.default_rng(4)
    big = gamma_with_zeros(rng, (200, *scale.shape), scale)
    thr75 = float(np.quantile(obs, 0.75))  # an event with probabilities spread over 0..0.5
    r = cal.reliability_diagram(big, obs, thr75, n_bins=10)
    full = r.counts >= 500
    assert full.sum() >= 5
    np.testing.assert_allclose(r.observed[full], r.forecast[full], atol=0.05)
    # the finite-ensemble Brier penalty (p(1-p)/m) fades with m: more members, better score
    assert cal.brier_score(big, obs, thr) < cal.brier_score(ens, obs, thr)
    assert cal.brier_skill_score(big, obs, thr) > 0.0


def test_overconfident_ensemble_is_not_reliable(overconfident):
    ens, obs = overconfident
    thr = float(np.quantile(obs, 0.95))
    r = cal.reliability_diagram(ens, obs, thr)
    # nearly all forecasts are 0 or 1, and "certain" events happen far less than always
    assert r.counts[[0, -1]].sum() > 0.95 * obs.size
    assert r.observed[-1] < 0.7
