"""Evaluation rollouts: true scores, fair episode counting, recurrent state handling, random baseline, errors."""

import gymnasium as gym
import numpy as np
import pytest
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from rims_rl.evaluation import UniformRandomAgent, check_spaces, load_model, run_episodes
from rims_rl.evaluation.checkpoints import resolve_agent
from rims_rl.safe_io import save_model


class KnownRewardEnv(gym.Env):
    """Episode k (counted per env instance) lasts lengths[k % 3] steps; every step pays ``reward``."""

    def __init__(self, reward: float = 5.0, lengths: tuple[int, ...] = (2, 5, 9), obs_dim: int = 3):
        self.observation_space = gym.spaces.Box(-1, 1, (obs_dim,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.reward, self.lengths, self.episode, self.t = reward, lengths, -1, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        return np.zeros(3, np.float32), {}

    def step(self, action):
        self.t += 1
        done = self.t >= self.lengths[self.episode % len(self.lengths)]
        return np.zeros(3, np.float32), self.reward, done, False, {}


class ActionRewardEnv(gym.Env):
    """One-step episodes paying the action taken (0 or 1): the random policy scores 0.5 on average."""

    observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return np.zeros(3, np.float32), float(action), True, False, {}


def _venv(n_envs, clip=True, monitor=True):
    def make():
        env = KnownRewardEnv()
        if monitor:
            env = Monitor(env)
        return gym.wrappers.ClipReward(env, -1.0, 1.0) if clip else env

    return DummyVecEnv([make for _ in range(n_envs)])


class StateCheckingAgent:
    """Stub recurrent agent: its state counts steps since the episode start; checks resets happen only at starts."""

    def __init__(self):
        self.calls = 0

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        n = obs.shape[0]
        if state is None:
            assert episode_start.all()
            state = (np.zeros(n),)
        steps = np.where(episode_start, 0, state[0] + 1)
        self.calls += 1
        return np.zeros(n, dtype=int), (steps,)


def test_score_is_true_return_below_clipping():
    eps = run_episodes(StateCheckingAgent(), _venv(1), n_episodes=6)
    # rewards of 5 clipped to 1 for the agent, but the score is the Monitor's raw return
    np.testing.assert_allclose(eps.returns, [10, 25, 45, 10, 25, 45])
    np.testing.assert_array_equal(eps.lengths, [2, 5, 9, 2, 5, 9])


def test_score_without_monitor_is_summed_reward():
    with pytest.warns(UserWarning, match="no Monitor"):
        eps = run_episodes(StateCheckingAgent(), _venv(1, clip=False, monitor=False), n_episodes=3)
    np.testing.assert_allclose(eps.returns, [10, 25, 45])


def test_fair_episode_counting_with_parallel_envs():
    eps = run_episodes(StateCheckingAgent(), _venv(3), n_episodes=7)
    assert len(eps.returns) == 7
    # env i contributes (7 + i) // 3 episodes: 2, 3, 2 -> its first episodes, not the most short ones
    assert sorted(eps.lengths.tolist()) == sorted([2, 5, 2, 5, 9, 2, 5])


@pytest.mark.parametrize("deterministic", [False, True])
def test_recurrent_state_carried_and_reset_at_episode_start(deterministic):
    seen, modes = [], set()

    class Recorder(StateCheckingAgent):
        def predict(self, obs, state=None, episode_start=None, deterministic=False):
            action, new_state = super().predict(obs, state, episode_start, deterministic)
            seen.append(int(new_state[0][0]))
            modes.add(deterministic)
            return action, new_state

    run_episodes(Recorder(), _venv(1), n_episodes=3, deterministic=deterministic)
    # greedy and sampled alike: step counters restart only at episode starts (lengths 2, 5, 9)
    assert seen == [0, 1, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert modes == {deterministic}


class FlaggedEnv(KnownRewardEnv):
    """Episode k ends with info["success"] = (k % 3 == 0), except every third (k % 3 == 2) that sets no flag."""

    def step(self, action):
        obs, reward, done, truncated, info = super().step(action)
        if done and self.episode % 3 != 2:
            info["success"] = self.episode % 3 == 0
        return obs, reward, done, truncated, info


def test_success_read_from_the_last_info_missing_flag_is_failure():
    env = DummyVecEnv([lambda: Monitor(FlaggedEnv())])
    eps = run_episodes(StateCheckingAgent(), env, n_episodes=6)
    np.testing.assert_array_equal(eps.successes, [1.0, 0.0, np.nan, 1.0, 0.0, np.nan])
    assert eps.reports_success
    np.testing.assert_array_equal(eps.success_values(), [1, 0, 0, 1, 0, 0])
    # an env that never sets a flag reports no success at all
    plain = run_episodes(StateCheckingAgent(), _venv(1), n_episodes=3)
    assert not plain.reports_success and plain.success_values() is None


def test_uniform_random_baseline():
    env = DummyVecEnv([lambda: Monitor(ActionRewardEnv()) for _ in range(2)])
    agent = UniformRandomAgent(env.action_space, 2, seed=0)
    eps = run_episodes(agent, env, n_episodes=400)
    assert len(eps.returns) == 400
    assert set(np.unique(eps.returns)) <= {0.0, 1.0}
    assert abs(eps.returns.mean() - 0.5) < 0.1
    # seeded: same episodes again
    env2 = DummyVecEnv([lambda: Monitor(ActionRewardEnv()) for _ in range(2)])
    eps2 = run_episodes(UniformRandomAgent(env2.action_space, 2, seed=0), env2, n_episodes=400)
    np.testing.assert_array_equal(eps.returns, eps2.returns)


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_model(tmp_path / "nope.zip")
    with pytest.raises(FileNotFoundError):
        resolve_agent(tmp_path / "nope.zip")
    with pytest.raises(FileNotFoundError, match="neither a run folder"):
        resolve_agent("no-such-zoo-id")
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="corrupt"):
        load_model(bad)
    empty_run = tmp_path / "run_1"
    empty_run.mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resolve_agent(empty_run)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    model = RecurrentPPO(
        "MlpLstmPolicy",
        DummyVecEnv([lambda: KnownRewardEnv()]),
        n_steps=16,
        batch_size=16,
        n_epochs=1,
        policy_kwargs={"lstm_hidden_size": 8, "net_arch": []},
        seed=0,
        device="cpu",
    )
    path = tmp_path_factory.mktemp("ckpt") / "tiny.zip"
    save_model(model, path)
    return path


def test_truncated_checkpoint_is_corrupt(tiny_model, tmp_path):
    data = tiny_model.read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        load_model(cut)


def test_observation_space_mismatch_names_both_spaces(tiny_model):
    model = load_model(tiny_model)
    env = DummyVecEnv([lambda: Monitor(KnownRewardEnv(obs_dim=5))])
    with pytest.raises(ValueError, match=r"observation space mismatch") as info:
        check_spaces(model, env, "tiny.zip", "Known-5")
    msg = str(info.value)
    assert "(3,)" in msg and "(5,)" in msg and "\n" not in msg
    check_spaces(model, _venv(1), "tiny.zip", "Known")  # matching spaces pass


def test_run_folder_checkpoint_choice(tmp_path, tiny_model):
    run = tmp_path / "lstm_ppo" / "Env_1"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("checkpoints/rl_model_900_steps.zip", "checkpoints/rl_model_10000_steps.zip", "best_model.zip"):
        (run / name).write_bytes(tiny_model.read_bytes())
    (run / "args.yml").write_text("algo: lstm_ppo\nenv: gridworld-pickup\nseed: 3\n")
    spec = resolve_agent(run)
    assert spec.path.name == "rl_model_10000_steps.zip" and spec.core == "lstm" and spec.seed == 3
    assert resolve_agent(run, best=True).path.name == "best_model.zip"
    (run / "Env.zip").write_bytes(tiny_model.read_bytes())
    assert resolve_agent(run).path.name == "Env.zip"
