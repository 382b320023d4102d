"""The synthetic set's directory (all arrays in physical units)::

    day_000123_sample_00.Y_hr_syn.npy   (1, H, W)   accepted samples only (seed 001 names)
    day_000123_sample_00.X_lr_ref.npy   (C, h, w)   the real day's predictors
    Y_syn.npy (M, 1, H, W)   X_ref.npy (M, C, h, w)   day_index.npy (M,)   k_index.npy (M,)
    samples.nc               the same as CF-1.10 NetCDF: precip(time, realization, y, x)
    manifest.csv             every sample, accepted or not

Consolidated arrays are streamed to disk as samples arrive (a raw append file turned into a
``.npy`` at the end), so ``--days all`` never holds the whole set in memory.
"""

from __future__ import annotations

import csv
import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np

from precipgen.data import cf
from precipgen.synth.quality import MANIFEST_COLUMNS, SampleStats

COPY_CHUNK = 256  # samples per block when turning the raw append files into .npy


def sample_stem(day: int, k: int) -> str:
    return f"day_{int(day):06d}_sample_{int(k):02d}"


class _AppendArray:
    """Rows of a fixed shape appended to a raw file, finalised into an ``.npy``."""

    def __init__(self, path: Path, row_shape: tuple[int, ...], dtype: Any = np.float32):
        self.raw = path.with_suffix(".raw")
        self.path = path
        self.row_shape = row_shape
        self.dtype = np.dtype(dtype)
        self.n = 0
        self._f = open(self.raw, "wb")

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype).reshape(-1, *self.row_shape)
        self._f.write(rows.tobytes())
        self.n += len(rows)

    def finalize(self) -> np.ndarray:
        self._f.close()
        out = np.lib.format.open_memmap(self.path, mode="w+", dtype=self.dtype,
                                        shape=(self.n, *self.row_shape))
        if self.n:
            src = np.memmap(self.raw, dtype=self.dtype, mode="r", shape=(self.n, *self.row_shape))
            for i in range(0, self.n, COPY_CHUNK):
                out[i : i + COPY_CHUNK] = src[i : i + COPY_CHUNK]
            del src
            out.flush()
        self.raw.unlink()
        return out

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


class SynthWriter:
    """Collects accepted samples into ``root`` (an :class:`AtomicDir` temp dir)."""

    def __init__(self, root: Path, hr_shape: tuple[int, int], x_shape: tuple[int, int, int],
                 per_sample_files: bool = True):
        self.root = Path(root)
        self.per_sample_files = per_sample_files
        self.Y = _AppendArray(self.root / "Y_syn.npy", (1, *hr_shape))
        self.X = _AppendArray(self.root / "X_ref.npy", tuple(x_shape))
        self.days: list[int] = []
        self.ks: list[int] = []

    @property
    def count(self) -> int:
        return len(self.days)

    def add(self, day: int, k: int, y_mm: np.ndarray, x_phys: np.ndarray) -> None:
        y = np.asarray(y_mm, dtype=np.float32).reshape(1, *self.Y.row_shape[1:])
        x = np.asarray(x_phys, dtype=np.float32)
        if self.per_sample_files:
            stem = sample_stem(day, k)
            np.save(self.root / f"{stem}.Y_hr_syn.npy", y)
            np.save(self.root / f"{stem}.X_lr_ref.npy", x)
        self.Y.append(y)
        self.X.append(x)
        self.days.append(int(day))
        self.ks.append(int(k))

    def finalize(self, attrs: dict[str, Any], grid: cf.Grid) -> str:
        """Write the consolidated arrays and ``samples.nc`` (CF-1.10); returns the digest of
        ``Y_syn``."""
        Y = self.Y.finalize()
        X = self.X.finalize()
        day_index = np.asarray(self.days, dtype=np.int64)
        k_index = np.asarray(self.ks, dtype=np.int64)
        np.save(self.root / "day_index.npy", day_index)
        np.save(self.root / "k_index.npy", k_index)
        cf.write_samples(self.root / "samples.nc", grid, Y, X, day_index, k_index,
                         int(attrs.get("K") or 1), attrs)
        digest = array_digest(self.root / "Y_syn.npy")
        del Y, X
        return digest

    def abort(self) -> None:
        self.Y.close()
        self.X.close()


def array_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _fmt(v: object) -> object:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return v


def write_manifest(path: Path, stats: list[SampleStats]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(MANIFEST_COLUMNS))
        w.writeheader()
        for s in stats:
            w.writerow({k: _fmt(v) for k, v in s.row().items()})
