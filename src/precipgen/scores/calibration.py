r"""Calibration of ensembles: spread-skill, rank histogram, reliability diagram, Brier score.

Conventions: the ensemble axis is first, ``ens`` has shape ``(m, ..., H, W)`` and ``obs``
``(..., H, W)``, both in physical units; ``mask`` is an optional boolean ``(H, W)`` array
(True = land / scored pixel) on the last two axes. Every pixel of every day inside the mask
is one forecast-observation pair. A threshold event is ``x >= threshold`` (the convention of
pysteps' FSS and of :func:`precipgen.scores.extremes.mae_tail`).

References
----------
- Fortin, V., Abaza, M., Anctil, F., Turcotte, R. (2014). Why should ensemble spread match
  the RMSE of the ensemble mean? J. Hydrometeor. 15, 1708-1713.
- Hamill, T. M. (2001). Interpretation of rank histograms for verifying ensemble forecasts.
  Mon. Wea. Rev. 129, 550-560.
- Delle Monache, L., et al. (2006). Probabilistic aspects of meteorological and ozone
  regional ensemble forecasts. J. Geophys. Res. 111, D24307 (reliability index).
- Wilks, D. S. (2011). Statistical Methods in the Atmospheric Sciences, 3rd ed., ch. 8
  (reliability diagram, Brier score).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scoringrules as sr
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from precipgen.scores.extremes import ensemble_points, masked_points

__all__ = [
    "Flatness",
    "Reliability",
    "SpreadSkill",
    "brier_score",
    "brier_skill_score",
    "exceedance_probability",
    "rank_histogram",
    "rank_histogram_flatness",
    "reliability_diagram",
    "spread_skill",
    "spread_skill_binned",
    "spread_skill_ratio",
]



# --------------------------------------------------------------------------- spread-skill


class SpreadSkill(NamedTuple):
    """Corrected ensemble spread, RMSE of the ensemble mean, their ratio, and the sizes."""

    spread: float  # sqrt((m+1)/m * mean unbiased ensemble variance)
    rmse: float  # RMSE of the ensemble mean
    ratio: float  # spread / rmse; 1 for a reliable ensemble, < 1 under-dispersive
    m: int
    n: int  # number of forecast-observation pairs


def spread_skill(ens: ArrayLike, obs: ArrayLike, mask: ArrayLike | None = None) -> SpreadSkill:
    r"""Spread-skill with the finite-ensemble correction of Fortin et al. (2014).

    For a reliable :math:`m`-member ensemble (members and observation exchangeable),
    :math:`E[(\bar x - y)^2] = \frac{m+1}{m} E[s^2]`, with :math:`\bar x` the ensemble mean
    and :math:`s^2 = \frac{1}{m-1}\sum_i (x_i - \bar x)^2` the unbiased ensemble variance.
    Hence, averaging over the :math:`N` pairs *before* the square roots,

    .. math::
        \mathrm{spread} = \sqrt{\frac{m+1}{m}\,\frac{1}{N}\sum_n s_n^2}, \qquad
        \mathrm{RMSE} = \sqrt{\frac{1}{N}\sum_n (\bar x_n - y_n)^2}, \qquad
        \mathrm{SSR} = \mathrm{spread} / \mathrm{RMSE},

    and SSR is 1 in expectation for a reliable ensemble of any size (without the factor a
    reliable 10-member ensemble would score about 0.95). SSR < 1: under-dispersive
    (over-confident); > 1: over-dispersive.
    """
    x, y = ensemble_points(ens, obs, mask)
    m, n = x.shape
    if m < 2:
        raise ValueError(f"spread-skill needs at least 2 members, got m={m}")
    if n == 0:
        return SpreadSkill(float("nan"), float("nan"), float("nan"), m, 0)
    spread = float(np.sqrt((m + 1) / m * x.var(axis=0, ddof=1).mean()))
    rmse = float(np.sqrt(((x.mean(axis=0) - y) ** 2).mean()))
    ratio = spread / rmse if rmse > 0 else float("nan")
    return SpreadSkill(spread, rmse, ratio, m, n)


def spread_skill_ratio(ens: ArrayLike, obs: ArrayLike, mask: ArrayLike | None = None) -> float:
    """The corrected spread-skill ratio of :func:`spread_skill` (1 = reliable)."""
    return spread_skill(ens, obs, mask).ratio


def spread_skill_binned(
    ens: ArrayLike, obs: ArrayLike, mask: ArrayLike | None = None, *, n_bins: int = 10
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Spread-error curve: pairs binned by ensemble variance (equal-count bins).

    Returns ``(spread, rmse, counts)`` per bin, each computed as in :func:`spread_skill`
    within the bin; a reliable ensemble lies near the diagonal. Caveat: binning by the
    *sampled* variance selects on its noise, so with few members and skewed (gamma-like,
    zero-inflated) distributions even a reliable ensemble falls below the diagonal in the
    low bins and above it in the high ones; compare models on the same ensemble size and
    read :func:`spread_skill` for the overall ratio. Pairs with equal variance (e.g.
    all-dry ensembles) may make bins uneven.
    """
    x, y = ensemble_points(ens, obs, mask)
    m = x.shape[0]
    if m < 2:
        raise ValueError(f"spread-skill needs at least 2 members, got m={m}")
    var = x.var(axis=0, ddof=1)
    sq_err = (x.mean(axis=0) - y) ** 2
    edges = np.quantile(var, np.linspace(0.0, 1.0, n_bins + 1)) if var.size else np.zeros(n_bins + 1)
    idx = np.clip(np.searchsorted(edges, var, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = np.sqrt((m + 1) / m * np.bincount(idx, var, n_bins) / counts)
        rmse = np.sqrt(np.bincount(idx, sq_err, n_bins) / counts)
    return spread, rmse, counts


# --------------------------------------------------------------------------- rank histogram


def rank_histogram(
    ens: ArrayLike,
    obs: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    rng: np.random.Generator | int | None = 0,
    x_min: float | None = None,
) -> NDArray[np.int64]:
    r"""Counts of the observation's rank among the members: ``m + 1`` bins.

    The rank of :math:`y` is :math:`\#\{i: x_i < y\} + U`, with :math:`U` uniform on
    :math:`\{0, \dots, \#\{i: x_i = y\}\}`: ties (many dry zeros in precipitation) are
    broken uniformly at random. Counting ties as "below" or "above" would pile every
    dry-dry pair into one bin and fake a bias; random tie-breaking keeps a reliable
    ensemble flat (Hamill 2001). This is also what pysteps' ``rankhist_accum`` does, with a
    seeded :class:`numpy.random.Generator` (``rng``) instead of the global state.

    Pairs with a non-finite observation or member are skipped. ``x_min`` (as in pysteps):
    pairs where the observation and all members are below ``x_min`` are skipped, and values
    below ``x_min`` are treated as equal (so sub-threshold drizzle counts as a tie).

    Sum histograms of several calls (e.g. per day) to accumulate, passing one Generator
    to all of them (an int seed restarts the same random stream in every call).
    """
    x, y = ensemble_points(ens, obs, mask)
    m = x.shape[0]
    ok = np.isfinite(y) & np.isfinite(x).all(axis=0)
    if x_min is not None:
        ok &= (y >= x_min) | (x >= x_min).any(axis=0)
    x, y = x[:, ok], y[ok]
    if x_min is not None:
        x = np.where(x < x_min, x_min - 1.0, x)
        y = np.where(y < x_min, x_min - 1.0, y)
    below = (x < y).sum(axis=0)
    ties = (x == y).sum(axis=0)
    gen = np.random.default_rng(rng)
    rank = below + gen.integers(0, ties + 1)  # uniform over the tie positions
    return np.bincount(rank, minlength=m + 1).astype(np.int64)


class Flatness(NamedTuple):
    """How flat a rank histogram is."""

    chi2: float  # Pearson chi-square statistic against the uniform histogram
    dof: int  # m (bins - 1)
    p_value: float  # P(chi2_dof >= chi2); small = not flat
    reliability_index: float  # sum_k |f_k - 1/(m+1)|; 0 = flat (Delle Monache et al. 2006)


def rank_histogram_flatness(counts: ArrayLike, *, n_eff: float | None = None) -> Flatness:
    r"""Chi-square test of uniformity and reliability index of rank histogram ``counts``.

    With :math:`K = m + 1` bins, :math:`N` pairs, frequencies :math:`f_k = n_k/N`:

    .. math::
        \chi^2 = \sum_k \frac{(n_k - N/K)^2}{N/K}
               = N K \sum_k (f_k - 1/K)^2, \qquad
        \mathrm{RI} = \sum_k |f_k - 1/K|,

    p-value from :math:`\chi^2_{K-1}`. The test assumes independent pairs; neighbouring
    pixels of one field are strongly correlated, so with :math:`N` pixel-days it rejects
    almost any real ensemble. Pass ``n_eff`` (an effective number of independent pairs,
    e.g. the number of days times a few) to scale the statistic as :math:`n_{eff} K
    \sum_k (f_k - 1/K)^2`. RI does not depend on :math:`N` and is the number to compare
    between models.
    """
    n_k = np.asarray(counts, float)
    k = n_k.size
    if k < 2:
        raise ValueError(f"a rank histogram needs at least 2 bins, got {k}")
    total = n_k.sum()
    if total == 0:
        return Flatness(float("nan"), k - 1, float("nan"), float("nan"))
    f = n_k / total
    n = total if n_eff is None else float(n_eff)
    chi2 = float(n * k * ((f - 1.0 / k) ** 2).sum())
    return Flatness(
        chi2=chi2,
        dof=k - 1,
        p_value=float(stats.chi2.sf(chi2, k - 1)),
        reliability_index=float(np.abs(f - 1.0 / k).sum()),
    )


# --------------------------------------------------------------------------- probability of exceedance


def exceedance_probability(ens: ArrayLike, threshold: float) -> NDArray[np.float64]:
    r"""Ensemble probability of the event :math:`x \ge t`: the fraction of members, ``(...)``."""
    return (np.asarray(ens) >= threshold).mean(axis=0)


class Reliability(NamedTuple):
    """Reliability diagram data; empty bins hold NaN."""

    bin_edges: NDArray[np.float64]  # (n_bins + 1,) forecast probability bin edges
    forecast: NDArray[np.float64]  # mean forecast probability per bin
    observed: NDArray[np.float64]  # observed event frequency per bin
    counts: NDArray[np.int64]  # pairs per bin (the sharpness diagram)
    base_rate: float  # observed event frequency over all pairs (climatology)


def reliability_diagram(
    ens: ArrayLike,
    obs: ArrayLike,
    threshold: float,
    mask: ArrayLike | None = None,
    *,
    n_bins: int | None = None,
) -> Reliability:
    r"""Reliability diagram for the event :math:`x \ge t` (e.g. ``t`` = truth P95 or P99).

    The forecast probability of a pair is the fraction of members at or above ``t``; pairs
    are binned by it and, per bin, the mean forecast probability is set against the
    observed event frequency. Reliable forecasts lie on the diagonal. By default there is
    one bin per attainable probability :math:`k/m` (edges at :math:`(k \pm 1/2)/m`);
    ``n_bins`` gives equal-width bins on [0, 1] instead.

    Caveat: :math:`k/m` is a noisy estimate of the members' true probability, so with few
    members even a perfect ensemble's curve is flatter than the diagonal (observed
    frequencies shrink towards the base rate); its calibration in the large
    (``sum(counts * forecast) / sum(counts) == base_rate``) holds for any ``m``.
    """
    x, y = ensemble_points(ens, obs, mask)
    m = x.shape[0]
    prob = (x >= threshold).mean(axis=0)
    event = (y >= threshold).astype(float)
    if n_bins is None:
        edges = np.clip((np.arange(m + 2) - 0.5) / m, 0.0, 1.0)
    else:
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    nb = edges.size - 1
    idx = np.clip(np.searchsorted(edges, prob, side="right") - 1, 0, nb - 1)
    counts = np.bincount(idx, minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        forecast = np.bincount(idx, prob, nb) / counts
        observed = np.bincount(idx, event, nb) / counts
    base_rate = float(event.mean()) if event.size else float("nan")
    return Reliability(edges, forecast, observed, counts.astype(np.int64), base_rate)


def brier_score(
    ens: ArrayLike, obs: ArrayLike, threshold: float, mask: ArrayLike | None = None
) -> float:
    r"""Brier score of the ensemble probability of :math:`x \ge t` (``scoringrules.brier_score``).

    .. math:: \mathrm{BS} = \frac{1}{N}\sum_n (p_n - o_n)^2, \quad
       p_n = \frac{1}{m}\sum_i 1\{x_{i,n} \ge t\}, \quad o_n = 1\{y_n \ge t\}

    0 is perfect. A deterministic forecast is the ``m = 1`` case (``ens[None]``).
    """
    x, y = ensemble_points(ens, obs, mask)
    if y.size == 0:
        return float("nan")
    prob = (x >= threshold).mean(axis=0)
    event = (y >= threshold).astype(float)
    return float(np.mean(sr.brier_score(event, prob, backend="numpy")))


def brier_skill_score(
    ens: ArrayLike, obs: ArrayLike, threshold: float, mask: ArrayLike | None = None
) -> float:
    r"""Brier skill score against the sample climatology of the observations:

    .. math:: \mathrm{BSS} = 1 - \mathrm{BS} / (\bar o (1 - \bar o))

    1 is perfect, 0 no better than always forecasting the base rate :math:`\bar o`; NaN
    when the event never (or always) occurs.
    """
    bs = brier_score(ens, obs, threshold, mask)
    o = float(np.mean(masked_points(obs, mask) >= threshold))
    ref = o * (1.0 - o)
    return 1.0 - bs / ref if ref > 0 else float("nan")
