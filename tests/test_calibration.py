"""Calibration of the comparison's intervals by simulation: two cores drawn from one score distribution.

Each simulated comparison draws per-seed success probabilities on every split from a logistic model with a seed
effect shared by all splits (the same agent plays every split, so splits are correlated within a seed), plays
100 episodes per seed and split, and averages them within the seed. With no true difference, the 95% intervals
of the per-split difference, the ratio, the difference-in-differences and the across-split aggregates must
exclude 0 in about 5% of comparisons (at most 8% of 500); with a real shift they must exclude it most of the time.
The interval code is the package's own (``seed_stats``), vectorized over the simulations.
"""

from pathlib import Path

import numpy as np
import pytest

from rims_rl.evaluation.games import GameSample, load_game, ratio_intervals
from rims_rl.evaluation.scores import MIN_SEEDS_BOOTSTRAP, SplitLayout, choose_ci_method, seed_stats

SPLITS = ("train", "known", "more-distractors", "novel-distractors", "larger-room")
LOGIT = np.array([2.2, 1.5, 0.5, 0.0, -0.5])  # the training split is the easiest
N_SIM, N_EPISODES, CHUNK = 500, 100, 100
LAYOUT = SplitLayout(SPLITS, s_random=np.array([0.2, 0.2, 0.1, 0.1, 0.05]), s_ref=np.ones(5), train=0)
CHECKED = [f"{q}:{s}" for q in ("difference", "ratio") for s in SPLITS]
CHECKED += [f"did:{s}" for s in SPLITS[1:]]
CHECKED += [f"{q}:{a}" for q in ("difference", "ratio", "did") for a in ("median", "iqm")]


def _draw(rng, n_sim, n_seeds, heldout_shift=0.0):
    """Seed means, shape (n_sim, n_seeds, n_splits); ``heldout_shift`` moves the held-out splits' logits."""
    seed_effect = rng.normal(size=(n_sim, n_seeds, 1))
    split_noise = rng.normal(size=(n_sim, n_seeds, len(SPLITS)))
    shift = heldout_shift * (np.arange(len(SPLITS)) > 0)
    p = 1 / (1 + np.exp(-(LOGIT + shift + 0.8 * seed_effect + 0.3 * split_noise)))
    return rng.binomial(N_EPISODES, p) / N_EPISODES


def _exclusion_rates(n_seeds, heldout_shift=0.0, seed=0):
    """Fraction of simulations whose 95% interval excludes 0, per quantity, and the method used."""
    rng = np.random.default_rng(seed)
    excluded, p_welch, p_perm, methods = [], [], [], set()
    for _ in range(N_SIM // CHUNK):
        rims = _draw(rng, CHUNK, n_seeds, heldout_shift)
        lstm = _draw(rng, CHUNK, n_seeds)
        st = seed_stats(rims, lstm, LAYOUT, n_bootstrap=500, n_permutations=200, rng=rng)
        methods.add(st.method)
        assert np.isfinite(st.low).all() and np.isfinite(st.high).all()
        assert (st.low <= st.point + 1e-12).all() and (st.point <= st.high + 1e-12).all()
        excluded.append((st.low > 0) | (st.high < 0))
        p_welch.append(st.p_welch < 0.05)
        p_perm.append(st.p_perm < 0.05)
    rates = {
        kind: dict(zip(st.names, np.concatenate(x).mean(0), strict=True))
        for kind, x in (("ci", excluded), ("welch", p_welch), ("perm", p_perm))
    }
    return rates, methods.pop()


@pytest.mark.parametrize("n_seeds", [3, MIN_SEEDS_BOOTSTRAP])
def test_intervals_exclude_zero_at_the_nominal_rate_under_the_null(n_seeds):
    all_rates, method = _exclusion_rates(n_seeds)
    rates = all_rates["ci"]
    assert method == choose_ci_method(n_seeds, n_seeds) == ("welch" if n_seeds < MIN_SEEDS_BOOTSTRAP else "bootstrap")
    too_often = {k: round(float(rates[k]), 3) for k in CHECKED if rates[k] > 0.08}
    assert not too_often, f"{method} intervals exclude 0 too often under the null: {too_often}"
    # and not by being uselessly wide: the per-split intervals still exclude 0 now and then
    assert np.mean([rates[f"difference:{s}"] for s in SPLITS]) > 0.01
    # the tests reject at most at about the nominal rate too (Welch: linear quantities; permutation: all)
    linear = [k for k in CHECKED if not k.endswith(("median", "iqm"))]
    assert max(all_rates["welch"][k] for k in linear) <= 0.08
    assert max(all_rates["perm"][k] for k in CHECKED) <= 0.08


@pytest.mark.parametrize("n_seeds", [3, MIN_SEEDS_BOOTSTRAP])
def test_a_real_generalization_advantage_is_detected(n_seeds):
    # RIMs loses less on the held-out splits (logit +1.5 there): the DiD and its aggregates must see it
    rates = _exclusion_rates(n_seeds, heldout_shift=1.5, seed=1)[0]["ci"]
    # three seeds detect it about half of the time (wide t-intervals); ten seeds nearly always
    aggregate_power, split_power = (0.4, 0.2) if n_seeds < MIN_SEEDS_BOOTSTRAP else (0.9, 0.9)
    assert rates["did:median"] > aggregate_power and rates["did:iqm"] > aggregate_power
    assert min(rates[f"did:{s}"] for s in SPLITS[1:]) > split_power
    assert rates["difference:train"] < 0.08  # no shift on the training split: still calibrated there


def test_plain_percentile_bootstrap_of_three_seeds_is_too_narrow():
    """Why three seeds use Welch: a percentile bootstrap of 3 seed means excludes 0 far too often (the issue)."""
    rng = np.random.default_rng(2)
    rims, lstm = _draw(rng, N_SIM, 3)[..., 3], _draw(rng, N_SIM, 3)[..., 3]
    b_r = np.take_along_axis(rims[:, None, :], rng.integers(0, 3, (N_SIM, 1000, 3)), axis=-1).mean(-1)
    b_l = np.take_along_axis(lstm[:, None, :], rng.integers(0, 3, (N_SIM, 1000, 3)), axis=-1).mean(-1)
    low, high = np.percentile(b_r - b_l, [2.5, 97.5], axis=1)
    assert ((low > 0) | (high < 0)).mean() > 0.12


# Across games (rims_rl.evaluation.games): nulls built from the committed MinAtar per-seed data.
MINATAR = Path(__file__).resolve().parents[1] / "docs" / "results" / "minatar_250k" / "eval"
GAME_SPLITS = ("train", "no-sticky", "sticky-0.25")
N_GAME_SIM = 200  # per split: 600 simulated five-game comparisons per case


def _minatar_null(rng, split, n_seeds, kind, ratio_shift=0.0):
    """Five simulated games per comparison, both cores from one distribution per game (RIMs shifted if asked).

    ``normal``: each game's pooled seed mean and pooled within-core SD of the 250k data; ``resampled``: the game's six
    observed seed means drawn with replacement, plus a little noise (a tenth of that SD) so that no two seeds tie
    (Freeway's seeds that score 0 stay in). Random episodes: the committed ones, drawn with replacement.
    ``ratio_shift`` moves RIMs' seeds by that multiple of the game's LSTM margin over random.
    """
    samples = []
    for folder in sorted(MINATAR.glob("minatar-*")):
        s = load_game(folder).sample(split, "sampled")
        pooled = np.concatenate([s.rims, s.lstm])
        sd = np.sqrt((s.rims.var(ddof=1) + s.lstm.var(ddof=1)) / 2)
        shape = (N_GAME_SIM, n_seeds)
        if kind == "normal":
            rims, lstm = rng.normal(pooled.mean(), sd, shape), rng.normal(pooled.mean(), sd, shape)
        else:
            rims = rng.choice(pooled, shape) + rng.normal(0, 0.1 * sd, shape)
            lstm = rng.choice(pooled, shape) + rng.normal(0, 0.1 * sd, shape)
        rims = rims + ratio_shift * max(pooled.mean() - float(s.random_mean), 0.0)
        episodes = rng.choice(s.random_episodes, (N_GAME_SIM, s.random_n))
        samples.append(GameSample.from_episodes(rims, lstm, episodes, s.ref))
    return samples


def _games_exclusion(n_seeds, kind, ratio_shift=0.0, seed=0):
    """Fraction of simulated comparisons whose 95% intervals exclude 0: per game (G,), median, IQM."""
    rng = np.random.default_rng(seed)
    per_game, median, iqm_ = [], [], []
    for split in GAME_SPLITS:
        st = ratio_intervals(_minatar_null(rng, split, n_seeds, kind, ratio_shift), n_bootstrap=200, rng=rng)
        assert not st.note and (st.n_included >= 1).all()
        per_game.append((st.low > 0) | (st.high < 0))
        for out, name in ((median, "median"), (iqm_, "iqm")):
            _, low, high, _ = st.agg[name]
            out.append((low > 0) | (high < 0))
    return np.concatenate(per_game).mean(0), np.concatenate(median).mean(), np.concatenate(iqm_).mean()


@pytest.mark.parametrize("kind", ["normal", "resampled"])
@pytest.mark.parametrize("n_seeds", [3, 10])
def test_across_games_intervals_exclude_zero_at_most_at_the_nominal_rate(n_seeds, kind):
    """Across-games intervals under nulls from the MinAtar 250k data, 600 comparisons of five games per case.

    Measured (seed 0), median / IQM: 3 seeds per core 2.3% / 2.7% (normal), 1.2% / 3.5% (resampled); 10 seeds
    1.2% / 3.5% (normal), 3.7% / 3.5% (resampled); per game 2.7-6.2%. The percentile bootstrap they replace (seeds of
    each core resampled, random score fixed) excluded 0 in 7-13% of such comparisons with 3 seeds.
    """
    per_game, median, iqm_ = _games_exclusion(n_seeds, kind)
    assert median <= 0.06 and iqm_ <= 0.06, (median, iqm_)
    assert per_game.max() <= 0.08, per_game


def test_across_games_intervals_find_a_real_advantage_with_ten_seeds():
    """RIMs ahead by half the LSTM's margin over random (ratio +0.5) on every game, 10 seeds per core, normal null.

    Measured (seed 1), median / IQM: 98.8% / 84% of comparisons exclude 0 (3 seeds: 78% / 65%; ratio +0.2 with 10
    seeds: 65% / 9%: the IQM of the three learned games is their mean, and Freeway's bimodal spread dominates it).
    """
    _, median, iqm_ = _games_exclusion(10, "normal", ratio_shift=0.5, seed=1)
    assert median > 0.9 and iqm_ > 0.7, (median, iqm_)
