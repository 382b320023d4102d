"""Matplotlib figures of an Optuna study (logged to the study's parent MLflow run).

Drawn here rather than with ``optuna.visualization.matplotlib`` (experimental API, plotly-shaped
options): pruned trials are shown at their last reported value, log-scale parameters on log
axes, and every figure works from 1 trial on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from precipgen.plots import new_figure, styled

STATE_STYLE = {"COMPLETE": ("tab:blue", "o"), "PRUNED": ("tab:gray", "x"), "FAIL": ("tab:red", "v")}


def _state(t: Any) -> str:
    return t.state.name


@styled
def optimization_history(trials: Sequence[Any], label: str, direction: str,
                         index: int = 0) -> Figure:
    """Objective per trial number; pruned trials at their last reported value; best so far."""
    fig = new_figure((7, 4))
    ax = fig.subplots()
    best, best_x, best_y = math.inf if direction == "minimize" else -math.inf, [], []
    better = (lambda a, b: a < b) if direction == "minimize" else (lambda a, b: a > b)
    for state, (color, marker) in STATE_STYLE.items():
        xs, ys = [], []
        for t in trials:
            if _state(t) != state:
                continue
            if state == "COMPLETE" and t.values:
                y = t.values[index]
            elif t.intermediate_values:
                y = t.intermediate_values[max(t.intermediate_values)]
            else:
                continue
            if math.isfinite(y):
                xs.append(t.number)
                ys.append(y)
        if xs:
            label_state = state.lower() + (" (last reported)" if state != "COMPLETE" else "")
            ax.scatter(xs, ys, c=color, marker=marker, label=label_state, zorder=3)
    for t in sorted(trials, key=lambda t: t.number):
        if _state(t) == "COMPLETE" and t.values and better(t.values[index], best):
            best = t.values[index]
        if math.isfinite(best):
            best_x.append(t.number)
            best_y.append(best)
    if best_x:
        ax.step(best_x, best_y, where="post", color="tab:orange", label="best so far")
    ax.set_xlabel("trial number")
    ax.set_ylabel(label)
    ax.set_title(f"Optimisation history ({direction} {label})")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return fig


@styled
def param_importances(importances: dict[str, float], label: str) -> Figure:
    """Horizontal bars, most important on top (fANOVA importances sum to 1)."""
    names = list(importances)[::-1]
    fig = new_figure((6, 1.2 + 0.5 * len(names)))
    ax = fig.subplots()
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    for i, n in enumerate(names):
        ax.text(importances[n], i, f" {importances[n]:.2f}", va="center", fontsize=8)
    ax.set_xlabel(f"importance for {label}")
    ax.set_xlim(0, max(1.0, max(importances.values(), default=1.0) * 1.15))
    ax.set_title("Parameter importances")
    return fig


@styled
def parallel_coordinates(trials: Sequence[Any], params: Sequence[Any], label: str,
                         direction: str, index: int = 0) -> Figure:
    """One line per complete trial across the parameters (log-scaled where the space is log),
    coloured by the objective; the best trial drawn thick."""
    done = [t for t in trials if _state(t) == "COMPLETE" and t.values
            and all(p.name in t.params for p in params)]
    fig = new_figure((2.2 * (len(params) + 1), 4.5))
    ax = fig.subplots()
    axes_names = [p.name for p in params] + [label]
    if not done:
        ax.text(0.5, 0.5, "no complete trials yet", ha="center", va="center")
        ax.set_axis_off()
        return fig
    cols, ticks = [], []
    for p in params:
        raw = [t.params[p.name] for t in done]
        if p.type == "categorical":
            choices = list(p.choices)
            col = np.array([choices.index(v) for v in raw], dtype=float)
            lo, hi = 0.0, max(len(choices) - 1, 1)
            ticks.append((str(choices[0]), str(choices[-1])))
        else:
            col = np.log10(np.asarray(raw, dtype=float)) if p.log else np.asarray(raw, dtype=float)
            lo = math.log10(p.low) if p.log else float(p.low)
            hi = math.log10(p.high) if p.log else float(p.high)
            ticks.append((f"{p.low:g}", f"{p.high:g}"))
        cols.append((col - lo) / ((hi - lo) or 1.0))
    obj = np.array([t.values[index] for t in done], dtype=float)
    finite = obj[np.isfinite(obj)]
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    cols.append((obj - lo) / ((hi - lo) or 1.0))
    ticks.append((f"{lo:.4g}", f"{hi:.4g}"))
    data = np.stack(cols, axis=1)
    cmap = matplotlib.colormaps.get_cmap("viridis_r" if direction == "minimize" else "viridis")
    best = int(np.nanargmin(obj) if direction == "minimize" else np.nanargmax(obj))
    x = np.arange(len(axes_names))
    for i, row in enumerate(data):
        ax.plot(x, row, color=cmap(cols[-1][i]), lw=3 if i == best else 1,
                alpha=1.0 if i == best else 0.7)
    for xi, (lo_t, hi_t) in zip(x, ticks):
        ax.axvline(xi, color="k", lw=0.8)
        ax.text(xi, -0.06, lo_t, ha="center", va="top", fontsize=7)
        ax.text(xi, 1.06, hi_t, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, axes_names, rotation=15, fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.15, 1.15)
    ax.set_title(f"Parallel coordinates ({len(done)} complete trials; thick = best)", fontsize=9)
    sm = ScalarMappable(cmap=cmap, norm=Normalize(lo, hi))
    fig.colorbar(sm, ax=ax, label=label)
    return fig


@styled
def pareto_front(trials: Sequence[Any], front: Sequence[Any], labels: Sequence[str]) -> Figure:
    """First two objectives of every complete trial; the Pareto-optimal ones joined."""
    fig = new_figure((6, 4.5))
    ax = fig.subplots()
    done = [t for t in trials if _state(t) == "COMPLETE" and t.values]
    on = {t.number for t in front}
    other = [t for t in done if t.number not in on]
    if other:
        ax.scatter([t.values[0] for t in other], [t.values[1] for t in other], c="tab:gray",
                   label="dominated", zorder=2)
    pts = sorted((t.values[0], t.values[1], t.number) for t in front)
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", c="tab:red",
                label="Pareto front", zorder=3)
        for v0, v1, n in pts:
            ax.annotate(str(n), (v0, v1), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(f"Pareto front ({len(front)} of {len(done)} complete trials; labels: trial)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return fig
