"""Synthetic weather: the embedded default data and an exact oracle of p(Y | X, S).

Three layers, each from its own random stream of one seed:

1. **Statics** (high-res): fractal terrain with an explicit mountain ridge parallel to an
   irregular coast (sea in the west), distance to coast, lat/lon.
2. **Large-scale state** (low-res): hidden AR(1) anomalies (temperature, moisture, storminess,
   wind speed, wind direction) plus a seasonal cycle, turned deterministically into the SRDRN
   predictor channels ``tas, pr, huss, sfcWind, tasmax, tasmin`` (physical units).
3. **High-res precipitation** ``Y = g(X, S) * W``: ``g`` is a deterministic function of the
   *stored float32 predictors* and statics only (bilinear upsampling, orographic lift where the
   wind blows up the terrain gradient, rain shadow in the lee, coastal convergence with onshore
   flow); ``W`` is independent sub-grid noise: a correlated Gaussian field thresholded for
   intermittency (wet fraction grows with ``g``) times a correlated lognormal amplitude, scaled
   so that ``E[W] = 1``. Hence ``E[Y | X, S] = g`` exactly (:func:`conditional_mean_field`).

The hidden state reaches ``Y`` only through the predictor channels (the wind direction is
carried by the diurnal range ``tasmax - tasmin``: onshore marine air has a small range), so
:func:`oracle_sample` draws exact samples of p(Y | X, S) for any prepared day from ``params``.

Noise streams are keyed per day: ``SeedSequence([seed, tag, sample, day_id])``; ``generate``
uses its own tag, so oracle draws are independent of the stored ``Y_hr`` for any seed, and a
day's draw does not depend on which other days share the batch.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import fft, ndimage, signal, special
from tqdm.auto import tqdm

CHANNEL_NAMES = ["tas", "pr", "huss", "sfcWind", "tasmax", "tasmin"]
# UDUNITS of each predictor channel, as CMIP names them (pr is a daily mean rate here).
CHANNEL_UNITS = {"tas": "K", "pr": "mm day-1", "huss": "1", "sfcWind": "m s-1", "tasmax": "K",
                 "tasmin": "K"}
STATIC_NAMES = ["land_sea_mask", "dist_to_coast_km", "elevation", "lat", "lon"]
GENERATOR_NAME = "precipgen.synthetic"
GENERATOR_VERSION = 1

# Random-stream tags: SeedSequence([seed, tag, ...]).
_TAG_STATICS, _TAG_STATE, _TAG_GENERATE, _TAG_ORACLE = 0, 1, 2, 3
_STATE_VARS = ("temp", "moist", "storm", "wind", "dir")

# Every tunable parameter (overridable via ``generate(**overrides)``), recorded in ``params``.
DEFAULTS: dict[str, float | int] = {
    # geometry
    "pixel_km": 4.0,
    "lat_north": 41.0,
    "lon_west": -124.5,
    "start_doy": 1,
    # terrain and coast (fractions of the domain width unless *_km / *_m)
    "terrain_beta": 3.0,  # spectral slope of the 1/f^beta terrain noise
    "coast_frac": 0.28,  # mean coast position (sea to the west)
    "coast_wiggle": 0.06,  # large bays and capes
    "coast_roughness": 0.03,  # small-scale irregularity
    "ridge_offset": 0.33,  # ridge axis distance inland from the coast
    "ridge_wiggle": 0.04,
    "ridge_width": 0.07,  # gaussian sigma of the ridge cross-section
    "ridge_height_m": 2200.0,
    "plateau_m": 400.0,
    "hill_m": 500.0,
    "coast_taper_km": 12.0,  # land rises from 0 m at the coast over this scale
    # large-scale state (AR(1) lag-1 coefficients, fraction of variance shared domain-wide)
    "phi_temp": 0.85,
    "phi_moist": 0.7,
    "phi_storm": 0.6,
    "phi_wind": 0.6,
    "phi_dir": 0.7,
    "common_frac": 0.6,
    "state_smooth_lr": 1.5,  # low-res pixels
    "season_peak_doy": 200,
    # temperature (K)
    "t_sea_level": 287.0,
    "t_season_amp": 7.0,
    "t_sigma": 3.0,
    "lapse_k_per_km": 6.5,
    "t_lat_grad": 0.8,  # K per degree latitude, colder to the north
    # humidity
    "rh_min": 0.25,
    "rh_max": 0.98,
    "rh_bias": 0.6,
    "rh_sigma": 0.8,
    "rh_storm": 0.8,
    "rh_season": 0.6,  # drier summers
    # wind
    "wind_base": 5.0,  # m/s
    "wind_sigma": 0.35,
    "wind_storm": 0.2,
    "wind_season": 0.1,
    "dir_bias": -0.7,  # direction angle = pi * sigmoid(...): 0 blows east (onshore), pi west
    "dir_sigma": 1.2,
    "dir_storm": 0.8,  # storms turn the flow onshore (south-westerly)
    "dtr_min": 6.0,  # K, onshore marine air
    "dtr_range": 8.0,  # K, added for offshore flow
    # coarse precipitation = pr_scale * q_air/q_ref * max(ascent - ascent0, 0)^pr_gamma * onshore...
    "storm_mean": -0.15,
    "storm_season": 0.55,  # wetter winters
    "ascent0": 0.15,
    "pr_scale": 2.5,  # mm/day
    "pr_gamma": 1.3,
    "q_ref": 0.008,  # kg/kg
    "pr_onshore": 0.4,
    "pr_elev_gain": 0.3,  # coarse orographic enhancement per km of block-mean elevation
    # high-res mean field g
    "oro_smooth_px": 2.0,
    "oro_gain": 3.0,  # s/m: factor exp(oro_gain * w_up), w_up = wind . grad(z) in m/s
    "oro_min": -1.0,  # log-factor clip: rain shadow
    "oro_max": 1.0,
    "elev_gain": 0.15,  # per km of elevation
    "coast_gain": 0.4,
    "coast_scale_km": 20.0,
    # sub-grid noise
    "wet_scale_mm": 3.0,  # wet fraction p = wet_max * (1 - exp(-g / wet_scale_mm))
    "wet_max": 0.97,
    "area_length_km": 40.0,  # correlation length of the rain-area (intermittency) field
    "cell_length_km": 12.0,  # correlation length of the amplitude (cell) field
    "amp_sigma": 0.45,  # lognormal sigma of the amplitude
    "amp_rho": 0.5,  # correlation of amplitude with the rain-area field: heavy cores inside
    "matern_nu": 1.0,
}


@dataclass
class SyntheticData:
    X_lr: np.ndarray  # (N, C, h, w) float32, physical units
    Y_hr: np.ndarray  # (N, 1, H, W) float32 mm/day >= 0; sea pixels hold real values too
    statics: np.ndarray  # (K, H, W) float32
    static_names: list[str]
    channel_names: list[str]
    day_of_year: np.ndarray  # (N,) int
    params: dict  # JSON-serialisable; enough to rebuild the data and the oracle


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def generate(
    days: int = 3000,
    height: int = 156,
    width: int = 132,
    factor: int = 12,
    seed: int = 0,
    show_progress: bool = True,
    **overrides: Any,
) -> SyntheticData:
    """Generate ``days`` days of predictors, high-res precipitation and statics.

    ``overrides`` replace entries of :data:`DEFAULTS` (unknown names are errors). ``params`` of
    the result holds every entry of :data:`DEFAULTS` plus ``generator``, ``version``, ``units``,
    ``seed``, ``days``, ``height``, ``width``, ``factor``, ``channel_names``, ``static_names``
    and ``overrides`` (the non-default entries, for :func:`from_params`).
    """
    _check_sizes(days, height, width, factor)
    params = _resolve_params(overrides)
    params.update(
        generator=GENERATOR_NAME, version=GENERATOR_VERSION, units="mm/day", seed=int(seed),
        days=int(days), height=int(height), width=int(width), factor=int(factor),
        channel_names=list(CHANNEL_NAMES), static_names=list(STATIC_NAMES),
        overrides={k: params[k] for k in overrides},
    )
    statics = make_statics(height, width, params, _rng(seed, _TAG_STATICS))
    x_lr, doy = simulate_predictors(days, statics, factor, params, seed)
    y_hr = _sample_y(
        params, x_lr, statics, day_ids=np.arange(days), seed=seed, tag=_TAG_GENERATE, sample=0,
        static_names=STATIC_NAMES, progress=show_progress, desc="synthetic days",
    )
    return SyntheticData(
        X_lr=x_lr, Y_hr=y_hr, statics=statics, static_names=list(STATIC_NAMES),
        channel_names=list(CHANNEL_NAMES), day_of_year=doy, params=params,
    )


def from_params(params: dict, show_progress: bool = False) -> SyntheticData:
    """Rebuild exactly the data that produced ``params`` (e.g. from provenance.json)."""
    return generate(
        days=params["days"], height=params["height"], width=params["width"],
        factor=params["factor"], seed=params["seed"], show_progress=show_progress,
        **params.get("overrides", {}),
    )


def oracle_sample(
    params: dict,
    X_lr: np.ndarray,
    statics: np.ndarray,
    n_samples: int,
    seed: int,
    day_ids: np.ndarray | None = None,
    *,
    static_names: list[str] | None = None,
    show_progress: bool = False,
) -> np.ndarray:
    """Exact draws of p(Y | X, S): ``(n_samples, N, 1, H, W)`` float32, mm/day.

    ``X_lr (N, C, h, w)`` in physical units (channel order ``params["channel_names"]``),
    ``statics (K, H, W)`` (order ``static_names`` or ``params["static_names"]``).
    ``day_ids`` (default ``arange(N)``) key each day's noise stream, so a day's draws do not
    depend on the other days in the batch. Independent of ``generate``'s own ``Y_hr`` draw.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    x_lr = np.asarray(X_lr, dtype=np.float32)
    ids = np.arange(len(x_lr)) if day_ids is None else np.asarray(day_ids, dtype=np.int64)
    if ids.shape != (len(x_lr),) or (ids < 0).any():
        raise ValueError(
            f"day_ids has shape {ids.shape}, expected ({len(x_lr)},) non-negative ids to match X_lr"
        )
    names = static_names or params.get("static_names", STATIC_NAMES)
    out = np.empty((n_samples, len(x_lr), 1) + statics.shape[-2:], dtype=np.float32)
    bar = tqdm(total=n_samples * len(x_lr), unit="day", desc="oracle", disable=not show_progress)
    for k in range(n_samples):
        out[k] = _sample_y(
            params, x_lr, statics, ids, seed=seed, tag=_TAG_ORACLE, sample=k,
            static_names=names, progress=False,
        )
        bar.update(len(x_lr))
    bar.close()
    return out


def conditional_mean_field(
    params: dict,
    X_lr: np.ndarray,
    statics: np.ndarray,
    *,
    static_names: list[str] | None = None,
) -> np.ndarray:
    """``g(X, S) = E[Y | X, S]`` exactly: ``(N, 1, H, W)`` float32, mm/day."""
    names = static_names or params.get("static_names", STATIC_NAMES)
    ops = _MeanFieldOps(params, np.asarray(statics, dtype=np.float32), X_lr.shape[-2:], names)
    x_lr = np.asarray(X_lr, dtype=np.float32)
    out = np.empty((len(x_lr), 1) + ops.hr_shape, dtype=np.float32)
    for s in range(0, len(x_lr), _CHUNK):
        out[s : s + _CHUNK, 0] = ops.g(x_lr[s : s + _CHUNK])
    return out


# --------------------------------------------------------------------------------------------
# parameters and checks
# --------------------------------------------------------------------------------------------


def _check_sizes(days: int, height: int, width: int, factor: int) -> None:
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    if factor < 1 or height % factor or width % factor:
        raise ValueError(
            f"height={height} and width={width} must both be divisible by factor={factor} "
            f"(got remainders {height % max(factor, 1)} and {width % max(factor, 1)})"
        )
    if height // factor < 2 or width // factor < 2:
        raise ValueError(
            f"low-res grid {height // factor}x{width // factor} (height={height}, width={width}, "
            f"factor={factor}) is too small: need at least 2x2"
        )


def _resolve_params(overrides: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = dict(DEFAULTS)
    for key, value in overrides.items():
        if key not in DEFAULTS:
            match = difflib.get_close_matches(key, list(DEFAULTS), n=1, cutoff=0.0)
            hint = f" (did you mean '{match[0]}'?)" if match else ""
            raise ValueError(f"unknown synthetic generator parameter '{key}'{hint}")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"synthetic generator parameter '{key}' must be a number, got {value!r}")
        params[key] = type(DEFAULTS[key])(value)
    return params


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), *map(int, keys)])))


# --------------------------------------------------------------------------------------------
# statics
# --------------------------------------------------------------------------------------------


def _spectral_noise(shape: tuple[int, ...], beta: float, rng: np.random.Generator) -> np.ndarray:
    """Standardised 1/f^beta noise, synthesised on a doubled grid so edges do not wrap."""
    big = tuple(2 * n for n in shape)
    freqs = [fft.fftfreq(n) for n in big[:-1]] + [fft.rfftfreq(big[-1])]
    k2 = sum(f**2 for f in np.meshgrid(*freqs, indexing="ij"))
    amp = np.zeros_like(k2)
    amp[k2 > 0] = k2[k2 > 0] ** (-beta / 4)  # |k|^(-beta/2)
    field = fft.irfftn(fft.rfftn(rng.standard_normal(big)) * amp, s=big)
    field = field[tuple(slice(0, n) for n in shape)]
    return (field - field.mean()) / (field.std() + 1e-12)


def make_statics(height: int, width: int, params: dict, rng: np.random.Generator) -> np.ndarray:
    """``(5, H, W)`` float32 in the order of :data:`STATIC_NAMES`."""
    p = params
    x = (np.arange(width) + 0.5) / width  # west -> east, fraction of the width
    coast_x = p["coast_frac"] + p["coast_wiggle"] * _spectral_noise((height,), 2.0, rng)
    rough = p["coast_roughness"] * _spectral_noise((height, width), 2.2, rng)
    land = (x[None, :] - coast_x[:, None] + rough) > 0
    land[:, 0], land[:, -1] = False, True  # guarantee both a sea and a land
    land = _drop_inland_seas(land)

    dist_land = np.maximum(ndimage.distance_transform_edt(land) - 0.5, 0) * p["pixel_km"]
    dist_sea = np.maximum(ndimage.distance_transform_edt(~land) - 0.5, 0) * p["pixel_km"]
    dist_km = np.where(land, dist_land, dist_sea)

    ridge_x = coast_x + p["ridge_offset"] + p["ridge_wiggle"] * _spectral_noise((height,), 2.0, rng)
    ridge_h = p["ridge_height_m"] * np.clip(1 + 0.25 * _spectral_noise((height,), 2.0, rng), 0.4, 1.3)
    ridge = ridge_h[:, None] * np.exp(-0.5 * ((x[None, :] - ridge_x[:, None]) / p["ridge_width"]) ** 2)
    terrain = _spectral_noise((height, width), p["terrain_beta"], rng)
    hills = p["hill_m"] * (terrain - terrain.min()) / (np.ptp(terrain) + 1e-12)
    plateau = p["plateau_m"] * (1 - np.exp(-dist_land / 100.0))
    taper = 1 - np.exp(-dist_land / p["coast_taper_km"])  # 0 m at the shoreline
    ridge = ridge * np.clip(1 + 0.15 * terrain, 0.7, 1.3)
    elev = np.where(land, taper * (plateau + ridge + hills), 0.0)
    elev = np.maximum(elev, 0.0)

    lat_1d = p["lat_north"] - (np.arange(height) + 0.5) * p["pixel_km"] / 111.2
    km_per_deg_lon = 111.2 * np.cos(np.deg2rad(lat_1d.mean()))
    lon_1d = p["lon_west"] + (np.arange(width) + 0.5) * p["pixel_km"] / km_per_deg_lon
    lat, lon = np.meshgrid(lat_1d, lon_1d, indexing="ij")
    return np.stack([land.astype(float), dist_km, elev, lat, lon]).astype(np.float32)


def _drop_inland_seas(land: np.ndarray) -> np.ndarray:
    """Sea components that do not reach the western edge become land (no inland lakes)."""
    labels, _ = ndimage.label(~land)
    open_sea = np.setdiff1d(np.unique(labels[:, 0]), [0])
    return ~np.isin(labels, open_sea)


# --------------------------------------------------------------------------------------------
# large-scale state and predictors
# --------------------------------------------------------------------------------------------


def _smoothing_matrix(h: int, w: int, sigma: float) -> np.ndarray:
    """Rows map white noise to a smooth field with exactly unit variance at every pixel."""
    eye = np.eye(h * w).reshape(h * w, h, w)
    cols = ndimage.gaussian_filter(eye, sigma=(0, sigma, sigma), mode="reflect")
    m = cols.reshape(h * w, h * w).T  # m[i, j]: weight of input j in output i
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def _ar1_anomaly(n: int, h: int, w: int, phi: float, params: dict, seed: int, var: int) -> np.ndarray:
    """Unit-variance AR(1) anomaly (N, h, w): a domain-wide part plus a smooth local part.

    Each variable and part has its own stream, so a shorter run is a prefix of a longer one.
    """
    common = _rng(seed, _TAG_STATE, var, 0).standard_normal(n)
    local = _rng(seed, _TAG_STATE, var, 1).standard_normal((n, h * w))
    local = (local @ _smoothing_matrix(h, w, params["state_smooth_lr"]).T).reshape(n, h, w)
    a = np.sqrt(params["common_frac"])
    eps = a * common[:, None, None] + np.sqrt(1 - a**2) * local
    scale = np.sqrt(1 - phi**2)
    eps[0] /= max(scale, 1e-6)  # start in the stationary distribution
    return signal.lfilter([scale], [1.0, -phi], eps, axis=0)


def _block_mean(field: np.ndarray, factor: int) -> np.ndarray:
    h, w = field.shape[0] // factor, field.shape[1] // factor
    return field.reshape(h, factor, w, factor).mean(axis=(1, 3))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * x))


def _q_sat(t_k: np.ndarray, elev_m: np.ndarray) -> np.ndarray:
    """Saturation specific humidity (kg/kg), Bolton's Clausius-Clapeyron fit."""
    es = 6.112 * np.exp(17.67 * (t_k - 273.15) / (t_k - 29.65))  # hPa
    p = 1013.25 * np.exp(-elev_m / 8000.0)
    return 0.622 * es / (p - 0.378 * es)


def simulate_predictors(
    days: int, statics: np.ndarray, factor: int, params: dict, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``X_lr (N, 6, h, w)`` float32 in physical units, and day of year ``(N,)``."""
    p = params
    elev = _block_mean(statics[STATIC_NAMES.index("elevation")], factor)
    lat = _block_mean(statics[STATIC_NAMES.index("lat")], factor)
    h, w = elev.shape
    a = {v: _ar1_anomaly(days, h, w, p[f"phi_{v}"], p, seed, i) for i, v in enumerate(_STATE_VARS)}
    doy = (int(p["start_doy"]) - 1 + np.arange(days)) % 365 + 1
    season = np.cos(2 * np.pi * (doy - p["season_peak_doy"]) / 365.25)[:, None, None]  # +1 summer

    tas = (
        p["t_sea_level"] + p["t_season_amp"] * season + p["t_sigma"] * a["temp"]
        - p["lapse_k_per_km"] * elev / 1000.0 - p["t_lat_grad"] * (lat - lat.mean())
    )
    rh = p["rh_min"] + (p["rh_max"] - p["rh_min"]) * _sigmoid(
        p["rh_bias"] + p["rh_sigma"] * a["moist"] + p["rh_storm"] * a["storm"] - p["rh_season"] * season
    )
    huss = rh * _q_sat(tas, elev)
    # moisture of the incoming air mass (sea-level equivalent), lifted over the terrain
    q_air = rh * _q_sat(tas + p["lapse_k_per_km"] * elev / 1000.0, np.zeros_like(elev))
    wind = p["wind_base"] * np.exp(
        p["wind_sigma"] * a["wind"] + p["wind_storm"] * a["storm"] - p["wind_season"] * season
    )
    angle = np.pi * _sigmoid(p["dir_bias"] + p["dir_sigma"] * a["dir"] - p["dir_storm"] * a["storm"])
    onshore = np.cos(angle)  # +1: blowing east, from the sea onto the land
    dtr = p["dtr_min"] + p["dtr_range"] * (1 - onshore) / 2
    ascent = p["storm_mean"] - p["storm_season"] * season + a["storm"]
    pr = (
        p["pr_scale"] * (q_air / p["q_ref"]) * np.maximum(ascent - p["ascent0"], 0) ** p["pr_gamma"]
        * (1 + p["pr_onshore"] * onshore) * (1 + p["pr_elev_gain"] * np.maximum(onshore, 0) * elev / 1000)
    )
    x = np.stack([tas, pr, huss, wind, tas + dtr / 2, tas - dtr / 2], axis=1)
    return x.astype(np.float32), doy.astype(np.int64)


# --------------------------------------------------------------------------------------------
# the mean field g(X, S)
# --------------------------------------------------------------------------------------------

_CHUNK = 64  # days per vectorised block


def _interp_matrix(n_lr: int, factor: int) -> np.ndarray:
    """(n_hr, n_lr) bilinear weights between cell centres, edges clamped (zoom grid_mode)."""
    pos = (np.arange(n_lr * factor) + 0.5) / factor - 0.5  # hr centres in lr index units
    pos = np.clip(pos, 0, n_lr - 1)
    lo = np.minimum(np.floor(pos).astype(int), n_lr - 2) if n_lr > 1 else np.zeros_like(pos, int)
    frac = pos - lo
    m = np.zeros((n_lr * factor, n_lr))
    rows = np.arange(n_lr * factor)
    m[rows, lo] += 1 - frac
    if n_lr > 1:
        m[rows, lo + 1] += frac
    return m.astype(np.float32)


class _MeanFieldOps:
    """Statics-derived terms of g, computed once per call and applied to chunks of days."""

    def __init__(self, params: dict, statics: np.ndarray, lr_shape: tuple[int, ...],
                 static_names: list[str]):
        p = self.p = params
        hr = statics.shape[-2:]
        h, w = lr_shape
        if hr[0] % h or hr[1] % w or hr[0] // h != hr[1] // w:
            raise ValueError(
                f"statics grid {hr[0]}x{hr[1]} is not an integer multiple (same in both axes) "
                f"of the X_lr grid {h}x{w}"
            )
        channels = list(params.get("channel_names", CHANNEL_NAMES))
        if len(static_names) != statics.shape[0]:
            raise ValueError(
                f"statics has {statics.shape[0]} fields but {len(static_names)} names {static_names}"
            )
        self.hr_shape = (int(hr[0]), int(hr[1]))
        factor = hr[0] // h
        self.a_rows, self.a_cols = _interp_matrix(h, factor), _interp_matrix(w, factor).T.copy()
        names = list(static_names)
        for need in ("elevation", "dist_to_coast_km"):
            if need not in names:
                raise ValueError(f"statics need '{need}' (have {names})")
        elev = statics[names.index("elevation")].astype(np.float64)
        dist = statics[names.index("dist_to_coast_km")].astype(np.float64)
        z = ndimage.gaussian_filter(elev, p["oro_smooth_px"], mode="nearest")
        dz_row, dz_col = np.gradient(z, p["pixel_km"] * 1000.0)
        self.dzdx = dz_col.astype(np.float32)  # eastward slope
        self.dzdy = (-dz_row).astype(np.float32)  # northward slope (rows run south)
        self.elev_factor = (1 + p["elev_gain"] * elev / 1000.0).astype(np.float32)
        self.coast_kernel = (p["coast_gain"] * np.exp(-dist / p["coast_scale_km"])).astype(np.float32)
        missing = {"pr", "sfcWind", "tasmax", "tasmin"} - set(channels)
        if missing:
            raise ValueError(f"X_lr channels {channels} lack {sorted(missing)}")
        self.n_channels = len(channels)
        self.ch = {n: channels.index(n) for n in ("pr", "sfcWind", "tasmax", "tasmin")}

    def _up(self, lr: np.ndarray) -> np.ndarray:
        return self.a_rows @ lr @ self.a_cols  # (B, h, w) -> (B, H, W), smooth bilinear

    def g(self, x_lr: np.ndarray) -> np.ndarray:
        """(B, C, h, w) float32 predictors -> (B, H, W) float32 mean precipitation (mm/day)."""
        p, ch = self.p, self.ch
        if x_lr.ndim != 4 or x_lr.shape[1] != self.n_channels:
            raise ValueError(
                f"X_lr has shape {x_lr.shape}, expected (N, {self.n_channels}, h, w) with "
                f"channels {p.get('channel_names', CHANNEL_NAMES)}"
            )
        onshore = 1 - 2 * (x_lr[:, ch["tasmax"]] - x_lr[:, ch["tasmin"]] - p["dtr_min"]) / p["dtr_range"]
        onshore = np.clip(onshore, -1, 1)
        sin_a = np.sqrt(1 - onshore**2)  # the angle lies in [0, pi]: northward component >= 0
        u = self._up(x_lr[:, ch["sfcWind"]] * onshore)
        v = self._up(x_lr[:, ch["sfcWind"]] * sin_a)
        pr = np.maximum(self._up(x_lr[:, ch["pr"]]), 0)
        w_up = u * self.dzdx + v * self.dzdy  # m/s forced vertical motion
        oro = np.exp(np.clip(p["oro_gain"] * w_up, p["oro_min"], p["oro_max"]))
        coast = 1 + self.coast_kernel * np.maximum(self._up(onshore), 0)
        return (pr * oro * coast * self.elev_factor).astype(np.float32)


# --------------------------------------------------------------------------------------------
# sub-grid noise
# --------------------------------------------------------------------------------------------


class _NoiseFilter:
    """Two unit-variance Matern-like Gaussian random fields per day via batched FFT."""

    def __init__(self, hr_shape: tuple[int, int], params: dict):
        lengths = [params["area_length_km"] / params["pixel_km"], params["cell_length_km"] / params["pixel_km"]]
        pad = int(np.ceil(2 * max(lengths)))
        self.hr_shape = hr_shape
        self.shape = (fft.next_fast_len(hr_shape[0] + pad), fft.next_fast_len(hr_shape[1] + pad, real=True))
        ky = fft.fftfreq(self.shape[0])[:, None] * 2 * np.pi
        kx = fft.rfftfreq(self.shape[1])[None, :] * 2 * np.pi
        k2 = ky**2 + kx**2
        amps = []
        for length in lengths:
            amp = (1 + k2 * length**2) ** (-(params["matern_nu"] + 1) / 2)
            # unit L2 norm of the real-space kernel => every pixel is exactly N(0, 1)
            full = np.concatenate([amp, amp[:, 1 : (self.shape[1] + 1) // 2]], axis=1)
            amps.append(amp * np.sqrt(self.shape[0] * self.shape[1] / (full**2).sum()))
        self.amp = np.stack(amps).astype(np.float32)[None]  # (1, 2, ky, kx)

    def fields(self, white: np.ndarray) -> np.ndarray:
        """(B, 2, Hp, Wp) white noise -> (B, 2, H, W) correlated N(0, 1) fields."""
        spec = fft.rfft2(white, workers=_workers()) * self.amp
        out = fft.irfft2(spec, s=self.shape, workers=_workers())
        return out[..., : self.hr_shape[0], : self.hr_shape[1]]


def _workers() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


def _apply_noise(g: np.ndarray, z_area: np.ndarray, z_cell: np.ndarray, p: dict) -> np.ndarray:
    """Y = g * 1{Z1 > c} * exp(s Z2 - s^2/2) / Phi(rho s - c), so E[Y] = g exactly.

    Z2 = rho Z1 + sqrt(1 - rho^2) Z3; c = Phi^-1(1 - p_wet) with p_wet growing with g.
    """
    s, rho = p["amp_sigma"], p["amp_rho"]
    p_wet = (p["wet_max"] * -np.expm1(-g / p["wet_scale_mm"])).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        c = -special.ndtri(p_wet)  # +inf where g == 0: never wet
        z2 = rho * z_area + np.sqrt(1 - rho**2) * z_cell
        norm = special.ndtr(np.float32(rho * s) - c)
        y = g * np.exp(s * z2 - 0.5 * s * s) / norm
    return np.where((z_area > c) & (g > 0), y, 0).astype(np.float32)


def _sample_y(
    params: dict,
    x_lr: np.ndarray,
    statics: np.ndarray,
    day_ids: np.ndarray,
    seed: int,
    tag: int,
    sample: int,
    static_names: list[str],
    progress: bool,
    desc: str = "",
) -> np.ndarray:
    """One draw of Y for every day: (N, 1, H, W) float32."""
    statics = np.asarray(statics, dtype=np.float32)
    ops = _MeanFieldOps(params, statics, x_lr.shape[-2:], static_names)
    noise = _NoiseFilter(ops.hr_shape, params)
    y = np.empty((len(x_lr), 1) + ops.hr_shape, dtype=np.float32)
    bar = tqdm(total=len(x_lr), unit="day", desc=desc, disable=not progress)
    for s in range(0, len(x_lr), _CHUNK):
        ids = day_ids[s : s + _CHUNK]
        white = np.stack([
            _rng(seed, tag, sample, d).standard_normal((2,) + noise.shape, dtype=np.float32)
            for d in ids
        ])
        z = noise.fields(white)
        y[s : s + len(ids), 0] = _apply_noise(ops.g(x_lr[s : s + _CHUNK]), z[:, 0], z[:, 1], params)
        bar.update(len(ids))
    bar.close()
    return y
