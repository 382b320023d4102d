"""Physical units <-> model space, and precipitation units, in ONE place.

Precipitation in files, thresholds, metrics and figures is in physical units (mm per time
step). Models see ``(log1p(y) - mean) / std`` with mean/std from the training split's land
pixels. Predictors are z-scored per channel; precipitation-like predictor channels get a
``log1p`` first. Every conversion in the package goes through this module, so a threshold is
never compared in the wrong space.

Works on numpy arrays and torch tensors alike.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

ArrayLike = TypeVar("ArrayLike")  # np.ndarray or torch.Tensor


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _log1p(x: Any) -> Any:
    return x.log1p() if _is_torch(x) else np.log1p(x)


def _expm1(x: Any) -> Any:
    return x.expm1() if _is_torch(x) else np.expm1(x)


def _clamp_min0(x: Any) -> Any:
    return x.clamp_min(0.0) if _is_torch(x) else np.maximum(x, 0.0)


@dataclass
class Normalization:
    """The model-space transform, stored as ``metadata/normalization.json``."""

    target_mean: float
    target_std: float
    channel_names: list[str]
    channel_log1p: list[bool]
    channel_mean: list[float]
    channel_std: list[float]
    target_transform: str = "log1p_zscore"
    units: str = "mm per time step"
    extra: dict[str, Any] = field(default_factory=dict)

    # ---- target (precipitation) ----
    def to_model(self, y_mm: ArrayLike) -> ArrayLike:
        """Physical precipitation (mm) -> model space."""
        return (_log1p(_clamp_min0(y_mm)) - self.target_mean) / self.target_std

    def to_physical(self, y_model: ArrayLike) -> ArrayLike:
        """Model space -> physical precipitation (mm), never negative."""
        return _clamp_min0(_expm1(y_model * self.target_std + self.target_mean))

    def threshold_to_model(self, threshold_mm: float) -> float:
        """A physical threshold (e.g. P95 in mm) expressed in model space."""
        return float((np.log1p(max(threshold_mm, 0.0)) - self.target_mean) / self.target_std)

    # ---- predictors ----
    def _channel_arrays(self, x: Any, ndim_after_channel: int) -> tuple[Any, Any, Any]:
        shape = (-1,) + (1,) * ndim_after_channel
        mean = np.asarray(self.channel_mean, dtype=np.float32).reshape(shape)
        std = np.asarray(self.channel_std, dtype=np.float32).reshape(shape)
        logm = np.asarray(self.channel_log1p, dtype=bool).reshape(shape)
        if _is_torch(x):
            import torch

            return (
                torch.as_tensor(mean, device=x.device, dtype=x.dtype),
                torch.as_tensor(std, device=x.device, dtype=x.dtype),
                torch.as_tensor(logm, device=x.device),
            )
        return mean, std, logm

    def predictors_to_model(self, x_phys: ArrayLike, channel_axis: int = -3) -> ArrayLike:
        """Predictors ``(..., C, h, w)`` in physical units -> model space."""
        after = -channel_axis - 1
        mean, std, logm = self._channel_arrays(x_phys, after)
        if _is_torch(x_phys):
            import torch

            logged = torch.where(logm, _log1p(_clamp_min0(x_phys)), x_phys)
        else:
            logged = np.where(logm, np.log1p(np.maximum(x_phys, 0.0)), x_phys)
        return (logged - mean) / std

    def predictors_to_physical(self, x_model: ArrayLike, channel_axis: int = -3) -> ArrayLike:
        after = -channel_axis - 1
        mean, std, logm = self._channel_arrays(x_model, after)
        lin = x_model * std + mean
        if _is_torch(x_model):
            import torch

            return torch.where(logm, _expm1(lin), lin)
        return np.where(logm, np.expm1(lin), lin)

    # ---- persistence ----
    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Normalization:
        return cls(**d)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2))

    @classmethod
    def load(cls, path: Path) -> Normalization:
        return cls.from_json(json.loads(Path(path).read_text()))


# ---------------------------------------------------------------- SRDRN's normalisation
@dataclass
class SrdrnNormalization:
    """SRDRN's own scaling of its ``.npy`` files, in SRDRN's layout (broadcast against
    predictors ``(N, h, w, C)`` and obs ``(N, H, W)``): predictors z-scored per channel, obs
    ``log1p`` then z-scored. ``prepare`` inverts it (everything downstream is physical);
    the augmented SRDRN set re-applies it so the arrays drop into SRDRN's training."""

    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: np.ndarray
    y_std: np.ndarray
    source: dict[str, str] = field(default_factory=dict)  # role -> the file the stats came from

    def predictors(self, x_nhwc: np.ndarray) -> np.ndarray:
        return (x_nhwc - self.x_mean) / self.x_std

    def obs(self, y_nhw: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):  # NaN sea stays NaN
            return (np.log1p(y_nhw) - self.y_mean) / self.y_std

    def predictors_inverse(self, x: np.ndarray) -> np.ndarray:
        return x * self.x_std + self.x_mean

    def obs_inverse(self, y: np.ndarray) -> np.ndarray:
        """Normalised obs -> mm; a float32 round trip of 0 gives -1e-7, clipped back to 0
        (larger negatives stay, and fail the precipitation checks)."""
        out = np.expm1(y * self.y_std + self.y_mean)
        out[(out < 0) & (out > -1e-3)] = 0.0
        return out


# ---------------------------------------------------------------- precipitation units
# Canonical precipitation units (rates: a sub-hourly radar series in mm/h stays mm/h), their
# UDUNITS spelling for files, and the largest value that is still plausible (world records:
# ~1,825 mm in a day, ~305 mm in an hour); larger values are refused unless overridden.
PRECIP_UNITS: dict[str, tuple[str, float]] = {
    "mm/day": ("mm day-1", 2000.0),
    "mm/h": ("mm h-1", 500.0),
    "mm/min": ("mm min-1", 50.0),
}
_UNIT_ALIASES: dict[str, tuple[str, float]] = {  # spelling -> (canonical, factor)
    **{a: ("mm/day", 1.0) for a in ("mm/day", "mm day-1", "mm d-1", "mm/d", "mm day^-1",
                                      "mm per day", "mm/24h", "mm (24h)-1")},
    **{a: ("mm/h", 1.0) for a in ("mm/h", "mm h-1", "mm hr-1", "mm/hr", "mm/hour", "mm h^-1",
                                    "mm per hour")},
    **{a: ("mm/min", 1.0) for a in ("mm/min", "mm min-1", "mm per minute")},
    # CMIP's precipitation flux: 1 kg m-2 s-1 of water = 1 mm s-1 = 86400 mm/day
    **{a: ("mm/day", 86400.0) for a in ("kg m-2 s-1", "kg/m2/s", "kg m^-2 s^-1", "mm s-1",
                                          "mm/s")},
}


def precip_units(text: str) -> tuple[str, float]:
    """A units string -> (canonical units, factor the values are multiplied by); ValueError
    naming the accepted spellings for anything else."""
    key = " ".join(str(text).strip().lower().split())
    if key in _UNIT_ALIASES:
        return _UNIT_ALIASES[key]
    raise ValueError(f"precipitation units {text!r} are not known; accepted: "
                     f"{', '.join(sorted({k for k in _UNIT_ALIASES}))}")


def udunits(units: str) -> str:
    """The UDUNITS spelling of canonical units (``mm/h`` -> ``mm h-1``), for CF files."""
    return PRECIP_UNITS[units][0] if units in PRECIP_UNITS else units


def plausible_max(units: str) -> float:
    return PRECIP_UNITS[units][1] if units in PRECIP_UNITS else float("inf")


# Names of precipitation-amount channels (CMIP's pr, ERA5's tp, the MRMS block means). Only
# these get a log1p; a name merely starting with "pr" (pressure, prw, prmsl) does not.
PRECIP_LIKE = frozenset({"pr", "prc", "prl", "precip", "precipitation", "tp", "rain", "rainfall",
                         "mean_t", "mean_tminus1"})


def is_precip_like(name: str) -> bool:
    return name.lower() in PRECIP_LIKE


def fit_normalization(
    x_train: np.ndarray,
    y_train: np.ndarray,
    land_mask: np.ndarray,
    channel_names: list[str],
    chunk: int = 256,
) -> Normalization:
    """Fit on the training split only. ``x_train (N, C, h, w)``, ``y_train (N, 1, H, W)``.

    Streams over days so memmapped inputs are never fully loaded.
    """
    land = land_mask.astype(bool)
    s = s2 = 0.0
    n = 0
    for i in range(0, len(y_train), chunk):
        v = np.log1p(np.maximum(np.asarray(y_train[i : i + chunk], dtype=np.float64)[:, 0][:, land], 0))
        s += v.sum()
        s2 += (v**2).sum()
        n += v.size
    t_mean = s / max(n, 1)
    t_std = float(np.sqrt(max(s2 / max(n, 1) - t_mean**2, 1e-12)))
    c = x_train.shape[1]
    # log1p only for precipitation amounts that are never negative in training: a signed
    # channel (an anomaly) would lose its negative half and could not be inverted.
    cmin = np.full(c, np.inf)
    for i in range(0, len(x_train), chunk):
        cmin = np.minimum(cmin, np.nanmin(np.asarray(x_train[i : i + chunk]), axis=(0, 2, 3)))
    logm = [is_precip_like(nm) and bool(cmin[k] >= 0) for k, nm in enumerate(channel_names)]
    cs = np.zeros(c)
    cs2 = np.zeros(c)
    cn = 0
    for i in range(0, len(x_train), chunk):
        xb = np.asarray(x_train[i : i + chunk], dtype=np.float64)
        for ch in range(c):
            v = np.log1p(np.maximum(xb[:, ch], 0)) if logm[ch] else xb[:, ch]
            cs[ch] += v.sum()
            cs2[ch] += (v**2).sum()
        cn += xb[:, 0].size
    cm = cs / max(cn, 1)
    cstd = np.sqrt(np.maximum(cs2 / max(cn, 1) - cm**2, 1e-12))
    cstd = np.where(cstd < 1e-6, 1.0, cstd)  # constant channels stay finite
    return Normalization(
        target_mean=float(t_mean),
        target_std=max(t_std, 1e-6),
        channel_names=list(channel_names),
        channel_log1p=logm,
        channel_mean=[float(v) for v in cm],
        channel_std=[float(v) for v in cstd],
    )


def statics_to_model(statics: np.ndarray, names: list[str]) -> np.ndarray:
    """Statics ``(K, H, W)`` for a network: the land mask stays 0/1, the others are z-scored
    over the domain (they are fixed maps, so domain statistics are the right reference)."""
    out = np.asarray(statics, dtype=np.float32).copy()
    for k, name in enumerate(names):
        if name == "land_sea_mask":
            continue
        v = out[k]
        std = float(v.std())
        out[k] = (v - float(v.mean())) / (std if std > 1e-6 else 1.0)
    return out
