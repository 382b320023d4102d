"""The quality gate (seed 001: discard samples whose land total is below ``min_threshold`` x the
real day's) and the per-sample statistics that ``manifest.csv`` lists. Physical units (mm)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

MANIFEST_COLUMNS = (
    "day", "k", "accepted", "mass_ratio", "wet_fraction", "max", "P99", "spatial_corr",
    "syn_total_mm", "real_total_mm",
)


@dataclass
class SampleStats:
    day: int
    k: int
    accepted: bool
    mass_ratio: float  # synthetic land total / real land total (NaN when the real day is dry)
    wet_fraction: float  # land pixels above the wet threshold
    max: float  # mm, land
    P99: float  # mm, land
    spatial_corr: float  # Pearson correlation with the real day over land (NaN if constant)
    syn_total_mm: float
    real_total_mm: float

    def row(self) -> dict[str, object]:
        return asdict(self)


def passes_gate(syn_total: float, real_total: float, min_threshold: float) -> bool:
    """The seed's rule: keep unless ``syn_total < min_threshold * real_total``. A non-finite
    sample is never kept."""
    if not math.isfinite(syn_total):
        return False
    return not syn_total < min_threshold * real_total


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / den if den > 0 else float("nan")


def sample_stats(
    day: int, k: int, y_syn: np.ndarray, y_real: np.ndarray, land: np.ndarray,
    min_threshold: float, wet_threshold_mm: float,
) -> SampleStats:
    """Statistics of one synthetic field ``(H, W)`` (or ``(1, H, W)``) against the real day."""
    syn = np.asarray(y_syn, dtype=np.float64).reshape(land.shape)[land]
    real = np.asarray(y_real, dtype=np.float64).reshape(land.shape)[land]
    syn_total, real_total = float(syn.sum()), float(real.sum())
    finite = bool(np.isfinite(syn).all())
    return SampleStats(
        day=int(day),
        k=int(k),
        accepted=finite and passes_gate(syn_total, real_total, min_threshold),
        mass_ratio=syn_total / real_total if real_total > 0 else float("nan"),
        wet_fraction=float((syn > wet_threshold_mm).mean()) if syn.size else float("nan"),
        max=float(syn.max()) if syn.size else float("nan"),
        P99=float(np.percentile(syn, 99)) if syn.size and finite else float("nan"),
        spatial_corr=_corr(syn, real) if finite else float("nan"),
        syn_total_mm=syn_total,
        real_total_mm=real_total,
    )


def summarize(stats: list[SampleStats]) -> dict[str, float]:
    """Metrics for MLflow: counts, acceptance rate, and means/medians over all samples."""
    n = len(stats)
    acc = sum(s.accepted for s in stats)
    out: dict[str, float] = {
        "samples_total": float(n),
        "samples_accepted": float(acc),
        "samples_rejected": float(n - acc),
        "acceptance_rate": acc / n if n else float("nan"),
    }
    for key in ("mass_ratio", "wet_fraction", "max", "P99", "spatial_corr"):
        v = np.asarray([getattr(s, key) for s in stats], dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size:
            out[f"{key}_mean"] = float(v.mean())
            out[f"{key}_median"] = float(np.median(v))
    return out
