r"""Extremes and distribution scores of precipitation fields, in physical units (mm per step).

Conventions shared by every function here:

- ``pred`` and ``truth`` have shape ``(..., H, W)``; ``pred`` may carry one extra leading
  ensemble axis, ``(m, ..., H, W)``. Pixel-wise scores (MAE_tail) then average over the
  members (the mean member score); distribution scores (quantiles, wet frequency, SDII,
  mass bias) pool the members' values, i.e. they describe the ensemble's marginal
  distribution.
- ``mask`` is an optional boolean ``(H, W)`` array (True = land / scored pixel) applied to
  the last two axes; pixels outside it are ignored (they may hold NaN, e.g. ocean in PRISM).
- A threshold event is ``x >= threshold`` (as in pysteps' FSS); a *wet* pixel is
  ``x > wet_threshold`` (default 0.1 mm per step, the project's ``data.wet_threshold_mm``).
- Scores with nothing to score (no tail pixel, no wet pixel) return NaN, never raise.

Quantiles use :func:`numpy.quantile` with the default ``"linear"`` method (Hyndman & Fan
type 7).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "DEFAULT_QQ_LEVELS",
    "WET_THRESHOLD",
    "QQData",
    "mae_tail",
    "masked_points",
    "mass_bias",
    "max_bias",
    "qq_data",
    "quantile_bias",
    "sdii",
    "wet_frequency",
]

WET_THRESHOLD = 0.1  # mm per step; same default as config.data.wet_threshold_mm

DEFAULT_QQ_LEVELS: NDArray[np.float64] = np.concatenate(
    [np.linspace(0.01, 0.99, 99), [0.995, 0.999]]
)


def masked_points(x: ArrayLike, mask: ArrayLike | None = None, keep: int = 0) -> NDArray:
    """The values of ``x`` on the pixels of ``mask``, as ``(*x.shape[:keep], N)``.

    ``x`` has shape ``(..., H, W)`` and ``mask`` shape ``(H, W)`` (boolean, True = keep);
    the first ``keep`` axes (e.g. the ensemble axis) are kept, everything else (days and
    masked pixels) is flattened into the last axis. Without a mask every pixel is kept.
    """
    x = np.asarray(x)
    if x.ndim < keep:
        raise ValueError(f"expected at least {keep} axes, got shape {x.shape}")
    lead = x.shape[:keep]
    if mask is None:
        return x.reshape(*lead, -1)
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise TypeError(f"mask must be boolean (True = scored pixel), got dtype {mask.dtype}")
    if x.ndim < keep + 2 or mask.shape != x.shape[-2:]:
        raise ValueError(
            f"mask of shape {mask.shape} does not match the last two axes of shape {x.shape}"
        )
    return x[..., mask].reshape(*lead, -1)



def ensemble_points(
    ens: ArrayLike, obs: ArrayLike, mask: ArrayLike | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Ensemble ``(m, N)`` and observations ``(N,)`` on the masked pixels."""
    ens, obs = np.asarray(ens, float), np.asarray(obs, float)
    if ens.ndim < 1 or ens.shape[1:] != obs.shape:
        raise ValueError(f"ens must have shape (m, *obs.shape); got {ens.shape} and {obs.shape}")
    return masked_points(ens, mask, keep=1), masked_points(obs, mask)

def _pred_points(pred: ArrayLike, truth: ArrayLike, mask: ArrayLike | None) -> NDArray:
    """Pooled values of ``pred`` (one extra leading ensemble axis allowed)."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape and pred.shape[1:] != truth.shape:
        raise ValueError(
            f"pred shape {pred.shape} must equal truth shape {truth.shape} "
            "or be (m, *truth.shape)"
        )
    return masked_points(pred, mask).astype(float)


def mae_tail(
    pred: ArrayLike, truth: ArrayLike, threshold: float, mask: ArrayLike | None = None
) -> float:
    r"""Mean absolute error on tail pixels, those whose *truth* is at least ``threshold``.

    .. math:: \mathrm{MAE_{tail}} = \frac{1}{|T|}\sum_{p \in T} |\hat y_p - y_p|,
       \quad T = \{p \in \text{mask}: y_p \ge t\}

    Conditioning on the truth (not the prediction) keeps the score from rewarding a model
    that never predicts heavy rain. With an ensemble ``pred`` it is the mean member MAE.
    """
    pred, truth = np.asarray(pred, float), np.asarray(truth, float)
    if pred.shape != truth.shape and pred.shape[1:] != truth.shape:
        raise ValueError(f"pred shape {pred.shape} does not match truth shape {truth.shape}")
    err = masked_points(np.abs(pred - truth), mask, keep=pred.ndim - truth.ndim)
    tail = masked_points(truth, mask) >= threshold
    if not tail.any():
        return float("nan")
    return float(err[..., tail].mean())


def quantile_bias(
    pred: ArrayLike,
    truth: ArrayLike,
    q: float,
    mask: ArrayLike | None = None,
    *,
    wet_threshold: float | None = None,
) -> float:
    r"""Bias of the ``q``-quantile: :math:`Q_q(\hat y) - Q_q(y)` (e.g. ``q=0.95`` for P95 bias).

    By default the quantiles are taken over *all* land pixels of all days (dry ones
    included), so P95 / P99 are the same climatological thresholds as those used for
    twCRPS, FSS and the Brier score, and a model that drizzles everywhere or misses rain
    days shows up as a bias. With ``wet_threshold`` set, each field's quantile is taken
    over its own wet pixels (``x > wet_threshold``) instead: a pure intensity comparison,
    blind to errors in wet-pixel frequency (see :func:`wet_frequency`).
    """
    p = _pred_points(pred, truth, mask).ravel()
    t = masked_points(truth, mask).astype(float).ravel()
    if wet_threshold is not None:
        p, t = p[p > wet_threshold], t[t > wet_threshold]
    if p.size == 0 or t.size == 0:
        return float("nan")
    return float(np.quantile(p, q) - np.quantile(t, q))


def max_bias(pred: ArrayLike, truth: ArrayLike, mask: ArrayLike | None = None) -> float:
    r"""Bias of the maximum over land pixels and days: :math:`\max \hat y - \max y`.

    Pass one member (or a deterministic prediction): pooled over an ensemble, the maximum
    grows with the number of members.
    """
    p = _pred_points(pred, truth, mask)
    t = masked_points(truth, mask).astype(float)
    if p.size == 0 or t.size == 0:
        return float("nan")
    return float(p.max() - t.max())


def wet_frequency(
    x: ArrayLike, mask: ArrayLike | None = None, wet_threshold: float = WET_THRESHOLD
) -> float:
    r"""Fraction of (land) pixels that are wet: :math:`\frac{1}{N}\sum_p 1\{x_p > w\}`."""
    v = masked_points(x, mask)
    if v.size == 0:
        return float("nan")
    return float(np.mean(v > wet_threshold))


def sdii(x: ArrayLike, mask: ArrayLike | None = None, wet_threshold: float = WET_THRESHOLD) -> float:
    r"""Simple daily intensity index: mean amount on wet pixels, :math:`\overline{x \mid x > w}`.

    ETCCDI's SDII (with ``w`` = 1 mm/day for daily data), applied per pixel-step here.
    """
    v = masked_points(x, mask).astype(float)
    wet = v[v > wet_threshold]
    return float(wet.mean()) if wet.size else float("nan")


def mass_bias(pred: ArrayLike, truth: ArrayLike, mask: ArrayLike | None = None) -> float:
    r"""Signed relative bias of total precipitation over land:

    .. math:: \frac{\overline{\hat y} - \overline{y}}{\overline{y}}

    (means over land pixels and days, equal to the ratio of sums). 0 is unbiased, -0.1
    means 10 % too little water. NaN when the truth is dry everywhere.
    """
    p = _pred_points(pred, truth, mask)
    t = masked_points(truth, mask).astype(float)
    total = t.mean() if t.size else 0.0
    if total == 0.0:
        return float("nan")
    return float((p.mean() - total) / total)


class QQData(NamedTuple):
    """Matching quantiles of the wet pixels of prediction and truth (for a QQ plot)."""

    levels: NDArray[np.float64]  # quantile levels in (0, 1)
    pred: NDArray[np.float64]  # quantiles of the prediction's wet pixels (mm)
    truth: NDArray[np.float64]  # quantiles of the truth's wet pixels (mm)


def qq_data(
    pred: ArrayLike,
    truth: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    wet_threshold: float = WET_THRESHOLD,
    levels: ArrayLike | None = None,
) -> QQData:
    """Quantiles of wet pixels (``x > wet_threshold``) of each, at the same ``levels``.

    Each side uses its own wet pixels, so the plot compares intensity distributions; the
    frequency of wet pixels is :func:`wet_frequency`. Default levels: 0.01..0.99 by 0.01,
    then 0.995 and 0.999. NaN quantiles where one side has no wet pixel.
    """
    lv = DEFAULT_QQ_LEVELS if levels is None else np.asarray(levels, float)
    p = _pred_points(pred, truth, mask).ravel()
    t = masked_points(truth, mask).astype(float).ravel()
    p, t = p[p > wet_threshold], t[t > wet_threshold]
    nan = np.full(lv.shape, np.nan)
    return QQData(
        levels=lv.copy(),
        pred=np.quantile(p, lv) if p.size else nan,
        truth=np.quantile(t, lv) if t.size else nan.copy(),
    )
