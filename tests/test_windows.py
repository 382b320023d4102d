"""3D-VAE windows: consecutive time steps of ONE location group (tile), never across a gap.

Daily gridded data (synthetic, SRDRN, older prepared dirs) keeps the windows it always had;
tiled hourly NetCDF (MRMS: several tiles per hour) gets same-tile, one-step windows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import run_cli
from helpers import make_prepared

from precipgen.config import DataConfig
from precipgen.data import metadata, sources
from precipgen.data.datasets import WindowDataset
from precipgen.data.store import AtomicDir, DatasetError, PreparedDataset, write_prepared
from precipgen.data.validate import check_arrays

HOUR = np.timedelta64(1, "h")


def _old_starts(idx: np.ndarray, window: int, stride: int) -> list[int]:
    """The windows as built before samples.json (consecutive ids), for the regression check."""
    consecutive = np.diff(idx) == 1
    return [s for s in range(0, len(idx) - window + 1, stride)
            if consecutive[s : s + window - 1].all()]


def _daily_samples(root: Path, n: int) -> None:
    """What ``prepare`` now writes for a daily source without times."""
    (root / "metadata" / "samples.json").write_text(
        json.dumps({"time": None, "group": [0] * n, "group_key": None, "step": "1D"}))


@pytest.mark.parametrize("with_samples", [False, True], ids=["old-dir", "samples.json"])
def test_daily_windows_unchanged(tmp_path, with_samples):
    root = make_prepared(tmp_path, days=64)
    if with_samples:
        _daily_samples(root, 64)
    ds = PreparedDataset.open(root)
    s = ds.samples
    assert s.time is None and (s.group == 0).all() and len(s.group) == 64
    cases = [(ds.split["train"], 8, 1), (ds.split["val"], 4, 4),
             (np.r_[0:10, 12:30], 5, 1)]  # a gap in the ids breaks windows, as before
    for idx, window, stride in cases:
        w = WindowDataset(ds, idx, window, stride=stride)
        old = _old_starts(idx, window, stride)
        np.testing.assert_array_equal(w.windows, idx[np.asarray(old)[:, None] + np.arange(window)])
        item = w[len(w) - 1]
        first = int(idx[old[-1]])
        assert int(item["day"]) == first
        assert item["x"].shape == (ds.n_channels, window, *ds.lr_shape)
        assert item["y"].shape == item["y_mm"].shape == (1, window, *ds.hr_shape)
        np.testing.assert_array_equal(
            item["y_mm"].numpy(), np.asarray(ds.Y_hr[first : first + window]).transpose(1, 0, 2, 3))


def test_old_dir_opens_and_bad_samples_json_is_named(tmp_path):
    root = make_prepared(tmp_path, days=40)
    assert not (root / "metadata" / "samples.json").exists()
    ds = PreparedDataset.open(root)  # prepared before samples.json: still fine
    assert ds.samples.step is None and ds.samples.group_key is None
    (root / "metadata" / "samples.json").write_text(json.dumps({"time": None, "group": [0] * 3}))
    with pytest.raises(DatasetError, match=r"samples.json: 'group' has 3 entries for 40 samples"):
        _ = PreparedDataset.open(root).samples


# ---------------------------------------------------------------- tiled hourly NetCDF
def _tiled_netcdf(path: Path, hours: int = 24, gap_hour: int = 5) -> None:
    """Two tiles per hour, interleaved in sample order (A0 B0 A1 B1 ...); tile A lacks
    ``gap_hour``. Rain encodes the tile and hour, so items can be checked by value."""
    rng = np.random.default_rng(0)
    t0 = np.datetime64("2016-09-20T00:00", "ns")
    keys = [(h, tile) for h in range(hours) for tile in (0, 1) if (h, tile) != (gap_hour, 0)]
    n = len(keys)
    rain = rng.gamma(0.5, 2.0, (n, 8, 8)).astype(np.float32)
    rain[:, 0, 0] = [100 * tile + h for h, tile in keys]
    ds = xr.Dataset(
        {"rain": (("time", "y", "x"), rain, {"units": "mm h-1"}),
         "pred": (("time", "y_lr", "x_lr"), rain.reshape(n, 2, 4, 2, 4).mean(axis=(2, 4)))},
        coords={"time": [t0 + h * HOUR for h, _ in keys],
                "tile_row0": ("time", [0] * n),
                "tile_col0": ("time", [156 * tile for _, tile in keys])},
    )
    ds.to_netcdf(path)


def _prepare_in_process(nc: Path, out: Path, **kw) -> PreparedDataset:
    """``prepare``'s data path (no MLflow): load, check, metadata, write."""
    raw = sources.load_netcdf([nc], "rain", ["pred"], **kw)
    land = metadata.derive_land_mask(raw.Y)
    factor = check_arrays(raw.X, raw.Y, land, raw.x_desc, raw.y_desc)
    md = metadata.build(raw, land, factor, DataConfig())
    with AtomicDir(out) as tmp:
        write_prepared(tmp, raw.X, raw.Y, md.statics, md.static_names, raw.channel_names,
                       {**md.files, "provenance.json": {"source": raw.source}})
    return PreparedDataset.open(out)


def test_tiled_windows_stay_on_one_tile_and_break_at_gaps(tmp_path):
    _tiled_netcdf(tmp_path / "tiles.nc")
    ds = _prepare_in_process(tmp_path / "tiles.nc", tmp_path / "prepared")
    s = ds.samples
    assert s.group_key == "tile_row0,tile_col0" and s.step == HOUR
    assert s.group[:4].tolist() == [0, 1, 0, 1]  # interleaved in sample order
    y00 = np.asarray(ds.Y_hr[:, 0, 0, 0])  # 100 * tile + hour
    for name, window, stride in (("train", 3, 1), ("train", 4, 2), ("val", 2, 1)):
        w = WindowDataset(ds, ds.split[name], window, stride=stride)
        assert len(w) and set(w.windows.ravel()) <= set(ds.split[name].tolist())
        assert (s.group[w.windows] == s.group[w.windows[:, :1]]).all()  # one tile per window
        assert (np.diff(s.time[w.windows], axis=1) == HOUR).all()  # strictly one step apart
        for i in range(len(w)):
            item = w[i]
            assert int(item["day"]) == w.windows[i, 0]
            np.testing.assert_array_equal(item["y_mm"][0, :, 0, 0].numpy(), y00[w.windows[i]])
    # tile A (group 0) has no 05:00: no window of A holds both 04:00 and 06:00
    w = WindowDataset(ds, ds.split["train"], 3)
    a_hours = [sorted(y00[win].astype(int).tolist()) for win in w.windows
               if s.group[win[0]] == 0]
    assert a_hours and all(not (h[0] <= 5 <= h[-1]) for h in a_hours)
    assert [0, 1, 2] in a_hours and [2, 3, 4] in a_hours and [6, 7, 8] in a_hours
    assert [3, 4, 6] not in a_hours
    # tile B (group 1) runs straight through 05:00
    assert [104, 105, 106] in [sorted(y00[win].astype(int).tolist()) for win in w.windows]


def test_tiled_windows_no_fit_is_explained(tmp_path):
    _tiled_netcdf(tmp_path / "tiles.nc")
    ds = _prepare_in_process(tmp_path / "tiles.nc", tmp_path / "prepared")
    n_val = len(ds.split["val"])
    with pytest.raises(ValueError, match=rf"prepared: no window of 9 consecutive samples "
                       rf"\(a step of .*\) in a split of {n_val} samples over 2 group"):
        WindowDataset(ds, ds.split["val"], 9)


def test_tiled_netcdf_without_grouping_never_mixes_tiles_in_time(tmp_path):
    """With grouping off, two tiles share each hour: same-hour neighbours are not one step
    apart, so windows still never hold two samples of one hour."""
    _tiled_netcdf(tmp_path / "tiles.nc")
    ds = _prepare_in_process(tmp_path / "tiles.nc", tmp_path / "prepared", group_coords=[])
    assert ds.samples.group_key is None and (ds.samples.group == 0).all()
    w = WindowDataset(ds, ds.split["train"], 2)
    assert (np.diff(ds.samples.time[w.windows], axis=1) == HOUR).all()


# ----------------------------------------------------------------------- real MRMS data
def test_mrms_windows_are_same_tile_one_hour_apart(sqlite_tracking, tmp_path, mrms_path):
    out = tmp_path / "prepared"
    run_cli("prepare", "--source", "netcdf", "--input", str(mrms_path), "--target", "precip",
            "--predictor_vars", "predictors", "--channel_dim", "channel",
            "--output", str(out), cwd=tmp_path)
    ds = PreparedDataset.open(out)
    raw = json.loads((out / "metadata" / "samples.json").read_text())
    assert raw["group_key"] == "tile_row0,tile_col0" and raw["step"] == "1h"
    assert len(raw["time"]) == len(raw["group"]) == 1141
    with xr.open_dataset(mrms_path) as f:
        tiles = np.stack([f["tile_row0"].values, f["tile_col0"].values], axis=1)
        times = f["time"].values
    s = ds.samples
    assert len(np.unique(s.group)) == len(np.unique(tiles, axis=0)) > 47  # more tiles than hours
    np.testing.assert_array_equal(s.time, times.astype("datetime64[s]"))
    for name in ("train", "val"):
        w = WindowDataset(ds, ds.split[name], 2)
        win = w.windows
        assert len(win) > 10
        assert (tiles[win[:, 0]] == tiles[win[:, 1]]).all()  # same tile
        assert (times[win[:, 1]] - times[win[:, 0]] == HOUR).all()  # one hour apart
    item = w[0]
    assert item["x"].shape == (3, 2, 13, 11) and item["y_mm"].shape == (1, 2, 156, 132)
    np.testing.assert_array_equal(item["y_mm"][0].numpy(), np.asarray(ds.Y_hr[win[0], 0]))


def test_stride_of_a_window_sees_each_day_once_and_zero_is_refused(tmp_path):
    """``window_stride = window_days`` (the standard profile): non-overlapping windows."""
    ds = PreparedDataset.open(make_prepared(tmp_path, days=64))
    idx = ds.split["train"]
    w = WindowDataset(ds, idx, 4, stride=4)
    days = w.windows.ravel()
    assert len(days) == len(set(days.tolist())) and len(w) == len(idx) // 4
    with pytest.raises(ValueError, match=r"window_stride \(0\) must be >= 1"):
        WindowDataset(ds, idx, 4, stride=0)
