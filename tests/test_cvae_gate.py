"""Issue 13: the quality gate in physical units, per sample, with the gates each one failed."""

from __future__ import annotations

import numpy as np
import pytest

from precipgen.synth.quality import (
    GateThresholds,
    day_diversity,
    gate_summary,
    sample_stats,
    summarize,
)

LAND = np.ones((10, 10), dtype=bool)
RNG = np.random.default_rng(0)
REAL = RNG.gamma(0.8, 4.0, (10, 10)).astype(np.float32)
GATE = GateThresholds(max_mass_ratio=3.0, max_wet_ratio=2.0, min_p99_ratio=0.3,
                      max_p99_ratio=3.0, min_diversity=0.05, max_source_corr=0.95)


def stats(y, diversity=0.5, gate=GATE):
    return sample_stats(1, 0, y, REAL, LAND, 0.1, 0.1, gate, diversity)


def test_a_plausible_different_sample_passes():
    other = RNG.gamma(0.8, 4.0, (10, 10)).astype(np.float32)
    s = stats(other)
    assert s.accepted and s.gate_failed == [] and s.row()["gate_failed"] == ""


def test_each_gate_fires_on_its_own_failure():
    assert stats(REAL * 1.01).gate_failed == ["copy"]  # a near-copy of the source day
    assert "mass_high" in stats(np.roll(REAL, 3) * 5).gate_failed
    assert "mass_low" in stats(np.roll(REAL, 3) * 0.05).gate_failed
    drizzle = np.full((10, 10), REAL.mean(), np.float32)  # same mass, wet everywhere, no tail
    wet_real = (REAL > 0.1).mean()
    failed = stats(drizzle).gate_failed
    assert ("wet_fraction" in failed) == (1.0 > 2.0 * wet_real)
    assert "P99" in failed  # the tail is bounded at the mean
    assert stats(np.roll(REAL, 3), diversity=0.01).gate_failed == ["diversity"]
    nan = REAL.copy()
    nan[0, 0] = np.nan
    assert stats(nan).gate_failed == ["non_finite"]


def test_zero_thresholds_keep_the_seed_rule_only():
    s = sample_stats(1, 0, REAL, REAL, LAND, 0.1, 0.1)  # a copy, but no copy gate
    assert s.accepted


def test_diversity_of_a_day():
    same = np.stack([REAL, REAL])
    assert day_diversity(same, REAL, LAND) == 0.0
    diff = np.stack([REAL, np.roll(REAL, 4)])
    assert day_diversity(diff, REAL, LAND) == pytest.approx(
        np.abs(REAL - np.roll(REAL, 4)).mean() / REAL.mean(), rel=1e-5)
    assert np.isnan(day_diversity(REAL[None], REAL, LAND))  # K = 1


def test_summary_counts_failures_per_gate():
    rows = [stats(REAL * 1.01), stats(np.roll(REAL, 3) * 0.05), stats(np.roll(REAL, 5))]
    m = summarize(rows)
    assert m["samples_accepted"] == 1 and m["gate_failed_copy"] == 1
    assert m["gate_failed_mass_low"] == 1
    assert "1 mass_low" in gate_summary(m) and "1 copy" in gate_summary(m)
    assert gate_summary(summarize([rows[2]])) == "none"
