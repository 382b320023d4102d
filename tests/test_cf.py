"""CF-1.10 NetCDF out (issue 15): samples.nc and ensemble.nc pass the IOOS compliance-checker
without a high-priority failure, carry units/time/realization, and read back through
``prepare --source netcdf``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import cf_failures

from precipgen.data import cf, sources

H, W = 12, 10
NAMES, UNITS = ["tas", "pr"], ["K", "mm day-1"]


def _grid(times: np.ndarray | None = None, units: str = "mm/day") -> cf.Grid:
    land = np.ones((H, W), dtype=bool)
    land[:, :2] = False
    lat = np.linspace(40, 41, H)[:, None] * np.ones((1, W))
    lon = np.linspace(-100, -99, W)[None, :] * np.ones((H, 1))
    return cf.Grid(units, land, NAMES, UNITS, times, lat, lon)


def _samples(tmp_path: Path, grid: cf.Grid) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    Y = rng.gamma(0.5, 4.0, (5, 1, H, W)).astype(np.float32)
    Y[:, 0][:, ~grid.land] = 0
    X = rng.normal(size=(5, 2, 3, 2)).astype(np.float32)
    day, k = np.array([3, 3, 7, 9, 9]), np.array([0, 1, 1, 0, 1])
    X[1], X[4] = X[0], X[3]  # one source day, one set of predictors
    path = tmp_path / "samples.nc"
    cf.write_samples(path, grid, Y, X, day, k, 2, {"mode": "posterior", "K": 2,
                                                    "sample_run_id": "r1", "temperature": 1.0})
    return path, Y, day, k


def test_samples_nc_is_cf_and_holds_the_samples(tmp_path: Path):
    grid = _grid()
    path, Y, day, k = _samples(tmp_path, grid)
    with xr.open_dataset(path) as nc:
        assert nc.attrs["Conventions"] == "CF-1.10" and "r1" in nc.attrs["source"]
        p = nc["precip"]
        assert p.dims == ("realization", "time", "y", "x")
        assert p.attrs["units"] == "mm day-1" and p.attrs["standard_name"] == "lwe_precipitation_rate"
        assert p.attrs["cell_methods"] == "time: mean" and {"lat", "lon"} <= set(p.coords)
        assert p.encoding.get("grid_mapping", p.attrs.get("grid_mapping")) == "crs"
        assert nc["crs"].attrs["grid_mapping_name"] == "latitude_longitude"
        assert nc.attrs["title"] and "written by precipgen" in nc.attrs["history"]
        assert nc["source_day"].values.tolist() == [3, 7, 9]
        assert "calendar" in nc["time"].attrs["comment"] or nc["time"].encoding.get("units")
        assert nc["tas"].attrs["units"] == "K" and nc["tas"].dims == ("time", "y_lr", "x_lr")
        for i, (d, kk) in enumerate(zip(day, k)):
            got = p.sel(realization=kk).values[[3, 7, 9].index(d)]
            assert np.allclose(got[grid.land], Y[i, 0][grid.land])
            assert np.isnan(got[~grid.land]).all()  # sea: missing, not 0
        assert np.isnan(p.sel(realization=0).values[1]).all()  # day 7, k 0: rejected
        assert nc["precip"].encoding["zlib"]
    assert cf_failures(path) == []


def test_samples_nc_reads_back_through_prepare_netcdf(tmp_path: Path):
    grid = _grid()
    path, Y, day, k = _samples(tmp_path, grid)
    raw = sources.load_netcdf([path], "precip", NAMES)
    assert raw.Y.shape == (5, 1, H, W) and raw.X.shape == (5, 2, 3, 2)
    assert raw.units == "mm/day" and raw.channel_units == UNITS
    # one sample per accepted (day, k), rejected members dropped; sea NaN -> derived sea mask
    order = sorted(zip(day, k))
    expect = np.stack([Y[[(d, kk) for d, kk in zip(day, k)].index(o), 0] for o in order])
    got = raw.Y[:, 0]
    assert np.allclose(got[:, grid.land], expect[:, grid.land], atol=1e-6)
    assert np.isnan(got[:, ~grid.land]).all()


def test_ensemble_nc_is_cf(tmp_path: Path):
    grid = _grid(units="mm/h")
    rng = np.random.default_rng(1)
    truth, det = rng.random((3, H, W)), rng.random((3, H, W))
    members = {"generative": rng.random((4, 3, H, W)), "cvae": rng.random((4, 3, H, W))}
    path = tmp_path / "ensemble.nc"
    cf.write_ensemble(path, grid, np.array([4, 5, 6]), truth, members, det,
                      "precipgen evaluate; run e1", {"num_samples": 4})
    with xr.open_dataset(path) as nc:
        assert nc["generative_members"].dims == ("realization", "time", "y", "x")
        assert nc["truth"].attrs["units"] == "mm h-1"
        for var in ("truth", "deterministic", "generative_members", "cvae_members"):
            assert nc[var].encoding.get("grid_mapping", nc[var].attrs.get("grid_mapping")) == "crs"
        assert np.allclose(nc["generative_members"].values[2, 1][grid.land],
                           members["generative"][2, 1][grid.land])
        assert "hours since" in nc["time"].attrs.get("units", "") or \
            "hour" in nc["time"].attrs.get("comment", "")
    assert cf_failures(path) == []


def test_tiles_sharing_a_time_get_a_sample_dim_with_time_auxiliary(tmp_path: Path):
    times = np.array(["2024-06-01T00", "2024-06-01T00", "2024-06-01T01"], dtype="datetime64[s]")
    grid = _grid(times, units="mm/h")
    rng = np.random.default_rng(2)
    path = tmp_path / "ensemble.nc"
    cf.write_ensemble(path, grid, np.arange(3), rng.random((3, H, W)),
                      {"generative": rng.random((2, 3, H, W))}, None, "t", {})
    with xr.open_dataset(path) as nc:
        assert nc["truth"].dims == ("sample", "y", "x") and nc["time"].dims == ("sample",)
        assert str(nc["time"].values[0]).startswith("2024-06-01T00")
    assert cf_failures(path) == []


@pytest.mark.parametrize("units", ["mm/day", "mm/h"])
def test_time_without_calendar_is_a_documented_index(units: str):
    values, attrs, enc = cf.time_coordinate(None, np.array([0, 5]), units)
    assert values.tolist() == [0.0, 5.0] and enc == {}
    assert attrs["units"].startswith("days since" if units == "mm/day" else "hours since")
    assert "no calendar" in attrs["comment"]


def test_without_lat_lon_no_grid_mapping_is_claimed(tmp_path: Path):
    grid = cf.Grid("mm/day", np.ones((H, W), dtype=bool), NAMES, UNITS)
    path = tmp_path / "ensemble.nc"
    rng = np.random.default_rng(3)
    cf.write_ensemble(path, grid, np.arange(2), rng.random((2, H, W)),
                      {"generative": rng.random((2, 2, H, W))}, None, "t", {})
    with xr.open_dataset(path) as nc:
        assert "crs" not in nc.variables and "grid_mapping" not in nc["truth"].attrs
        assert "grid_mapping" not in nc["truth"].encoding
    assert cf_failures(path) == []
