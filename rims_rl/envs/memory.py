"""A small memory task: recall a cue shown at the first step after a delay (a memoryless policy cannot beat chance)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class CueRecallEnv(gym.Env[np.ndarray, np.int64]):
    """
    Step 0 shows one of ``n_cues`` cues (one-hot); the next ``delay`` observations are blank; then a query flag
    asks for the cue. Naming it gives reward 1, anything else 0, and the episode ends. Actions before the query
    have no effect. A memoryless policy earns ``1 / n_cues`` on average.

    Observation: float32 vector ``[cue one-hot (n_cues), query flag]``. Episode length: ``delay + 1`` steps.

    :param n_cues: number of possible cues (and actions), >= 2
    :param delay: number of blank steps between the cue and the query, >= 0
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, n_cues: int = 2, delay: int = 5) -> None:
        if isinstance(n_cues, bool) or not isinstance(n_cues, int) or n_cues < 2:
            raise ValueError(f"n_cues must be an integer >= 2, got {n_cues!r}")
        if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
            raise ValueError(f"delay must be an integer >= 0, got {delay!r}")
        self.n_cues = n_cues
        self.delay = delay
        self.observation_space = spaces.Box(0.0, 1.0, shape=(n_cues + 1,), dtype=np.float32)
        self.action_space = spaces.Discrete(n_cues)
        self._cue = 0
        self._t = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.n_cues + 1, dtype=np.float32)
        if self._t == 0:
            obs[self._cue] = 1.0
        if self._t == self.delay:
            obs[-1] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._cue = int(self.np_random.integers(self.n_cues))
        self._t = 0
        return self._obs(), {"cue": self._cue}

    def step(self, action: np.int64 | int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(np.int64(action)):
            raise ValueError(f"action must be an integer in [0, {self.n_cues}), got {action!r}")
        if self._t == self.delay:
            reward = float(int(action) == self._cue)
            return self._obs(), reward, True, False, {"cue": self._cue}
        self._t += 1
        return self._obs(), 0.0, False, False, {"cue": self._cue}


def recall_success(agent: Any, n_cues: int, delay: int, episodes: int = 60, first_seed: int = 1000) -> float:
    """
    Greedy success rate of a recurrent agent on fresh cue-recall episodes, one env, state carried.

    :param agent: anything with SB3's recurrent ``predict(obs, state=, episode_start=, deterministic=)``
    :param n_cues: as :class:`CueRecallEnv`
    :param delay: as :class:`CueRecallEnv`
    :param episodes: number of episodes (episode ``i`` is reset with seed ``first_seed + i``)
    :param first_seed: seed of the first episode
    :return: the fraction of episodes whose cue was recalled
    """
    env = CueRecallEnv(n_cues=n_cues, delay=delay)
    wins = 0.0
    for ep in range(episodes):
        obs, _ = env.reset(seed=first_seed + ep)
        state, start, done, reward = None, np.ones(1, dtype=bool), False, 0.0
        while not done:
            action, state = agent.predict(obs[None], state=state, episode_start=start, deterministic=True)
            obs, reward, done, _, _ = env.step(int(action[0]))
            start = np.zeros(1, dtype=bool)
        wins += reward
    return wins / episodes
