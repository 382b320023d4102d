"""Conditional VAE p(Y_hr | X_lr, S) for synthetic heavy-precipitation days (seed 001).

    EncoderX  (X_lr, coarse S)  -> h_X: a feature map on the low-res grid + a vector (d_x)
    EncoderY  (Y_hr, S)         -> h_Y (d_y), learned strided downsampling to the low-res grid
    LatentHead [h_Y; h_X]       -> mu, log sigma^2 (d_z)          q(z | Y, X, S)
    Prior      standard N(0, I)  or  ConditionalPrior(h_X) -> p(z | X, S)
    Decoder   (z, h_X, S, noise) -> Y_hr: starts on the low-res grid, upsamples with learned
                                   PixelShuffle stages (one per prime factor of the scale
                                   factor, e.g. 12 = 2*2*3), sees the statics at full resolution
                                   and (``noise_channels`` > 0) Gaussian noise maps on the
                                   low-res grid and (``noise_grid="both"``) at full
                                   resolution, drawn per sample

X is never naively upsampled: it conditions through embeddings. Everything here works in
model space (log1p + z-score, see ``precipgen.data.transforms``); the loader at the bottom
turns a checkpoint into a physical-units generator (see :mod:`precipgen.models.registry`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from precipgen.data.transforms import Normalization
from precipgen.models.checkpoint import load_model_state

POOL = 4  # encoders pool their last feature map to POOL x POOL before the dense embedding
LOGVAR_RANGE = (-30.0, 20.0)  # keeps exp(logvar) finite


def prime_factors(n: int) -> list[int]:
    """12 -> [2, 2, 3]: one learned upsampling stage per factor."""
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


def width(level: int, base: int) -> int:
    """Channels at ``level`` scale stages below full resolution (0 = full res)."""
    return max(4, min(4 * base, base * 2**level // 2))


def conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.c1, self.c2 = conv(c, c), conv(c, c)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.c2(F.silu(self.c1(F.silu(x))))


@dataclass
class HX:
    """The embedding of X (and the coarse statics): spatial map on the low-res grid + vector."""

    map: Tensor  # (B, base_filters, h, w)
    vec: Tensor  # (B, d_x)


class EncoderX(nn.Module):
    def __init__(self, in_channels: int, n_statics: int, base_filters: int, d_x: int):
        super().__init__()
        c = base_filters
        self.net = nn.Sequential(conv(in_channels + n_statics, c), nn.SiLU(), ResBlock(c), ResBlock(c))
        self.pool = nn.AdaptiveAvgPool2d(POOL)
        self.fc = nn.Linear(c * POOL * POOL, d_x)

    def forward(self, x: Tensor, statics_lr: Tensor) -> HX:
        m = self.net(torch.cat([x, statics_lr], dim=1))
        return HX(m, F.silu(self.fc(self.pool(m).flatten(1))))


class EncoderY(nn.Module):
    """Y_hr + statics at full resolution, downsampled by learned strided convolutions."""

    def __init__(self, n_statics: int, base_filters: int, d_y: int, factors: list[int]):
        super().__init__()
        self.stem = nn.Sequential(conv(1 + n_statics, width(0, base_filters)), nn.SiLU())
        stages = []
        for level, r in enumerate(reversed(factors)):
            cin, cout = width(level, base_filters), width(level + 1, base_filters)
            stages += [nn.Conv2d(cin, cout, r, stride=r), nn.SiLU(), conv(cout, cout), nn.SiLU()]
        self.down = nn.Sequential(*stages)
        c = width(len(factors), base_filters)
        self.pool = nn.AdaptiveAvgPool2d(POOL)
        self.fc = nn.Linear(c * POOL * POOL, d_y)

    def forward(self, y: Tensor, statics: Tensor) -> Tensor:
        m = self.down(self.stem(torch.cat([y, statics], dim=1)))
        return F.silu(self.fc(self.pool(m).flatten(1)))


class GaussianHead(nn.Module):
    """MLP -> (mu, logvar); the last layer starts at zero, i.e. at N(0, I)."""

    def __init__(self, d_in: int, d_z: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, 2 * d_z))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.net(h).chunk(2, dim=-1)
        return mu, logvar.clamp(*LOGVAR_RANGE)


class LatentHead(GaussianHead):
    """[h_Y; h_X] -> q(z | Y, X, S)."""

    def __init__(self, d_y: int, d_x: int, d_z: int):
        super().__init__(d_y + d_x, d_z, max(d_y, 2 * d_z))


class ConditionalPrior(GaussianHead):
    """h_X -> p(z | X, S). h_X already saw the statics (EncoderX gets them on the coarse grid)."""

    def __init__(self, d_x: int, d_z: int):
        super().__init__(d_x, d_z, max(d_x, 2 * d_z))


NOISE_GRIDS = ("both", "coarse", "stages", "all")
STAGE_LAYERS = 5  # conv, PixelShuffle, SiLU, conv, SiLU per upsampling stage of ``Decoder.up``


class Decoder(nn.Module):
    """Noise maps inside the network (``noise_channels``): a global z alone leaves the small
    scales deterministic given X, which under-disperses the samples (issue 13).

    ``noise_grid`` says where the maps enter; each grid's maps are drawn per sample:

    - ``coarse``: on the low-res grid only, before the upsampling: every bit of spread passes
      through the learned upsampling and gets structure, but nothing finer than a few blocks
      (the samples had 0.3x the truth's power at wavelengths <= 4 px);
    - ``both``: also at full resolution, concatenated before the output convolutions: white
      noise that three convolutions barely shape (2-15x the truth's small-scale power);
    - ``stages``: low-res maps plus maps added after each upsampling stage but the last
      (StyleGAN-like per-layer noise through 1x1 convolutions): spread at the intermediate
      scales, shaped by the stages after it;
    - ``all``: ``stages`` and the last stage too (full resolution, before its convolution).
    """

    def __init__(self, n_statics: int, base_filters: int, d_z: int, d_x: int,
                 lr_shape: tuple[int, int], factors: list[int], noise_channels: int = 0,
                 noise_grid: str = "both"):
        super().__init__()
        if noise_grid not in NOISE_GRIDS:
            raise ValueError(f"model.noise_grid must be one of {NOISE_GRIDS}, got {noise_grid!r}")
        h, w = lr_shape
        self.lr_shape = lr_shape
        self.hr_shape = (h * int(np.prod(factors)), w * int(np.prod(factors)))
        self.nc = noise_channels
        self.nc_hr = noise_channels if noise_grid == "both" else 0
        self.cz = max(4, base_filters // 2)
        # z (with the global X code) -> a latent map on the low-res grid: z controls where, too
        self.z_proj = nn.Linear(d_z + d_x, self.cz * h * w)
        top = len(factors)
        c = width(top, base_filters)
        self.inp = nn.Sequential(conv(base_filters + self.cz + self.nc, c), nn.SiLU(), ResBlock(c))
        ups, stage_noise, self.stage_grids = [], [], []
        noisy = {"stages": len(factors) - 1, "all": len(factors)}.get(noise_grid, 0)
        scale = 1
        for i, r in enumerate(factors):
            cin, cout = width(top - i, base_filters), width(top - i - 1, base_filters)
            ups += [conv(cin, cout * r * r), nn.PixelShuffle(r), nn.SiLU(), conv(cout, cout), nn.SiLU()]
            scale *= r
            if noise_channels and i < noisy:
                stage_noise.append(nn.Conv2d(noise_channels, cout, 1, bias=False))
                self.stage_grids.append((h * scale, w * scale))
        self.up = nn.Sequential(*ups)
        self.stage_noise = nn.ModuleList(stage_noise)
        c0 = width(0, base_filters)
        self.out = nn.Sequential(conv(c0 + n_statics + self.nc_hr, c0), nn.SiLU(), conv(c0, c0),
                                 nn.SiLU(), conv(c0, 1))

    def _grids(self) -> list[tuple[int, tuple[int, int]]]:
        """(channels, grid) of every noise input, in the order of the flat noise vector."""
        grids = [(self.nc, self.lr_shape)] if self.nc else []
        grids += [(self.nc, g) for g in self.stage_grids]
        if self.nc_hr:
            grids.append((self.nc_hr, self.hr_shape))
        return grids

    @property
    def noise_dim(self) -> int:
        """Flat size of one sample's noise: every noise grid's maps, low-res first."""
        return sum(c * h * w for c, (h, w) in self._grids())

    def split_noise(self, noise: Tensor) -> list[Tensor]:
        """``(B, noise_dim)`` -> the maps of each grid (low-res, stages..., full res)."""
        out, i, b = [], 0, noise.shape[0]
        for c, (h, w) in self._grids():
            out.append(noise[:, i:i + c * h * w].reshape(b, c, h, w))
            i += c * h * w
        return out

    def forward(self, z: Tensor, hx: HX, statics: Tensor, noise: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        """``noise``: ``(B, noise_dim)`` standard normals; drawn here (from ``generator``)
        when None."""
        h, w = self.lr_shape
        zmap = self.z_proj(torch.cat([z, hx.vec], dim=1)).view(-1, self.cz, h, w)
        parts, stages, late = [hx.map, zmap], [], []
        if self.nc:
            if noise is None:
                noise = torch.randn((z.shape[0], self.noise_dim), generator=generator,
                                    device=z.device, dtype=z.dtype)
            maps = self.split_noise(noise.to(z.dtype))
            parts.append(maps[0])
            stages = maps[1:1 + len(self.stage_grids)]
            late = maps[1 + len(self.stage_grids):]
        m = self.inp(torch.cat(parts, dim=1))
        # `up` stays one Sequential (the seed's layout, so earlier checkpoints load); stage
        # noise goes in after each stage's PixelShuffle
        layers = list(self.up)
        for i in range(0, len(layers), STAGE_LAYERS):
            stage = i // STAGE_LAYERS
            m = layers[i + 2](layers[i + 1](layers[i](m)))  # conv, PixelShuffle, SiLU
            if stage < len(stages):
                m = m + self.stage_noise[stage](stages[stage])
            m = layers[i + 4](layers[i + 3](m))  # conv, SiLU
        if m.shape[-2:] != statics.shape[-2:]:  # only if H, W are not exact multiples
            m = F.interpolate(m, size=statics.shape[-2:], mode="bilinear", align_corners=False)
            late = [F.interpolate(n, size=statics.shape[-2:], mode="nearest") for n in late]
        return self.out(torch.cat([m, statics, *late], dim=1))


class CVAE(nn.Module):
    """``forward(x, y, statics) -> (y_hat, mu, logvar, prior_mu, prior_logvar)``, model space.

    ``statics`` is ``(K, H, W)`` (shared by the batch) or ``(B, K, H, W)``. In training mode the
    posterior is sampled (reparameterisation); in eval mode the reconstruction uses its mean.
    """

    def __init__(self, in_channels: int, n_statics: int, lr_shape: tuple[int, int],
                 hr_shape: tuple[int, int], d_z: int = 64, base_filters: int = 64,
                 d_x: int = 128, d_y: int = 256, prior: str = "standard",
                 noise_channels: int = 0, noise_grid: str = "both"):
        super().__init__()
        (h, w), (H, W) = lr_shape, hr_shape
        if H % h or W % w or H // h != W // w:
            raise ValueError(
                f"high-res grid {H}x{W} is not an integer multiple (same in both axes) of the "
                f"low-res grid {h}x{w}"
            )
        if prior not in ("standard", "conditional"):
            raise ValueError(f"model.prior must be 'standard' or 'conditional', got {prior!r}")
        self.factor = H // h
        factors = prime_factors(self.factor)
        self.hparams: dict[str, Any] = dict(
            in_channels=in_channels, n_statics=n_statics, lr_shape=[h, w], hr_shape=[H, W],
            d_z=d_z, base_filters=base_filters, d_x=d_x, d_y=d_y, prior=prior,
            noise_channels=noise_channels, noise_grid=noise_grid,
        )
        self.d_z, self.prior_kind = d_z, prior
        self.encoder_x = EncoderX(in_channels, n_statics, base_filters, d_x)
        self.encoder_y = EncoderY(n_statics, base_filters, d_y, factors)
        self.latent_head = LatentHead(d_y, d_x, d_z)
        self.prior = ConditionalPrior(d_x, d_z) if prior == "conditional" else None
        self.decoder = Decoder(n_statics, base_filters, d_z, d_x, (h, w), factors, noise_channels,
                               noise_grid)

    # ---- pieces ----
    def _statics(self, statics: Tensor, batch: int) -> tuple[Tensor, Tensor]:
        s = statics if statics.ndim == 4 else statics.unsqueeze(0).expand(batch, -1, -1, -1)
        return s, F.avg_pool2d(s, self.factor)  # full res, and on the low-res grid

    def encode_x(self, x: Tensor, statics: Tensor) -> tuple[HX, Tensor]:
        s, s_lr = self._statics(statics, x.shape[0])
        return self.encoder_x(x, s_lr), s

    def prior_params(self, hx: HX) -> tuple[Tensor, Tensor]:
        if self.prior is None:
            zeros = hx.vec.new_zeros(hx.vec.shape[0], self.d_z)
            return zeros, zeros
        return self.prior(hx.vec)

    def posterior(self, y: Tensor, hx: HX, s: Tensor) -> tuple[Tensor, Tensor]:
        return self.latent_head(torch.cat([self.encoder_y(y, s), hx.vec], dim=1))

    def decode_members(self, mu: Tensor, logvar: Tensor, hx: HX, s: Tensor, m: int) -> Tensor:
        """``m`` reparameterised samples of N(mu, exp(logvar)) decoded, ``(m, B, 1, H, W)``;
        gradients reach mu/logvar (the prior or the posterior) and the decoder, so a
        sample-based loss trains what sampling from X alone uses."""
        b = mu.shape[0]
        eps = torch.randn((m, *mu.shape), device=mu.device, dtype=mu.dtype)
        z = (mu.unsqueeze(0) + (0.5 * logvar).exp().unsqueeze(0) * eps).flatten(0, 1)
        rep = HX(hx.map.repeat(m, 1, 1, 1), hx.vec.repeat(m, 1))
        y = self.decoder(z, rep, s.repeat(m, 1, 1, 1))
        return y.view(m, b, *y.shape[1:])

    # ---- training ----
    def forward(self, x: Tensor, y: Tensor, statics: Tensor) -> tuple[Tensor, ...]:
        hx, s = self.encode_x(x, statics)
        mu, logvar = self.posterior(y, hx, s)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        prior_mu, prior_logvar = self.prior_params(hx)
        return self.decoder(z, hx, s), mu, logvar, prior_mu, prior_logvar

    # ---- generation ----
    @torch.no_grad()
    def sample(self, x: Tensor, statics: Tensor, num_samples: int = 1, mode: str = "prior",
               y: Tensor | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        """``(num_samples, B, 1, H, W)`` in model space. ``prior``: from X alone (the prior
        p(z) or p(z | X, S)); ``posterior``: from q(z | Y, X, S), needs ``y``."""
        if mode not in ("prior", "posterior"):
            raise ValueError(f"mode must be 'prior' or 'posterior', got {mode!r}")
        hx, s = self.encode_x(x, statics)
        if mode == "posterior":
            if y is None:
                raise ValueError("mode='posterior' needs the high-res target y")
            mu, logvar = self.posterior(y, hx, s)
        else:
            mu, logvar = self.prior_params(hx)
        m, b = num_samples, x.shape[0]
        eps = torch.randn((m, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
        z = (mu + temperature * (0.5 * logvar).exp() * eps).flatten(0, 1)  # (m*B, d_z)
        rep = HX(hx.map.repeat(m, 1, 1, 1), hx.vec.repeat(m, 1))
        y_hat = self.decoder(z, rep, s.repeat(m, 1, 1, 1), generator=generator)
        return y_hat.view(m, b, *y_hat.shape[1:])


def build_cvae(hparams: dict[str, Any]) -> CVAE:
    hp = dict(hparams)
    hp["lr_shape"], hp["hr_shape"] = tuple(hp["lr_shape"]), tuple(hp["hr_shape"])
    return CVAE(**hp)


# ------------------------------------------------------------------ physical-units generator
class CVAEGenerator:
    """What the registry opens for a cVAE checkpoint (and what the pyfunc wraps)."""

    def __init__(self, model: CVAE, norm: Normalization, statics: Tensor, land_mask: Tensor,
                 batch_size: int = 16):
        self.model = model.eval()
        self.norm = norm
        self.statics = statics.float()
        self.land = land_mask.bool()
        self.batch_size = batch_size

    def predict(self, x_lr: np.ndarray, num_samples: int = 1, mode: str = "prior",
                temperature: float = 1.0, seed: int = 0) -> np.ndarray:
        """Low-res predictors ``(N, C, h, w)`` in physical units -> samples
        ``(num_samples, N, 1, H, W)`` in mm (sea pixels 0). Only ``mode='prior'`` is possible
        here: the posterior needs the observed day."""
        x = np.array(x_lr, dtype=np.float32)  # a writable copy: torch.from_numpy below
        hp = self.model.hparams
        want = (hp["in_channels"], *hp["lr_shape"])
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"X_lr has shape {x.shape}; expected (N, {', '.join(map(str, want))})")
        if mode != "prior":
            raise ValueError("predict generates from X alone: mode must be 'prior' "
                             "(posterior sampling needs Y; use `precipgen sample --mode posterior`)")
        g = torch.Generator().manual_seed(int(seed))
        out = []
        for i in range(0, len(x), self.batch_size):
            xm = self.norm.predictors_to_model(torch.from_numpy(x[i : i + self.batch_size]))
            ym = self.model.sample(xm, self.statics, int(num_samples), "prior",
                                   temperature=float(temperature), generator=g)
            out.append(self.norm.to_physical(ym) * self.land)
        return torch.cat(out, dim=1).numpy().astype(np.float32)


def load_cvae(ckpt: dict[str, Any], norm: Normalization) -> CVAEGenerator:
    """A cVAE checkpoint -> its physical-units generator."""
    model = build_cvae(ckpt["model_hparams"])
    load_model_state(model, ckpt["model_state_dict"], "cvae checkpoint")
    return CVAEGenerator(model, norm, ckpt["statics"], ckpt["land_mask"])
