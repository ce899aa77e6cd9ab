"""The RIMs / LSTM / GRU policies inside sb3-contrib's RecurrentPPO: training, save/load, state handling."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import FakeImageEnv

from rims_rl import CnnRimsPolicy, LSTMCore, MiniGridCNN, MlpRimsPolicy, RIMs
from rims_rl.envs.memory import CueRecallEnv, recall_success

SMALL_RIMS = dict(
    n_units=4, k_active=2, unit_size=16, input_key_size=16, input_value_size=16, comm_key_size=8, comm_value_size=8
)
CORE_KWARGS = {"rims": SMALL_RIMS, "lstm": dict(hidden_size=64), "gru": dict(hidden_size=64)}
CORES = list(CORE_KWARGS)


def make_model(core: str, env=None, **kwargs) -> RecurrentPPO:
    env = env if env is not None else make_vec_env(lambda: CueRecallEnv(n_cues=3, delay=3), n_envs=4, seed=0)
    policy_kwargs = dict(core=core, core_kwargs=CORE_KWARGS[core], net_arch=[32])
    policy_kwargs.update(kwargs.pop("policy_kwargs", {}))
    return RecurrentPPO(
        kwargs.pop("policy", MlpRimsPolicy),
        env,
        n_steps=16,
        batch_size=32,
        n_epochs=2,
        seed=0,
        device="cpu",
        policy_kwargs=policy_kwargs,
        **kwargs,
    )


def rollout(model_or_policy, env: CueRecallEnv, n_steps: int = 20, seed: int = 3):
    """Record observations, then replay them: deterministic actions and states at each step."""
    obs, _ = env.reset(seed=seed)
    state, start = None, np.ones(1, dtype=bool)
    actions, states = [], []
    for _ in range(n_steps):
        action, state = model_or_policy.predict(obs[None], state=state, episode_start=start, deterministic=True)
        actions.append(action.copy())
        states.append((state[0].copy(), state[1].copy()))
        obs, _, terminated, truncated, _ = env.step(int(action[0]))
        start = np.array([terminated or truncated])
        if start[0]:
            obs, _ = env.reset()
    return actions, states


@pytest.mark.parametrize("core", CORES)
def test_learn_save_load_gives_identical_actions_and_states(core, tmp_path):
    model = make_model(core)
    model.learn(64)
    assert type(model.policy.lstm_actor) is {"rims": RIMs, "lstm": LSTMCore}.get(core, type(model.policy.lstm_actor))
    expected = rollout(model, CueRecallEnv(n_cues=3, delay=3))

    model.save(tmp_path / "model.zip")
    loaded = RecurrentPPO.load(tmp_path / "model.zip", device="cpu")
    assert loaded.policy.core_name == core and loaded.policy.core_kwargs == CORE_KWARGS[core]
    got = rollout(loaded, CueRecallEnv(n_cues=3, delay=3))

    model.policy.save(tmp_path / "policy.pth")
    policy = MlpRimsPolicy.load(tmp_path / "policy.pth", device="cpu")
    assert policy.core_name == core and policy.core_kwargs == CORE_KWARGS[core]
    got_policy = rollout(policy, CueRecallEnv(n_cues=3, delay=3))

    for actions, states in (got, got_policy):
        assert all(np.array_equal(a, b) for a, b in zip(actions, expected[0], strict=True))
        for (h, c), (h_ref, c_ref) in zip(states, expected[1], strict=True):
            assert np.array_equal(h, h_ref) and np.array_equal(c, c_ref)


@pytest.mark.parametrize("core", ["rims", "lstm"])
def test_cnn_policy_on_images_trains_and_exposes_diagnostics(core):
    env = make_vec_env(lambda: FakeImageEnv(screen_height=40, screen_width=40, n_channels=1), n_envs=2, seed=0)
    model = make_model(core, env=env, policy=CnnRimsPolicy)
    model.learn(32)
    assert model.policy.features_extractor.__class__.__name__ == "NatureCNN"
    if core == "rims":
        active = model.policy.lstm_actor.last_active
        assert active.dtype == th.bool and active.shape[-1] == SMALL_RIMS["n_units"]
        assert (active.sum(-1) == SMALL_RIMS["k_active"]).all()


def test_minigrid_cnn_on_symbolic_grid():
    space = spaces.Box(0, 10, shape=(7, 7, 5), dtype=np.uint8)
    extractor = MiniGridCNN(space, features_dim=32)
    obs = th.as_tensor(np.stack([space.sample() for _ in range(3)])).float()
    assert extractor(obs).shape == (3, 32)
    with pytest.raises(ValueError, match="high <= 31"):
        MiniGridCNN(spaces.Box(0, 255, shape=(7, 7, 3), dtype=np.uint8))


def test_shared_core_is_trained_by_the_value_loss_too():
    model = make_model("rims")
    policy = model.policy
    assert policy.lstm_critic is None and policy.shared_lstm
    n_envs, hidden = 4, policy.lstm_actor.hidden_size
    obs = th.rand(n_envs * 5, 4)
    zeros = (th.zeros(1, n_envs, hidden), th.zeros(1, n_envs, hidden))
    values, _, _ = policy.evaluate_actions(obs, th.zeros(n_envs * 5), RNNStates(zeros, zeros), th.zeros(n_envs * 5))
    values.sum().backward()
    grads = [p.grad for p in policy.lstm_actor.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads), "the value loss must reach the shared core"


def test_separate_critic_core_option():
    model = make_model("rims", policy_kwargs=dict(shared_core=False, enable_critic_lstm=True))
    assert isinstance(model.policy.lstm_critic, RIMs) and model.policy.lstm_critic is not model.policy.lstm_actor
    model.learn(32)


@pytest.mark.parametrize(
    ("policy_kwargs", "match"),
    [
        (dict(lstm_hidden_size=128), "contradicts lstm_hidden_size=128"),
        (dict(shared_core=True, enable_critic_lstm=True), "unshared core"),
        (dict(shared_core=True, share_features_extractor=False), "unshared core"),
        (dict(shared_core=True, shared_lstm=False), "contradicts shared_lstm"),
        (dict(n_lstm_layers=0), "n_lstm_layers"),
        (dict(lstm_kwargs=dict(batch_first=True)), "state layout"),
        (dict(lstm_kwargs=dict(bias=False)), "no RIMs counterpart"),
        (dict(core="transformer"), "core must be one of"),
        (dict(core_kwargs=dict(n_units=2, k_active=3)), "k_active"),
    ],
)
def test_invalid_policy_options_raise_value_error(policy_kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_model("rims", policy_kwargs=policy_kwargs)


def test_memoryless_policy_cannot_beat_chance_on_cue_recall():
    env = CueRecallEnv(n_cues=3, delay=4)
    query_obs = set()
    for seed in range(30):
        obs, _info = env.reset(seed=seed)
        for _ in range(env.delay):
            obs, *_ = env.step(0)
        query_obs.add(obs.tobytes())
    assert len(query_obs) == 1, "the query step looks the same whatever the cue: a memoryless policy scores 1/n_cues"


def cue_recall_success(core: str, seed: int, n_timesteps: int = 16_000, n_cues: int = 3, delay: int = 4) -> float:
    """Train RecurrentPPO (env and model seeded with ``seed``) and return its greedy success on fresh episodes."""
    env = make_vec_env(lambda: CueRecallEnv(n_cues=n_cues, delay=delay), n_envs=8, seed=seed)
    model = RecurrentPPO(
        MlpRimsPolicy,
        env,
        n_steps=32,
        batch_size=64,
        n_epochs=4,
        learning_rate=3e-3,
        gamma=0.9,
        ent_coef=0.01,
        seed=seed,
        device="cpu",
        policy_kwargs=dict(core=core, core_kwargs=CORE_KWARGS[core], net_arch=[32]),
    )
    model.learn(n_timesteps)
    return recall_success(model, n_cues, delay)


LEARNING_SEEDS = (0, 1, 2)


@pytest.mark.parametrize("core", ["rims", "lstm"])
def test_recurrent_ppo_learns_cue_recall(core):
    """
    Recall one of 3 cues after 4 blank steps: a memoryless policy scores at most 1/3. 3 seeds x 16k steps per core.

    A seed either solves the task (success 1.0) or remembers 2 of the 3 cues (0.58-0.75); which one it does is
    decided by float rounding, so it changes with the CPU model. Success over 60 greedy episodes, measured on
    this machine (AMD EPYC, 1 torch thread, torch 2.13.0 CPU), seeds 0-4, 16k steps:

    ======  ==============================================  ===========================
    core    run                                             seeds 0, 1, 2, 3, 4
    ======  ==============================================  ===========================
    rims    as here                                         1.0  1.0  0.75 1.0  1.0
    rims    initial weights x (1 + 1e-6 N(0, 1)), draw 1    0.67 1.0  0.67 1.0  1.0
    rims    initial weights x (1 + 1e-6 N(0, 1)), draw 2    1.0  1.0  0.58 1.0  1.0
    lstm    as here                                         1.0  1.0  0.75 1.0  0.75
    lstm    initial weights x (1 + 1e-6 N(0, 1)), draw 1    1.0  0.75 0.58 1.0  1.0
    lstm    initial weights x (1 + 1e-6 N(0, 1)), draw 2    0.67 1.0  1.0  1.0  1.0
    ======  ==============================================  ===========================

    The perturbation stands in for another CPU's rounding: it flips seeds the same way. Over these 30 runs, 9 fell
    short of 1.0 and none scored below 0.58. The same 30 runs from other initial weights (one RNG draw fewer
    before the policy): 8 short, none below 0.58, seeds 0-2 passing in every row; ``torch.set_flush_denormal(True)``
    changed nothing. At 10k steps (60 runs, both initialisations) 2 RIMs runs stayed at chance (0.25, 0.33).

    The failing report (another CPU, one seed) had 0.583 for RIMs. So the test asks what holds on any CPU: the
    median over 3 seeds is >= 0.5, i.e. at least 2 of the 3 seeds remember at least 2 of the 3 cues (a memoryless
    policy scores 1/3: the same action at every query); every row above passes it on seeds 0-2. Asking for 1.0
    from a majority of seeds would fail about one time in five (a seed falls short about 3 times in 10).
    Measured time per seed here: about 13 s (RIMs) and 8 s (LSTM), with other jobs sharing the 2 cores.
    """
    successes = [cue_recall_success(core, seed) for seed in LEARNING_SEEDS]
    assert float(np.median(successes)) >= 0.5, successes


def test_gym_registration_of_memory_task():
    import rims_rl  # noqa: F401  (registers the ids)

    env = gym.make("RimsCueRecall-v0")
    assert isinstance(env.unwrapped, CueRecallEnv)
