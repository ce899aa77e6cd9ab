"""MinAtar setting: registered ids pass the env checkers, flavours reach the game, shared space, extractor, CLI."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

pytest.importorskip("minatar", reason="the minatar package is not installed (pip install minatar)")

import rims_rl.envs as E
from rims_rl.config import load_agent_config
from rims_rl.envs import minatar as M
from rims_rl.torch_layers import MinAtarCNN

#: Channel count of each game's own planes (the minatar package's state_shape).
GAME_CHANNELS = {"Breakout": 4, "Asterix": 4, "Freeway": 7, "Seaquest": 10, "SpaceInvaders": 6}
#: Size of each game's minimal action set.
MINIMAL_ACTIONS = {"Breakout": 3, "Asterix": 5, "Freeway": 3, "Seaquest": 6, "SpaceInvaders": 4}


def _random_rollout(env: gym.Env, n_steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for _ in range(n_steps):
        obs, reward, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            obs, _ = env.reset()
            observations.append(obs)
    return np.stack(observations), np.asarray(rewards)


def test_ids_registered_and_settings_listed() -> None:
    assert [M.minatar_id(g) for g in M.GAMES] == [i for i in E.REGISTERED_IDS if i.startswith("RimsMinAtar/")]
    names = E.list_settings()
    assert "minatar" in names
    assert {f"minatar-{g.lower()}" for g in M.GAMES} <= set(names)
    with pytest.raises(ValueError, match="valid games"):
        M.minatar_id("Pong")


@pytest.mark.parametrize("game", list(M.GAMES))
@pytest.mark.parametrize("native", [False, True], ids=["shared", "native"])
def test_env_checkers(game: str, native: bool) -> None:
    kwargs = dict(full_action_space=False, n_channels=None) if native else {}
    gym_check_env(gym.make(M.minatar_id(game), render_mode="rgb_array", **kwargs).unwrapped)
    sb3_check_env(gym.make(M.minatar_id(game), **kwargs), warn=True)


@pytest.mark.parametrize("game", list(M.GAMES))
def test_observations_channel_first_and_padded(game: str) -> None:
    shared = gym.make(M.minatar_id(game))
    native = gym.make(M.minatar_id(game), full_action_space=False, n_channels=None)
    assert shared.observation_space == gym.spaces.Box(0, 1, (10, 10, 10), np.uint8)
    assert shared.action_space == gym.spaces.Discrete(6)
    assert native.observation_space.shape == (GAME_CHANNELS[game], 10, 10)
    assert native.action_space == gym.spaces.Discrete(MINIMAL_ACTIONS[game])
    obs, _ = _random_rollout(shared, 300, seed=1)
    assert obs.dtype == np.uint8 and set(np.unique(obs)) <= {0, 1}
    assert not obs[:, GAME_CHANNELS[game] :].any(), "padding planes must stay zero"
    assert obs[:, : GAME_CHANNELS[game]].any(axis=(0, 2, 3)).sum() >= 2, "the game's own planes are used"
    # channel-first: the game's (10, 10, C) state, moved to the front
    state = shared.unwrapped._game.state()  # type: ignore[attr-defined]
    np.testing.assert_array_equal(obs[-1, : GAME_CHANNELS[game]], np.moveaxis(state, 2, 0))


@pytest.mark.parametrize("game", ["Breakout", "Seaquest"])
def test_same_seed_same_episodes(game: str) -> None:
    a = _random_rollout(gym.make(M.minatar_id(game)), 400, seed=5)
    b = _random_rollout(gym.make(M.minatar_id(game)), 400, seed=5)
    c = _random_rollout(gym.make(M.minatar_id(game)), 400, seed=6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].shape != c[0].shape or not np.array_equal(a[0], c[0])


def test_vec_env_seeds_and_eval_splits() -> None:
    def rollout(venv) -> np.ndarray:  # type: ignore[no-untyped-def]
        rng = np.random.default_rng(0)
        obs = [venv.reset()]
        for _ in range(60):
            obs.append(venv.step(rng.integers(venv.action_space.n, size=venv.num_envs))[0])
        venv.close()
        return np.stack(obs)

    a = rollout(E.make_vec_env("minatar-seaquest", n_envs=2, seed=3))
    b = rollout(E.make_vec_env("minatar-seaquest", n_envs=2, seed=3))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[:, 0], a[:, 1])
    for split in E.load_setting("minatar-seaquest").splits:
        ev = E.make_eval_vec_env("minatar-seaquest", split, n_envs=1)
        assert ev.observation_space.shape == (10, 10, 10)
        ev.close()


@pytest.mark.parametrize("game", list(M.GAMES))
def test_flavour_settings_reach_the_game(game: str) -> None:
    setting = E.load_setting(f"minatar-{game.lower()}")
    assert setting.kind == "minatar" and setting.s_ref == 0.0 and setting.frame_stack is None
    expected = ["train", "no-sticky", "sticky-0.25"]
    if game in M.RAMPING_GAMES:
        expected += ["no-ramping", "no-ramping-no-sticky"]
    assert setting.splits == expected
    for split in setting.splits:
        entry = setting.env(split)
        assert entry.id == M.minatar_id(game)
        env = E.make_env(entry, seed=0).unwrapped
        assert isinstance(env, M.MinAtarEnv)
        assert env._game.sticky_action_prob == entry.kwargs["sticky_action_prob"]
        ramping = getattr(env._game.env, "ramping", None)
        if game in M.RAMPING_GAMES:
            assert ramping == entry.kwargs["difficulty_ramping"]
    assert setting.env("train").kwargs == {"sticky_action_prob": 0.1, "difficulty_ramping": True}


def test_sticky_actions_repeat_the_previous_action() -> None:
    """With sticky probability p, a fraction ~p of chosen actions is replaced by the previous one."""
    env = M.MinAtarEnv("Freeway", sticky_action_prob=0.25)
    env.reset(seed=0)
    game = env._game
    sticky, n = 0, 4000
    for t in range(n):
        chosen = 2 if t % 2 == 0 else 4  # alternate up / down: a sticky step keeps the other one
        env.step(chosen)
        sticky += game.last_action != chosen
    assert 0.2 < sticky / n < 0.3
    env = M.MinAtarEnv("Freeway", sticky_action_prob=0.0)
    env.reset(seed=0)
    for t in range(200):
        env.step(2 if t % 2 == 0 else 4)
        assert env._game.last_action == (2 if t % 2 == 0 else 4)


def test_ramping_off_keeps_the_game_at_its_start_speed() -> None:
    """Asterix speeds up every 100 steps when ramping is on (its ramp index grows); with ramping off it never does."""
    indices = {}
    for ramping in (True, False):
        env = M.MinAtarEnv("Asterix", sticky_action_prob=0.0, difficulty_ramping=ramping)
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        best = 0
        for _ in range(3000):
            _, _, terminated, _, _ = env.step(int(rng.integers(6)))
            best = max(best, env._game.env.difficulty_ramp())
            if terminated:
                env.reset()
        indices[ramping] = best
    assert indices[False] == 0 and indices[True] > 0


def test_transfer_setting_shares_one_space() -> None:
    setting = E.load_setting("minatar")
    assert list(setting.heldout) == list(M.GAMES) and setting.train_env.id == M.minatar_id("Breakout")
    envs = {game: E.make_env(setting.env(game)) for game in M.GAMES}
    for game, env in envs.items():
        E.check_transfer_compatible(envs["Breakout"], env)
        assert env.unwrapped.game == game  # type: ignore[attr-defined]
    native = {g: gym.make(M.minatar_id(g), full_action_space=False, n_channels=None) for g in ("Breakout", "Seaquest")}
    with pytest.raises(ValueError, match="observation_space"):
        E.check_transfer_compatible(native["Breakout"], native["Seaquest"])
    _, entry = E.resolve("minatar:Seaquest")
    assert entry.id == M.minatar_id("Seaquest")


def test_minatar_cnn() -> None:
    space = gym.spaces.Box(0, 1, (10, 10, 10), np.uint8)
    cnn = MinAtarCNN(space, features_dim=128)
    out = cnn(th.ones(5, 10, 10, 10))
    assert out.shape == (5, 128) and (out >= 0).all()
    assert cnn.cnn[0].kernel_size == (3, 3) and cnn.cnn[0].out_channels == 16
    assert cnn.linear[0].in_features == 16 * 8 * 8
    with pytest.raises(ValueError, match="channels, height, width"):
        MinAtarCNN(gym.spaces.Box(0, 1, (100,), np.uint8))


def test_agents_sections_identical_except_core() -> None:
    configs = {algo: load_agent_config(algo, M.minatar_id("Asterix")) for algo in ("rims_ppo", "lstm_ppo")}
    assert {section for _, section in configs.values()} == {"minatar"}
    rims, lstm = (configs[a][0].to_dict() for a in ("rims_ppo", "lstm_ppo"))
    rims_core, lstm_core = rims["policy_kwargs"].pop("core_kwargs"), lstm["policy_kwargs"].pop("core_kwargs")
    assert rims == lstm
    assert rims["policy_kwargs"]["features_extractor"] == "MinAtarCNN"
    assert rims_core["n_units"] * rims_core["unit_size"] == lstm_core["hidden_size"]


@pytest.mark.parametrize(("algo", "env"), [("rims_ppo", "minatar"), ("lstm_ppo", "minatar:Freeway")])
def test_train_cli_end_to_end(tmp_path, algo: str, env: str) -> None:  # type: ignore[no-untyped-def]
    from rims_rl.cli.train import main

    args = ["--algo", algo, "--env", env, "-n", "128", "--n-envs", "2", "-f", str(tmp_path), "--eval-freq", "0"]
    args += ["--heldout-episodes", "1", "--no-progress", "--verbose", "0", "-params", "n_steps:32", "batch_size:32"]
    assert main(args) == 0
    game = "Freeway" if ":" in env else "Breakout"
    (folder,) = (tmp_path / algo).iterdir()
    assert (folder / f"RimsMinAtar-{game}-v0.zip").is_file()


def test_evaluator_targets() -> None:
    from rims_rl.evaluation.targets import setting_targets

    targets = setting_targets("minatar-seaquest", n_episodes=2)
    assert [t.label for t in targets] == ["train", "no-sticky", "sticky-0.25", "no-ramping", "no-ramping-no-sticky"]
    assert all(t.ref_score == 0.0 and t.env_id == M.minatar_id("Seaquest") for t in targets)
    venv = targets[3].make_env(n_envs=1, seed=targets[3].seeds[0], render_mode="rgb_array")
    venv.reset()
    assert venv.observation_space.shape == (10, 10, 10)
    assert venv.get_images()[0].shape == (160, 160, 3)
    venv.close()
