"""The prepared dataset's metadata: split, categories, thresholds, statics, normalization.

Everything here is in physical units (mm per time step); the only model-space object is the
:class:`~precipgen.data.transforms.Normalization`, fitted on the training split only.

JSON files (keys are the contract with later steps):

- ``split.json``: ``train``/``val``/``test`` (day indices, contiguous time blocks in that order),
  ``n_days``, ``method``, ``test_from``, ``val_fraction``, ``test_fraction``, ``time_range``.
- ``categories.json``: ``dry``/``moderate``/``heavy`` (day indices, disjoint), ``counts``,
  ``heavy_threshold_mm``, ``heavy_percentile``, ``dry_threshold_mm``, ``land_mean_mm`` (per day),
  ``units``, ``basis``.
- ``thresholds.json``: ``P95``, ``P99`` (wet land pixels of the training split),
  ``wet_threshold_mm``, ``wet_fraction``, ``n_wet_pixels``, ``units``, ``basis``.
- ``H_W.json``: ``N``, ``C``, ``H``, ``W``, ``h``, ``w``, ``factor``.
- ``samples.json``: per-sample ``time`` (ISO strings / null) and location ``group``, with
  ``group_key`` and ``step`` (see :mod:`precipgen.data.store`); 3D-VAE windows follow it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import distance_transform_edt
from tqdm import tqdm

from precipgen.config import DataConfig
from precipgen.data.sources import KM_PER_DEG_LAT, RawData
from precipgen.data.store import format_step, infer_step
from precipgen.data.transforms import Normalization, fit_normalization
from precipgen.data.validate import InputError, check_split_sizes

DEFAULT_PIXEL_KM = 4.0  # PRISM's ~4 km grid: the assumption when the source gives no lat/lon
CHUNK = 256  # days per block in streaming loops


def derive_land_mask(Y: np.ndarray) -> np.ndarray:
    """Land = pixels with data (not NaN) on at least one day; NaN on every day = sea."""
    return ~np.isnan(Y[:, 0]).all(axis=0)


def _chunks(n: int, desc: str) -> Iterator[slice]:
    for i in tqdm(range(0, n, CHUNK), desc=desc, unit="block", leave=False):
        yield slice(i, min(i + CHUNK, n))


# ------------------------------------------------------------------------------------ split
def _snap(b: int, time: np.ndarray | None, hi: int) -> int:
    """Move a boundary forward so samples sharing a time label stay in one split."""
    if time is None:
        return b
    while 0 < b < hi and time[b] == time[b - 1]:
        b += 1
    return b


def make_split(
    n: int,
    val_fraction: float,
    test_fraction: float,
    test_indices: np.ndarray | None = None,
    time: np.ndarray | None = None,
) -> dict[str, Any]:
    """Contiguous time blocks: train, then val, then test.

    With the source's own test files, those days are the test split and validation is the
    last ``val_fraction`` of the remaining days; otherwise val and test are the last
    ``val_fraction`` / ``test_fraction`` of all days.
    """
    if test_indices is not None and len(test_indices):
        test_start = int(test_indices[0])
        if not np.array_equal(test_indices, np.arange(test_start, n)):
            raise InputError("the source's test days must be the last days (after training)")
        val_start = _snap(test_start - round(val_fraction * test_start), time, test_start)
        how = f"test days from the test files and val_fraction={val_fraction}"
        test_from = "test files"
    else:
        test_start = _snap(n - round(test_fraction * n), time, n)
        val_start = _snap(min(n - round((val_fraction + test_fraction) * n), test_start), time,
                          test_start)
        how = f"val_fraction={val_fraction}, test_fraction={test_fraction}"
        test_from = "last test_fraction of days"
    idx = {
        "train": np.arange(0, val_start),
        "val": np.arange(val_start, test_start),
        "test": np.arange(test_start, n),
    }
    check_split_sizes({k: len(v) for k, v in idx.items()}, n, how)
    split: dict[str, Any] = {k: v.tolist() for k, v in idx.items()}
    split.update(
        n_days=n, method="contiguous time blocks (train, val, test in time order)",
        test_from=test_from, val_fraction=val_fraction, test_fraction=test_fraction,
    )
    if time is not None:
        split["time_range"] = {k: [str(time[v[0]]), str(time[v[-1]])] for k, v in idx.items()}
    return split


# --------------------------------------------------------------------------- time, groups
_UNIT_STEPS = {"mm/day": "1D", "mm/h": "1h"}  # the step when the source gives no times


def _datetimes(time: np.ndarray | None) -> np.ndarray | None:
    """Time labels as datetime64[s] (cftime-like objects through ISO text); None if not dates."""
    if time is None:
        return None
    t = np.asarray(time)
    if np.issubdtype(t.dtype, np.datetime64):
        return t.astype("datetime64[s]")
    try:
        return np.array([np.datetime64(v.isoformat()) for v in t], dtype="datetime64[s]")
    except (AttributeError, ValueError, TypeError):
        return None  # numeric or non-standard-calendar labels: order by id instead


def samples_json(raw: RawData) -> dict[str, Any]:
    """``samples.json``: what a time window needs to stay on one location and in step."""
    n = raw.n_days
    group = (np.zeros(n, dtype=np.int64) if raw.group is None
             else np.asarray(raw.group, dtype=np.int64))
    t = _datetimes(raw.time)
    step = format_step(infer_step(t, group)) if t is not None else _UNIT_STEPS.get(raw.units)
    return {
        "time": None if t is None else [None if np.isnat(v) else str(v) for v in t],
        "group": group.tolist(),
        "group_key": raw.group_key,
        "step": step,
    }


# ------------------------------------------------------------------------- day categories
def land_means(Y: np.ndarray, land: np.ndarray) -> tuple[np.ndarray, float]:
    """Mean precipitation over land pixels per day, and the maximum land pixel value."""
    out = np.empty(len(Y), dtype=np.float64)
    vmax = 0.0
    for s in _chunks(len(Y), "land means"):
        v = Y[s, 0][:, land]
        out[s] = v.mean(axis=1, dtype=np.float64)
        vmax = max(vmax, float(v.max()))
    return out, vmax


def categorize(means: np.ndarray, train: np.ndarray, cfg: DataConfig, units: str) -> dict[str, Any]:
    """Dry (< dry_threshold_mm), heavy (>= percentile of training days), moderate otherwise."""
    heavy_thr = float(np.percentile(means[train], cfg.heavy_percentile))
    dry = means < cfg.dry_threshold_mm
    heavy = (means >= heavy_thr) & ~dry
    moderate = ~dry & ~heavy
    cats = {k: np.flatnonzero(v).tolist() for k, v in
            (("dry", dry), ("moderate", moderate), ("heavy", heavy))}
    return {
        **cats,
        "counts": {k: len(v) for k, v in cats.items()},
        "heavy_threshold_mm": heavy_thr,
        "heavy_percentile": cfg.heavy_percentile,
        "dry_threshold_mm": cfg.dry_threshold_mm,
        "land_mean_mm": [round(float(m), 6) for m in means],
        "units": units,
        "basis": "land-mean precipitation per day; heavy threshold = heavy_percentile of the "
        "training days' land means; dry wins over heavy",
    }


# ------------------------------------------------------------------------------ thresholds
def wet_thresholds(
    Y: np.ndarray, land: np.ndarray, train: np.ndarray, wet_threshold_mm: float, units: str
) -> tuple[dict[str, Any], np.ndarray]:
    """P95/P99 of wet land pixels of the training split; also returns those wet values."""
    Yt = Y[train[0] : train[-1] + 1]  # contiguous block: a view, no copy
    wet, n_land = [], 0
    for s in _chunks(len(Yt), "wet pixels"):
        v = Yt[s, 0][:, land]
        wet.append(v[v > wet_threshold_mm])
        n_land += v.size
    values = np.concatenate(wet)
    if values.size == 0:
        raise InputError(
            f"no wet land pixel (> {wet_threshold_mm} {units}) in the training split "
            f"(days {int(train[0])}..{int(train[-1])}): cannot compute P95/P99"
        )
    p95, p99 = np.percentile(values.astype(np.float64), [95, 99])
    return {
        "P95": float(p95),
        "P99": float(p99),
        "wet_threshold_mm": wet_threshold_mm,
        "wet_fraction": values.size / max(n_land, 1),
        "n_wet_pixels": int(values.size),
        "units": units,
        "basis": "percentiles of wet land pixels (> wet_threshold_mm) of the training split",
    }, values


# --------------------------------------------------------------------------------- statics
def _pixel_km(lat: np.ndarray | None, lon: np.ndarray | None, pixel_km: float | None
              ) -> tuple[tuple[float, float], str]:
    if pixel_km is not None:
        return (pixel_km, pixel_km), f"{pixel_km} km pixels (given)"
    if lat is not None and lon is not None and lat.shape[0] > 1 and lat.shape[1] > 1:
        dy = float(np.median(np.abs(np.diff(lat, axis=0)))) * KM_PER_DEG_LAT
        dx = float(np.median(np.abs(np.diff(lon, axis=1)))) * KM_PER_DEG_LAT * float(
            np.cos(np.deg2rad(np.mean(lat))))
        if dy > 0 and dx > 0:
            return (dy, dx), f"{dy:.3f} x {dx:.3f} km pixels (from lat/lon)"
    return (DEFAULT_PIXEL_KM, DEFAULT_PIXEL_KM), f"{DEFAULT_PIXEL_KM} km pixels (assumed)"


def build_statics(raw: RawData, land: np.ndarray, pixel_km: float | None = None
                  ) -> tuple[np.ndarray, list[str], dict[str, str]]:
    """Statics ``(K, H, W)``: the source's own, or derived from the land mask."""
    if raw.statics is not None:
        return raw.statics.astype(np.float32), list(raw.static_names), {"all": "from the source"}
    H, W = land.shape
    sampling, pix_note = _pixel_km(raw.lat, raw.lon, pixel_km)
    notes = {"land_sea_mask": "given" if raw.land_mask is not None else
             "derived: pixels with data on at least one day"}
    if (~land).any():
        dist = distance_transform_edt(land, sampling=sampling)  # land: km to the nearest sea pixel
        notes["dist_to_coast_km"] = f"Euclidean distance to the nearest sea pixel, {pix_note}; 0 at sea"
    else:
        dist = np.full((H, W), float(np.hypot(H * sampling[0], W * sampling[1])))
        notes["dist_to_coast_km"] = f"no sea in the domain: the domain diagonal, {pix_note}"
    if raw.lat is not None and raw.lon is not None:
        lat, lon = raw.lat, raw.lon
        notes["lat_lon"] = "degrees, from the source"
    else:
        lat, lon = np.meshgrid(np.arange(H, dtype=np.float32), np.arange(W, dtype=np.float32),
                               indexing="ij")
        notes["lat_lon"] = "index grids (row / column number): " + raw.provenance.get(
            "lat_lon", "the source gives no lat/lon")
    arr = np.stack([land.astype(np.float32), dist.astype(np.float32), lat, lon])
    return arr, ["land_sea_mask", "dist_to_coast_km", "lat", "lon"], notes


# ----------------------------------------------------------------------------- everything
@dataclass
class Metadata:
    files: dict[str, Any]  # metadata file name -> JSON object (provenance added by the caller)
    statics: np.ndarray
    static_names: list[str]
    static_notes: dict[str, str]
    wet_values: np.ndarray  # training wet land pixels, for the histogram
    summary: dict[str, float]


def build(raw: RawData, land: np.ndarray, factor: int, cfg: DataConfig,
          pixel_km: float | None = None) -> Metadata:
    """All metadata for ``raw`` (``raw.Y`` already 0 at sea)."""
    split = make_split(raw.n_days, cfg.val_fraction, cfg.test_fraction, raw.test_indices, raw.time)
    train = np.asarray(split["train"])
    means, vmax = land_means(raw.Y, land)
    cats = categorize(means, train, cfg, raw.units)
    thr, wet = wet_thresholds(raw.Y, land, train, cfg.wet_threshold_mm, raw.units)
    block = slice(int(train[0]), int(train[-1]) + 1)
    norm: Normalization = fit_normalization(raw.X[block], raw.Y[block], land, raw.channel_names)
    norm.units = raw.units
    statics, names, notes = build_statics(raw, land, pixel_km)
    N, C, h, w = raw.X.shape
    H, W = raw.Y.shape[-2:]
    summary = {
        "days_total": N, "days_train": len(split["train"]), "days_val": len(split["val"]),
        "days_test": len(split["test"]), "heavy_days": cats["counts"]["heavy"],
        "dry_days": cats["counts"]["dry"], "heavy_threshold_mm": cats["heavy_threshold_mm"],
        "wet_fraction": thr["wet_fraction"], "P95": thr["P95"], "P99": thr["P99"],
        "max_precip": vmax,
        "land_fraction": float(land.mean()),
    }
    files = {
        "split.json": split,
        "categories.json": cats,
        "thresholds.json": thr,
        "H_W.json": {"N": N, "C": C, "H": H, "W": W, "h": h, "w": w, "factor": factor},
        "normalization.json": norm.to_json(),
        "samples.json": samples_json(raw),
    }
    return Metadata(files, statics, names, notes, wet, summary)
