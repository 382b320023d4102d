"""Bad-input checks for ``prepare``: each error names the file, shape, key or day.

Every check raises :class:`InputError` (a ``ValueError``, so the CLI prints one line and exits 2)
or ``FileNotFoundError``; none of them writes anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Fewest days per split that still give meaningful percentiles and a validation signal.
MIN_SPLIT_DAYS = {"train": 10, "val": 1, "test": 1}
_SHOW_DAYS = 5  # how many offending day indices an error lists


class InputError(ValueError):
    """Input data that cannot be prepared; the message says which file/shape/day."""


def _first_days(bad_per_day: np.ndarray) -> str:
    days = np.flatnonzero(bad_per_day)
    more = ", ..." if len(days) > _SHOW_DAYS else ""
    return ", ".join(str(d) for d in days[:_SHOW_DAYS]) + more


def require_file(path: str | Path | None, role: str) -> Path:
    """A given input file must exist (named by role and path)."""
    if path is None or str(path) == "":
        raise InputError(f"no {role} file given")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{role} file not found: {p}")
    return p


def check_ndim(shape: Sequence[int], allowed: Sequence[int], what: str, layout: str) -> None:
    if len(shape) not in allowed:
        raise InputError(f"{what} has shape {tuple(shape)}; expected {layout}")


def check_same_shape(a: Sequence[int], b: Sequence[int], a_name: str, b_name: str) -> None:
    """Two arrays that must agree (e.g. train vs test files, land mask vs obs grid)."""
    if tuple(a) != tuple(b):
        raise InputError(f"shapes disagree: {a_name} {tuple(a)} vs {b_name} {tuple(b)}")


def check_same_n(n_x: int, n_y: int, x_name: str, y_name: str) -> None:
    if n_x != n_y:
        raise InputError(
            f"number of days differs: {x_name} has N={n_x} but {y_name} has N={n_y}"
        )


def check_predictors_finite(X: np.ndarray, what: str) -> None:
    """Predictors ``(N, C, h, w)`` must be finite everywhere (models cannot take NaN inputs)."""
    bad = ~np.isfinite(X)
    n_bad = int(bad.sum())
    if n_bad:
        per_day = bad.reshape(len(X), -1).any(axis=1)
        raise InputError(
            f"{what} contain {n_bad} NaN/non-finite values on {int(per_day.sum())} days "
            f"(first day indices: {_first_days(per_day)})"
        )


def check_precip_on_land(Y: np.ndarray, land: np.ndarray, what: str) -> None:
    """Precipitation ``(N, 1, H, W)`` on land pixels must be finite and >= 0."""
    vals = Y[:, 0][:, land]
    nonfinite = ~np.isfinite(vals)
    negative = np.isfinite(vals) & (vals < 0)
    for bad, kind in ((nonfinite, "non-finite (NaN/inf)"), (negative, "negative")):
        n_bad = int(bad.sum())
        if n_bad:
            per_day = bad.any(axis=1)
            raise InputError(
                f"{what} has {n_bad} {kind} precipitation values on land pixels on "
                f"{int(per_day.sum())} days (first day indices: {_first_days(per_day)}); "
                "precipitation must be >= 0 on land (NaN only where there is no data, e.g. sea)"
            )


def check_plausible(Y: np.ndarray, land: np.ndarray, units: str, what: str,
                    allow: bool = False) -> None:
    """Precipitation above the unit's plausible maximum (e.g. 2000 mm/day, 500 mm/h) is almost
    surely a unit or scaling error; refused unless ``allow`` (``--allow_implausible``)."""
    from precipgen.data.transforms import plausible_max

    limit = plausible_max(units)
    big = Y[:, 0][:, land] > limit
    n_big = int(big.sum())
    if n_big and not allow:
        per_day = big.any(axis=1)
        vmax = float(np.nanmax(Y[:, 0][:, land]))
        raise InputError(
            f"{what} has {n_big} land values above {limit:g} {units} (max {vmax:.6g} {units}) on "
            f"{int(per_day.sum())} days (first day indices: {_first_days(per_day)}): implausible "
            f"for precipitation in {units}; check the units (--units) or the scaling, or pass "
            "--allow_implausible if the values are right")


def check_factor(hr: Sequence[int], lr: Sequence[int], hr_name: str, lr_name: str) -> int:
    """High-res ``(H, W)`` must be the low-res ``(h, w)`` times one integer factor."""
    (H, W), (h, w) = tuple(hr), tuple(lr)
    if h == 0 or w == 0 or H % h or W % w or H // h != W // w:
        raise InputError(
            f"H/h and W/w must be one integer factor: {hr_name} grid (H, W)=({H}, {W}) vs "
            f"{lr_name} grid (h, w)=({h}, {w}) gives H/h={H / max(h, 1):g}, W/w={W / max(w, 1):g}"
        )
    return H // h


def check_split_sizes(sizes: dict[str, int], n_days: int, how: str) -> None:
    """Each split must hold at least :data:`MIN_SPLIT_DAYS` days."""
    short = {k: v for k, v in sizes.items() if v < MIN_SPLIT_DAYS[k]}
    if short:
        got = " / ".join(f"{k} {v}" for k, v in sizes.items())
        need = " / ".join(f"{k} {v}" for k, v in MIN_SPLIT_DAYS.items())
        raise InputError(
            f"too few days for the split: {n_days} days with {how} give {got}; "
            f"need at least {need}"
        )


def check_arrays(X: np.ndarray, Y: np.ndarray, land: np.ndarray, x_desc: str, y_desc: str,
                 units: str = "mm/day", allow_implausible: bool = False) -> int:
    """All checks on a source's assembled arrays; returns the integer factor H/h."""
    check_ndim(X.shape, (4,), x_desc, "(N, C, h, w)")
    check_ndim(Y.shape, (4,), y_desc, "(N, 1, H, W)")
    check_same_n(len(X), len(Y), x_desc, y_desc)
    factor = check_factor(Y.shape[-2:], X.shape[-2:], y_desc, x_desc)
    if not land.any():
        raise InputError(f"{y_desc} has no land pixel (no data anywhere, or an all-sea land mask)")
    check_predictors_finite(X, x_desc)
    check_precip_on_land(Y, land, y_desc)
    check_plausible(Y, land, units, y_desc, allow_implausible)
    return factor
