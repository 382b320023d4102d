"""Figures made during training (physical units only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from precipgen.plots import new_figure, precip_cmap, styled


@styled
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
    fig = new_figure((2.6 * cols + 0.8, 2.5 * n_days))
    axes = fig.subplots(n_days, cols, squeeze=False)
    cmap = precip_cmap()
    im = None
    for r, day in enumerate(days):
        panels = [("truth", truth[r]), ("posterior recon.", recon[r])]
        panels += [(f"sample {k + 1} (from X)", samples[k, r]) for k in range(n_samp)]
        for c, (title, field) in enumerate(panels):
            ax = axes[r, c]
            im = ax.imshow(np.ma.masked_where(sea, field), cmap=cmap, vmin=0, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"day {day}: {title}" if c == 0 else title)
    fig.colorbar(im, ax=axes, shrink=0.8, label="precipitation (mm)")
    fig.suptitle(f"cVAE validation heavy days, epoch {epoch}")
    return fig

