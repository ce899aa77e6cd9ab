"""Reference scores, the RIMs-versus-LSTM score ratio and the statistics of the comparison, with seeds as the unit.

The ratio per environment (split) e (Wang et al. 2016, dueling networks, Fig. 4):

    ratio(e) = (S_rims - S_lstm) / (max(S_lstm, S_ref) - S_random)

It is ``nan`` (and flagged) when ``max(S_lstm, S_ref) - S_random <= eps``: never a division by an epsilon.

Statistics (docs/evaluation.md, "Statistics"): the unit is the training seed. Episodes are averaged within a seed
first; every number compares seed means. Per split: the difference of seed means, the ratio, a Welch t-test and a
permutation p-value; with a training split, the generalization gap of each seed (training split minus held-out
split) and the difference-in-differences ``DiD = mean gap_lstm - mean gap_rims`` (> 0 favours RIMs). Aggregates
(median and interquartile mean, IQM, over held-out splits only) of the difference, the ratio and the DiD.

Intervals, chosen automatically from the smaller number of seeds per core (:func:`choose_ci_method`):

- ``welch`` (2 to 9 seeds): Welch t-intervals for the per-split difference, DiD and ratio (the ratio's interval is
  the difference's divided by its denominator); for the aggregates, a t-interval whose standard error comes from a
  seed bootstrap (each core's seeds resampled, the same resampled seeds on every split), inflated by n/(n-1) per
  core, with Welch-Satterthwaite degrees of freedom. A plain bootstrap of 3 seed means cannot be wider than their
  range; measured on simulated null comparisons it excluded 0 in ~20% of cases instead of 5%.
- ``bootstrap`` (10 seeds or more): percentile intervals of the joint seed bootstrap (both cores' seeds resampled,
  the same resampled seeds on every split), expanded for small samples by ``sqrt(n/(n-1)) t_{n_r+n_l-2} / z``
  (Hesterberg 2015, "expanded percentile"); the plain percentile interval excluded 0 in ~9-10% of null
  comparisons at 10 seeds per core.
- ``none`` (one seed in a core): point estimates only; seeds are the unit, so there is no interval.

tests/test_calibration.py checks by simulation that both methods exclude 0 at about the nominal rate when both
cores share one score distribution. rliable's bootstraps (``StratifiedBootstrap``) draw run indices per task,
i.e. they resample each split independently, which is what must not happen here (the same agents play every
split), and they loop over replicates in Python; the joint resampling is therefore one vectorized index draw here.
The IQM is rliable's definition (``rliable.metrics.aggregate_iqm``: scipy's 25% trimmed mean), applied per row.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
from scipy import stats

# Atari-57 random and human scores, (random, human), per game. Source: the human-tester scores of Mnih et al.
# 2015 (Nature DQN) extended to 57 games by Nair et al. 2015 and tabulated in Wang et al. 2016 ("Dueling Network
# Architectures for Deep Reinforcement Learning", ICML) and van Hasselt et al. 2016; values copied from DeepMind's
# DQN Zoo, dqn_zoo/atari_data.py (Apache-2.0), which distributes that table. Only the human column is used as S_ref
# (the random column is informative; S_random is measured by the evaluator).
ATARI_RANDOM_HUMAN: dict[str, tuple[float, float]] = {
    "alien": (227.8, 7127.7),
    "amidar": (5.8, 1719.5),
    "assault": (222.4, 742.0),
    "asterix": (210.0, 8503.3),
    "asteroids": (719.1, 47388.7),
    "atlantis": (12850.0, 29028.1),
    "bank_heist": (14.2, 753.1),
    "battle_zone": (2360.0, 37187.5),
    "beam_rider": (363.9, 16926.5),
    "berzerk": (123.7, 2630.4),
    "bowling": (23.1, 160.7),
    "boxing": (0.1, 12.1),
    "breakout": (1.7, 30.5),
    "centipede": (2090.9, 12017.0),
    "chopper_command": (811.0, 7387.8),
    "crazy_climber": (10780.5, 35829.4),
    "defender": (2874.5, 18688.9),
    "demon_attack": (152.1, 1971.0),
    "double_dunk": (-18.6, -16.4),
    "enduro": (0.0, 860.5),
    "fishing_derby": (-91.7, -38.7),
    "freeway": (0.0, 29.6),
    "frostbite": (65.2, 4334.7),
    "gopher": (257.6, 2412.5),
    "gravitar": (173.0, 3351.4),
    "hero": (1027.0, 30826.4),
    "ice_hockey": (-11.2, 0.9),
    "jamesbond": (29.0, 302.8),
    "kangaroo": (52.0, 3035.0),
    "krull": (1598.0, 2665.5),
    "kung_fu_master": (258.5, 22736.3),
    "montezuma_revenge": (0.0, 4753.3),
    "ms_pacman": (307.3, 6951.6),
    "name_this_game": (2292.3, 8049.0),
    "phoenix": (761.4, 7242.6),
    "pitfall": (-229.4, 6463.7),
    "pong": (-20.7, 14.6),
    "private_eye": (24.9, 69571.3),
    "qbert": (163.9, 13455.0),
    "riverraid": (1338.5, 17118.0),
    "road_runner": (11.5, 7845.0),
    "robotank": (2.2, 11.9),
    "seaquest": (68.4, 42054.7),
    "skiing": (-17098.1, -4336.9),
    "solaris": (1236.3, 12326.7),
    "space_invaders": (148.0, 1668.7),
    "star_gunner": (664.0, 10250.0),
    "surround": (-10.0, 6.5),
    "tennis": (-23.8, -8.3),
    "time_pilot": (3568.0, 5229.2),
    "tutankham": (11.4, 167.6),
    "up_n_down": (533.4, 11693.2),
    "venture": (0.0, 1187.5),
    "video_pinball": (16256.9, 17667.9),
    "wizard_of_wor": (563.5, 4756.5),
    "yars_revenge": (3092.9, 54576.9),
    "zaxxon": (32.5, 9173.3),
}
HUMAN_SCORES: dict[str, float] = {game: human for game, (_, human) in ATARI_RANDOM_HUMAN.items()}
_GAME_BY_KEY = {game.replace("_", ""): game for game in ATARI_RANDOM_HUMAN}

GRIDWORLD_MAX_RETURN = 1.0
"""S_ref for the gridworld settings: the maximum attainable return (success reward is at most 1)."""


def atari_game(env_id: str) -> str | None:
    """The Atari-57 game an env id refers to, or None.

    :param env_id: e.g. ``"ALE/RoadRunner-v5"``, ``"RoadRunnerNoFrameskip-v4"``, ``"road_runner"``
    :return: the snake_case game name used in :data:`HUMAN_SCORES`
    """
    name = env_id.split("/")[-1]
    name = re.sub(r"-v\d+$", "", name)
    name = re.sub(r"(NoFrameskip|Deterministic)$", "", name)
    return _GAME_BY_KEY.get(name.lower().replace("_", "").replace("-", ""))


def reference_score(env_id: str, kind: str | None = None) -> float:
    """S_ref for an environment: the published human score (Atari) or the maximum return (gridworld).

    :param env_id: the evaluation env id
    :param kind: the setting's kind when known ("gridworld", "atari-...")
    :return: S_ref
    :raises ValueError: when no reference is known for this env (pass one explicitly)
    """
    if (kind is not None and kind.lower().startswith("gridworld")) or env_id.startswith("MiniGrid-Rims"):
        return GRIDWORLD_MAX_RETURN
    game = atari_game(env_id)
    if game is not None:
        return HUMAN_SCORES[game]
    raise ValueError(f"no reference score S_ref known for env {env_id!r}; pass one explicitly (--ref-score)")


def _scale_eps(*values: Any) -> np.ndarray:
    scale = np.ones(())
    for v in values:
        scale = np.maximum(scale, np.abs(np.asarray(v, dtype=np.float64)))
    return 1e-9 * scale


def score_ratio(s_rims: Any, s_lstm: Any, s_random: Any, s_ref: Any) -> Any:
    """(S_rims - S_lstm) / (max(S_lstm, S_ref) - S_random), elementwise; nan where the denominator is <= eps.

    :param s_rims: RIMs score(s)
    :param s_lstm: LSTM score(s)
    :param s_random: uniform-random score(s)
    :param s_ref: reference score(s) (human score or maximum return)
    :return: float or array of ratios (nan where undefined)
    """
    s_rims, s_lstm, s_random, s_ref = (np.asarray(v, dtype=np.float64) for v in (s_rims, s_lstm, s_random, s_ref))
    denom = np.maximum(s_lstm, s_ref) - s_random
    defined = denom > _scale_eps(s_lstm, s_ref, s_random)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(defined, (s_rims - s_lstm) / np.where(defined, denom, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


def score_quotient(s_rims: Any, s_lstm: Any) -> Any:
    """S_rims / S_lstm, elementwise; nan where S_lstm <= 0 (a quotient by a non-positive score has no meaning).

    :param s_rims: RIMs score(s)
    :param s_lstm: LSTM score(s)
    :return: float or array (nan where undefined)
    """
    s_rims, s_lstm = np.asarray(s_rims, dtype=np.float64), np.asarray(s_lstm, dtype=np.float64)
    defined = s_lstm > _scale_eps(s_lstm)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(defined, s_rims / np.where(defined, s_lstm, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


MIN_SEEDS_BOOTSTRAP = 10
"""Seeds per core (in the smaller core) from which intervals come from the joint seed bootstrap; below it, Welch."""

CI_METHODS = ("welch", "bootstrap", "none")


def choose_ci_method(n_rims: int, n_lstm: int) -> str:
    """The interval method for a comparison of ``n_rims`` and ``n_lstm`` seeds (see the module docstring).

    :param n_rims: RIMs seeds
    :param n_lstm: LSTM seeds
    :return: "none" (a core has one seed), "welch" (fewer than MIN_SEEDS_BOOTSTRAP) or "bootstrap"
    """
    n = min(n_rims, n_lstm)
    if n < 2:
        return "none"
    return "bootstrap" if n >= MIN_SEEDS_BOOTSTRAP else "welch"


def iqm(x: Any, axis: int = -1) -> np.ndarray:
    """Interquartile mean along one axis: rliable's ``aggregate_iqm`` (scipy's 25% trimmed mean) applied per row.

    :param x: values, e.g. shape (..., n_splits)
    :param axis: the axis to aggregate
    :return: shape of ``x`` without ``axis``
    """
    return np.asarray(stats.trim_mean(np.asarray(x, dtype=np.float64), 0.25, axis=axis))


def t_interval(values: Any, confidence: float = 0.95) -> tuple[float, float]:
    """One-sample t-interval of the mean; (nan, nan) with fewer than two values.

    :param values: shape (n,)
    :param confidence: interval mass
    :return: (low, high)
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return (math.nan, math.nan)
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return (float(x.mean()) - half, float(x.mean()) + half)


def welch(x: np.ndarray, y: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, ...]:
    """Welch's two-sample t-test and t-interval of ``mean(x) - mean(y)``, over the seed axis -2.

    :param x: shape (..., n_x, K)
    :param y: shape (..., n_y, K)
    :param confidence: interval mass
    :return: (difference, low, high, p-value, degrees of freedom), each (..., K); where both variances are 0 the
        interval is the point and p and df are nan
    """
    nx, ny = x.shape[-2], y.shape[-2]
    d = x.mean(-2) - y.mean(-2)
    vx, vy = x.var(-2, ddof=1) / nx, y.var(-2, ddof=1) / ny
    v = vx + vy
    with np.errstate(divide="ignore", invalid="ignore"):
        df = v**2 / (vx**2 / (nx - 1) + vy**2 / (ny - 1))
        se = np.sqrt(v)
        half = stats.t.ppf(0.5 + confidence / 2, df) * se
        p = 2 * stats.t.sf(np.abs(d) / se, df)
    degenerate = ~(v > 0)
    half = np.where(degenerate, 0.0, half)
    p, df = np.where(degenerate, np.nan, p), np.where(degenerate, np.nan, df)
    return d, d - half, d + half, p, df


def _take(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows of ``x`` picked by ``idx`` along the seed axis: x (..., n, S), idx (..., R, m) -> (..., R, m, S)."""
    idx = idx.reshape((1,) * (x.ndim - 2 - (idx.ndim - 2)) + idx.shape) if idx.ndim < x.ndim else idx
    return np.take_along_axis(x[..., None, :, :], idx[..., None], axis=-2)


@dataclass(frozen=True)
class SplitLayout:
    """Which split plays which role, and the per-split constants of the ratio.

    :param splits: split labels, shape (S,)
    :param s_random: S_random per split, shape (S,)
    :param s_ref: S_ref per split, shape (S,)
    :param train: index of the training split (None: no gap, no DiD)
    :param ratio_in_aggregate: per held-out split, whether its ratio enters the aggregates (defined at the point)
    :param aggregate: per held-out split, whether it enters the aggregates at all (None: every held-out split)
    :param contrasts: pairs (a, b) of split indices; each adds the DiD contrast ``did[a] - did[b]``, i.e. per seed
        ``score[b] - score[a]``, LSTM mean minus RIMs mean (the training split cancels)
    """

    splits: tuple[str, ...]
    s_random: np.ndarray
    s_ref: np.ndarray
    train: int | None = None
    ratio_in_aggregate: np.ndarray | None = None
    aggregate: np.ndarray | None = None
    contrasts: tuple[tuple[int, int], ...] = ()

    @property
    def heldout(self) -> list[int]:
        """Indices of the held-out splits (every split but the training one)."""
        return [i for i in range(len(self.splits)) if i != self.train]

    def names(self) -> list[str]:
        """Names of the quantities :func:`seed_statistics` returns, in order."""
        names = [f"difference:{s}" for s in self.splits] + [f"ratio:{s}" for s in self.splits]
        if self.train is not None:
            names += [f"did:{self.splits[i]}" for i in self.heldout]
        names += [f"contrast:{self.splits[a]}|{self.splits[b]}" for a, b in self.contrasts]
        return names + [f"{q}:{a}" for q in ("difference", "ratio", "did") for a in ("median", "iqm")]


def seed_statistics(rims: np.ndarray, lstm: np.ndarray, layout: SplitLayout) -> np.ndarray:
    """Every compared quantity from per-seed mean scores, vectorized over leading (replicate, simulation) axes.

    :param rims: RIMs seed means, shape (..., n_rims, S); a seed is one row on every split
    :param lstm: LSTM seed means, shape (..., n_lstm, S)
    :param layout: the splits' roles and ratio constants
    :return: shape (..., Q), the quantities named by ``layout.names()``: difference (S), ratio (S), DiD (held-out
        splits, with a training split), the DiD contrasts, then median and IQM over the aggregated held-out splits
        of difference, ratio and DiD (nan where there is nothing to aggregate)
    """
    m_r, m_l = rims.mean(-2), lstm.mean(-2)
    diff = m_r - m_l
    ratio = np.asarray(score_ratio(m_r, m_l, layout.s_random, layout.s_ref))
    held = layout.heldout
    parts = [diff, ratio]
    nan = np.full(diff.shape[:-1], np.nan)
    aggs = []
    agg = layout.aggregate if layout.aggregate is not None else np.ones(len(held), bool)
    mask = (layout.ratio_in_aggregate if layout.ratio_in_aggregate is not None else np.ones(len(held), bool)) & agg
    did = None
    if layout.train is not None:
        t = layout.train
        did = (m_l[..., [t]] - m_l[..., held]) - (m_r[..., [t]] - m_r[..., held])
        parts.append(did)
        did = did[..., agg]
    if layout.contrasts:
        a, b = ([pair[k] for pair in layout.contrasts] for k in (0, 1))
        parts.append((m_l[..., b] - m_l[..., a]) - (m_r[..., b] - m_r[..., a]))
    for vals in (diff[..., held][..., agg], ratio[..., held][..., mask], did):
        if vals is None or vals.shape[-1] == 0:
            aggs += [nan, nan]
        else:
            aggs += [np.median(vals, -1), iqm(vals)]
    return np.concatenate([*parts, np.stack(aggs, -1)], -1)


@dataclass
class SeedStats:
    """Point estimates, intervals and p-values of every quantity (arrays of shape (..., Q)).

    :param names: quantity names (``SplitLayout.names``)
    :param method: the interval method ("welch", "bootstrap" or "none")
    """

    names: list[str]
    point: np.ndarray
    low: np.ndarray
    high: np.ndarray
    p_welch: np.ndarray
    p_perm: np.ndarray
    method: str

    def get(self, name: str) -> tuple[Any, tuple[Any, Any], Any, Any]:
        """(point, (low, high), Welch p, permutation p) of one quantity."""
        j = self.names.index(name)
        return self.point[..., j], (self.low[..., j], self.high[..., j]), self.p_welch[..., j], self.p_perm[..., j]


def _permutation_p(rims: np.ndarray, lstm: np.ndarray, layout: SplitLayout, point: np.ndarray, n_perm: int, rng: Any) -> Any:
    """Two-sided permutation p-values: the core labels of whole seeds (all splits at once) are permuted.

    Exact (every relabelling) when there are at most ``n_perm`` of them, else ``n_perm`` random ones with the
    (count + 1) / (n_perm + 1) correction.
    """
    n_r, n = rims.shape[-2], rims.shape[-2] + lstm.shape[-2]
    pooled = np.concatenate([rims, lstm], -2)
    exact = math.comb(n, n_r) <= n_perm
    if exact:
        perms = np.array([[*c, *(i for i in range(n) if i not in c)] for c in combinations(range(n), n_r)])
    else:
        perms = np.argsort(rng.random((n_perm, n)), axis=1)
    xp = _take(pooled, perms)
    t = seed_statistics(xp[..., :n_r, :], xp[..., n_r:, :], layout)
    obs = np.abs(point)[..., None, :]
    with np.errstate(invalid="ignore"):
        count = (np.abs(t) >= obs - 1e-12 * np.maximum(1.0, obs)).sum(-2)
    p = count / len(perms) if exact else (count + 1) / (len(perms) + 1)
    return np.where(np.isfinite(point), p, np.nan)


def _percentiles(t: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    q = [50 * (1 - confidence), 50 * (1 + confidence)]
    if not np.isnan(t).any():
        lo, hi = np.percentile(t, q, axis=-2)
        return lo, hi
    with warnings.catch_warnings():  # all-nan columns (no DiD without a training split) stay nan
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(t, q, axis=-2)
    return lo, hi


def seed_stats(
    rims: np.ndarray,
    lstm: np.ndarray,
    layout: SplitLayout,
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    n_permutations: int = 2000,
    method: str = "auto",
    rng: np.random.Generator | None = None,
) -> SeedStats:
    """Point estimates, intervals and p-values of every quantity, seeds as the unit (vectorized over leading axes).

    :param rims: RIMs seed means, shape (..., n_rims, S)
    :param lstm: LSTM seed means, shape (..., n_lstm, S)
    :param layout: the splits' roles and ratio constants
    :param confidence: interval mass
    :param n_bootstrap: bootstrap replicates
    :param n_permutations: most relabellings for the permutation p-values (exact below it)
    :param method: "auto" (:func:`choose_ci_method`), "welch", "bootstrap" or "none"
    :param rng: random generator (bootstrap and random permutations)
    :return: the statistics, each of shape (..., Q)
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    rims, lstm = np.asarray(rims, dtype=np.float64), np.asarray(lstm, dtype=np.float64)
    n_r, n_l = rims.shape[-2], lstm.shape[-2]
    method = choose_ci_method(n_r, n_l) if method == "auto" else method
    if n_bootstrap < 2 or n_permutations < 1:
        raise ValueError(f"need n_bootstrap >= 2 and n_permutations >= 1; got {n_bootstrap} and {n_permutations}")
    if method not in CI_METHODS:
        raise ValueError(f"unknown interval method {method!r}; allowed: auto, {', '.join(CI_METHODS)}")
    names = layout.names()
    point = seed_statistics(rims, lstm, layout)
    nan = np.full_like(point, np.nan)
    if method == "none" or min(n_r, n_l) < 2:
        return SeedStats(names, point, nan.copy(), nan.copy(), nan.copy(), nan.copy(), "none")
    n_split, held = len(layout.splits), layout.heldout
    # difference, ratio, DiD, DiD contrasts: linear in the seed means
    n_lin = 2 * n_split + (len(held) if layout.train is not None else 0) + len(layout.contrasts)

    # Welch on the linear quantities: difference per split; DiD per held-out split (gap_lstm vs gap_rims).
    _, w_lo, w_hi, w_p, _ = welch(rims, lstm, confidence)
    denom = np.maximum(lstm.mean(-2), layout.s_ref) - layout.s_random
    defined = np.isfinite(point[..., n_split : 2 * n_split])
    with np.errstate(divide="ignore", invalid="ignore"):
        r_lo, r_hi = np.where(defined, w_lo / denom, np.nan), np.where(defined, w_hi / denom, np.nan)
    lin_lo, lin_hi, lin_p = [w_lo, r_lo], [w_hi, r_hi], [w_p, np.where(defined, w_p, np.nan)]
    if layout.train is not None:
        t = layout.train
        g_r, g_l = rims[..., [t]] - rims[..., held], lstm[..., [t]] - lstm[..., held]
        _, g_lo, g_hi, g_p, _ = welch(g_l, g_r, confidence)
        lin_lo.append(g_lo)
        lin_hi.append(g_hi)
        lin_p.append(g_p)
    if layout.contrasts:
        a, b = ([pair[k] for pair in layout.contrasts] for k in (0, 1))
        _, c_lo, c_hi, c_p, _ = welch(lstm[..., b] - lstm[..., a], rims[..., b] - rims[..., a], confidence)
        lin_lo.append(c_lo)
        lin_hi.append(c_hi)
        lin_p.append(c_p)
    p_welch = nan.copy()
    p_welch[..., :n_lin] = np.concatenate(lin_p, -1)
    low, high = nan.copy(), nan.copy()
    batch = rims.shape[:-2]
    if method == "welch":
        low[..., :n_lin], high[..., :n_lin] = np.concatenate(lin_lo, -1), np.concatenate(lin_hi, -1)
        # aggregates: bootstrap standard error per core (the same resampled seeds on every split), Welch df
        tb_r = seed_statistics(_take(rims, rng.integers(0, n_r, (*batch, n_bootstrap, n_r))), lstm[..., None, :, :], layout)
        tb_l = seed_statistics(rims[..., None, :, :], _take(lstm, rng.integers(0, n_l, (*batch, n_bootstrap, n_l))), layout)
        with warnings.catch_warnings():  # all-nan columns (no DiD without a training split) stay nan
            warnings.simplefilter("ignore", RuntimeWarning)
            v_r = np.nanvar(tb_r[..., n_lin:], axis=-2, ddof=1) * n_r / (n_r - 1)
            v_l = np.nanvar(tb_l[..., n_lin:], axis=-2, ddof=1) * n_l / (n_l - 1)
        v = v_r + v_l
        with np.errstate(divide="ignore", invalid="ignore"):
            df = v**2 / (v_r**2 / (n_r - 1) + v_l**2 / (n_l - 1))
            half = np.where(v > 0, stats.t.ppf(0.5 + confidence / 2, df) * np.sqrt(v), 0.0)
        low[..., n_lin:], high[..., n_lin:] = point[..., n_lin:] - half, point[..., n_lin:] + half
    else:
        tb = seed_statistics(
            _take(rims, rng.integers(0, n_r, (*batch, n_bootstrap, n_r))),
            _take(lstm, rng.integers(0, n_l, (*batch, n_bootstrap, n_l))),
            layout,
        )
        q_lo, q_hi = _percentiles(tb, confidence)
        n = min(n_r, n_l)
        k = math.sqrt(n / (n - 1)) * stats.t.ppf(0.5 + confidence / 2, n_r + n_l - 2) / stats.norm.ppf(0.5 + confidence / 2)
        low = np.minimum(point - k * (point - q_lo), point)
        high = np.maximum(point + k * (q_hi - point), point)
    finite = np.isfinite(point)
    low, high = np.where(finite, low, np.nan), np.where(finite, high, np.nan)
    p_perm = _permutation_p(rims, lstm, layout, point, n_permutations, rng)
    return SeedStats(names, point, low, high, p_welch, p_perm, method)


@dataclass
class EnvScores:
    """Per-episode scores of every compared agent on one evaluation env (split).

    :param env: label shown in tables (split name or env id)
    :param env_id: the gymnasium env id
    :param ref_score: S_ref
    :param random: uniform-random episode scores, shape (n_episodes,)
    :param rims: per RIMs run (training seed), its episode scores; run k is the same agent on every split
    :param lstm: per LSTM run (training seed), its episode scores
    """

    env: str
    env_id: str
    ref_score: float
    random: np.ndarray
    rims: list[np.ndarray] = field(default_factory=list)
    lstm: list[np.ndarray] = field(default_factory=list)


@dataclass
class EnvComparison:
    """Per-split comparison of seed means; ``*_ci`` are intervals of the comparison's ``ci_method``.

    ``gap_*`` (per seed: training split minus this split) and ``did`` (gap_lstm - gap_rims, > 0 favours RIMs) are
    nan on the training split and when there is no training split.
    """

    env: str
    env_id: str
    heldout: bool
    s_rims: float
    s_lstm: float
    s_random: float
    s_ref: float
    difference: float
    difference_ci: tuple[float, float]
    difference_p_welch: float
    difference_p_perm: float
    ratio: float
    ratio_ci: tuple[float, float]
    quotient: float
    gap_rims: float
    gap_lstm: float
    did: float
    did_ci: tuple[float, float]
    did_p_welch: float
    did_p_perm: float
    s_rims_ci: tuple[float, float]
    s_lstm_ci: tuple[float, float]
    n_runs_rims: int
    n_runs_lstm: int
    n_episodes: int
    rims_per_seed: list[float]
    lstm_per_seed: list[float]
    ratio_undefined: bool
    note: str = ""
    in_aggregate: bool = True
    """Whether this held-out split enters the aggregates (False for the training split)."""


@dataclass
class Contrast:
    """A DiD contrast of two held-out splits: ``did[split_a] - did[split_b]`` (> 0 favours RIMs).

    Per seed it is ``score[split_b] - score[split_a]`` (the training split cancels), LSTM mean minus RIMs mean: with
    ``split_a`` novel-distractors and ``split_b`` more-distractors, the part of the DiD that novelty adds beyond
    crowding. Intervals and p-values as for a per-split DiD.
    """

    split_a: str
    split_b: str
    value: float
    ci: tuple[float, float]
    p_welch: float
    p_perm: float
    rims_per_seed: list[float]
    lstm_per_seed: list[float]

    @property
    def label(self) -> str:
        """How tables name it: ``DiD a - DiD b``."""
        return f"DiD {self.split_a} - DiD {self.split_b}"


@dataclass
class Aggregate:
    """Median and IQM over the held-out splits of one per-split quantity, with intervals and permutation p-values."""

    quantity: str
    median: float
    median_ci: tuple[float, float]
    median_p_perm: float
    iqm: float
    iqm_ci: tuple[float, float]
    iqm_p_perm: float
    n_envs: int
    n_envs_undefined: int


@dataclass
class Comparison:
    """The RIMs-versus-LSTM comparison of one score (return or success) under one action mode.

    ``aggregates["did"]`` is the headline: the difference-in-differences aggregated over held-out splits.
    ``aggregate`` is the ratio's aggregate (``aggregates["ratio"]``).
    """

    envs: list[EnvComparison]
    aggregates: dict[str, Aggregate]
    confidence: float
    n_bootstrap: int
    n_permutations: int
    ci_method: str
    n_seeds_rims: int
    n_seeds_lstm: int
    n_episodes: int
    train_split: str | None
    metric: str = "return"
    actions: str = "sampled"
    contrasts: list[Contrast] = field(default_factory=list)
    aggregate_splits: list[str] = field(default_factory=list)
    """The held-out splits the aggregates run over."""

    @property
    def aggregate(self) -> Aggregate:
        """The score ratio's aggregate over held-out splits."""
        return self.aggregates["ratio"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (nan become None)."""
        return _json_safe({**asdict(self), "aggregate": asdict(self.aggregate)})


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _seed_matrix(runs_per_split: list[list[np.ndarray]], core: str) -> np.ndarray:
    """(n_seeds, n_splits) seed means; every split must have the same seeds (runs)."""
    counts = {len(r) for r in runs_per_split}
    if len(counts) != 1 or 0 in counts:
        raise ValueError(f"every split needs the same {core} seeds (>= 1); got {sorted(counts)} runs")
    return np.array([[float(np.mean(run)) for run in runs] for runs in runs_per_split]).T


def compare(
    env_scores: Sequence[EnvScores],
    n_bootstrap: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    train_split: str | None = "train",
    method: str = "auto",
    n_permutations: int = 2000,
    metric: str = "return",
    actions: str = "sampled",
    aggregate_splits: Sequence[str] | None = None,
    contrasts: Sequence[tuple[str, str]] = (),
) -> Comparison:
    """The RIMs-versus-LSTM comparison with seeds as the unit (see the module docstring for the statistics).

    :param env_scores: one entry per split, each with the same >= 1 RIMs runs and >= 1 LSTM runs
    :param n_bootstrap: bootstrap replicates
    :param confidence: interval mass (0.95)
    :param seed: RNG seed of the bootstrap and of random permutations (results are reproducible)
    :param train_split: label of the training split (its env is the reference of the gaps; no gap without it)
    :param method: "auto", "welch", "bootstrap" or "none" (:func:`choose_ci_method`)
    :param n_permutations: most relabellings for permutation p-values (exact when there are fewer)
    :param metric: what the scores are ("return" or "success"), recorded
    :param actions: "sampled" or "greedy", recorded
    :param aggregate_splits: the held-out splits the aggregates run over (None: every held-out split)
    :param contrasts: pairs (a, b) of held-out splits, each reported as the DiD contrast ``did[a] - did[b]``
    :return: the comparison
    :raises ValueError: an aggregate or contrast split that is not a held-out split of ``env_scores``
    """
    labels = [es.env for es in env_scores]
    train = labels.index(train_split) if train_split in labels else None
    held_labels = [s for j, s in enumerate(labels) if j != train]
    for name in [*(aggregate_splits or []), *(s for pair in contrasts for s in pair)]:
        if name not in held_labels:
            raise ValueError(f"{name!r} is not a held-out split of this comparison ({', '.join(held_labels)})")
    in_agg = np.array([aggregate_splits is None or s in aggregate_splits for s in held_labels], bool)
    pairs = tuple((labels.index(a), labels.index(b)) for a, b in contrasts)
    rims = _seed_matrix([list(es.rims) for es in env_scores], "RIMs")
    lstm = _seed_matrix([list(es.lstm) for es in env_scores], "LSTM")
    s_random = np.array([float(np.mean(es.random)) for es in env_scores])
    s_ref = np.array([float(es.ref_score) for es in env_scores])
    layout = SplitLayout(tuple(labels), s_random, s_ref, train)
    point_ratio = np.asarray(score_ratio(rims.mean(0), lstm.mean(0), s_random, s_ref))
    layout = SplitLayout(tuple(labels), s_random, s_ref, train, np.isfinite(point_ratio[layout.heldout]), in_agg, pairs)
    st = seed_stats(rims, lstm, layout, confidence, n_bootstrap, n_permutations, method, np.random.default_rng(seed))
    rows = []
    for j, es in enumerate(env_scores):
        diff, diff_ci, diff_pw, diff_pp = st.get(f"difference:{es.env}")
        ratio, ratio_ci, _, _ = st.get(f"ratio:{es.env}")
        heldout = j != train
        did: Any = math.nan
        did_ci: Any = (math.nan, math.nan)
        did_pw: Any = math.nan
        did_pp: Any = math.nan
        gap_r = gap_l = math.nan
        if train is not None and heldout:
            did, did_ci, did_pw, did_pp = st.get(f"did:{es.env}")
            gap_r, gap_l = float(rims[:, train].mean() - rims[:, j].mean()), float(lstm[:, train].mean() - lstm[:, j].mean())
        undefined = not math.isfinite(float(ratio))
        quotient = score_quotient(rims[:, j].mean(), lstm[:, j].mean())
        notes = ["ratio undefined (max(S_lstm, S_ref) <= S_random)"] if undefined else []
        if not math.isfinite(quotient):
            notes.append("quotient undefined (S_lstm <= 0)")
        rows.append(
            EnvComparison(
                env=es.env,
                env_id=es.env_id,
                heldout=heldout,
                s_rims=float(rims[:, j].mean()),
                s_lstm=float(lstm[:, j].mean()),
                s_random=float(s_random[j]),
                s_ref=float(s_ref[j]),
                difference=float(diff),
                difference_ci=(float(diff_ci[0]), float(diff_ci[1])),
                difference_p_welch=float(diff_pw),
                difference_p_perm=float(diff_pp),
                ratio=float(ratio),
                ratio_ci=(float(ratio_ci[0]), float(ratio_ci[1])),
                quotient=float(quotient),
                gap_rims=gap_r,
                gap_lstm=gap_l,
                did=float(did),
                did_ci=(float(did_ci[0]), float(did_ci[1])),
                did_p_welch=float(did_pw),
                did_p_perm=float(did_pp),
                s_rims_ci=t_interval(rims[:, j], confidence),
                s_lstm_ci=t_interval(lstm[:, j], confidence),
                n_runs_rims=rims.shape[0],
                n_runs_lstm=lstm.shape[0],
                n_episodes=int(np.size(es.rims[0])),
                rims_per_seed=rims[:, j].tolist(),
                lstm_per_seed=lstm[:, j].tolist(),
                ratio_undefined=undefined,
                note="; ".join(notes),
                in_aggregate=heldout and bool(in_agg[held_labels.index(es.env)]),
            )
        )
    contrast_rows = []
    for a, b in pairs:
        value, ci, p_w, p_p = st.get(f"contrast:{labels[a]}|{labels[b]}")
        per_seed = (rims[:, b] - rims[:, a]).tolist(), (lstm[:, b] - lstm[:, a]).tolist()
        contrast_rows.append(Contrast(labels[a], labels[b], float(value), (float(ci[0]), float(ci[1])), float(p_w), float(p_p),
                                      *per_seed))  # fmt: skip
    aggregates = {}
    n_held = int(in_agg.sum())
    for q in ("did", "difference", "ratio"):
        med, med_ci, _, med_p = st.get(f"{q}:median")
        mean, iqm_ci, _, iqm_p = st.get(f"{q}:iqm")
        n_undefined = int((~np.isfinite(point_ratio[layout.heldout])[in_agg]).sum()) if q == "ratio" else 0
        aggregates[q] = Aggregate(
            q,
            float(med),
            (float(med_ci[0]), float(med_ci[1])),
            float(med_p),
            float(mean),
            (float(iqm_ci[0]), float(iqm_ci[1])),
            float(iqm_p),
            0 if q == "did" and train is None else n_held,
            n_undefined,
        )
    return Comparison(
        rows,
        aggregates,
        confidence,
        n_bootstrap,
        n_permutations,
        st.method,
        rims.shape[0],
        lstm.shape[0],
        int(np.size(env_scores[0].rims[0])),
        train_split if train is not None else None,
        metric,
        actions,
        contrast_rows,
        [s for s, inside in zip(held_labels, in_agg, strict=True) if inside],
    )


@dataclass
class ScoreSummary:
    """Mean return and success rate of one core (or agent, or the random policy) on one split, across its runs.

    ``ci`` / ``success_ci``: t-intervals over seed means (``ci_unit`` "seeds"), or over the episodes of a single run
    (``ci_unit`` "episodes": evaluation noise only).
    """

    agent: str
    env: str
    env_id: str
    mean: float
    ci: tuple[float, float]
    ci_unit: str
    n_runs: int
    n_episodes: int
    per_seed: list[float]
    success: float = math.nan
    success_ci: tuple[float, float] = (math.nan, math.nan)
    success_per_seed: list[float] = field(default_factory=list)
    actions: str = "sampled"


def _mean_ci(runs: Sequence[np.ndarray], confidence: float) -> tuple[float, tuple[float, float], str, list[float]]:
    per_seed = [float(np.mean(r)) if np.size(r) else math.nan for r in runs]
    if len(runs) >= 2:
        return float(np.mean(per_seed)), t_interval(per_seed, confidence), "seeds", per_seed
    if len(runs) == 1:
        return per_seed[0], t_interval(runs[0], confidence), "episodes", per_seed
    raise ValueError("no runs to score")


def summarize_scores(
    agent: str,
    env: str,
    env_id: str,
    runs: Sequence[np.ndarray],
    successes: Sequence[np.ndarray] | None = None,
    confidence: float = 0.95,
    actions: str = "sampled",
) -> ScoreSummary:
    """Mean and t-interval of one agent's (or core's) return and success rate on one split.

    :param agent: label
    :param env: env label
    :param env_id: env id
    :param runs: per run (training seed) its episode returns
    :param successes: per run its episode successes (0/1), or None when the env reports none
    :param confidence: interval mass
    :param actions: "sampled" or "greedy", recorded
    :return: the summary
    """
    mean, ci, unit, per_seed = _mean_ci(runs, confidence)
    summary = ScoreSummary(
        agent, env, env_id, mean, ci, unit, len(runs), int(sum(np.size(r) for r in runs)), per_seed, actions=actions
    )
    if successes is not None:
        summary.success, ci, _, summary.success_per_seed = _mean_ci(successes, confidence)
        summary.success_ci = (max(0.0, ci[0]), min(1.0, ci[1])) if math.isfinite(ci[0]) else ci  # a rate lies in [0, 1]
    return summary
