r"""Ensemble CRPS in torch: differentiable, O(m log m) time and O(m) memory per pixel.

Conventions: the ensemble axis is first, ``ens`` has shape ``(m, ...)`` and ``obs`` has
shape ``(...)``. For evaluation without gradients, prefer ``scoringrules`` itself; this module
exists for training (autograd, GPU, memory-bounded gradients).

For members :math:`x_1..x_m` and observation :math:`y`, every estimator here has the form

.. math::
    \mathrm{CRPS} = \frac{1}{m}\sum_i |x_i - y| - \frac{c}{2} \sum_{i,j} |x_i - x_j|

with the spread coefficient :math:`c` depending on ``kind``:

- ``"standard"`` (scoringrules ``estimator="nrg"``): :math:`c = 1/m^2`;
- ``"fair"`` (scoringrules ``estimator="fair"``, Ferro 2014): :math:`c = 1/(m(m-1))`;
- ``"almost_fair"`` (AIFS-CRPS, Lang et al. 2024):
  :math:`\alpha\,\mathrm{fair} + (1-\alpha)\,\mathrm{standard}`, i.e.
  :math:`c = \alpha/(m(m-1)) + (1-\alpha)/m^2 = (1 - (1-\alpha)/m)/(m(m-1))`, which is the
  paper's :math:`\epsilon = (1-\alpha)/m` form.

The pairwise sum is never materialised: with the members sorted,
:math:`x_{(1)} \le \dots \le x_{(m)}`,

.. math::
    \sum_{i,j} |x_i - x_j| = 2 \sum_{k=1}^{m} (2k - m - 1)\, x_{(k)},

so one sort along the ensemble axis gives the score, and autograd through ``torch.sort``
gives its (sub)gradient.

Ties: tied members get the gradients of the sorted positions ``torch.sort`` gives them (a
valid supergradient of the concave spread term; the sum over a tied group equals the
mid-rank value, but its split among the tied members follows the sort's order).
:func:`crps_grad_wrt_members` makes the same ``torch.sort`` call, so on identical inputs it
agrees with autograd exactly, ties included. The default (unstable) sort is used because
``stable=True`` along the ensemble axis is up to 2x slower on CPU for small m; where tied
members carry a gradient (e.g. not exact zeros behind a ReLU) the split among them is an
implementation detail of ``torch.sort``. ``|x - y|`` at ``x == y`` has gradient 0
(``torch.sign(0) == 0``), as in autograd.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

CRPSKind = Literal["standard", "fair", "almost_fair"]
KINDS: tuple[str, ...] = ("standard", "fair", "almost_fair")

__all__ = [
    "KINDS",
    "CRPSKind",
    "chunked_crps_backward",
    "crps_ensemble",
    "crps_grad_wrt_members",
    "crps_loss",
    "reduce_masked",
    "spread_coefficient",
    "twcrps_ensemble",
]


def spread_coefficient(m: int, kind: str = "fair", alpha: float = 0.95) -> float:
    r"""The coefficient :math:`c` of :math:`-\frac{c}{2}\sum_{i,j}|x_i - x_j|` for ``kind``.

    standard: :math:`1/m^2`; fair: :math:`1/(m(m-1))`; almost_fair: the alpha blend
    :math:`\alpha/(m(m-1)) + (1-\alpha)/m^2`.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown CRPS kind {kind!r}; expected one of {KINDS}")
    if m < 1:
        raise ValueError(f"the ensemble needs at least one member, got m={m}")
    standard = 1.0 / m**2
    if kind == "standard":
        return standard
    if m < 2:
        raise ValueError(f"CRPS kind {kind!r} needs at least 2 members, got m={m}")
    fair = 1.0 / (m * (m - 1))
    if kind == "fair":
        return fair
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    return alpha * fair + (1.0 - alpha) * standard


def _rank_weights(m: int, ndim: int, like: Tensor) -> Tensor:
    """``(2k - m - 1)`` for sorted positions k = 1..m, shaped ``(m, 1, ..., 1)`` to broadcast."""
    k = torch.arange(1, m + 1, dtype=like.dtype, device=like.device)
    return (2 * k - m - 1).reshape((m,) + (1,) * (ndim - 1))


def _sort_members(ens: Tensor) -> torch.return_types.sort:
    """The one sort both the score and the closed-form gradient use (same tie order)."""
    return torch.sort(ens, dim=0)


def _check_shapes(ens: Tensor, obs: Tensor) -> None:
    if ens.ndim < 1:
        raise ValueError("ens must have the ensemble axis first, shape (m, ...)")
    if tuple(ens.shape[1:]) != tuple(obs.shape):
        raise ValueError(
            f"ens has shape {tuple(ens.shape)} (m, ...) but obs has shape {tuple(obs.shape)}; "
            f"expected obs shape {tuple(ens.shape[1:])}"
        )


def crps_ensemble(
    ens: Tensor, obs: Tensor, kind: str = "fair", alpha: float = 0.95
) -> Tensor:
    r"""Per-pixel ensemble CRPS, differentiable, without the ``(m, m, ...)`` pairwise tensor.

    .. math::
        \mathrm{CRPS} = \frac{1}{m}\sum_i |x_i - y| - c \sum_{k=1}^{m} (2k - m - 1)\,x_{(k)}

    Args:
        ens: members, shape ``(m, ...)`` (ensemble axis first).
        obs: observation, shape ``(...)`` = ``ens.shape[1:]``.
        kind: ``"standard"`` (scoringrules ``nrg``), ``"fair"`` (scoringrules ``fair``) or
            ``"almost_fair"`` (``alpha * fair + (1 - alpha) * standard``).
        alpha: the almost-fair blend weight (ignored by the other kinds).

    Returns:
        CRPS per pixel, shape ``(...)``.
    """
    _check_shapes(ens, obs)
    m = ens.shape[0]
    c = spread_coefficient(m, kind, alpha)
    skill = (ens - obs).abs().mean(dim=0)
    # One sort: O(m log m) time, O(m) memory per pixel; autograd scatters the gradient of
    # the sorted values back through the indices (the same call as crps_grad_wrt_members).
    sorted_ens = _sort_members(ens).values
    spread = (_rank_weights(m, ens.ndim, ens) * sorted_ens).sum(dim=0)
    return skill - c * spread


def twcrps_ensemble(
    ens: Tensor, obs: Tensor, threshold: float, kind: str = "fair", alpha: float = 0.95
) -> Tensor:
    r"""Threshold-weighted CRPS with the chaining function :math:`v(x) = \max(x, t)`.

    :math:`\mathrm{twCRPS}(x, y) = \mathrm{CRPS}(v(x), v(y))`: only the part of the
    distribution above ``threshold`` is scored (extremes). Matches
    ``scoringrules.twcrps_ensemble(obs, ens, m_axis=0, v_func=lambda x: max(x, t))``.
    ``threshold`` is in the units of ``ens``/``obs`` (physical units at every boundary).
    """
    return crps_ensemble(
        ens.clamp(min=threshold), obs.clamp(min=threshold), kind=kind, alpha=alpha
    )


def reduce_masked(score: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean of ``score`` over every leading axis and the pixels where ``mask`` is True.

    Args:
        score: per-pixel score, shape ``(B, ..., H, W)``.
        mask: ``(H, W)`` bool (True = land, scored) or None (all pixels).

    Returns:
        A scalar tensor (differentiable).
    """
    if mask is None:
        return score.mean()
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got dtype {mask.dtype}")
    if score.ndim < 2 or tuple(mask.shape) != tuple(score.shape[-2:]):
        raise ValueError(
            f"mask has shape {tuple(mask.shape)} but score has shape {tuple(score.shape)}; "
            "expected mask shape (H, W) = score.shape[-2:]"
        )
    if not bool(mask.any()):
        raise ValueError("mask has no True pixel: nothing to score")
    # Boolean indexing over the trailing (H, W) keeps every leading axis: (..., n_land).
    return score[..., mask].mean()


def crps_loss(
    ens: Tensor,
    obs: Tensor,
    mask: Tensor | None = None,
    kind: str = "fair",
    alpha: float = 0.95,
) -> Tensor:
    """Training loss: mean CRPS over batch and (land) pixels, ``ens`` ``(m, B, ..., H, W)``."""
    return reduce_masked(crps_ensemble(ens, obs, kind=kind, alpha=alpha), mask)


def crps_grad_wrt_members(
    ens: Tensor, obs: Tensor, kind: str = "fair", alpha: float = 0.95
) -> Tensor:
    r"""Closed-form gradient of the per-pixel CRPS with respect to each member.

    .. math::
        \frac{\partial\,\mathrm{CRPS}}{\partial x_i}
        = \frac{1}{m}\,\mathrm{sign}(x_i - y) - c \sum_j \mathrm{sign}(x_i - x_j)
        = \frac{1}{m}\,\mathrm{sign}(x_i - y) - c\,(2 r_i - m - 1)

    with :math:`r_i` the 1-based rank of member i and :math:`c` from
    :func:`spread_coefficient` (fair: :math:`1/(m(m-1))`, standard: :math:`1/m^2`).
    Ranks come from the same sort as :func:`crps_ensemble`, so the result equals
    autograd's gradient of ``crps_ensemble(...).sum()`` exactly, ties included (see the
    module docstring). No graph is built.

    Returns:
        ``(m, ...)``, the same shape as ``ens``.
    """
    _check_shapes(ens, obs)
    m = ens.shape[0]
    c = spread_coefficient(m, kind, alpha)
    with torch.no_grad():
        order = _sort_members(ens).indices
        weights = _rank_weights(m, ens.ndim, ens).expand_as(ens)
        # Member order[k] sits at sorted position k: scatter the position weights back.
        rank_term = torch.empty_like(ens).scatter_(0, order, weights)
        return torch.sign(ens - obs).div_(m).sub_(rank_term, alpha=c)


def chunked_crps_backward(
    generate_chunk: Callable[[int, int], Tensor],
    m: int,
    chunk_size: int,
    obs: Tensor,
    mask: Tensor | None = None,
    kind: str = "fair",
    alpha: float = 0.95,
) -> float:
    r"""Exact CRPS-loss gradient for the model's parameters, with memory bounded by the chunk.

    Equivalent to ``crps_loss(all_members, obs, mask, kind, alpha).backward()`` but never
    holds the graph of more than ``chunk_size`` members:

    1. generate the m members chunk by chunk under ``torch.no_grad()`` (outputs only);
    2. compute the loss and :math:`\partial L/\partial x_i` in closed form
       (:func:`crps_grad_wrt_members` times the gradient of the masked mean);
    3. regenerate each chunk *with* a graph and call ``chunk.backward(grad_chunk)``, so the
       parameters' ``.grad`` accumulate (the caller zeroes them before, as usual).

    Because the CRPS couples the members only through their values, the chain rule splits
    over members: :math:`\partial L/\partial\theta = \sum_i (\partial L/\partial x_i)
    (\partial x_i/\partial\theta)`.

    Contract for ``generate_chunk(start, stop)``:

    - returns members ``start .. stop-1`` as a tensor of shape ``(stop - start, *obs.shape)``,
      built from the model's parameters (with autograd enabled when the caller enables it);
    - is reproducible: the second call for the same range returns the same values (pre-draw
      the per-member noise, e.g. ``eps[start:stop]``; keep dropout off or seeded);
    - member i must not depend on the other members of its chunk (no BatchNorm in training
      mode across the member axis), otherwise chunking changes the function.

    Args:
        generate_chunk: ``(start, stop) -> (stop - start, ...)`` members.
        m: ensemble size.
        chunk_size: members per chunk (peak activation memory scales with this, not m).
        obs: observation, shape ``(B, ..., H, W)``.
        mask: ``(H, W)`` bool land mask or None.
        kind, alpha: as in :func:`crps_ensemble`.

    Returns:
        The loss value (a float).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    bounds = [(s, min(s + chunk_size, m)) for s in range(0, m, chunk_size)]

    with torch.no_grad():
        chunks = []
        for start, stop in bounds:
            chunk = generate_chunk(start, stop)
            expected = (stop - start, *obs.shape)
            if tuple(chunk.shape) != expected:
                raise ValueError(
                    f"generate_chunk({start}, {stop}) returned shape {tuple(chunk.shape)}, "
                    f"expected {expected} (members, *obs.shape)"
                )
            chunks.append(chunk.detach())
        ens = torch.cat(chunks, dim=0)
        del chunks
        score = crps_ensemble(ens, obs, kind=kind, alpha=alpha)

    # dL/dscore from the reduction itself (one tiny graph), so the weights always match
    # reduce_masked: 1/N on the scored pixels, 0 elsewhere.
    score.requires_grad_(True)
    with torch.enable_grad():
        loss = reduce_masked(score, mask)
        (grad_score,) = torch.autograd.grad(loss, score)

    grad_ens = crps_grad_wrt_members(ens, obs, kind=kind, alpha=alpha).mul_(grad_score)
    del ens, score

    for start, stop in bounds:
        with torch.enable_grad():
            chunk = generate_chunk(start, stop)
            chunk.backward(grad_ens[start:stop])
    return float(loss.detach())
