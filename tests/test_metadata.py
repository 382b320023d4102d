"""Split, categories, thresholds, statics and normalization: training split only, physical units."""

from __future__ import annotations

import numpy as np
import pytest

from precipgen.config import DataConfig
from precipgen.data import metadata
from precipgen.data.sources import RawData
from precipgen.data.validate import InputError


def test_split_contiguous_blocks_in_time_order():
    s = metadata.make_split(100, 0.15, 0.15)
    assert s["train"] == list(range(0, 70))
    assert s["val"] == list(range(70, 85))
    assert s["test"] == list(range(85, 100))
    assert s["test_from"] == "last test_fraction of days" and s["n_days"] == 100


def test_split_uses_the_sources_test_days():
    s = metadata.make_split(100, 0.2, 0.15, test_indices=np.arange(60, 100))
    assert s["test"] == list(range(60, 100))
    assert s["val"] == list(range(48, 60))  # last 20% of the 60 non-test days
    assert s["train"] == list(range(48))
    assert s["test_from"] == "test files"


def test_split_never_cuts_through_a_shared_time_label():
    time = np.repeat(np.arange(25), 4)  # 4 tiles per valid time
    s = metadata.make_split(100, 0.15, 0.15, time=time)
    blocks = [set(time[s[k]]) for k in ("train", "val", "test")]
    assert not (blocks[0] & blocks[1]) and not (blocks[1] & blocks[2])
    assert s["train"][-1] + 1 == s["val"][0] and s["val"][-1] + 1 == s["test"][0]
    assert s["time_range"]["train"][0] == "0"


def test_split_too_few_days():
    with pytest.raises(InputError, match=r"too few days for the split: 12 days .* train 8 / val 2 / test 2"):
        metadata.make_split(12, 0.15, 0.15)


def test_categories_from_training_days_only():
    means = np.r_[np.linspace(0.0, 10.0, 80), np.full(20, 100.0)]  # val/test much wetter
    train = np.arange(80)
    cfg = DataConfig(heavy_percentile=90.0, dry_threshold_mm=0.5)
    c = metadata.categorize(means, train, cfg, "mm/day")
    assert c["heavy_threshold_mm"] == pytest.approx(np.percentile(means[:80], 90.0))
    assert c["heavy_threshold_mm"] < 10.0  # not pulled up by the wet val/test days
    assert set(range(80, 100)) <= set(c["heavy"])
    assert c["dry"] == [i for i in range(100) if means[i] < 0.5]
    allv = c["dry"] + c["moderate"] + c["heavy"]
    assert sorted(allv) == list(range(100))  # disjoint and complete
    assert c["counts"]["heavy"] == len(c["heavy"])
    assert c["dry_threshold_mm"] == 0.5 and c["heavy_percentile"] == 90.0
    assert len(c["land_mean_mm"]) == 100


def _raw(n: int = 60, seed: int = 0) -> tuple[RawData, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.gamma(0.4, 5.0, size=(n, 1, 8, 8)).astype(np.float32)
    y[y < 0.5] = 0.0
    land = np.ones((8, 8), bool)
    land[:, :2] = False
    y[:, 0][:, ~land] = 1000.0  # sea values must never enter any statistic
    y[int(n * 0.7):] *= 50.0  # val/test days far wetter: must not enter training statistics
    x = rng.normal(size=(n, 2, 2, 2)).astype(np.float32)
    x[:, 0] = np.abs(x[:, 0])
    return RawData(X=x, Y=y, channel_names=["pr", "tas"], source="test", units="mm/day"), land


def test_wet_thresholds_use_training_land_pixels_only():
    raw, land = _raw()
    train = np.arange(42)
    thr, wet = metadata.wet_thresholds(raw.Y, land, train, 0.1, "mm/day")
    vals = raw.Y[:42, 0][:, land]
    vals = vals[vals > 0.1]
    assert thr["P95"] == pytest.approx(np.percentile(vals, 95))
    assert thr["P99"] == pytest.approx(np.percentile(vals, 99))
    assert thr["P99"] < 1000.0  # no sea pixel
    assert wet.size == vals.size == thr["n_wet_pixels"]
    assert thr["units"] == "mm/day" and thr["wet_threshold_mm"] == 0.1


def test_wet_thresholds_all_dry_is_an_error():
    y = np.zeros((20, 1, 4, 4), np.float32)
    with pytest.raises(InputError, match=r"no wet land pixel \(> 0.1 mm/day\) in the training split \(days 0..13\)"):
        metadata.wet_thresholds(y, np.ones((4, 4), bool), np.arange(14), 0.1, "mm/day")


def test_build_fits_normalization_on_train_and_fills_files():
    raw, land = _raw()
    raw.Y[:, 0][:, ~land] = 0.0
    md = metadata.build(raw, land, factor=4, cfg=DataConfig())
    n = md.files["normalization.json"]
    train = md.files["split.json"]["train"]
    lt = np.log1p(raw.Y[train, 0][:, land].astype(np.float64))
    assert n["target_mean"] == pytest.approx(lt.mean(), rel=1e-6)
    assert n["target_std"] == pytest.approx(lt.std(), rel=1e-5)
    assert n["channel_log1p"] == [True, False]  # "pr" is precipitation-like
    assert n["units"] == "mm/day"
    assert md.files["H_W.json"] == {"N": 60, "C": 2, "H": 8, "W": 8, "h": 2, "w": 2, "factor": 4}
    assert md.summary["days_train"] + md.summary["days_val"] + md.summary["days_test"] == 60
    assert md.summary["max_precip"] == pytest.approx(raw.Y[:, 0][:, land].max())
    assert md.static_names == ["land_sea_mask", "dist_to_coast_km", "lat", "lon"]


def test_derived_land_mask_and_distance_to_coast():
    y = np.zeros((5, 1, 6, 10), np.float32)
    y[:, 0, :, :3] = np.nan  # sea: the three western columns, every day
    y[2, 0, 0, 5] = np.nan  # a one-day gap on land stays land (and then fails validation)
    land = metadata.derive_land_mask(y)
    assert not land[:, :3].any() and land[:, 3:].all()
    raw = RawData(X=np.zeros((5, 1, 3, 5), np.float32), Y=y, channel_names=["a"], source="t",
                  units="mm/day")
    st, names, notes = metadata.build_statics(raw, land, pixel_km=2.5)
    dist = st[names.index("dist_to_coast_km")]
    np.testing.assert_allclose(dist[0, 3:], 2.5 * np.arange(1, 8))  # km from the first sea pixel
    assert (dist[:, :3] == 0).all()
    assert "2.5 km pixels (given)" in notes["dist_to_coast_km"]
    lat = st[names.index("lat")]
    assert lat[4, 0] == 4 and "index grids" in notes["lat_lon"]


def test_statics_pixel_size_from_lat_lon_and_no_sea():
    H, W = 5, 4
    lat, lon = np.meshgrid(np.linspace(40, 40.04, H), np.linspace(-100, -99.97, W), indexing="ij")
    raw = RawData(X=np.zeros((1, 1, 1, 1), np.float32), Y=np.zeros((1, 1, H, W), np.float32),
                  channel_names=["a"], source="t", units="mm/h", lat=lat.astype(np.float32),
                  lon=lon.astype(np.float32))
    st, names, notes = metadata.build_statics(raw, np.ones((H, W), bool))
    assert "(from lat/lon)" in notes["dist_to_coast_km"] and "no sea" in notes["dist_to_coast_km"]
    dy, dx = 0.01 * 111.2, 0.01 * 111.2 * np.cos(np.deg2rad(40.02))
    assert st[names.index("dist_to_coast_km")][0, 0] == pytest.approx(np.hypot(H * dy, W * dx), rel=1e-3)
    np.testing.assert_allclose(st[names.index("lat")], lat, rtol=1e-6)


def test_samples_json_daily_source_has_one_group_and_no_times():
    raw, land = _raw()
    raw.Y[:, 0][:, ~land] = 0.0
    s = metadata.build(raw, land, factor=4, cfg=DataConfig()).files["samples.json"]
    assert s == {"time": None, "group": [0] * 60, "group_key": None, "step": "1D"}


def test_samples_json_times_groups_and_step():
    raw, _ = _raw(8)
    # two tiles per hour, one tile missing at 03:00 (a gap for it), and an unknown time
    raw.time = np.array(["2020-01-01T00", "2020-01-01T00", "2020-01-01T01", "2020-01-01T01",
                         "2020-01-01T02", "2020-01-01T02", "2020-01-01T04", "NaT"],
                        dtype="datetime64[ns]")
    raw.group, raw.group_key = np.array([0, 1, 0, 1, 0, 1, 0, 1]), "tile_row0,tile_col0"
    s = metadata.samples_json(raw)
    assert s["time"][:2] == ["2020-01-01T00:00:00"] * 2 and s["time"][-1] is None
    assert s["group"] == [0, 1, 0, 1, 0, 1, 0, 1] and s["group_key"] == "tile_row0,tile_col0"
    assert s["step"] == "1h"  # the most common interval within a tile, not the 2 h gap


def test_samples_json_non_date_times_fall_back_to_units():
    raw, _ = _raw(5)
    raw.time, raw.units = np.arange(5), "mm/h"
    assert metadata.samples_json(raw) | {"group": None} == {
        "time": None, "group": None, "group_key": None, "step": "1h"}
    raw.units = "mm per 3h"
    assert metadata.samples_json(raw)["step"] is None
