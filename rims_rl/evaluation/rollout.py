"""Episode rollouts for evaluation: loaded agents, the uniform-random baseline, and fair episode counting.

The recurrent state is carried through every step and reset only where ``episode_start`` says an episode begins
(the agent's ``predict`` does the reset), with greedy and with sampled actions alike. Scores are the true game
scores from the Monitor's ``info["episode"]`` when the env carries a Monitor (below any reward clipping), else the
summed step rewards. An episode's success is the ``is_success`` (SB3) or ``success`` flag of its last step's info;
nan where the last step carries neither (see :meth:`Episodes.success_rate`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.vec_env import VecEnv, VecMonitor, VecTransposeImage, is_vecenv_wrapped


class Agent(Protocol):
    """Anything with SB3's recurrent ``predict`` signature."""

    def predict(
        self,
        observation: Any,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]: ...


class UniformRandomAgent:
    """Uniform-random policy over the env's action space (the S_random baseline).

    :param action_space: the env's action space
    :param n_envs: number of parallel envs
    :param seed: seed of the action sampler
    """

    def __init__(self, action_space: gym.Space, n_envs: int, seed: int | None = None):
        self.action_space = action_space
        self.n_envs = n_envs
        self.action_space.seed(seed)

    def predict(
        self,
        observation: Any,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, None]:
        """One uniformly sampled action per env (``deterministic`` is ignored).

        :return: (actions of shape (n_envs, ...), None)
        """
        return np.array([self.action_space.sample() for _ in range(self.n_envs)]), None


@dataclass
class Episodes:
    """Returns, lengths and successes of finished evaluation episodes.

    :param returns: shape (n_episodes,)
    :param lengths: shape (n_episodes,)
    :param successes: shape (n_episodes,): 1.0 / 0.0 from the last step's success flag, nan where it has none
    """

    returns: np.ndarray
    lengths: np.ndarray
    successes: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.successes is None:
            self.successes = np.full(len(self.returns), np.nan)

    @property
    def reports_success(self) -> bool:
        """Whether any episode ended with a success flag."""
        return bool(np.isfinite(self.successes).any())  # type: ignore[arg-type]

    def success_values(self, reported: bool | None = None) -> np.ndarray | None:
        """Per-episode success (0/1), a missing flag counting as failure when the env reports success at all.

        Envs such as the gridworld set the flag only where an episode ends by the agent's action (a pick-up), not
        at a time-out, so a missing flag is a failure there.

        :param reported: whether the env reports success (default: some episode here carries a flag)
        :return: shape (n_episodes,), or None when the env reports no success
        """
        reported = self.reports_success if reported is None else reported
        return self.success_or_failure() if reported else None

    def success_or_failure(self) -> np.ndarray:
        """Per-episode success (0/1), a missing flag counting as failure; shape (n_episodes,)."""
        return np.nan_to_num(np.asarray(self.successes, dtype=np.float64), nan=0.0)

    @staticmethod
    def concat(parts: list[Episodes]) -> Episodes:
        """Concatenate the episodes of several runs (e.g. one per evaluation seed)."""
        return Episodes(
            np.concatenate([p.returns for p in parts]),
            np.concatenate([p.lengths for p in parts]),
            np.concatenate([p.successes for p in parts]),  # type: ignore[misc]
        )


StepCallback = Callable[[dict[str, Any]], None]


def is_monitored(env: VecEnv) -> bool:
    """Whether episode infos carry the Monitor's true score.

    :param env: the vectorized env
    """
    return is_vecenv_wrapped(env, VecMonitor) or bool(env.env_is_wrapped(Monitor)[0])


def run_episodes(
    agent: Agent,
    env: VecEnv,
    n_episodes: int,
    deterministic: bool = False,
    step_callback: StepCallback | None = None,
) -> Episodes:
    """Play ``n_episodes`` episodes, carrying the recurrent state through every step.

    Episodes are counted fairly across the ``env.num_envs`` parallel envs, as SB3's ``evaluate_policy`` does:
    env i contributes exactly ``(n_episodes + i) // n_envs`` episodes, so short episodes are not over-represented.

    :param agent: the agent (``predict`` with state and episode_start)
    :param env: vectorized env, freshly created or seeded (it is reset here)
    :param n_episodes: number of episodes in total
    :param deterministic: greedy actions instead of sampled ones
    :param step_callback: called after each step with ``{"obs", "actions", "rewards", "dones", "infos", "agent"}``
    :return: the episodes, in completion order
    """
    n_envs = env.num_envs
    targets = np.array([(n_episodes + i) // n_envs for i in range(n_envs)], dtype=int)
    counts = np.zeros(n_envs, dtype=int)
    monitored = is_monitored(env)
    if not monitored:
        warnings.warn("evaluation env has no Monitor: scores are the summed rewards the agent sees", stacklevel=2)
    current_return = np.zeros(n_envs)
    current_length = np.zeros(n_envs, dtype=int)
    returns: list[float] = []
    lengths: list[int] = []
    successes: list[float] = []
    obs = env.reset()
    state: tuple[np.ndarray, ...] | None = None
    episode_start = np.ones(n_envs, dtype=bool)
    while (counts < targets).any():
        actions, state = agent.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)
        obs, rewards, dones, infos = env.step(actions)
        current_return += rewards
        current_length += 1
        if step_callback is not None:
            step_callback({"obs": obs, "actions": actions, "rewards": rewards, "dones": dones, "infos": infos, "agent": agent})
        for i in range(n_envs):
            if not dones[i]:
                continue
            if counts[i] < targets[i]:
                if not monitored:
                    returns.append(float(current_return[i]))
                    lengths.append(int(current_length[i]))
                    successes.append(_success(infos[i]))
                    counts[i] += 1
                elif "episode" in infos[i]:  # a done without "episode" is a life loss, not the end of the game
                    returns.append(float(infos[i]["episode"]["r"]))
                    lengths.append(int(infos[i]["episode"]["l"]))
                    successes.append(_success(infos[i]))
                    counts[i] += 1
            current_return[i] = 0.0
            current_length[i] = 0
        episode_start = dones
    return Episodes(
        np.asarray(returns, dtype=np.float64), np.asarray(lengths, dtype=np.int64), np.asarray(successes, dtype=np.float64)
    )


def _success(info: dict[str, Any]) -> float:
    """1.0 / 0.0 from the ``is_success`` or ``success`` flag of an episode's last info, nan without either."""
    for key in ("is_success", "success"):
        if key in info:
            return float(bool(info[key]))
    return float("nan")


def check_spaces(model: BaseAlgorithm, env: VecEnv, checkpoint: str | Path = "checkpoint", env_name: str = "env") -> None:
    """Raise ValueError when the checkpoint's observation or action space does not fit the env.

    Image observations are compared both as given and channel-first, since SB3 transposes images itself.

    :param model: the loaded model
    :param env: the evaluation env
    :param checkpoint: name used in the message
    :param env_name: name used in the message
    :raises ValueError: one line naming both spaces
    """
    env_obs = env.observation_space
    candidates = [env_obs]
    if isinstance(env_obs, gym.spaces.Box) and is_image_space(env_obs) and not is_image_space_channels_first(env_obs):
        candidates.append(VecTransposeImage.transpose_space(env_obs))
    if model.observation_space not in candidates:
        raise ValueError(
            f"observation space mismatch: checkpoint {checkpoint} expects {model.observation_space}, "
            f"env {env_name} gives {env_obs}"
        )
    if model.action_space != env.action_space:
        raise ValueError(
            f"action space mismatch: checkpoint {checkpoint} has {model.action_space}, env {env_name} has {env.action_space}"
        )


def active_units(agent: Any) -> np.ndarray | None:
    """The RIMs core's active units after the last predict, shape (n_envs, n_units), or None for other cores.

    :param agent: a loaded model (``model.policy.lstm_actor.last_active`` of shape (T, B, n_units))
    """
    core = getattr(getattr(agent, "policy", None), "lstm_actor", None)
    last = getattr(core, "last_active", None)
    if last is None:
        return None
    arr = last.detach().cpu().numpy() if hasattr(last, "detach") else np.asarray(last)
    return arr[-1].astype(bool)
