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
from precipgen.models import load_checkpoint, register_loader

LOGVAR_MIN, LOGVAR_MAX = -12.0, 8.0


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
    ):
        super().__init__()
        K, H, W = statics.shape
        h, w = lr_shape
        self.hparams: dict[str, Any] = {
            "in_channels": in_channels, "static_channels": K, "lr_shape": [h, w],
            "hr_shape": [H, W], "base_filters": base_filters, "latent_channels": latent_channels,
            "noise_channels": latent_channels if noise_channels is None else noise_channels,
            "noise_init": noise_init,
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
        self.dec_hr = nn.Sequential(_block(ch + K + 1, bf), _block(bf, bf))  # +1: hr noise
        self.dec_out = nn.Conv3d(bf, 1, 1)

        with torch.no_grad():  # noise pathways start small: a near-deterministic start
            self.dec_in[0].weight[:, latent_channels:].mul_(noise_init)
            self.dec_hr[0][0].weight[:, -1:].mul_(noise_init)

    # ------------------------------------------------------------------ parts
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_logvar(h).clamp(LOGVAR_MIN, LOGVAR_MAX)

    def decode(self, z: Tensor, noise_lat: Tensor | None = None, noise_hr: Tensor | None = None) -> Tensor:
        """``z`` (B, L, D, h, w) -> (B, 1, D, H, W). Missing noise = zeros (deterministic)."""
        B, _, D, h, w = z.shape
        H, W = self.hr_shape
        if noise_lat is None:
            noise_lat = z.new_zeros(B, self.noise_channels, D, h, w)
        if noise_hr is None:
            noise_hr = z.new_zeros(B, 1, D, H, W)
        f = self.dec_in(torch.cat([z, noise_lat], dim=1))
        for stage, s in zip(self.up, self.up_scales):
            f = stage(F.interpolate(f, scale_factor=(1, s, s), mode="nearest"))
        if f.shape[-2:] != (H, W):  # factors other than 2^a 3^b, or uneven grids
            f = F.interpolate(f, size=(D, H, W), mode="trilinear", align_corners=False)
        stat = self.statics.unsqueeze(0).unsqueeze(2).expand(B, -1, D, -1, -1)
        f = self.dec_hr(torch.cat([f, stat, noise_hr], dim=1))
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
        eps_lat, eps_hr = [], []
        for i in range(start, stop):
            g = torch.Generator(device=mu.device).manual_seed(int(seed) + i)
            eps_lat.append(torch.randn(B, L + N, D, h, w, generator=g, device=mu.device, dtype=mu.dtype))
            eps_hr.append(torch.randn(B, 1, D, H, W, generator=g, device=mu.device, dtype=mu.dtype))
        n = stop - start
        e = torch.cat(eps_lat) * temperature  # (n*B, L+N, ...), member-major
        z = mu.repeat(n, 1, 1, 1, 1) + sigma.repeat(n, 1, 1, 1, 1) * e[:, :L]
        y = self.decode(z, e[:, L:], torch.cat(eps_hr) * temperature)
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
        from precipgen.train.loop import load_model_state

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


@register_loader("vae3d")
def load_vae3d(ck: dict[str, Any], norm: Normalization) -> VAE3DGenerator:
    land = ck.get("land_mask")
    return VAE3DGenerator(build_from_checkpoint(ck), norm, int(ck.get("window_days", 8)),
                          land_mask=None if land is None else land.bool())
