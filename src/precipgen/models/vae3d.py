"""SimpleVAE3D: a 3D-convolutional VAE over windows of D days (seed 000), and its loader.

    x (B, C, D, h, w) low-res predictors, model space
      -> encoder (3D convs over days x space) -> mu, logvar on a latent grid (L, D, h, w)
      -> z, plus decoder noise channels (N, D, h, w)
      -> decoder: 3D convs, learned x2/x3 upsampling stages, interpolate to (H, W) if needed,
         statics (K, H, W) and one full-resolution noise channel concatenated at full res
      -> y (B, 1, D, H, W), model space

Modes:
- deterministic: z = mu, all noise zero (exactly repeatable);
- generative:    z = mu + temperature * sigma * eps, decoder noise = temperature * xi.

Where the spread comes from. After pretraining with MSE + small-beta KL the posterior sigma
is small and the decoder has learned to ignore what is left of it (MSE punishes any spread),
so ``z = mu + sigma * eps`` alone gives a near-deterministic model, and with the encoder frozen
fine-tuning cannot enlarge sigma. The decoder therefore also takes *noise channels* (at the
latent grid and one at full resolution), fed zeros during pretraining and in deterministic
mode, standard normal noise in generative mode. Their weights start small (``noise_init``)
and are trained by the CRPS fine-tuning, which grows or shrinks the spread they create until
the ensemble is calibrated. Pretraining never changes them (zero input -> zero gradient).

Noise at every decoder scale (issue 14). ``enable_noise(channels, grid)`` adds a per-member
noise field xi (``channels`` maps, standard normal times ``noise_scale``) that modulates the
GroupNorm of EVERY decoder block, FiLM style: ``gn(h) * (1 + a(xi)) + b(xi)`` with ``a, b``
1x1x1 convolutions initialised to zero and without bias, so fine-tuning starts exactly at the
deterministic solution and the zero field (deterministic mode) stays the noise-free decoder.
``grid``: ``coarse`` draws xi on the latent (low-res) grid and interpolates it smoothly to
each block's grid (spread with large-scale structure: white noise at every scale gave the
members far too much small-scale power), ``global`` one vector per member and day, ``pixel``
white noise drawn at each block's own grid, ``mixed`` the coarse field on the latent grid and
upsampling blocks and white noise on the two full-resolution ones (so that scaling the coarse
blocks' noise, see train/spread_calibration.py, adds spread in position and size but no
texture). ``input_noise=False`` zeroes the seed's noise
input channels so that the start is exactly deterministic.

Member noise comes from per-member generators seeded with ``seed + i``: member i is the same
whatever the chunk size, so the chunked CRPS gradient can regenerate a chunk exactly without
storing any noise.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from precipgen.data.transforms import Normalization
from precipgen.models.checkpoint import load_checkpoint, load_model_state

LOGVAR_MIN, LOGVAR_MAX = -12.0, 8.0
NOISE_GRIDS = ("coarse", "global", "pixel", "mixed")


def _gn(ch: int) -> nn.GroupNorm:
    """GroupNorm: per-sample statistics, so members never interact (chunking is exact)."""
    return nn.GroupNorm(math.gcd(ch, 8), ch)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), _gn(cout), nn.GELU())


def upsample_factors(factor: int) -> list[int]:
    """Learned stages of x2 / x3 (12 -> [2, 2, 3]); what is left is done by interpolation."""
    out = []
    for p in (2, 3):
        while factor % p == 0:
            out.append(p)
            factor //= p
    return sorted(out)


class SimpleVAE3D(nn.Module):
    def __init__(
        self,
        in_channels: int,
        statics: Tensor,
        lr_shape: tuple[int, int],
        base_filters: int = 16,
        latent_channels: int = 8,
        noise_channels: int | None = None,
        noise_init: float = 0.1,
        cond_noise_channels: int = 0,
        cond_noise_grid: str = "coarse",
        cond_noise_scale: float = 1.0,
        terrain_features: int = 0,
        cond_noise_hr_factor: float = 1.0,
    ):
        super().__init__()
        K, H, W = statics.shape
        h, w = lr_shape
        self.hparams: dict[str, Any] = {
            "in_channels": in_channels, "static_channels": K, "lr_shape": [h, w],
            "hr_shape": [H, W], "base_filters": base_filters, "latent_channels": latent_channels,
            "noise_channels": latent_channels if noise_channels is None else noise_channels,
            "noise_init": noise_init, "terrain_features": terrain_features,
        }
        self.hr_shape = (H, W)
        self.latent_channels = latent_channels
        self.noise_channels = self.hparams["noise_channels"]
        self.register_buffer("statics", statics.float().clone())  # (K, H, W), model space
        bf = base_filters

        # encoder (frozen during CRPS fine-tuning)
        self.encoder = nn.Sequential(_block(in_channels, bf), _block(bf, 2 * bf), _block(2 * bf, 2 * bf))
        self.fc_mu = nn.Conv3d(2 * bf, latent_channels, 1)
        self.fc_logvar = nn.Conv3d(2 * bf, latent_channels, 1)

        # decoder
        self.dec_in = _block(latent_channels + self.noise_channels, 2 * bf)
        self.up_scales = upsample_factors(max(1, min(H // h, W // w)))
        ups, ch = [], 2 * bf
        for i in range(len(self.up_scales)):
            cout = bf if i == len(self.up_scales) - 1 else 2 * bf
            ups.append(_block(ch, cout))
            ch = cout
        self.up = nn.ModuleList(ups)
        # Terrain interactions (``terrain_features`` k > 0): k learned terrain maps from the
        # statics (5x5 convs, once per call: slopes of smoothed terrain need a 9 px view), and
        # their products with k projections of the weather features. Orographic rain is such
        # a product (wind . terrain slope); two GELU blocks of 16 filters approximate products
        # poorly (synthetic data: the oracle without its orographic term scores 1.33x).
        k = terrain_features
        # (1, 5, 5) 3D convs, not 2D: the model stays all-5D for its channels-last layout
        self.terrain = (nn.Sequential(nn.Conv3d(K, k, (1, 5, 5), padding=(0, 2, 2)), nn.GELU(),
                                      nn.Conv3d(k, k, (1, 5, 5), padding=(0, 2, 2))) if k else None)
        self.weather_proj = nn.Conv3d(ch, k, 1) if k else None
        self.dec_hr = nn.Sequential(_block(ch + K + 2 * k + 1, bf), _block(bf, bf))  # +1: hr noise
        self.dec_out = nn.Conv3d(bf, 1, 1)

        with torch.no_grad():  # noise pathways start small: a near-deterministic start
            self.dec_in[0].weight[:, latent_channels:].mul_(noise_init)
            self.dec_hr[0][0].weight[:, -1:].mul_(noise_init)
        self.film: nn.ModuleList | None = None
        if cond_noise_channels:
            self.enable_noise(cond_noise_channels, cond_noise_grid, cond_noise_scale,
                              zero_input_noise=False)  # weights come from the checkpoint
            self.hparams["cond_noise_hr_factor"] = float(cond_noise_hr_factor)

    # ------------------------------------------------------------------ multi-scale noise
    def decoder_blocks(self) -> list[nn.Sequential]:
        """Every conv-GN-GELU block of the decoder, coarse to fine."""
        return [self.dec_in, *self.up, self.dec_hr[0], self.dec_hr[1]]

    def enable_noise(self, channels: int, grid: str = "coarse", scale: float = 1.0,
                     zero_input_noise: bool = True) -> None:
        """Add the zero-initialised FiLM noise of every decoder block (see module doc)."""
        if grid not in NOISE_GRIDS:
            raise ValueError(f"noise grid {grid!r} is not one of {NOISE_GRIDS}")
        if channels < 1:
            raise ValueError(f"noise channels must be >= 1, got {channels}")
        film = []
        for blk in self.decoder_blocks():
            conv = nn.Conv3d(channels, 2 * blk[0].out_channels, 1, bias=False)
            nn.init.zeros_(conv.weight)
            film.append(conv)
        self.film = nn.ModuleList(film).to(self.statics.device)
        self.hparams.update(cond_noise_channels=channels, cond_noise_grid=grid,
                            cond_noise_scale=float(scale), cond_noise_hr_factor=1.0)
        if zero_input_noise:
            with torch.no_grad():
                self.dec_in[0].weight[:, self.latent_channels:].zero_()
                self.dec_hr[0][0].weight[:, -1:].zero_()

    def _block_noise(self, xi: Tensor, i: int, size: tuple[int, int, int]) -> Tensor:
        """The noise field of decoder block ``i`` on its grid ``size`` = (D, h, w)."""
        grid = self.hparams["cond_noise_grid"]
        if grid == "global":
            return xi
        if grid in ("pixel", "mixed"):  # xi holds one field per block
            xi = xi[i]
        if tuple(xi.shape[-3:]) == size:
            return xi
        return F.interpolate(xi, size=size, mode="trilinear", align_corners=False)

    def _run(self, i: int, f: Tensor, xi: Tensor | None) -> Tensor:
        blk = self.decoder_blocks()[i]
        if xi is None or self.film is None:
            return blk(f)
        h = blk[1](blk[0](f))
        noise = self._block_noise(xi, i, tuple(h.shape[-3:]))
        hr_factor = self.hparams.get("cond_noise_hr_factor", 1.0)
        if i > len(self.up_scales) and hr_factor != 1.0:  # full-resolution blocks
            noise = noise * hr_factor
        gamma, beta = self.film[i](noise).chunk(2, dim=1)
        return blk[2](h * (1 + gamma) + beta)

    def _draw_cond_noise(self, g: torch.Generator, B: int, D: int, like: Tensor
                         ) -> Tensor | list[Tensor]:
        """One member's FiLM noise (scaled by ``cond_noise_scale``), from its generator."""
        c, grid = self.hparams["cond_noise_channels"], self.hparams["cond_noise_grid"]
        s = self.hparams["cond_noise_scale"]
        kw = {"generator": g, "device": like.device, "dtype": like.dtype}
        if grid == "global":
            return torch.randn(B, c, D, 1, 1, **kw) * s
        if grid == "coarse":
            return torch.randn(B, c, D, *like.shape[-2:], **kw) * s
        if grid == "mixed":  # one smooth field for the coarse blocks, white noise at full res
            lat = torch.randn(B, c, D, *like.shape[-2:], **kw) * s
            return [lat] * (len(self.up_scales) + 1) + [
                torch.randn(B, c, D, *self.hr_shape, **kw) * s for _ in range(2)]
        return [torch.randn(B, c, D, *hw, **kw) * s for hw in self.block_grids(like.shape[-2:])]

    def block_grids(self, lr: tuple[int, int]) -> list[tuple[int, int]]:
        """(h, w) of each decoder block's features, from the latent grid ``lr``."""
        h, w = lr
        out = [(h, w)]
        for s in self.up_scales:
            h, w = h * s, w * s
            out.append((h, w))
        return out + [self.hr_shape, self.hr_shape]

    # ------------------------------------------------------------------ parts
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_logvar(h).clamp(LOGVAR_MIN, LOGVAR_MAX)

    def decode(self, z: Tensor, noise_lat: Tensor | None = None, noise_hr: Tensor | None = None,
               noise_cond: Tensor | list[Tensor] | None = None) -> Tensor:
        """``z`` (B, L, D, h, w) -> (B, 1, D, H, W). Missing noise = zeros (deterministic);
        ``noise_cond``: the FiLM noise of every block (None: no modulation)."""
        B, _, D, h, w = z.shape
        H, W = self.hr_shape
        if noise_lat is None:
            noise_lat = z.new_zeros(B, self.noise_channels, D, h, w)
        if noise_hr is None:
            noise_hr = z.new_zeros(B, 1, D, H, W)
        xi = noise_cond
        f = self._run(0, torch.cat([z, noise_lat], dim=1), xi)
        for i, s in enumerate(self.up_scales, start=1):
            f = self._run(i, F.interpolate(f, scale_factor=(1, s, s), mode="nearest"), xi)
        if f.shape[-2:] != (H, W):  # factors other than 2^a 3^b, or uneven grids
            f = F.interpolate(f, size=(D, H, W), mode="trilinear", align_corners=False)
        stat = self.statics.unsqueeze(0).unsqueeze(2).expand(B, -1, D, -1, -1)
        parts = [f, stat]
        if self.terrain is not None:
            t = self.terrain(self.statics[None, :, None]).expand(B, -1, D, -1, -1)
            parts += [t, self.weather_proj(f) * t]
        n_up = len(self.up_scales)
        f = self._run(n_up + 1, torch.cat([*parts, noise_hr], dim=1), xi)
        f = self._run(n_up + 2, f, xi)
        return self.dec_out(f)

    def decode_members(
        self, mu: Tensor, logvar: Tensor, start: int, stop: int, seed: int,
        temperature: float = 1.0,
    ) -> Tensor:
        """Members ``start..stop-1`` -> (stop - start, B, 1, D, H, W); member i's noise is
        drawn from a generator seeded ``seed + i`` (reproducible, chunk-independent)."""
        B, _, D, h, w = mu.shape
        H, W = self.hr_shape
        sigma = (0.5 * logvar).exp()
        L, N = self.latent_channels, self.noise_channels
        eps_lat, eps_hr, xis = [], [], []
        for i in range(start, stop):
            g = torch.Generator(device=mu.device).manual_seed(int(seed) + i)
            eps_lat.append(torch.randn(B, L + N, D, h, w, generator=g, device=mu.device, dtype=mu.dtype))
            eps_hr.append(torch.randn(B, 1, D, H, W, generator=g, device=mu.device, dtype=mu.dtype))
            if self.film is not None:  # drawn last: older models' members are unchanged
                xis.append(self._draw_cond_noise(g, B, D, mu))
        n = stop - start
        e = torch.cat(eps_lat) * temperature  # (n*B, L+N, ...), member-major
        z = mu.repeat(n, 1, 1, 1, 1) + sigma.repeat(n, 1, 1, 1, 1) * e[:, :L]
        xi: Tensor | list[Tensor] | None = None
        if xis:
            xi = (torch.cat(xis) if isinstance(xis[0], Tensor)
                  else [torch.cat(parts) for parts in zip(*xis)])
            xi = xi * temperature if isinstance(xi, Tensor) else [t * temperature for t in xi]
        y = self.decode(z, e[:, L:], torch.cat(eps_hr) * temperature, xi)
        return y.reshape(n, B, *y.shape[1:])

    # ------------------------------------------------------------------ forward passes
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Pretraining (ELBO): z = mu + sigma * eps, decoder noise off."""
        mu, logvar = self.encode(x)
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu) if self.training else mu
        return self.decode(z), mu, logvar

    def forward_deterministic(self, x: Tensor) -> Tensor:
        mu, _ = self.encode(x)
        return self.decode(mu)

    def generate_multiple_outputs(
        self, x: Tensor, num_samples: int, temperature: float = 1.0, seed: int | None = None,
        chunk_size: int | None = None,
    ) -> Tensor:
        """(num_samples, B, 1, D, H, W) generative members (``seed`` None: drawn at random)."""
        mu, logvar = self.encode(x)
        return self._ensemble(mu, logvar, num_samples, chunk_size, seed, temperature)

    def forward_generative(
        self, x: Tensor, num_samples: int = 1, temperature: float = 1.0, seed: int | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(output, mu, logvar); output is (B, 1, D, H, W) for one sample, else
        (num_samples, B, 1, D, H, W)."""
        mu, logvar = self.encode(x)
        out = self._ensemble(mu, logvar, num_samples, None, seed, temperature)
        return (out[0] if num_samples == 1 else out), mu, logvar

    def forward_with_ensemble(
        self, x: Tensor, num_samples: int, chunk_size: int = 3, temperature: float = 1.0,
        seed: int | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(recon (z = mu), mu, logvar, ensemble (num_samples, B, 1, D, H, W)), members made
        ``chunk_size`` at a time."""
        mu, logvar = self.encode(x)
        ens = self._ensemble(mu, logvar, num_samples, chunk_size, seed, temperature)
        return self.decode(mu), mu, logvar, ens

    def _ensemble(self, mu: Tensor, logvar: Tensor, m: int, chunk_size: int | None,
                  seed: int | None, temperature: float) -> Tensor:
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
        c = chunk_size or m
        return torch.cat([self.decode_members(mu, logvar, s, min(s + c, m), seed, temperature)
                          for s in range(0, m, c)])

    # ------------------------------------------------------------------ fine-tuning helpers
    def encoder_modules(self) -> list[nn.Module]:
        return [self.encoder, self.fc_mu, self.fc_logvar]

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for mod in self.encoder_modules() for p in mod.parameters()]

    def load_pretrained(self, ckpt: dict[str, Any] | str | Path) -> None:
        """Load a whole pretrained model (encoder and decoder) from a checkpoint."""
        ck = load_checkpoint(ckpt) if isinstance(ckpt, (str, Path)) else ckpt
        load_model_state(self, ck["model_state_dict"], ckpt if isinstance(ckpt, (str, Path)) else "checkpoint")

    def load_pretrained_encoder(self, ckpt: dict[str, Any] | str | Path) -> int:
        """Copy only the encoder (encoder, fc_mu, fc_logvar) weights; returns tensors loaded."""
        ck = load_checkpoint(ckpt) if isinstance(ckpt, (str, Path)) else ckpt
        prefixes = ("encoder.", "fc_mu.", "fc_logvar.")
        enc = {k: v for k, v in ck["model_state_dict"].items() if k.startswith(prefixes)}
        missing = self.load_state_dict(enc, strict=False).missing_keys
        lost = [k for k in missing if k.startswith(prefixes)]
        if lost:
            raise ValueError(f"checkpoint lacks encoder tensors: {lost[:5]}")
        return len(enc)

    def freeze_encoder(self) -> None:
        for mod in self.encoder_modules():
            mod.eval()  # no dropout/batch stats today; keeps it true if some are added
            for p in mod.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> SimpleVAE3D:
        super().train(mode)
        if any(not p.requires_grad for p in self.encoder_parameters()):
            for mod in self.encoder_modules():
                mod.eval()
        return self

    def get_trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def print_parameter_status(self) -> None:
        enc = sum(p.numel() for p in self.encoder_parameters())
        enc_frozen = sum(p.numel() for p in self.encoder_parameters() if not p.requires_grad)
        train = sum(p.numel() for p in self.get_trainable_parameters())
        total = sum(p.numel() for p in self.parameters())
        print(f"🔒 Encoder: {enc_frozen:,}/{enc:,} parameters frozen")
        print(f"🔓 Trainable: {train:,} of {total:,} parameters")


SimpleVAE3D_GenerativeFinetuning = SimpleVAE3D  # the seed's name


def build_from_checkpoint(ck: dict[str, Any]) -> SimpleVAE3D:
    """A model with the checkpoint's hyper-parameters and weights (weights_only-safe dict)."""
    hp = ck["hparams"]
    model = SimpleVAE3D(
        in_channels=int(hp["in_channels"]), statics=ck["statics"],
        lr_shape=tuple(hp["lr_shape"]), base_filters=int(hp["base_filters"]),
        latent_channels=int(hp["latent_channels"]), noise_channels=int(hp["noise_channels"]),
        noise_init=float(hp["noise_init"]),
        cond_noise_channels=int(hp.get("cond_noise_channels", 0)),
        cond_noise_grid=str(hp.get("cond_noise_grid", "coarse")),
        cond_noise_scale=float(hp.get("cond_noise_scale", 1.0)),
        terrain_features=int(hp.get("terrain_features", 0)),
        cond_noise_hr_factor=float(hp.get("cond_noise_hr_factor", 1.0)),
    )
    model.load_pretrained(ck)
    return model.eval()


def checkpoint_extra(model: SimpleVAE3D, land_mask: Tensor, norm: Normalization,
                     window_days: int) -> dict[str, Any]:
    """What a vae3d checkpoint carries besides the weights (all weights_only-loadable)."""
    return {
        "hparams": dict(model.hparams),
        "statics": model.statics.detach().cpu().clone(),
        "land_mask": land_mask.detach().cpu().clone(),
        "normalization": norm.to_json(),
        "window_days": int(window_days),
    }


class VAE3DGenerator:
    """``predict`` over physical-unit predictors -> ensemble in mm.

    Input ``(N, C, D, h, w)`` windows -> ``(num_samples, N, 1, D, H, W)``; or ``(N, C, h, w)``
    consecutive days -> ``(num_samples, N, 1, H, W)`` (cut into windows of ``window_days``,
    the last one shorter; the model is convolutional in time, so any D works).
    """

    def __init__(self, model: SimpleVAE3D, norm: Normalization, window_days: int,
                 batch_size: int = 4, land_mask: Tensor | None = None):
        self.model, self.norm = model.eval(), norm
        self.window_days, self.batch_size = window_days, batch_size
        self.land = land_mask  # sea pixels are 0 in the output, as in the prepared data

    @torch.no_grad()
    def predict(self, x_lr_physical: np.ndarray, num_samples: int = 1,
                mode: str = "generative", temperature: float = 1.0, seed: int = 0) -> np.ndarray:
        if mode not in ("generative", "deterministic"):
            raise ValueError(f"mode must be 'generative' or 'deterministic', got {mode!r}")
        x = torch.from_numpy(np.array(x_lr_physical, dtype=np.float32))  # a copy: inputs may be read-only
        if x.ndim == 4:  # (N, C, h, w) consecutive days -> windows (n, C, D, h, w)
            windows = [x[s : s + self.window_days].permute(1, 0, 2, 3)
                       for s in range(0, len(x), self.window_days)]
            out = [self._windows(w[None], num_samples, mode, temperature, seed + 7919 * j)
                   for j, w in enumerate(windows)]
            # (m, 1, 1, d, H, W) per window -> (m, N, 1, H, W)
            return np.concatenate([o[:, 0].transpose(0, 2, 1, 3, 4) for o in out], axis=1)
        if x.ndim != 5:
            raise ValueError(f"input has shape {tuple(x.shape)}; expected (N, C, D, h, w) or (N, C, h, w)")
        return self._windows(x, num_samples, mode, temperature, seed)

    def _windows(self, x_phys: Tensor, m: int, mode: str, temperature: float, seed: int) -> np.ndarray:
        C = self.model.hparams["in_channels"]
        if x_phys.shape[1] != C or list(x_phys.shape[-2:]) != self.model.hparams["lr_shape"]:
            raise ValueError(
                f"input has shape {tuple(x_phys.shape)}; the model expects (N, {C}, D, "
                f"{', '.join(map(str, self.model.hparams['lr_shape']))})"
            )
        x = self.norm.predictors_to_model(x_phys.permute(0, 2, 1, 3, 4), channel_axis=-3)
        x = x.permute(0, 2, 1, 3, 4).contiguous()
        outs = []
        for b in range(0, len(x), self.batch_size):
            xb = x[b : b + self.batch_size]
            if mode == "deterministic":
                y = self.model.forward_deterministic(xb).unsqueeze(0).expand(m, *([-1] * 5))
            else:
                y = self.model.generate_multiple_outputs(xb, m, temperature, seed + b, chunk_size=4)
            y = self.norm.to_physical(y)
            outs.append(y * self.land.to(y.dtype) if self.land is not None else y)
        return torch.cat(outs, dim=1).numpy()


def load_vae3d(ck: dict[str, Any], norm: Normalization) -> VAE3DGenerator:
    """A vae3d checkpoint -> its physical-units ensemble generator."""
    land = ck.get("land_mask")
    return VAE3DGenerator(build_from_checkpoint(ck), norm, int(ck.get("window_days", 8)),
                          land_mask=None if land is None else land.bool())
