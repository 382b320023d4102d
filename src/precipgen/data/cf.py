"""CF-1.10 NetCDF out: what precipgen writes for other tools (xarray, CDO, Panoply, a map).

Every file carries ``Conventions``, ``title``, ``history``, ``source`` (the run ids), UDUNITS
units (``mm day-1``, ``mm h-1``), ``standard_name`` and ``cell_methods``; fields have dims
``(time, [realization,] y, x)`` (or ``sample`` with ``time`` as an auxiliary coordinate where
several tiles share a time), sea pixels are missing (``_FillValue``), 2-D ``lat``/``lon`` are
auxiliary coordinates where the input had them, with a ``crs`` grid mapping (WGS 84
latitude_longitude) that every field names in ``grid_mapping``, predictors are one variable per channel with
their own units, and everything is zlib-compressed.

Where the input has no calendar (the synthetic generator), ``time`` is the sample index counted
in steps from an arbitrary origin, and its ``comment`` says so.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from precipgen import __version__
from precipgen.data.transforms import udunits

CONVENTIONS = "CF-1.10"
PRECIP_STANDARD_NAME = "lwe_precipitation_rate"  # mm per time step = a rate averaged over it
INDEX_ORIGIN = "2000-01-01 00:00:00"
_INDEX_STEP = {"mm/day": "days", "mm/h": "hours", "mm/min": "minutes"}


def time_coordinate(times: np.ndarray | None, index: np.ndarray, units: str
                    ) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
    """Values, attributes and encoding of ``time`` for the samples ``index``.

    Real datetimes where the input had them; else the sample index in steps of the data's
    time step (days for mm/day), documented in the comment."""
    attrs: dict[str, Any] = {"standard_name": "time", "long_name": "time", "axis": "T"}
    if times is not None and not np.isnat(np.asarray(times, dtype="datetime64[s]")[index]).any():
        values = np.asarray(times, dtype="datetime64[s]")[index].astype("datetime64[ns]")
        return values, attrs, {"units": "seconds since 1970-01-01 00:00:00",
                               "calendar": "proleptic_gregorian", "dtype": "int64"}
    step = _INDEX_STEP.get(units, "days")
    attrs.update({"units": f"{step} since {INDEX_ORIGIN}", "calendar": "proleptic_gregorian",
                  "comment": f"the input has no calendar: time is the sample index (one {step[:-1]} "
                             f"per sample) counted from an arbitrary origin, {INDEX_ORIGIN}"})
    return np.asarray(index, dtype=np.float64), attrs, {}


def precip_attrs(units: str, long_name: str) -> dict[str, Any]:
    """A rate (mm day-1, mm h-1) averaged over the time step; where the step is not known
    ("mm per time step"), an amount in mm summed over it."""
    cf_units = udunits(units)
    if cf_units.startswith("mm ") and cf_units[3:] in ("day-1", "h-1", "min-1"):
        return {"standard_name": PRECIP_STANDARD_NAME, "long_name": long_name,
                "units": cf_units, "cell_methods": "time: mean"}
    return {"standard_name": "lwe_thickness_of_precipitation_amount", "long_name": long_name,
            "units": "mm", "cell_methods": "time: sum",
            "comment": f"precipitation per time step ({units}) of the input"}


def global_attrs(title: str, source: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    attrs: dict[str, Any] = {
        "Conventions": CONVENTIONS, "title": title, "institution": "precipgen users",
        "source": source, "history": f"{now} written by precipgen {__version__}",
        "references": "https://github.com/precipgen (seeds 000 and 001)",
    }
    for k, v in (extra or {}).items():  # netCDF attributes: numbers and strings, no None/bool
        if v is None:
            continue
        attrs[k] = int(v) if isinstance(v, bool) else v if isinstance(v, (int, float, str)) else str(v)
    return attrs


def grid_coords(hr_shape: Sequence[int], lr_shape: Sequence[int] | None,
                lat: np.ndarray | None, lon: np.ndarray | None) -> dict[str, Any]:
    """x/y (grid indices: the projection is not known, so no axis or projection standard
    name is claimed) and lat/lon auxiliary coordinates."""
    coords: dict[str, Any] = {
        "y": ("y", np.arange(hr_shape[0], dtype=np.int32),
              {"long_name": "high-resolution grid row index", "units": "1"}),
        "x": ("x", np.arange(hr_shape[1], dtype=np.int32),
              {"long_name": "high-resolution grid column index", "units": "1"}),
    }
    if lr_shape is not None:
        coords["y_lr"] = ("y_lr", np.arange(lr_shape[0], dtype=np.int32),
                          {"long_name": "low-resolution grid row index", "units": "1"})
        coords["x_lr"] = ("x_lr", np.arange(lr_shape[1], dtype=np.int32),
                          {"long_name": "low-resolution grid column index", "units": "1"})
    if lat is not None and lon is not None:
        coords["lat"] = (("y", "x"), np.asarray(lat, dtype=np.float32),
                         {"standard_name": "latitude", "units": "degrees_north"})
        coords["lon"] = (("y", "x"), np.asarray(lon, dtype=np.float32),
                         {"standard_name": "longitude", "units": "degrees_east"})
    return coords


CRS_ATTRS: dict[str, Any] = {  # lat/lon of the input are taken as WGS 84 geographic coordinates
    "grid_mapping_name": "latitude_longitude", "longitude_of_prime_meridian": 0.0,
    "semi_major_axis": 6378137.0, "inverse_flattening": 298.257223563,
    "crs_wkt": ('GEOGCRS["WGS 84",DATUM["World Geodetic System 1984",ELLIPSOID["WGS 84",'
                '6378137,298.257223563]],CS[ellipsoidal,2],AXIS["latitude",north],'
                'AXIS["longitude",east],ANGLEUNIT["degree",0.0174532925199433],ID["EPSG",4326]]'),
}


def georeference(has_latlon: bool) -> tuple[dict[str, str], dict[str, Any]]:
    """The attributes every field carries and the ``crs`` variable, where the input had
    lat/lon: ``coordinates = "lat lon"`` and ``grid_mapping = "crs"`` (CF 5.6); else none."""
    if not has_latlon:
        return {}, {}
    return ({"coordinates": "lat lon", "grid_mapping": "crs"},
            {"crs": ((), np.int32(0), dict(CRS_ATTRS))})


def predictor_variables(X: np.ndarray, names: Sequence[str], units: Sequence[str | None],
                        dim: str, taken: set[str]) -> dict[str, Any]:
    """One ``(dim, y_lr, x_lr)`` variable per predictor channel, named after it."""
    out: dict[str, Any] = {}
    for c, name in enumerate(names):
        var = name if name not in taken else f"X_{name}"
        attrs: dict[str, Any] = {"long_name": f"low-resolution predictor {name}"}
        if units[c]:
            attrs["units"] = str(units[c])
        else:
            attrs["comment"] = "units not given by the input"
        out[var] = ((dim, "y_lr", "x_lr"), np.asarray(X[:, c], dtype=np.float32), attrs)
    return out


def land_variable(land: np.ndarray) -> tuple[tuple[str, str], np.ndarray, dict[str, Any]]:
    return (("y", "x"), land.astype(np.int8),
            {"standard_name": "land_binary_mask", "long_name": "land (1) or sea (0)",
             "units": "1", "flag_values": np.array([0, 1], dtype=np.int8),
             "flag_meanings": "sea land"})


def masked(field: np.ndarray, land: np.ndarray) -> np.ndarray:
    """Sea pixels (no data) missing, as CF tools expect."""
    out = np.asarray(field, dtype=np.float32).copy()
    out[..., ~land] = np.nan
    return out


def write(path: Path, data_vars: Mapping[str, Any], coords: Mapping[str, Any],
          attrs: Mapping[str, Any], time_encoding: Mapping[str, Any] | None = None) -> None:
    """Write with zlib on every float field and ``_FillValue`` NaN; none on coordinates."""
    import xarray as xr

    ds = xr.Dataset(dict(data_vars), coords=dict(coords), attrs=dict(attrs))
    enc: dict[str, dict[str, Any]] = {}
    for name, var in ds.variables.items():
        if name in ds.coords and name not in ("lat", "lon"):
            enc[name] = {"_FillValue": None}
        elif np.issubdtype(var.dtype, np.floating):
            enc[name] = {"zlib": True, "complevel": 4, "_FillValue": np.float32(np.nan)}
        else:
            enc[name] = {"zlib": True, "complevel": 4}
    if "lat" in ds.coords:
        enc["lat"] = enc["lon"] = {"_FillValue": None}
    if time_encoding and "time" in ds.variables:
        enc["time"] = {**enc.get("time", {}), **time_encoding}
    tmp = path.with_name(f".{path.name}.tmp")
    ds.to_netcdf(tmp, encoding=enc, engine="netcdf4", format="NETCDF4")
    tmp.replace(path)


def sample_axis(times: np.ndarray | None, index: np.ndarray, units: str
                ) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The sample dimension's name, its coordinates and the time encoding: ``time`` as the
    dimension where the samples' times are distinct and increasing, else a ``sample`` dimension
    with ``time`` as an auxiliary coordinate (several tiles per time)."""
    values, attrs, encoding = time_coordinate(times, index, units)
    dim = sample_dims(times, index)
    coords: dict[str, Any] = {"time": (dim, values, attrs)}
    if dim == "sample":
        coords["sample"] = ("sample", np.asarray(index, dtype=np.int64),
                            {"long_name": "index of the sample in the prepared dataset",
                             "units": "1"})
    return dim, coords, encoding


def sample_dims(times: np.ndarray | None, index: np.ndarray) -> str:
    """``time`` when the selected samples have distinct, increasing times; else ``sample``
    (several tiles per time: time becomes an auxiliary coordinate)."""
    if times is None:
        return "time"
    t = np.asarray(times, dtype="datetime64[s]")[index]
    if np.isnat(t).any():
        return "time"
    return "time" if len(t) < 2 or bool((np.diff(t) > np.timedelta64(0, "s")).all()) else "sample"


@dataclass
class Grid:
    """What a CF file needs to know of the dataset its fields come from."""

    units: str  # canonical precipitation units (mm/day, mm/h)
    land: np.ndarray  # (H, W) bool
    channel_names: list[str]
    channel_units: list[str | None]
    times: np.ndarray | None = None  # (N,) datetime64 of the dataset's samples, if known
    lat: np.ndarray | None = None
    lon: np.ndarray | None = None

    @classmethod
    def of(cls, ds: Any) -> Grid:
        """From a :class:`~precipgen.data.store.PreparedDataset`."""
        names = ds.static_names
        return cls(units=ds.normalization.units, land=ds.land_mask,
                   channel_names=list(ds.channel_names), channel_units=list(ds.channel_units),
                   times=ds.samples.time,
                   lat=ds.static("lat") if "lat" in names else None,
                   lon=ds.static("lon") if "lon" in names else None)

    def coords(self, lr_shape: Sequence[int] | None = None) -> dict[str, Any]:
        return grid_coords(self.land.shape, lr_shape, self.lat, self.lon)


def write_samples(path: Path, grid: Grid, Y: np.ndarray, X: np.ndarray, day: np.ndarray,
                  k: np.ndarray, K: int, attrs: Mapping[str, Any]) -> None:
    """``samples.nc``: the accepted synthetic samples as ``precip(time, realization, y, x)``
    (rejected members missing), the source days' predictors, truth-free."""
    days = np.unique(np.asarray(day, dtype=np.int64))
    K = max(int(K), int(np.max(k)) + 1 if len(k) else 1)
    H, W = grid.land.shape
    field = np.full((K, len(days), H, W), np.nan, dtype=np.float32)  # CF: extra dims left of T
    pos = np.searchsorted(days, day)
    field[np.asarray(k, dtype=np.int64), pos] = masked(np.asarray(Y)[:, 0], grid.land)
    x_days = np.zeros((len(days), *np.asarray(X).shape[1:]), dtype=np.float32)
    x_days[pos] = np.asarray(X, dtype=np.float32)
    dim, coords, tenc = sample_axis(grid.times, days, grid.units)
    coords.update(grid.coords(x_days.shape[-2:]))
    coords["realization"] = ("realization", np.arange(K, dtype=np.int32),
                             {"standard_name": "realization", "units": "1",
                              "long_name": "sample number k of the source day"})
    coords["source_day"] = (dim, days, {"long_name": "index of the source (real) sample in the "
                                                      "prepared dataset", "units": "1"})
    aux, crs = georeference(grid.lat is not None)
    precip = {**precip_attrs(grid.units, "synthetic precipitation (cVAE sample)"),
              "comment": "missing members were rejected by the quality gate (manifest.csv)", **aux}
    data_vars: dict[str, Any] = {"precip": (("realization", dim, "y", "x"), field, precip),
                                 "land_sea_mask": land_variable(grid.land), **crs}
    data_vars.update(predictor_variables(x_days, grid.channel_names, grid.channel_units, dim,
                                         set(data_vars) | set(coords)))
    write(path, data_vars, coords,
          global_attrs("precipgen synthetic precipitation samples",
                       f"precipgen sample (cVAE, seed 001): sample run "
                       f"{attrs.get('sample_run_id') or 'n/a'}, model run "
                       f"{attrs.get('model_run_id') or 'n/a'}", attrs), tenc)


def write_ensemble(path: Path, grid: Grid, days: np.ndarray, truth: np.ndarray,
                   members: Mapping[str, np.ndarray], deterministic: np.ndarray | None,
                   source: str, attrs: Mapping[str, Any]) -> None:
    """``ensemble.nc`` of an evaluation: truth, the deterministic prediction and each model's
    members for every scored time; ``members[name]`` is ``(m, N, H, W)``."""
    dim, coords, tenc = sample_axis(grid.times, np.asarray(days, dtype=np.int64), grid.units)
    coords.update(grid.coords())
    m = max((len(v) for v in members.values()), default=1)
    coords["realization"] = ("realization", np.arange(m, dtype=np.int32),
                             {"standard_name": "realization", "units": "1"})
    aux, crs = georeference(grid.lat is not None)
    data_vars: dict[str, Any] = {
        "truth": ((dim, "y", "x"), masked(truth, grid.land),
                  {**precip_attrs(grid.units, "observed precipitation (truth)"), **aux}),
        "land_sea_mask": land_variable(grid.land), **crs,
    }
    if deterministic is not None:
        data_vars["deterministic"] = ((dim, "y", "x"), masked(deterministic, grid.land),
                                      {**precip_attrs(grid.units, "deterministic prediction"),
                                       **aux})
    for name, ens in members.items():
        arr = np.full((m, len(days), *grid.land.shape), np.nan, dtype=np.float32)
        arr[: len(ens)] = masked(np.asarray(ens), grid.land)
        data_vars[f"{name}_members"] = (("realization", dim, "y", "x"), arr,
                                        {**precip_attrs(grid.units, f"{name} ensemble members"),
                                         **aux})
    write(path, data_vars, coords,
          global_attrs("precipgen evaluation ensemble", source, attrs), tenc)
