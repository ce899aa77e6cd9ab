"""Evaluate agents and the uniform-random baseline on evaluation targets."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
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


def seed_unit(seed: int) -> None:
    """Seed every global RNG an evaluation unit draws from (python ``random``, numpy, torch) with its evaluation seed.

    Sampled actions come from torch's global generator; seeding it at the start of each unit makes the unit's
    episodes independent of whatever was evaluated before it (in this process or another).

    :param seed: the unit's evaluation seed
    """
    from stable_baselines3.common.utils import set_random_seed

    set_random_seed(seed)


def evaluate_seed(
    agent: Agent | None,
    target: EvalTarget,
    seed: int,
    n_envs: int = 1,
    deterministic: bool = False,
    checkpoint: str = "agent",
    options: EnvOptions | None = None,
) -> Episodes:
    """One evaluation unit: ``target.n_episodes`` episodes on the envs of one evaluation seed, the global RNGs seeded
    with that seed first (:func:`seed_unit`); ``agent=None`` plays uniformly at random.

    :param agent: a loaded model, or None for the uniform-random baseline
    :param target: the evaluation env
    :param seed: the evaluation seed (of the envs, of the random policy's sampler and of the global RNGs)
    :param n_envs: parallel envs
    :param deterministic: greedy actions
    :param checkpoint: name used in space-mismatch errors
    :param options: how the agent's training envs were built (None: the target's defaults)
    :return: the episodes
    """
    seed_unit(seed)
    env = make_target_env(target, n_envs, seed, options)
    try:
        if agent is None:
            player: Agent = UniformRandomAgent(env.action_space, env.num_envs, seed=seed)
        else:
            check_spaces(agent, env, checkpoint, target.env_id)  # type: ignore[arg-type]
            player = agent
        return run_episodes(player, env, target.n_episodes, deterministic=deterministic)
    finally:
        env.close()


def evaluate_on_target(
    agent: Agent | None,
    target: EvalTarget,
    n_envs: int = 1,
    deterministic: bool = False,
    checkpoint: str = "agent",
    options: EnvOptions | None = None,
) -> Episodes:
    """Play ``target.n_episodes`` episodes per evaluation seed (one :func:`evaluate_seed` unit each); ``agent=None``
    plays uniformly at random.

    :param agent: a loaded model, or None for the uniform-random baseline
    :param target: the evaluation env
    :param n_envs: parallel envs
    :param deterministic: greedy actions
    :param checkpoint: name used in space-mismatch errors
    :param options: how the agent's training envs were built (None: the target's defaults)
    :return: all episodes, seed after seed
    """
    return Episodes.concat(
        [evaluate_seed(agent, target, seed, n_envs, deterministic, checkpoint, options) for seed in target.seeds]
    )


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
        aggregate_splits: Sequence[str] | None = None,
        contrasts: Sequence[tuple[str, str]] = (),
    ) -> Comparison | None:
        """The RIMs-versus-LSTM comparison of one metric under one action mode (None without both cores or S_ref).

        For success rates S_ref is 1 (every episode succeeds). ``aggregate_splits`` and ``contrasts``: see
        :func:`rims_rl.evaluation.scores.compare`.
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
            aggregate_splits=aggregate_splits,
            contrasts=contrasts,
        )

    def comparisons(
        self,
        n_bootstrap: int = 2000,
        seed: int = 0,
        method: str = "auto",
        n_permutations: int = 2000,
        aggregate_splits: Sequence[str] | None = None,
        contrasts: Sequence[tuple[str, str]] = (),
    ) -> list[Comparison]:
        """Every comparison: each action mode played, return and (where reported) success."""
        out = []
        for actions in self.actions:
            for metric in self.metrics():
                c = self.comparison(n_bootstrap, seed, actions, metric, method, n_permutations, aggregate_splits, contrasts)
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


class EvaluationWorkerError(RuntimeError):
    """An evaluation worker process failed in a way that is not one of the evaluator's clear errors (or died)."""


@dataclass
class _Task:
    """The units of one agent under one action mode on one target (or of the random baseline on one target).

    Only plain data and specs travel to a worker: the checkpoint's path and sha256 (the worker reads and checks the
    bytes, then loads them with :func:`load_model`), never a model.
    """

    index: int
    """the agent's position in the agent list (-1: the uniform-random baseline)"""
    spec: AgentSpec | None
    digest: str | None
    """sha256 of the checkpoint's bytes"""
    mode: str
    """"sampled", "greedy" or "random\""""
    target: EvalTarget
    seeds: list[int]
    n_envs: int
    options: EnvOptions | None
    device: str


def checkpoint_digest(spec: AgentSpec) -> str:
    """
    :param spec: an agent
    :return: the sha256 of its checkpoint's bytes (its verified ``content`` when present)
    :raises FileNotFoundError: the checkpoint does not exist
    """
    from rims_rl.evaluation.cache import sha256_bytes

    if spec.content is not None:
        return sha256_bytes(spec.content)
    if not Path(spec.path).is_file():
        raise FileNotFoundError(f"checkpoint not found: {spec.path}")
    return sha256_bytes(Path(spec.path).read_bytes())


def _load_checked(spec: AgentSpec, digest: str, device: str) -> Any:
    """Load an agent's checkpoint with :func:`load_model`, after checking that its bytes are those named by ``digest``.

    :param spec: the agent (its verified ``content`` when present, else its file)
    :param digest: the sha256 its bytes had when the evaluation began (the cache key's)
    :param device: torch device
    :return: the loaded model
    :raises FileNotFoundError: the file is gone
    :raises ValueError: the file changed since the evaluation began, or is not a readable checkpoint
    """
    from rims_rl.evaluation.cache import sha256_bytes

    content = spec.content
    if content is None:
        if not Path(spec.path).is_file():
            raise FileNotFoundError(f"checkpoint not found: {spec.path}")
        content = Path(spec.path).read_bytes()
    if sha256_bytes(content) != digest:
        raise ValueError(f"checkpoint {spec.path} changed while it was being evaluated")
    return load_model(replace(spec, content=content), device=device)


def _agent_facts(model: Any) -> dict[str, Any]:
    """
    :param model: a loaded model
    :return: what the result needs from it: its core's name and size (plain data)
    """
    info = core_info(model)
    facts: dict[str, Any] = {"core": getattr(model.policy, "core_name", None), "core_info": None}
    if info is not None:
        facts["core_info"] = {k: v for k, v in asdict(info).items() if k != "core"}
    return facts


def _run_task(task: _Task, models: dict[Any, Any]) -> dict[str, Any]:
    """Play a task's units, one evaluation seed after another.

    :param task: the task
    :param models: the last loaded model, by (agent index, sha256); reused by the next task of the same agent
    :return: ``{"episodes": {seed: plain episodes}, "agent": facts}``
    """
    from rims_rl.evaluation.cache import episodes_to_plain

    model, facts = None, {}
    if task.spec is not None:
        key = (task.index, task.digest)
        if key not in models:
            models.clear()  # one model at a time
            models[key] = _load_checked(task.spec, task.digest, task.device)  # type: ignore[arg-type]
        model = models[key]
        facts = _agent_facts(model)
    episodes = {}
    for seed in task.seeds:
        eps = evaluate_seed(model, task.target, seed, task.n_envs, task.mode == "greedy", str(getattr(task.spec, "path", "")),
                            task.options)  # fmt: skip
        episodes[seed] = episodes_to_plain(eps)
    return {"episodes": episodes, "agent": facts}


_WORKER_MODELS: dict[Any, Any] = {}
"""A worker process's last loaded model (see :func:`_run_task`)."""


def _worker_init() -> None:
    """Start of a worker process: one torch thread; Ctrl-C is the parent's to handle (it stops the workers); on Linux
    the worker is killed when the parent dies (no orphan plays on)."""
    import signal
    import sys

    import torch as th

    th.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        parent = os.getppid()
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)


def _worker_run(task: _Task) -> dict[str, Any]:
    """Run one task in a worker process.

    :param task: the task (its checkpoint by path and sha256)
    :return: its result, or ``{"error": {"kind", "type", "message"}}`` (plain data, no traceback)
    """
    try:
        return _run_task(task, _WORKER_MODELS)
    except Exception as error:  # reported to the parent as data, re-raised there as the same kind of error
        from rims_rl.envs.settings import SettingsError

        kinds = ((FileNotFoundError, "file"), (KeyError, "key"), (SettingsError, "settings"), (ValueError, "value"))
        kind = next((name for cls, name in kinds if isinstance(error, cls)), "other")
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        return {"error": {"kind": kind, "type": type(error).__name__, "message": str(message)}}


def _raise_worker_error(error: dict[str, Any]) -> None:
    """Raise a worker's error in the parent as the kind of error the serial evaluator raises (the CLI's exit codes).

    :param error: the ``"error"`` of a worker's result
    :raises EvaluationWorkerError: an error of another kind
    """
    from rims_rl.envs.settings import SettingsError

    kind, message = error.get("kind"), str(error.get("message"))
    if kind == "file":
        raise FileNotFoundError(message)
    if kind == "key":
        raise KeyError(message)
    if kind == "settings":
        raise SettingsError(message)
    if kind == "value":
        raise ValueError(message)
    raise EvaluationWorkerError(f"an evaluation worker failed: {error.get('type')}: {message}")


def _run_pool(
    tasks: list[_Task], jobs: int, log: Callable[[str], Any] | None, finished: Callable[[_Task, dict[str, Any]], None]
) -> None:
    """Run tasks in ``jobs`` spawned worker processes (one torch thread each).

    :param tasks: the tasks
    :param jobs: worker processes
    :param log: progress printer
    :param finished: called (in this process) with each task and its result as soon as it is done
    :raises EvaluationWorkerError: a worker died; other errors as :func:`_raise_worker_error`
    """
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    sent = [_without_content(t) for t in tasks]  # workers read and check the bytes themselves
    executor = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)
    clean = False
    try:
        pending: dict[Future[dict[str, Any]], int] = {executor.submit(_worker_run, t): i for i, t in enumerate(sent)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                i = pending.pop(future)
                try:
                    out = future.result()
                except BrokenProcessPool:
                    raise EvaluationWorkerError(
                        "an evaluation worker process exited unexpectedly (killed, out of memory, or a script that "
                        "starts workers without an `if __name__ == '__main__':` guard)"
                    ) from None
                if "error" in out:
                    _raise_worker_error(out["error"])
                finished(tasks[i], out)
                if log:
                    t = tasks[i]
                    who = "the uniform-random policy" if t.spec is None else f"{t.spec.label} ({t.mode} actions)"
                    log(f"done: {who} on {t.target.label}, {len(t.seeds)} seed(s)")
        clean = True
    finally:
        if not clean:  # an error or Ctrl-C: stop the workers now rather than after their running tasks
            for process in list((getattr(executor, "_processes", None) or {}).values()):
                process.terminate()
        executor.shutdown(wait=True, cancel_futures=True)


def _without_content(task: _Task) -> _Task:
    """:return: the task without the checkpoint's bytes (a worker reads the file and checks its sha256)"""
    return task if task.spec is None else replace(task, spec=replace(task.spec, content=None))


def _options_identity(options: EnvOptions | None) -> dict[str, Any] | None:
    """:return: the env options as plain data for the cache key (the VecNormalize statistics by their sha256)"""
    if options is None:
        return None
    from rims_rl.evaluation.cache import sha256_file

    path = options.vecnormalize_path
    return {
        "frame_stack": options.frame_stack,
        "env_kwargs": options.env_kwargs,
        "normalize_kwargs": options.normalize_kwargs,
        "vecnormalize_sha256": sha256_file(path) if options.normalize_kwargs is not None and path is not None else None,
    }


def _unit_key(task: _Task, seed: int, versions: dict[str, str], options: dict[str, Any] | None) -> dict[str, Any] | None:
    """:return: the cache key of one unit (plain JSON data), or None for a target whose env factory has no identity"""
    import json

    from rims_rl.evaluation.cache import CACHE_VERSION

    identity = getattr(task.target.make_env, "identity", None)
    if identity is None:
        return None
    t = task.target
    key = {
        "version": CACHE_VERSION,
        "software": versions,
        "checkpoint_sha256": task.digest,
        "mode": task.mode,
        "target": {"label": t.label, "env_id": t.env_id, "env": identity(), "seed": seed, "n_episodes": t.n_episodes},
        "n_envs": task.n_envs,
        "env_options": options,
        "device": task.device,
    }
    return json.loads(json.dumps(key, default=str))  # as it reads back from a file


def evaluate(
    agents: Sequence[AgentSpec],
    targets: Sequence[EvalTarget],
    n_envs: int = 1,
    actions: str = "both",
    random_baseline: bool = True,
    device: str = "cpu",
    log: Callable[[str], Any] | None = None,
    env_options: Mapping[str, EnvOptions] | None = None,
    jobs: int | None = 1,
    cache_dir: str | Path | None = None,
) -> EvaluationResult:
    """Evaluate every agent (under each action mode) and the random baseline on every target.

    The work is split into units (agent x action mode x target x evaluation seed; random baseline x target x seed),
    each seeding the global RNGs from its evaluation seed (:func:`evaluate_seed`), so a unit's episodes do not depend
    on the order of evaluation, on the process it runs in, or on ``jobs``.

    :param agents: checkpoints to evaluate
    :param targets: evaluation envs
    :param n_envs: parallel envs per evaluation
    :param actions: "both" (sampled and greedy, on the same env seeds), "sampled" or "greedy"
    :param random_baseline: also play the uniform-random policy
    :param device: torch device for the models
    :param log: progress printer
    :param env_options: agent label -> how its training envs were built (run folders); others: the targets' defaults
    :param jobs: worker processes (spawned, one torch thread each) for the units not in the cache; None: one per CPU,
        at most one per task (agent x action mode x target); 1: in this process
    :param cache_dir: folder of the episode cache (:mod:`rims_rl.evaluation.cache`); None: no cache
    :return: all episodes
    :raises EvaluationWorkerError: a worker process died or failed with an unexpected error
    """
    from rims_rl.evaluation.cache import EpisodeCache, episodes_from_plain

    if actions not in ACTION_MODES:
        raise ValueError(f"unknown action mode {actions!r}; allowed: {', '.join(ACTION_MODES)}")
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be >= 1 (got {jobs})")
    modes = ACTION_MODES[actions]
    result = EvaluationResult(list(targets), list(agents), {m: {} for m in modes}, actions=modes)
    tasks = []
    for i, spec in enumerate(agents):
        digest, options = checkpoint_digest(spec), (env_options or {}).get(spec.label)
        tasks += [_Task(i, spec, digest, m, t, list(t.seeds), n_envs, options, device) for m in modes for t in targets]
    if random_baseline:
        tasks += [_Task(-1, None, None, "random", t, list(t.seeds), n_envs, None, device) for t in targets]
    cache = EpisodeCache(cache_dir) if cache_dir is not None else None
    todo, done, facts, keys = _look_up(tasks, cache, log)

    def finished(task: _Task, out: dict[str, Any]) -> None:  # kept (and cached) as soon as a task is done
        if task.index >= 0:
            facts[task.index] = out["agent"]
        for seed, plain in out["episodes"].items():
            unit = (task.index, task.mode, task.target.label, int(seed))
            done[unit] = episodes_from_plain(plain)
            if cache is not None and unit in keys:
                cache.put(keys[unit], done[unit], out["agent"])

    _execute(todo, jobs, log, finished)
    _assemble(result, done, facts, device)
    return result


def _assemble(result: EvaluationResult, done: dict[_Unit, Episodes], facts: dict[int, dict[str, Any]], device: str) -> None:
    """Fill ``result`` with every unit's episodes (seed after seed) and the agents' cores.

    :param result: the result, with its agents, targets and action modes
    :param done: every unit's episodes
    :param facts: agent index -> core name and size read from its model
    :param device: torch device (to load an agent that played no unit)
    """
    for i, spec in enumerate(result.agents):
        if i not in facts:  # no unit at all (no targets): read the core from the model itself
            facts[i] = _agent_facts(_load_checked(spec, checkpoint_digest(spec), device))
        if spec.core is None:
            spec.core = facts[i].get("core") or "lstm"
        if facts[i].get("core_info") is not None:
            result.cores[spec.label] = CoreInfo(spec.core, **facts[i]["core_info"])
        for mode in result.actions:
            result.episodes[mode][spec.label] = {
                t.label: Episodes.concat([done[(i, mode, t.label, s)] for s in t.seeds]) for t in result.targets
            }
    for t in result.targets:
        if t.seeds and all((-1, "random", t.label, s) in done for s in t.seeds):
            result.random[t.label] = Episodes.concat([done[(-1, "random", t.label, s)] for s in t.seeds])


_Unit = tuple[int, str, str, int]
"""(agent index or -1, action mode, target label, evaluation seed)"""


def _look_up(
    tasks: list[_Task], cache: Any, log: Callable[[str], Any] | None
) -> tuple[list[_Task], dict[_Unit, Episodes], dict[int, dict[str, Any]], dict[_Unit, dict[str, Any]]]:
    """Find the tasks' units in the episode cache.

    :param tasks: every task
    :param cache: the :class:`~rims_rl.evaluation.cache.EpisodeCache`, or None
    :param log: progress printer
    :return: the tasks left to run (their seeds: the units not found), the episodes found, the agent facts found (by
        agent index), and the cache keys of the units left to run
    """
    from rims_rl.evaluation.cache import software_versions

    done: dict[_Unit, Episodes] = {}
    facts: dict[int, dict[str, Any]] = {}
    keys: dict[_Unit, dict[str, Any]] = {}
    if cache is None:
        return tasks, done, facts, keys
    versions, todo = software_versions(), []
    options_ids = {id(t.options): _options_identity(t.options) for t in tasks}
    for task in tasks:
        missing = []
        for seed in task.seeds:
            unit = (task.index, task.mode, task.target.label, seed)
            key = _unit_key(task, seed, versions, options_ids[id(task.options)])
            entry = cache.get(key) if key is not None else None
            if entry is None:
                missing.append(seed)
                if key is not None:
                    keys[unit] = key
            else:
                done[unit] = entry[0]
                if task.index >= 0:
                    facts.setdefault(task.index, entry[1])
        if missing:
            todo.append(replace(task, seeds=missing))
    if log:
        n_units = sum(len(t.seeds) for t in tasks)
        log(f"episode cache {cache.folder}: {len(done)} of {n_units} unit(s) found, {n_units - len(done)} to evaluate")
    return todo, done, facts, keys


def _execute(
    todo: list[_Task], jobs: int | None, log: Callable[[str], Any] | None, finished: Callable[[_Task, dict[str, Any]], None]
) -> None:
    """Run the tasks, in this process or in worker processes.

    :param todo: the tasks
    :param jobs: worker processes (None: one per CPU); at most one per task; 1: in this process
    :param log: progress printer
    :param finished: called with each task and its result as soon as it is done
    """
    workers = min(jobs or os.cpu_count() or 1, len(todo))
    if workers > 1 and not _sendable(todo):
        if log:
            log("some target's env factory cannot be sent to a worker process: evaluating in this process")
        workers = 1
    if workers > 1:
        if log:
            log(f"evaluating {sum(len(t.seeds) for t in todo)} unit(s) in {workers} worker processes")
        _run_pool(todo, workers, log, finished)
        return
    models: dict[Any, Any] = {}
    for task in todo:
        if log:
            if task.spec is None:
                log(f"evaluating the uniform-random policy on {task.target.label}")
            else:
                log(f"evaluating {task.spec.label} ({task.spec.core or 'core from the model'}, {task.mode} actions) on "
                    f"{task.target.label}: {len(task.seeds)} seed(s) x {task.target.n_episodes} episodes")  # fmt: skip
        finished(task, _run_task(task, models))
    models.clear()


def _sendable(tasks: list[_Task]) -> bool:
    """:return: whether every task's target can be sent to a worker process (its env factory is not a closure)"""
    import pickle

    try:
        for task in tasks:
            pickle.dumps(_without_content(task))
    except Exception:  # a lambda or local function cannot be sent: such targets are evaluated in this process
        return False
    return True
