"""The cVAE model: shapes on any grid, both priors, gradients, overfitting, the loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from precipgen.data.transforms import Normalization
from precipgen.models.checkpoint import load_model_state, save_checkpoint
from precipgen.models.cvae import CVAE, prime_factors
from precipgen.models.registry import open_generator as load_generator
from precipgen.train.losses import CVAELoss

TINY = dict(d_z=8, base_filters=8, d_x=16, d_y=32)


def norm(c: int = 3) -> Normalization:
    return Normalization(target_mean=0.3, target_std=0.8, channel_names=[f"c{i}" for i in range(c)],
                         channel_log1p=[False] * c, channel_mean=[0.0] * c, channel_std=[1.0] * c)


def test_prime_factors() -> None:
    assert prime_factors(12) == [2, 2, 3]
    assert prime_factors(4) == [2, 2]
    assert prime_factors(1) == []


@pytest.mark.parametrize("prior", ["standard", "conditional"])
@pytest.mark.parametrize("lr,hr,c", [((6, 6), (24, 24), 3), ((13, 11), (156, 132), 6), ((5, 3), (10, 6), 2)])
def test_shapes(prior: str, lr: tuple[int, int], hr: tuple[int, int], c: int) -> None:
    torch.manual_seed(0)
    m = CVAE(c, 2, lr, hr, prior=prior, **TINY)
    x, y, s = torch.randn(2, c, *lr), torch.randn(2, 1, *hr), torch.randn(2, *hr)
    y_hat, mu, lv, pmu, plv = m(x, y, s)
    assert y_hat.shape == (2, 1, *hr)
    assert mu.shape == lv.shape == pmu.shape == plv.shape == (2, 8)
    if prior == "standard":
        assert pmu.abs().sum() == 0 and plv.abs().sum() == 0
    samples = m.sample(x, s, num_samples=3)
    assert samples.shape == (3, 2, 1, *hr)
    post = m.sample(x, s, num_samples=2, mode="posterior", y=y)
    assert post.shape == (2, 2, 1, *hr)


def test_sampling_is_seeded_and_temperature_matters() -> None:
    torch.manual_seed(0)
    m = CVAE(3, 2, (6, 6), (24, 24), **TINY).eval()
    x, s = torch.randn(2, 3, 6, 6), torch.randn(2, 24, 24)
    a = m.sample(x, s, 4, generator=torch.Generator().manual_seed(1))
    b = m.sample(x, s, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    cold = m.sample(x, s, 4, temperature=0.0, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(cold[0], cold[1])  # T=0: every member is the prior mean
    assert not torch.allclose(a[0], a[1])
    with pytest.raises(ValueError, match="needs the high-res target"):
        m.sample(x, s, 1, mode="posterior")


def test_rejects_non_integer_scale() -> None:
    with pytest.raises(ValueError, match="integer multiple"):
        CVAE(3, 2, (5, 5), (24, 24), **TINY)


def _loss(beta: float = 0.5, conditional: bool = True) -> CVAELoss:
    land = torch.ones(24, 24, dtype=torch.bool)
    land[:, :4] = False
    return CVAELoss(norm(), 3.0, land, beta_kl=beta, warmup_epochs=0, conditional_prior=conditional)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    m = CVAE(3, 2, (6, 6), (24, 24), prior="conditional", **TINY)
    x, s = torch.randn(2, 3, 6, 6), torch.randn(2, 24, 24)
    y = torch.randn(2, 1, 24, 24) + 1.0
    # zero-initialised heads (q = p = N(0, I) at the start) pass no gradient to their first
    # layers until their outputs move: take two steps first
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for step in range(3):
        opt.zero_grad()
        out = m(x, y, s)
        _loss()(out[0], y, *out[1:], epoch=1)["loss"].backward()
        if step < 2:
            opt.step()
    missing = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient reaches {missing}"


def test_tiny_model_overfits_four_days() -> None:
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threading overhead dominates
    H = 16
    m = CVAE(3, 2, (4, 4), (H, H), **TINY)
    g = torch.Generator().manual_seed(0)
    x, s = torch.randn(4, 3, 4, 4, generator=g), torch.randn(2, H, H, generator=g)
    # spatially smooth fields, like precipitation in model space
    y = F.interpolate(torch.randn(4, 1, 4, 4, generator=g), size=(H, H), mode="bilinear")
    y = y.clamp(-1.5, 2.5)
    land = torch.ones(H, H, dtype=torch.bool)
    land[:, :3] = False
    loss_fn = CVAELoss(norm(), 3.0, land, beta_kl=1e-3, warmup_epochs=0)

    def total() -> float:
        m.eval()
        with torch.no_grad():
            out = m(x, y, s)
            v = float(loss_fn(out[0], y, *out[1:], epoch=1)["loss"])
        m.train()
        return v

    try:
        start = total()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
        for _ in range(200):
            opt.zero_grad()
            out = m(x, y, s)
            loss_fn(out[0], y, *out[1:], epoch=1)["loss"].backward()
            opt.step()
        end = total()
    finally:
        torch.set_num_threads(threads)
    assert end < 0.2 * start, f"loss {start:.3f} -> {end:.3f}: not down by 80%"


def test_loader_predicts_physical_units(tmp_path) -> None:
    torch.manual_seed(0)
    m = CVAE(3, 2, (6, 6), (24, 24), **TINY)
    land = torch.ones(24, 24, dtype=torch.bool)
    land[:, :4] = False
    n = norm()
    n.save(tmp_path / "normalization.json")
    save_checkpoint(tmp_path / "c.pt", {
        "kind": "cvae", "model_state_dict": m.state_dict(), "model_hparams": m.hparams,
        "statics": torch.randn(2, 24, 24), "land_mask": land,
    })
    gen = load_generator(tmp_path / "c.pt", tmp_path / "normalization.json")
    x = np.random.default_rng(0).normal(size=(5, 3, 6, 6)).astype(np.float32)
    out = gen.predict(x, num_samples=3, seed=1)
    assert out.shape == (3, 5, 1, 24, 24) and out.dtype == np.float32
    assert (out >= 0).all() and (out[..., :4] == 0).all()  # mm, sea pixels 0
    np.testing.assert_array_equal(out, gen.predict(x, num_samples=3, seed=1))
    with pytest.raises(ValueError, match="expected"):
        gen.predict(x[:, :2])
    with pytest.raises(ValueError, match="prior"):
        gen.predict(x, mode="posterior")


def test_checkpoint_mismatch_names_tensors() -> None:
    small = CVAE(3, 2, (6, 6), (24, 24), **TINY)
    big = CVAE(3, 2, (6, 6), (24, 24), **{**TINY, "d_z": 16})
    with pytest.raises(ValueError, match=r"latent_head\.net\.2\.weight.*\(32, 32\) vs model \(16, 32\)"):
        load_model_state(small, big.state_dict(), "big.pt")
    cond = CVAE(3, 2, (6, 6), (24, 24), prior="conditional", **TINY)
    with pytest.raises(ValueError, match=r"unexpected: prior\.net"):
        load_model_state(small, cond.state_dict(), "cond.pt")
