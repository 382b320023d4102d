"""Noise at every decoder scale (issue 14): a zero-effect start, independent members after one
CRPS step, the encoder untouched, chunk-exact members, the multi-scale / mm CRPS view."""

from __future__ import annotations

import math

import pytest
import torch

from precipgen.config import ConfigError, load_config
from precipgen.data.transforms import Normalization
from precipgen.models.checkpoint import load_checkpoint, save_checkpoint
from precipgen.models.memory_format import fast_layout
from precipgen.models.vae3d import SimpleVAE3D, build_from_checkpoint, checkpoint_extra
from precipgen.scores.crps import chunked_crps_backward, crps_loss
from precipgen.train.crps_view import CRPSView
from precipgen.train.spread_calibration import calibrate_noise_scale

C, D, h, w, F = 3, 2, 3, 3, 4


def model(grid: str = "coarse") -> SimpleVAE3D:
    torch.manual_seed(0)
    m = SimpleVAE3D(C, torch.randn(2, h * F, w * F), (h, w), base_filters=4, latent_channels=2)
    m.enable_noise(3, grid)
    m.freeze_encoder()
    return m


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, C, D, h, w, generator=g), torch.randn(2, 1, D, h * F, w * F, generator=g)


@pytest.mark.parametrize("grid", ["coarse", "global", "pixel", "mixed"])
def test_at_init_the_generative_decoder_equals_the_deterministic_one(grid):
    net, (x, _) = model(grid), data()
    with torch.no_grad():
        det = net.forward_deterministic(x)
        mu, _ = net.encode(x)
        g = torch.Generator().manual_seed(5)
        B = len(x)
        # every decoder noise input at full strength: the seed's channels and the FiLM noise
        gen = net.decode(mu, torch.randn(B, net.noise_channels, D, h, w, generator=g),
                         torch.randn(B, 1, D, h * F, w * F, generator=g),
                         net._draw_cond_noise(g, B, D, mu))
    torch.testing.assert_close(gen, det, rtol=0, atol=0)
    assert len(net.film) == len(net.decoder_blocks()) == 3 + len(net.up_scales) - 1 + 1


@pytest.mark.parametrize("grid", ["coarse", "pixel", "mixed"])
def test_members_differ_after_one_step_and_the_encoder_is_unchanged(grid):
    net, (x, y) = model(grid), data()
    net.train()
    with torch.no_grad():
        mu, logvar = net.encode(x)
    logvar = torch.full_like(logvar, -12.0)  # no latent spread: all spread must come from xi
    enc = [p.detach().clone() for p in net.encoder_parameters()]
    opt = torch.optim.AdamW(net.get_trainable_parameters(), lr=1e-2)
    chunked_crps_backward(lambda s, e: net.decode_members(mu, logvar, s, e, seed=3), 6, 2, y,
                          None, "almost_fair", 0.95)
    assert all(float(f.weight.grad.abs().sum()) > 0 for f in net.film)
    opt.step()
    with torch.no_grad():
        ens = net.decode_members(mu, logvar, 0, 6, seed=9)
    assert float(ens.var(dim=0).mean()) > 1e-6
    assert not torch.allclose(ens[0], ens[1])
    for a, b in zip(enc, net.encoder_parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("grid", ["pixel", "mixed"])
def test_members_are_chunk_independent_and_checkpoint_round_trips(tmp_path, grid):
    net, (x, _) = model(grid), data()
    with torch.no_grad():
        for f in net.film:
            f.weight.normal_(0, 0.3)
        a = net.generate_multiple_outputs(x, 5, seed=2)
        b = net.generate_multiple_outputs(x, 5, seed=2, chunk_size=2)
    torch.testing.assert_close(a, b)
    norm = Normalization(0.5, 1.0, ["pr", "a", "b"], [True, False, False], [0.0] * 3, [1.0] * 3)
    path = tmp_path / "m.pth"
    save_checkpoint(path, {"kind": "vae3d", "model_state_dict": net.state_dict(),
                           **checkpoint_extra(net, torch.ones(h * F, w * F, dtype=torch.bool),
                                              norm, D)})
    again = build_from_checkpoint(load_checkpoint(path))
    with torch.no_grad():
        torch.testing.assert_close(again.generate_multiple_outputs(x, 5, seed=2), a)


def test_multiscale_view_weights_every_scale_equally_and_keeps_the_plain_loss():
    g = torch.Generator().manual_seed(0)
    land = torch.ones(8, 8, dtype=torch.bool)
    land[:, :2] = False
    norm = Normalization(0.5, 1.0, ["pr"], [True], [0.0], [1.0])
    ens, obs = torch.randn(4, 2, 1, 3, 8, 8, generator=g), torch.randn(2, 1, 3, 8, 8, generator=g)
    one = CRPSView(land, [1], "model", norm)
    assert one.plain
    torch.testing.assert_close(crps_loss(one(ens), one(obs)), crps_loss(ens, obs, land))
    multi = CRPSView(land, [1, 2, 4], "model", norm)
    want = sum(crps_loss(CRPSView(land, [k], "model", norm)(ens),
                         CRPSView(land, [k], "model", norm)(obs)) for k in (1, 2, 4)) / 3
    torch.testing.assert_close(crps_loss(multi(ens), multi(obs)), want)
    mm = CRPSView(land, [1], "mm", norm)
    torch.testing.assert_close(mm(obs), norm.to_physical(obs)[..., land])


def test_short_series_get_a_smaller_batch_or_a_clear_error(capsys):
    from precipgen.train.vae3d import window_batch_size

    assert window_batch_size(100, 8, 4, "pretrain_vae") == 8
    assert window_batch_size(7, 8, 4, "pretrain_vae") == 7
    assert "only 7 training windows" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no training window of 4 consecutive"):
        window_batch_size(0, 8, 4, "finetune_crps")


def test_increment_view_tells_white_noise_from_the_truths_texture():
    """Same pixel marginals, different texture: the pixel CRPS cannot tell them apart, the
    increments' CRPS prefers members whose local differences are spread like the truth's."""
    g = torch.Generator().manual_seed(0)
    land = torch.ones(16, 16, dtype=torch.bool)
    land[:3, :5] = False
    norm = Normalization(0.5, 1.0, ["pr"], [True], [0.0], [1.0])

    def smooth(n: int) -> torch.Tensor:  # unit-variance fields correlated over ~4 px
        f = torch.nn.functional.avg_pool2d(torch.randn(n, 1, 20, 20, generator=g), 5, 1)
        return (f / f.std()).reshape(n, 1, 1, 16, 16)

    obs = smooth(64)
    textured = torch.stack([smooth(64) for _ in range(8)])  # members like the truth
    white = torch.randn(8, 64, 1, 1, 16, 16, generator=g)  # same marginal, white
    pixel = CRPSView(land, [1], "model", norm)
    inc = CRPSView(land, [1], "model", norm, increments=[1])
    assert not inc.plain and inc(obs).shape[-1] == 241 + 2 * (16 * 15 - 15)
    ratio_pixel = crps_loss(pixel(white), pixel(obs)) / crps_loss(pixel(textured), pixel(obs))
    ratio_inc = crps_loss(inc(white), inc(obs)) / crps_loss(inc(textured), inc(obs))
    assert abs(float(ratio_pixel) - 1) < 0.05
    assert ratio_inc > ratio_pixel + 0.05  # 1.08 vs 0.99: half the view is the pixels
    with pytest.raises(ValueError, match="increments"):
        CRPSView(land, [1], "model", norm, increments=[16])
    with pytest.raises(ConfigError, match="finetune.crps_increments"):  # before any run starts
        load_config(None, ["finetune.crps_increments=[0]"])


@pytest.mark.parametrize("best", [2.0, 2 ** -0.5])
def test_spread_calibration_scales_the_coarse_noise_by_the_lowest_score(best):
    net, (x, _) = model("pixel"), data()
    with torch.no_grad():
        for f in net.film:
            f.weight.normal_(0, 0.3)
        ref = net.generate_multiple_outputs(x, 3, seed=1)
    seen: list[float] = []

    def score(mdl: SimpleVAE3D) -> dict[str, float]:
        # a score lowest at coarse noise x best; the full-res noise must stay as trained
        coarse = mdl.hparams["cond_noise_scale"]
        assert coarse * mdl.hparams["cond_noise_hr_factor"] == pytest.approx(1.0)
        seen.append(coarse)
        with torch.no_grad():
            ens = mdl.generate_multiple_outputs(x, 4, seed=1)
        return {"Val_CRPS": abs(math.log2(coarse / best)),
                "val_spread_skill": float(ens.std(dim=0).mean())}

    cal = calibrate_noise_scale(net, score)
    assert cal.factor == pytest.approx(best)
    assert net.hparams["cond_noise_scale"] == pytest.approx(best)
    assert net.hparams["cond_noise_hr_factor"] == pytest.approx(1 / best)
    assert cal.after["Val_CRPS"] < 1e-6 < cal.before["Val_CRPS"]
    # from 1 upwards, stopped two factors past the best; downwards only when 1 beat every
    # larger factor, stopped two past the best again
    if best > 1:
        assert max(seen) == pytest.approx(best * 2 ** 0.5) and min(seen) == 1.0
    else:
        assert max(seen) == pytest.approx(2 ** 0.5) and min(seen) == pytest.approx(best / 2 ** 0.5)
    assert len(seen) == len(set(seen))  # no factor scored twice
    spread = [ss for _, _, ss in cal.curve]  # more coarse noise, more spread
    assert spread == sorted(spread) and spread[0] < spread[-1]
    with torch.no_grad():  # the same members, scaled: back at factor 1 they are unchanged
        net.hparams.update(cond_noise_scale=1.0, cond_noise_hr_factor=1.0)
        torch.testing.assert_close(net.generate_multiple_outputs(x, 3, seed=1), ref)
    with pytest.raises(ValueError, match="FiLM noise"):
        calibrate_noise_scale(SimpleVAE3D(C, torch.randn(2, h * F, w * F), (h, w), 4, 2), score)


def test_terrain_features_reach_the_output_and_survive_layout_and_checkpoints(tmp_path):
    torch.manual_seed(0)
    net = SimpleVAE3D(C, torch.randn(2, h * F, w * F), (h, w), base_filters=4, latent_channels=2,
                      terrain_features=3)
    fast_layout(net)  # all-5D: channels_last_3d must accept every weight
    x, _ = data()
    with torch.no_grad():
        out = net.forward_deterministic(x)
        path = tmp_path / "t.pth"
        norm = Normalization(0.5, 1.0, ["pr", "a", "b"], [True, False, False], [0.0] * 3, [1.0] * 3)
        save_checkpoint(path, {"kind": "vae3d", "model_state_dict": net.state_dict(),
                               **checkpoint_extra(net, torch.ones(h * F, w * F, dtype=torch.bool),
                                                  norm, D)})
        again = build_from_checkpoint(load_checkpoint(path))
        torch.testing.assert_close(again.forward_deterministic(x), out)
        net.weather_proj.weight.zero_()  # the weather x terrain products carry signal
        assert not torch.allclose(net.forward_deterministic(x), out)
    with pytest.raises(ConfigError, match="terrain_features"):
        load_config(None, ["vae3d.terrain_features=-1"])


def test_mixed_noise_is_one_smooth_field_on_the_coarse_blocks_and_white_at_full_res():
    net, (x, _) = model("mixed"), data()
    g = torch.Generator().manual_seed(0)
    mu, _ = net.encode(x)
    xi = net._draw_cond_noise(g, len(x), D, mu)
    n_coarse = len(net.up_scales) + 1
    assert len(xi) == len(net.decoder_blocks()) == n_coarse + 2
    assert all(f is xi[0] for f in xi[:n_coarse]) and xi[0].shape[-2:] == (h, w)
    assert xi[-1].shape[-2:] == xi[-2].shape[-2:] == (h * F, w * F)
    assert not torch.equal(xi[-1], xi[-2])
