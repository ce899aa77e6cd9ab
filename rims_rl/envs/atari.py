"""Atari factory (ALE v5 under SB3's AtariWrapper, 4 frames per agent step), flavours and game transfer.

The raw env is ``ALE/<Game>-v5`` created with ``frameskip=1`` and ALE's own sticky actions off; sticky actions
(p=0.25 by default, per emulator frame, as in Machado et al. 2018) come from SB3's
:class:`~stable_baselines3.common.atari_wrappers.StickyActionEnv` directly above the raw env, which draws from the
env's ``np_random`` and keeps the repeated action in Python. Same rule as ALE's, but its whole state can be saved
and restored (ALE keeps the last action outside ``cloneState``), which exact resume needs. SB3's
:class:`~stable_baselines3.common.atari_wrappers.AtariWrapper` then repeats each action 4 frames with max-pooling,
resizes to 84x84 grayscale and no-op-resets. Training envs add reward clipping and life-loss termination;
evaluation envs do neither. A :class:`Monitor` sits directly on the raw ALE env, below every wrapper, so its episode
return ``r`` is always the true score of a whole game (its episode length ``l`` counts emulator frames, including
no-op resets, not agent steps).
"""

from __future__ import annotations

import difflib
import functools
from typing import Any

import ale_py
import gymnasium as gym
from stable_baselines3.common import atari_wrappers as sb3_atari
from stable_baselines3.common.monitor import Monitor

gym.register_envs(ale_py)

#: Frames the emulator advances per agent step (action repeat with max-pool over the last two frames).
FRAME_SKIP = 4
#: Sticky-action probability (Machado et al. 2018), applied at every emulator frame (SB3's StickyActionEnv).
STICKY_ACTION_PROB = 0.25
NOOP_MAX = 30
SCREEN_SIZE = 84

#: Paper App. E.2 game transfer: source games and target games.
TRANSFER_SOURCES: tuple[str, ...] = ("Pong", "Riverraid", "Seaquest")
TRANSFER_TARGETS: tuple[str, ...] = (
    "Alien",
    "Asterix",
    "Boxing",
    "Centipede",
    "Gopher",
    "Hero",
    "Jamesbond",
    "Krull",
    "Robotank",
    "RoadRunner",
    "StarGunner",
    "WizardOfWor",
)


def atari_games() -> list[str]:
    """:return: the game names that have an ``ALE/<Game>-v5`` id registered (e.g. ``"Pong"``)."""
    return sorted(i[4:-3] for i in gym.registry if i.startswith("ALE/") and i.endswith("-v5"))


def is_atari_id(env_id: str) -> bool:
    """
    :param env_id: a gymnasium id (``"ALE/Pong-v5"``, ``"PongNoFrameskip-v4"``) or a bare game name (``"Pong"``)
    :return: whether the id names an ALE game
    """
    if env_id in gym.registry:
        entry = gym.registry[env_id].entry_point
        return isinstance(entry, str) and entry.startswith("ale_py")
    return f"ALE/{env_id}-v5" in gym.registry


def atari_id(game_or_id: str) -> str:
    """
    :param game_or_id: a game name (``"Pong"``) or an ALE gymnasium id
    :return: the gymnasium id (``"ALE/Pong-v5"`` for a game name)
    """
    if game_or_id in gym.registry and is_atari_id(game_or_id):
        return game_or_id
    if f"ALE/{game_or_id}-v5" in gym.registry:
        return f"ALE/{game_or_id}-v5"
    close = difflib.get_close_matches(game_or_id, atari_games(), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see rims_rl.envs.atari_games()"
    raise ValueError(f"unknown Atari game or id {game_or_id!r}{hint}")


def game_name(game_or_id: str) -> str:
    """:return: the ALE game name of a game name or id (``"ALE/Pong-v5"`` -> ``"Pong"``)."""
    env_id = atari_id(game_or_id)
    return str(gym.registry[env_id].kwargs["game"]) if "game" in gym.registry[env_id].kwargs else env_id


@functools.cache
def _flavour_info(env_id: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, int], bool]:
    """Query ALE once per game: modes, difficulties, default (mode, difficulty), whether minimal action sets differ."""
    env = gym.make(env_id, frameskip=1, repeat_action_probability=0.0)
    try:
        ale = env.unwrapped.ale  # type: ignore[attr-defined]
        modes = tuple(int(m) for m in ale.getAvailableModes())
        difficulties = tuple(int(d) for d in ale.getAvailableDifficulties())
        default_set = tuple(ale.getMinimalActionSet())
        differ = False
        for mode in modes:
            for difficulty in difficulties:
                ale.setMode(mode)
                ale.setDifficulty(difficulty)
                ale.reset_game()
                differ |= tuple(ale.getMinimalActionSet()) != default_set
    finally:
        env.close()
    return modes, difficulties, _default_flavour(env_id, modes, difficulties), differ


def _default_flavour(env_id: str, modes: tuple[int, ...], difficulties: tuple[int, ...]) -> tuple[int, int]:
    """ALE does not expose a ROM's default mode: find the mode whose start state (RAM after reset) matches mode=None."""

    def start_ram(mode: int | None) -> bytes:
        env = gym.make(env_id, frameskip=1, repeat_action_probability=0.0, mode=mode, difficulty=None)
        try:
            env.reset(seed=0)
            for _ in range(60):
                env.step(0)
            return bytes(env.unwrapped.ale.getRAM())  # type: ignore[attr-defined]
        finally:
            env.close()

    default_ram = start_ram(None)
    difficulty = 0 if 0 in difficulties else difficulties[0]  # ALE's default difficulty is 0
    for mode in modes:
        if start_ram(mode) == default_ram:
            return mode, difficulty
    return modes[0], difficulty  # ALE's RomSettings default: the first available mode


def game_flavours(game_or_id: str) -> dict[str, Any]:
    """
    The flavours ALE lists for a game (queried once per process, then cached).

    :param game_or_id: a game name or ALE id
    :return: dict with ``modes``, ``difficulties``, ``default`` (mode, difficulty), ``heldout`` (every other
        (mode, difficulty) pair, in ALE's order) and ``minimal_action_sets_differ``
    """
    modes, difficulties, default, differ = _flavour_info(atari_id(game_or_id))
    heldout = [(m, d) for m in modes for d in difficulties if (m, d) != default]
    return dict(
        modes=list(modes),
        difficulties=list(difficulties),
        default=default,
        heldout=heldout,
        minimal_action_sets_differ=differ,
    )


def validate_flavour(game_or_id: str, mode: int | None, difficulty: int | None) -> None:
    """
    :param game_or_id: a game name or ALE id
    :param mode: a game mode or None (the default)
    :param difficulty: a difficulty or None (the default)
    :raises ValueError: when ALE does not list the mode or difficulty for this game, naming the valid ones
    """
    if mode is None and difficulty is None:
        return
    flavours = game_flavours(game_or_id)
    if mode is not None and mode not in flavours["modes"]:
        raise ValueError(f"mode {mode} is not available for {game_name(game_or_id)}; valid modes: {flavours['modes']}")
    if difficulty is not None and difficulty not in flavours["difficulties"]:
        raise ValueError(
            f"difficulty {difficulty} is not available for {game_name(game_or_id)}; "
            f"valid difficulties: {flavours['difficulties']}"
        )


def atari_settings(
    game_or_id: str,
    *,
    training: bool,
    mode: int | None = None,
    difficulty: int | None = None,
    full_action_space: bool = False,
    repeat_action_probability: float = STICKY_ACTION_PROB,
) -> dict[str, Any]:
    """
    The env settings of :func:`make_atari_env`, as plain data for a run's config.

    :param game_or_id: a game name or ALE id
    :param training: training (clipped rewards, life-loss termination) or evaluation (true scores, whole games)
    :param mode: ALE game mode (None: the game's default)
    :param difficulty: ALE difficulty (None: the game's default)
    :param full_action_space: use all 18 actions
    :param repeat_action_probability: sticky-action probability per emulator frame
    :return: a YAML-safe dict
    """
    if not 0.0 <= repeat_action_probability < 1.0:
        raise ValueError(f"repeat_action_probability must be in [0, 1) (got {repeat_action_probability})")
    return dict(
        env_id=atari_id(game_or_id),
        ale_py_version=ale_py.__version__,
        mode=mode,
        difficulty=difficulty,
        full_action_space=bool(full_action_space),
        ale_frameskip=1,
        frame_skip=FRAME_SKIP,
        max_pool_last_two_frames=True,
        repeat_action_probability=float(repeat_action_probability),
        sticky_actions="per emulator frame, SB3 StickyActionEnv on the env's np_random (ALE's own off)",
        noop_max=NOOP_MAX,
        screen_size=SCREEN_SIZE,
        grayscale=True,
        fire_reset="when the game has FIRE (as SB3 AtariWrapper)",
        clip_reward=bool(training),
        terminal_on_life_loss=bool(training),
        monitor="below all wrappers: episode r is the true game score",
    )


def check_no_frameskip(env: gym.Env) -> None:
    """
    Guard against stacking a second frame skip on an env that already skips frames.

    :param env: the raw env about to be put under a frame-skipping wrapper
    :raises ValueError: when the env (ALE ``frameskip`` > 1 or a random frame-skip range) already skips
    """
    frameskip = getattr(env.unwrapped, "_frameskip", 1)
    if frameskip != 1:
        raise ValueError(
            f"{env.unwrapped.spec.id if env.unwrapped.spec else env.unwrapped} already skips frames "
            f"(frameskip={frameskip}); a second {FRAME_SKIP}-frame skip would stack. Create it with frameskip=1."
        )


class EpisodicLifeEnv(sb3_atari.EpisodicLifeEnv):
    """SB3's life-loss wrapper, except that ``reset(seed=...)`` always starts a new game (so seeding is reproducible)."""

    def reset(self, **kwargs: Any) -> sb3_atari.AtariResetReturn:
        """
        :param kwargs: passed to the env's reset; a seed forces a real reset
        :return: (obs, info)
        """
        if kwargs.get("seed") is not None:
            self.was_real_done = True
        return super().reset(**kwargs)


def wrap_atari(
    env: gym.Env,
    *,
    training: bool,
    monitor_file: str | None = None,
    monitor: bool = True,
    repeat_action_probability: float = 0.0,
) -> gym.Env:
    """
    Apply rims_rl's Atari preprocessing to a raw ALE env created with ``frameskip=1``.

    The wrapper chain is SB3's :class:`~stable_baselines3.common.atari_wrappers.AtariWrapper` (sticky actions left
    to ALE), with :class:`EpisodicLifeEnv` in place of SB3's so that a seeded reset always starts a new game.

    :param env: raw ALE env
    :param training: add reward clipping and life-loss termination
    :param monitor_file: Monitor log file (None: keep episode stats in ``info["episode"]`` only)
    :param monitor: place a Monitor directly on the raw env (true game scores in ``info["episode"]["r"]``)
    :param repeat_action_probability: sticky actions per emulator frame, from SB3's ``StickyActionEnv`` (0: none;
        leave ALE's own ``repeat_action_probability`` at 0 when using it)
    :return: the wrapped env, observations ``(84, 84, 1)`` uint8
    """
    check_no_frameskip(env)
    if monitor:
        env = Monitor(env, filename=monitor_file)
    if repeat_action_probability > 0.0:
        env = sb3_atari.StickyActionEnv(env, repeat_action_probability)
    env = sb3_atari.NoopResetEnv(env, noop_max=NOOP_MAX)
    env = sb3_atari.MaxAndSkipEnv(env, skip=FRAME_SKIP)
    if training:
        env = EpisodicLifeEnv(env)
    if "FIRE" in env.unwrapped.get_action_meanings():  # type: ignore[attr-defined]
        env = sb3_atari.FireResetEnv(env)
    env = sb3_atari.WarpFrame(env, width=SCREEN_SIZE, height=SCREEN_SIZE)
    if training:
        env = sb3_atari.ClipRewardEnv(env)
    return env


def make_atari_env(
    game_or_id: str,
    *,
    training: bool,
    mode: int | None = None,
    difficulty: int | None = None,
    full_action_space: bool = False,
    repeat_action_probability: float = STICKY_ACTION_PROB,
    seed: int | None = None,
    monitor_file: str | None = None,
    monitor: bool = True,
    **env_kwargs: Any,
) -> gym.Env:
    """
    One preprocessed Atari env (frame stacking is done at the VecEnv level, see ``rims_rl.envs.make_vec_env``).

    :param game_or_id: a game name (``"Pong"``) or ALE id (``"ALE/Pong-v5"``)
    :param training: training env (clipped rewards, life loss ends an episode) or evaluation env (neither)
    :param mode: ALE game mode (None: default); ValueError listing the valid ones if ALE does not list it
    :param difficulty: ALE difficulty (None: default); ValueError listing the valid ones if ALE does not list it
    :param full_action_space: use all 18 actions (needed to share a policy head across games or flavours)
    :param repeat_action_probability: sticky-action probability per emulator frame (see :func:`wrap_atari`)
    :param seed: if given, the env's first reset uses it (and the action space is seeded)
    :param monitor_file: Monitor log file
    :param monitor: put a Monitor directly on the raw env
    :param env_kwargs: further ``gym.make`` kwargs for the raw ALE env (``frameskip`` must be 1)
    :return: the env; see :func:`atari_settings` for its settings as data
    """
    env_id = atari_id(game_or_id)
    validate_flavour(env_id, mode, difficulty)
    env_kwargs.setdefault("frameskip", 1)
    if not 0.0 <= repeat_action_probability < 1.0:
        raise ValueError(f"repeat_action_probability must be in [0, 1) (got {repeat_action_probability})")
    raw = gym.make(
        env_id,
        mode=mode,
        difficulty=difficulty,
        full_action_space=full_action_space,
        repeat_action_probability=0.0,
        **env_kwargs,
    )
    env = wrap_atari(raw, training=training, monitor_file=monitor_file, monitor=monitor,
                     repeat_action_probability=repeat_action_probability)  # fmt: skip
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def transfer_pairs(
    sources: tuple[str, ...] | list[str] = TRANSFER_SOURCES, targets: tuple[str, ...] | list[str] = TRANSFER_TARGETS
) -> list[tuple[str, str]]:
    """
    :param sources: source games
    :param targets: target games
    :return: every (source, target) pair of the game-transfer protocol, sources outermost
    """
    return [(s, t) for s in sources for t in targets]


def check_transfer_compatible(source_env: gym.Env | Any, target_env: gym.Env | Any) -> None:
    """
    Check a source-game policy can be loaded into a target-game run: identical observation and action spaces.

    :param source_env: env (or VecEnv, or anything with ``observation_space``/``action_space``, e.g. an SB3 model)
    :param target_env: the same for the target game
    :raises ValueError: naming the space that differs
    """
    for name in ("observation_space", "action_space"):
        a, b = getattr(source_env, name), getattr(target_env, name)
        if a != b:
            raise ValueError(f"transfer needs the same {name}: source has {a}, target has {b} (use full_action_space=True)")
