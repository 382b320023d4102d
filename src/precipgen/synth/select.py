"""Which days to sample: ``heavy_only`` | ``split:train|val|test`` | ``all`` | ``file:PATH``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from precipgen.data.store import PreparedDataset

SPLITS = ("train", "val", "test")
_SHOW = 10  # how many unknown ids an error lists


class DaySelectionError(ValueError):
    """A --days value that selects nothing or names days the dataset does not have."""


def read_day_file(path: Path) -> list[int]:
    """Day ids, one a line; blank lines and ``#`` comments are skipped."""
    if not path.is_file():
        raise FileNotFoundError(f"--days file not found: {path}")
    ids: list[int] = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            ids.append(int(text))
        except ValueError as e:
            raise DaySelectionError(f"{path}:{lineno}: '{text}' is not a day id") from e
    return ids


def select_days(ds: PreparedDataset, spec: str) -> np.ndarray:
    """Sorted unique day ids for ``spec``; an empty selection is an error."""
    spec = spec.strip()
    if spec == "heavy_only":
        days = ds.heavy_days
    elif spec == "all":
        days = np.arange(ds.n_days)
    elif spec.startswith("split:"):
        name = spec.split(":", 1)[1]
        if name not in SPLITS:
            raise DaySelectionError(f"--days {spec}: unknown split '{name}' (one of {list(SPLITS)})")
        days = ds.split[name]
    elif spec.startswith("file:"):
        path = Path(spec.split(":", 1)[1])
        ids = np.asarray(read_day_file(path), dtype=np.int64)
        unknown = sorted({int(d) for d in ids if d < 0 or d >= ds.n_days})
        if unknown:
            shown = ", ".join(map(str, unknown[:_SHOW])) + (", ..." if len(unknown) > _SHOW else "")
            raise DaySelectionError(
                f"--days {spec}: {len(unknown)} day id(s) not in the dataset {ds.root} "
                f"(valid 0..{ds.n_days - 1}): {shown}"
            )
        days = ids
    else:
        raise DaySelectionError(
            f"--days '{spec}' is not one of heavy_only, split:train|val|test, all, file:PATH"
        )
    days = np.unique(np.asarray(days, dtype=np.int64))
    if days.size == 0:
        raise DaySelectionError(f"--days {spec} selects no days in {ds.root}")
    return days
