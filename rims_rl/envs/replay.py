"""Pickle-free VecEnv state for exact resume: replay the current episode instead of pickling env objects.

:class:`ReplayRecorder` (a gymnasium wrapper, transparent to the env) records, per env, the env's RNG state
before the current episode's reset, the reset's seed and options, and the actions taken since. To restore, the
env is rebuilt, its RNG state put back, reset and the actions replayed, which reproduces the env's whole state
for any env whose dynamics depend only on its own ``np_random`` (MiniGrid, classic control, rims_rl's envs).
Atari (ALE) envs keep state across SB3's life-loss "episodes" and an RNG inside the emulator, so for them the
recorder also keeps, at each reset, the emulator's serialized state with its RNG
(``ale.cloneState(include_rng=True).serialize()``, plain bytes) and the life-loss wrapper's counters; restoring
puts those back before the reset is replayed.
The VecEnv layers' own state is plain data: DummyVecEnv's pending seeds, Monitor counters, VecFrameStack's
stacked frames, VecNormalize's running statistics, VecMonitor's counters. Everything is JSON or arrays (see
:mod:`rims_rl.safe_io`).

Not capturable (the state is then None and resume says it is not exact): SubprocVecEnv and EnvPool (the envs live
in other processes or threads), unknown VecEnv wrappers.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.atari_wrappers import EpisodicLifeEnv, StickyActionEnv
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    VecEnv,
    VecEnvWrapper,
    VecFrameStack,
    VecMonitor,
    VecNormalize,
    VecTransposeImage,
)

_BIT_GENERATORS = {"PCG64": np.random.PCG64, "PCG64DXSM": np.random.PCG64DXSM, "MT19937": np.random.MT19937,
                   "Philox": np.random.Philox, "SFC64": np.random.SFC64}  # fmt: skip
_MONITOR_FIELDS = ("rewards", "needs_reset", "episode_returns", "episode_lengths", "episode_times", "total_steps")


class NotCapturable(Exception):
    """The env's state cannot be captured without pickling (the message says why)."""


def generator_state(rng: np.random.Generator | None) -> dict[str, Any] | None:
    """:return: the JSON-able state of a numpy Generator (None for None)."""
    return None if rng is None else dict(rng.bit_generator.state)


def make_generator(state: dict[str, Any]) -> np.random.Generator:
    """
    :param state: output of :func:`generator_state`
    :return: a Generator in that state (bit generators from a fixed list; nothing is imported by name)
    """
    name = state.get("bit_generator")
    if name not in _BIT_GENERATORS:
        raise ValueError(f"unknown bit generator {name!r}")
    bit_generator = _BIT_GENERATORS[name]()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


class ReplayRecorder(gym.Wrapper):
    """
    Records what is needed to rebuild this env's current episode: the RNG state before its reset, the reset's
    arguments and the actions since. Observations, rewards and infos pass through unchanged.

    :param env: the env (typically a Monitor)
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.ale = getattr(env.unwrapped, "ale", None) if "ale_py" in type(env.unwrapped).__module__ else None
        #: why this env's state cannot be captured (None: it can)
        self.not_capturable: str | None = None
        if self.ale is not None and self.ale.getFloat("repeat_action_probability") > 0.0:
            self.not_capturable = ("ALE's own sticky actions keep the last action outside the emulator's saved state "
                                   "(rims_rl's Atari envs use SB3's StickyActionEnv instead)")  # fmt: skip
        self.started = False
        self.reset_rng: dict[str, Any] | None = None
        self.reset_seed: int | None = None
        self.reset_options: dict[str, Any] | None = None
        self.reset_emulator: dict[str, Any] | None = None
        self.reset_carrying: list[int] | None = None
        self.actions: list[Any] = []

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """As the env's; records the RNG state beforehand."""
        self.started = True
        self.reset_rng = generator_state(getattr(self.env.unwrapped, "_np_random", None))
        self.reset_seed, self.reset_options = seed, options
        if self.ale is not None and self.not_capturable is None:
            self.reset_emulator = self._emulator_state()
        # MiniGrid clears the carried object only after generating the layout, which may look at it (a first-view
        # check does): a reset after a pick-up depends on what was picked up.
        encode = getattr(getattr(self.env.unwrapped, "carrying", None), "encode", None)
        self.reset_carrying = None if encode is None else [int(v) for v in encode()]
        self.actions = []
        return self.env.reset(seed=seed, options=options)

    def _emulator_state(self) -> dict[str, Any]:
        assert self.ale is not None
        state: dict[str, Any] = {"ale": np.frombuffer(self.ale.cloneState(include_rng=True).serialize(), dtype=np.uint8)}
        life = _find_wrapper(self.env, EpisodicLifeEnv)
        if life is not None:  # a reset after a life loss only steps on: the game goes on from this state
            state["lives"], state["was_real_done"] = int(life.lives), bool(life.was_real_done)
        sticky = _find_wrapper(self.env, StickyActionEnv)
        if sticky is not None:
            state["sticky_action"] = int(getattr(sticky, "_sticky_action", 0))
        return state

    def _restore_emulator(self, state: dict[str, Any]) -> None:
        import ale_py

        assert self.ale is not None
        self.env.reset()  # gymnasium wants a reset before steps; everything it changed is overwritten next
        self.ale.restoreState(ale_py.ALEState(np.asarray(state["ale"], dtype=np.uint8).tobytes()))
        life = _find_wrapper(self.env, EpisodicLifeEnv)
        if life is not None and "lives" in state:
            life.lives, life.was_real_done = int(state["lives"]), bool(state["was_real_done"])
        sticky = _find_wrapper(self.env, StickyActionEnv)
        if sticky is not None and "sticky_action" in state:
            sticky._sticky_action = int(state["sticky_action"])

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        """As the env's; records the action."""
        self.actions.append(np.array(action, copy=True))
        return self.env.step(action)

    def get_state(self) -> dict[str, Any]:
        """
        :return: JSON/array data for :meth:`set_state`
        :raises NotCapturable: an env whose state lives partly outside what can be saved (see ``not_capturable``)
        """
        if self.not_capturable is not None:
            raise NotCapturable(self.not_capturable)
        space_rng = getattr(self.env.action_space, "_np_random", None)
        state: dict[str, Any] = {
            "started": self.started,
            "reset_rng": self.reset_rng,
            "reset_seed": self.reset_seed,
            "reset_options": self.reset_options,
            "reset_emulator": self.reset_emulator,
            "reset_carrying": self.reset_carrying,
            "actions": np.stack(self.actions) if self.actions else None,
            "n_actions": len(self.actions),
            "action_space_rng": generator_state(space_rng),
        }
        monitor = _find_wrapper(self.env, Monitor)
        if monitor is not None:
            state["monitor"] = {name: getattr(monitor, name) for name in _MONITOR_FIELDS}
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """
        Rebuild the recorded episode: restore the RNG, reset, replay the actions, then restore the counters.

        :param state: output of :meth:`get_state`
        """
        if state["started"]:
            if state.get("reset_emulator") is not None:
                self._restore_emulator(state["reset_emulator"])
            if state["reset_rng"] is not None:
                self.env.unwrapped._np_random = make_generator(state["reset_rng"])  # type: ignore[attr-defined]
            if state.get("reset_carrying") is not None:
                from minigrid.core.world_object import WorldObj

                self.env.unwrapped.carrying = WorldObj.decode(*state["reset_carrying"])  # type: ignore[attr-defined]
            self.reset(seed=state["reset_seed"], options=state["reset_options"])
            actions = state["actions"]
            for i in range(int(state["n_actions"])):
                self.step(actions[i])
        if state.get("action_space_rng") is not None:
            self.env.action_space._np_random = make_generator(state["action_space_rng"])
        monitor = _find_wrapper(self.env, Monitor)
        if monitor is not None and "monitor" in state:
            for name, value in state["monitor"].items():
                if name in _MONITOR_FIELDS:
                    setattr(monitor, name, list(value) if isinstance(value, list | tuple) else value)


def _find_wrapper(env: gym.Env, cls: type) -> Any:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, cls):
            return env
        env = env.env
    return None


def _layers(venv: VecEnv) -> list[VecEnv]:
    layers = [venv]
    while isinstance(layers[-1], VecEnvWrapper):
        layers.append(layers[-1].venv)
    return layers


def attach_recorders(venv: VecEnv) -> VecEnv:
    """
    Wrap every env of a DummyVecEnv (under any VecEnv wrappers) in a :class:`ReplayRecorder`. Call before the
    first reset. Other VecEnv types are returned unchanged (their state is not capturable).

    :param venv: the VecEnv
    :return: the same VecEnv
    """
    base = _layers(venv)[-1]
    if isinstance(base, DummyVecEnv):
        base.envs = [env if isinstance(env, ReplayRecorder) else ReplayRecorder(env) for env in base.envs]
    return venv


def _rms(rms: Any) -> Any:
    if isinstance(rms, dict):
        return {key: _rms(value) for key, value in rms.items()}
    return {"mean": np.asarray(rms.mean), "var": np.asarray(rms.var), "count": float(rms.count)}


def _set_rms(rms: Any, data: Any) -> None:
    if isinstance(rms, dict):
        for key, value in rms.items():
            _set_rms(value, data[key])
        return
    rms.mean, rms.var, rms.count = np.array(data["mean"]), np.array(data["var"]), data["count"]


def _layer_state(layer: VecEnv) -> dict[str, Any]:
    if isinstance(layer, VecNormalize):
        return {"type": "VecNormalize", "obs_rms": _rms(layer.obs_rms) if layer.norm_obs else None,
                "ret_rms": _rms(layer.ret_rms), "returns": layer.returns, "training": layer.training,
                "old_obs": layer.old_obs if isinstance(layer.old_obs, np.ndarray) else None,
                "old_reward": layer.old_reward if isinstance(layer.old_reward, np.ndarray) else None}  # fmt: skip
    if isinstance(layer, VecFrameStack):
        stacked = layer.stacked_obs.stacked_obs
        return {"type": "VecFrameStack", "stacked": stacked}
    if isinstance(layer, VecTransposeImage):
        return {"type": "VecTransposeImage"}
    if isinstance(layer, VecMonitor):
        return {"type": "VecMonitor", "episode_returns": layer.episode_returns, "episode_lengths": layer.episode_lengths,
                "episode_count": layer.episode_count}  # fmt: skip
    if isinstance(layer, DummyVecEnv):
        envs = []
        for env in layer.envs:
            if not isinstance(env, ReplayRecorder):
                raise NotCapturable("the envs were not recorded from their first reset (attach_recorders)")
            envs.append(env.get_state())
        return {"type": "DummyVecEnv", "envs": envs, "seeds": list(layer._seeds), "options": list(layer._options)}
    raise NotCapturable(f"{type(layer).__name__} cannot be captured")


def _set_layer_state(layer: VecEnv, state: dict[str, Any]) -> None:
    if isinstance(layer, VecNormalize):
        if state["obs_rms"] is not None:
            _set_rms(layer.obs_rms, state["obs_rms"])
        _set_rms(layer.ret_rms, state["ret_rms"])
        layer.returns = np.array(state["returns"])
        layer.training = bool(state["training"])
        if state["old_obs"] is not None:
            layer.old_obs = np.array(state["old_obs"])
        if state["old_reward"] is not None:
            layer.old_reward = np.array(state["old_reward"])
    elif isinstance(layer, VecFrameStack):
        if isinstance(layer.stacked_obs.stacked_obs, dict):
            for key, value in state["stacked"].items():
                layer.stacked_obs.stacked_obs[key][...] = value
        else:
            layer.stacked_obs.stacked_obs[...] = state["stacked"]
    elif isinstance(layer, VecMonitor):
        layer.episode_returns = np.array(state["episode_returns"])
        layer.episode_lengths = np.array(state["episode_lengths"])
        layer.episode_count = int(state["episode_count"])
    elif isinstance(layer, DummyVecEnv):
        attach_recorders(layer)
        for env, env_state in zip(layer.envs, state["envs"], strict=True):
            assert isinstance(env, ReplayRecorder)
            env.set_state(env_state)
        layer._seeds = list(state["seeds"])
        layer._options = [dict(o) if isinstance(o, dict) else {} for o in state["options"]]


def get_venv_state(venv: VecEnv) -> list[dict[str, Any]]:
    """
    :param venv: a VecEnv: VecEnv wrappers (VecNormalize, VecFrameStack, VecTransposeImage, VecMonitor) over a
        DummyVecEnv whose envs carry :class:`ReplayRecorder` (see :func:`attach_recorders`)
    :return: per layer, outermost first, its state as JSON/array data
    :raises NotCapturable: SubprocVecEnv, EnvPool, ALE's own sticky actions, unknown wrappers
    """
    return [_layer_state(layer) for layer in _layers(venv)]


def set_venv_state(venv: VecEnv, state: list[dict[str, Any]]) -> None:
    """
    :param venv: a freshly built VecEnv with the same layers and number of envs as the saved one
    :param state: output of :func:`get_venv_state`
    :raises ValueError: the layers or the number of envs differ
    """
    layers = _layers(venv)
    names = [type(layer).__name__ for layer in layers]
    saved = [layer_state["type"] for layer_state in state]
    if len(layers) != len(saved) or any(not isinstance(x, _LAYER_TYPES[s]) for x, s in zip(layers, saved, strict=True)):
        raise ValueError(f"the env's layers {names} differ from the saved ones {saved}")
    base = layers[-1]
    if len(state[-1]["envs"]) != base.num_envs:
        raise ValueError(f"the saved env has {len(state[-1]['envs'])} envs, the new one {base.num_envs}")
    for layer, layer_state in zip(reversed(layers), reversed(state), strict=True):  # base first: replay, then arrays
        _set_layer_state(layer, layer_state)


_LAYER_TYPES: dict[str, type] = {"VecNormalize": VecNormalize, "VecFrameStack": VecFrameStack,
                                 "VecTransposeImage": VecTransposeImage, "VecMonitor": VecMonitor,
                                 "DummyVecEnv": DummyVecEnv}  # fmt: skip
