"""Ensemble CRPS: values vs scoringrules, gradients vs the naive pairwise form, chunked exactness."""

from __future__ import annotations

import numpy as np
import pytest
import scoringrules as sr
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from precipgen.scores.crps import (
    chunked_crps_backward,
    crps_ensemble,
    crps_grad_wrt_members,
    crps_loss,
    reduce_masked,
    spread_coefficient,
    twcrps_ensemble,
)

SR_ESTIMATOR = {"standard": "nrg", "fair": "fair"}
ALL_KINDS = ("standard", "fair", "almost_fair")


def precip_like(shape: tuple[int, ...], seed: int, p_zero: float = 0.6) -> torch.Tensor:
    """60% exact zeros, the rest gamma rounded to 0.1 mm: many ties, as in real precipitation."""
    rng = np.random.default_rng(seed)
    wet = rng.gamma(shape=0.8, scale=3.0, size=shape).round(1)
    return torch.from_numpy(np.where(rng.random(shape) < p_zero, 0.0, wet))


def continuous(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Distinct values almost surely (no ties): the score is differentiable there."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64)


def naive_crps(ens: torch.Tensor, obs: torch.Tensor, kind: str, alpha: float = 0.95):
    """The textbook O(m^2) pairwise form, written independently of the module."""
    m = ens.shape[0]
    skill = (ens - obs).abs().mean(0)
    pair_sum = (ens[:, None] - ens[None, :]).abs().sum((0, 1))
    if kind == "standard":
        return skill - pair_sum / (2 * m**2)
    if kind == "fair":
        return skill - pair_sum / (2 * m * (m - 1))
    # AIFS-CRPS as written by Lang et al. (2024): epsilon = (1 - alpha) / m on the pair term.
    eps = (1 - alpha) / m
    return skill - (1 - eps) * pair_sum / (2 * m * (m - 1))


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("m", [2, 3, 7, 20])
@pytest.mark.parametrize("kind", ["standard", "fair"])
def test_matches_scoringrules_with_ties_and_zeros(m: int, kind: str) -> None:
    ens = precip_like((m, 3, 9, 8), seed=m)
    obs = precip_like((3, 9, 8), seed=100 + m)
    ours = crps_ensemble(ens, obs, kind=kind).numpy()
    ref = sr.crps_ensemble(
        obs.numpy(), ens.numpy(), m_axis=0, estimator=SR_ESTIMATOR[kind], backend="numpy"
    )
    assert (ens == 0).double().mean() > 0.4  # the data really is tie-heavy
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("threshold", [0.0, 0.5, 3.0])
@pytest.mark.parametrize("kind", ["standard", "fair"])
def test_twcrps_matches_scoringrules(threshold: float, kind: str) -> None:
    ens = precip_like((9, 4, 7, 6), seed=1)
    obs = precip_like((4, 7, 6), seed=2)
    ours = twcrps_ensemble(ens, obs, threshold, kind=kind).numpy()
    ref = sr.twcrps_ensemble(
        obs.numpy(), ens.numpy(), m_axis=0, v_func=lambda x: np.maximum(x, threshold),
        estimator=SR_ESTIMATOR[kind], backend="numpy",
    )
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-12)
    # Weighting only removes mass below t: never above the plain CRPS.
    assert np.all(ours <= crps_ensemble(ens, obs, kind=kind).numpy() + 1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.95, 1.0])
def test_almost_fair_is_the_alpha_blend_and_the_aifs_form(alpha: float) -> None:
    ens = precip_like((5, 6, 7), seed=3)
    obs = precip_like((6, 7), seed=4)
    af = crps_ensemble(ens, obs, kind="almost_fair", alpha=alpha)
    blend = alpha * crps_ensemble(ens, obs, kind="fair") + (1 - alpha) * crps_ensemble(
        ens, obs, kind="standard"
    )
    torch.testing.assert_close(af, blend, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(af, naive_crps(ens, obs, "almost_fair", alpha), rtol=1e-12,
                               atol=1e-12)


def test_single_member_standard_is_absolute_error_and_fair_refuses() -> None:
    ens = precip_like((1, 4, 5), seed=5)
    obs = precip_like((4, 5), seed=6)
    torch.testing.assert_close(crps_ensemble(ens, obs, kind="standard"), (ens[0] - obs).abs())
    with pytest.raises(ValueError, match="at least 2 members"):
        crps_ensemble(ens, obs, kind="fair")


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="obs shape"):
        crps_ensemble(torch.zeros(4, 3, 5), torch.zeros(3, 6))
    with pytest.raises(ValueError, match="unknown CRPS kind"):
        crps_ensemble(torch.zeros(4, 3), torch.zeros(3), kind="nrg")
    with pytest.raises(ValueError, match="mask has shape"):
        reduce_masked(torch.zeros(2, 5, 6), torch.ones(6, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="no True pixel"):
        reduce_masked(torch.zeros(2, 5, 6), torch.zeros(5, 6, dtype=torch.bool))


def test_reduce_masked_is_the_mean_over_land_pixels() -> None:
    score = continuous((2, 3, 4, 5), seed=7)
    mask = torch.zeros(4, 5, dtype=torch.bool)
    mask[1:3, 2:] = True
    expected = score[:, :, 1:3, 2:].mean()
    torch.testing.assert_close(reduce_masked(score, mask), expected)
    torch.testing.assert_close(reduce_masked(score, None), score.mean())


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("m", [2, 5, 12])
def test_gradient_matches_naive_pairwise_autograd(kind: str, m: int) -> None:
    ens = continuous((m, 3, 4), seed=m).requires_grad_(True)
    obs = continuous((3, 4), seed=50 + m)
    weights = continuous((3, 4), seed=99)  # a non-uniform upstream gradient
    (g_ours,) = torch.autograd.grad((crps_ensemble(ens, obs, kind) * weights).sum(), ens)
    (g_naive,) = torch.autograd.grad((naive_crps(ens, obs, kind) * weights).sum(), ens)
    torch.testing.assert_close(g_ours, g_naive, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_gradcheck(kind: str) -> None:
    ens = continuous((6, 2, 3), seed=11).requires_grad_(True)
    obs = continuous((2, 3), seed=12).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e, o: crps_ensemble(e, o, kind), (ens, obs))


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_closed_form_gradient_matches_the_sign_formula_without_ties(kind: str) -> None:
    m = 7
    ens = continuous((m, 4, 3), seed=13)
    obs = continuous((4, 3), seed=14)
    c = spread_coefficient(m, kind)
    expected = torch.sign(ens - obs) / m - c * torch.sign(ens[:, None] - ens[None, :]).sum(1)
    torch.testing.assert_close(crps_grad_wrt_members(ens, obs, kind), expected)


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("data", ["continuous", "ties"])
def test_closed_form_gradient_equals_autograd_of_the_loss(kind: str, use_mask: bool,
                                                          data: str) -> None:
    m, shape = 8, (2, 5, 6)
    if data == "ties":
        ens, obs = precip_like((m, *shape), seed=15), precip_like(shape, seed=16)
    else:
        ens, obs = continuous((m, *shape), seed=15), continuous(shape, seed=16)
    mask = torch.rand(5, 6, generator=torch.Generator().manual_seed(0)) > 0.3 if use_mask else None
    leaf = ens.clone().requires_grad_(True)
    crps_loss(leaf, obs, mask, kind=kind).backward()
    n = shape[0] * (int(mask.sum()) if use_mask else shape[1] * shape[2])
    closed = crps_grad_wrt_members(ens, obs, kind) / n
    if use_mask:
        closed = closed * mask
    torch.testing.assert_close(closed, leaf.grad, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- chunked exact gradient


class TinyDecoder(nn.Module):
    """A conditional generator: member i = relu(conv(tanh(conv(x) + eps_i))) (ReLU: exact zeros)."""

    def __init__(self, c_in: int = 2, hidden: int = 4) -> None:
        super().__init__()
        self.enc = nn.Conv2d(c_in, hidden, 3, padding=1)
        self.noise_scale = nn.Parameter(torch.tensor(0.7))
        self.dec = nn.Conv2d(hidden, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W), eps (k, B, hidden, H, W) -> members (k, B, 1, H, W)."""
        k, b = eps.shape[:2]
        h = torch.tanh(self.enc(x)[None] + self.noise_scale * eps)
        return torch.relu(self.dec(h.flatten(0, 1))).unflatten(0, (k, b))


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("chunk_size", [2, 4])
def test_chunked_backward_equals_plain_autograd(kind: str, use_mask: bool,
                                                chunk_size: int) -> None:
    torch.manual_seed(0)
    m, b, h, w = 6, 3, 8, 7
    model = TinyDecoder().double()
    with torch.no_grad():
        model.dec.bias.fill_(0.1)  # mostly wet, with some exact zeros from the ReLU
    x = torch.randn(b, 2, h, w, dtype=torch.float64)
    eps = torch.randn(m, b, 4, h, w, dtype=torch.float64)  # pre-drawn: chunks are reproducible
    obs = torch.relu(torch.randn(b, 1, h, w, dtype=torch.float64))
    mask = (torch.rand(h, w) > 0.4) if use_mask else None

    def generate_chunk(start: int, stop: int) -> torch.Tensor:
        return model(x, eps[start:stop])

    model.zero_grad()
    plain_loss = crps_loss(generate_chunk(0, m), obs, mask, kind=kind)
    plain_loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad()
    loss = chunked_crps_backward(generate_chunk, m, chunk_size, obs, mask, kind=kind)

    assert loss == pytest.approx(float(plain_loss.detach()), rel=1e-12)
    for name, p in model.named_parameters():
        assert p.grad.abs().max() > 0, name  # a gradient that could be wrong
        torch.testing.assert_close(p.grad, plain[name], rtol=1e-5, atol=1e-12, msg=name)


def test_chunked_backward_rejects_a_generator_that_returns_the_wrong_size() -> None:
    obs = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"returned shape \(1, 2, 3\), expected \(2, 2, 3\)"):
        chunked_crps_backward(lambda s, e: torch.zeros(1, 2, 3), 4, 2, obs)


# ---------------------------------------------------------------- memory shape


def test_no_pairwise_tensor_is_allocated_for_a_large_ensemble() -> None:
    """m = 512: the (m, m, ...) pairwise tensor would be 512x the ensemble; we stay O(m)."""
    m = 512
    ens = torch.rand(m, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    obs = torch.rand(2, 8, 8, dtype=torch.float64)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        crps_loss(ens, obs).backward()
    largest = max(e.cpu_memory_usage for e in prof.events())
    # The biggest single allocation is the sort (values + int64 indices) = 2x the ensemble.
    assert largest <= 2 * ens.nbytes, (largest, ens.nbytes)
    assert torch.isfinite(ens.grad).all()
