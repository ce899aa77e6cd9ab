"""The RIMs policies are drop-ins for sb3-contrib's LSTM policies: its keywords, its defaults, its scripts.

Every keyword combination sb3-contrib's own tests and docs use for ``MlpLstmPolicy`` / ``CnnLstmPolicy`` /
``MultiInputLstmPolicy`` (Box, Discrete, image and Dict observations; shared, separate and feedforward critic;
several layers; ``lstm_kwargs``; separate feature extractors) trains and saves/loads with both cores.
"""

from __future__ import annotations

import logging
import runpy

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib import RecurrentPPO as SB3ContribRecurrentPPO
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import FakeImageEnv, IdentityEnv, IdentityEnvBox

import rims_rl
from rims_rl import CnnRimsPolicy, LSTMCore, MlpRimsPolicy, MultiInputRimsPolicy, RecurrentPPO, RIMs
from rims_rl.envs.memory import CueRecallEnv
from rims_rl.policies import StackedCore, rims_layout

CORES = ["rims", "lstm"]


class DictCueEnv(gym.Env):
    """Cue recall with a Dict observation: the cue vector and the step count as a Discrete entry."""

    def __init__(self) -> None:
        self.inner = CueRecallEnv(n_cues=2, delay=2)
        self.observation_space = spaces.Dict({"cue": self.inner.observation_space, "step": spaces.Discrete(4)})
        self.action_space = self.inner.action_space
        self.t = 0

    def reset(self, *, seed=None, options=None):
        obs, info = self.inner.reset(seed=seed)
        self.t = 0
        return {"cue": obs, "step": 0}, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.inner.step(action)
        self.t = min(self.t + 1, 3)
        return {"cue": obs, "step": self.t}, reward, terminated, truncated, info


def _env(kind: str):
    makers = {
        "box": lambda: CueRecallEnv(n_cues=3, delay=3),
        "box_action": lambda: IdentityEnvBox(ep_length=8),
        "discrete": lambda: IdentityEnv(3, ep_length=8),
        "image": lambda: FakeImageEnv(screen_height=36, screen_width=36, n_channels=1),
        "dict": DictCueEnv,
    }
    return make_vec_env(makers[kind], n_envs=2, seed=0)


SMALL_IMAGE = dict(features_extractor_kwargs=dict(features_dim=16))
TWO_LAYERS = dict(lstm_hidden_size=8, lstm_kwargs=dict(dropout=0.5), n_lstm_layers=2)
# (policy, env, sb3-contrib policy_kwargs, expected critic): the combinations of sb3-contrib's tests/test_lstm.py and docs.
# Critic: "shared" (the actor's core), "core" (its own core) or "linear" (sb3-contrib's feedforward critic).
CASES = {
    "swap-only": (MlpRimsPolicy, "box", {}, "shared"),
    "shared": (MlpRimsPolicy, "box", dict(shared_lstm=True, enable_critic_lstm=False, lstm_hidden_size=8), "shared"),
    "separate-2-layers": (MlpRimsPolicy, "box", dict(enable_critic_lstm=True, **TWO_LAYERS), "core"),
    "feedforward-critic-2-layers": (MlpRimsPolicy, "box", dict(enable_critic_lstm=False, **TWO_LAYERS), "linear"),
    "box-action-separate-extractors": (
        MlpRimsPolicy,
        "box_action",
        dict(share_features_extractor=False, lstm_hidden_size=8),
        "core",
    ),
    "discrete-obs": (MlpRimsPolicy, "discrete", dict(lstm_hidden_size=8), "core"),
    "image-shared": (
        CnnRimsPolicy,
        "image",
        dict(shared_lstm=True, enable_critic_lstm=False, lstm_hidden_size=8, **SMALL_IMAGE),
        "shared",
    ),
    "image-2-layers": (CnnRimsPolicy, "image", dict(lstm_hidden_size=8, n_lstm_layers=2, **SMALL_IMAGE), "core"),
    "dict-feedforward-critic": (MultiInputRimsPolicy, "dict", dict(enable_critic_lstm=False, lstm_hidden_size=8), "linear"),
}


def _record(model, env, n_steps: int = 12):
    """:return: observations and episode starts of ``n_steps`` steps of ``model`` on ``env``; its actions and states."""
    obs = env.reset()
    state, starts = None, np.ones(env.num_envs, dtype=bool)
    inputs, outputs = [], []
    for _ in range(n_steps):
        action, state = model.predict(obs, state=state, episode_start=starts, deterministic=True)
        inputs.append((obs, starts))
        outputs.append((action.copy(), state[0].copy(), state[1].copy()))
        obs, _, starts, _ = env.step(action)
    return inputs, outputs


def _replay(model, inputs):
    """:return: ``model``'s deterministic actions and states on recorded observations and episode starts."""
    state, outputs = None, []
    for obs, starts in inputs:
        action, state = model.predict(obs, state=state, episode_start=starts, deterministic=True)
        outputs.append((action.copy(), state[0].copy(), state[1].copy()))
    return outputs


@pytest.mark.parametrize("core", CORES)
@pytest.mark.parametrize("case", list(CASES))
def test_sb3_contrib_keywords_train_save_and_load(case, core, tmp_path):
    policy, env_kind, policy_kwargs, critic = CASES[case]
    env = _env(env_kind)
    model = RecurrentPPO(
        policy,
        env,
        n_steps=16,
        batch_size=16,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs=dict(core=core, **policy_kwargs),
    )
    model.learn(256)
    layers = policy_kwargs.get("n_lstm_layers", 1)
    hidden = policy_kwargs.get("lstm_hidden_size", 384)
    assert model.policy.lstm_hidden_state_shape == (layers, 1, hidden)
    assert model._last_lstm_states.pi[0].shape == (layers, 2, hidden)
    assert (model.policy.lstm_critic is not None, model.policy.critic is not None) == (critic == "core", critic == "linear")
    actor, dropout = model.policy.lstm_actor, policy_kwargs.get("lstm_kwargs", {}).get("dropout", 0.0)
    if core == "rims":
        assert isinstance(actor, StackedCore if layers > 1 else RIMs)
        assert layers == 1 or (all(isinstance(m, RIMs) for m in actor.layers) and actor.dropout.p == dropout)
    else:
        assert isinstance(actor, LSTMCore) and actor.rnn.num_layers == layers and actor.rnn.dropout == dropout

    inputs, expected = _record(model, _env(env_kind))
    model.save(tmp_path / "model.zip")
    loaded = RecurrentPPO.load(tmp_path / "model.zip", device="cpu")
    got = _replay(loaded, inputs)
    for (a, h, c), (a_ref, h_ref, c_ref) in zip(got, expected, strict=True):
        assert np.array_equal(a, a_ref) and np.array_equal(h, h_ref) and np.array_equal(c, c_ref)


@pytest.mark.parametrize(
    ("hidden", "layout"),
    [
        (384, dict(n_units=6, unit_size=64, k_active=4)),  # RIMs' default layout
        (256, dict(n_units=4, unit_size=64, k_active=3)),  # sb3-contrib's default size: 6 does not divide it
        (100, dict(n_units=5, unit_size=20, k_active=3)),
        (8, dict(n_units=4, unit_size=2, k_active=3)),
        (7, dict(n_units=1, unit_size=7, k_active=1)),
    ],
)
def test_rims_layout_for_lstm_hidden_size(hidden, layout):
    assert rims_layout(hidden, {}) == layout
    assert rims_layout(hidden, {"k_active": 1}) == {**layout, "k_active": 1}


def test_rims_layout_keeps_what_the_user_gave_and_rejects_contradictions():
    assert rims_layout(96, {"n_units": 3}) == {"n_units": 3, "unit_size": 32}  # RIMs' own k_active default then applies
    assert rims_layout(96, {"unit_size": 16}) == {"n_units": 6, "unit_size": 16, "k_active": 4}
    for core_kwargs, match in [
        ({"n_units": 5}, "does not divide"),
        ({"unit_size": 10}, "does not divide"),
        ({"n_units": 4, "unit_size": 16}, "contradicts lstm_hidden_size=96"),
        ({"unit_size": 48, "k_active": 3}, "exceeds n_units=2"),
    ]:
        with pytest.raises(ValueError, match=match):
            rims_layout(96, core_kwargs)


def test_chosen_layout_is_logged_and_saved_with_the_model(caplog, tmp_path):
    env = _env("box")
    with caplog.at_level(logging.INFO, logger="rims_rl.policies"):
        model = RecurrentPPO(
            "MlpRimsPolicy", env, n_steps=8, batch_size=8, device="cpu", policy_kwargs=dict(lstm_hidden_size=100)
        )
    assert "n_units=5 x unit_size=20, k_active=3" in caplog.text
    assert model.policy.core_kwargs == dict(n_units=5, unit_size=20, k_active=3)
    model.save(tmp_path / "m.zip")
    loaded = RecurrentPPO.load(tmp_path / "m.zip", device="cpu")
    assert loaded.policy_kwargs["core_kwargs"] == dict(n_units=5, unit_size=20, k_active=3)
    assert loaded.policy.core_kwargs == model.policy.core_kwargs and loaded.policy.lstm_output_dim == 100


@pytest.mark.parametrize("core", CORES)
def test_defaults_package_spelling_versus_sb3_contrib_spelling(core):
    """No sb3-contrib keyword: the paper's shared core. Any of them: sb3-contrib's defaults for the rest."""
    space, actions = spaces.Box(0, 1, (4,)), spaces.Discrete(2)
    package = MlpRimsPolicy(space, actions, lambda _: 1e-3, core=core)
    assert package.shared_lstm and package.value_loss_trains_core and package.lstm_critic is None
    assert package.lstm_output_dim == 384
    sb3 = MlpRimsPolicy(space, actions, lambda _: 1e-3, core=core, n_lstm_layers=1)
    assert not sb3.shared_lstm and sb3.enable_critic_lstm and sb3.lstm_critic is not None
    assert sb3.lstm_output_dim == 256
    size = dict(n_units=2, k_active=1, unit_size=8) if core == "rims" else dict(hidden_size=16)
    sized = MlpRimsPolicy(space, actions, lambda _: 1e-3, core=core, shared_lstm=False, core_kwargs=size)
    assert sized.lstm_output_dim == 16, "a size given in core_kwargs is kept"
    critic_ff = MlpRimsPolicy(space, actions, lambda _: 1e-3, core=core, shared_core=False, enable_critic_lstm=False)
    assert critic_ff.lstm_critic is None and critic_ff.critic is not None


@pytest.mark.parametrize(("shared", "trains"), [(dict(shared_core=True), True), (dict(shared_lstm=True), False)])
def test_shared_core_versus_shared_lstm_value_gradient(shared, trains):
    """``shared_core``: the value loss trains the core (the paper). ``shared_lstm``: sb3-contrib's detached value path."""
    policy = MlpRimsPolicy(spaces.Box(0, 1, (4,)), spaces.Discrete(2), lambda _: 1e-3, lstm_hidden_size=8, **shared)
    assert policy.lstm_critic is None and policy.shared_lstm
    zeros = (th.zeros(1, 2, 8), th.zeros(1, 2, 8))
    values, _, _ = policy.evaluate_actions(th.rand(6, 4), th.zeros(6), RNNStates(zeros, zeros), th.zeros(6))
    values.sum().backward()
    reached = any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.lstm_actor.parameters())
    assert reached == trains


def test_policy_aliases_are_one_class():
    assert rims_rl.RecurrentPPO is RecurrentPPO
    assert issubclass(RecurrentPPO, SB3ContribRecurrentPPO)
    for name in ("MlpRimsPolicy", "CnnRimsPolicy", "MultiInputRimsPolicy", "MlpLstmPolicy"):
        assert name in RecurrentPPO.policy_aliases


SB3_CONTRIB_README = """
import numpy as np

from sb3_contrib import RecurrentPPO
from stable_baselines3.common.evaluation import evaluate_policy

model = RecurrentPPO(POLICY, "CartPole-v1", n_steps=64, batch_size=64, n_epochs=2, verbose=0)
model.learn(128)

vec_env = model.get_env()
mean_reward, std_reward = evaluate_policy(model, vec_env, n_eval_episodes=2, warn=False)
model.save(PATH)
del model  # remove to demonstrate saving and loading

model = RecurrentPPO.load(PATH)

obs = vec_env.reset()
# cell and hidden state of the LSTM
lstm_states = None
num_envs = 1
# Episode start signals are used to reset the lstm states
episode_starts = np.ones((num_envs,), dtype=bool)
for _ in range(20):
    action, lstm_states = model.predict(obs, state=lstm_states, episode_start=episode_starts, deterministic=True)
    obs, rewards, dones, info = vec_env.step(action)
    episode_starts = dones
"""


@pytest.mark.parametrize(
    ("header", "policy"),
    [
        ("from rims_rl import MlpRimsPolicy", "MlpRimsPolicy"),  # sb3-contrib's RecurrentPPO, the class swapped
        ("from rims_rl import RecurrentPPO", "'MlpRimsPolicy'"),  # rims_rl's RecurrentPPO, the policy by name
    ],
)
def test_sb3_contrib_readme_script_with_only_the_policy_swapped(header, policy, tmp_path):
    script = SB3_CONTRIB_README.replace("POLICY", policy).replace("PATH", repr(str(tmp_path / "ppo_recurrent")))
    if "RecurrentPPO" in header:
        script = script.replace("from sb3_contrib import RecurrentPPO\n", "")
    (tmp_path / "user_script.py").write_text(header + "\n" + script)
    namespace = runpy.run_path(str(tmp_path / "user_script.py"))
    assert isinstance(namespace["model"].policy, MlpRimsPolicy)
    assert namespace["lstm_states"][0].shape == (1, 1, 384)


@pytest.mark.parametrize(
    "policy_kwargs",
    [
        {},
        dict(shared_lstm=True),
        dict(shared_core=False, enable_critic_lstm=False),
        dict(lstm_hidden_size=12, n_lstm_layers=2, lstm_kwargs=dict(dropout=0.25)),
        dict(core="lstm", lstm_hidden_size=12, n_lstm_layers=2, lstm_kwargs=dict(bias=False)),
        dict(core="gru", shared_lstm=True, lstm_hidden_size=12),
    ],
)
def test_constructor_parameters_rebuild_the_same_policy(policy_kwargs):
    """Policy-only files rebuild the policy from ``_get_constructor_parameters``: same layout, same value-gradient rule."""
    policy = MlpRimsPolicy(spaces.Box(0, 1, (4,)), spaces.Discrete(2), lambda _: 1e-3, **policy_kwargs)
    data = policy._get_constructor_parameters()
    rebuilt = MlpRimsPolicy(**data)  # lr_schedule is a constant-schedule placeholder there
    assert rebuilt._get_constructor_parameters() == data
    assert rebuilt.value_loss_trains_core == policy.value_loss_trains_core and rebuilt.shared_lstm == policy.shared_lstm
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in policy.state_dict().items()}


@pytest.mark.parametrize(("saver", "loader"), [(RecurrentPPO, SB3ContribRecurrentPPO), (SB3ContribRecurrentPPO, RecurrentPPO)])
def test_models_load_across_rims_rl_and_sb3_contrib_recurrent_ppo(saver, loader, tmp_path):
    model = saver(MlpRimsPolicy, _env("box"), n_steps=8, batch_size=8, device="cpu", policy_kwargs=dict(lstm_hidden_size=8))
    inputs, expected = _record(model, _env("box"))
    model.save(tmp_path / "m.zip")
    loaded = loader.load(tmp_path / "m.zip", device="cpu")
    assert type(loaded) is loader and loaded.policy.core_kwargs == model.policy.core_kwargs
    for got, ref in zip(_replay(loaded, inputs), expected, strict=True):
        assert all(np.array_equal(g, r) for g, r in zip(got, ref, strict=True))
