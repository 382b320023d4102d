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
- ``increments=[1]``: also score the fields' differences between pixels ``l`` apart (along
  rows and along columns, both pixels on land). Pooled scores see too much small-scale noise
  only through what is left after averaging; the increments are the small scales themselves,
  so their CRPS calibrates the members' local texture against the truth's: white noise gives
  increments far too spread, smooth blobs increments too narrow (bench/results/crps_standard.md).

Each scale and each increment lag gets the same weight: the CRPS is positively homogeneous
(CRPS(c x, c y) = c CRPS(x, y), c > 0), so scaling the values of part k by N / (K n_k) turns the
plain mean over the concatenated vector into the mean over parts of each part's mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from precipgen.data.transforms import Normalization

SPACES = ("model", "mm")


class CRPSView:
    """``(..., D, H, W)`` fields (model space) -> ``(..., N)`` scored values."""

    def __init__(self, land: Tensor, scales: list[int], space: str, norm: Normalization,
                 increments: list[int] | tuple[int, ...] = ()):
        if space not in SPACES:
            raise ValueError(f"CRPS space {space!r} is not one of {SPACES}")
        if not scales or any(k < 1 for k in scales):
            raise ValueError(f"CRPS scales must be pooling factors >= 1, got {scales}")
        H, W = land.shape
        if any(not 1 <= lag < min(H, W) for lag in increments):
            raise ValueError(f"CRPS increments must be pixel lags in [1, {min(H, W) - 1}], "
                             f"got {list(increments)}")
        self.space, self.norm, self.scales = space, norm, list(scales)
        self.increments = list(increments)
        landf = land.float()[None, None]
        lb = land.bool()
        # pooled cells that hold any land pixel (sea pixels are zeroed before pooling)
        self.cells = [F.avg_pool2d(landf, k, ceil_mode=True)[0, 0] > 0 if k > 1 else lb
                      for k in self.scales]
        # pixel pairs l apart with both ends on land: (rows, columns)
        self.pairs = [(lb[lag:] & lb[:-lag], lb[:, lag:] & lb[:, :-lag]) for lag in self.increments]
        counts = [int(c.sum()) for c in self.cells]
        counts += [int(r.sum()) + int(c.sum()) for r, c in self.pairs]
        if any(n == 0 for n in counts):
            raise ValueError(f"a CRPS scale or increment lag has no land cell (counts {counts})")
        total = sum(counts)
        self.weights = [total / (len(counts) * n) for n in counts]
        self.land = lb

    @property
    def plain(self) -> bool:
        """True when the view is the seed's loss (land pixels, model space)."""
        return self.scales == [1] and self.space == "model" and not self.increments

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
        for lag, (rows, cols), wgt in zip(self.increments, self.pairs,
                                          self.weights[len(self.scales):]):
            d_rows = (y[..., lag:, :] - y[..., :-lag, :])[..., rows]
            d_cols = (y[..., :, lag:] - y[..., :, :-lag])[..., cols]
            parts.append(torch.cat([d_rows, d_cols], dim=-1) * wgt)
        return torch.cat(parts, dim=-1)
