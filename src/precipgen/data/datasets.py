"""Torch datasets over a prepared directory (model space in, physical units kept alongside).

- :class:`DayDataset`: one day per item (cVAE, SRDRN downscaler).
- :class:`WindowDataset`: D consecutive days per item, never crossing a split boundary (3D VAE).
- :class:`EpochSampler`: weighted (heavy-day oversampling) or plain shuffling that is
  reproducible per epoch and shards across DDP ranks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from precipgen.data.store import PreparedDataset
from precipgen.data.transforms import statics_to_model


def statics_tensor(ds: PreparedDataset) -> torch.Tensor:
    """``(K, H, W)`` statics in model space (shared by every item; keep it on the device)."""
    return torch.from_numpy(statics_to_model(ds.statics, ds.static_names))


def land_mask_tensor(ds: PreparedDataset) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(ds.land_mask))


class DayDataset(Dataset):
    """Items: ``x`` (C, h, w) and ``y`` (1, H, W) in model space, ``y_mm`` (1, H, W), ``day``.

    The split is read into memory once (a few hundred MB at most for PRISM-sized grids); days
    are converted on access so that memory holds physical units only once.
    """

    def __init__(self, ds: PreparedDataset, indices: Sequence[int] | np.ndarray):
        self.ds = ds
        self.indices = np.asarray(indices, dtype=np.int64)
        self.norm = ds.normalization
        self.x_phys = np.asarray(ds.X_lr[self.indices], dtype=np.float32)
        self.y_phys = np.asarray(ds.Y_hr[self.indices], dtype=np.float32)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = torch.from_numpy(self.x_phys[i])
        y_mm = torch.from_numpy(self.y_phys[i])
        return {
            "x": self.norm.predictors_to_model(x),
            "y": self.norm.to_model(y_mm),
            "y_mm": y_mm,
            "day": torch.tensor(int(self.indices[i])),
        }


class WindowDataset(Dataset):
    """Windows of ``window`` consecutive days inside one split (contiguous blocks).

    Items: ``x`` (C, D, h, w), ``y`` (1, D, H, W) model space, ``y_mm`` (1, D, H, W),
    ``day`` = first day of the window. Windows advance by ``stride`` days.
    """

    def __init__(self, ds: PreparedDataset, indices: Sequence[int] | np.ndarray, window: int,
                 stride: int = 1):
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) < window:
            raise ValueError(
                f"{ds.root}: split has {len(idx)} days, fewer than the window of {window} days"
            )
        self.ds = ds
        self.window = window
        self.norm = ds.normalization
        # start positions whose window is made of consecutive day ids (no gap between blocks)
        consecutive = np.diff(idx) == 1
        starts = [
            s for s in range(0, len(idx) - window + 1, stride)
            if consecutive[s : s + window - 1].all()
        ]
        if not starts:
            raise ValueError(f"{ds.root}: no {window} consecutive days in the split")
        self.starts = np.asarray(starts, dtype=np.int64)
        self.days = idx
        self.x_phys = np.asarray(ds.X_lr[idx], dtype=np.float32)
        self.y_phys = np.asarray(ds.Y_hr[idx], dtype=np.float32)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = int(self.starts[i])
        x = torch.from_numpy(self.x_phys[s : s + self.window])  # (D, C, h, w)
        y_mm = torch.from_numpy(self.y_phys[s : s + self.window])  # (D, 1, H, W)
        return {
            "x": self.norm.predictors_to_model(x).permute(1, 0, 2, 3).contiguous(),
            "y": self.norm.to_model(y_mm).permute(1, 0, 2, 3).contiguous(),
            "y_mm": y_mm.permute(1, 0, 2, 3).contiguous(),
            "day": torch.tensor(int(self.days[s])),
        }


class EpochSampler(Sampler[int]):
    """Reproducible per-epoch sampling, optionally weighted, sharded over DDP ranks.

    Every rank draws the same global order from ``seed + epoch`` and keeps every
    ``world_size``-th index, so ranks see disjoint data and a resumed run sees the same
    batches as an uninterrupted one.
    """

    def __init__(self, n: int, seed: int, weights: np.ndarray | None = None,
                 rank: int = 0, world_size: int = 1):
        self.n = n
        self.seed = seed
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.world_size

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is None:
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=g)
        usable = len(self) * self.world_size
        return iter(order[:usable][self.rank :: self.world_size].tolist())


def heavy_weights(ds: PreparedDataset, indices: np.ndarray, oversample: float) -> np.ndarray | None:
    """Sampling weights: heavy days ``oversample`` times as likely as others (None if 1)."""
    if oversample <= 1.0:
        return None
    heavy = np.isin(indices, ds.heavy_days)
    return np.where(heavy, oversample, 1.0)
