"""``rims-train`` / ``python train.py``: train RIMs-PPO or LSTM-PPO (one trainer, RecurrentPPO; only the core differs).

Run folders follow rl-baselines3-zoo: ``<log-folder>/<algo>/<env>_<n>/`` with config.yml, args.yml, command.txt,
checkpoints/, best_model.zip, ``<env>.zip`` (final model), evaluations.npz and TensorBoard events (tb_1/).
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import shlex
import shutil
import signal
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rims_rl.cli.args import CliError, HelpFormatter, OneLineParser, non_negative_int, positive_int
from rims_rl.config import ALGOS, AgentConfig, ConfigError, load_agent_config, parse_override, yaml_error_line

DEFAULT_SETTING = "gridworld-pickup"
#: The default budget, in one place: without ``--env`` (the default setting) and without ``-n``, a short run that
#: shows the whole pipeline on 2 CPU cores (``python train.py`` and ``python train.py --seed 1`` differ only in the
#: seed). With ``--env`` the budget is the ``n_timesteps`` of ``agents/<algo>.yml``; ``-n`` always wins.
QUICK_START = {"n_timesteps": 30_000, "eval_freq": 10_000, "save_freq": 10_000}


def _policy_classes() -> dict[str, Any]:
    """:return: whitelist of policy names -> classes (no name is ever evaluated)."""
    from rims_rl.policies import CnnRimsPolicy, MlpRimsPolicy, MultiInputRimsPolicy

    return {"MlpRimsPolicy": MlpRimsPolicy, "CnnRimsPolicy": CnnRimsPolicy, "MultiInputRimsPolicy": MultiInputRimsPolicy}


def _features_extractors() -> dict[str, Any]:
    """:return: whitelist of features extractor names -> classes."""
    from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor, NatureCNN

    from rims_rl.torch_layers import MinAtarCNN, MiniGridCNN

    return {"NatureCNN": NatureCNN, "MiniGridCNN": MiniGridCNN, "MinAtarCNN": MinAtarCNN, "FlattenExtractor": FlattenExtractor,
            "CombinedExtractor": CombinedExtractor}  # fmt: skip


def _activations() -> dict[str, Any]:
    """:return: whitelist of activation names -> torch classes."""
    from torch import nn

    return {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU}


def build_policy(config: AgentConfig, algo: str) -> tuple[Any, dict[str, Any]]:
    """
    :param config: hyperparameters
    :param algo: ``rims_ppo`` or ``lstm_ppo`` (sets the core)
    :return: (policy class, policy_kwargs)
    """
    policies = _policy_classes()
    if config.policy not in policies:
        raise ConfigError(f"unknown policy {config.policy!r}; valid: {', '.join(policies)}")
    pk = config.policy_kwargs
    kwargs: dict[str, Any] = {"core": ALGOS[algo], "core_kwargs": dict(pk.core_kwargs)}
    if pk.features_extractor is not None:
        extractors = _features_extractors()
        if pk.features_extractor not in extractors:
            raise ConfigError(f"unknown features_extractor {pk.features_extractor!r}; valid: {', '.join(extractors)}")
        kwargs["features_extractor_class"] = extractors[pk.features_extractor]
        kwargs["features_extractor_kwargs"] = dict(pk.features_extractor_kwargs)
    if pk.activation_fn is not None:
        activations = _activations()
        if pk.activation_fn not in activations:
            raise ConfigError(f"unknown activation_fn {pk.activation_fn!r}; valid: {', '.join(activations)}")
        kwargs["activation_fn"] = activations[pk.activation_fn]
    for name in ("net_arch", "ortho_init", "shared_core", "enable_critic_lstm", "share_features_extractor",
                 "normalize_images"):  # fmt: skip
        value = getattr(pk, name)
        if value is not None:
            kwargs[name] = value
    return policies[config.policy], kwargs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """
    :param argv: command-line arguments (None: ``sys.argv[1:]``)
    :return: parsed arguments
    """
    quick = QUICK_START
    parser = OneLineParser(
        prog="rims-train",
        description="Train RIMs-PPO or LSTM-PPO (RecurrentPPO; only the recurrent core differs). With no arguments: "
        f"RIMs-PPO on {DEFAULT_SETTING} for {quick['n_timesteps']:,} steps (a quick start; a full run is "
        f"--env {DEFAULT_SETTING}, whose budget agents/rims_ppo.yml sets).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--algo", default="rims_ppo", choices=list(ALGOS), help="rims_ppo: RIMs core; lstm_ppo: LSTM core")
    parser.add_argument("--env", default=None,
                        help=f"env id or setting name (default: {DEFAULT_SETTING}, quick-start budget)")  # fmt: skip
    parser.add_argument("-n", "--n-timesteps", type=positive_int, default=None,
                        help=f"total timesteps (default: {quick['n_timesteps']:,} without --env, else n_timesteps of "
                             "agents/<algo>.yml)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("-f", "--log-folder", default="logs", help="root of the run folders")
    parser.add_argument("--eval-freq", type=int, default=None,
                        help=f"evaluate every N timesteps; <= 0: never (default: {quick['eval_freq']:,} without --env, "
                             "else a twentieth of the budget)")  # fmt: skip
    parser.add_argument("--eval-episodes", type=positive_int, default=10, help="episodes per evaluation")
    parser.add_argument("--heldout-episodes", type=non_negative_int, default=None,
                        help="episodes per split of the held-out summary printed after training (default: the setting's "
                             "n_eval_episodes, at most 20; Atari settings: 0, use evaluate.py); 0: no summary")  # fmt: skip
    parser.add_argument("--save-freq", type=int, default=None,
                        help=f"checkpoint every N timesteps; <= 0: only at the end (default: {quick['save_freq']:,} "
                             "without --env, else a twentieth of the budget)")  # fmt: skip
    parser.add_argument("--tensorboard-log", default=None, help="TensorBoard root (default: inside the run folder)")
    parser.add_argument("-params", "--hyperparams", nargs="+", default=[], metavar="KEY:VALUE",
                        help="override hyperparameters, values as YAML; dotted keys reach nested ones, e.g. "
                             "learning_rate:lin_3e-4 policy_kwargs.core_kwargs.k_active:3")  # fmt: skip
    parser.add_argument("--device", default="auto", help="torch device (auto, cpu, cuda)")
    parser.add_argument(
        "--num-threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: fastest for small models on a busy CPU; <= 0: torch's)",
    )
    parser.add_argument("--vec-env", choices=["dummy", "subproc", "envpool"], default="dummy", help="VecEnv class")
    parser.add_argument("--n-envs", type=positive_int, default=None,
                        help="parallel envs (default: n_envs of agents/<algo>.yml)")  # fmt: skip
    parser.add_argument("-i", "--trained-agent", default=None,
                        help="start from this checkpoint's weights (also for game transfer; spaces must match)")  # fmt: skip
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="RUN_OR_CHECKPOINT",
                        help="continue an interrupted run exactly: a run folder, a checkpoint, or (no value) the "
                             "latest run of --algo/--env")  # fmt: skip
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="let -i load an SB3/sb3-contrib zip that is not in rims_rl's safe format (it unpickles "
                             "Python objects, which can run code: only for files you trust)")  # fmt: skip
    parser.add_argument("--agents-dir", default=None, help="folder of the hyperparameter YAML files (default: agents/)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar")
    parser.add_argument("--verbose", type=int, default=1, help="0: quiet, 1: SB3 logs")
    return parser.parse_args(argv)


def _sanitize(env_id: str) -> str:
    """:return: ``env_id`` usable as a folder name (``ALE/Pong-v5`` -> ``ALE-Pong-v5``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", env_id)


def new_run_folder(log_folder: str, algo: str, env_id: str) -> Path:
    """
    :return: ``<log_folder>/<algo>/<env>_<n>`` with n one more than the largest existing (created here)
    """
    root = Path(log_folder) / algo
    root.mkdir(parents=True, exist_ok=True)
    prefix = _sanitize(env_id) + "_"
    ids = [int(p.name[len(prefix) :]) for p in root.iterdir() if p.name.startswith(prefix) and p.name[len(prefix) :].isdigit()]
    while True:  # mkdir without exist_ok: two concurrent runs never share a folder
        folder = root / f"{prefix}{max(ids, default=0) + 1}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            ids.append(max(ids, default=0) + 1)


def _os_error(error: OSError) -> str:
    """:return: an OSError in one line: its message and the file it names"""
    what = error.strerror or _first_line(error)
    return f"{what} ({error.filename})" if error.filename else what


def start_run_folder(log_folder: str, algo: str, env_id: str, config: AgentConfig, saved: dict[str, Any],
                     argv: list[str]) -> Path:  # fmt: skip
    """
    Create a new run folder and write its record (config.yml, args.yml, command.txt); a write that fails removes
    the folder again.

    :param log_folder: ``-f``
    :param algo: the run's algo
    :param env_id: the training env id
    :param config: the hyperparameters (config.yml)
    :param saved: the run's arguments (args.yml)
    :param argv: the raw arguments (command.txt)
    :return: the run folder
    :raises CliError: the folder or a file in it cannot be written
    """
    try:
        run_folder = new_run_folder(log_folder, algo, env_id)
    except OSError as error:
        raise CliError(f"cannot create a run folder under {log_folder}: {_os_error(error)}") from None
    try:
        _write_yaml(run_folder / "config.yml", config.to_dict())
        _write_yaml(run_folder / "args.yml", saved)
        (run_folder / "command.txt").write_text(shlex.join(["rims-train", *argv]) + "\n")
    except OSError as error:
        shutil.rmtree(run_folder, ignore_errors=True)
        raise CliError(f"cannot write the run folder {run_folder}: {_os_error(error)}") from None
    print(f"Run folder: {run_folder}", flush=True)
    return run_folder


def _write_yaml(path: Path, data: Any) -> None:
    from rims_rl.checkpoint import atomic_write

    with atomic_write(path) as file:
        file.write(yaml.safe_dump(data, sort_keys=False).encode())


def _resolve_env(name: str | None) -> tuple[Any, str]:
    """
    :param name: env id or setting name (None: the default setting)
    :return: (setting or None, training env id)
    """
    from rims_rl.envs.vec import resolve

    try:
        setting, entry = resolve(name or DEFAULT_SETTING)
    except ValueError as error:
        raise CliError(str(error).splitlines()[0]) from None
    return setting, entry.id


def _check_vec_env(env: str, vec_env: str) -> None:
    """:raises CliError: when ``--vec-env`` cannot build ``env`` (envpool: ALE games only, package installed)"""
    from rims_rl.envs.vec import check_vec_env

    try:
        check_vec_env(env, vec_env)
    except ValueError as error:
        raise CliError(str(error).splitlines()[0]) from None


def make_training_env(env: str, config: AgentConfig, n_envs: int, seed: int, vec_env: str) -> Any:
    """
    :param env: env id or setting name
    :param config: hyperparameters (frame_stack, normalize, env_kwargs)
    :param n_envs: number of envs
    :param seed: base seed
    :param vec_env: ``dummy`` or ``subproc``
    :return: the training VecEnv (monitored; VecNormalize if ``config.normalize``)
    """
    from stable_baselines3.common.vec_env import VecNormalize

    from rims_rl.envs.vec import make_vec_env

    venv = make_vec_env(env, n_envs=n_envs, seed=seed, training=True, vec_env_cls=vec_env,  # type: ignore[arg-type]
                        frame_stack=config.frame_stack, env_kwargs=config.env_kwargs or None)  # fmt: skip
    if config.normalize:
        venv = VecNormalize(venv, **config.normalize_kwargs)
    from rims_rl.envs.replay import attach_recorders

    return attach_recorders(venv)  # exact resume: the envs' episodes can be rebuilt without pickling


def make_evaluation_env(env: str, config: AgentConfig, split: str = "train", seed: int | None = None) -> Any:
    """
    :return: a one-env evaluation VecEnv (true scores), wrapped like the training env
    """
    from stable_baselines3.common.vec_env import VecNormalize

    from rims_rl.envs.vec import make_eval_vec_env

    venv = make_eval_vec_env(env, split=split, n_envs=1, seed=seed, frame_stack=config.frame_stack,
                             env_kwargs=config.env_kwargs or None)  # fmt: skip
    if config.normalize:
        venv = VecNormalize(venv, training=False, norm_reward=False, **{k: v for k, v in config.normalize_kwargs.items()
                                                                        if k not in ("training", "norm_reward")})  # fmt: skip
    return venv


def _find_resume_checkpoint(args: argparse.Namespace) -> tuple[Path, Path]:
    """
    :return: (run folder, checkpoint) for ``--resume``; with no value, the newest run of --algo/--env that has a
        complete checkpoint (runs that failed before their first checkpoint are skipped)
    """
    from rims_rl.checkpoint import CHECKPOINT_RE, checkpoint_problem, latest_checkpoint

    target = Path(args.resume)
    if args.resume == "latest":
        _, env_id = _resolve_env(args.env)
        root = Path(args.log_folder) / args.algo
        prefix = _sanitize(env_id) + "_"
        runs = sorted(
            (int(p.name[len(prefix) :]), p) for p in root.glob(prefix + "*") if p.name[len(prefix) :].isdigit()
        ) if root.is_dir() else []  # fmt: skip
        for _, run in reversed(runs):
            checkpoint = latest_checkpoint(run / "checkpoints") if (run / "config.yml").is_file() else None
            if checkpoint is not None:
                return run, checkpoint
        raise CliError(f"--resume: no run of {args.algo} on {env_id} with a complete checkpoint under {root}")
    if target.is_file():
        run = target.parent.parent
        if target.parent.name != "checkpoints" or not CHECKPOINT_RE.match(target.name) or not (run / "config.yml").is_file():
            raise CliError(f"--resume: {target} is not a checkpoint of a run folder (RUN/checkpoints/rl_model_<n>_steps.zip)")
        problem = checkpoint_problem(target)
        if problem is not None:
            raise CliError(f"--resume: cannot resume from {target}: {problem} (--resume {run} takes the newest good one)")
        return run, target
    if not (target / "config.yml").is_file():
        raise CliError(f"--resume: {target} is neither a run folder (with config.yml) nor a checkpoint file")
    checkpoint = latest_checkpoint(target / "checkpoints")
    if checkpoint is None:
        raise CliError(f"--resume: no complete checkpoint in {target / 'checkpoints'}")
    return target, checkpoint


#: The errors of a write that fails for want of space or permission (a training run stops with one line).
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO}

#: The keys of a run folder's args.yml that ``--resume`` uses, with their types.
RUN_RECORD = {"env": str, "algo": str, "seed": int, "n_envs": int, "n_timesteps": int, "vec_env": str, "eval_freq": int,
              "save_freq": int, "eval_episodes": int}  # fmt: skip


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    """:raises CliError: ``path`` is unreadable, not YAML or not a mapping"""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise CliError(f"--resume: {yaml_error_line(error, path)}") from None
    except (OSError, UnicodeDecodeError, RecursionError) as error:
        raise CliError(f"--resume: cannot read {path}: {_first_line(error)}") from None
    if not isinstance(data, dict):
        raise CliError(f"--resume: {path} is not a mapping (a run folder's record, written by rims-train)")
    return data


def read_run_record(run_folder: Path) -> tuple[dict[str, Any], AgentConfig]:
    """
    :param run_folder: a run folder being resumed
    :return: (its args.yml, its config.yml as hyperparameters), both checked
    :raises CliError: a file is unreadable, not YAML, lacks a key or holds a value out of range
    """
    from rims_rl.config import _build

    path = run_folder / "args.yml"
    saved = _read_yaml_mapping(path)
    for key, kind in RUN_RECORD.items():
        value = saved.get(key)
        if key not in saved:
            raise CliError(f"--resume: {path} lacks {key!r} (not a complete run record)")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CliError(f"--resume: {path}: {key!r} must be of type {kind.__name__}, got {value!r}")
    if saved["algo"] not in ALGOS or saved["vec_env"] not in ("dummy", "subproc", "envpool"):
        raise CliError(f"--resume: {path}: unknown algo {saved['algo']!r} or vec_env {saved['vec_env']!r}")
    for key in ("n_envs", "n_timesteps", "eval_episodes"):
        if saved[key] < 1:
            raise CliError(f"--resume: {path}: {key!r} must be positive, got {saved[key]}")
    config_path = run_folder / "config.yml"
    try:
        config = _build(AgentConfig, _read_yaml_mapping(config_path), str(config_path))
        config.validate(str(config_path))
    except ConfigError as error:
        raise CliError(f"--resume: {error}") from None
    return saved, config


def check_device(name: str) -> None:
    """
    :param name: ``--device``
    :raises CliError: not a torch device, or one this machine lacks (torch would otherwise fall back to the CPU
        silently or fail after the run folder exists)
    """
    import torch as th

    valid = "auto, cpu, cuda, cuda:<index>, mps"
    if name == "auto":
        return
    try:
        device = th.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise CliError(f"--device {name!r} is not a torch device; valid: {valid}") from None
    if device.type == "cpu":
        return
    if device.type == "cuda":
        if not th.cuda.is_available():
            raise CliError(f"--device {name}: CUDA is not available on this machine (torch {th.__version__}); use "
                           "--device cpu or auto")  # fmt: skip
        if device.index is not None and device.index >= th.cuda.device_count():
            raise CliError(f"--device {name}: this machine has {th.cuda.device_count()} CUDA device(s)")
        return
    if device.type == "mps" and th.backends.mps.is_available():
        return
    raise CliError(f"--device {name}: not available on this machine; valid: {valid}")


def read_trained_agent(path: str, env: Any, policy: Any, trust_remote_code: bool = False) -> dict[str, Any]:
    """
    Read ``-i``'s checkpoint and check that its weights fit the new run (the spaces and the policy architecture).

    :param path: checkpoint zip (rims_rl's safe format; an SB3 zip only with ``trust_remote_code``)
    :param env: the training env as the model will see it (wrapped)
    :param policy: a policy built as the model's will be
    :param trust_remote_code: allow an SB3 zip (unpickles)
    :return: the policy's state dict, for the model once it is built (a fresh optimizer)
    :raises CliError: the file is missing, refused, unreadable or does not fit
    """
    from rims_rl.safe_io import UnsafeCheckpointError, load_model

    if not os.path.isfile(path):
        raise CliError(f"--trained-agent: no such file {path}")
    try:
        source = load_model(path, device="cpu", trust_remote_code=trust_remote_code)
    except UnsafeCheckpointError as error:
        raise CliError(f"--trained-agent: refusing {path}: {_first_line(error)}") from None
    except Exception as error:
        raise CliError(f"--trained-agent: cannot read {path}: {_first_line(error)}") from None
    for name in ("observation_space", "action_space"):
        if getattr(source, name) != getattr(env, name):
            saved, wanted = getattr(source, name), getattr(env, name)
            raise CliError(f"--trained-agent: {name} differs: checkpoint {saved} vs env {wanted}")
    state: dict[str, Any] = source.policy.state_dict()
    try:
        policy.load_state_dict(state)
    except RuntimeError as error:
        raise CliError(f"--trained-agent: policy architecture differs: {_first_line(error)}") from None
    return state


def _first_line(error: BaseException) -> str:
    """:return: the first non-empty line of an exception's message (its type name when empty)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _check_log_folder(log_folder: str, algo: str) -> None:
    """
    :param log_folder: ``-f`` (need not exist yet)
    :param algo: the algo sub-folder the run folder goes into
    :raises CliError: the folder (or the first existing folder above it) is a file or not writable
    """
    probe = Path(log_folder) / algo
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise CliError(f"-f/--log-folder {log_folder}: {probe} exists and is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise CliError(f"-f/--log-folder {log_folder}: {probe} is not writable")


def validate_run(
    args: argparse.Namespace, config: AgentConfig, algo: str, env_name: str, env_id: str, section: str
) -> dict[str, Any] | None:
    """
    Check a new run's whole configuration before its run folder is created: value ranges, the log folder, the
    initial weights file, one env built exactly as training builds it (env_kwargs, frame stack, VecNormalize) and
    the policy (with its recurrent core) built once on that env's real spaces, and ``-i``'s weights loaded into it.

    :param args: parsed arguments
    :param config: hyperparameters, budget and n_envs already resolved
    :param algo: ``rims_ppo`` or ``lstm_ppo``
    :param env_name: env id or setting name as given
    :param env_id: the training env id
    :param section: the section of ``agents/<algo>.yml`` used
    :return: ``-i``'s policy weights (None without ``-i``)
    :raises CliError: or ConfigError, one line naming the mistake
    """
    import gymnasium as gym

    where = f"{algo}.yml[{section}]"
    config.validate(where)
    _check_log_folder(args.log_folder, algo)
    if args.trained_agent is not None and not os.path.isfile(args.trained_agent):
        raise CliError(f"--trained-agent: no such file {args.trained_agent}")
    policy_class, policy_kwargs = build_policy(config, algo)
    user_errors = (TypeError, ValueError, AssertionError, KeyError, gym.error.Error)
    from stable_baselines3.common.base_class import BaseAlgorithm

    try:
        # as RecurrentPPO will see it: channel-last images transposed (VecTransposeImage)
        env = BaseAlgorithm._wrap_env(make_training_env(env_name, config, 1, args.seed, "dummy"), verbose=0)
    except user_errors as error:
        given = f" with env_kwargs {config.env_kwargs}" if config.env_kwargs else ""
        raise CliError(f"cannot build env {env_id}{given} ({where}): {_first_line(error)}") from None
    try:
        try:
            policy = policy_class(env.observation_space, env.action_space, lambda _: 1e-3, **policy_kwargs)
        except (*user_errors, RuntimeError) as error:
            core_kwargs = config.policy_kwargs.core_kwargs
            raise CliError(f"invalid policy for {env_id} ({where}, core {ALGOS[algo]!r}, core_kwargs {core_kwargs}): "
                           f"{_first_line(error)}") from None  # fmt: skip
        if args.trained_agent is None:
            return None
        return read_trained_agent(args.trained_agent, env, policy, args.trust_remote_code)
    finally:
        env.close()


def _overrides_budget(args: argparse.Namespace) -> bool:
    """:return: whether ``-params n_timesteps:N`` sets the budget (then it is used, as ``-n N`` would be)"""
    return any(item.partition(":")[0].strip() == "n_timesteps" for item in args.hyperparams)


def resolve_budget(args: argparse.Namespace, config: AgentConfig) -> tuple[int, int, int, int]:
    """
    The budget of a new run, decided here only: without ``--env`` the quick start (:data:`QUICK_START`), whatever
    other options are given (``--seed 1`` changes only the seed); with ``--env`` the YAML's; ``-n`` (or
    ``-params n_timesteps:N``), ``--n-envs``, ``--eval-freq``, ``--save-freq`` always win.

    :param args: parsed arguments
    :param config: the hyperparameters read for the env
    :return: (n_timesteps, n_envs, eval_freq, save_freq)
    """
    quick = args.env is None and not _overrides_budget(args)
    n_timesteps = args.n_timesteps or (QUICK_START["n_timesteps"] if quick else config.n_timesteps)
    n_envs = args.n_envs or config.n_envs
    default_freq = max(n_timesteps // 20, n_envs * config.n_steps)
    eval_freq = args.eval_freq if args.eval_freq is not None else (QUICK_START["eval_freq"] if quick else default_freq)
    save_freq = args.save_freq if args.save_freq is not None else (QUICK_START["save_freq"] if quick else default_freq)
    return n_timesteps, n_envs, eval_freq, save_freq


def plan_line(algo: str, env_name: str, env_id: str, config: AgentConfig, seed: int, eval_freq: int, save_freq: int,
              quick: bool, yaml_budget: int) -> str:  # fmt: skip
    """
    :return: what a new run will do, printed before it starts (budget first)
    """
    budget = f"{config.n_timesteps:,} timesteps"
    if quick:
        budget += f" (quick start; the full budget of agents/{algo}.yml is {yaml_budget:,}: add --env {env_name} or -n)"
    target = env_name if env_name == env_id else f"{env_name} ({env_id})"
    evaluation = f"evaluation every {eval_freq:,} steps" if eval_freq > 0 else "no periodic evaluation"
    checkpoints = f"checkpoints every {save_freq:,} steps" if save_freq > 0 else "a checkpoint at the end"
    rollout = config.n_envs * config.n_steps
    minibatch = (f" (batch_size {config.batch_size:,} is more than a rollout: each epoch is one minibatch of {rollout:,})"
                 if config.batch_size > rollout else "")  # fmt: skip
    return (f"Training {algo} ({ALGOS[algo]} core) on {target} for {budget}; {config.n_envs} envs x {config.n_steps} "
            f"steps per rollout{minibatch}, seed {seed}; {evaluation}, {checkpoints}.")  # fmt: skip


#: One split's summary after training: agent mean return, std, success rate; the uniform-random policy's mean
#: return and success rate (success rates: None where the setting has no success notion).
SplitSummary = tuple[float, float, float | None, float, float | None]


def _success_rate(setting: Any, returns: np.ndarray) -> float | None:
    """
    :param setting: the env setting
    :param returns: episode returns, shape (n_episodes,)
    :return: the fraction of successful episodes; gridworld pick-up: a positive return (picking up the target is
        the only reward, at least 0.1); None for settings without a success notion
    """
    if setting.kind != "gridworld":
        return None
    return float(np.mean(returns > 0))


def evaluate_heldout(model: Any, setting: Any, config: AgentConfig, n_episodes: int) -> dict[str, SplitSummary]:
    """
    Evaluate on every split of the setting, carrying the recurrent state (stochastic actions, as rl-zoo does), and
    the uniform-random policy on the same episodes (same seeds).

    :return: split -> (mean return, std return, success rate, random mean return, random success rate)
    """
    from rims_rl.evaluation.rollout import UniformRandomAgent, run_episodes

    summary = {}
    for split in setting.splits:
        env = make_evaluation_env(setting.name, config, split=split)
        if config.normalize:
            from stable_baselines3.common.vec_env import sync_envs_normalization

            sync_envs_normalization(model.get_env(), env)
        episodes = run_episodes(model, env, n_episodes, deterministic=False)
        env.close()
        env = make_evaluation_env(setting.name, config, split=split)
        random = run_episodes(UniformRandomAgent(env.action_space, env.num_envs, seed=setting.eval_seeds[split]), env,
                              n_episodes)  # fmt: skip
        env.close()
        summary[split] = (float(np.mean(episodes.returns)), float(np.std(episodes.returns)),
                          _success_rate(setting, episodes.returns), float(np.mean(random.returns)),
                          _success_rate(setting, random.returns))  # fmt: skip
    return summary


def print_summary(summary: dict[str, SplitSummary], setting: Any, n_episodes: int) -> None:
    """
    Print the end-of-run table: each split's mean return and success rate beside the uniform-random policy's.

    :param summary: from :func:`evaluate_heldout`
    :param setting: the env setting
    :param n_episodes: episodes per split
    """
    print(f"Evaluation on {setting.name} ({n_episodes} episodes per split, stochastic actions, state carried; "
          "random: uniform-random actions, same seeds):")  # fmt: skip
    has_success = any(row[2] is not None for row in summary.values())
    header = f"  {'split':<20} {'agent return':>18} {'random return':>14}"
    if has_success:
        header += f" {'agent success':>14} {'random success':>15}"
    print(header)
    for split, (mean, std, success, random_mean, random_success) in summary.items():
        line = f"  {split:<20} {mean:8.3f} +/- {std:5.3f} {random_mean:14.3f}"
        if has_success:
            line += f" {success or 0.0:14.0%} {random_success or 0.0:15.0%}"
        print(line)


def heldout_episodes(requested: int | None, setting: Any) -> int:
    """
    :param requested: ``--heldout-episodes`` (None: default)
    :param setting: the env setting (or None)
    :return: episodes per split for the summary after training; 0: none (default for Atari: an untrained agent's
        Atari episodes run for thousands of steps, too long for a summary on a CPU)
    """
    if requested is not None:
        return requested
    if setting is None or setting.kind.startswith("atari"):
        return 0
    return min(setting.n_eval_episodes, 20)


def train(args: argparse.Namespace, argv: list[str]) -> int:  # noqa: C901
    """
    :param args: parsed arguments
    :param argv: the raw arguments (for command.txt)
    :return: exit code
    """
    import torch as th
    from rims_rl.algos import RecurrentPPO
    from stable_baselines3.common.callbacks import CallbackList
    from stable_baselines3.common.utils import set_random_seed

    from rims_rl.callbacks import (
        ResumableCheckpointCallback,
        ResumableEvalCallback,
        RimsDiagnosticsCallback,
        SaveBestModelCallback,
        TrainingInterrupted,
        nonfinite_distribution,
    )
    from rims_rl.checkpoint import NonFiniteError, remove_tmp_files, resume_model, save_model_atomic

    if args.algo not in ALGOS:
        raise CliError(f"unknown algo {args.algo!r}; valid: {', '.join(ALGOS)}")
    if args.resume is not None and args.trained_agent is not None:
        raise CliError("--resume and --trained-agent cannot be combined")
    check_device(args.device)

    # Everything a user can get wrong is checked before anything is written (a new run: before its folder exists).
    resume_from: Path | None = None
    trained_weights: dict[str, Any] | None = None
    if args.resume is not None:
        run_folder, resume_from = _find_resume_checkpoint(args)
        saved, config = read_run_record(run_folder)
        env_name, algo, seed = saved["env"], saved["algo"], saved["seed"]
        n_envs, n_timesteps = saved["n_envs"], saved["n_timesteps"]
        vec_env = saved["vec_env"]
        eval_freq, save_freq, eval_episodes = saved["eval_freq"], saved["save_freq"], saved["eval_episodes"]
        if args.n_timesteps is not None:
            n_timesteps = args.n_timesteps  # extends the run; schedules then follow the new total
        setting, env_id = _resolve_env(env_name)
        done = int(resume_from.name.split("_")[2])
        if done >= n_timesteps and (run_folder / f"{_sanitize(env_id)}.zip").is_file():
            print(f"{run_folder} already finished ({done} of {n_timesteps} timesteps); nothing to do (a larger -n continues)")
            return 0
    else:
        algo = args.algo
        setting, env_id = _resolve_env(args.env)
        env_name = args.env or DEFAULT_SETTING
        overrides = dict(parse_override(item) for item in args.hyperparams)
        config, section = load_agent_config(algo, env_id, overrides, args.agents_dir)
        yaml_budget = config.n_timesteps
        n_timesteps, n_envs, eval_freq, save_freq = resolve_budget(args, config)
        config.n_timesteps, config.n_envs = n_timesteps, n_envs
        seed, vec_env, eval_episodes = args.seed, args.vec_env, args.eval_episodes
        quick = args.env is None and args.n_timesteps is None and not _overrides_budget(args)
        trained_weights = validate_run(args, config, algo, env_name, env_id, section)
        _check_vec_env(env_name, vec_env)
        print(plan_line(algo, env_name, env_id, config, seed, eval_freq, save_freq, quick, yaml_budget), flush=True)
        saved = dict(vars(args), algo=algo, env=env_name, env_id=env_id, seed=seed, n_envs=n_envs, n_timesteps=n_timesteps,
                     eval_freq=eval_freq, save_freq=save_freq, hyperparams_section=section,
                     setting=setting.name if setting is not None else None)  # fmt: skip
        run_folder = start_run_folder(args.log_folder, algo, env_id, config, saved, argv)

    if args.num_threads > 0:
        th.set_num_threads(args.num_threads)
    set_random_seed(seed)
    env = make_training_env(env_name, config, n_envs, seed, vec_env)
    policy_class, policy_kwargs = build_policy(config, algo)
    tb_root = args.tensorboard_log or str(run_folder)
    tb_name = "tb" if args.tensorboard_log is None else f"{_sanitize(env_id)}_{algo}_{run_folder.name.rsplit('_', 1)[-1]}"

    resume_state = None
    if resume_from is not None:
        from rims_rl.safe_io import UnsafeCheckpointError

        try:
            model, resume_state = resume_model(resume_from, env, device=args.device, tensorboard_log=tb_root)
        except (UnsafeCheckpointError, ValueError, OSError, KeyError, TypeError, RecursionError, zipfile.BadZipFile) as error:
            env.close()
            raise CliError(f"--resume: cannot load {resume_from}: {_first_line(error)}") from None
        # the checkpoint is usable: only now is anything in the run folder changed
        remove_tmp_files(run_folder)
        if n_timesteps > saved["n_timesteps"]:  # an extension: the run's record says what it is now trained for
            saved["n_timesteps"] = n_timesteps
            try:
                _write_yaml(run_folder / "args.yml", saved)
                with open(run_folder / "command.txt", "a") as file:
                    file.write(shlex.join(["rims-train", *argv]) + "\n")
            except OSError as error:
                env.close()
                raise CliError(f"--resume: cannot write in {run_folder}: {_os_error(error)}") from None
        print(f"Resuming {run_folder} from {resume_from}")
        remaining = n_timesteps - model.num_timesteps
        reset = False
    else:
        model = RecurrentPPO(policy_class, env, policy_kwargs=policy_kwargs, seed=seed, device=args.device,
                             tensorboard_log=tb_root, verbose=args.verbose, **config.ppo_kwargs())  # fmt: skip
        if trained_weights is not None:
            model.policy.load_state_dict(trained_weights)
        remaining, reset = n_timesteps, True
    from rims_rl.provenance import record_session  # provenance.yml: the commit of the code that runs this session

    record_session(run_folder)  # once the model is ready: a refused resume changes nothing in the run folder

    checkpoints = ResumableCheckpointCallback(save_freq, str(run_folder / "checkpoints"), verbose=args.verbose)
    if resume_from is not None:
        checkpoints.last_checkpoint, checkpoints.last_save_timesteps = resume_from, model.num_timesteps
    callbacks: list[Any] = [RimsDiagnosticsCallback(), checkpoints]
    eval_env = None
    if eval_freq > 0:
        eval_env = make_evaluation_env(env_name, config)
        callbacks.append(ResumableEvalCallback(
            eval_env, eval_freq, n_eval_episodes=eval_episodes, log_path=str(run_folder),
            best_model_save_path=None, callback_on_new_best=SaveBestModelCallback(str(run_folder)), resume_state=resume_state,
            callback_after_eval=RimsDiagnosticsCallback(), deterministic=False, verbose=args.verbose,
        ))  # fmt: skip

    checkpoints.track_evaluation(eval_env)
    previous_handler = signal.signal(signal.SIGINT, checkpoints.handle_sigint)
    status = 0
    try:
        try:
            if remaining > 0:
                model.learn(remaining, callback=CallbackList(callbacks), tb_log_name=tb_name, reset_num_timesteps=reset,
                            progress_bar=args.progress)  # fmt: skip
        except ValueError as error:
            cause = nonfinite_distribution(error, model)
            if cause is None:
                raise
            raise NonFiniteError(model.num_timesteps, cause, checkpoints.last_checkpoint) from None
        if getattr(checkpoints, "model", None) is None:  # learn() did not run (nothing left to do)
            checkpoints.init_callback(model)
        checkpoints.num_timesteps = model.num_timesteps
        if checkpoints.last_save_timesteps != model.num_timesteps or checkpoints.last_checkpoint is None:
            checkpoints.save_checkpoint()
        final = save_model_atomic(model, run_folder / f"{_sanitize(env_id)}.zip")
        if config.normalize:
            from rims_rl.checkpoint import save_vecnormalize

            vecnormalize = model.get_vec_normalize_env()
            assert vecnormalize is not None
            save_vecnormalize(vecnormalize, run_folder / "vecnormalize.safetensors")
    except TrainingInterrupted as stop:
        print(f"Interrupted at {model.num_timesteps} timesteps; checkpoint: {stop.checkpoint}")
        print(f"Continue with: rims-train --resume {run_folder}")
        status = 130
    except NonFiniteError as stop:
        good = stop.last_good or checkpoints.last_checkpoint
        hint = f"; continue with: rims-train --resume {run_folder}" if good else ""
        print(f"rims-train: error: {NonFiniteError(stop.step, stop.cause, good)}{hint}", file=sys.stderr)
        status = 1
    except OSError as error:
        if error.errno not in WRITE_ERRNOS:
            raise
        last = checkpoints.last_checkpoint or "none yet"
        print(f"rims-train: error: cannot write in {run_folder}: {_os_error(error)}; training stopped at step "
              f"{model.num_timesteps}, last good checkpoint: {last}; free space or make the folder writable, then: "
              f"rims-train --resume {run_folder}", file=sys.stderr)  # fmt: skip
        status = 2
    except KeyboardInterrupt:
        last = checkpoints.last_checkpoint or "none yet"
        print(f"\nStopped at once; last complete checkpoint: {last}")
        status = 130
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        if eval_env is not None:
            eval_env.close()
    if status:
        env.close()
        return status

    print(f"\nRun folder: {run_folder}\nFinal model: {final}")
    print(f"TensorBoard: tensorboard --logdir {tb_root}")
    n_episodes = heldout_episodes(args.heldout_episodes, setting)
    if setting is not None and len(setting.splits) > 1 and n_episodes == 0:
        flag = "--rims" if algo == "rims_ppo" else "--lstm"  # the run's algo (a resumed run's args.algo is the default)
        print(f"Held-out evaluation: python evaluate.py {flag} {run_folder} --setting {setting.name}")
    elif setting is not None and len(setting.splits) > 1:
        print_summary(evaluate_heldout(model, setting, config, n_episodes), setting, n_episodes)
    env.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """
    Entry point of ``rims-train`` and ``python train.py``.

    :param argv: arguments (None: ``sys.argv[1:]``)
    :return: exit code (0 ok, 1 training stopped on a non-finite value, 2 a user error or a failed write to fix,
        130 interrupted)
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_args(argv)
        return train(args, argv)
    except (CliError, ConfigError) as error:
        print(f"rims-train: error: {error}", file=sys.stderr)
        return 2
