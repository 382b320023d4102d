"""The verdict box: criteria that apply, values against thresholds, nothing passed by absence."""

from __future__ import annotations

import math

from precipgen.evaluation.verdict import criteria, markdown, summary_line
from precipgen.scores.ensemble import Indicator


def test_oracle_criteria_pass_and_fail_on_their_thresholds():
    m = {"oracle_CRPS": 0.4, "gen_oracle_ratio": 1.10, "det_oracle_ratio": 1.2,
         "gen_spread_skill": 1.15, "gen_rank_pvalue": 0.5, "gen_spectral_ratio": float("nan")}
    found = {c.name: c for c in criteria(m, None, "mm/day")}
    assert found["generative CRPS / oracle CRPS"].passed
    assert not found["deterministic CRPS / oracle CRPS"].passed  # 1.2 < 1.3
    assert not found["generative spread-skill"].passed  # outside [0.9, 1.1]
    assert not found["generative spectral ratio"].passed  # NaN never passes
    assert "cVAE spread-skill" not in found  # not computed: left out, not passed
    assert summary_line(list(found.values())).startswith("2/5 criteria pass; failing: ")


def test_real_data_criteria_and_seed_indicators():
    m = {"crps_improvement_pct": 19.0, "gen_spread_skill": 0.85, "gen_mass_bias": -0.35}
    ind = {"crps_improvement_pct": Indicator(19.0, 10.0, True)}
    found = criteria(m, ind, "mm/h")
    by = {c.name: c for c in found}
    assert by["seed: CRPS improvement"].units == "%" and by["seed: CRPS improvement"].passed
    assert by["generative spread-skill"].threshold == "in [0.8, 1.2]"
    assert not by["generative land mass bias"].passed  # |-0.35| > 0.15
    assert "CRPS / oracle" not in markdown(found, "mm/h")
    assert "precipitation in mm/h" in markdown(found, "mm/h")


def test_augmentation_gain_needs_the_ci_to_exclude_zero():
    base = {"aug_heavy_real_MAE_tail": 10.0}
    ok = criteria({**base, "aug_heavy_diff_MAE_tail": -0.6,
                   "aug_heavy_diff_MAE_tail_ci_high": -0.1}, None, "mm/day")[0]
    assert ok.passed and math.isclose(ok.value, 6.0)
    wide = criteria({**base, "aug_heavy_diff_MAE_tail": -0.6,
                     "aug_heavy_diff_MAE_tail_ci_high": 0.2}, None, "mm/day")[0]
    assert not wide.passed
