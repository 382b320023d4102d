"""SimpleVAE3D: the seed's API and shapes, deterministic vs generative modes, the frozen
encoder, chunk-exact member generation, weights_only checkpoints and the vae3d loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from precipgen.data.transforms import Normalization
from precipgen.models.checkpoint import load_checkpoint, save_checkpoint
from precipgen.models.registry import open_generator as load_generator
from precipgen.models.vae3d import (
    SimpleVAE3D,
    SimpleVAE3D_GenerativeFinetuning,
    build_from_checkpoint,
    checkpoint_extra,
    upsample_factors,
)
from precipgen.scores.crps import chunked_crps_backward, crps_loss

C, D, h, w, F = 3, 4, 6, 6, 4


def tiny(h: int = h, w: int = w, factor: int = F, seed: int = 0) -> SimpleVAE3D:
    torch.manual_seed(seed)
    return SimpleVAE3D(C, torch.randn(3, h * factor, w * factor), (h, w), base_filters=4,
                       latent_channels=2).eval()


def x_batch(B: int = 2, h: int = h, w: int = w) -> torch.Tensor:
    return torch.randn(B, C, D, h, w, generator=torch.Generator().manual_seed(1))


def norm() -> Normalization:
    return Normalization(0.5, 1.0, ["pr", "a", "b"], [True, False, False], [0.0] * 3, [1.0] * 3)


def test_seed_api_shapes():
    model, x = tiny(), x_batch()
    assert SimpleVAE3D_GenerativeFinetuning is SimpleVAE3D
    with torch.no_grad():
        assert model.generate_multiple_outputs(x, 5).shape == (5, 2, 1, D, 24, 24)
        out, mu, logvar = model.forward_generative(x)
        assert out.shape == (2, 1, D, 24, 24) and mu.shape == logvar.shape == (2, 2, D, h, w)
        assert model.forward_generative(x, num_samples=3)[0].shape == (3, 2, 1, D, 24, 24)
        recon, mu, logvar, ens = model.forward_with_ensemble(x, num_samples=7, chunk_size=3)
        assert recon.shape == (2, 1, D, 24, 24) and ens.shape == (7, 2, 1, D, 24, 24)


def test_prism_grid_factor_12():
    """156 x 132 from 13 x 11: learned x2, x2, x3 stages, no interpolation needed."""
    assert upsample_factors(12) == [2, 2, 3] and upsample_factors(5) == []
    model = tiny(13, 11, 12)
    with torch.no_grad():
        y = model.generate_multiple_outputs(torch.randn(1, C, 2, 13, 11), 2)
    assert y.shape == (2, 1, 1, 2, 156, 132)
    odd = tiny(5, 5, 7)  # factor 7: interpolation only
    assert odd.forward_deterministic(torch.randn(1, C, 2, 5, 5)).shape == (1, 1, 2, 35, 35)


def test_deterministic_mode_has_no_variance_generative_mode_has():
    model, x = tiny(), x_batch()
    with torch.no_grad():
        det = torch.stack([model.forward_deterministic(x) for _ in range(4)])
        gen = model.generate_multiple_outputs(x, 8)
    assert det.var(dim=0).max() < 1e-10
    assert gen.var(dim=0).mean() > 1e-3


def test_members_do_not_depend_on_chunking_and_seed_reproduces():
    model, x = tiny(), x_batch()
    with torch.no_grad():
        a = model.generate_multiple_outputs(x, 6, seed=3)
        b = model.generate_multiple_outputs(x, 6, seed=3, chunk_size=4)
        c = model.generate_multiple_outputs(x, 6, seed=4)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_freeze_encoder_leaves_only_decoder_trainable(capsys):
    model = tiny()
    model.freeze_encoder()
    model.train()
    enc = {id(p) for p in model.encoder_parameters()}
    trainable = model.get_trainable_parameters()
    assert trainable and not enc & {id(p) for p in trainable}
    assert all(not m.training for m in model.encoder_modules())
    model.print_parameter_status()
    assert "frozen" in capsys.readouterr().out


def test_chunked_gradient_matches_full_gradient():
    """decode_members regenerates a chunk exactly, so the chunked CRPS gradient is exact."""
    model = tiny(3, 3).double()
    model.freeze_encoder()
    x = x_batch(1, 3, 3).double()
    y = torch.randn(1, 1, D, 12, 12, dtype=torch.float64)
    land = torch.ones(12, 12, dtype=torch.bool)
    land[:, :4] = False
    with torch.no_grad():
        mu, logvar = model.encode(x)

    def gen(s: int, e: int) -> torch.Tensor:
        return model.decode_members(mu, logvar, s, e, seed=11)

    params = model.get_trainable_parameters()
    crps_loss(gen(0, 6), y, land).backward()
    full = [p.grad.clone() for p in params]
    model.zero_grad()
    chunked_crps_backward(gen, 6, 2, y, land)
    for g_full, p in zip(full, params):
        torch.testing.assert_close(p.grad, g_full, rtol=1e-7, atol=1e-10)


def test_checkpoint_weights_only_and_loader(tmp_path):
    model = tiny()
    land = torch.ones(24, 24, dtype=torch.bool)
    n = norm()
    path = tmp_path / "model.pth"
    save_checkpoint(path, {"kind": "vae3d", "model_state_dict": model.state_dict(), "epoch": 1,
                           **checkpoint_extra(model, land, n, window_days=D)})
    ck = torch.load(path, weights_only=True)  # plain tensors/containers only
    assert ck["kind"] == "vae3d" and ck["window_days"] == D
    x = x_batch()
    again = build_from_checkpoint(load_checkpoint(path))
    with torch.no_grad():
        assert torch.equal(again.forward_deterministic(x), model.forward_deterministic(x))

    n.save(tmp_path / "normalization.json")
    gen = load_generator(path, tmp_path / "normalization.json")
    x_phys = np.abs(np.random.default_rng(0).normal(size=(2, C, D, h, w))).astype(np.float32)
    ens = gen.predict(x_phys, num_samples=3)
    assert ens.shape == (3, 2, 1, D, 24, 24) and (ens >= 0).all()
    np.testing.assert_array_equal(ens, gen.predict(x_phys, num_samples=3))  # seed=0 default
    det = gen.predict(x_phys, num_samples=2, mode="deterministic")
    assert np.abs(det[0] - det[1]).max() == 0
    days = np.abs(np.random.default_rng(1).normal(size=(10, C, h, w))).astype(np.float32)
    assert gen.predict(days, num_samples=2).shape == (2, 10, 1, 24, 24)  # windows of 4, 4, 2
    with pytest.raises(ValueError, match="expects"):
        gen.predict(np.zeros((1, C + 1, D, h, w), np.float32))


def test_load_pretrained_encoder_copies_encoder_only(tmp_path):
    src, dst = tiny(seed=0), tiny(seed=1)
    path = tmp_path / "pre.pth"
    save_checkpoint(path, {"model_state_dict": src.state_dict()})
    assert dst.load_pretrained_encoder(path) > 0
    for a, b in zip(src.encoder_parameters(), dst.encoder_parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(src.dec_out.weight, dst.dec_out.weight)
