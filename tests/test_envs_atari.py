"""Atari factory: preprocessing applied once, true evaluation scores, flavours, game transfer."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common import atari_wrappers as sb3_atari
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.monitor import Monitor

import rims_rl.envs as E
from rims_rl.envs import atari

GAME = "Breakout"  # cheap: a random game ends within a few hundred agent steps


class RewardTap(gym.Wrapper):
    """Sums the raw rewards of the env below it (the unwrapped ALE env) over the current game."""

    def reset(self, **kwargs):
        self.total = 0.0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.total += float(reward)
        return obs, reward, terminated, truncated, info


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("training", [True, False])
def test_check_env(training):
    env = E.make_atari_env(GAME, training=training)
    assert env.observation_space.shape == (84, 84, 1) and env.observation_space.dtype == np.uint8
    # the close check re-makes the env from its spec, which cannot hold our wrappers: check closing by hand
    gym_check_env(env, skip_render_check=True, skip_close_check=True)
    env.close()
    env.close()
    sb3_check_env(E.make_atari_env(GAME, training=training))


def test_four_frames_per_step_and_sticky_actions_recorded():
    env = E.make_atari_env(GAME, training=True, seed=0)
    ale = env.unwrapped.ale
    # sticky actions come from SB3's StickyActionEnv directly above the raw env (per frame, p=0.25), not from ALE,
    # whose last action is not in cloneState (exact resume needs it)
    assert ale.getFloat("repeat_action_probability") == 0.0
    sticky = env
    while not isinstance(sticky, sb3_atari.StickyActionEnv):
        sticky = sticky.env
    assert sticky.action_repeat_probability == 0.25 and isinstance(sticky.env, Monitor)
    settings = E.atari_settings(GAME, training=True)
    assert settings["repeat_action_probability"] == 0.25 and settings["frame_skip"] == 4 and settings["ale_frameskip"] == 1
    assert settings["clip_reward"] and settings["terminal_on_life_loss"]
    assert not E.atari_settings(GAME, training=False)["clip_reward"]
    for _ in range(100):
        before = ale.getEpisodeFrameNumber()
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:  # a game can end inside the 4-frame skip
            break
        assert ale.getEpisodeFrameNumber() - before == 4


def _play_one_game(training: bool, seed: int, max_steps: int = 5000):
    raw = RewardTap(gym.make(atari.atari_id(GAME), frameskip=1, repeat_action_probability=0.25))
    env = E.wrap_atari(raw, training=training)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    wrapped_total = 0.0
    for _ in range(max_steps):
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        wrapped_total += float(reward)
        if "episode" in info:
            return info["episode"]["r"], raw.total, wrapped_total, raw.unwrapped.ale.game_over()
        if terminated or truncated:
            env.reset()
    raise AssertionError("the game did not end")


def test_eval_score_is_raw_ale_return_of_whole_game():
    score, raw_total, wrapped_total, game_over = _play_one_game(training=False, seed=1)
    assert game_over  # the episode is the whole game (no life-loss cut)
    assert score == raw_total == wrapped_total  # no clipping, Monitor below all wrappers
    assert raw_total > 0


def test_training_monitor_still_reports_true_score():
    score, raw_total, _, game_over = _play_one_game(training=True, seed=1)
    assert game_over and score == raw_total


def test_second_frame_skip_is_refused():
    with pytest.raises(ValueError, match="already skips frames"):
        E.wrap_atari(gym.make(atari.atari_id(GAME)), training=True)  # v5 default: frameskip=4
    with pytest.raises(ValueError, match="already skips frames"):
        E.make_atari_env(GAME, training=True, frameskip=4)


def test_invalid_mode_or_difficulty_lists_valid_values():
    flavours = E.game_flavours(GAME)
    with pytest.raises(ValueError, match=r"valid modes: \[0, 4, 8"):
        E.make_atari_env(GAME, training=True, mode=3)
    with pytest.raises(ValueError, match=r"valid difficulties: \[0, 1\]"):
        E.make_atari_env(GAME, training=True, difficulty=7)
    mode, difficulty = flavours["heldout"][-1]
    env = E.make_atari_env(GAME, training=False, mode=mode, difficulty=difficulty)
    assert env.unwrapped._game_mode == mode


def test_flavours_from_ale():
    flavours = E.game_flavours(GAME)
    ale = gym.make(atari.atari_id(GAME)).unwrapped.ale
    all_pairs = [(m, d) for m in ale.getAvailableModes() for d in ale.getAvailableDifficulties()]
    assert flavours["default"] == (0, 0)
    assert flavours["heldout"] == [p for p in all_pairs if p != flavours["default"]]
    setting = E.load_setting("atari-flavours", game=GAME)
    assert len(setting.heldout) == len(all_pairs) - 1
    assert setting.train_env.kwargs["full_action_space"] == flavours["minimal_action_sets_differ"]
    assert setting.heldout["mode4-difficulty1"].kwargs == {**setting.train_env.kwargs, "mode": 4, "difficulty": 1}


def test_transfer_setting_and_spaces_match():
    setting = E.load_setting("atari-transfer")
    assert list(setting.train_envs) == list(E.TRANSFER_SOURCES) == ["Pong", "Riverraid", "Seaquest"]
    assert len(setting.heldout) == 12 and "WizardOfWor" in setting.heldout
    assert len(E.transfer_pairs()) == 36
    source = E.make_env(setting.env("Pong"), training=True)
    target = E.make_env(setting.env("Alien"), training=True)
    assert source.action_space == gym.spaces.Discrete(18)
    E.check_transfer_compatible(source, target)
    with pytest.raises(ValueError, match="action_space"):
        E.check_transfer_compatible(E.make_atari_env("Pong", training=True), target)
    venv = E.make_vec_env("atari-transfer", split="Alien", n_envs=1)
    assert venv.observation_space.shape == (84, 84, 4) and venv.action_space == gym.spaces.Discrete(18)
    venv.close()


def test_unknown_game_suggests_close_match():
    with pytest.raises(ValueError, match="Breakout"):
        E.make_atari_env("Breakot", training=True)
    with pytest.raises(E.UnknownEnvError, match="Breakout"):
        E.make_vec_env("ALE/Breakot-v5")


def _rollout(venv, n_steps: int = 30) -> np.ndarray:
    rng = np.random.default_rng(0)
    obs = [venv.reset()]
    for _ in range(n_steps):
        obs.append(venv.step(rng.integers(venv.action_space.n, size=venv.num_envs))[0])
    venv.close()
    return np.stack(obs)


@pytest.mark.parametrize("training", [True, False])
def test_vec_env_same_seed_same_episodes(training):
    make = E.make_vec_env if training else E.make_eval_vec_env
    a = _rollout(make("atari-flavours", n_envs=2, seed=5))
    b = _rollout(make("atari-flavours", n_envs=2, seed=5))
    assert a.shape == (31, 2, 84, 84, 4)  # the setting stacks 4 frames
    np.testing.assert_array_equal(a, b)


def test_vec_env_state_restores_emulator_lives_and_sticky_action():
    """
    A training VecEnv rebuilt from its saved state (replay since the last reset, which after a lost life is a
    pseudo-reset inside a running game) continues exactly as the original: frames, rewards and ends, over
    600 more steps, at a point 1,200 steps in (about 60 lost lives of a random Breakout player, measured).
    """
    from rims_rl.envs.replay import attach_recorders, get_venv_state, set_venv_state
    from rims_rl.envs.vec import make_vec_env

    def build():
        return attach_recorders(make_vec_env("atari-flavours", n_envs=2, seed=3, training=True, frame_stack=4))

    actions = np.random.default_rng(0).integers(0, 4, size=(1800, 2))
    original = build()
    original.reset()
    ends = 0
    for t in range(1200):
        ends += int(original.step(actions[t])[2].sum())
    assert ends > 20  # life losses happened, so the restore point is inside a game
    restored = build()
    set_venv_state(restored, get_venv_state(original))
    for t in range(1200, 1800):
        a, b = original.step(actions[t]), restored.step(actions[t])
        for x, y in zip(a[:3], b[:3], strict=True):
            np.testing.assert_array_equal(x, y)


def test_ale_sticky_actions_are_not_capturable():
    """ALE's own sticky actions keep the last action outside cloneState: resume says it is not exact."""
    from rims_rl.envs.replay import NotCapturable, ReplayRecorder

    env = ReplayRecorder(E.wrap_atari(gym.make(atari.atari_id(GAME), frameskip=1, repeat_action_probability=0.25),
                                      training=True))  # fmt: skip
    env.reset(seed=0)
    with pytest.raises(NotCapturable, match="sticky"):
        env.get_state()
