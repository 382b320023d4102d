"""Evaluation figures (matplotlib object API, no GUI; physical units). Each function takes
arrays / the curves of :mod:`precipgen.evaluation.scoring` and returns a Figure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from precipgen.plots import new_figure, styled

COLORS = {"det": "tab:red", "gen": "tab:blue", "cvae": "tab:green", "oracle": "k",
          "real": "tab:orange", "augmented": "tab:purple", "truth": "k"}
LABELS = {"det": "deterministic", "gen": "generative (CRPS)", "cvae": "cVAE", "oracle": "oracle"}


def _label(p: str) -> str:
    return LABELS.get(p, p)


@styled
def heavy_days(days: Sequence[int], truth: np.ndarray, det: np.ndarray, members: np.ndarray,
               land: np.ndarray, units: str, word: str = "day") -> Figure:
    """Rows: days (``word``: "sample" for sub-daily data); columns: truth, deterministic, four
    members. One colour scale.
    ``truth``/``det`` (D, H, W), ``members`` (4, D, H, W)."""
    n, k = len(days), members.shape[0]
    cols = 2 + k
    fig = new_figure((2.4 * cols + 1.0, 2.3 * max(n, 1)))
    axes = fig.subplots(max(n, 1), cols, squeeze=False)
    shown = np.concatenate([truth[:, land].ravel(), det[:, land].ravel(),
                            members[:, :, land].ravel()])
    vmax = max(float(np.percentile(shown, 99.5)) if shown.size else 1.0, 1e-3)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    im = None
    for r, day in enumerate(days):
        panels = [("truth", truth[r]), ("deterministic", det[r])]
        panels += [(f"member {i + 1}", members[i, r]) for i in range(k)]
        for c, (title, f) in enumerate(panels):
            ax = axes[r, c]
            im = ax.imshow(np.ma.masked_where(~land, f), cmap=cmap, vmin=0, vmax=vmax,
                           interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{word} {day}: {title}" if c == 0 else title, fontsize=8)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label=f"precipitation ({units})")
    return fig


@styled
def std_map(std: np.ndarray, land: np.ndarray, units: str, title: str) -> Figure:
    fig = new_figure((5, 4))
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_where(~land, std), cmap="magma", interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, label=f"ensemble std ({units})")
    return fig


@styled
def rank_histograms(curves: dict[str, dict[str, Any]]) -> Figure:
    """One panel per ensemble: relative frequency per rank, with the flat line."""
    names = [p for p in curves if "rank_histogram" in curves[p]]
    fig = new_figure((3.6 * max(len(names), 1), 3.2))
    axes = fig.subplots(1, max(len(names), 1), squeeze=False)[0]
    for ax, p in zip(axes, names):
        c = np.asarray(curves[p]["rank_histogram"], float)
        f = c / max(c.sum(), 1)
        ax.bar(np.arange(len(c)), f, color=COLORS.get(p, "grey"))
        ax.axhline(1 / len(c), color="k", ls="--", lw=1)
        ax.set_title(f"rank histogram: {_label(p)}", fontsize=9)
        ax.set_xlabel("rank of the observation")
    axes[0].set_ylabel("relative frequency")
    return fig


@styled
def spread_skill(curves: dict[str, dict[str, Any]], units: str) -> Figure:
    fig = new_figure((4.5, 4.2))
    ax = fig.subplots()
    top = 0.0
    for p, c in curves.items():
        b = c.get("spread_skill_binned")
        if not b:
            continue
        s, e = np.asarray(b["spread"], float), np.asarray(b["rmse"], float)
        ax.plot(s, e, "o-", color=COLORS.get(p, "grey"), label=_label(p), ms=3)
        top = max(top, np.nanmax(np.r_[s, e, 0.0]))
    ax.plot([0, top or 1], [0, top or 1], "k--", lw=1, label="1:1")
    ax.set_xlabel(f"spread (corrected, {units})")
    ax.set_ylabel(f"RMSE of the ensemble mean ({units})")
    ax.set_title("spread-skill (pairs binned by ensemble variance)", fontsize=9)
    ax.legend(fontsize=8)
    return fig


@styled
def reliability(curves: dict[str, dict[str, Any]], thresholds: dict[str, float],
                units: str) -> Figure:
    fig = new_figure((4.2 * len(thresholds), 4.0))
    axes = fig.subplots(1, len(thresholds), squeeze=False)[0]
    for ax, (name, t) in zip(axes, thresholds.items()):
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        for p, c in curves.items():
            r = c.get(f"reliability_{name}")
            if not r:
                continue
            ax.plot(r["forecast"], r["observed"], "o-", color=COLORS.get(p, "grey"), ms=3,
                    label=_label(p))
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("forecast probability")
        ax.set_ylabel("observed frequency")
        ax.set_title(f"reliability: precip >= {name} ({t:.2f} {units})", fontsize=9)
        ax.legend(fontsize=8)
    return fig


@styled
def spectra(curves: dict[str, dict[str, Any]]) -> Figure:
    fig = new_figure((5, 4))
    ax = fig.subplots()
    truth_drawn = False
    for p, c in curves.items():
        s = c.get("spectrum")
        if not s:
            continue
        f = np.asarray(s["freq"], float)
        keep = f > 0
        if not truth_drawn:
            ax.loglog(f[keep], np.asarray(s["truth"])[keep], color="k", lw=2, label="truth")
            truth_drawn = True
        ax.loglog(f[keep], np.asarray(s["model"])[keep], color=COLORS.get(p, "grey"),
                  label=_label(p))
    ax.set_xlabel("frequency (cycles per pixel)")
    ax.set_ylabel("radially averaged power")
    ax.set_title("power spectra (drop at high frequency = over-smoothing)", fontsize=9)
    ax.legend(fontsize=8)
    return fig


@styled
def fss_curves(curves: dict[str, dict[str, Any]], thresholds: dict[str, float]) -> Figure:
    fig = new_figure((4.2 * len(thresholds), 3.8))
    axes = fig.subplots(1, len(thresholds), squeeze=False)[0]
    for ax, name in zip(axes, thresholds):
        target = None
        for p, c in curves.items():
            f = c.get(f"fss_{name}")
            if not f:
                continue
            ax.plot(f["scales"], f["fss"], color=COLORS.get(p, "grey"), label=_label(p))
            target = f["target"]
        if target is not None:
            ax.axhline(target, color="k", ls=":", lw=1, label="useful (0.5 + f_o/2)")
        ax.set_ylim(0, 1)
        ax.set_xlabel("window (px)")
        ax.set_ylabel("FSS")
        ax.set_title(f"fractions skill score, event >= {name}", fontsize=9)
        ax.legend(fontsize=8)
    return fig


@styled
def qq(curves: dict[str, dict[str, Any]], units: str) -> Figure:
    fig = new_figure((4.5, 4.2))
    ax = fig.subplots()
    top = 0.0
    for p, c in curves.items():
        q = c.get("qq")
        if not q:
            continue
        t, m = np.asarray(q["truth"], float), np.asarray(q["model"], float)
        ax.plot(t, m, ".-", color=COLORS.get(p, "grey"), label=_label(p), ms=3)
        top = max(top, float(np.nanmax(np.r_[t, m, 0.0])))
    ax.plot([0, top or 1], [0, top or 1], "k--", lw=1)
    ax.set_xlabel(f"truth wet-pixel quantile ({units})")
    ax.set_ylabel(f"model wet-pixel quantile ({units})")
    ax.set_title("quantile-quantile, wet pixels", fontsize=9)
    ax.legend(fontsize=8)
    return fig


@styled
def training_curves(histories: dict[str, dict[str, list[tuple[int, float]]]]) -> Figure:
    """One panel per upstream run: each metric's history against its step (epoch)."""
    names = [n for n, h in histories.items() if any(h.values())]
    fig = new_figure((4.2 * max(len(names), 1), 3.6))
    axes = fig.subplots(1, max(len(names), 1), squeeze=False)[0]
    for ax, name in zip(axes, names):
        for key, pts in histories[name].items():
            if pts:
                steps, vals = zip(*sorted(pts))
                ax.plot(steps, vals, "o-", ms=3, label=key)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    if not names:
        axes[0].text(0.5, 0.5, "no upstream training history", ha="center", va="center")
    return fig
