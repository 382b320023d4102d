"""The memory layout models run in: channels-last, where oneDNN's convolutions are fastest."""

from __future__ import annotations

import torch
from torch import nn


def fast_layout(model: nn.Module) -> nn.Module:
    """Channels-last weights (NHWC / NDHWC, in place): on CPU oneDNN's convolutions run ~1.4x
    faster than on NCHW, in training and sampling alike (bench/bench_sample.py); results agree
    up to rounding. Models with 3D convolutions get ``channels_last_3d``."""
    kinds = {type(m) for m in model.modules()}
    if nn.Conv3d in kinds:
        return model.to(memory_format=torch.channels_last_3d)
    if nn.Conv2d in kinds:
        return model.to(memory_format=torch.channels_last)
    return model
