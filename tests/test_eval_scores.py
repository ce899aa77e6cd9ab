"""Score ratio, quotient, reference scores and bootstrap statistics on hand-made score tables."""

import math

import numpy as np
import pytest

from rims_rl.evaluation.scores import (
    HUMAN_SCORES,
    EnvScores,
    atari_game,
    bootstrap_means,
    compare,
    reference_score,
    score_quotient,
    score_ratio,
)


def test_ratio_hand_values():
    assert score_ratio(10.0, 5.0, 0.0, 1.0) == pytest.approx(1.0)  # denominator max(5, 1) - 0
    assert score_ratio(0.8, 0.4, 0.0, 1.0) == pytest.approx(0.4)  # S_ref dominates
    assert score_ratio(0.2, 0.4, 0.0, 1.0) == pytest.approx(-0.2)  # RIMs worse: negative


def test_ratio_lstm_equals_random():
    # S_lstm = S_random: the denominator falls back to S_ref - S_random, still defined
    assert score_ratio(0.5, 0.1, 0.1, 1.0) == pytest.approx(0.4 / 0.9)
    # S_lstm = S_random = S_ref: zero denominator -> nan, never a division by epsilon
    assert math.isnan(score_ratio(0.5, 0.3, 0.3, 0.3))
    # random beats both the LSTM and the reference: negative denominator -> nan
    assert math.isnan(score_ratio(1.0, 0.2, 0.5, 0.3))


def test_ratio_negative_scores_pong():
    # Pong-like: all scores negative; S_ref = human 14.6
    assert score_ratio(-10.0, -20.0, -20.7, 14.6) == pytest.approx(10.0 / 35.3)
    # negative human reference (Double Dunk -16.4), LSTM above it
    assert score_ratio(-12.0, -14.0, -18.6, -16.4) == pytest.approx(2.0 / 4.6)


def test_ratio_vectorized():
    out = score_ratio(np.array([1.0, 2.0]), np.array([0.0, 1.0]), 0.0, np.array([1.0, 1.0]))
    np.testing.assert_allclose(out, [1.0, 1.0])


def test_quotient_nan_safe():
    assert score_quotient(3.0, 2.0) == pytest.approx(1.5)
    assert math.isnan(score_quotient(3.0, 0.0))
    assert math.isnan(score_quotient(-3.0, -2.0))  # negative S_lstm: quotient has no meaning


def test_reference_scores():
    assert len(HUMAN_SCORES) == 57
    games = ["Pong", "Riverraid", "Seaquest", "Alien", "Asterix", "Boxing", "Centipede", "Gopher", "Hero", "Jamesbond"]
    games += ["Krull", "Robotank", "RoadRunner", "StarGunner", "WizardOfWor", "Breakout", "BeamRider", "DemonAttack"]
    for game in games:
        assert atari_game(f"ALE/{game}-v5") is not None, game
    assert reference_score("ALE/Pong-v5") == 14.6
    assert reference_score("PongNoFrameskip-v4") == 14.6
    assert reference_score("ALE/RoadRunner-v5") == 7845.0
    assert reference_score("MiniGrid-RimsPickup-NovelObstacles-v0") == 1.0
    assert reference_score("whatever", kind="gridworld") == 1.0
    with pytest.raises(ValueError, match="--ref-score"):
        reference_score("CartPole-v1")


def test_bootstrap_constant_units_gives_point_interval():
    reps = bootstrap_means(np.full(5, 2.0), 100, np.random.default_rng(0))
    np.testing.assert_allclose(reps, 2.0)


def _table():
    return [
        # one run per core: CI over episodes
        EnvScores("a", "a", 1.0, np.array([0.0, 0.1]), [np.array([0.9, 1.0])], [np.array([0.5, 0.4])]),
        # two runs per core: CI over seeds
        EnvScores(
            "b",
            "b",
            1.0,
            np.array([0.0, 0.1]),
            [np.array([0.9, 1.0]), np.array([0.7, 0.8])],
            [np.array([0.5, 0.4]), np.array([0.3, 0.3])],
        ),
        # S_lstm = S_random = S_ref: undefined ratio
        EnvScores("c", "c", 0.5, np.array([0.5, 0.5]), [np.array([0.7, 0.7])], [np.array([0.5, 0.5])]),
    ]


def test_compare_hand_table():
    comp = compare(_table(), n_bootstrap=500, seed=1)
    a, b, c = comp.envs
    assert a.s_rims == pytest.approx(0.95) and a.s_lstm == pytest.approx(0.45) and a.s_random == pytest.approx(0.05)
    assert a.ratio == pytest.approx(0.5 / 0.95)
    assert a.difference == pytest.approx(0.5) and a.quotient == pytest.approx(0.95 / 0.45)
    assert a.ci_unit == "episodes" and b.ci_unit == "seeds"
    assert b.s_rims == pytest.approx(0.85) and b.s_lstm == pytest.approx(0.375)
    assert b.rims_per_seed == pytest.approx([0.95, 0.75])
    assert b.ratio == pytest.approx(0.475 / 0.95)
    for row in (a, b):
        assert row.ratio_ci[0] <= row.ratio <= row.ratio_ci[1]
        assert row.s_rims_ci[0] <= row.s_rims <= row.s_rims_ci[1]
    assert c.ratio_undefined and math.isnan(c.ratio) and "undefined" in c.note
    # aggregates over the defined envs only: median and IQM of two values are their mean
    agg = comp.aggregate
    assert agg.n_envs == 3 and agg.n_envs_undefined == 1
    assert agg.median == pytest.approx((a.ratio + b.ratio) / 2)
    assert agg.iqm == pytest.approx((a.ratio + b.ratio) / 2)
    assert agg.median_ci[0] <= agg.median <= agg.median_ci[1]
    # JSON-safe: nan becomes None
    d = comp.to_dict()
    assert d["envs"][2]["ratio"] is None


def test_compare_iqm_trims_outliers():
    rng = np.random.default_rng(0)
    ratios = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 100.0]
    envs = [EnvScores(str(i), str(i), 1.0, np.zeros(3), [np.full(3, r)], [np.zeros(3)]) for i, r in enumerate(ratios)]
    comp = compare(envs, n_bootstrap=50, seed=int(rng.integers(100)))
    # IQM: drop 2 lowest and 2 highest of 8 -> mean(0.3..0.6)
    assert comp.aggregate.iqm == pytest.approx(0.45)
    assert comp.aggregate.median == pytest.approx(0.45)
    assert comp.aggregate.iqm_ci == pytest.approx((0.45, 0.45))  # constant units: degenerate interval


def test_compare_is_reproducible():
    c1, c2 = compare(_table(), n_bootstrap=200, seed=3), compare(_table(), n_bootstrap=200, seed=3)
    assert c1.envs[1].ratio_ci == c2.envs[1].ratio_ci
