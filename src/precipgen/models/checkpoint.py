"""Checkpoint files: save atomically, load safely, find one in a directory, load weights.

Checkpoints hold only tensors and plain containers, so they load with
``torch.load(weights_only=True)``: an untrusted file can never run code. The ``kind`` field
("cvae", "vae3d", "srdrn") names the model; :mod:`precipgen.models.registry` maps it to a
loader.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic: write a temp file, then rename (a crash never leaves a torn checkpoint)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load an (untrusted) checkpoint safely: tensors and plain containers only."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir() or path.stat().st_size == 0:
        raise ValueError(f"checkpoint {path} is {'a directory' if path.is_dir() else 'empty'}; "
                         "expected a PyTorch checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message suggests weights_only=False, i.e. running the file's code: never.
        found = str(e).split("GLOBAL ", 1)[-1].split(" ", 1)[0] if "GLOBAL " in str(e) else ""
        raise ValueError(
            f"checkpoint {path} is refused: it holds Python objects other than tensors and "
            f"plain containers{f' ({found})' if found else ''}, and precipgen loads checkpoints "
            "with weights_only=True, never running code from a file. Use a checkpoint written "
            "by precipgen, or re-save the state_dict of a model you trust") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"checkpoint {path} is not a readable PyTorch checkpoint (truncated or "
                         f"another format): {str(e).splitlines()[0]}") from None


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


def load_model_state(model: nn.Module, state_dict: dict[str, torch.Tensor], source: Path | str) -> None:
    """Load weights, naming every mismatched tensor when the checkpoint does not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape
    )
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append("shape mismatch: " + "; ".join(wrong[:10]))
        if missing:
            parts.append("missing: " + ", ".join(missing[:10]))
        if unexpected:
            parts.append("unexpected: " + ", ".join(unexpected[:10]))
        raise ValueError(f"checkpoint {source} does not fit the configured model ({' | '.join(parts)})")
    model.load_state_dict(state_dict)
