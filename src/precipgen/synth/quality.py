"""The quality gate and the per-sample statistics that ``manifest.csv`` lists. Physical units (mm).

Gates (each sample is checked against every one; ``gate_failed`` names those it failed):

- ``mass_low``: land total below ``min_threshold`` x the real day's (seed 001's rule);
- ``mass_high``: land total above ``max_mass_ratio`` x the real day's;
- ``wet_fraction``: wet-pixel fraction above ``max_wet_ratio`` x the real day's (drizzle
  everywhere);
- ``P99``: land P99 outside ``[min_p99_ratio, max_p99_ratio]`` x the real day's (a bounded or
  runaway tail);
- ``diversity``: the K samples of a day differ from each other by less than ``min_diversity``
  (mean absolute pairwise difference / the real day's land mean): a collapsed generator;
- ``copy``: correlation with the source (real) day above ``max_source_corr``: a near-copy adds
  nothing an extra epoch would not;
- ``non_finite``: a NaN/inf pixel.

A threshold of 0 disables its gate (``min_threshold`` 0 keeps every finite sample, as before).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

MANIFEST_COLUMNS = (
    "day", "k", "accepted", "mass_ratio", "wet_fraction", "max", "P99", "spatial_corr",
    "syn_total_mm", "real_total_mm", "real_wet_fraction", "real_P99", "diversity", "gate_failed",
)
GATES = ("non_finite", "mass_low", "mass_high", "wet_fraction", "P99", "diversity", "copy")


@dataclass
class GateThresholds:
    """The gates beyond ``min_threshold``; 0 disables one."""

    max_mass_ratio: float = 0.0
    max_wet_ratio: float = 0.0
    min_p99_ratio: float = 0.0
    max_p99_ratio: float = 0.0
    min_diversity: float = 0.0
    max_source_corr: float = 0.0


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
    real_wet_fraction: float = float("nan")
    real_P99: float = float("nan")
    diversity: float = float("nan")  # among the K samples of the day (see module doc)
    gate_failed: list[str] = field(default_factory=list)

    def row(self) -> dict[str, object]:
        d = asdict(self)
        d["gate_failed"] = "+".join(self.gate_failed)
        return d


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


def day_diversity(samples: np.ndarray, y_real: np.ndarray, land: np.ndarray) -> float:
    """Mean absolute difference between the K samples ``(K, H, W)`` of one day over land, as a
    fraction of the real day's land mean (NaN for K < 2 or a dry real day)."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1, *land.shape)[:, land]
    real_mean = float(np.asarray(y_real, dtype=np.float64).reshape(land.shape)[land].mean())
    k = len(x)
    if k < 2 or not real_mean > 0:
        return float("nan")
    pairs = [np.abs(x[i] - x[j]).mean() for i in range(k) for j in range(i + 1, k)]
    return float(np.mean(pairs) / real_mean)


def failed_gates(s: SampleStats, min_threshold: float, g: GateThresholds, finite: bool) -> list[str]:
    if not finite:
        return ["non_finite"]
    out = []
    if not passes_gate(s.syn_total_mm, s.real_total_mm, min_threshold):
        out.append("mass_low")
    if g.max_mass_ratio > 0 and s.mass_ratio > g.max_mass_ratio:
        out.append("mass_high")
    if g.max_wet_ratio > 0 and s.real_wet_fraction > 0 and (
            s.wet_fraction > g.max_wet_ratio * s.real_wet_fraction):
        out.append("wet_fraction")
    if s.real_P99 > 0 and ((g.min_p99_ratio > 0 and s.P99 < g.min_p99_ratio * s.real_P99)
                           or (g.max_p99_ratio > 0 and s.P99 > g.max_p99_ratio * s.real_P99)):
        out.append("P99")
    if g.min_diversity > 0 and math.isfinite(s.diversity) and s.diversity < g.min_diversity:
        out.append("diversity")
    if g.max_source_corr > 0 and math.isfinite(s.spatial_corr) and s.spatial_corr > g.max_source_corr:
        out.append("copy")
    return out


def sample_stats(
    day: int, k: int, y_syn: np.ndarray, y_real: np.ndarray, land: np.ndarray,
    min_threshold: float, wet_threshold_mm: float, gate: GateThresholds | None = None,
    diversity: float = float("nan"),
) -> SampleStats:
    """Statistics of one synthetic field ``(H, W)`` (or ``(1, H, W)``) against the real day,
    and the gates it failed (``diversity``: of its day, from :func:`day_diversity`)."""
    syn = np.asarray(y_syn, dtype=np.float64).reshape(land.shape)[land]
    real = np.asarray(y_real, dtype=np.float64).reshape(land.shape)[land]
    syn_total, real_total = float(syn.sum()), float(real.sum())
    finite = bool(np.isfinite(syn).all())
    s = SampleStats(
        day=int(day),
        k=int(k),
        accepted=False,
        mass_ratio=syn_total / real_total if real_total > 0 else float("nan"),
        wet_fraction=float((syn > wet_threshold_mm).mean()) if syn.size else float("nan"),
        max=float(syn.max()) if syn.size else float("nan"),
        P99=float(np.percentile(syn, 99)) if syn.size and finite else float("nan"),
        spatial_corr=_corr(syn, real) if finite else float("nan"),
        syn_total_mm=syn_total,
        real_total_mm=real_total,
        real_wet_fraction=float((real > wet_threshold_mm).mean()) if real.size else float("nan"),
        real_P99=float(np.percentile(real, 99)) if real.size else float("nan"),
        diversity=float(diversity),
    )
    s.gate_failed = failed_gates(s, min_threshold, gate or GateThresholds(), finite)
    s.accepted = not s.gate_failed
    return s


def summarize(stats: list[SampleStats]) -> dict[str, float]:
    """Metrics for MLflow: counts, acceptance rate, failures per gate (a sample can fail
    several), and means/medians over all samples."""
    n = len(stats)
    acc = sum(s.accepted for s in stats)
    out: dict[str, float] = {
        "samples_total": float(n),
        "samples_accepted": float(acc),
        "samples_rejected": float(n - acc),
        "acceptance_rate": acc / n if n else float("nan"),
    }
    for g in GATES:
        out[f"gate_failed_{g}"] = float(sum(g in s.gate_failed for s in stats))
    for key in ("mass_ratio", "wet_fraction", "max", "P99", "spatial_corr", "diversity"):
        v = np.asarray([getattr(s, key) for s in stats], dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size:
            out[f"{key}_mean"] = float(v.mean())
            out[f"{key}_median"] = float(np.median(v))
    return out


def gate_summary(metrics: dict[str, float]) -> str:
    """``"3 mass_low, 1 copy"`` (or ``"none"``) for the summary line."""
    parts = [f"{int(metrics[f'gate_failed_{g}'])} {g}" for g in GATES
             if metrics.get(f"gate_failed_{g}", 0) > 0]
    return ", ".join(parts) or "none"
