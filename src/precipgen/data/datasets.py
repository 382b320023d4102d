"""Torch datasets over a prepared directory (model space in, physical units kept alongside).

- :class:`DayDataset`: one day per item (cVAE, SRDRN downscaler).
- :class:`WindowDataset`: D consecutive time steps of one location per item, inside one split
  (3D VAE).
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
    """Windows of ``window`` consecutive time steps of ONE location group inside one split.

    Consecutive = the next sample of the same group in time order, exactly one ``step`` later
    when times are known (a gap ends the window); without times (older prepared dirs, daily
    sources), consecutive sample ids. Several tiles can share an hour (MRMS), so neighbouring
    ids are not neighbouring times. Windows advance by ``stride`` steps within each run of
    consecutive samples.

    Items: ``x`` (C, D, h, w), ``y`` (1, D, H, W) model space, ``y_mm`` (1, D, H, W),
    ``day`` = first sample id of the window. ``windows`` holds the (n, D) sample ids.
    """

    def __init__(self, ds: PreparedDataset, indices: Sequence[int] | np.ndarray, window: int,
                 stride: int = 1):
        if window < 1 or stride < 1:
            raise ValueError(f"{ds.root}: window ({window}) and window_stride ({stride}) must be >= 1")
        idx = np.asarray(indices, dtype=np.int64)
        smp = ds.samples
        group = smp.group[idx]
        time = None if smp.time is None else smp.time[idx]
        # order by (group, time, id); a link joins a sample to the next one in that order
        order = np.lexsort((idx, group) if time is None else (idx, time, group))
        ids, g = idx[order], group[order]
        if time is None:
            link = np.diff(ids) == 1
        else:
            t = time[order]
            # no step (no group has two distinct times): nothing is consecutive
            link = ((np.diff(t) == smp.step) & ~np.isnat(t[1:]) & ~np.isnat(t[:-1])
                    if smp.step is not None else np.zeros(max(len(t) - 1, 0), dtype=bool))
        link &= np.diff(g) == 0
        starts = []
        run_start = 0
        for k in range(len(ids)):  # each maximal run of linked samples, windows every stride
            if k == len(ids) - 1 or not link[k]:
                starts.extend(range(run_start, k + 2 - window, stride))
                run_start = k + 1
        n_groups = len(np.unique(group))
        if not starts:
            step = "consecutive ids" if time is None else f"a step of {smp.step}"
            raise ValueError(
                f"{ds.root}: no window of {window} consecutive samples ({step}, one group) in "
                f"a split of {len(idx)} samples over {n_groups} group(s); use a shorter window "
                "or more data"
            )
        pos = order[np.asarray(starts, dtype=np.int64)[:, None] + np.arange(window)]
        self.ds = ds
        self.window = window
        self.norm = ds.normalization
        self.positions = pos  # (n, D) positions into ``indices``
        self.windows = idx[pos]  # (n, D) sample ids
        self.x_phys = np.asarray(ds.X_lr[idx], dtype=np.float32)
        self.y_phys = np.asarray(ds.Y_hr[idx], dtype=np.float32)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        p = self.positions[i]
        x = torch.from_numpy(self.x_phys[p])  # (D, C, h, w)
        y_mm = torch.from_numpy(self.y_phys[p])  # (D, 1, H, W)
        return {
            "x": self.norm.predictors_to_model(x).permute(1, 0, 2, 3).contiguous(),
            "y": self.norm.to_model(y_mm).permute(1, 0, 2, 3).contiguous(),
            "y_mm": y_mm.permute(1, 0, 2, 3).contiguous(),
            "day": torch.tensor(int(self.windows[i, 0])),
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
