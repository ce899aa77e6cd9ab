"""Throughput levers (issue 6) leave the losses unchanged: padding skipped by the extractor, truncated sequences."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.torch_layers import NatureCNN

from rims_rl import CnnRimsPolicy, MlpRimsPolicy
from rims_rl.algos import RecurrentPPO
from rims_rl.buffers import sequence_cuts
from rims_rl.envs.memory import CueRecallEnv

SMALL_RIMS = dict(n_units=4, k_active=2, unit_size=8, input_key_size=8, input_value_size=8, comm_key_size=4, comm_value_size=4)


class _NoOp(BaseCallback):
    def _on_step(self) -> bool:
        return True


@pytest.mark.parametrize("share_features_extractor", [True, False])
def test_skip_padding_gives_the_same_features_and_gradients(share_features_extractor):
    space = spaces.Box(0, 255, (1, 36, 36), np.uint8)
    kwargs = dict(
        core="lstm",
        core_kwargs=dict(hidden_size=8),
        features_extractor_class=NatureCNN,
        features_extractor_kwargs=dict(features_dim=16),
        share_features_extractor=share_features_extractor,
        shared_core=share_features_extractor,
    )
    policies = []
    for skip in (True, False):
        th.manual_seed(0)
        policies.append(CnnRimsPolicy(space, spaces.Discrete(3), lambda _: 1e-3, skip_padding=skip, **kwargs))
    skipping, plain = policies
    obs = th.randint(0, 256, (10, 1, 36, 36)).float()
    obs[[2, 5, 6, 9]] = 0.0  # padding rows (and an all-zero real frame would look the same)
    as_uint8 = obs.to(th.uint8)  # rollouts pass the env's dtype
    assert th.equal(skipping.extract_features(as_uint8)[0], plain.extract_features(as_uint8)[0])
    out, ref = skipping.extract_features(obs), plain.extract_features(obs)
    outs, refs = (out, ref) if isinstance(out, tuple) else ((out,), (ref,))
    weights = [th.randn_like(r) for r in refs]
    for o, r in zip(outs, refs, strict=True):
        assert th.allclose(o, r, atol=1e-6)
    sum((o * w).sum() for o, w in zip(outs, weights, strict=True)).backward()
    sum((r * w).sum() for r, w in zip(refs, weights, strict=True)).backward()
    for (name, p), q in zip(skipping.named_parameters(), plain.parameters(), strict=True):
        if p.grad is not None or q.grad is not None:
            assert th.allclose(p.grad, q.grad, atol=1e-5), name


def test_sequence_cuts_split_only_sequences_longer_than_seq_len_counting_from_their_start():
    starts = np.zeros(12, dtype=bool)
    starts[[7, 10]] = True  # sequences [0, 7), [7, 10), [10, 12); the first step always starts one
    assert np.flatnonzero(sequence_cuts(starts, 3)).tolist() == [0, 3, 6, 7, 10]
    assert np.flatnonzero(sequence_cuts(starts, 7)).tolist() == [0, 7, 10], "sequences that fit are not cut"
    assert np.flatnonzero(sequence_cuts(starts, None)).tolist() == [0, 7, 10]
    assert sequence_cuts(starts, 1).all()


@pytest.mark.parametrize("pad_sequences", [True, False])
@pytest.mark.parametrize("seq_len", [None, 5, 3])
def test_truncated_sequences_start_from_stored_states(seq_len, pad_sequences):
    """Before any update, every minibatch reproduces the rollout's log-probs; no padded sequence is longer than seq_len
    (unpadded minibatches: tests/test_unpadded_update.py compares them with the padded ones)."""
    env = make_vec_env(lambda: CueRecallEnv(n_cues=3, delay=4), n_envs=4, seed=0)
    model = RecurrentPPO(
        MlpRimsPolicy,
        env,
        n_steps=16,
        batch_size=32,
        seq_len=seq_len,
        pad_sequences=pad_sequences,
        seed=0,
        device="cpu",
        policy_kwargs=dict(net_arch=[16], core="rims", core_kwargs=SMALL_RIMS),
    )
    model._setup_learn(64, None)
    callback = _NoOp()
    callback.init_callback(model)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    with th.no_grad():
        for data in model.rollout_buffer.get(32):
            n_seq = data.lstm_states.pi[0].shape[1]
            if seq_len is not None and pad_sequences:
                assert data.observations.shape[0] // n_seq <= seq_len
            mask = data.mask > 1e-8
            _, log_prob, _ = model.policy.evaluate_actions(
                data.observations, data.actions.long().flatten(), data.lstm_states, data.episode_starts
            )
            assert th.allclose(log_prob[mask], data.old_log_prob[mask], atol=1e-5)


def test_seq_len_is_validated_and_saved(tmp_path):
    env = make_vec_env(lambda: CueRecallEnv(n_cues=2, delay=2), n_envs=2, seed=0)
    with pytest.raises(ValueError, match="seq_len"):
        RecurrentPPO(MlpRimsPolicy, env, seq_len=0)
    model = RecurrentPPO(
        MlpRimsPolicy,
        env,
        n_steps=8,
        batch_size=8,
        seq_len=4,
        device="cpu",
        policy_kwargs=dict(core="rims", core_kwargs=SMALL_RIMS),
    )
    model.save(tmp_path / "m.zip")
    loaded = RecurrentPPO.load(tmp_path / "m.zip", env=env, device="cpu")
    assert loaded.seq_len == 4 and loaded.rollout_buffer.seq_len == 4


def test_skip_padding_on_one_dimensional_discrete_observations():
    """Discrete observations reach the extractor as (batch,) integers during rollouts (the padding check used to crash)."""
    policies = []
    for skip in (True, False):
        th.manual_seed(0)
        policies.append(MlpRimsPolicy(spaces.Discrete(5), spaces.Discrete(2), lambda _: 1e-3, skip_padding=skip,
                                      core="rims", core_kwargs=SMALL_RIMS))  # fmt: skip
    skipping, plain = policies
    obs = th.tensor([0, 3, 0, 1, 0, 4])
    features = skipping.extract_features(obs)
    assert features.shape == (6, 5) and th.equal(features, plain.extract_features(obs))
    assert th.equal(features[0], features[2]) and features[0, 0] == 1.0  # one-hot of state 0 for each zero row
