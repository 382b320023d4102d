"""The ``sample`` step's figure: real heavy days beside their K synthetic samples, one colour
scale in mm for every panel (so a sample that is too weak or too strong is visible at once)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from precipgen.plots import new_figure, styled

MAX_ROWS = 4


def figure_days(days: np.ndarray, heavy: np.ndarray, real_totals: np.ndarray,
                n: int = MAX_ROWS) -> np.ndarray:
    """Up to ``n`` of the selected ``days`` to show: the heaviest heavy days, topped up with the
    heaviest remaining days when fewer than ``n`` heavy days were selected."""
    order = np.argsort(-np.asarray(real_totals), kind="stable")
    is_heavy = np.isin(days[order], heavy)
    ranked = np.concatenate([days[order][is_heavy], days[order][~is_heavy]])
    return np.sort(ranked[:n])


@styled
def real_vs_samples(
    real: np.ndarray, samples: np.ndarray, accepted: np.ndarray, days: Sequence[int],
    land: np.ndarray, units: str, title: str = "",
) -> Figure:
    """``real (n, H, W)``, ``samples (n, K, H, W)``, ``accepted (n, K)``; physical units."""
    n, K = samples.shape[:2]
    shown = np.concatenate([real[:, None], samples], axis=1)[:, :, land]
    finite = shown[np.isfinite(shown)]
    vmax = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    norm = Normalize(vmin=0.0, vmax=max(vmax, 1e-6))
    fig = new_figure((2.6 * (K + 1) + 0.8, 2.4 * n + 0.6))
    axes = np.atleast_2d(fig.subplots(n, K + 1, squeeze=False))
    im = None
    for i in range(n):
        for j in range(K + 1):
            ax = axes[i, j]
            field = real[i] if j == 0 else samples[i, j - 1]
            im = ax.imshow(np.ma.masked_where(~land, field), cmap="viridis", norm=norm,
                           interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_title(f"day {int(days[i])}: real", fontsize=9)
            else:
                ok = bool(accepted[i, j - 1])
                ax.set_title(f"sample {j - 1}" + ("" if ok else " (rejected)"), fontsize=9,
                             color="k" if ok else "tab:red")
    if im is not None:
        cb = fig.colorbar(im, ax=axes, shrink=0.8, extend="max")
        cb.set_label(f"precipitation ({units})")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
