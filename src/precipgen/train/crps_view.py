"""What the CRPS fine-tuning scores: fields -> one vector of scored values per member.

The plain loss is the CRPS on every land pixel in model space (log1p + z-score). Two options
(issue 14), both linear or per-pixel maps applied to members and truth alike, so the chunked
exact gradient still holds (each member's view depends only on that member):

- ``space="mm"``: score physical precipitation (what Val_CRPS and evaluate measure). In model
  space the log transform turns symmetric member noise into a wet bias in mm (Jensen).
- ``scales=[1, 2, 4]``: also score the fields average-pooled over k x k pixels. The pixel CRPS
  alone is blind to how the spread is split between scales (independent pixel noise scores the
  same as coherent structures of the same marginal spread); pooled scores penalise excess
  small-scale noise, which averages out in a pooled field but not in the truth's.

Each scale gets the same weight: the CRPS is positively homogeneous (CRPS(c x, c y) =
c CRPS(x, y), c > 0), so scaling the values of scale k by N / (K n_k) turns the plain mean over
the concatenated vector into the mean over scales of each scale's pixel mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from precipgen.data.transforms import Normalization

SPACES = ("model", "mm")


class CRPSView:
    """``(..., D, H, W)`` fields (model space) -> ``(..., N)`` scored values."""

    def __init__(self, land: Tensor, scales: list[int], space: str, norm: Normalization):
        if space not in SPACES:
            raise ValueError(f"CRPS space {space!r} is not one of {SPACES}")
        if not scales or any(k < 1 for k in scales):
            raise ValueError(f"CRPS scales must be pooling factors >= 1, got {scales}")
        self.space, self.norm, self.scales = space, norm, list(scales)
        landf = land.float()[None, None]
        # pooled cells that hold any land pixel (sea pixels are zeroed before pooling)
        self.cells = [F.avg_pool2d(landf, k, ceil_mode=True)[0, 0] > 0 if k > 1 else land.bool()
                      for k in self.scales]
        counts = [int(c.sum()) for c in self.cells]
        total = sum(counts)
        self.weights = [total / (len(counts) * n) for n in counts]
        self.land = land.bool()

    @property
    def plain(self) -> bool:
        """True when the view is the seed's loss (land pixels, model space)."""
        return self.scales == [1] and self.space == "model"

    def __call__(self, y: Tensor) -> Tensor:
        if self.space == "mm":
            y = self.norm.to_physical(y)
        lead, (H, W) = y.shape[:-2], y.shape[-2:]
        y = y * self.land.to(y.dtype)
        parts = []
        for k, cells, wgt in zip(self.scales, self.cells, self.weights):
            if k == 1:
                pooled = y
            else:
                pooled = F.avg_pool2d(y.reshape(-1, 1, H, W), k, ceil_mode=True)
                pooled = pooled.reshape(*lead, *pooled.shape[-2:])
            parts.append(pooled[..., cells] * wgt)
        return torch.cat(parts, dim=-1)
