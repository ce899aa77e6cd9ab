"""Evaluate agents and the uniform-random baseline on evaluation targets."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from rims_rl.evaluation.checkpoints import AgentSpec, load_model
from rims_rl.evaluation.rollout import Agent, Episodes, UniformRandomAgent, check_spaces, run_episodes
from rims_rl.evaluation.scores import Comparison, EnvScores, ScoreSummary, compare, summarize_scores
from rims_rl.evaluation.targets import EvalTarget


@dataclass
class EnvOptions:
    """How an agent's envs were built in training, so that evaluation builds them the same way.

    :param frame_stack: frames stacked (None: the setting's default, else none)
    :param env_kwargs: extra constructor kwargs of the env
    :param normalize_kwargs: VecNormalize kwargs when the run normalized observations (None: no VecNormalize)
    :param vecnormalize_path: the run's saved VecNormalize statistics (with ``normalize_kwargs``)
    """

    frame_stack: int | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    normalize_kwargs: dict[str, Any] | None = None
    vecnormalize_path: Path | None = None


def run_folder_of(path: str | Path) -> Path | None:
    """
    :param path: a run folder, or a checkpoint inside one (``<run>/<env>.zip``, ``<run>/checkpoints/*.zip``)
    :return: the run folder (it holds config.yml), or None for a file outside any run folder
    """
    path = Path(path)
    for candidate in (path, path.parent, path.parent.parent) if not path.is_dir() else (path,):
        if (candidate / "config.yml").is_file():
            return candidate
    return None


def env_options_from_run(folder: str | Path) -> EnvOptions:
    """
    Read how a run built its training envs (its config.yml and args.yml, written by ``rims-train``).

    :param folder: the run folder
    :return: the env options (frame stack: the run's, else its setting's)
    :raises ValueError: unreadable config.yml, or VecNormalize statistics that are missing
    """
    import yaml

    folder = Path(folder)
    try:
        config = yaml.safe_load((folder / "config.yml").read_text()) or {}
        args_path = folder / "args.yml"
        args = (yaml.safe_load(args_path.read_text()) or {}) if args_path.is_file() else {}
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"run folder {folder}: cannot read config.yml/args.yml ({str(error).splitlines()[0]})") from None
    if not isinstance(config, dict) or not isinstance(args, dict):
        raise ValueError(f"run folder {folder}: config.yml and args.yml must be mappings")
    frame_stack = config.get("frame_stack")
    if frame_stack is None and args.get("setting"):
        from rims_rl.envs import load_setting

        try:
            frame_stack = load_setting(str(args["setting"])).frame_stack
        except ValueError:
            frame_stack = None  # the setting is gone: the target's own default applies
    options = EnvOptions(frame_stack=frame_stack, env_kwargs=dict(config.get("env_kwargs") or {}))
    if config.get("normalize"):
        options.normalize_kwargs = dict(config.get("normalize_kwargs") or {})
        options.vecnormalize_path = folder / VECNORMALIZE_FILE
        if not options.vecnormalize_path.is_file():
            raise ValueError(f"run folder {folder} was trained with VecNormalize but has no {VECNORMALIZE_FILE}")
    return options


#: The VecNormalize statistics of a run folder (safetensors + JSON, written by ``rims-train``).
VECNORMALIZE_FILE = "vecnormalize.safetensors"


def make_target_env(target: EvalTarget, n_envs: int, seed: int, options: EnvOptions | None = None) -> VecEnv:
    """
    :param target: the evaluation env
    :param n_envs: parallel envs
    :param seed: evaluation seed
    :param options: how the agent's training envs were built (None: the target's defaults)
    :return: the evaluation VecEnv, wrapped as the agent's training env was (frame stack, env_kwargs, VecNormalize
        with the run's statistics, frozen, rewards not normalized)
    """
    if options is None:
        return target.make_env(n_envs=n_envs, seed=seed)
    env = target.make_env(n_envs=n_envs, seed=seed, frame_stack=options.frame_stack, env_kwargs=options.env_kwargs or None)
    if options.normalize_kwargs is None:
        return env
    from stable_baselines3.common.vec_env import VecNormalize

    kwargs = {k: v for k, v in options.normalize_kwargs.items() if k not in ("training", "norm_reward")}
    normalized = VecNormalize(env, training=False, norm_reward=False, **kwargs)
    import rims_rl.checkpoint

    load_vecnormalize = getattr(rims_rl.checkpoint, "load_vecnormalize", None)  # the safe (no pickle) loader
    if load_vecnormalize is None:
        env.close()
        raise ValueError(f"cannot read {options.vecnormalize_path} without unpickling: this version has no safe loader")
    load_vecnormalize(options.vecnormalize_path, normalized)
    normalized.training, normalized.norm_reward = False, False
    return normalized


def evaluate_on_target(
    agent: Agent | None,
    target: EvalTarget,
    n_envs: int = 1,
    deterministic: bool = False,
    checkpoint: str = "agent",
    options: EnvOptions | None = None,
) -> Episodes:
    """Play ``target.n_episodes`` episodes per evaluation seed; ``agent=None`` plays uniformly at random.

    :param agent: a loaded model, or None for the uniform-random baseline
    :param target: the evaluation env
    :param n_envs: parallel envs
    :param deterministic: greedy actions
    :param checkpoint: name used in space-mismatch errors
    :param options: how the agent's training envs were built (None: the target's defaults)
    :return: all episodes, seed after seed
    """
    parts = []
    for seed in target.seeds:
        env = make_target_env(target, n_envs, seed, options)
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


ACTION_MODES: dict[str, tuple[str, ...]] = {"both": ("sampled", "greedy"), "sampled": ("sampled",), "greedy": ("greedy",)}
"""``--actions`` choices -> the action modes played ("sampled": drawn from the policy; "greedy": its mode)."""


@dataclass
class CoreInfo:
    """Size of an agent's recurrent core(s), counted on the loaded policy.

    :param core: "rims", "lstm", "gru", ... (None when unknown)
    :param n_params: trainable parameters of the recurrent core(s): actor core plus a separate critic core if any
    :param n_params_actor: parameters of the actor's core alone
    :param state_size: size of the recurrent state h (RecurrentPPO also carries c of the same size)
    :param n_params_policy: parameters of the whole policy
    """

    core: str | None
    n_params: int
    n_params_actor: int
    state_size: int
    n_params_policy: int


def core_info(model: Any, core: str | None = None) -> CoreInfo | None:
    """Parameter counts and state size of a loaded recurrent model's core (``policy.lstm_actor``), or None.

    :param model: a loaded SB3 model
    :param core: the core's name when known
    """
    policy = getattr(model, "policy", None)
    actor = getattr(policy, "lstm_actor", None)
    if policy is None or actor is None:
        return None

    def count(module: Any) -> int:
        return int(sum(p.numel() for p in module.parameters())) if module is not None else 0

    critic = getattr(policy, "lstm_critic", None)
    hidden = getattr(actor, "hidden_size", None) or getattr(policy, "lstm_hidden_state_shape", (0, 0, 0))[-1]
    return CoreInfo(core, count(actor) + count(critic), count(actor), int(hidden), count(policy))


@dataclass
class EvaluationResult:
    """Episodes of every agent (under each action mode) and of the random baseline on every target."""

    targets: list[EvalTarget]
    agents: list[AgentSpec]
    episodes: dict[str, dict[str, dict[str, Episodes]]] = field(default_factory=dict)
    """action mode -> agent label -> target label -> episodes"""
    random: dict[str, Episodes] = field(default_factory=dict)
    """target label -> random-policy episodes"""
    actions: tuple[str, ...] = ("sampled",)
    cores: dict[str, CoreInfo] = field(default_factory=dict)
    """agent label -> its core's size"""

    def reports_success(self, target: str) -> bool:
        """Whether the env of ``target`` reports success (some episode of some agent ended with a flag)."""
        eps = [e[target] for per_agent in self.episodes.values() for e in per_agent.values() if target in e]
        if target in self.random:
            eps.append(self.random[target])
        return any(e.reports_success for e in eps)

    def runs(self, core: str, target: str, actions: str = "sampled", metric: str = "return") -> list[np.ndarray]:
        """Per-episode returns (or successes) of each agent with this core on one target (one array per run)."""
        out = []
        for a in self.agents:
            if a.core != core:
                continue
            eps = self.episodes[actions][a.label][target]
            out.append(eps.returns if metric == "return" else eps.success_or_failure())
        return out

    def metrics(self) -> list[str]:
        """ "return", and "success" when every target reports success."""
        return ["return", "success"] if all(self.reports_success(t.label) for t in self.targets) else ["return"]

    def comparison(
        self,
        n_bootstrap: int = 2000,
        seed: int = 0,
        actions: str | None = None,
        metric: str = "return",
        method: str = "auto",
        n_permutations: int = 2000,
    ) -> Comparison | None:
        """The RIMs-versus-LSTM comparison of one metric under one action mode (None without both cores or S_ref).

        For success rates S_ref is 1 (every episode succeeds).
        """
        actions = actions or self.actions[0]
        first = self.targets[0].label
        if not self.runs("rims", first, actions) or not self.runs("lstm", first, actions):
            return None
        if any(t.ref_score is None for t in self.targets) or any(t.label not in self.random for t in self.targets):
            return None
        env_scores = []
        for t in self.targets:
            rnd = self.random[t.label]
            random_values = rnd.returns if metric == "return" else rnd.success_or_failure()
            env_scores.append(
                EnvScores(
                    t.label,
                    t.env_id,
                    float(t.ref_score) if metric == "return" else 1.0,  # type: ignore[arg-type]
                    random_values,
                    self.runs("rims", t.label, actions, metric),
                    self.runs("lstm", t.label, actions, metric),
                )
            )
        return compare(
            env_scores,
            n_bootstrap=n_bootstrap,
            seed=seed,
            method=method,
            n_permutations=n_permutations,
            metric=metric,
            actions=actions,
        )

    def comparisons(
        self, n_bootstrap: int = 2000, seed: int = 0, method: str = "auto", n_permutations: int = 2000
    ) -> list[Comparison]:
        """Every comparison: each action mode played, return and (where reported) success."""
        out = []
        for actions in self.actions:
            for metric in self.metrics():
                c = self.comparison(n_bootstrap, seed, actions, metric, method, n_permutations)
                if c is not None:
                    out.append(c)
        return out

    def summaries(self, confidence: float = 0.95) -> list[ScoreSummary]:
        """Mean return and success with t-intervals per core (or per agent when its core is unknown), per target and
        action mode, the random policy included."""
        groups: dict[str, list[AgentSpec]] = {}
        for a in self.agents:
            groups.setdefault(a.core or a.label, []).append(a)
        out = []
        for actions in self.actions:
            for t in self.targets:
                reported = self.reports_success(t.label)
                for name, members in groups.items():
                    eps = [self.episodes[actions][a.label][t.label] for a in members]
                    successes = [e.success_or_failure() for e in eps] if reported else None
                    out.append(
                        summarize_scores(name, t.label, t.env_id, [e.returns for e in eps], successes, confidence, actions)
                    )
        for t in self.targets:
            if t.label in self.random:
                rnd = self.random[t.label]
                random_successes = [rnd.success_or_failure()] if self.reports_success(t.label) else None
                out.append(
                    summarize_scores("random", t.label, t.env_id, [rnd.returns], random_successes, confidence, "random")
                )
        return out


def evaluate(
    agents: Sequence[AgentSpec],
    targets: Sequence[EvalTarget],
    n_envs: int = 1,
    actions: str = "both",
    random_baseline: bool = True,
    device: str = "cpu",
    log: Callable[[str], Any] | None = None,
    env_options: Mapping[str, EnvOptions] | None = None,
) -> EvaluationResult:
    """Evaluate every agent (under each action mode) and the random baseline on every target.

    :param agents: checkpoints to evaluate
    :param targets: evaluation envs
    :param n_envs: parallel envs per evaluation
    :param actions: "both" (sampled and greedy, on the same env seeds), "sampled" or "greedy"
    :param random_baseline: also play the uniform-random policy
    :param device: torch device for the models
    :param log: progress printer
    :param env_options: agent label -> how its training envs were built (run folders); others: the targets' defaults
    :return: all episodes
    """
    if actions not in ACTION_MODES:
        raise ValueError(f"unknown action mode {actions!r}; allowed: {', '.join(ACTION_MODES)}")
    modes = ACTION_MODES[actions]
    result = EvaluationResult(list(targets), list(agents), {m: {} for m in modes}, actions=modes)
    for spec in agents:
        model = load_model(spec, device=device)
        if spec.core is None:
            spec.core = getattr(model.policy, "core_name", None) or "lstm"
        info = core_info(model, spec.core)
        if info is not None:
            result.cores[spec.label] = info
        options = (env_options or {}).get(spec.label)
        for mode in modes:
            result.episodes[mode][spec.label] = {}
            for t in targets:
                if log:
                    log(
                        f"evaluating {spec.label} ({spec.core}, {mode} actions) on {t.label}: "
                        f"{len(t.seeds)} seed(s) x {t.n_episodes} episodes"
                    )
                result.episodes[mode][spec.label][t.label] = evaluate_on_target(
                    model, t, n_envs, mode == "greedy", str(spec.path), options
                )
    if random_baseline:
        for t in targets:
            if log:
                log(f"evaluating the uniform-random policy on {t.label}")
            result.random[t.label] = evaluate_on_target(None, t, n_envs)
    return result
