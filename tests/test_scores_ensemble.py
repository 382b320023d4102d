"""Ensemble CRPS wrappers (scoringrules) and the seed's generative checks."""

from __future__ import annotations

import numpy as np
import pytest
import scoringrules as sr

from precipgen.scores import ensemble as es

MEMBERS = np.array([0.0, 1.0, 2.0, 5.0])[:, None]  # (m=4, 1 point), axis first
OBS = np.array([1.5])


def test_crps_hand_computed():
    # mean |x - y| = (1.5 + 0.5 + 0.5 + 3.5) / 4 = 1.5 ; sum_ij |x_i - x_j| = 2 * 16 = 32
    assert es.crps_ensemble(MEMBERS, OBS, kind="standard") == pytest.approx(1.5 - 32 / 32)
    assert es.crps_ensemble(MEMBERS, OBS, kind="fair") == pytest.approx(1.5 - 32 / 24)
    with pytest.raises(ValueError, match="kind"):
        es.crps_ensemble(MEMBERS, OBS, kind="pwm")
    with pytest.raises(ValueError, match="shape"):
        es.crps_ensemble(MEMBERS.T, OBS)


def test_twcrps_hand_computed():
    # v(x) = max(x, 1): members 1, 1, 2, 5 and obs 1.5
    # mean |v(x) - v(y)| = (0.5 + 0.5 + 0.5 + 3.5) / 4 = 1.25 ; sum_ij |v_i - v_j| = 26
    assert es.twcrps_ensemble(MEMBERS, OBS, 1.0, kind="standard") == pytest.approx(1.25 - 26 / 32)
    assert es.twcrps_ensemble(MEMBERS, OBS, 1.0, kind="fair") == pytest.approx(1.25 - 26 / 24)
    # a threshold below every value is the plain CRPS; above every value it is 0
    assert es.twcrps_ensemble(MEMBERS, OBS, -1.0) == pytest.approx(es.crps_ensemble(MEMBERS, OBS))
    assert es.twcrps_ensemble(MEMBERS, OBS, 10.0) == 0.0


def test_crps_matches_scoringrules_with_mask_and_chunks(monkeypatch):
    rng = np.random.default_rng(0)
    ens = rng.gamma(0.7, 2.0, size=(6, 3, 8, 9))
    obs = rng.gamma(0.7, 2.0, size=(3, 8, 9))
    mask = rng.random((8, 9)) < 0.6
    for kind, est in (("fair", "fair"), ("standard", "nrg")):
        ref = sr.crps_ensemble(obs, ens, m_axis=0, estimator=est)
        assert es.crps_ensemble(ens, obs, kind=kind) == pytest.approx(ref.mean(), rel=1e-12)
        assert es.crps_ensemble(ens, obs, mask, kind=kind) == pytest.approx(
            ref[:, mask].mean(), rel=1e-12
        )
    t = float(np.quantile(obs, 0.95))
    ref = sr.twcrps_ensemble(obs, ens, m_axis=0, v_func=lambda x: np.maximum(x, t), estimator="fair")
    assert es.twcrps_ensemble(ens, obs, t, mask) == pytest.approx(ref[:, mask].mean(), rel=1e-12)
    monkeypatch.setattr(es, "_CHUNK_ELEMENTS", 100)  # 2 points per chunk: same answer
    assert es.twcrps_ensemble(ens, obs, t, mask) == pytest.approx(ref[:, mask].mean(), rel=1e-12)


def test_deterministic_crps_is_mae():
    rng = np.random.default_rng(1)
    pred = rng.gamma(0.7, 2.0, size=(4, 5))
    obs = rng.gamma(0.7, 2.0, size=(4, 5))
    mae = np.abs(pred - obs).mean()
    one_member = sr.crps_ensemble(obs, pred[..., None], estimator="nrg").mean()
    assert es.crps_deterministic(pred, obs) == pytest.approx(mae)
    assert es.crps_deterministic(pred, obs) == pytest.approx(one_member)
    assert es.crps_ensemble(pred[None], obs, kind="standard") == pytest.approx(mae)
    t = 1.0
    assert es.twcrps_deterministic(pred, obs, t) == pytest.approx(
        es.twcrps_ensemble(pred[None], obs, t, kind="standard")
    )
    mask = np.zeros((4, 5), bool)
    mask[0] = True
    assert es.crps_deterministic(pred, obs, mask) == pytest.approx(np.abs(pred - obs)[0].mean())


def test_fair_crps_ranks_a_perfect_ensemble_first():
    rng = np.random.default_rng(2)
    scale = rng.uniform(0.5, 5.0, size=(20, 30))
    obs = rng.gamma(0.7, scale)
    perfect = rng.gamma(0.7, scale, size=(10, *scale.shape))
    deterministic = np.broadcast_to(0.7 * scale, obs.shape)  # the members' mean as a point forecast
    crps_gen = es.crps_ensemble(perfect, obs)
    crps_det = es.crps_deterministic(deterministic, obs)
    assert crps_gen < crps_det
    assert es.crps_improvement(crps_det, crps_gen) > 10.0


def test_generative_checks_hand_computed():
    outputs = np.array([[0.0, 0.0], [2.0, 0.0]])  # 2 repeats, 2 pixels
    # unbiased variance per pixel: [2, 0]
    assert es.generative_variance(outputs) == pytest.approx(2.0)
    assert es.diversity_score(outputs) == pytest.approx(1.0)
    assert not es.is_deterministic(outputs)
    u = es.uncertainty_stats(outputs)
    assert u.shape == (2, 2)
    assert (u.mean_min, u.mean_max) == (0.0, 1.0)
    assert (u.std_min, u.std_max) == pytest.approx((0.0, np.sqrt(2.0)))
    assert u.std_mean == pytest.approx(np.sqrt(2.0) / 2)
    rng = np.random.default_rng(3)
    same = np.broadcast_to(rng.random((1, 4, 6)), (5, 4, 6)) + 1e-9 * rng.random((5, 4, 6))
    assert es.is_deterministic(same) and es.generative_variance(same) < 1e-12
    mask = np.array([[True, False]])
    assert es.diversity_score(outputs[:, None, :], mask) == 2.0


def test_crps_improvement():
    assert es.crps_improvement(0.2, 0.15) == pytest.approx(25.0)
    assert es.crps_improvement(0.2, 0.25) == pytest.approx(-25.0)
    assert np.isnan(es.crps_improvement(0.0, 0.1))


def test_success_indicators():
    ind = es.success_indicators(0.12, 0.045, 21.23, 0.0876)  # the seed's example run
    assert set(ind) == {"generative_variance", "diversity", "crps_improvement_pct", "uncertainty"}
    assert all(i.passed for i in ind.values())
    assert ind["diversity"].threshold == 0.01
    ind = es.success_indicators(1e-3, 0.5, float("nan"), 0.0005)
    assert not ind["generative_variance"].passed  # strictly greater than 1e-3
    assert ind["diversity"].passed
    assert not ind["crps_improvement_pct"].passed  # NaN never passes
    assert not ind["uncertainty"].passed
    assert [i.threshold for i in ind.values()] == [1e-3, 0.01, 10.0, 1e-3]
