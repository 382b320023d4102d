"""Loaders for each ``prepare`` source, all returning one in-memory :class:`RawData`.

- ``synthetic``: :func:`precipgen.data.synthetic.generate` (the embedded default data).
- ``srdrn``: SRDRN-layout ``.npy`` arrays, predictors ``(N, h, w, C)`` channels last and obs
  ``(N, H, W)`` with NaN where there is no data (sea); optional test files, land mask and the
  mean/std of SRDRN's normalisation (inverted here, so everything downstream is physical).
- ``netcdf``: one or more NetCDF files through xarray; the user names the variables and dims.

Loaders check what only they can see (files, layouts, per-file shapes); the checks on the
assembled arrays live in :func:`precipgen.data.validate.check_arrays`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from precipgen.data.store import file_sha256
from precipgen.data.transforms import SrdrnNormalization, precip_units
from precipgen.data.validate import (
    InputError,
    check_ndim,
    check_same_n,
    check_same_shape,
    require_file,
)

DEFAULT_UNITS = "mm/day"
KM_PER_DEG_LAT = 111.2


@dataclass
class RawData:
    """A source's data in physical units, before splitting and metadata."""

    X: np.ndarray  # (N, C, h, w) float32 predictors
    Y: np.ndarray  # (N, 1, H, W) float32 precipitation, NaN where there is no data
    channel_names: list[str]
    source: str
    units: str  # of Y (mm per time step: "mm/day", "mm/h")
    x_desc: str = "predictors"  # how errors name the predictor input (file / variable)
    y_desc: str = "target"
    land_mask: np.ndarray | None = None  # (H, W) bool; None: derived from Y's NaN pattern
    test_indices: np.ndarray | None = None  # days that came from the source's test files
    statics: np.ndarray | None = None  # (K, H, W) when the source knows them (synthetic)
    static_names: list[str] = field(default_factory=list)
    lat: np.ndarray | None = None  # (H, W) degrees, when known
    lon: np.ndarray | None = None
    time: np.ndarray | None = None  # (N,) labels; equal labels never straddle a split
    # (N,) location group per sample (e.g. one id per radar tile); None: one group. Time
    # windows (3D VAE) never mix groups, so several tiles at one hour stay apart.
    group: np.ndarray | None = None
    group_key: str | None = None  # the coordinates that define ``group``, "a,b"
    provenance: dict[str, Any] = field(default_factory=dict)
    channel_units: list[str | None] | None = None  # UDUNITS per channel; None where unknown

    @property
    def n_days(self) -> int:
        return int(self.Y.shape[0])


def _inputs(files: Sequence[tuple[str, Path]]) -> list[dict[str, str]]:
    """Provenance entries: role, absolute path and sha256 of each input file."""
    return [
        {"role": role, "path": str(p.resolve()), "sha256": file_sha256(p)}
        for role, p in tqdm(files, desc="hashing inputs", unit="file", leave=False)
    ]


# ------------------------------------------------------------------------------- synthetic
def load_synthetic(days: int, height: int, width: int, factor: int, seed: int) -> RawData:
    """The embedded synthetic generator; its parameters and seed go into provenance."""
    from precipgen.data import synthetic

    g = synthetic.generate(
        days=days, height=height, width=width, factor=factor, seed=seed, show_progress=True
    )
    names = list(g.static_names)
    statics = np.asarray(g.statics, dtype=np.float32)
    if "land_sea_mask" not in names:
        raise InputError(f"synthetic generator returned statics {names} without land_sea_mask")
    land = statics[names.index("land_sea_mask")] > 0.5
    params = dict(g.params)
    units = str(params.get("units", DEFAULT_UNITS))
    return RawData(
        X=np.asarray(g.X_lr, dtype=np.float32),
        Y=np.asarray(g.Y_hr, dtype=np.float32),
        channel_names=list(g.channel_names),
        channel_units=[synthetic.CHANNEL_UNITS.get(n) for n in g.channel_names],
        source="synthetic",
        units=units,
        x_desc="synthetic predictors X_lr",
        y_desc="synthetic target Y_hr",
        land_mask=land,
        statics=statics,
        static_names=names,
        lat=statics[names.index("lat")] if "lat" in names else None,
        lon=statics[names.index("lon")] if "lon" in names else None,
        provenance={
            "inputs": [],
            "generator": {
                "module": "precipgen.data.synthetic",
                "params": params,
                "seed": seed,
                "call": {"days": days, "height": height, "width": width, "factor": factor,
                         "seed": seed},
            },
            "day_of_year": np.asarray(g.day_of_year).astype(int).tolist(),
        },
    )


# ---------------------------------------------------------------------------------- srdrn
_NPY_MAGIC, _NPZ_MAGIC = b"\x93NUMPY", b"PK\x03\x04"


def read_numpy(p: Path, role: str) -> Any:
    """``np.load`` of a user's file with errors that say what is wrong with it (empty, not a
    NumPy file, pickled objects, truncated) instead of numpy's tracebacks and advice."""
    size = p.stat().st_size
    if size == 0:
        raise InputError(f"{role} file {p} is empty (0 bytes); expected a NumPy .npy/.npz array")
    with open(p, "rb") as f:
        head = f.read(6)
    if not head.startswith((_NPY_MAGIC, _NPZ_MAGIC)):
        raise InputError(f"{role} file {p} is not a NumPy .npy/.npz file (it starts with "
                         f"{head!r}, not the .npy header); save arrays with numpy.save")
    try:
        return np.load(p, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):
            raise InputError(f"{role} file {p} holds Python objects (a pickled/object array), "
                             "which precipgen does not load: save a numeric array") from e
        raise InputError(f"{role} file {p} is not a readable NumPy array: {e}") from e
    except (OSError, EOFError) as e:
        raise InputError(f"{role} file {p} is truncated or corrupt ({size} bytes): {e}") from e


def _load_array(path: str | Path, role: str) -> tuple[np.ndarray, Path]:
    """A numeric ``.npy`` (or an ``.npz`` holding exactly one array); pickles are refused."""
    p = require_file(path, role)
    arr = read_numpy(p, role)
    if isinstance(arr, np.lib.npyio.NpzFile):
        with arr:
            keys = list(arr.keys())
            if len(keys) != 1:
                raise InputError(f"{role} file {p} holds arrays {keys}; expected exactly one")
            arr = arr[keys[0]]
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
        raise InputError(f"{role} file {p} has non-numeric dtype {arr.dtype}")
    return arr, p


_PRED_KEYS = ("predictors", "X", "x", "X_lr")
_OBS_KEYS = ("obs", "Y", "y", "Y_hr", "target")


def _pick(d: dict[str, Any], keys: Sequence[str], p: Path, role: str) -> np.ndarray:
    for k in keys:
        if k in d:
            return np.asarray(d[k], dtype=np.float32)
    raise InputError(f"{role} file {p} has keys {sorted(d)}; expected one of {list(keys)}")


def read_norm_stats(path: str | Path, role: str, n_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """SRDRN normalisation statistics -> ``(predictor stat, obs stat)``.

    Accepted layouts (our assumption; SRDRN's own files are plain arrays):
    - ``.json`` or ``.npz`` with keys ``predictors`` (scalar, ``(C,)`` or ``(h, w, C)``) and
      ``obs`` (scalar or ``(H, W)``); aliases X/x/X_lr and Y/y/Y_hr/target;
    - ``.npy`` of shape ``(C + 1,)``: one value per predictor channel, then the obs value last.
    Pickled ``.npy`` dicts are refused (loading them would run code); re-save as .npz or .json.
    """
    p = require_file(path, role)
    if p.suffix == ".json":
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{role} file {p} is not valid JSON: {e}") from e
        if not isinstance(d, dict):
            raise InputError(f"{role} file {p} must hold an object with predictors/obs keys")
        return _pick(d, _PRED_KEYS, p, role), _pick(d, _OBS_KEYS, p, role)
    loaded = read_numpy(p, role)
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            d = {k: loaded[k] for k in loaded.keys()}
        return _pick(d, _PRED_KEYS, p, role), _pick(d, _OBS_KEYS, p, role)
    arr = np.asarray(loaded, dtype=np.float32).ravel()
    if arr.shape != (n_channels + 1,):
        raise InputError(
            f"{role} file {p} has shape {loaded.shape}; expected ({n_channels + 1},) = one value "
            f"per predictor channel (C={n_channels}) then the obs value, or an .npz/.json with "
            "keys 'predictors' and 'obs'"
        )
    return arr[:n_channels], arr[n_channels]


def _broadcast(stat: np.ndarray, shape: tuple[int, ...], what: str) -> None:
    try:
        np.broadcast_shapes(stat.shape, shape)
    except ValueError as e:
        raise InputError(f"shapes disagree: {what} {stat.shape} vs data {shape}") from e


def _denormalise_srdrn(
    X: np.ndarray, Y: np.ndarray, mean_path: Path, std_path: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Invert SRDRN's normalisation: predictors z-score per channel; obs log1p then z-score."""
    c = X.shape[-1]
    xm, ym = read_norm_stats(mean_path, "mean", c)
    xs, ys = read_norm_stats(std_path, "std", c)
    _broadcast(xm, X.shape[1:], f"predictor means in {mean_path}")
    _broadcast(xs, X.shape[1:], f"predictor stds in {std_path}")
    _broadcast(ym, Y.shape[1:], f"obs mean in {mean_path}")
    _broadcast(ys, Y.shape[1:], f"obs std in {std_path}")
    norm = SrdrnNormalization(xm, xs, ym, ys)
    return (norm.predictors_inverse(X).astype(np.float32),
            norm.obs_inverse(Y).astype(np.float32))


def _predictors_nhwc(arr: np.ndarray, p: Path, role: str) -> np.ndarray:
    check_ndim(arr.shape, (3, 4), f"{role} file {p}", "(N, h, w, C) channels last or (N, h, w)")
    return arr[..., None] if arr.ndim == 3 else arr


def _obs_nhw(arr: np.ndarray, p: Path, role: str) -> np.ndarray:
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    check_ndim(arr.shape, (3,), f"{role} file {p}", "(N, H, W)")
    return arr


def load_srdrn(
    predictors: str | Path,
    obs: str | Path,
    predictors_test: str | Path | None = None,
    obs_test: str | Path | None = None,
    land_mask: str | Path | None = None,
    mean: str | Path | None = None,
    std: str | Path | None = None,
    channel_names: Sequence[str] | None = None,
    units: str | None = None,
) -> RawData:
    """SRDRN arrays; train and test files are concatenated and the test days recorded."""
    if (predictors_test is None) != (obs_test is None):
        raise InputError("give both --predictors_test and --obs_test, or neither")
    if (mean is None) != (std is None):
        raise InputError("give both --mean and --std (SRDRN normalisation), or neither")
    canonical, factor = _units(units or DEFAULT_UNITS, "--units")
    xp, xpath = _load_array(predictors, "predictors")
    yp, ypath = _load_array(obs, "obs")
    X, Y = _predictors_nhwc(xp, xpath, "predictors"), _obs_nhw(yp, ypath, "obs")
    check_same_n(len(X), len(Y), f"predictors {xpath}", f"obs {ypath}")
    files = [("predictors", xpath), ("obs", ypath)]
    test_idx = None
    if predictors_test is not None:
        xt, xtpath = _load_array(predictors_test, "predictors_test")
        yt, ytpath = _load_array(obs_test, "obs_test")
        Xt, Yt = _predictors_nhwc(xt, xtpath, "predictors_test"), _obs_nhw(yt, ytpath, "obs_test")
        check_same_shape(Xt.shape[1:], X.shape[1:], f"predictors_test {xtpath} (h, w, C)",
                         f"predictors {xpath} (h, w, C)")
        check_same_shape(Yt.shape[1:], Y.shape[1:], f"obs_test {ytpath} (H, W)",
                         f"obs {ypath} (H, W)")
        check_same_n(len(Xt), len(Yt), f"predictors_test {xtpath}", f"obs_test {ytpath}")
        test_idx = np.arange(len(X), len(X) + len(Xt))
        X, Y = np.concatenate([X, Xt]), np.concatenate([Y, Yt])
        files += [("predictors_test", xtpath), ("obs_test", ytpath)]
    X, Y = X.astype(np.float32, copy=False), Y.astype(np.float32, copy=False)
    if mean is not None and std is not None:
        mpath, spath = require_file(mean, "mean"), require_file(std, "std")
        X, Y = _denormalise_srdrn(X, Y, mpath, spath)
        files += [("mean", mpath), ("std", spath)]
    mask = None
    if land_mask is not None:
        m, mpath = _load_array(land_mask, "land_mask")
        check_same_shape(m.shape, Y.shape[1:], f"land_mask {mpath} (H, W)", f"obs {ypath} (H, W)")
        mask = np.nan_to_num(m.astype(np.float32), nan=0.0) > 0.5
        files.append(("land_mask", mpath))
    c = X.shape[-1]
    names = list(channel_names) if channel_names else [f"ch{i}" for i in range(c)]
    if len(names) != c:
        raise InputError(f"--channel_names gives {len(names)} names but predictors {xpath} "
                         f"have C={c} channels")
    return RawData(
        X=np.ascontiguousarray(X.transpose(0, 3, 1, 2)),
        Y=Y[:, None] * np.float32(factor) if factor != 1 else Y[:, None],
        channel_names=names,
        source="srdrn",
        units=canonical,
        x_desc=f"predictors {xpath}",
        y_desc=f"obs {ypath}",
        land_mask=mask,
        test_indices=test_idx,
        provenance={"inputs": _inputs(files), "srdrn_normalised": mean is not None},
    )


def _units(text: str, where: str) -> tuple[str, float]:
    try:
        return precip_units(text)
    except ValueError as e:
        raise InputError(f"{where}: {e}; pass --units mm/day or --units mm/h if you know them") from e


# --------------------------------------------------------------------------------- netcdf


AUTO_GROUP_COORDS = ("tile_row0", "tile_col0")  # MRMS-style tiles: the tile origin


def _group_coords(path: Path, group_coords: Sequence[str] | None) -> list[str]:
    """The per-sample location coordinates to group by: the given ones, or the tile origin
    when the (first) file has both."""
    if group_coords is not None:
        return list(group_coords)
    import xarray as xr

    try:
        with xr.open_dataset(path) as ds:
            return list(AUTO_GROUP_COORDS) if all(c in ds.variables for c in AUTO_GROUP_COORDS) else []
    except Exception as e:  # xarray raises many types for unreadable files
        raise InputError(f"cannot open NetCDF file {path}: {e}") from e


def _open_netcdf(paths: Sequence[Path], names: Sequence[str], time_dim: str,
                 group_coords: Sequence[str] = ()) -> Any:
    """Open the files and concatenate ``names`` (plus ``group_coords``, as coordinates) along
    ``time_dim`` (no dask needed)."""
    import xarray as xr

    parts = []
    for p in tqdm(paths, desc="reading NetCDF", unit="file", leave=False):
        try:
            ds = xr.open_dataset(p)
        except Exception as e:  # xarray raises many types for unreadable files
            raise InputError(f"cannot open NetCDF file {p}: {e}") from e
        missing = [n for n in names if n not in ds.variables]
        if missing:
            raise InputError(
                f"NetCDF file {p} has no variable {missing[0]!r} (has {sorted(map(str, ds.data_vars))})"
            )
        for n in names:
            if time_dim not in ds[n].dims:
                raise InputError(
                    f"variable {n!r} in {p} has dims {ds[n].dims}, no time dim {time_dim!r} "
                    "(set --time_dim)"
                )
        for g in group_coords:
            if g not in ds.variables:
                raise InputError(f"NetCDF file {p} has no group coordinate {g!r} "
                                 "(set --group_coords)")
            if ds[g].dims != (time_dim,):
                raise InputError(f"group coordinate {g!r} in {p} has dims {ds[g].dims}; "
                                 f"expected ({time_dim},): one value per sample")
        sel = ds[list(names)]
        sel = sel.assign_coords({g: ds[g].variable for g in group_coords if g not in sel.coords})
        parts.append(sel.load())
        ds.close()
    ds = parts[0] if len(parts) == 1 else xr.concat(parts, dim=time_dim, data_vars="minimal",
                                                    coords="minimal", compat="override")
    if time_dim in ds.coords and np.issubdtype(ds[time_dim].dtype, np.datetime64):
        ds = ds.sortby(time_dim)  # contiguous time blocks need time order
    return ds


def _latlon(da: Any, ydim: str, xdim: str) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """(H, W) lat/lon grids from the target's coordinates, when they do not vary by sample."""
    grids = []
    for names in (("lat", "latitude"), ("lon", "longitude")):
        c = next((da.coords[n] for n in names if n in da.coords), None)
        if c is None:
            return None, None, "no lat/lon coordinates in the file"
        if not set(c.dims) <= {ydim, xdim}:
            return None, None, f"the file's '{c.name}' varies along {c.dims} (not static)"
        grids.append(c)
    lat, lon = (g.broadcast_like(da[{d: 0 for d in da.dims if d not in (ydim, xdim)}])
                .transpose(ydim, xdim).values.astype(np.float32) for g in grids)
    return lat, lon, f"degrees, from the file's {grids[0].name}/{grids[1].name}"


ENSEMBLE_DIMS = ("realization", "member", "ensemble", "number")  # CF / CMIP / ECMWF names


def _stack_members(ds: Any, target: str, predictor_vars: Sequence[str], time_dim: str) -> Any:
    """An ensemble file (``samples.nc``: target ``(time, realization, y, x)``) -> one sample per
    (time, member), members that are missing everywhere (rejected) dropped; predictors without
    the member dim are repeated for each member."""
    dims = [d for d in ds[target].dims if d in ENSEMBLE_DIMS and ds[target].sizes[d] > 1]
    if not dims:
        return ds
    import xarray as xr

    r = dims[0]
    da = ds[target]
    rest = [d for d in da.dims if d not in (time_dim, r)]
    T, R = ds.sizes[time_dim], ds.sizes[r]
    field = da.transpose(time_dim, r, *rest).values.reshape(T * R, *[ds.sizes[d] for d in rest])
    keep = ~np.isnan(field).reshape(T * R, -1).all(axis=1)
    t_of = np.repeat(np.arange(T), R)[keep]
    out = {target: ((time_dim, *rest), field[keep], da.attrs)}
    for v in predictor_vars:
        pv = ds[v]
        pr = [d for d in pv.dims if d not in (time_dim, r)]
        if r in pv.dims:
            vals = pv.transpose(time_dim, r, *pr).values.reshape(T * R, *[ds.sizes[d] for d in pr])[keep]
        else:
            vals = pv.transpose(time_dim, *pr).values[t_of]
        out[v] = ((time_dim, *pr), vals, pv.attrs)
    coords = {c: ds[c].variable for c in ds.coords if time_dim not in ds[c].dims and r not in ds[c].dims}
    coords.update({c: ((time_dim,), ds[c].values[t_of], ds[c].attrs) for c in ds.coords
                   if ds[c].dims == (time_dim,)})
    return xr.Dataset(out, coords=coords, attrs=ds.attrs)


def load_netcdf(
    paths: Sequence[str | Path],
    target: str,
    predictor_vars: Sequence[str],
    channel_dim: str | None = None,
    time_dim: str = "time",
    units: str | None = None,
    group_coords: Sequence[str] | None = None,
) -> RawData:
    """Target ``(time, y, x)`` and predictors: 3D vars (one channel each) and/or vars with
    ``channel_dim`` anywhere (moved to axis 1). Channel names from the channel coordinate.

    ``group_coords``: per-sample coordinates naming a location (samples with equal values form
    one group); None detects ``tile_row0,tile_col0``, empty means one group."""
    if not paths:
        raise InputError("no --input NetCDF file given")
    if not target or not predictor_vars:
        raise InputError("the netcdf source needs --target VAR and --predictor_vars VAR...")
    files = [require_file(p, "NetCDF input") for p in paths]
    gcoords = _group_coords(files[0], group_coords)
    ds = _open_netcdf(files, [target, *predictor_vars], time_dim, gcoords)
    where = ", ".join(map(str, files))
    ds = _stack_members(ds, target, predictor_vars, time_dim)
    ty = ds[target].squeeze([d for d in ds[target].dims if d != time_dim and ds[target].sizes[d] == 1])
    if ty.ndim != 3:
        raise InputError(f"target variable {target!r} in {where} has dims {ty.dims}; "
                         f"expected ({time_dim}, y, x)")
    ydim, xdim = [d for d in ty.dims if d != time_dim]
    Y = ty.transpose(time_dim, ydim, xdim).values.astype(np.float32)[:, None]
    blocks, names = [], []
    units_of: list[str | None] = []
    for v in predictor_vars:
        da = ds[v]
        if channel_dim and channel_dim in da.dims:
            rest = [d for d in da.dims if d not in (time_dim, channel_dim)]
            if da.ndim != 4:
                raise InputError(f"predictor variable {v!r} in {where} has dims {da.dims}; "
                                 f"expected {time_dim}, {channel_dim} and two spatial dims")
            arr = da.transpose(time_dim, channel_dim, *rest).values
            labels = (da[channel_dim].values if channel_dim in da.coords
                      else np.arange(da.sizes[channel_dim]))
            names += [str(c) if channel_dim in da.coords else f"{v}_{c}" for c in labels]
            units_of += [da.attrs.get("units")] * len(labels)
        else:
            if da.ndim != 3:
                hint = "; pass --channel_dim" if da.ndim == 4 else ""
                raise InputError(f"predictor variable {v!r} in {where} has dims {da.dims}; "
                                 f"expected ({time_dim}, y, x) or a --channel_dim{hint}")
            rest = [d for d in da.dims if d != time_dim]
            arr = da.transpose(time_dim, *rest).values[:, None]
            names.append(v)
            units_of.append(da.attrs.get("units"))
        if blocks:
            check_same_shape(arr.shape[2:], blocks[0].shape[2:], f"predictor {v!r} (h, w)",
                             f"predictor {predictor_vars[0]!r} (h, w)")
        blocks.append(arr.astype(np.float32))
    X = np.concatenate(blocks, axis=1)
    check_same_n(len(X), len(Y), f"predictors {list(predictor_vars)} in {where}",
                 f"target {target!r}")
    attr_units = ds[target].attrs.get("units")
    given = units or attr_units or DEFAULT_UNITS
    canonical, factor = _units(given, "--units" if units else
                               f"units attribute of {target!r} in {where}")
    if factor != 1:
        Y = Y * np.float32(factor)
    lat, lon, latlon_note = _latlon(ty, ydim, xdim)
    time = ds[time_dim].values if time_dim in ds.coords else None
    group = None
    if gcoords:  # group id = index of the sample's coordinate tuple among the distinct ones
        keys = np.stack([ds[g].values for g in gcoords], axis=1)
        group = np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)
    return RawData(
        X=X,
        Y=Y,
        channel_names=names,
        channel_units=[str(u) if u else None for u in units_of],
        source="netcdf",
        units=canonical,
        x_desc=f"predictors {list(predictor_vars)} in {where}",
        y_desc=f"target {target!r} in {where}",
        lat=lat,
        lon=lon,
        time=time,
        group=group,
        group_key=",".join(gcoords) or None,
        provenance={
            "inputs": _inputs([("netcdf", p) for p in files]),
            "units_attr": attr_units,
            "units_factor": factor,
            "variables": {"target": target, "predictors": list(predictor_vars),
                          "channel_dim": channel_dim, "time_dim": time_dim,
                          "target_dims": [time_dim, ydim, xdim], "group_coords": gcoords},
            "lat_lon": latlon_note,
            "time_range": [str(time[0]), str(time[-1])] if time is not None and len(time) else None,
        },
    )


# ------------------------------------------------------------------------- by name
def load(source: str, opts: dict[str, Any], units: str | None) -> RawData:
    """``prepare --source``: synthetic | srdrn | netcdf, with that source's options."""
    if source == "synthetic":
        return load_synthetic(**opts)
    if source == "srdrn":
        names = opts["channel_names"]
        return load_srdrn(
            **{k: v for k, v in opts.items() if k != "channel_names"},
            channel_names=[n.strip() for n in names.split(",")] if names else None,
            units=units,
        )
    return load_netcdf(
        opts["input"], opts["target"], opts["predictor_vars"], opts["channel_dim"],
        opts["time_dim"], units=units, group_coords=group_coords(opts["group_coords"]),
    )


def group_coords(value: str | None) -> list[str] | None:
    """``--group_coords``: None = auto-detect, "none" = one group, else the names."""
    if value is None:
        return None
    return [] if value == "none" else [g.strip() for g in value.split(",") if g.strip()]
