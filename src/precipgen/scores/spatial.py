r"""Spatial structure: radially averaged power spectra, fractions skill score, correlation.

Fields have shape ``(..., H, W)`` (any leading axes: days, members) in physical units;
``mask`` is an optional boolean ``(H, W)`` array (True = land / scored pixel). Spectra and
FSS need whole fields, so pixels outside the mask are set to 0 (no rain, no event) before
filtering or transforming; FSS and correlation then score only the pixels inside it.

Own implementations, checked in the tests against pysteps on the same fields:
:func:`rapsd` = ``pysteps.utils.spectral.rapsd(field, fft_method=numpy.fft,
return_freq=True)``, :func:`fss` = ``pysteps.verification.spatialscores.fss`` (one field,
no mask), accumulated over fields as ``fss_accum`` does.

References
----------
- Ruzanski, E., Chandrasekar, V. (2011). Scale filtering for improved nowcasting
  performance in a high-resolution X-band radar network. IEEE TGRS 49, 2296-2307 (RAPSD).
- Roberts, N. M., Lean, H. W. (2008). Scale-selective verification of rainfall
  accumulations from high-resolution forecasts of convective events. Mon. Wea. Rev. 136,
  78-97 (FSS).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from precipgen.scores.extremes import masked_points

__all__ = [
    "fss",
    "fss_curve",
    "fss_target",
    "rapsd",
    "spatial_correlation",
    "spectral_ratio",
]


_FIELDS_PER_CHUNK = 64


def _fill_outside(x: ArrayLike, mask: ArrayLike | None, value: float = 0.0) -> NDArray:
    x = np.asarray(x, float)
    if x.ndim < 2:
        raise ValueError(f"expected fields of shape (..., H, W), got shape {x.shape}")
    if mask is None:
        return x
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != x.shape[-2:]:
        raise ValueError(
            f"mask must be boolean with shape {x.shape[-2:]}, got {mask.dtype} {mask.shape}"
        )
    return np.where(mask, x, value)


# --------------------------------------------------------------------------- power spectra


def _radius_bins(h: int, w: int) -> tuple[NDArray[np.int64], int]:
    """Integer radius of each pixel of the fftshifted spectrum, and the number of bins."""
    # Centred index coordinates -n//2 .. (n-1)//2 (the zero frequency after fftshift), in
    # index units along each axis, as pysteps' compute_centred_coord_array.
    yc = np.arange(h) - h // 2
    xc = np.arange(w) - w // 2
    r = np.rint(np.hypot(yc[:, None], xc[None, :])).astype(np.int64)
    n = max(h, w)
    return r, (n // 2 if n % 2 == 0 else n // 2 + 1)


def rapsd(
    fields: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    d: float = 1.0,
    normalize: bool = False,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    r"""Radially averaged power spectral density of each 2D field, and its frequencies.

    With :math:`\hat F` the 2D DFT of an :math:`H \times W` field, the power is
    :math:`P(k_y, k_x) = |\hat F|^2 / (HW)` and the RAPSD at radius :math:`r` is the mean
    of :math:`P` over the wavenumbers with :math:`\mathrm{round}(\sqrt{k_y^2 + k_x^2}) = r`
    (index units on each axis), for :math:`r = 0, \dots, L/2 - 1` (:math:`L = \max(H, W)`
    even) or :math:`0, \dots, \lfloor L/2 \rfloor` (odd). Frequencies are
    ``numpy.fft.fftfreq(L, d)[r]`` (cycles per ``d``; wavelength = 1/freq). This is
    exactly pysteps' ``rapsd`` convention. ``normalize`` scales each spectrum to sum 1.

    ``fields`` is ``(..., H, W)``; the result is ``(..., n_bins)``. Pixels outside
    ``mask`` are set to 0 first (a coastline then adds some high-frequency power to model
    and truth alike).
    """
    x = _fill_outside(fields, mask)
    if not np.isfinite(x).all():
        raise ValueError("fields contain NaN or inf inside the scored area; pass a mask")
    h, w = x.shape[-2:]
    r, n_bins = _radius_bins(h, w)
    r = r.ravel()
    keep = r < n_bins
    # One matrix product averages every field's spectrum over its rings at once.
    rings = np.zeros((keep.sum(), n_bins))
    rings[np.arange(keep.sum()), r[keep]] = 1.0
    rings /= rings.sum(axis=0)
    flat = x.reshape(-1, h, w)
    out = np.empty((flat.shape[0], n_bins))
    for a in range(0, flat.shape[0], _FIELDS_PER_CHUNK):  # bounded memory for long stacks
        spec = np.fft.fftshift(np.fft.fft2(flat[a : a + _FIELDS_PER_CHUNK]), axes=(-2, -1))
        psd = np.abs(spec) ** 2 / (h * w)
        out[a : a + _FIELDS_PER_CHUNK] = psd.reshape(-1, h * w)[:, keep] @ rings
    out = out.reshape(*x.shape[:-2], n_bins)
    if normalize:
        out = out / out.sum(axis=-1, keepdims=True)
    freq = np.fft.fftfreq(max(h, w), d=d)[:n_bins]
    return out, freq


def spectral_ratio(
    pred: ArrayLike,
    truth: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    min_freq: float = 0.25,
) -> float:
    r"""Model / truth power at the smallest scales: < 1 means over-smoothing.

    .. math:: \frac{\sum_{f \ge f_0} \bar P_{pred}(f)}{\sum_{f \ge f_0} \bar P_{truth}(f)}

    with :math:`\bar P` the RAPSD averaged over all fields (days, members) and
    :math:`f_0` = ``min_freq`` in cycles per pixel (0.25: wavelengths of 4 px and less).
    The ratio of summed power is the fraction of the truth's small-scale variance that the
    model reproduces.
    """
    p_pred, freq = rapsd(pred, mask)
    p_truth, _ = rapsd(truth, mask)
    sel = freq >= min_freq
    if not sel.any():
        raise ValueError(f"no frequency >= min_freq={min_freq}; the highest is {freq.max()}")
    p = p_pred.reshape(-1, freq.size).mean(axis=0)[sel].sum()
    t = p_truth.reshape(-1, freq.size).mean(axis=0)[sel].sum()
    return float(p / t) if t > 0 else float("nan")


# --------------------------------------------------------------------------- FSS


def _integral_image(events: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Summed-area table with a leading zero row and column: ``(..., H + 1, W + 1)``."""
    h, w = events.shape[-2:]
    s = np.zeros((*events.shape[:-2], h + 1, w + 1), dtype=np.int64)
    s[..., 1:, 1:] = events.cumsum(axis=-2, dtype=np.int64).cumsum(axis=-1)
    return s


def _window_counts(s: NDArray[np.int64], scale: int) -> NDArray[np.int64]:
    """Number of event pixels in the ``scale x scale`` window around each pixel.

    ``s`` is the integral image (:func:`_integral_image`), so counts are exact integers.
    The window covers offsets ``-(scale // 2) .. scale - 1 - scale // 2`` on each axis and
    pixels outside the field count as non-events, as
    ``scipy.ndimage.uniform_filter(mode="constant", cval=0)`` (used by pysteps) does.
    """
    h, w = s.shape[-2] - 1, s.shape[-1] - 1
    lo_y = np.clip(np.arange(h) - scale // 2, 0, h)
    lo_x = np.clip(np.arange(w) - scale // 2, 0, w)
    hi_y = np.clip(np.arange(h) - scale // 2 + scale, 0, h)
    hi_x = np.clip(np.arange(w) - scale // 2 + scale, 0, w)
    rows = np.take(s, hi_y, axis=-2) - np.take(s, lo_y, axis=-2)
    return np.take(rows, hi_x, axis=-1) - np.take(rows, lo_x, axis=-1)


def _event_integrals(
    pred: ArrayLike, obs: ArrayLike, threshold: float, mask: ArrayLike | None
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    p, o = np.asarray(pred, float), np.asarray(obs, float)
    if p.shape != o.shape:
        raise ValueError(f"pred shape {p.shape} does not match obs shape {o.shape}")

    def events(x: NDArray) -> NDArray[np.bool_]:
        # non-finite values are no event (as in pysteps), and so are pixels outside the mask
        e = np.isfinite(x) & (np.where(np.isfinite(x), x, 0.0) >= threshold)
        return _fill_outside(e, mask).astype(bool)

    return _integral_image(events(p)), _integral_image(events(o))


def _fss_from_integrals(
    sp: NDArray[np.int64], so: NDArray[np.int64], scale: int, mask: ArrayLike | None
) -> float:
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive whole number of pixels, got {scale}")
    cf, co = _window_counts(sp, int(scale)), _window_counts(so, int(scale))
    # Fractions are counts / scale^2, which cancels in the ratio: integer sums are exact.
    # Sum over fields first, then over the masked pixels of the (H, W) totals.
    lead = tuple(range(cf.ndim - 2))
    sums = [(a * b).sum(axis=lead) for a, b in ((cf - co, cf - co), (cf, cf), (co, co))]
    if mask is not None:
        sums = [t[np.asarray(mask)] for t in sums]
    num, den_f, den_o = (int(t.sum()) for t in sums)
    if den_f + den_o == 0:
        return float("nan")
    return 1.0 - num / (den_f + den_o)


def fss(
    pred: ArrayLike,
    obs: ArrayLike,
    threshold: float,
    scale: int,
    mask: ArrayLike | None = None,
) -> float:
    r"""Fractions skill score of the event :math:`x \ge t` at one window size (pixels).

    With :math:`F`, :math:`O` the fractions of event pixels in the ``scale x scale`` window
    around each pixel (outside the field, outside ``mask`` and non-finite: no event),

    .. math:: \mathrm{FSS} = 1 - \frac{\sum (F - O)^2}{\sum F^2 + \sum O^2},

    sums over the pixels in ``mask`` of all fields (``(..., H, W)``: days are accumulated
    as pysteps' ``fss_accum``, not averaged). 1 is perfect; NaN when neither has an event.
    For an ensemble, score each member and average.
    """
    sp, so = _event_integrals(pred, obs, threshold, mask)
    return _fss_from_integrals(sp, so, scale, mask)


def fss_curve(
    pred: ArrayLike,
    obs: ArrayLike,
    threshold: float,
    scales: Iterable[int] = range(1, 33),
    mask: ArrayLike | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """FSS at each window size in ``scales`` (default 1..32 px): ``(scales, fss)``."""
    sc = np.asarray(list(scales), dtype=np.int64)
    sp, so = _event_integrals(pred, obs, threshold, mask)  # once for all scales
    return sc, np.array([_fss_from_integrals(sp, so, int(s), mask) for s in sc])


def fss_target(obs: ArrayLike, threshold: float, mask: ArrayLike | None = None) -> float:
    r"""The "useful" FSS level :math:`0.5 + f_o / 2`, :math:`f_o` the observed event
    frequency (Roberts & Lean 2008): the smallest scale where the FSS exceeds it is the
    skilful scale."""
    v = masked_points(obs, mask)
    return 0.5 + float(np.mean(v >= threshold)) / 2.0 if v.size else float("nan")


# --------------------------------------------------------------------------- correlation


def spatial_correlation(
    pred: ArrayLike, obs: ArrayLike, mask: ArrayLike | None = None
) -> NDArray[np.float64] | float:
    r"""Pearson correlation between each pair of fields over the pixels in ``mask``.

    .. math:: r = \frac{\sum_p (\hat y_p - \bar{\hat y})(y_p - \bar y)}
       {\sqrt{\sum_p (\hat y_p - \bar{\hat y})^2 \sum_p (y_p - \bar y)^2}}

    ``(..., H, W)`` in, ``(...)`` out (a float for one field); NaN where a field is
    constant (e.g. all dry). Average over days yourself (``np.nanmean``).
    """
    p, o = np.asarray(pred, float), np.asarray(obs, float)
    if p.shape != o.shape or p.ndim < 2:
        raise ValueError(f"pred {p.shape} and obs {o.shape} must be equal shapes (..., H, W)")
    lead = p.shape[:-2]
    if mask is None:
        a, b = p.reshape(*lead, -1), o.reshape(*lead, -1)
    else:
        m = np.asarray(mask)
        if m.dtype != bool or m.shape != p.shape[-2:]:
            raise ValueError(f"mask must be boolean with shape {p.shape[-2:]}, got {m.shape}")
        a, b = p[..., m], o[..., m]
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(denom > 0, (a * b).sum(axis=-1) / denom, np.nan)
    return float(r) if r.ndim == 0 else r
