"""The synthetic generator: structure, physics, statistics, and the exactness of its oracle."""

from __future__ import annotations

import json

import numpy as np
import pytest

from precipgen.data.synthetic import (
    CHANNEL_NAMES,
    STATIC_NAMES,
    SyntheticData,
    conditional_mean_field,
    from_params,
    generate,
    oracle_sample,
)

H = W = 24
F = 4
DAYS = 60


@pytest.fixture(scope="module")
def data() -> SyntheticData:
    return generate(DAYS, H, W, F, seed=0, show_progress=False)


@pytest.fixture(scope="module")
def year() -> SyntheticData:
    """A year on a slightly larger grid, for climatological statistics."""
    return generate(365, 48, 48, 4, seed=1, show_progress=False)


def _ch(d: SyntheticData, name: str) -> np.ndarray:
    return d.X_lr[:, d.channel_names.index(name)]


def _st(d: SyntheticData, name: str) -> np.ndarray:
    return d.statics[d.static_names.index(name)]


def _land_y(d: SyntheticData) -> np.ndarray:
    return d.Y_hr[:, 0][:, _st(d, "land_sea_mask") > 0.5]  # (N, n_land)


def _lag1(x: np.ndarray) -> float:
    return float(np.corrcoef(x[:-1], x[1:])[0, 1])


# ---- structure ----------------------------------------------------------------------------


def test_shapes_dtypes_and_names(data: SyntheticData) -> None:
    assert data.X_lr.shape == (DAYS, 6, H // F, W // F) and data.X_lr.dtype == np.float32
    assert data.Y_hr.shape == (DAYS, 1, H, W) and data.Y_hr.dtype == np.float32
    assert data.statics.shape == (len(data.static_names), H, W)
    assert data.statics.dtype == np.float32
    assert data.channel_names == ["tas", "pr", "huss", "sfcWind", "tasmax", "tasmin"]
    assert data.channel_names == CHANNEL_NAMES
    for name in ("land_sea_mask", "dist_to_coast_km", "elevation", "lat", "lon"):
        assert name in data.static_names
    assert data.static_names == STATIC_NAMES
    assert data.day_of_year.shape == (DAYS,)
    assert data.day_of_year.min() >= 1 and data.day_of_year.max() <= 365


def test_params_are_json_and_rebuild_the_data(data: SyntheticData) -> None:
    params = json.loads(json.dumps(data.params))  # a round trip through provenance.json
    assert params["seed"] == 0 and params["factor"] == F
    assert (params["height"], params["width"], params["days"]) == (H, W, DAYS)
    again = from_params(params)
    np.testing.assert_array_equal(again.X_lr, data.X_lr)
    np.testing.assert_array_equal(again.Y_hr, data.Y_hr)


def test_factor_must_divide_the_grid() -> None:
    with pytest.raises(ValueError, match=r"height=25.*width=24.*factor=4"):
        generate(5, 25, 24, 4, show_progress=False)
    with pytest.raises(ValueError, match=r"width=30.*factor=4"):
        generate(5, 24, 30, 4, show_progress=False)


def test_unknown_override_names_the_closest_parameter() -> None:
    with pytest.raises(ValueError, match=r"'amp_sigm'.*'amp_sigma'"):
        generate(5, H, W, F, show_progress=False, amp_sigm=0.3)


# ---- reproducibility ----------------------------------------------------------------------


def test_same_seed_same_arrays(data: SyntheticData) -> None:
    again = generate(DAYS, H, W, F, seed=0, show_progress=False)
    for name in ("X_lr", "Y_hr", "statics", "day_of_year"):
        np.testing.assert_array_equal(getattr(again, name), getattr(data, name))


def test_different_seeds_differ(data: SyntheticData) -> None:
    other = generate(DAYS, H, W, F, seed=1, show_progress=False)
    assert not np.array_equal(other.statics, data.statics)
    assert not np.array_equal(other.X_lr, data.X_lr)
    assert not np.array_equal(other.Y_hr, data.Y_hr)


def test_shorter_run_is_a_prefix(data: SyntheticData) -> None:
    short = generate(25, H, W, F, seed=0, show_progress=False)
    np.testing.assert_array_equal(short.X_lr, data.X_lr[:25])
    np.testing.assert_array_equal(short.Y_hr, data.Y_hr[:25])


# ---- statics ------------------------------------------------------------------------------


def test_statics_have_coast_ridge_and_consistent_fields(year: SyntheticData) -> None:
    land = _st(year, "land_sea_mask") > 0.5
    elev, dist = _st(year, "elevation"), _st(year, "dist_to_coast_km")
    assert 0.3 < land.mean() < 0.95  # both sea and land
    assert not land[:, 0].any() and land[:, -1].all()  # sea to the west
    assert len(set(np.argmax(land, axis=1))) > 1  # the coast is not a straight line
    assert np.all(elev[~land] == 0) and elev.max() > 1500  # a mountain range
    assert np.all(dist >= 0) and dist[land].max() > 40
    lat, lon = _st(year, "lat"), _st(year, "lon")
    assert np.all(np.diff(lat, axis=0) < 0) and np.all(np.diff(lon, axis=1) > 0)


# ---- predictors ---------------------------------------------------------------------------


def test_predictors_are_physically_consistent(year: SyntheticData) -> None:
    tas, pr, huss = _ch(year, "tas"), _ch(year, "pr"), _ch(year, "huss")
    assert np.all(_ch(year, "tasmax") > tas) and np.all(_ch(year, "tasmin") < tas)
    assert np.all(pr >= 0) and np.all(_ch(year, "sfcWind") > 0)
    assert np.all((huss > 0) & (huss < 0.04))
    assert 250 < tas.mean() < 300
    # humidity follows temperature (Clausius-Clapeyron): daily domain means correlate
    assert np.corrcoef(tas.mean((1, 2)), huss.mean((1, 2)))[0, 1] > 0.5


def test_seasonal_cycle_in_tas(year: SyntheticData) -> None:
    tas = _ch(year, "tas").mean((1, 2))
    doy = year.day_of_year
    summer, winter = tas[(doy > 170) & (doy < 230)].mean(), tas[(doy < 40) | (doy > 350)].mean()
    assert summer - winter > 8.0


def test_ar1_persistence_and_its_absence_without_memory() -> None:
    persistent = generate(200, 8, 8, 4, seed=3, show_progress=False)
    memoryless = generate(
        200, 8, 8, 4, seed=3, show_progress=False,
        phi_temp=0.0, phi_moist=0.0, phi_storm=0.0, phi_wind=0.0, phi_dir=0.0,
    )
    assert _lag1(_ch(persistent, "sfcWind").mean((1, 2))) > 0.3
    assert _lag1(_ch(memoryless, "sfcWind").mean((1, 2))) < 0.25


# ---- precipitation ------------------------------------------------------------------------


def test_precip_non_negative_and_finite(data: SyntheticData) -> None:
    assert np.all(np.isfinite(data.Y_hr)) and np.all(data.Y_hr >= 0)
    assert data.Y_hr.max() > 1.0  # it does rain


def test_intermittency_depends_on_large_scale_pr(year: SyntheticData) -> None:
    y = _land_y(year)
    wet = y > 0.1
    assert 0.05 < wet.mean() < 0.6
    # dry patches inside rainy days: spatial intermittency, not only dry days
    frac = wet.mean(1)
    assert np.any((frac > 0.2) & (frac < 0.8))
    assert np.corrcoef(_ch(year, "pr").mean((1, 2)), frac)[0, 1] > 0.5


def test_realistic_magnitudes_and_heavy_tail(year: SyntheticData) -> None:
    y = _land_y(year)
    wet = y[y > 0.1]
    p95, p99 = np.percentile(wet, [95, 99])
    assert 2.0 < wet.mean() < 15.0  # wet-pixel mean of a few mm/day
    assert 10.0 < p99 < 120.0
    assert p99 > 1.6 * p95
    assert y.max() < 1000.0


def test_heavy_days_are_rare(year: SyntheticData) -> None:
    land_mean = _land_y(year).mean(1)
    top = land_mean >= np.percentile(land_mean, 95)
    assert land_mean[top].min() > 3 * max(np.median(land_mean), 0.1)
    # heavy means rare: few days exceed half the top-5% threshold's mean
    assert (land_mean > 0.5 * land_mean[top].mean()).mean() < 0.15


def test_orographic_enhancement(year: SyntheticData) -> None:
    land = _st(year, "land_sea_mask") > 0.5
    elev = _st(year, "elevation")
    clim = year.Y_hr[:, 0].mean(0)
    high = land & (elev > np.percentile(elev[land], 75))
    low = land & (elev < np.percentile(elev[land], 25))
    assert clim[high].mean() > 1.15 * clim[low].mean()
    assert np.corrcoef(clim[land], elev[land])[0, 1] > 0.15
    # the effect comes from the orographic terms: switch them off and it disappears
    flat = generate(
        365, 48, 48, 4, seed=1, show_progress=False, oro_gain=0.0, elev_gain=0.0,
        pr_elev_gain=0.0,
    )
    clim_flat = conditional_mean_field(flat.params, flat.X_lr, flat.statics)[:, 0].mean(0)
    ratio_flat = clim_flat[high].mean() / clim_flat[low].mean()
    assert ratio_flat + 0.2 < clim[high].mean() / clim[low].mean()


# ---- the oracle ---------------------------------------------------------------------------


def test_oracle_mean_converges_to_conditional_mean(data: SyntheticData) -> None:
    days = slice(0, 20)
    x = data.X_lr[days]
    g = conditional_mean_field(data.params, x, data.statics)
    assert g.shape == (20, 1, H, W) and np.all(g >= 0)
    samples = oracle_sample(data.params, x, data.statics, n_samples=300, seed=11)
    assert samples.shape == (300, 20, 1, H, W) and samples.dtype == np.float32
    mean = samples.mean(0)
    # domain totals per day: within a few Monte Carlo standard errors, and unbiased when pooled
    totals = samples.sum((2, 3, 4))
    se = totals.std(0) / np.sqrt(len(totals))
    tot_g = g.sum((1, 2, 3))
    rainy = tot_g > 1.0
    assert rainy.sum() >= 3
    z = (totals.mean(0) - tot_g)[rainy] / se[rainy]
    assert np.all(np.abs(z) < 4.5), z
    assert abs(totals.mean(0).sum() / tot_g.sum() - 1) < 0.03
    assert np.all(mean[g == 0] == 0)  # no rain without a mean field
    # pixelwise, with a looser tolerance
    assert np.abs(mean - g)[g > 1].mean() / g[g > 1].mean() < 0.2


def test_oracle_draws_differ_and_are_reproducible(data: SyntheticData) -> None:
    a = oracle_sample(data.params, data.X_lr[:10], data.statics, 3, seed=5)
    b = oracle_sample(data.params, data.X_lr[:10], data.statics, 3, seed=5)
    c = oracle_sample(data.params, data.X_lr[:10], data.statics, 3, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    rainy = a[0].sum((1, 2, 3)) > 0
    assert rainy.any()
    assert not np.array_equal(a[0][rainy], a[1][rainy])  # members of one day differ
    # independent of the stored draw, even with the generator's own seed
    own = oracle_sample(data.params, data.X_lr[:10], data.statics, 1, seed=data.params["seed"])
    assert not np.array_equal(own[0], data.Y_hr[:10])


def test_oracle_day_ids_make_draws_batch_independent(data: SyntheticData) -> None:
    full = oracle_sample(data.params, data.X_lr[:12], data.statics, 2, seed=4)
    part = oracle_sample(data.params, data.X_lr[7:9], data.statics, 2, seed=4, day_ids=np.arange(7, 9))
    np.testing.assert_array_equal(part, full[:, 7:9])
    with pytest.raises(ValueError, match="day_ids"):
        oracle_sample(data.params, data.X_lr[:3], data.statics, 1, seed=0, day_ids=np.arange(2))


def test_oracle_rejects_mismatched_inputs(data: SyntheticData) -> None:
    with pytest.raises(ValueError, match=r"X_lr has shape \(4, 5, 6, 6\)"):
        oracle_sample(data.params, data.X_lr[:4, :5], data.statics, 1, seed=0)
    with pytest.raises(ValueError, match=r"statics grid 20x20"):
        conditional_mean_field(data.params, data.X_lr[:4], data.statics[:, :20, :20])


def test_oracle_matches_the_generators_distribution(year: SyntheticData) -> None:
    """For the same X, the stored Y and the oracle draws are statistically the same."""
    land = _st(year, "land_sea_mask") > 0.5
    draws = oracle_sample(year.params, year.X_lr, year.statics, n_samples=4, seed=21)
    y_gen = year.Y_hr[:, 0][:, land]
    y_orc = draws[:, :, 0][:, :, land]
    # tolerances are ~4 standard deviations of one stored draw's statistics
    assert abs((y_gen > 0.1).mean() - (y_orc > 0.1).mean()) < 0.02
    assert abs(y_gen.mean() / y_orc.mean() - 1) < 0.08
    wet_gen, wet_orc = y_gen[y_gen > 0.1], y_orc[y_orc > 0.1]
    assert abs(np.percentile(wet_gen, 95) / np.percentile(wet_orc, 95) - 1) < 0.12
    assert abs(np.log(wet_gen).std() / np.log(wet_orc).std() - 1) < 0.05  # intensity spread
    # day by day, the stored land means track the oracle's: they share X and nothing else
    day_gen, day_orc = y_gen.mean(1), y_orc.mean((0, 2))
    assert np.corrcoef(day_gen, day_orc)[0, 1] > 0.9
    # ...which an oracle fed the wrong days does not
    wrong = oracle_sample(year.params, np.roll(year.X_lr, 90, axis=0), year.statics, 1, seed=21)
    assert np.corrcoef(day_gen, wrong[0, :, 0][:, land].mean(1))[0, 1] < 0.5
