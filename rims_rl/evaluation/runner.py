"""Evaluate agents and the uniform-random baseline on evaluation targets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rims_rl.evaluation.checkpoints import AgentSpec, load_model
from rims_rl.evaluation.rollout import Agent, Episodes, UniformRandomAgent, check_spaces, run_episodes
from rims_rl.evaluation.scores import Comparison, EnvScores, ScoreSummary, compare, summarize_scores
from rims_rl.evaluation.targets import EvalTarget


def evaluate_on_target(
    agent: Agent | None,
    target: EvalTarget,
    n_envs: int = 1,
    deterministic: bool = False,
    checkpoint: str = "agent",
) -> Episodes:
    """Play ``target.n_episodes`` episodes per evaluation seed; ``agent=None`` plays uniformly at random.

    :param agent: a loaded model, or None for the uniform-random baseline
    :param target: the evaluation env
    :param n_envs: parallel envs
    :param deterministic: greedy actions
    :param checkpoint: name used in space-mismatch errors
    :return: all episodes, seed after seed
    """
    parts = []
    for seed in target.seeds:
        env = target.make_env(n_envs=n_envs, seed=seed)
        try:
            if agent is None:
                player: Agent = UniformRandomAgent(env.action_space, env.num_envs, seed=seed)
            else:
                check_spaces(agent, env, checkpoint, target.env_id)  # type: ignore[arg-type]
                player = agent
            parts.append(run_episodes(player, env, target.n_episodes, deterministic=deterministic))
        finally:
            env.close()
    return Episodes.concat(parts)


@dataclass
class EvaluationResult:
    """Episode returns of every agent and of the random baseline on every target."""

    targets: list[EvalTarget]
    agents: list[AgentSpec]
    episodes: dict[str, dict[str, Episodes]] = field(default_factory=dict)
    """agent label -> target label -> episodes"""
    random: dict[str, Episodes] = field(default_factory=dict)
    """target label -> random-policy episodes"""
    deterministic: bool = False

    def runs(self, core: str, target: str) -> list[np.ndarray]:
        """Episode returns of each agent with this core on one target (one array per run)."""
        return [self.episodes[a.label][target].returns for a in self.agents if a.core == core]

    def comparison(self, n_bootstrap: int = 2000, seed: int = 0) -> Comparison | None:
        """The RIMs-versus-LSTM comparison, or None without both cores or without S_ref."""
        if not self.runs("rims", self.targets[0].label) or not self.runs("lstm", self.targets[0].label):
            return None
        if any(t.ref_score is None for t in self.targets):
            return None
        env_scores = [
            EnvScores(
                t.label,
                t.env_id,
                float(t.ref_score),  # type: ignore[arg-type]
                self.random[t.label].returns,
                self.runs("rims", t.label),
                self.runs("lstm", t.label),
            )
            for t in self.targets
        ]
        return compare(env_scores, n_bootstrap=n_bootstrap, seed=seed)

    def summaries(self, n_bootstrap: int = 2000, seed: int = 0) -> list[ScoreSummary]:
        """Mean score with CI per core (or per agent when its core is unknown) and per target, random included."""
        groups: dict[str, list[AgentSpec]] = {}
        for a in self.agents:
            groups.setdefault(a.core or a.label, []).append(a)
        out = []
        for t in self.targets:
            for name, members in groups.items():
                runs = [self.episodes[a.label][t.label].returns for a in members]
                out.append(summarize_scores(name, t.label, t.env_id, runs, n_bootstrap, seed=seed))
            if t.label in self.random:
                random_runs = [self.random[t.label].returns]
                out.append(summarize_scores("random", t.label, t.env_id, random_runs, n_bootstrap, seed=seed))
        return out


def evaluate(
    agents: Sequence[AgentSpec],
    targets: Sequence[EvalTarget],
    n_envs: int = 1,
    deterministic: bool = False,
    random_baseline: bool = True,
    device: str = "cpu",
    log: Callable[[str], Any] | None = None,
) -> EvaluationResult:
    """Evaluate every agent (and the random baseline) on every target.

    :param agents: checkpoints to evaluate
    :param targets: evaluation envs
    :param n_envs: parallel envs per evaluation
    :param deterministic: greedy actions (default: sampled, as rl-zoo does for Atari and MiniGrid)
    :param random_baseline: also play the uniform-random policy
    :param device: torch device for the models
    :param log: progress printer
    :return: all episodes
    """
    result = EvaluationResult(list(targets), list(agents), deterministic=deterministic)
    for spec in agents:
        model = load_model(spec, device=device)
        if spec.core is None:
            spec.core = getattr(model.policy, "core_name", None) or "lstm"
        result.episodes[spec.label] = {}
        for t in targets:
            if log:
                log(f"evaluating {spec.label} ({spec.core}) on {t.label}: {len(t.seeds)} seed(s) x {t.n_episodes} episodes")
            result.episodes[spec.label][t.label] = evaluate_on_target(model, t, n_envs, deterministic, str(spec.path))
    if random_baseline:
        for t in targets:
            if log:
                log(f"evaluating the uniform-random policy on {t.label}")
            result.random[t.label] = evaluate_on_target(None, t, n_envs)
    return result
