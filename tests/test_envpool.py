"""EnvPool path (``vec_env_cls="envpool"``) against the gymnasium path on the same ALE game and seed.

EnvPool draws no-ops and sticky actions from its own random generators, so the two paths cannot give the same
episodes frame by frame; compared here: spaces, dtypes, the first observations (equal but for the no-op
draws), episode-end semantics (life loss, game over, terminal observations, reward clipping, true scores) and
the score and length statistics of a random policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("envpool", reason="envpool is not installed (pip install 'rims_rl[envpool]')")

import rims_rl.envs as E

GAME = "Breakout"  # 5 lives, rewards 1/4/7: clipping and life loss both show; short random games
LIVES = 5


@dataclass
class Play:
    """What a random policy saw on one VecEnv."""

    scores: list[float] = field(default_factory=list)  # info["episode"]["r"] of each finished game
    lengths: list[int] = field(default_factory=list)
    dones_per_game: list[int] = field(default_factory=list)
    reward_sums: list[float] = field(default_factory=list)  # sum of the rewards the agent got, per finished game
    rewards: set[float] = field(default_factory=set)
    missing_terminal_obs: int = 0


def _play(venv, n_games: int, seed: int = 0) -> Play:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    play = Play()
    dones = np.zeros(venv.num_envs, dtype=int)
    sums = np.zeros(venv.num_envs)
    obs = venv.reset()
    assert obs.dtype == np.uint8 and obs.shape == (venv.num_envs, *venv.observation_space.shape)
    while len(play.scores) < n_games:
        obs, rewards, done, infos = venv.step(rng.integers(venv.action_space.n, size=venv.num_envs))
        assert rewards.dtype == np.float32 and done.dtype == bool
        play.rewards |= set(rewards.tolist())
        sums += rewards
        dones += done
        for i, info in enumerate(infos):
            if done[i] and "terminal_observation" not in info:
                play.missing_terminal_obs += 1
            if "episode" in info:
                assert done[i], "a game ends only at a done step"
                play.scores.append(float(info["episode"]["r"]))
                play.lengths.append(int(info["episode"]["l"]))
                play.dones_per_game.append(int(dones[i]))
                play.reward_sums.append(float(sums[i]))
                dones[i], sums[i] = 0, 0.0
    venv.close()
    return play


def _venvs(training: bool, n_envs: int = 4, seed: int = 0, **kwargs):  # type: ignore[no-untyped-def]
    return {
        path: E.make_vec_env(GAME, n_envs=n_envs, seed=seed, training=training, vec_env_cls=path, frame_stack=4, **kwargs)
        for path in ("envpool", "dummy")
    }


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
def test_same_spaces_and_first_observations(training: bool) -> None:
    venvs = _venvs(training)
    pool, gym_path = venvs["envpool"], venvs["dummy"]
    assert pool.observation_space == gym_path.observation_space == E.make_vec_env(GAME, frame_stack=4).observation_space
    assert pool.action_space == gym_path.action_space
    a, b = pool.reset(), gym_path.reset()
    assert a.shape == b.shape == (4, 84, 84, 4) and a.dtype == b.dtype == np.uint8
    # same ALE frames, same max-pool, grayscale and area resize: only the random no-op count moves the paddle and ball
    assert (a != b).mean() < 0.01
    full = _venvs(training, n_envs=1, env_kwargs={"full_action_space": True})
    assert full["envpool"].action_space == full["dummy"].action_space == gym.spaces.Discrete(18)
    for venv in (*venvs.values(), *full.values()):
        venv.close()


def test_same_seed_same_observations() -> None:
    def rollout(venv) -> np.ndarray:  # type: ignore[no-untyped-def]
        rng = np.random.default_rng(0)
        obs = [venv.reset()]
        for _ in range(150):
            obs.append(venv.step(rng.integers(4, size=venv.num_envs))[0])
        venv.close()
        return np.stack(obs)

    make = lambda seed: E.make_vec_env(GAME, n_envs=2, seed=seed, vec_env_cls="envpool")  # noqa: E731
    a, b, c = rollout(make(3)), rollout(make(3)), rollout(make(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    reseeded = make(4)
    reseeded.seed(3)  # as an SB3 algorithm does: takes effect at the next reset
    np.testing.assert_array_equal(rollout(reseeded), a)


@pytest.fixture(scope="module")
def plays() -> dict[tuple[str, bool], Play]:
    out = {}
    for training in (True, False):
        for path, venv in _venvs(training).items():
            out[(path, training)] = _play(venv, n_games=16)
    return out


@pytest.mark.parametrize("path", ["envpool", "dummy"])
def test_episode_ends(plays: dict[tuple[str, bool], Play], path: str) -> None:
    train, evaluation = plays[(path, True)], plays[(path, False)]
    # training: every life loss ends an episode, a game lasts LIVES episodes; rewards clipped
    assert set(train.dones_per_game) == {LIVES}
    assert train.rewards <= {0.0, 1.0}
    assert all(s <= r for s, r in zip(train.reward_sums, train.scores, strict=True))
    # evaluation: one episode per game, true rewards, whose sum is the reported score
    assert set(evaluation.dones_per_game) == {1}
    np.testing.assert_allclose(evaluation.reward_sums, evaluation.scores)
    assert train.missing_terminal_obs == evaluation.missing_terminal_obs == 0


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
def test_random_policy_statistics_agree(plays: dict[tuple[str, bool], Play], training: bool) -> None:
    pool, gym_path = plays[("envpool", training)], plays[("dummy", training)]
    a, b = np.asarray(pool.scores), np.asarray(gym_path.scores)
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    assert abs(a.mean() - b.mean()) < 4 * se + 0.25, (a.mean(), b.mean(), se)
    assert 0.5 < a.mean() < 4.0  # Breakout's random score is about 1.4 (sticky actions, 30 no-ops)
    # lengths in emulator frames: the gymnasium path's Monitor also counts the no-op frames (at most 30)
    assert abs(np.mean(pool.lengths) - np.mean(gym_path.lengths)) < 0.2 * np.mean(gym_path.lengths)


def test_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="ALE games only"):
        E.make_vec_env("CartPole-v1", vec_env_cls="envpool")
    with pytest.raises(ValueError, match="does not take"):
        E.make_vec_env(GAME, vec_env_cls="envpool", env_kwargs={"frameskip": 4})
    with pytest.raises(ValueError, match="Monitor CSV"):
        E.make_vec_env(GAME, vec_env_cls="envpool", monitor_dir=str(tmp_path))
    with pytest.raises(ValueError, match="valid modes"):
        E.make_vec_env(GAME, vec_env_cls="envpool", env_kwargs={"mode": 3})


def test_train_cli(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from rims_rl.cli.train import main

    args = ["--algo", "lstm_ppo", "-n", "64", "--n-envs", "2", "-f", str(tmp_path), "--eval-freq", "0"]
    args += ["--no-progress", "--verbose", "0", "--vec-env", "envpool", "-params", "n_steps:32", "batch_size:32"]
    assert main(["--env", GAME, *args]) == 0
    assert main(["--env", "gridworld-pickup", *args]) == 2
    assert "ALE games only" in capsys.readouterr().err
