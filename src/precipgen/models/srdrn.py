"""SRDRN-style deterministic downscaler (Wang et al. 2021, "Deep learning for daily
precipitation and temperature downscaling"), in PyTorch.

    x (B, C, h, w) low-res predictors, model space
      -> conv 3x3 -> ``res_blocks`` residual blocks (conv-BN-PReLU-conv-BN, + skip)
      -> conv + BN, long skip from the first conv
      -> learned upsampling: one (conv -> PixelShuffle(r) -> PReLU) stage per prime factor
         of the scale factor (12 = 2*2*3)
      -> statics (K, H, W) concatenated at full resolution -> conv 3x3 -> y (B, 1, H, W)

Output in model space (log1p + z-score, :mod:`precipgen.data.transforms`); the generator at
the bottom turns a checkpoint into physical units for :func:`precipgen.models.registry.open_generator`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from precipgen.data.transforms import Normalization
from precipgen.models.checkpoint import load_model_state
from precipgen.models.cvae import prime_factors


class ResidualBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.PReLU(c),
            nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class SRDRN(nn.Module):
    """``forward(x) -> y``: (B, C, h, w) -> (B, 1, H, W), both in model space."""

    def __init__(self, in_channels: int, statics: Tensor, lr_shape: tuple[int, int],
                 filters: int = 64, res_blocks: int = 16):
        super().__init__()
        K, H, W = statics.shape
        h, w = lr_shape
        if H % h or W % w or H // h != W // w:
            raise ValueError(f"high-res grid {H}x{W} is not an integer multiple (same in both "
                             f"axes) of the low-res grid {h}x{w}")
        self.hparams: dict[str, Any] = {
            "in_channels": in_channels, "lr_shape": [h, w], "hr_shape": [H, W],
            "filters": filters, "res_blocks": res_blocks, "static_channels": K,
        }
        self.register_buffer("statics", statics.float().clone())  # (K, H, W), model space
        f = filters
        self.head = nn.Sequential(nn.Conv2d(in_channels, f, 3, padding=1), nn.PReLU(f))
        self.body = nn.Sequential(*[ResidualBlock(f) for _ in range(res_blocks)])
        self.body_out = nn.Sequential(nn.Conv2d(f, f, 3, padding=1), nn.BatchNorm2d(f))
        ups: list[nn.Module] = []
        for r in prime_factors(H // h):
            ups += [nn.Conv2d(f, f * r * r, 3, padding=1), nn.PixelShuffle(r), nn.PReLU(f)]
        self.up = nn.Sequential(*ups)
        self.tail = nn.Sequential(nn.Conv2d(f + K, f, 3, padding=1), nn.PReLU(f),
                                  nn.Conv2d(f, 1, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        feat = self.head(x)
        feat = self.up(feat + self.body_out(self.body(feat)))  # long skip, as in SRResNet
        stat = self.statics.unsqueeze(0).expand(x.shape[0], -1, -1, -1)
        return self.tail(torch.cat([feat, stat], dim=1))


def build_from_checkpoint(ck: dict[str, Any]) -> SRDRN:
    hp = ck["hparams"]
    model = SRDRN(int(hp["in_channels"]), ck["statics"], tuple(hp["lr_shape"]),
                  int(hp["filters"]), int(hp["res_blocks"]))
    load_model_state(model, ck["model_state_dict"], "srdrn checkpoint")
    return model.eval()


class SRDRNGenerator:
    """``predict((N, C, h, w) physical) -> (num_samples, N, 1, H, W)`` mm (members identical:
    a deterministic model is a one-member ensemble repeated)."""

    def __init__(self, model: SRDRN, norm: Normalization, land_mask: Tensor | None = None,
                 batch_size: int = 16):
        self.model, self.norm, self.batch_size = model.eval(), norm, batch_size
        self.land = land_mask

    @torch.no_grad()
    def predict(self, x_lr: np.ndarray, num_samples: int = 1, **_: Any) -> np.ndarray:
        x = np.array(x_lr, dtype=np.float32)  # a writable copy: torch.from_numpy below
        hp = self.model.hparams
        want = (hp["in_channels"], *hp["lr_shape"])
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"X_lr has shape {x.shape}; expected (N, {', '.join(map(str, want))})")
        device = next(self.model.parameters()).device
        out = []
        for i in range(0, len(x), self.batch_size):
            xm = self.norm.predictors_to_model(torch.from_numpy(x[i : i + self.batch_size]))
            y = self.norm.to_physical(self.model(xm.to(device))).cpu()
            out.append(y * self.land if self.land is not None else y)
        y = torch.cat(out).numpy().astype(np.float32)
        return np.broadcast_to(y, (num_samples, *y.shape)).copy()


def load_srdrn(ck: dict[str, Any], norm: Normalization) -> SRDRNGenerator:
    land = ck.get("land_mask")
    return SRDRNGenerator(build_from_checkpoint(ck), norm, None if land is None else land.float())
