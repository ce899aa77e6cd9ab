"""Reference scores, the RIMs-versus-LSTM score ratio and its bootstrap statistics.

The ratio (RIMS_NOTES.md, "The score ratio"; Wang et al. 2016, dueling networks, Fig. 4) per environment e:

    ratio(e) = (S_rims - S_lstm) / (max(S_lstm, S_ref) - S_random)

Undefined denominators: when ``max(S_lstm, S_ref) - S_random <= eps`` (random play scores at least as well as
both the LSTM and the reference) the ratio is ``nan`` and flagged, never divided by an epsilon: a tiny
denominator would turn noise into an arbitrarily large "improvement".

Confidence intervals are percentile intervals of a stratified bootstrap (Agarwal et al. 2021): each environment
is a stratum, and within it the units are resampled with replacement — the training seeds (runs) when a core has
two or more runs, otherwise that single run's episodes (then the interval covers evaluation noise only; the
result records which unit was used). ``rliable.library`` cannot be imported in this environment (its ``arch``
dependency fails against pandas 3), so the resampling is done here with numpy, following rliable's
``StratifiedBootstrap`` (runs resampled within each task, percentile method); the aggregate point estimates use
``rliable.metrics``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from rliable import metrics

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


def percentile_ci(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap samples, ignoring nan; (nan, nan) when none is finite.

    :param samples: bootstrap replicates, shape (n_reps,)
    :param confidence: interval mass
    :return: (low, high)
    """
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return (math.nan, math.nan)
    alpha = 100 * (1 - confidence) / 2
    low, high = np.percentile(finite, [alpha, 100 - alpha])
    return (float(low), float(high))


def bootstrap_means(units: np.ndarray, n_reps: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_reps`` resamples (with replacement) of ``units``.

    :param units: shape (n_units,)
    :param n_reps: number of bootstrap replicates
    :param rng: random generator
    :return: shape (n_reps,)
    """
    units = np.asarray(units, dtype=np.float64)
    if units.size == 0:
        return np.full(n_reps, np.nan)
    idx = rng.integers(0, units.size, size=(n_reps, units.size))
    return units[idx].mean(axis=1)


def _units(runs: Sequence[np.ndarray]) -> tuple[np.ndarray, str]:
    """Bootstrap units of one core on one env: run means with >= 2 runs, else the single run's episodes."""
    runs = [np.asarray(r, dtype=np.float64) for r in runs]
    if len(runs) >= 2:
        return np.array([r.mean() for r in runs]), "seeds"
    if len(runs) == 1:
        return runs[0], "episodes"
    raise ValueError("no runs to score")


@dataclass
class EnvScores:
    """Episode returns of every compared agent on one evaluation env.

    :param env: label shown in tables (split name or env id)
    :param env_id: the gymnasium env id
    :param ref_score: S_ref
    :param random: uniform-random episode returns, shape (n_episodes,)
    :param rims: per RIMs run (training seed), its episode returns
    :param lstm: per LSTM run (training seed), its episode returns
    """

    env: str
    env_id: str
    ref_score: float
    random: np.ndarray
    rims: list[np.ndarray] = field(default_factory=list)
    lstm: list[np.ndarray] = field(default_factory=list)


@dataclass
class EnvComparison:
    """Per-env comparison; ``*_ci`` are 95% stratified-bootstrap intervals (see ``ci_unit``)."""

    env: str
    env_id: str
    s_rims: float
    s_lstm: float
    s_random: float
    s_ref: float
    ratio: float
    difference: float
    quotient: float
    s_rims_ci: tuple[float, float]
    s_lstm_ci: tuple[float, float]
    s_random_ci: tuple[float, float]
    ratio_ci: tuple[float, float]
    difference_ci: tuple[float, float]
    ci_unit: str
    n_runs_rims: int
    n_runs_lstm: int
    n_episodes: int
    rims_per_seed: list[float]
    lstm_per_seed: list[float]
    ratio_undefined: bool
    note: str = ""


@dataclass
class Aggregate:
    """Median and interquartile mean of the per-env ratios with bootstrap intervals."""

    median: float
    median_ci: tuple[float, float]
    iqm: float
    iqm_ci: tuple[float, float]
    n_envs: int
    n_envs_undefined: int


@dataclass
class Comparison:
    """The whole RIMs-versus-LSTM comparison: per-env rows and the across-env aggregate."""

    envs: list[EnvComparison]
    aggregate: Aggregate
    confidence: float
    n_bootstrap: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (nan become None)."""
        return _json_safe(asdict(self))


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


def _aggregate(point: np.ndarray, reps: np.ndarray, confidence: float) -> Aggregate:
    """Median and IQM over envs of the finite per-env ratios; ``reps`` has shape (n_reps, n_envs)."""
    finite = np.isfinite(point)
    n_undefined = int((~finite).sum())
    if not finite.any():
        nan2 = (math.nan, math.nan)
        return Aggregate(math.nan, nan2, math.nan, nan2, int(point.size), n_undefined)
    median = float(metrics.aggregate_median(point[finite][None, :]))
    iqm = float(metrics.aggregate_iqm(point[finite][None, :]))
    med_reps, iqm_reps = np.full(len(reps), np.nan), np.full(len(reps), np.nan)
    for i, row in enumerate(reps[:, finite]):
        row = row[np.isfinite(row)]
        if row.size:
            med_reps[i] = metrics.aggregate_median(row[None, :])
            iqm_reps[i] = metrics.aggregate_iqm(row[None, :])
    return Aggregate(
        median, percentile_ci(med_reps, confidence), iqm, percentile_ci(iqm_reps, confidence), int(point.size), n_undefined
    )


def compare(env_scores: Sequence[EnvScores], n_bootstrap: int = 2000, confidence: float = 0.95, seed: int = 0) -> Comparison:
    """Score ratio, difference and quotient per env, with stratified-bootstrap CIs, and median/IQM across envs.

    Point estimates use S = mean over runs of each run's mean episode return (S_random: mean over episodes).

    :param env_scores: one entry per evaluation env, each with >= 1 RIMs run and >= 1 LSTM run
    :param n_bootstrap: bootstrap replicates
    :param confidence: interval mass (0.95)
    :param seed: bootstrap RNG seed (results are reproducible)
    :return: the comparison
    """
    rng = np.random.default_rng(seed)
    rows: list[EnvComparison] = []
    ratio_reps = np.empty((n_bootstrap, len(env_scores)))
    for j, es in enumerate(env_scores):
        rims_units, rims_unit = _units(es.rims)
        lstm_units, lstm_unit = _units(es.lstm)
        random_units = np.asarray(es.random, dtype=np.float64)
        s_rims, s_lstm, s_random = float(rims_units.mean()), float(lstm_units.mean()), float(random_units.mean())
        b_rims = bootstrap_means(rims_units, n_bootstrap, rng)
        b_lstm = bootstrap_means(lstm_units, n_bootstrap, rng)
        b_random = bootstrap_means(random_units, n_bootstrap, rng)
        ratio = score_ratio(s_rims, s_lstm, s_random, es.ref_score)
        ratio_reps[:, j] = score_ratio(b_rims, b_lstm, b_random, es.ref_score)
        undefined = not math.isfinite(ratio)
        notes = []
        if undefined:
            notes.append("ratio undefined (max(S_lstm, S_ref) <= S_random)")
        if not math.isfinite(score_quotient(s_rims, s_lstm)):
            notes.append("quotient undefined (S_lstm <= 0)")
        rows.append(
            EnvComparison(
                env=es.env,
                env_id=es.env_id,
                s_rims=s_rims,
                s_lstm=s_lstm,
                s_random=s_random,
                s_ref=float(es.ref_score),
                ratio=ratio,
                difference=s_rims - s_lstm,
                quotient=score_quotient(s_rims, s_lstm),
                s_rims_ci=percentile_ci(b_rims, confidence),
                s_lstm_ci=percentile_ci(b_lstm, confidence),
                s_random_ci=percentile_ci(b_random, confidence),
                ratio_ci=percentile_ci(ratio_reps[:, j], confidence),
                difference_ci=percentile_ci(b_rims - b_lstm, confidence),
                ci_unit=rims_unit if rims_unit == lstm_unit else f"rims:{rims_unit}, lstm:{lstm_unit}",
                n_runs_rims=len(es.rims),
                n_runs_lstm=len(es.lstm),
                n_episodes=int(random_units.size),
                rims_per_seed=[float(np.mean(r)) for r in es.rims],
                lstm_per_seed=[float(np.mean(r)) for r in es.lstm],
                ratio_undefined=undefined,
                note="; ".join(notes),
            )
        )
    point = np.array([r.ratio for r in rows], dtype=np.float64)
    return Comparison(rows, _aggregate(point, ratio_reps, confidence), confidence, n_bootstrap)


@dataclass
class ScoreSummary:
    """Mean score of one agent (or the random policy) on one env, across its runs, with a bootstrap CI."""

    agent: str
    env: str
    env_id: str
    mean: float
    ci: tuple[float, float]
    ci_unit: str
    n_runs: int
    n_episodes: int
    per_seed: list[float]


def summarize_scores(
    agent: str,
    env: str,
    env_id: str,
    runs: Sequence[np.ndarray],
    n_bootstrap: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> ScoreSummary:
    """Mean and stratified-bootstrap CI of one agent's score on one env.

    :param agent: label
    :param env: env label
    :param env_id: env id
    :param runs: per run (training seed) its episode returns
    :param n_bootstrap: bootstrap replicates
    :param confidence: interval mass
    :param seed: RNG seed
    :return: the summary
    """
    units, unit = _units(runs)
    reps = bootstrap_means(units, n_bootstrap, np.random.default_rng(seed))
    return ScoreSummary(
        agent,
        env,
        env_id,
        float(units.mean()),
        percentile_ci(reps, confidence),
        unit,
        len(runs),
        int(sum(np.size(r) for r in runs)),
        [float(np.mean(r)) for r in runs],
    )
