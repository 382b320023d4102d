"""Figures made during training (matplotlib, Agg backend; physical units only)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def cvae_validation_figure(
    days: Sequence[int],
    truth: np.ndarray,
    recon: np.ndarray,
    samples: np.ndarray,
    land: np.ndarray,
    epoch: int,
) -> Figure:
    """One row per day: truth, posterior reconstruction, samples from X alone.

    ``truth``/``recon`` ``(D, H, W)`` and ``samples`` ``(S, D, H, W)`` in mm; one colour scale
    (0 .. 99th percentile over everything shown) so intensities compare across panels.
    """
    n_days, n_samp = len(days), samples.shape[0]
    sea = ~land.astype(bool)
    shown = np.concatenate([truth.ravel(), recon.ravel(), samples.ravel()])
    vmax = max(float(np.percentile(shown, 99.5)), 1e-3)
    cols = 2 + n_samp
    fig, axes = plt.subplots(n_days, cols, figsize=(2.6 * cols + 0.8, 2.5 * n_days),
                             squeeze=False, constrained_layout=True)
    cmap = matplotlib.colormaps["viridis"].copy()
    cmap.set_bad("lightgrey")
    im = None
    for r, day in enumerate(days):
        panels = [("truth", truth[r]), ("posterior recon.", recon[r])]
        panels += [(f"sample {k + 1} (from X)", samples[k, r]) for k in range(n_samp)]
        for c, (title, field) in enumerate(panels):
            ax = axes[r, c]
            im = ax.imshow(np.ma.masked_where(sea, field), cmap=cmap, vmin=0, vmax=vmax,
                           origin="upper", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"day {day}: {title}" if c == 0 else title, fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.8, label="precipitation (mm)")
    fig.suptitle(f"cVAE validation heavy days, epoch {epoch}", fontsize=10)
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)
