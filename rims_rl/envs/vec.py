"""Build single and vectorized envs from a setting name, a setting, an env entry, an ALE game or any gymnasium id.

Every env gets a :class:`~stable_baselines3.common.monitor.Monitor` below any reward-changing wrapper, so
``info["episode"]["r"]`` is the true return (for Atari: the whole game's score).

``vec_env_cls="envpool"`` builds ALE games with EnvPool instead (:class:`EnvPoolAtariVecEnv`, the ``envpool`` extra):
the same preprocessing, spaces, episode ends and true-score bookkeeping as the gymnasium path, in C++ threads.
"""

from __future__ import annotations

import difflib
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecFrameStack
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from rims_rl.envs import atari
from rims_rl.envs.settings import EnvEntry, Setting, list_settings, load_setting

EnvLike = str | Setting | EnvEntry
#: ``vec_env_cls`` names: DummyVecEnv, SubprocVecEnv, or EnvPool (ALE games only).
VecEnvName = Literal["dummy", "subproc", "envpool"]


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
    vec_env_cls: VecEnvName | type[VecEnv] | None = None,
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
    :param vec_env_cls: ``"dummy"`` (default), ``"subproc"``, ``"envpool"`` (ALE games only, see
        :class:`EnvPoolAtariVecEnv`), or a VecEnv class
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
    vec_env_cls: VecEnvName | type[VecEnv] | None = None,
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
    :param vec_env_cls: ``"dummy"`` (default), ``"subproc"``, ``"envpool"`` (ALE games only), or a VecEnv class
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
    vec_env_cls: VecEnvName | type[VecEnv] | None,
    frame_stack: int | None,
    monitor_dir: str | None,
    env_kwargs: dict[str, Any] | None,
) -> VecEnv:
    if vec_env_cls == "envpool":
        venv: VecEnv = _build_envpool(entry, n_envs, seed, training, monitor_dir, env_kwargs)
        return _stack(venv, setting, frame_stack)
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
        raise ValueError(f"vec_env_cls must be 'dummy', 'subproc', 'envpool' or a VecEnv class (got {vec_env_cls!r})")
    venv = cls(fns)  # type: ignore[arg-type, call-arg]
    if seed is not None:
        venv.seed(seed)
        venv.action_space.seed(seed)
    return _stack(venv, setting, frame_stack)


def _stack(venv: VecEnv, setting: Setting | None, frame_stack: int | None) -> VecEnv:
    if frame_stack is None and setting is not None:
        frame_stack = setting.frame_stack
    if frame_stack is not None and frame_stack > 1:
        venv = VecFrameStack(venv, n_stack=frame_stack)
    return venv


# --- EnvPool path (ALE games only) ----------------------------------------------------------------------------------

#: Keyword arguments an ALE env entry may carry on the EnvPool path (those of :func:`rims_rl.envs.atari.make_atari_env`).
ENVPOOL_KWARGS = ("mode", "difficulty", "full_action_space", "repeat_action_probability")


class EnvPoolAtariVecEnv(VecEnv):
    """
    ALE games stepped by EnvPool (C++ threads), as an SB3 VecEnv equivalent to the gymnasium path's DummyVecEnv of
    :func:`rims_rl.envs.atari.make_atari_env` envs (before frame stacking, which both paths do with VecFrameStack).

    Same as the gymnasium path: ALE v5 with sticky actions per emulator frame (``repeat_action_probability``), 30
    random no-ops at a game start, 4 frames per agent step max-pooled over the last two, fire at reset, 84x84
    grayscale by area interpolation, observations ``(84, 84, 1)`` uint8; training adds life-loss episode ends and
    reward clipping; at most 108,000 emulator frames per game. Episode ends follow SB3: a done env's returned
    observation is the next episode's first, the last one is in ``info["terminal_observation"]``; after a life loss
    the game continues (EnvPool's own auto-reset, run at once for the done envs), after a game over a new game starts.
    ``info["episode"]`` appears at the end of each whole game only, with ``r`` the true (unclipped) score, as
    the Monitor below the gymnasium path's wrappers reports it; its ``l`` counts agent steps x 4 (the Monitor's
    also counts the no-op reset frames).

    Not the same: EnvPool draws no-ops and sticky actions from its own random generators, so the same seed gives
    other episodes than the gymnasium path (equal in distribution, not frame by frame); no Monitor CSV files.

    :param game_or_id: ALE game name (``"Pong"``) or id (``"ALE/Pong-v5"``)
    :param n_envs: number of envs
    :param training: life-loss episode ends and reward clipping (True) or whole games with true rewards
    :param seed: env ``i`` is seeded with ``seed + i`` (by EnvPool)
    :param mode: ALE game mode (None: the game's default)
    :param difficulty: ALE difficulty (None: the game's default)
    :param full_action_space: all 18 actions
    :param repeat_action_probability: ALE sticky-action probability per emulator frame
    :param num_threads: EnvPool worker threads (0: one per env, at most the CPU count)
    """

    def __init__(
        self,
        game_or_id: str,
        n_envs: int,
        *,
        training: bool,
        seed: int = 0,
        mode: int | None = None,
        difficulty: int | None = None,
        full_action_space: bool = False,
        repeat_action_probability: float = atari.STICKY_ACTION_PROB,
        num_threads: int = 0,
    ) -> None:
        try:
            import envpool
        except ImportError:
            raise ImportError("vec_env_cls='envpool' needs the envpool package: pip install 'rims_rl[envpool]'") from None
        env_id = atari.atari_id(game_or_id)
        atari.validate_flavour(env_id, mode, difficulty)
        if not 0.0 <= repeat_action_probability < 1.0:
            raise ValueError(f"repeat_action_probability must be in [0, 1) (got {repeat_action_probability})")
        self.task = env_id.split("/")[-1]
        if self.task not in envpool.list_all_envs():
            raise ValueError(f"EnvPool {envpool.__version__} has no task {self.task!r} for {env_id}")
        self.training = bool(training)
        self._envpool = envpool
        self._make_kwargs: dict[str, Any] = dict(
            env_type="gymnasium",
            num_envs=n_envs,
            batch_size=n_envs,
            num_threads=min(n_envs, os.cpu_count() or 1) if num_threads <= 0 else num_threads,
            stack_num=1,
            frame_skip=atari.FRAME_SKIP,
            noop_max=atari.NOOP_MAX,
            img_height=atari.SCREEN_SIZE,
            img_width=atari.SCREEN_SIZE,
            gray_scale=True,
            use_inter_area_resize=True,
            use_fire_reset=True,
            episodic_life=self.training,
            reward_clip=self.training,
            repeat_action_probability=float(repeat_action_probability),
            full_action_space=bool(full_action_space),
            max_episode_steps=108_000 // atari.FRAME_SKIP,
        )
        if mode is not None:
            self._make_kwargs["mode"] = int(mode)
        if difficulty is not None:
            self._make_kwargs["difficulty"] = int(difficulty)
        self._seed = int(seed)
        self._pending_seed: int | None = None
        self._pool = envpool.make(self.task, seed=self._seed, **self._make_kwargs)
        observation_space = gym.spaces.Box(0, 255, (atari.SCREEN_SIZE, atari.SCREEN_SIZE, 1), np.uint8)
        super().__init__(n_envs, observation_space, gym.spaces.Discrete(int(self._pool.action_space.n)))
        self._actions = np.zeros(n_envs, dtype=np.int32)
        self._returns = np.zeros(n_envs, dtype=np.float64)
        self._lengths = np.zeros(n_envs, dtype=np.int64)
        self._t_start = time.time()

    @staticmethod
    def _by_env(info: dict[str, Any], *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """Put EnvPool's outputs in env-id order (sync mode returns them so already; this makes sure)."""
        order = np.argsort(info["env_id"], kind="stable")
        return tuple(a[order] for a in arrays)

    @staticmethod
    def _channel_last(obs: np.ndarray) -> np.ndarray:
        """(n, 1, 84, 84) -> (n, 84, 84, 1), as the gymnasium path's WarpFrame."""
        return np.ascontiguousarray(np.moveaxis(obs, 1, -1))

    def reset(self) -> VecEnvObs:
        """
        Start a new game in every env (rebuilding the pool first when :meth:`seed` gave a new seed).

        :return: observations (n_envs, 84, 84, 1) uint8
        """
        if self._pending_seed is not None and self._pending_seed != self._seed:
            self.close()
            self._seed = self._pending_seed
            self._pool = self._envpool.make(self.task, seed=self._seed, **self._make_kwargs)
        self._pending_seed = None
        obs, info = self._pool.reset()
        (obs,) = self._by_env(info, obs)
        self._returns[:] = 0.0
        self._lengths[:] = 0
        self._reset_seeds()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return self._channel_last(obs)

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """
        :param seed: env ``i`` is seeded ``seed + i`` from the next :meth:`reset` on (None: keep the current seeds)
        :return: the seeds
        """
        if seed is None:
            return [None] * self.num_envs
        self._pending_seed = int(seed)
        return [int(seed) + i for i in range(self.num_envs)]

    def step_async(self, actions: np.ndarray) -> None:
        """:param actions: (n_envs,) action indices"""
        self._actions = np.asarray(actions, dtype=np.int32).reshape(self.num_envs)

    def step_wait(self) -> VecEnvStepReturn:
        """
        :return: (observations (n_envs, 84, 84, 1) uint8, rewards (n_envs,) float32, dones (n_envs,) bool, infos)
        """
        obs, rewards, terminated, truncated, info = self._pool.step(self._actions)
        obs, rewards, terminated, truncated, raw, lives = self._by_env(
            info, obs, rewards, terminated, truncated, info["reward"], info["lives"]
        )
        obs = self._channel_last(obs)
        self._returns += raw
        self._lengths += 1
        dones = np.logical_or(terminated, truncated)
        infos: list[dict[str, Any]] = [{"lives": int(lives[i])} for i in range(self.num_envs)]
        done_ids = np.flatnonzero(dones).astype(np.int32)
        if len(done_ids):
            # EnvPool resets a done env at its next step (continuing the game after a life loss): run it now
            next_obs, _, _, _, next_info = self._pool.step(np.zeros(len(done_ids), dtype=np.int32), env_id=done_ids)
            next_obs = self._channel_last(next_obs)
            for k, env_id in enumerate(np.asarray(next_info["env_id"])):
                i = int(env_id)
                infos[i]["terminal_observation"] = obs[i].copy()
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                obs[i] = next_obs[k]
                if int(next_info["elapsed_step"][k]) == 0:  # a new game started: the previous one is over
                    infos[i]["episode"] = {
                        "r": float(self._returns[i]),
                        "l": int(self._lengths[i]) * atari.FRAME_SKIP,
                        "t": round(time.time() - self._t_start, 6),
                    }
                    self._returns[i] = 0.0
                    self._lengths[i] = 0
                else:  # the same game goes on after a life loss; the continuation step counts towards it
                    self._returns[i] += float(next_info["reward"][k])
                    self._lengths[i] += 1
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        """Release EnvPool's threads."""
        close = getattr(self._pool, "close", None)
        if callable(close):
            close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """:return: ``render_mode`` (None) for each env; other attributes do not exist per env here"""
        if attr_name == "render_mode":
            return [None] * len(list(self._get_indices(indices)))
        raise AttributeError(f"{type(self).__name__} has no per-env attribute {attr_name!r}")

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Not supported: EnvPool envs are C++ objects."""
        raise AttributeError(f"{type(self).__name__} cannot set per-env attribute {attr_name!r}")

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Not supported: EnvPool envs are C++ objects."""
        raise AttributeError(f"{type(self).__name__} cannot call per-env method {method_name!r}")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """:return: True for :class:`Monitor` (``info["episode"]`` is reported as a Monitor would), else False"""
        return [wrapper_class is Monitor] * len(list(self._get_indices(indices)))


def _build_envpool(
    entry: EnvEntry,
    n_envs: int,
    seed: int | None,
    training: bool,
    monitor_dir: str | None,
    env_kwargs: dict[str, Any] | None,
) -> VecEnv:
    if not entry.is_atari:
        raise ValueError(f"vec_env_cls='envpool' builds ALE games only; {entry.id!r} is not one (use 'dummy' or 'subproc')")
    if monitor_dir is not None:
        raise ValueError("vec_env_cls='envpool' writes no Monitor CSV files (episode stats are in info['episode'])")
    kwargs = {**entry.kwargs, **(env_kwargs or {})}
    unknown = sorted(set(kwargs) - set(ENVPOOL_KWARGS))
    if unknown:
        raise ValueError(f"vec_env_cls='envpool' does not take {unknown}; allowed: {', '.join(ENVPOOL_KWARGS)}")
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**31 - n_envs))  # type: ignore[operator]
    venv = EnvPoolAtariVecEnv(entry.id, n_envs, training=training, seed=seed, **kwargs)
    venv.action_space.seed(seed)
    return venv


def check_vec_env(env: EnvLike, vec_env_cls: str | type[VecEnv] | None) -> None:
    """
    Check, before anything is built, that ``env`` can be vectorized with ``vec_env_cls``.

    :param env: anything :func:`resolve` takes (``"SETTING:SPLIT"`` included)
    :param vec_env_cls: as in :func:`make_vec_env`
    :raises ValueError: ``"envpool"`` with an env that is not an ALE game, or without the envpool package
    """
    if vec_env_cls != "envpool":
        return
    import importlib.util

    if importlib.util.find_spec("envpool") is None:
        raise ValueError("--vec-env envpool needs the envpool package: pip install 'rims_rl[envpool]'")
    name, split = split_of(env)
    setting, entry = resolve(name)
    if setting is not None and split is not None:
        entry = setting.env(split)
    if not entry.is_atari:
        raise ValueError(f"--vec-env envpool builds ALE games only; {entry.id!r} is not one (use dummy or subproc)")
