"""The ``prepare`` step's overview figure, and the panels it is made of (physical units)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from precipgen.plots import new_figure, styled


def image(ax: Axes, img: np.ndarray, title: str, units: str = "", cmap: str = "viridis",
          mask: np.ndarray | None = None, vmin: float | None = None,
          vmax: float | None = None) -> None:
    """One 2D field with a colorbar; ``mask`` False pixels shown blank (e.g. sea)."""
    data = np.ma.masked_where(~mask, img) if mask is not None else img
    im = ax.imshow(data, cmap=cmap, origin="upper", interpolation="nearest", vmin=vmin, vmax=vmax)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    cb = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    if units:
        cb.set_label(units, fontsize=8)
    cb.ax.tick_params(labelsize=7)


def intensity_histogram(ax: Axes, values: np.ndarray, units: str, wet_threshold: float,
                        marks: dict[str, float] | None = None, bins: int = 60) -> None:
    """Histogram of wet-pixel intensities on log-log axes, with vertical lines at ``marks``."""
    values = np.asarray(values, dtype=np.float64)
    lo = max(wet_threshold, float(values.min()), 1e-3)
    hi = max(float(values.max()), lo * 10)
    ax.hist(values, bins=np.geomspace(lo, hi, bins), color="tab:blue", alpha=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    for (name, v), color in zip((marks or {}).items(), ("tab:orange", "tab:red", "k")):
        ax.axvline(v, color=color, ls="--", lw=1, label=f"{name} = {v:.3g} {units}")
    ax.set_xlabel(f"precipitation ({units})")
    ax.set_ylabel("wet pixels")
    ax.set_title(f"wet land pixels (> {wet_threshold:g} {units}), training split", fontsize=9)
    if marks:
        ax.legend(fontsize=8)


@styled
def dataset_overview(x_lr: np.ndarray, y_hr: np.ndarray, land: np.ndarray,
                     day_labels: Sequence[str], channel_name: str, units: str,
                     wet_values: np.ndarray, wet_threshold: float,
                     marks: dict[str, float] | None = None) -> Figure:
    """Rows of example days (low-res input, high-res target, land mask) + intensity histogram.

    ``x_lr (D, h, w)`` one predictor channel, ``y_hr (D, H, W)``, ``land (H, W)`` bool.
    """
    n = len(day_labels)
    fig = new_figure((11, 3.0 * n + 3.2))
    gs = fig.add_gridspec(n + 1, 3, height_ratios=[1.0] * n + [1.1])
    for r, label in enumerate(day_labels):
        image(fig.add_subplot(gs[r, 0]), x_lr[r], f"{label}: low-res {channel_name}")
        image(fig.add_subplot(gs[r, 1]), y_hr[r], f"{label}: high-res target", units,
              cmap="Blues", mask=land)
        image(fig.add_subplot(gs[r, 2]), land.astype(np.float32), "land mask (1 = land)",
              cmap="Greens", vmin=0.0, vmax=1.0)
    intensity_histogram(fig.add_subplot(gs[n, :]), wet_values, units, wet_threshold, marks)
    return fig
