"""Score ratio, quotient, reference scores and the seed-level statistics on hand-made score tables."""

import itertools
import math

import numpy as np
import pytest
from rliable import metrics
from scipy import stats

from rims_rl.evaluation.scores import (
    HUMAN_SCORES,
    MIN_SEEDS_BOOTSTRAP,
    EnvScores,
    SplitLayout,
    atari_game,
    choose_ci_method,
    compare,
    iqm,
    reference_score,
    score_quotient,
    score_ratio,
    seed_stats,
    summarize_scores,
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


def _runs(seed_means, n_episodes=4):
    """Runs whose episode mean is exactly each given seed mean (episodes spread symmetrically around it)."""
    spread = np.linspace(-0.05, 0.05, n_episodes)
    return [m + spread for m in seed_means]


RIMS = {"train": [0.9, 0.8, 0.85], "known": [0.8, 0.7, 0.8], "novel": [0.6, 0.4, 0.5]}
LSTM = {"train": [0.95, 0.9, 0.85], "known": [0.9, 0.85, 0.8], "novel": [0.3, 0.2, 0.4]}


def _table(rims=RIMS, lstm=LSTM, random=0.1):
    return [EnvScores(s, f"Env-{s}", 1.0, np.full(10, random), _runs(rims[s]), _runs(lstm[s])) for s in rims]


def test_compare_hand_table_point_estimates():
    comp = compare(_table(), n_bootstrap=300, seed=1)
    assert comp.ci_method == "welch" and comp.n_seeds_rims == 3 and comp.n_seeds_lstm == 3 and comp.n_episodes == 4
    train, known, novel = comp.envs
    assert not train.heldout and known.heldout and novel.heldout and comp.train_split == "train"
    assert novel.s_rims == pytest.approx(0.5) and novel.s_lstm == pytest.approx(0.3)
    assert novel.difference == pytest.approx(0.2)
    assert novel.ratio == pytest.approx(0.2 / (1.0 - 0.1))
    # gaps: train minus split, per core; DiD = gap_lstm - gap_rims
    assert novel.gap_rims == pytest.approx(0.85 - 0.5) and novel.gap_lstm == pytest.approx(0.9 - 0.3)
    assert novel.did == pytest.approx(0.6 - 0.35)
    assert known.did == pytest.approx((0.9 - 0.85) - (0.85 - 0.7666666666666666))
    assert math.isnan(train.did) and math.isnan(train.did_ci[0])
    assert novel.rims_per_seed == pytest.approx(RIMS["novel"])


def test_welch_and_permutation_p_values_match_their_definitions():
    comp = compare(_table(), n_bootstrap=300, seed=1)
    novel = comp.envs[2]
    ref = stats.ttest_ind(RIMS["novel"], LSTM["novel"], equal_var=False)
    assert novel.difference_p_welch == pytest.approx(ref.pvalue)
    assert novel.difference_ci == pytest.approx(tuple(ref.confidence_interval(0.95)))
    gaps_r = np.subtract(RIMS["train"], RIMS["novel"])
    gaps_l = np.subtract(LSTM["train"], LSTM["novel"])
    ref_did = stats.ttest_ind(gaps_l, gaps_r, equal_var=False)
    assert novel.did_p_welch == pytest.approx(ref_did.pvalue)
    assert novel.did_ci == pytest.approx(tuple(ref_did.confidence_interval(0.95)))
    # the ratio's interval is the difference's over the (fixed) denominator
    assert novel.ratio_ci == pytest.approx(tuple(np.array(novel.difference_ci) / 0.9))
    # exact permutation p: all 20 ways of calling 3 of the 6 seeds "RIMs"
    pooled = np.array(RIMS["novel"] + LSTM["novel"])
    observed = abs(pooled[:3].mean() - pooled[3:].mean())
    diffs = [pooled[list(c)].mean() - np.delete(pooled, list(c)).mean() for c in itertools.combinations(range(6), 3)]
    assert novel.difference_p_perm == pytest.approx(np.mean(np.abs(diffs) >= observed - 1e-12))
    assert novel.difference_p_perm >= 0.1  # 3 + 3 seeds: never below 2/20


def test_aggregates_use_heldout_splits_only():
    rims = {**RIMS, "train": [100.0, 100.0, 100.0]}  # a huge training-split difference must not move them
    comp = compare(_table(rims=rims), n_bootstrap=300, seed=1)
    known, novel = comp.envs[1], comp.envs[2]
    agg = comp.aggregates["difference"]
    assert agg.n_envs == 2
    assert agg.median == pytest.approx((known.difference + novel.difference) / 2)
    assert agg.iqm == pytest.approx((known.difference + novel.difference) / 2)
    assert comp.aggregates["did"].median == pytest.approx((known.did + novel.did) / 2)
    assert comp.aggregate is comp.aggregates["ratio"]
    for a in comp.aggregates.values():
        assert a.median_ci[0] <= a.median <= a.median_ci[1]
        assert a.iqm_ci[0] <= a.iqm <= a.iqm_ci[1]


def test_no_training_split_means_no_gap():
    table = [es for es in _table() if es.env != "train"]
    comp = compare(table, n_bootstrap=200)
    assert comp.train_split is None and all(math.isnan(r.did) for r in comp.envs)
    assert comp.aggregates["difference"].n_envs == 2 and math.isnan(comp.aggregates["did"].median)


def test_ci_method_is_chosen_from_the_seeds_per_core():
    assert choose_ci_method(1, 5) == "none"
    assert choose_ci_method(3, 3) == "welch"
    assert choose_ci_method(MIN_SEEDS_BOOTSTRAP - 1, 20) == "welch"
    assert choose_ci_method(MIN_SEEDS_BOOTSTRAP, MIN_SEEDS_BOOTSTRAP) == "bootstrap"
    one_seed = [EnvScores(s, s, 1.0, np.zeros(3), _runs(RIMS[s][:1]), _runs(LSTM[s][:1])) for s in RIMS]
    comp = compare(one_seed, n_bootstrap=100)
    assert comp.ci_method == "none"
    assert math.isnan(comp.envs[1].difference_ci[0]) and math.isnan(comp.envs[1].difference_p_perm)
    assert comp.envs[1].difference == pytest.approx(0.8 - 0.9)  # point estimates remain
    with pytest.raises(ValueError, match="same RIMs seeds"):
        compare([*_table()[:2], EnvScores("x", "x", 1.0, np.zeros(3), _runs([0.1]), _runs([0.1, 0.2, 0.3]))])


def test_seed_bootstrap_resamples_the_same_seeds_on_every_split():
    # split b = split a + 0.1 for every seed: with joint resampling the two per-split differences are equal in every
    # replicate, so both splits and their median get exactly the same interval
    rng = np.random.default_rng(0)
    n = MIN_SEEDS_BOOTSTRAP
    a_r, a_l = rng.normal(0.5, 0.1, n), rng.normal(0.5, 0.1, n)
    rims, lstm = np.stack([a_r, a_r + 0.1], -1), np.stack([a_l, a_l + 0.1], -1)
    layout = SplitLayout(("a", "b"), np.zeros(2), np.ones(2))
    st = seed_stats(rims, lstm, layout, n_bootstrap=1000, rng=np.random.default_rng(1))
    assert st.method == "bootstrap"
    _, ci_a, _, _ = st.get("difference:a")
    _, ci_b, _, _ = st.get("difference:b")
    _, ci_med, _, _ = st.get("difference:median")
    np.testing.assert_allclose(ci_b, ci_a)  # independent resampling per split would give different intervals
    np.testing.assert_allclose(ci_med, ci_a)


def test_iqm_is_rliables_per_row():
    rows = np.random.default_rng(0).normal(size=(5, 8))
    np.testing.assert_allclose(iqm(rows), [metrics.aggregate_iqm(r[None, :]) for r in rows])
    ratios = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 100.0])
    assert float(iqm(ratios)) == pytest.approx(0.45)  # 2 lowest and 2 highest of 8 dropped


def test_undefined_ratio_left_out_of_the_aggregate():
    # split "c": S_lstm = S_random = S_ref -> ratio undefined, flagged, not aggregated
    table = [
        EnvScores("a", "a", 1.0, np.zeros(3), _runs([0.9, 0.8]), _runs([0.5, 0.4])),
        EnvScores("b", "b", 1.0, np.zeros(3), _runs([0.7, 0.6]), _runs([0.5, 0.6])),
        EnvScores("c", "c", 0.5, np.full(3, 0.5), _runs([0.7, 0.7]), _runs([0.5, 0.5])),
    ]
    comp = compare(table, n_bootstrap=200, train_split=None)
    a, b, c = comp.envs
    assert c.ratio_undefined and math.isnan(c.ratio) and "undefined" in c.note
    agg = comp.aggregates["ratio"]
    assert agg.n_envs == 3 and agg.n_envs_undefined == 1
    assert agg.median == pytest.approx((a.ratio + b.ratio) / 2)
    assert comp.to_dict()["envs"][2]["ratio"] is None  # JSON-safe: nan becomes None


def test_compare_is_reproducible():
    c1, c2 = compare(_table(), n_bootstrap=200, seed=3), compare(_table(), n_bootstrap=200, seed=3)
    assert c1.aggregates["did"].median_ci == c2.aggregates["did"].median_ci


def test_summaries_success_beside_return():
    s = summarize_scores("rims", "a", "a", _runs([0.5, 0.7]), successes=[np.array([1, 1, 0, 1]), np.ones(4)])
    assert s.mean == pytest.approx(0.6) and s.ci_unit == "seeds"
    assert s.success == pytest.approx((0.75 + 1.0) / 2)
    assert 0.0 <= s.success_ci[0] <= s.success <= s.success_ci[1] <= 1.0  # a rate's interval stays in [0, 1]
    single = summarize_scores("random", "a", "a", [np.array([0.0, 1.0, 0.0, 1.0])])
    assert single.ci_unit == "episodes" and math.isnan(single.success)


def test_report_leads_with_the_did_and_states_the_protocol():
    from rims_rl.evaluation.report import report_markdown
    from rims_rl.evaluation.runner import CoreInfo

    comps = [compare(_table(), n_bootstrap=200, actions=a) for a in ("sampled", "greedy")]
    cores = {"r0": CoreInfo("rims", 1200, 1200, 64, 5000), "l0": CoreInfo("lstm", 900, 900, 64, 4700)}
    meta = {"name": "t", "actions_played": ["sampled", "greedy"]}
    md = report_markdown(comps, [], meta, cores, {"r0": "rims", "l0": "lstm"})
    assert "3 RIMs, 3 LSTM" in md and "4 episodes per seed" in md and "Welch t-intervals" in md
    assert "| rims | 1 | 1,200 | 1,200 | 64 |" in md and "| lstm | 1 | 900 | 900 | 64 |" in md
    # the DiD comes before the scores and the per-split differences, and names both action modes
    assert md.index("difference-in-differences") < md.index("RIMs - LSTM and score ratio")
    assert "DiD return, sampled actions" in md and "DiD return, greedy actions" in md
    novel = comps[0].envs[2]
    assert f"| novel | {novel.did:.3f} [" in md
