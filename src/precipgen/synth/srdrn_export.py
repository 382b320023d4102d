"""The augmented training set for the deterministic downscaler, in SRDRN's layout::

    predictors_train_augmented.npy  (N, h, w, C)  real training days, then accepted synthetic
    obs_train_augmented.npy         (N, H, W)     sea NaN (as in SRDRN obs) when the grid has sea
    augmentation.json               counts, order, units/normalisation, source runs

When the dataset was prepared from *normalised* SRDRN files, ``prepare`` inverted SRDRN's
normalisation (predictors z-scored, obs log1p then z-scored; see ``data/sources.py``); it is
re-applied here so the arrays drop into the user's SRDRN training unchanged. Otherwise the
arrays are in physical units.

Only synthetic samples of *training* days are added: a sample of a val/test day carries that
day's predictors (and, in posterior mode, its target), so adding it would leak evaluation data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from precipgen.data.sources import read_norm_stats
from precipgen.data.store import DatasetError, PreparedDataset, file_sha256, write_json
from precipgen.data.transforms import SrdrnNormalization

PREDICTORS_FILE = "predictors_train_augmented.npy"
OBS_FILE = "obs_train_augmented.npy"
JSON_FILE = "augmentation.json"
CHUNK = 256


def srdrn_normalisation(ds: PreparedDataset) -> SrdrnNormalization | None:
    """SRDRN's normalisation if the dataset was prepared from normalised SRDRN files, else None.

    ``prepare`` records ``srdrn_normalised`` and, under ``inputs``, the ``mean``/``std`` files
    (path + sha256); the statistics are read back from those files, refusing a file that has
    changed since (its statistics would no longer be the ones that were inverted).
    """
    prov = ds.provenance
    if not prov.get("srdrn_normalised"):
        return None
    c = ds.n_channels
    files = {e.get("role"): e for e in prov.get("inputs", []) if isinstance(e, dict)}
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for role in ("mean", "std"):
        entry = files.get(role)
        if entry is None:
            raise DatasetError(
                f"{ds.root / 'metadata' / 'provenance.json'} says the SRDRN inputs were "
                f"normalised but records no '{role}' input file: cannot re-apply the normalisation"
            )
        path = Path(entry["path"])
        if not path.is_file():
            raise FileNotFoundError(
                f"SRDRN normalisation '{role}' file {path} (recorded in the dataset's "
                "provenance.json) no longer exists: cannot re-apply the normalisation"
            )
        if entry.get("sha256") and file_sha256(path) != entry["sha256"]:
            raise DatasetError(
                f"SRDRN normalisation '{role}' file {path} changed since the dataset was prepared "
                "(sha256 differs from provenance.json)"
            )
        stats[role] = read_norm_stats(path, role, c)
    (xm, ym), (xs, ys) = stats["mean"], stats["std"]
    return SrdrnNormalization(
        x_mean=np.asarray(xm, np.float32), x_std=np.asarray(xs, np.float32),
        y_mean=np.asarray(ym, np.float32), y_std=np.asarray(ys, np.float32),
        source={r: files[r]["path"] for r in ("mean", "std")})


def _to_layout(x_nchw: np.ndarray, y_n1hw: np.ndarray, sea: np.ndarray | None,
               norm: SrdrnNormalization | None) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x_nchw, dtype=np.float32).transpose(0, 2, 3, 1)
    y = np.array(y_n1hw[:, 0], dtype=np.float32)
    if sea is not None:
        y[:, sea] = np.nan
    if norm is not None:
        x, y = norm.predictors(x), norm.obs(y)
    return x.astype(np.float32, copy=False), y.astype(np.float32, copy=False)


def write_augmented(
    out_dir: Path, ds: PreparedDataset, syn_Y: np.ndarray, syn_X: np.ndarray,
    syn_days: np.ndarray, provenance: dict[str, Any],
) -> dict[str, Any]:
    """Write the augmented arrays into ``out_dir`` (an AtomicDir temp dir); returns the JSON."""
    out_dir = Path(out_dir)
    train = ds.split["train"]
    keep = np.isin(np.asarray(syn_days, dtype=np.int64), train)
    n_real, n_syn = len(train), int(keep.sum())
    n = n_real + n_syn
    C, (h, w), (H, W) = ds.n_channels, ds.lr_shape, ds.hr_shape
    land = ds.land_mask
    sea = ~land if not land.all() else None
    norm = srdrn_normalisation(ds)
    xp = np.lib.format.open_memmap(out_dir / PREDICTORS_FILE, "w+", np.float32, (n, h, w, C))
    yo = np.lib.format.open_memmap(out_dir / OBS_FILE, "w+", np.float32, (n, H, W))
    for i in tqdm(range(0, n_real, CHUNK), desc="augmented: real days", leave=False):
        idx = train[i : i + CHUNK]
        xp[i : i + len(idx)], yo[i : i + len(idx)] = _to_layout(ds.X_lr[idx], ds.Y_hr[idx], sea, norm)
    sel = np.flatnonzero(keep)
    for j in tqdm(range(0, n_syn, CHUNK), desc="augmented: synthetic", leave=False):
        idx = sel[j : j + CHUNK]
        a = n_real + j
        xp[a : a + len(idx)], yo[a : a + len(idx)] = _to_layout(syn_X[idx], syn_Y[idx], sea, norm)
    xp.flush()
    yo.flush()
    del xp, yo
    info = {
        "files": {"predictors": PREDICTORS_FILE, "obs": OBS_FILE},
        "layout": {"predictors": [n, h, w, C], "obs": [n, H, W],
                   "order": "real training days (day order), then accepted synthetic samples"},
        "n_real": n_real,
        "n_synthetic": n_syn,
        "n_synthetic_excluded_not_train": int(len(keep) - n_syn),
        "real_days": train.tolist(),
        "synthetic_days": np.asarray(syn_days, dtype=np.int64)[keep].tolist(),
        "sea": "NaN in obs" if sea is not None else "none (all land)",
        "units": "SRDRN-normalised" if norm else f"physical ({ds.normalization.units})",
        "normalisation": (
            {"predictors": "(x - mean) / std per channel", "obs": "(log1p(y) - mean) / std",
             "statistics_from": norm.source} if norm else None
        ),
        "channel_names": ds.channel_names,
        **provenance,
    }
    write_json(out_dir / JSON_FILE, info)
    return info
