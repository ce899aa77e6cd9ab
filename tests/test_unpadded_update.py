"""rims_rl's RecurrentPPO feeds unpadded minibatches (rims_rl.buffers layouts): the same PPO update as sb3-contrib's.

One PPO update (2 epochs of minibatches) from identical weights, rollout data and RNG state, once through
sb3-contrib's RecurrentPPO (padded sequences cut at every episode start) and once through rims_rl's (rows in a
(time, lane) grid, resets inside the core), must log the same losses and leave the same weights, to float32
rounding: the rows are summed in another order, so the results are not bit-identical.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from sb3_contrib import RecurrentPPO as ContribRecurrentPPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from rims_rl import MlpRimsPolicy
from rims_rl.algos import RecurrentPPO
from rims_rl.buffers import sequence_layout

SMALL_RIMS = dict(n_units=4, k_active=2, unit_size=8, input_key_size=8, input_value_size=8, comm_key_size=4, comm_value_size=4)
LOSSES = ("train/policy_gradient_loss", "train/value_loss", "train/entropy_loss", "train/approx_kl", "train/clip_fraction")
BUFFER_FIELDS = ("observations", "actions", "rewards", "returns", "episode_starts", "values", "log_probs", "advantages",
                 "hidden_states_pi", "cell_states_pi", "hidden_states_vf", "cell_states_vf")  # fmt: skip


class _NoOp(BaseCallback):
    def _on_step(self) -> bool:
        return True


def _model(cls, policy_kwargs, seq_len=None):
    env = make_vec_env("CartPole-v1", n_envs=4, seed=0)  # episodes of ~10-40 steps under the initial policy
    kwargs = dict(n_steps=48, batch_size=64, n_epochs=2, learning_rate=3e-3, seed=0, device="cpu")
    if seq_len is not None:
        kwargs["seq_len"] = seq_len
    return cls(MlpRimsPolicy, env, policy_kwargs=dict(net_arch=[16], **policy_kwargs), **kwargs)


def _collect(model):
    model._setup_learn(model.n_steps * model.n_envs, None)
    callback = _NoOp()
    callback.init_callback(model)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)


def _copy_rollout(source, target):
    target._setup_learn(target.n_steps * target.n_envs, None)
    for name in BUFFER_FIELDS:
        setattr(target.rollout_buffer, name, getattr(source.rollout_buffer, name).copy())
    target.rollout_buffer.full = True


def _train(model):
    """One ``train()`` (all epochs and minibatches) from a fixed RNG state; :return: the logged losses."""
    np.random.seed(123)
    th.manual_seed(123)
    model.train()
    return {key: model.logger.name_to_value[key] for key in LOSSES}


CONFIGS = {
    "rims": dict(core="rims", core_kwargs=SMALL_RIMS),
    "lstm": dict(core="lstm", core_kwargs=dict(hidden_size=16)),
    "gru": dict(core="gru", core_kwargs=dict(hidden_size=16)),
    # sb3-contrib's keywords: separate actor and critic cores
    "lstm-critic-core": dict(core="lstm", lstm_hidden_size=16, enable_critic_lstm=True),
    "rims-2-layers": dict(core="rims", core_kwargs=SMALL_RIMS, n_lstm_layers=2),
}


@pytest.mark.parametrize(("config", "seq_len"), [*((c, None) for c in CONFIGS), ("rims", 5), ("lstm", 5)])
def test_one_update_equals_sb3_contribs(config, seq_len):
    th.manual_seed(0)
    stock = _model(ContribRecurrentPPO if seq_len is None else RecurrentPPO, CONFIGS[config], seq_len)
    if seq_len is not None:  # the truncated buffer with sb3-contrib's padded layout is the reference there
        stock.rollout_buffer.layout = None
    fast = _model(RecurrentPPO, CONFIGS[config], seq_len)
    assert fast.rollout_buffer.layout == ("lanes" if config.startswith("rims") else "sequences")
    fast.policy.load_state_dict(stock.policy.state_dict())
    initial = {name: p.detach().clone() for name, p in stock.policy.named_parameters()}
    _collect(stock)
    starts = stock.rollout_buffer.episode_starts
    assert 8 <= starts.sum() < starts.size / 2, "the rollout must hold episode starts inside the minibatches"
    _copy_rollout(stock, fast)
    expected, got = _train(stock), _train(fast)
    for key in LOSSES:
        assert got[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), key
    for (name, p), q in zip(fast.policy.named_parameters(), stock.policy.parameters(), strict=True):
        assert th.allclose(p, q, rtol=1e-4, atol=1e-6), name
    assert not th.equal(stock.policy.action_net.weight, initial["action_net.weight"]), "the update changed the weights"


def test_padded_layout_stays_available_and_sb3_contrib_policies_get_it():
    th.manual_seed(0)
    assert _model(RecurrentPPO, CONFIGS["rims"]).rollout_buffer.layout == "lanes"
    padded = RecurrentPPO(MlpRimsPolicy, "CartPole-v1", n_steps=16, batch_size=16, pad_sequences=True, device="cpu")
    assert padded.rollout_buffer.layout is None
    stock_policy = RecurrentPPO("MlpLstmPolicy", "CartPole-v1", n_steps=16, batch_size=16, device="cpu")
    assert stock_policy.rollout_buffer.layout is None
    with pytest.raises(ValueError, match="pad_sequences"):
        RecurrentPPO(MlpRimsPolicy, "CartPole-v1", pad_sequences="no")


@pytest.mark.parametrize("lanes", [True, False])
def test_sequence_layout_places_every_row_once_and_keeps_stored_states_first(lanes):
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 60))
        episode_start = rng.random(n) < 0.2
        seq_start = episode_start | (rng.random(n) < 0.05)
        seq_start[0] = True
        rows, cells, n_lanes, lengths = sequence_layout(seq_start, episode_start, lanes)
        n_steps = rows.size // n_lanes
        assert np.array_equal(rows[cells], np.arange(n)) and (rows == n).sum() == rows.size - n
        grid = rows.reshape(n_steps, n_lanes)
        for lane in range(n_lanes):
            column = grid[:, lane]
            real = column[column < n]
            assert real.size == lengths[lane] and np.array_equal(column[: real.size], real), "padding only at the end"
            # consecutive rows of a lane are consecutive minibatch steps, except where a packed sequence begins,
            # which must start an episode (the core resets there); a lane's first row is any sequence start
            assert seq_start[real[0]]
            jumps = real[1:][np.diff(real) != 1]
            assert episode_start[jumps].all() and seq_start[jumps].all()
            inside = real[1:][np.diff(real) == 1]
            assert lanes or not seq_start[inside].any(), "one sequence per lane"
        if lanes:  # a sequence whose state is the stored one (no episode start) begins a lane
            assert set(np.flatnonzero(seq_start & ~episode_start)) <= set(grid[0])
