"""What the measure_* scripts share: checking scores against an issue's bars, printing them, and
a JSON "book" of measured settings (one entry per ``--label``) rendered as a markdown table."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Targets = dict[str, tuple[str, float | None, float | None]]  # name -> (metric, low, high)


def check(metrics: dict[str, float], targets: Targets) -> dict[str, dict[str, Any]]:
    """Each target's value and pass/fail; a missing or non-finite value fails."""
    out = {}
    for name, (key, lo, hi) in targets.items():
        v = float(metrics.get(key, float("nan")))
        ok = bool(np.isfinite(v) and (lo is None or v >= lo) and (hi is None or v <= hi))
        out[name] = {"metric": key, "value": v, "pass": ok}
    return out


def report(res: dict[str, Any], title: str, width: int = 40) -> None:
    print(title)
    for name, t in res["targets"].items():
        print(f"  {'PASS' if t['pass'] else 'FAIL'}  {name:<{width}} {t['value']:.4g}")
    for k, v in res["summary"].items():
        print(f"    {k} = {v:.4g}")


def append(path: Path, label: str, res: dict[str, Any],
           markdown: Callable[[dict[str, Any]], str]) -> None:
    """Add ``res`` under ``label`` to the book at ``path`` and rewrite its ``.md`` table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    book = json.loads(path.read_text()) if path.exists() else {}
    book[label] = res
    path.write_text(json.dumps(book, indent=1))
    path.with_suffix(".md").write_text(markdown(book))
