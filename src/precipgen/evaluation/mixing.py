"""How synthetic days enter SRDRN's training (seed 001's two options), as samplers over the
dataset ``real days (0..n_real-1) + synthetic samples (n_real..)``.

- **A** (:class:`PerHeavyDaySampler`): every epoch, each real training day once, plus ``k``
  synthetic samples of each real heavy day that has any, shuffled together;
- **B** (:func:`subsample_synthetic` + a uniform sampler): the concatenated dataset, the
  synthetic part cut to ``ratio`` x the real days (0 keeps every accepted sample).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


class PerHeavyDaySampler(Sampler[int]):
    """Option A; reproducible per ``(seed, epoch)`` like :class:`EpochSampler`."""

    def __init__(self, n_real: int, real_days: np.ndarray, heavy_days: np.ndarray,
                 syn_days: np.ndarray, k: int, seed: int):
        self.n_real, self.k, self.seed, self.epoch = n_real, int(k), int(seed), 0
        heavy = set(np.asarray(heavy_days, dtype=np.int64).tolist())
        syn_days = np.asarray(syn_days, dtype=np.int64)
        # synthetic positions (offset by n_real) of each heavy real day
        self.groups = [n_real + np.flatnonzero(syn_days == d)
                       for d in np.asarray(real_days, dtype=np.int64) if int(d) in heavy]
        self.groups = [g for g in self.groups if len(g)]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_real + self.k * len(self.groups)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        extra = [rng.choice(g, size=self.k, replace=len(g) < self.k) for g in self.groups]
        idx = np.concatenate([np.arange(self.n_real), *extra]).astype(np.int64)
        return iter(idx[rng.permutation(len(idx))].tolist())


def subsample_synthetic(n_syn: int, n_real: int, ratio: float, seed: int) -> np.ndarray:
    """Option B: positions of the synthetic samples to keep (sorted): ``round(ratio * n_real)``
    of them (all when ``ratio`` is 0 or asks for more than there are)."""
    want = n_syn if ratio <= 0 else min(n_syn, int(round(ratio * n_real)))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_syn, size=want, replace=False)) if want < n_syn else np.arange(n_syn)


def real_share(sampler: Sampler[int], n_real: int, epoch: int = 1) -> float:
    """Fraction of one epoch's items that are real days (for the report)."""
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    idx = torch.as_tensor(list(iter(sampler)))
    return float((idx < n_real).float().mean()) if len(idx) else float("nan")
