"""Build single and vectorized envs from a setting name, a setting, an env entry, an ALE game or any gymnasium id.

Every env gets a :class:`~stable_baselines3.common.monitor.Monitor` below any reward-changing wrapper, so
``info["episode"]["r"]`` is the true return (for Atari: the whole game's score).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from typing import Any, Literal

import gymnasium as gym
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecFrameStack

from rims_rl.envs import atari
from rims_rl.envs.settings import EnvEntry, Setting, list_settings, load_setting

EnvLike = str | Setting | EnvEntry


class UnknownEnvError(gym.error.Error, ValueError):
    """An env id, game or setting name that is not known; the message lists close matches."""


def split_of(env: EnvLike) -> tuple[EnvLike, str | None]:
    """
    ``"SETTING:SPLIT"`` names one env of a setting (e.g. ``"atari-transfer:Alien"``, a target game).

    :param env: anything :func:`resolve` takes
    :return: (the env without the split, the split or None)
    """
    if isinstance(env, str) and ":" in env:
        name, split = env.split(":", 1)
        if name in list_settings():
            return name, split
    return env, None


def resolve(env: EnvLike) -> tuple[Setting | None, EnvEntry]:
    """
    :param env: a setting name (``"SETTING:SPLIT"``: that split's env), :class:`Setting`, :class:`EnvEntry`,
        ALE game name or gymnasium id
    :return: (the setting, if one was named; the env entry to train on)
    :raises UnknownEnvError: for an unknown name, with close matches among ids, games and setting names
    """
    env, split = split_of(env)
    if split is not None:
        setting = load_setting(str(env))
        try:
            return setting, setting.env(split)
        except ValueError as error:
            raise UnknownEnvError(str(error)) from None
    if isinstance(env, Setting):
        return env, env.train_env
    if isinstance(env, EnvEntry):
        return None, env
    if not isinstance(env, str):
        raise TypeError(f"env must be a setting name, Setting, EnvEntry, game name or gymnasium id (got {type(env).__name__})")
    if env in gym.registry:
        return None, EnvEntry(env)
    settings = list_settings()
    if env in settings:
        setting = load_setting(env)
        return setting, setting.train_env
    if atari.is_atari_id(env):
        return None, EnvEntry(atari.atari_id(env))
    candidates = [*gym.registry, *settings, *atari.atari_games()]
    close = difflib.get_close_matches(env, candidates, n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else "no close match among registered ids"
    raise UnknownEnvError(f"unknown env or setting {env!r}: {hint} (settings: {', '.join(settings)})")


def make_env(
    entry: EnvEntry | str,
    *,
    training: bool = True,
    seed: int | None = None,
    monitor_file: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> gym.Env:
    """
    One monitored env.

    :param entry: env entry, gymnasium id or ALE game name
    :param training: Atari only: clipped rewards and life-loss episodes (True) or true scores over whole games
    :param seed: if given, the first reset uses it and the action space is seeded
    :param monitor_file: Monitor log file (None: stats in ``info["episode"]`` only)
    :param env_kwargs: extra constructor kwargs (override the entry's)
    :return: the env
    """
    if isinstance(entry, str):
        _, entry = resolve(entry)
    kwargs = {**entry.kwargs, **(env_kwargs or {})}
    env: gym.Env
    if entry.is_atari:
        env = atari.make_atari_env(entry.id, training=training, monitor_file=monitor_file, **kwargs)
    else:
        env = Monitor(gym.make(entry.id, **kwargs), filename=monitor_file)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def _thunk(
    entry: EnvEntry, training: bool, monitor_file: str | None, env_kwargs: dict[str, Any] | None
) -> Callable[[], gym.Env]:
    def _init() -> gym.Env:
        return make_env(entry, training=training, monitor_file=monitor_file, env_kwargs=env_kwargs)

    return _init


def make_vec_env(
    env: EnvLike,
    n_envs: int = 1,
    seed: int | None = 0,
    training: bool = True,
    vec_env_cls: Literal["dummy", "subproc"] | type[VecEnv] | None = None,
    frame_stack: int | None = None,
    monitor_dir: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    split: str = "train",
) -> VecEnv:
    """
    A seeded, monitored VecEnv (env ``i`` is seeded with ``seed + i`` at its first reset).

    :param env: a setting name or :class:`Setting` (its ``split`` env), an :class:`EnvEntry`, an ALE game name
        (``"Pong"``), or any gymnasium id (MiniGrid, ``"RimsCueRecall-v0"``, ...)
    :param n_envs: number of envs
    :param seed: base seed (None: unseeded)
    :param training: Atari: training preprocessing (clipping, life loss) or evaluation (true scores)
    :param vec_env_cls: ``"dummy"`` (default), ``"subproc"``, or a VecEnv class
    :param frame_stack: frames to stack (None: the setting's default, else none; 0 or 1: none)
    :param monitor_dir: folder for Monitor CSV files (one per env)
    :param env_kwargs: extra constructor kwargs for every env
    :param split: with a setting: which of its envs to train on, e.g. a target game of ``atari-transfer``
        (``"SETTING:SPLIT"`` as ``env`` names it too)
    :return: the VecEnv
    """
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1 (got {n_envs})")
    env, named_split = split_of(env)
    split = named_split or split
    setting, entry = resolve(env)
    if setting is not None:
        entry = setting.env(split)
    elif split != "train":
        raise ValueError(f"{env!r} is not a setting, so it has no split {split!r}; allowed: train")
    return _build(entry, setting, n_envs, seed, training, vec_env_cls, frame_stack, monitor_dir, env_kwargs)


def make_eval_vec_env(
    env: EnvLike,
    split: str = "train",
    n_envs: int = 1,
    seed: int | None = None,
    vec_env_cls: Literal["dummy", "subproc"] | type[VecEnv] | None = None,
    frame_stack: int | None = None,
    monitor_dir: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> VecEnv:
    """
    An evaluation VecEnv for one split of a setting: true scores, fixed seeds.

    :param env: a setting name or :class:`Setting` (``"SETTING:SPLIT"`` names the split); or an env id (then only
        ``split="train"``)
    :param split: ``"train"`` or a held-out split name (see ``Setting.splits``)
    :param n_envs: number of envs
    :param seed: base seed (None: the setting's fixed evaluation seed for this split; for a bare id, 0)
    :param vec_env_cls: ``"dummy"`` (default), ``"subproc"``, or a VecEnv class
    :param frame_stack: as in :func:`make_vec_env`
    :param monitor_dir: folder for Monitor CSV files
    :param env_kwargs: extra constructor kwargs
    :return: the VecEnv
    """
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1 (got {n_envs})")
    env, named_split = split_of(env)
    split = named_split or split
    setting, entry = resolve(env)
    if setting is None:
        if split != "train":
            raise ValueError(f"{env!r} is not a setting, so it has no split {split!r}; allowed: train")
        seed = 0 if seed is None else seed
    else:
        entry = setting.env(split)
        seed = setting.eval_seeds[split] if seed is None else seed
    return _build(entry, setting, n_envs, seed, False, vec_env_cls, frame_stack, monitor_dir, env_kwargs)


def _build(
    entry: EnvEntry,
    setting: Setting | None,
    n_envs: int,
    seed: int | None,
    training: bool,
    vec_env_cls: Literal["dummy", "subproc"] | type[VecEnv] | None,
    frame_stack: int | None,
    monitor_dir: str | None,
    env_kwargs: dict[str, Any] | None,
) -> VecEnv:
    if monitor_dir is not None:
        os.makedirs(monitor_dir, exist_ok=True)
    fns = [
        _thunk(entry, training, None if monitor_dir is None else os.path.join(monitor_dir, str(i)), env_kwargs)
        for i in range(n_envs)
    ]
    cls: type[VecEnv]
    if vec_env_cls is None or vec_env_cls == "dummy":
        cls = DummyVecEnv
    elif vec_env_cls == "subproc":
        cls = SubprocVecEnv
    elif isinstance(vec_env_cls, type) and issubclass(vec_env_cls, VecEnv):
        cls = vec_env_cls
    else:
        raise ValueError(f"vec_env_cls must be 'dummy', 'subproc' or a VecEnv class (got {vec_env_cls!r})")
    venv: VecEnv = cls(fns)  # type: ignore[arg-type, call-arg]
    if seed is not None:
        venv.seed(seed)
        venv.action_space.seed(seed)
    if frame_stack is None and setting is not None:
        frame_stack = setting.frame_stack
    if frame_stack is not None and frame_stack > 1:
        venv = VecFrameStack(venv, n_stack=frame_stack)
    return venv
