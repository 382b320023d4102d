"""The verdict an evaluation leads with: each criterion, its value, threshold, units, pass/fail.

Criteria come from the seeds (000: the four success indicators) and from the science targets
(issues 13 and 14): against the oracle on synthetic data, against the deterministic model on
real data. A criterion whose metric was not computed (no oracle, no cVAE, no augmentation
experiment) is left out, never shown as passed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from precipgen.scores.ensemble import Indicator


@dataclass(frozen=True)
class Criterion:
    name: str
    value: float
    threshold: str  # as a person reads it: "<= 1.15", "in [0.9, 1.1]"
    units: str
    passed: bool
    basis: str  # where the criterion comes from

    def row(self) -> list[str]:
        v = "n/a" if not math.isfinite(self.value) else f"{self.value:.4g}"
        return [self.name, v, self.threshold, self.units, "PASS" if self.passed else "FAIL",
                self.basis]


HEADER = ["criterion", "value", "threshold", "units", "result", "basis"]


def _rule(op: str, a: float, b: float | None = None) -> tuple[str, Callable[[float], bool]]:
    if op == "<=":
        return f"<= {a:g}", lambda v: v <= a
    if op == ">=":
        return f">= {a:g}", lambda v: v >= a
    if op == "abs<=":
        return f"|x| <= {a:g}", lambda v: abs(v) <= a
    assert b is not None
    return f"in [{a:g}, {b:g}]", lambda v: a <= v <= b


# (name, metric key, rule, units, basis); units "ratio" = dimensionless ratio
_WITH_ORACLE = [
    ("generative CRPS / oracle CRPS", "gen_oracle_ratio", ("<=", 1.15), "ratio", "issue 14"),
    ("deterministic CRPS / oracle CRPS", "det_oracle_ratio", (">=", 1.3), "ratio", "issue 14"),
    ("generative spread-skill", "gen_spread_skill", ("in", 0.9, 1.1), "ratio", "issue 14"),
    ("generative rank histogram p", "gen_rank_pvalue", (">=", 0.01), "p-value", "issue 14"),
    ("generative spectral ratio", "gen_spectral_ratio", ("in", 0.7, 1.3), "ratio", "issue 14"),
    ("cVAE CRPS / oracle CRPS", "cvae_oracle_ratio", ("<=", 1.3), "ratio", "issue 13"),
    ("cVAE spread-skill", "cvae_spread_skill", ("in", 0.8, 1.2), "ratio", "issue 13"),
    ("cVAE land mass bias", "cvae_mass_bias", ("abs<=", 0.10), "fraction", "issue 13"),
    ("cVAE spectral ratio", "cvae_spectral_ratio", ("in", 0.7, 1.3), "ratio", "issue 13"),
]
_WITHOUT_ORACLE = [
    ("CRPS improvement over deterministic", "crps_improvement_pct", (">=", 10.0), "%",
     "issue 14 (real data)"),
    ("generative spread-skill", "gen_spread_skill", ("in", 0.8, 1.2), "ratio",
     "issue 14 (real data)"),
    ("generative land mass bias", "gen_mass_bias", ("abs<=", 0.15), "fraction",
     "issue 14 (real data)"),
    ("generative spectral ratio", "gen_spectral_ratio", ("in", 0.5, 1.5), "ratio",
     "issue 14 (real data)"),
]
SEED_NAMES = {"generative_variance": "generative model variance", "diversity": "diversity score",
              "crps_improvement_pct": "CRPS improvement", "uncertainty": "uncertainty"}


def criteria(metrics: dict[str, float], indicators: dict[str, Indicator] | None,
             units: str) -> list[Criterion]:
    """Every criterion that applies to these metrics, in the order the report shows them."""
    out: list[Criterion] = []
    for key, ind in (indicators or {}).items():
        unit = "%" if key == "crps_improvement_pct" else units if key == "uncertainty" else \
            f"({units})^2" if key == "generative_variance" else units
        out.append(Criterion(f"seed: {SEED_NAMES.get(key, key)}", float(ind.value),
                             f"> {ind.threshold:g}", unit, bool(ind.passed), "seed 000"))
    table = _WITH_ORACLE if "oracle_CRPS" in metrics else _WITHOUT_ORACLE
    for name, key, rule, unit, basis in table:
        if key not in metrics:
            continue
        text, ok = _rule(*rule)
        v = float(metrics[key])
        out.append(Criterion(name, v, text, unit, math.isfinite(v) and ok(v), basis))
    if "oracle_rank_reliability_index" in metrics and "cvae_rank_reliability_index" in metrics:
        ref = 2 * float(metrics["oracle_rank_reliability_index"])
        v = float(metrics["cvae_rank_reliability_index"])
        out.append(Criterion("cVAE rank reliability index", v, f"<= {ref:.3g} (2x oracle)",
                             "index", math.isfinite(v) and v <= ref, "issue 13"))
    if "aug_heavy_diff_MAE_tail" in metrics and "aug_heavy_real_MAE_tail" in metrics:
        real = float(metrics["aug_heavy_real_MAE_tail"])
        gain = -100 * float(metrics["aug_heavy_diff_MAE_tail"]) / real if real else float("nan")
        hi = float(metrics.get("aug_heavy_diff_MAE_tail_ci_high", float("nan")))
        out.append(Criterion("augmentation: heavy-day MAE_tail reduction", gain,
                             ">= 5, 95% CI excluding 0", "%",
                             math.isfinite(gain) and gain >= 5 and hi < 0, "issue 13"))
    return out


def summary_line(found: list[Criterion]) -> str:
    failed = [c.name for c in found if not c.passed]
    head = f"{len(found) - len(failed)}/{len(found)} criteria pass"
    return head + (f"; failing: {', '.join(failed)}" if failed else "")


def markdown(found: list[Criterion], units: str) -> str:
    """The verdict as a markdown table (the run's description in MLflow, the report's box)."""
    rows = [HEADER, *[c.row() for c in found]]
    lines = [f"**Verdict: {summary_line(found)}** (precipitation in {units})", "",
             "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)
