"""Issue 13: decoder noise maps and the sample-based (CRPS) loss terms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from precipgen.data.transforms import Normalization
from precipgen.models.cvae import CVAE
from precipgen.train.losses import CVAELoss

TINY = dict(d_z=4, base_filters=8, d_x=8, d_y=8)


def norm() -> Normalization:
    return Normalization(target_mean=0.0, target_std=1.0, channel_names=["c0", "c1"],
                         channel_log1p=[False] * 2, channel_mean=[0.0] * 2, channel_std=[1.0] * 2)


def test_noise_maps_make_samples_differ_with_the_same_z():
    torch.manual_seed(0)
    m = CVAE(2, 1, (3, 3), (12, 12), noise_channels=2, **TINY).eval()
    assert m.decoder.noise_dim == 2 * (9 + 144)
    x, s = torch.randn(2, 2, 3, 3), torch.randn(1, 12, 12)
    hx, sf = m.encode_x(x, s)
    z = torch.zeros(2, 4)
    n1, n2 = torch.randn(2, m.decoder.noise_dim), torch.randn(2, m.decoder.noise_dim)
    with torch.no_grad():
        a, b = m.decoder(z, hx, sf, noise=n1), m.decoder(z, hx, sf, noise=n2)
        again = m.decoder(z, hx, sf, noise=n1)
    assert torch.equal(a, again)  # the noise is an input: same noise, same field
    assert not torch.allclose(a, b)  # T=0 in z still leaves spread from the noise maps
    cold = m.sample(x, s, 3, temperature=0.0, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(cold[0], cold[1])


def test_without_noise_channels_the_decoder_is_deterministic_given_z():
    torch.manual_seed(0)
    m = CVAE(2, 1, (3, 3), (12, 12), **TINY).eval()
    assert m.decoder.noise_dim == 0
    x, s = torch.randn(2, 2, 3, 3), torch.randn(1, 12, 12)
    cold = m.sample(x, s, 2, temperature=0.0)
    assert torch.allclose(cold[0], cold[1])


def test_prior_crps_term_is_added_and_reaches_the_prior():
    torch.manual_seed(0)
    m = CVAE(2, 1, (3, 3), (12, 12), prior="conditional", noise_channels=1, **TINY)
    land = torch.ones(12, 12, dtype=torch.bool)
    x, s = torch.randn(3, 2, 3, 3), torch.randn(1, 12, 12)
    y = torch.randn(3, 1, 12, 12)
    lf = CVAELoss(norm(), 1.0, land, conditional_prior=True, lambda_prior_crps=2.0, warmup_epochs=0)
    hx, sf = m.encode_x(x, s)
    mu, lv = m.posterior(y, hx, sf)
    pmu, plv = m.prior_params(hx)
    y_hat = m.decoder(mu, hx, sf)
    ens = m.decode_members(pmu, plv, hx, sf, 4)
    assert ens.shape == (4, 3, 1, 12, 12)
    t = lf(y_hat, y, mu, lv, pmu, plv, 1, prior_ens=ens)
    plain = lf.deterministic_terms(y_hat, y, mu, lv, pmu, plv, 1)
    val = {k: float(v.detach()) for k, v in {**t, "plain": plain["loss"]}.items() if k in (
        "CRPS_prior", "loss", "plain")}
    assert val["CRPS_prior"] > 0
    assert val["loss"] == pytest.approx(val["plain"] + 2.0 * val["CRPS_prior"], rel=1e-5)
    t["CRPS_prior"].backward()
    assert m.prior.net[-1].weight.grad.abs().sum() > 0  # it trains what sampling from X uses
    with pytest.raises(ValueError, match="prior_ens"):
        lf(y_hat, y, mu, lv, pmu, plv, 1)


def test_crps_recon_rewards_spread_that_matches_the_error():
    """Fair CRPS: members spread around the truth score better than members all at one wrong
    value; an MAE recon cannot tell spread from bias."""
    land = torch.ones(4, 4, dtype=torch.bool)
    y = torch.zeros(1, 1, 4, 4)
    lf = CVAELoss(norm(), 100.0, land, recon="crps", lambda_mass=0.0, beta_kl=0.0)
    mu = lv = torch.zeros(1, 2)
    collapsed = torch.full((4, 1, 1, 4, 4), 1.0)
    spread = torch.tensor([-1.5, -0.5, 0.5, 1.5]).view(4, 1, 1, 1, 1).expand(4, 1, 1, 4, 4)
    a = lf(collapsed[0], y, mu, lv, None, None, 1, post_ens=collapsed)
    b = lf(spread[0], y, mu, lv, None, None, 1, post_ens=spread)
    assert float(b["L_rec"]) < float(a["L_rec"])
    assert float(a["L_rec"]) == pytest.approx(1.0)  # one member value: CRPS = MAE
    assert np.isfinite(float(b["loss"]))


def test_extreme_crps_term_penalises_members_wet_where_it_was_dry():
    """The CRPS extreme term is threshold-weighted (proper): members that put heavy rain on
    pixels that stayed dry cost more than members that match the day. Weighting pixels by the
    *observed* value cannot see them at all (and so trained the cVAE wet, issue 13)."""
    land = torch.ones(8, 8, dtype=torch.bool)
    n = norm()
    p95_mm = 20.0
    t = n.threshold_to_model(p95_mm)
    y = torch.full((2, 1, 8, 8), n.threshold_to_model(0.0))
    y[:, :, :4] = t + 1.0  # heavy rain on the top half, dry below
    match = y.expand(4, -1, -1, -1, -1).clone()
    wet_everywhere = match.clone()
    wet_everywhere[..., 4:, :] = t + 1.0
    lf = CVAELoss(n, p95_mm, land, lambda_base=0.0, lambda_ext=1.0, recon="crps", warmup_epochs=0)
    mu = lv = torch.zeros(2, 3)

    def ext(ens: torch.Tensor) -> float:
        return float(lf(ens.mean(0), y, mu, lv, None, None, 1, post_ens=ens)["L_rec"])

    assert ext(match) == pytest.approx(0.0, abs=1e-6)
    assert ext(wet_everywhere) > 0.1


def test_pooled_crps_penalises_pixel_noise_that_the_pixel_crps_cannot_see():
    """Two prior ensembles with the same per-pixel marginals: independent pixel noise and
    coherent whole-field shifts. The pixel CRPS scores them alike; the pooled (multi-scale) CRPS
    prefers the coherent one when the truth is coherent (issue 13's spectral excess)."""
    g = torch.Generator().manual_seed(0)
    land = torch.ones(8, 8, dtype=torch.bool)
    m, days = 16, 64
    shift = torch.randn(1 + m, days, 1, 1, 1, generator=g)  # one value per field
    y = shift[0].expand(days, 1, 8, 8).contiguous()
    coherent = shift[1:].expand(m, days, 1, 8, 8).contiguous()
    noisy = torch.randn(m, days, 1, 8, 8, generator=g)
    mu = lv = torch.zeros(days, 2)

    def crps_prior(ens: torch.Tensor, **kw) -> float:
        lf = CVAELoss(norm(), 1.0, land, lambda_prior_crps=1.0, lambda_mass=0.0, beta_kl=0.0, **kw)
        return float(lf(y, y, mu, lv, None, None, 1, prior_ens=ens)["CRPS_prior"])

    pixel = crps_prior(noisy) / crps_prior(coherent)
    pooled = (crps_prior(noisy, crps_scales=(1, 2, 4)) /
              crps_prior(coherent, crps_scales=(1, 2, 4)))
    assert abs(pixel - 1) < 0.1
    assert pooled > pixel + 0.05
    mm = crps_prior(coherent, crps_space="mm")  # scored on expm1 of the fields: another number
    assert mm > 0 and abs(mm - crps_prior(coherent)) > 1e-3
    from precipgen.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="loss.crps_space"):
        load_config(None, ["loss.crps_space=log"])


def test_coarse_noise_grid_feeds_only_low_res_maps_and_still_spreads():
    torch.manual_seed(0)
    m = CVAE(2, 1, (3, 3), (12, 12), noise_channels=2, noise_grid="coarse", **TINY).eval()
    assert m.decoder.noise_dim == 2 * 9  # no full-resolution maps
    x, s = torch.randn(2, 2, 3, 3), torch.randn(1, 12, 12)
    cold = m.sample(x, s, 3, temperature=0.0, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(cold[0], cold[1])  # spread from the low-res maps alone
    from precipgen.models.cvae import build_cvae

    again = build_cvae(m.hparams)  # the checkpoint's hparams rebuild the same decoder
    assert again.decoder.noise_dim == m.decoder.noise_dim
    with pytest.raises(ValueError, match="noise_grid"):
        CVAE(2, 1, (3, 3), (12, 12), noise_channels=2, noise_grid="pixel", **TINY)


@pytest.mark.parametrize("grid, stages", [("stages", 1), ("all", 2)])
def test_stage_noise_enters_after_the_upsampling_stages(grid: str, stages: int):
    """12 = 2 x 2 x 3 would give 3 stages; here 4 = 2 x 2: `stages` adds maps at 6x6 (not the
    last stage), `all` at 6x6 and 12x12; the flat noise vector holds them after the low-res."""
    torch.manual_seed(0)
    m = CVAE(2, 1, (3, 3), (12, 12), noise_channels=2, noise_grid=grid, **TINY).eval()
    grids = [(6, 6), (12, 12)][:stages]
    assert m.decoder.stage_grids == grids
    assert m.decoder.noise_dim == 2 * (9 + sum(a * b for a, b in grids))
    x, s = torch.randn(2, 2, 3, 3), torch.randn(1, 12, 12)
    hx, sf = m.encode_x(x, s)
    z = torch.zeros(2, 4)
    base = torch.randn(2, m.decoder.noise_dim)
    other = base.clone()
    other[:, 2 * 9:] = torch.randn(2, m.decoder.noise_dim - 18)  # only the stage maps differ
    with torch.no_grad():
        a, b = m.decoder(z, hx, sf, noise=base), m.decoder(z, hx, sf, noise=other)
    assert not torch.allclose(a, b)
