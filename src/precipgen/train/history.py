"""The per-epoch (and per-iteration) CSV logs and their MLflow twins, kept equal on resume."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from precipgen.tracking import metric_history


def append_csv(path: Path, row: dict[str, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    if not new:
        with open(path) as f:
            header = next(csv.reader(f), [])
        if header != list(row):
            _rewrite_with_union_header(path, row)
            return
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _rewrite_with_union_header(path: Path, row: dict[str, float]) -> None:
    """Columns changed between epochs (a metric appeared): rewrite with the union header."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    fields = list(dict.fromkeys([*(rows[0].keys() if rows else []), *row]))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows([*rows, row])


def rewrite_history_csv(path: Path, history: list[dict[str, float]]) -> None:
    """Resume: the CSV holds exactly the checkpointed epochs (a crash between checkpoint and CSV
    append would otherwise lose a row, or a crash after it leave one the checkpoint lacks)."""
    path.unlink(missing_ok=True)
    for row in history:
        append_csv(path, row)


def relog_missing(run: Any, history: list[dict[str, float]]) -> None:
    """After a crash between checkpoint and metric logging, log the epochs MLflow lacks."""
    logged = {step for step, _ in metric_history(run.run_id, "epoch")}
    for m in history:
        if int(m["epoch"]) not in logged:
            run.log_metrics(m, step=int(m["epoch"]))


def logged_iterations(run: Any) -> int:
    """The last per-iteration step already in MLflow (resume logs only later ones)."""
    return max((s for s, _ in metric_history(run.run_id, "iter_loss")), default=0)
