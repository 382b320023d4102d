r"""Ensemble scores for evaluation (no gradients) and the seed's generative checks.

CRPS and twCRPS come from ``scoringrules`` (numpy backend); for training losses with
gradients see :mod:`precipgen.scores.crps`. Conventions: the ensemble axis is first,
``ens`` has shape ``(m, ..., H, W)`` and ``obs`` ``(..., H, W)``, physical units;
``mask`` is an optional boolean ``(H, W)`` array (True = land / scored pixel). Scores are
means over the masked pixels of all days.

CRPS estimators (``kind``), for members :math:`x_1..x_m` and observation :math:`y`:

.. math::
    \mathrm{CRPS} = \frac{1}{m}\sum_i |x_i - y| - \frac{c}{2}\sum_{i,j}|x_i - x_j|,
    \qquad c = \frac{1}{m^2}\ (\texttt{"standard"}, \text{scoringrules "nrg"}),
    \quad c = \frac{1}{m(m-1)}\ (\texttt{"fair"}, \text{Ferro 2014}).

The fair CRPS is unbiased for the CRPS of the distribution the members are drawn from, so
ensembles of different sizes compare fairly; the standard one is the CRPS of the
empirical distribution. A deterministic forecast is a one-member ensemble: its (standard)
CRPS is :math:`|x - y|`, so its mean CRPS is its MAE (:func:`crps_deterministic`).

The generative checks follow the seed's ``test_generative_outputs.py``: variances and
standard deviations over repeated outputs are taken with ``ddof=1`` (``torch.var`` /
``torch.std`` defaults). Its success indicators are :func:`success_indicators`.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import scoringrules as sr
from numpy.typing import ArrayLike, NDArray

from precipgen.scores.extremes import ensemble_points, masked_points

__all__ = [
    "DETERMINISTIC_VARIANCE",
    "SUCCESS_THRESHOLDS",
    "Indicator",
    "UncertaintyStats",
    "crps_deterministic",
    "crps_ensemble",
    "crps_improvement",
    "diversity_score",
    "generative_variance",
    "is_deterministic",
    "success_indicators",
    "twcrps_deterministic",
    "twcrps_ensemble",
    "uncertainty_stats",
]

Kind = Literal["fair", "standard"]
_ESTIMATOR = {"fair": "fair", "standard": "nrg"}

# The seed's success thresholds (all "greater than").
SUCCESS_THRESHOLDS: dict[str, float] = {
    "generative_variance": 1e-3,
    "diversity": 0.01,
    "crps_improvement_pct": 10.0,
    "uncertainty": 1e-3,
}
# Below this maximum variance over repeated outputs a model counts as deterministic
# (the seed prints ~1e-10 for its deterministic VAE: float round-off only).
DETERMINISTIC_VARIANCE = 1e-6

_CHUNK_ELEMENTS = 1 << 24  # scoringrules' numpy estimators build an (N, m, m) array



def _mean_crps(x: NDArray, y: NDArray, kind: str, v_func=None) -> float:
    """Mean scoringrules CRPS over pairs, in chunks so memory stays ~128 MB."""
    if kind not in _ESTIMATOR:
        raise ValueError(f"unknown CRPS kind {kind!r}; expected 'fair' or 'standard'")
    m, n = x.shape
    if kind == "fair" and m < 2:
        raise ValueError("the fair CRPS needs at least 2 members")
    if n == 0:
        return float("nan")
    step = max(1, _CHUNK_ELEMENTS // (m * m))
    total = 0.0
    for a in range(0, n, step):
        xa, ya = x[:, a : a + step].T, y[a : a + step]
        if v_func is None:
            s = sr.crps_ensemble(ya, xa, m_axis=-1, estimator=_ESTIMATOR[kind], backend="numpy")
        else:
            s = sr.twcrps_ensemble(
                ya, xa, m_axis=-1, v_func=v_func, estimator=_ESTIMATOR[kind], backend="numpy"
            )
        total += float(np.sum(s))
    return total / n


def crps_ensemble(
    ens: ArrayLike, obs: ArrayLike, mask: ArrayLike | None = None, *, kind: Kind = "fair"
) -> float:
    """Mean ensemble CRPS (``scoringrules.crps_ensemble``, estimator "fair" or "nrg")."""
    x, y = ensemble_points(ens, obs, mask)
    return _mean_crps(x, y, kind)


def twcrps_ensemble(
    ens: ArrayLike,
    obs: ArrayLike,
    threshold: float,
    mask: ArrayLike | None = None,
    *,
    kind: Kind = "fair",
) -> float:
    r"""Mean threshold-weighted CRPS focused on values above ``threshold`` (e.g. P95, P99).

    ``scoringrules.twcrps_ensemble`` with the chaining function :math:`v(x) = \max(x, t)`,
    i.e. the CRPS of the members and observation censored below :math:`t`: it equals the
    CRPS integral restricted to :math:`[t, \infty)` (Allen et al. 2023).
    """
    x, y = ensemble_points(ens, obs, mask)
    return _mean_crps(x, y, kind, v_func=lambda z: np.maximum(z, threshold))


def crps_deterministic(pred: ArrayLike, obs: ArrayLike, mask: ArrayLike | None = None) -> float:
    r"""CRPS of a point forecast, which is its MAE: :math:`\frac{1}{N}\sum_n |\hat y_n - y_n|`.

    (The CRPS of a point mass at :math:`\hat y` is :math:`|\hat y - y|`; the tests check
    this against ``scoringrules.crps_ensemble`` with one member.)
    """
    p, o = np.asarray(pred, float), np.asarray(obs, float)
    if p.shape != o.shape:
        raise ValueError(f"pred shape {p.shape} does not match obs shape {o.shape}")
    d = masked_points(np.abs(p - o), mask)
    return float(d.mean()) if d.size else float("nan")


def twcrps_deterministic(
    pred: ArrayLike, obs: ArrayLike, threshold: float, mask: ArrayLike | None = None
) -> float:
    r"""twCRPS of a point forecast: :math:`\overline{|\max(\hat y, t) - \max(y, t)|}`."""
    return crps_deterministic(np.maximum(pred, threshold), np.maximum(obs, threshold), mask)


def crps_improvement(crps_deterministic: float, crps_generative: float) -> float:
    r"""Improvement of the generative over the deterministic CRPS, in percent:
    :math:`100\,(\mathrm{CRPS}_{det} - \mathrm{CRPS}_{gen}) / \mathrm{CRPS}_{det}`."""
    if crps_deterministic == 0:
        return float("nan")
    return 100.0 * (crps_deterministic - crps_generative) / crps_deterministic


# --------------------------------------------------------------------------- generative checks


def _member_variance(outputs: ArrayLike, mask: ArrayLike | None) -> NDArray[np.float64]:
    x = masked_points(np.asarray(outputs, float), mask, keep=1)
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 repeated outputs, got {x.shape[0]}")
    return x.var(axis=0, ddof=1)


def generative_variance(outputs: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Largest per-pixel variance over repeated outputs ``(n, ...)`` for the same input.

    The seed's "Generative outputs max variance" (its success check: > 1e-3).
    """
    v = _member_variance(outputs, mask)
    return float(v.max()) if v.size else float("nan")


def diversity_score(outputs: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Mean per-pixel variance over repeated outputs ``(n, ...)``: the seed's
    ``torch.var(output, dim=0).mean()`` (its success check: > 0.01)."""
    v = _member_variance(outputs, mask)
    return float(v.mean()) if v.size else float("nan")


def is_deterministic(
    outputs: ArrayLike, mask: ArrayLike | None = None, *, tol: float = DETERMINISTIC_VARIANCE
) -> bool:
    """True when repeated outputs for one input agree up to round-off (max variance < tol)."""
    return generative_variance(outputs, mask) < tol


class UncertaintyStats(NamedTuple):
    """The seed's ENSEMBLE UNCERTAINTY section."""

    shape: tuple[int, ...]  # ensemble shape (m, ...)
    mean_min: float  # range of the ensemble mean
    mean_max: float
    std_min: float  # range of the ensemble std ("uncertainty")
    std_max: float
    std_mean: float  # average uncertainty (success check: > 0.001)


def uncertainty_stats(ens: ArrayLike, mask: ArrayLike | None = None) -> UncertaintyStats:
    """Ranges of the ensemble mean and std (``ddof=1``) over pixels, and the mean std."""
    arr = np.asarray(ens, float)
    x = masked_points(arr, mask, keep=1)
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 members, got {x.shape[0]}")
    mean, std = x.mean(axis=0), x.std(axis=0, ddof=1)
    return UncertaintyStats(
        shape=tuple(arr.shape),
        mean_min=float(mean.min()),
        mean_max=float(mean.max()),
        std_min=float(std.min()),
        std_max=float(std.max()),
        std_mean=float(std.mean()),
    )


class Indicator(NamedTuple):
    value: float
    threshold: float
    passed: bool  # value > threshold (False for NaN)


def success_indicators(
    generative_variance: float,
    diversity: float,
    crps_improvement_pct: float,
    uncertainty: float,
) -> dict[str, Indicator]:
    """The seed's four success checks, each ``value > threshold``.

    Keys and thresholds (:data:`SUCCESS_THRESHOLDS`): ``generative_variance`` > 1e-3
    (:func:`generative_variance`), ``diversity`` > 0.01 (:func:`diversity_score`),
    ``crps_improvement_pct`` > 10 (:func:`crps_improvement`), ``uncertainty`` > 0.001
    (``uncertainty_stats(...).std_mean``). The model "is now GENERATIVE" when all pass.
    """
    values = {
        "generative_variance": generative_variance,
        "diversity": diversity,
        "crps_improvement_pct": crps_improvement_pct,
        "uncertainty": uncertainty,
    }
    return {
        k: Indicator(float(v), SUCCESS_THRESHOLDS[k], bool(v > SUCCESS_THRESHOLDS[k]))
        for k, v in values.items()
    }
