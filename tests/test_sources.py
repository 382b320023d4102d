"""Loaders: SRDRN arrays and NetCDF (the real MRMS file), synthetic when the generator exists."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from precipgen.data import sources
from precipgen.data.store import file_sha256
from precipgen.data.validate import InputError

SUBSET = 120


@pytest.fixture(scope="module")
def mrms(mrms_path: Path) -> xr.Dataset:
    with xr.open_dataset(mrms_path) as ds:
        return ds.isel(time=slice(0, SUBSET)).load()


def test_netcdf_mrms_layout_units_provenance(mrms_path):
    raw = sources.load_netcdf([mrms_path], "precip", ["predictors"], channel_dim="channel")
    with xr.open_dataset(mrms_path) as ds:
        pred = ds["predictors"].values  # (N, 13, 11, 3) channels last
        precip = ds["precip"].values
        names = [str(c) for c in ds["channel"].values]
    assert raw.X.shape == (len(precip), 3, 13, 11) and raw.X.dtype == np.float32
    assert raw.Y.shape == (len(precip), 1, 156, 132) and raw.Y.dtype == np.float32
    np.testing.assert_array_equal(raw.X, pred.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(raw.Y[:, 0], precip)
    assert raw.channel_names == names == ["mean_t", "mean_tminus1", "wetfrac_t"]
    assert raw.units == "mm/h"  # from the attribute "mm h-1"
    assert raw.provenance["units_attr"] == "mm h-1"
    (inp,) = raw.provenance["inputs"]
    assert inp["sha256"] == file_sha256(mrms_path) and inp["path"] == str(mrms_path.resolve())
    assert raw.lat is None  # the file's lat varies per tile: not a static
    assert "varies along" in raw.provenance["lat_lon"]
    assert raw.test_indices is None and raw.land_mask is None


def test_netcdf_units_flag_overrides_attribute(tmp_path, mrms):
    path = tmp_path / "a.nc"
    mrms[["precip", "predictors"]].isel(time=slice(0, 12)).to_netcdf(path)
    raw = sources.load_netcdf([path], "precip", ["predictors"], "channel", units="mm/hour")
    assert raw.units == "mm/h"  # the flag wins, in canonical spelling


def test_netcdf_several_files_3d_vars_and_channel_dim_first(tmp_path, mrms):
    """Channel dim anywhere (here first), plus 3D predictor vars; files concatenated in time."""
    x = mrms["predictors"].transpose("channel", "time", "y_lr", "x_lr")
    ds = xr.Dataset(
        {
            "pr_hr": mrms["precip"],
            "stack": x,
            "extra_a": mrms["predictors"].isel(channel=2, drop=True) * 2,
        }
    )
    ds = ds.drop_vars(["lat", "lon"])
    # Write the later part first: the loader orders by the time coordinate. Cut where the
    # valid time changes (tiles share a time; ties have no order to restore).
    t = ds["time"].values
    cut = int(np.flatnonzero(t[1:] != t[:-1])[0]) + 1
    ds.isel(time=slice(cut, None)).to_netcdf(tmp_path / "b.nc")
    ds.isel(time=slice(0, cut)).to_netcdf(tmp_path / "a.nc")
    raw = sources.load_netcdf([tmp_path / "b.nc", tmp_path / "a.nc"], "pr_hr",
                              ["stack", "extra_a"], channel_dim="channel")
    assert raw.X.shape == (SUBSET, 4, 13, 11)
    assert raw.channel_names == ["mean_t", "mean_tminus1", "wetfrac_t", "extra_a"]
    np.testing.assert_array_equal(raw.X[:, :3], mrms["predictors"].values.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(raw.X[:, 3], 2 * mrms["predictors"].values[..., 2])
    np.testing.assert_array_equal(raw.Y[:, 0], mrms["precip"].values)
    assert [i["role"] for i in raw.provenance["inputs"]] == ["netcdf", "netcdf"]


def test_netcdf_static_latlon_and_missing_attr(tmp_path):
    t, H, W = 15, 8, 6
    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {"rain": (("t", "lat", "lon"), rng.gamma(1, 1, (t, H, W)).astype(np.float32)),
         "z": (("t", "a", "b"), rng.normal(size=(t, 4, 3)).astype(np.float32))},
        coords={"lat": np.linspace(40, 41, H), "lon": np.linspace(-100, -99, W),
                "t": np.arange(t)},
    )
    ds.to_netcdf(tmp_path / "s.nc")
    raw = sources.load_netcdf([tmp_path / "s.nc"], "rain", ["z"], time_dim="t")
    assert raw.units == sources.DEFAULT_UNITS  # no units attribute
    assert raw.channel_names == ["z"]
    assert raw.lat.shape == (H, W) and raw.lat[0, 0] == pytest.approx(40) and raw.lat[-1, 0] == pytest.approx(41)
    assert raw.lon[0, -1] == pytest.approx(-99)
    with pytest.raises(InputError, match="has dims .*'z'.*no time dim 'time'|no time dim 'time'"):
        sources.load_netcdf([tmp_path / "s.nc"], "rain", ["z"])


def test_netcdf_4d_without_channel_dim_is_explained(mrms_path):
    with pytest.raises(InputError, match=r"'predictors' .* has dims .*pass --channel_dim"):
        sources.load_netcdf([mrms_path], "precip", ["predictors"])


def _srdrn_files(tmp: Path, mrms: xr.Dataset, n_test: int = 20) -> dict[str, Path]:
    pred, obs = mrms["predictors"].values, mrms["precip"].values
    files = {"predictors": pred[:-n_test], "obs": obs[:-n_test],
             "predictors_test": pred[-n_test:], "obs_test": obs[-n_test:]}
    out = {}
    for k, v in files.items():
        out[k] = tmp / f"{k}.npy"
        np.save(out[k], v)
    return out


def test_srdrn_concatenates_test_files(tmp_path, mrms):
    f = _srdrn_files(tmp_path, mrms)
    raw = sources.load_srdrn(**f, channel_names=["a", "b", "c"], units="mm/h")
    np.testing.assert_array_equal(raw.X, mrms["predictors"].values.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(raw.Y[:, 0], mrms["precip"].values)
    np.testing.assert_array_equal(raw.test_indices, np.arange(SUBSET - 20, SUBSET))
    assert raw.channel_names == ["a", "b", "c"] and raw.units == "mm/h"
    roles = {i["role"]: i for i in raw.provenance["inputs"]}
    assert set(roles) == {"predictors", "obs", "predictors_test", "obs_test"}
    assert roles["obs"]["sha256"] == file_sha256(f["obs"])


def test_srdrn_land_mask_and_default_names(tmp_path, mrms):
    f = _srdrn_files(tmp_path, mrms)
    mask = np.ones((156, 132), np.float32)
    mask[:10] = np.nan  # NaN in a mask file means sea
    np.save(tmp_path / "mask.npy", mask)
    raw = sources.load_srdrn(f["predictors"], f["obs"], land_mask=tmp_path / "mask.npy")
    assert raw.land_mask.dtype == bool and not raw.land_mask[:10].any() and raw.land_mask[10:].all()
    assert raw.channel_names == ["ch0", "ch1", "ch2"] and raw.units == "mm/day"


@pytest.mark.parametrize("layout", ["npz", "json", "npy"])
def test_srdrn_normalised_inputs_are_inverted(tmp_path, mrms, layout):
    """SRDRN normalisation (obs: log1p + z-score with one mean/std; predictors per channel)."""
    pred, obs = mrms["predictors"].values, mrms["precip"].values
    xm, xs = pred.mean(axis=(0, 1, 2)), pred.std(axis=(0, 1, 2))
    lo = np.log1p(obs)
    ym, ys = float(lo.mean()), float(lo.std())
    np.save(tmp_path / "x.npy", (pred - xm) / xs)
    np.save(tmp_path / "y.npy", (lo - ym) / ys)
    if layout == "npz":
        np.savez(tmp_path / "mean.npz", predictors=xm, obs=ym)
        np.savez(tmp_path / "std.npz", predictors=xs, obs=ys)
    elif layout == "json":
        (tmp_path / "mean.json").write_text(json.dumps({"X": xm.tolist(), "Y": ym}))
        (tmp_path / "std.json").write_text(json.dumps({"X": xs.tolist(), "Y": ys}))
    else:
        np.save(tmp_path / "mean.npy", np.append(xm, ym))
        np.save(tmp_path / "std.npy", np.append(xs, ys))
    raw = sources.load_srdrn(tmp_path / "x.npy", tmp_path / "y.npy",
                             mean=tmp_path / f"mean.{layout}", std=tmp_path / f"std.{layout}")
    np.testing.assert_allclose(raw.X, pred.transpose(0, 3, 1, 2), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(raw.Y[:, 0], obs, rtol=1e-3, atol=1e-3)
    assert (raw.Y >= 0).all()
    assert raw.provenance["srdrn_normalised"] is True


def test_srdrn_stats_bad_shape_and_pickles_are_refused(tmp_path, mrms):
    f = _srdrn_files(tmp_path, mrms)
    np.save(tmp_path / "mean.npy", np.zeros(7))
    np.save(tmp_path / "std.npy", np.ones(4))
    with pytest.raises(InputError, match=r"mean file .*mean\.npy has shape \(7,\); expected \(4,\)"):
        sources.load_srdrn(f["predictors"], f["obs"], mean=tmp_path / "mean.npy",
                           std=tmp_path / "std.npy")
    np.save(tmp_path / "pickled.npy", np.array({"obs": 1.0}, dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="Python objects.*numeric array"):
        sources.load_srdrn(f["predictors"], f["obs"], mean=tmp_path / "pickled.npy",
                           std=tmp_path / "std.npy")


def test_srdrn_half_given_pairs_are_errors(tmp_path, mrms):
    f = _srdrn_files(tmp_path, mrms)
    with pytest.raises(InputError, match="both --predictors_test and --obs_test"):
        sources.load_srdrn(f["predictors"], f["obs"], predictors_test=f["predictors_test"])
    with pytest.raises(InputError, match="both --mean and --std"):
        sources.load_srdrn(f["predictors"], f["obs"], mean=f["obs"])
    with pytest.raises(InputError, match=r"obs file .* has shape \(100, 156\); expected \(N, H, W\)"):
        np.save(tmp_path / "flat.npy", np.zeros((100, 156), np.float32))
        sources.load_srdrn(f["predictors"], tmp_path / "flat.npy")


@pytest.mark.skipif(importlib.util.find_spec("precipgen.data.synthetic") is None,
                    reason="synthetic generator not written yet")
def test_synthetic_loader_keeps_generator_statics_and_params():
    raw = sources.load_synthetic(days=20, height=24, width=24, factor=4, seed=3)
    assert raw.X.shape[:2] == (20, len(raw.channel_names)) and raw.X.shape[2:] == (6, 6)
    assert raw.Y.shape == (20, 1, 24, 24)
    assert {"land_sea_mask", "dist_to_coast_km", "elevation", "lat", "lon"} <= set(raw.static_names)
    assert raw.land_mask.any() and (~raw.land_mask).any()
    gen = raw.provenance["generator"]
    assert gen["seed"] == 3 and gen["params"]["seed"] == 3 and gen["params"]["days"] == 20
    assert len(raw.provenance["day_of_year"]) == 20
    json.dumps(raw.provenance)  # provenance must be JSON-serialisable


def test_netcdf_mrms_groups_by_tile_origin(mrms_path):
    """Auto-detected tile_row0,tile_col0: one group per tile origin, in file order."""
    raw = sources.load_netcdf([mrms_path], "precip", ["predictors"], channel_dim="channel")
    with xr.open_dataset(mrms_path) as ds:
        keys = list(zip(ds["tile_row0"].values.tolist(), ds["tile_col0"].values.tolist()))
        times = ds["time"].values
    assert raw.group_key == "tile_row0,tile_col0" and raw.group.shape == (len(keys),)
    assert raw.provenance["variables"]["group_coords"] == ["tile_row0", "tile_col0"]
    # equal group <=> equal tile origin
    by_group: dict[int, set] = {}
    for g, k in zip(raw.group.tolist(), keys):
        by_group.setdefault(g, set()).add(k)
    assert all(len(v) == 1 for v in by_group.values()) and len(by_group) == len(set(keys))
    np.testing.assert_array_equal(raw.time, times)
    off = sources.load_netcdf([mrms_path], "precip", ["predictors"], channel_dim="channel",
                              group_coords=[])
    assert off.group is None and off.group_key is None


def test_netcdf_group_coords_given_missing_or_not_per_sample(tmp_path):
    t = 6
    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {"rain": (("t", "y", "x"), rng.gamma(1, 1, (t, 4, 4)).astype(np.float32)),
         "z": (("t", "a", "b"), rng.normal(size=(t, 2, 2)).astype(np.float32)),
         "site": (("t",), np.array([5, 7, 5, 7, 5, 7])),  # a data variable, not a coordinate
         "flat": (("y",), np.arange(4))},
        coords={"t": np.arange(t)},
    )
    ds.to_netcdf(tmp_path / "g.nc")
    raw = sources.load_netcdf([tmp_path / "g.nc"], "rain", ["z"], time_dim="t",
                              group_coords=["site"])
    assert raw.group.tolist() == [0, 1, 0, 1, 0, 1] and raw.group_key == "site"
    assert sources.load_netcdf([tmp_path / "g.nc"], "rain", ["z"], time_dim="t").group is None
    with pytest.raises(InputError, match=r"g.nc has no group coordinate 'nope'.*--group_coords"):
        sources.load_netcdf([tmp_path / "g.nc"], "rain", ["z"], time_dim="t", group_coords=["nope"])
    with pytest.raises(InputError, match=r"group coordinate 'flat' .* has dims \('y',\)"):
        sources.load_netcdf([tmp_path / "g.nc"], "rain", ["z"], time_dim="t", group_coords=["flat"])
