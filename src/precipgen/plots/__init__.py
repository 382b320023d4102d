"""Every figure precipgen draws, a module per step (prepare, train, sample, evaluate, tune),
all in one style: matplotlib's object API (``Figure``, no pyplot state, no GUI backend),
physical units on every axis and colour bar, one colour map for precipitation, sea blank.

Each public figure function is wrapped in :func:`styled` and builds on :func:`new_figure`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import matplotlib
from matplotlib.figure import Figure

PRECIP_CMAP = "viridis"
STYLE: dict[str, Any] = {
    "font.size": 9, "axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 7,
    "ytick.labelsize": 7, "legend.fontsize": 7, "figure.titlesize": 10, "image.cmap": PRECIP_CMAP,
    "image.origin": "upper", "image.interpolation": "nearest", "axes.spines.top": False,
    "axes.spines.right": False, "savefig.dpi": 90, "figure.dpi": 90,
}
F = TypeVar("F", bound=Callable[..., Any])


def styled(fn: F) -> F:
    """Draw inside precipgen's style (rc settings apply while artists are created)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def new_figure(figsize: tuple[float, float], **kw: Any) -> Figure:
    return Figure(figsize=figsize, layout="constrained", **kw)


def precip_cmap() -> Any:
    """The precipitation colour map, masked pixels (sea) in light grey."""
    cmap = matplotlib.colormaps[PRECIP_CMAP].copy()
    cmap.set_bad("lightgrey")
    return cmap


def close(fig: Figure) -> None:
    """Free a figure's artists (there is no pyplot state to release)."""
    fig.clf()
