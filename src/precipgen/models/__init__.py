"""Model registry: each generator kind maps to a loader for :func:`load_generator`.

A loader takes ``(checkpoint_path, normalization)`` and returns an object with
``predict(x_lr_physical: np.ndarray (N, C, h, w), **params) -> np.ndarray`` in physical units.
Model modules register themselves with :func:`register_loader`; the checkpoint's ``kind`` field
picks the loader.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from precipgen.data.transforms import Normalization

_LOADERS: dict[str, Callable[[dict[str, Any], Normalization], Any]] = {}
# kind -> module that registers it (imported lazily so loading one kind needs no other)
_MODULES = {
    "cvae": "precipgen.models.cvae",
    "vae3d": "precipgen.models.vae3d",
    "srdrn": "precipgen.models.srdrn",
}


def register_loader(kind: str) -> Callable:
    def deco(fn: Callable[[dict[str, Any], Normalization], Any]) -> Callable:
        _LOADERS[kind] = fn
        return fn

    return deco


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load an (untrusted) checkpoint safely: tensors and plain containers only."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot load checkpoint {path} safely (weights_only=True): {e}") from e


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the one inside a directory: a downloaded ``runs:/.../model`` or
    ``models:/...`` (its ``artifacts/``), or a step's output dir (its best checkpoint)."""
    path = Path(path)
    if path.is_file():
        return path
    for pattern in ("artifacts/*.pt", "artifacts/*.pth", "**/*best*.pt", "**/*best*.pth"):
        found = sorted(path.glob(pattern))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ValueError(f"{path} holds several checkpoints ({', '.join(p.name for p in found)});"
                             " point at one file")
    found = sorted([*path.rglob("*.pt"), *path.rglob("*.pth")])
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(f"no checkpoint (*.pt, *.pth) found under {path}")
    raise ValueError(f"{path} holds several checkpoints ({', '.join(p.name for p in found)}); "
                     "point at one file")


def load_generator(checkpoint: Path, normalization: Path) -> Any:
    ckpt = load_checkpoint(checkpoint)
    kind = ckpt.get("kind")
    if kind not in _MODULES:
        raise ValueError(f"checkpoint {checkpoint} has unknown kind {kind!r}")
    importlib.import_module(_MODULES[kind])
    # The checkpoint's own transform is the one the model was trained with; the file beside it
    # is only a fallback for checkpoints that do not carry one.
    stored = ckpt.get("normalization")
    norm = Normalization.from_json(dict(stored)) if stored else Normalization.load(normalization)
    return _LOADERS[kind](ckpt, norm)
