"""Noise per (day, k): every sample draws its own stream, so a sample does not depend on the
batch it was generated in, on K, or on which other days were selected."""

from __future__ import annotations

import numpy as np
import torch


def pair_seed(seed: int, day: int, k: int) -> int:
    """A well-mixed 63-bit seed for one (day, k); SeedSequence avoids the correlated streams
    that ``seed + day * K + k`` arithmetic gives."""
    state = np.random.SeedSequence([int(seed), int(day), int(k)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def pair_generator(seed: int, day: int, k: int) -> torch.Generator:
    return torch.Generator().manual_seed(pair_seed(seed, day, k))


def pair_normal(seed: int, days: np.ndarray, ks: np.ndarray, dim: int) -> torch.Tensor:
    """``(len(days), dim)`` standard normals, row i from the stream of ``(days[i], ks[i])``."""
    rows = [torch.randn(dim, generator=pair_generator(seed, d, k)) for d, k in zip(days, ks)]
    return torch.stack(rows) if rows else torch.empty(0, dim)
