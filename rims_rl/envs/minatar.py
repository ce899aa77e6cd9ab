"""MinAtar (Young & Tian 2019): five Atari-like games on a 10x10 grid of binary object planes, trainable on a CPU.

The game logic is the ``minatar`` package's (``minatar.Environment``); this module is the gymnasium adapter. The
package's own gymnasium ids (``MinAtar/<Game>-v0/-v1``, ``minatar.gym``) do not work with gymnasium 1.x: they are
registered through the plugin entry point that gymnasium 1.0 removed, their ``reset`` does not call
``super().reset(seed=...)`` (gymnasium's checker fails) and their rewards are ints (SB3's checker fails).

:class:`MinAtarEnv` fixes those and adds what rims_rl needs:

- observations channel-first ``Box(0, 1, (n_channels, 10, 10), uint8)`` (the package gives ``(10, 10, C)`` bools);
- a shared space across games for game-to-game transfer: by default every game's planes are padded with all-zero
  planes to :data:`MAX_CHANNELS` (= 10, Seaquest's count), the game's own channel ``i`` staying channel ``i``, and
  the action space is MinAtar's full set of 6 actions (no-op, left, up, right, down, fire; the original MinAtar
  interface). ``n_channels=None`` and ``full_action_space=False`` give the game's own planes and minimal action set;
- the flavours the package can vary: ``sticky_action_prob`` (MinAtar's default 0.1: with that probability the
  previous action is repeated) and ``difficulty_ramping`` (on by default; only Asterix, Seaquest and SpaceInvaders
  ramp, Breakout and Freeway ignore it);
- seeding through gymnasium's ``np_random``: ``reset(seed=s)`` reseeds the game (and its sticky-action draws), so
  the same seed gives the same episode.

Registered ids (by ``import rims_rl.envs``): ``RimsMinAtar/<Game>-v0`` for the games of :data:`GAMES`, each with a
:class:`~gymnasium.wrappers.TimeLimit` of :data:`MAX_EPISODE_STEPS` steps (a safety net: MinAtar games end when the
player dies; Freeway after 2,500 steps).
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

#: Game name -> the ``minatar`` package's module name.
GAMES: dict[str, str] = {
    "Breakout": "breakout",
    "Asterix": "asterix",
    "Freeway": "freeway",
    "Seaquest": "seaquest",
    "SpaceInvaders": "space_invaders",
}
#: The games whose difficulty ramps (enemy speed or spawn rate grows over time) when ``difficulty_ramping`` is on.
RAMPING_GAMES: tuple[str, ...] = ("Asterix", "Seaquest", "SpaceInvaders")
#: Largest channel count of the five games (Seaquest); observations are padded to it by default.
MAX_CHANNELS = 10
#: MinAtar's grid size.
GRID_SIZE = 10
#: MinAtar's full action set: no-op, left, up, right, down, fire.
N_ACTIONS = 6
#: MinAtar's default sticky-action probability.
STICKY_ACTION_PROB = 0.1
#: Truncation of every registered id.
MAX_EPISODE_STEPS = 10_000
#: Registered id pattern.
ID_FORMAT = "RimsMinAtar/{game}-v0"

# Fixed colours for rgb_array rendering (channel i -> colour i; background black).
_PALETTE = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 190],
    ],
    dtype=np.uint8,
)


def minatar_id(game: str) -> str:
    """
    :param game: a game name of :data:`GAMES` (``"Breakout"``) or a registered id
    :return: the registered id, e.g. ``"RimsMinAtar/Breakout-v0"``
    :raises ValueError: for an unknown game, listing the valid ones
    """
    if game in GAMES:
        return ID_FORMAT.format(game=game)
    if game in {ID_FORMAT.format(game=g) for g in GAMES}:
        return game
    raise ValueError(f"unknown MinAtar game {game!r}; valid games: {', '.join(GAMES)}")


def is_minatar_id(env_id: str) -> bool:
    """:return: whether ``env_id`` is one of this module's registered ids."""
    return env_id in {ID_FORMAT.format(game=g) for g in GAMES}


class MinAtarEnv(gym.Env[np.ndarray, np.int64]):
    """
    One MinAtar game as a gymnasium env (see the module docstring).

    :param game: a game name of :data:`GAMES`
    :param sticky_action_prob: probability that the previous action is repeated instead of the chosen one
    :param difficulty_ramping: whether the game speeds up over time (Asterix, Seaquest, SpaceInvaders)
    :param full_action_space: MinAtar's 6 actions (True) or the game's minimal action set
    :param n_channels: pad the game's planes with zero planes up to this count (None: the game's own count)
    :param render_mode: None or ``"rgb_array"`` (each cell 16x16 pixels, one colour per channel)
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(
        self,
        game: str,
        sticky_action_prob: float = STICKY_ACTION_PROB,
        difficulty_ramping: bool = True,
        full_action_space: bool = True,
        n_channels: int | None = MAX_CHANNELS,
        render_mode: str | None = None,
    ) -> None:
        from minatar import Environment

        if game not in GAMES:
            raise ValueError(f"unknown MinAtar game {game!r}; valid games: {', '.join(GAMES)}")
        if not 0.0 <= sticky_action_prob < 1.0:
            raise ValueError(f"sticky_action_prob must be in [0, 1) (got {sticky_action_prob})")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array' (got {render_mode!r})")
        self.game = game
        self.sticky_action_prob = float(sticky_action_prob)
        self.difficulty_ramping = bool(difficulty_ramping)
        self.render_mode = render_mode
        self._game = Environment(
            GAMES[game], sticky_action_prob=self.sticky_action_prob, difficulty_ramping=self.difficulty_ramping
        )
        self.game_channels = int(self._game.state_shape()[2])
        channels = self.game_channels if n_channels is None else int(n_channels)
        if channels < self.game_channels:
            raise ValueError(f"{game} has {self.game_channels} channels; n_channels={n_channels} cannot hold them")
        self.n_channels = channels
        self.action_set = list(range(N_ACTIONS)) if full_action_space else list(self._game.minimal_action_set())
        self.action_space = spaces.Discrete(len(self.action_set))
        self.observation_space = spaces.Box(0, 1, (channels, GRID_SIZE, GRID_SIZE), dtype=np.uint8)

    def _obs(self) -> np.ndarray:
        """:return: (n_channels, 10, 10) uint8: the game's planes, channel-first, then zero planes."""
        obs = np.zeros((self.n_channels, GRID_SIZE, GRID_SIZE), dtype=np.uint8)
        obs[: self.game_channels] = np.moveaxis(self._game.state(), 2, 0)
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """
        :param seed: reseeds gymnasium's ``np_random``; every episode then seeds the game's random state (dynamics and
            sticky actions) from ``np_random``, so an episode is a function of ``np_random``'s state at its reset (what
            exact resume replays)
        :param options: unused
        :return: (observation (n_channels, 10, 10) uint8, info)
        """
        super().reset(seed=seed)
        self._game.seed(int(self.np_random.integers(2**31 - 1)))
        self._game.last_action = 0  # no sticky action carried over from the previous episode
        self._game.reset()
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """
        :param action: index into the action set
        :return: (observation, reward, terminated, truncated (always False; the TimeLimit truncates), info)
        """
        reward, done = self._game.act(self.action_set[int(action)])
        return self._obs(), float(reward), bool(done), False, {}

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """:return: (160, 160, 3) uint8 image in ``rgb_array`` mode (the highest channel present wins a cell), else None."""
        if self.render_mode != "rgb_array":
            return None
        planes = np.moveaxis(self._game.state(), 2, 0).astype(bool)
        image = np.zeros((GRID_SIZE, GRID_SIZE, 3), dtype=np.uint8)
        for i, plane in enumerate(planes):
            image[plane] = _PALETTE[i % len(_PALETTE)]
        return np.kron(image, np.ones((16, 16, 1), dtype=np.uint8))


def make_minatar_env(game: str, **kwargs: Any) -> MinAtarEnv:
    """
    Entry point of the registered ids.

    :param game: a game name of :data:`GAMES`
    :param kwargs: :class:`MinAtarEnv` kwargs
    :return: the env
    """
    return MinAtarEnv(game, **kwargs)


def register_minatar() -> list[str]:
    """
    Register ``RimsMinAtar/<Game>-v0`` for every game (no-op when already registered or when ``minatar`` is absent).

    :return: the ids registered (empty when the ``minatar`` package is not installed)
    """
    import importlib.util

    if importlib.util.find_spec("minatar") is None:
        return []
    ids = []
    for game in GAMES:
        env_id = ID_FORMAT.format(game=game)
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point="rims_rl.envs.minatar:make_minatar_env",
                kwargs={"game": game},
                max_episode_steps=MAX_EPISODE_STEPS,
            )
        ids.append(env_id)
    return ids


#: Alias exported by :mod:`rims_rl.envs`.
MINATAR_GAMES = GAMES
