"""rims_rl's RecurrentPPO: sb3-contrib's, with the RIMs policy names, unpadded training sequences and an optional
cap on the training sequence length.

Only the rollout buffer changes (see :mod:`rims_rl.buffers`); ``seq_len=None`` is sb3-contrib's algorithm (with the
package's policies the minibatches are laid out without padding, which gives the same losses and gradients up to
float rounding; ``pad_sequences=True`` keeps sb3-contrib's padded layout).
"""

from __future__ import annotations

from typing import Any, ClassVar

from gymnasium import spaces
from sb3_contrib import RecurrentPPO as _SB3ContribRecurrentPPO
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from stable_baselines3.common.policies import BasePolicy

from rims_rl.buffers import TruncatedRecurrentDictRolloutBuffer, TruncatedRecurrentRolloutBuffer
from rims_rl.policies import CnnRimsPolicy, MlpRimsPolicy, MultiInputRimsPolicy, RimsRecurrentPolicy

__all__ = ["RecurrentPPO"]


class RecurrentPPO(_SB3ContribRecurrentPPO):
    """
    :class:`sb3_contrib.RecurrentPPO` that also knows the policies ``"MlpRimsPolicy"``, ``"CnnRimsPolicy"`` and
    ``"MultiInputRimsPolicy"`` by name (beside sb3-contrib's ``"MlpLstmPolicy"``, ...) and whose training sequences
    are at most ``seq_len`` steps long.

    A sequence longer than ``seq_len`` is cut into pieces of ``seq_len`` steps counted from its own start; one
    that fits (an episode of at most ``seq_len`` steps) is not cut. Each piece starts from the recurrent state
    stored during the rollout for its first step, so the gradient through time is truncated to ``seq_len``
    steps (truncated BPTT). This changes learning dynamics wherever an episode is longer than ``seq_len``
    (benchmarks/truncation_curves.py measures it); ``seq_len=None`` (default) keeps sb3-contrib's sequences
    (cut only at episode starts and minibatch/env boundaries).

    With the package's policies (:class:`~rims_rl.policies.RimsRecurrentPolicy`), minibatches reach the policy
    unpadded (:mod:`rims_rl.buffers`): only the minibatch's real steps go through the feature extractor, the heads
    and the loss, and the core runs them packed into a few lanes (RIMs, resetting at episode starts inside the
    core) or as packed sequences (LSTM/GRU). Same losses and gradients as sb3-contrib's padded sequences up to float
    rounding; 2-4x fewer rows processed on short episodes. sb3-contrib's own policies always get padded sequences.

    :param seq_len: longest training sequence (None: no extra cuts)
    :param pad_sequences: hand out sb3-contrib's padded sequences even to the package's policies (the slower
        layout, kept for comparisons)
    :param args: positional arguments of :class:`sb3_contrib.RecurrentPPO`
    :param kwargs: keyword arguments of :class:`sb3_contrib.RecurrentPPO`
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        **_SB3ContribRecurrentPPO.policy_aliases,
        "MlpRimsPolicy": MlpRimsPolicy,
        "CnnRimsPolicy": CnnRimsPolicy,
        "MultiInputRimsPolicy": MultiInputRimsPolicy,
    }

    #: class default, so that a model saved before this option existed loads with the unpadded layout
    pad_sequences: bool = False

    def __init__(self, *args: Any, seq_len: int | None = None, pad_sequences: bool = False, **kwargs: Any) -> None:
        if seq_len is not None and (isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1):
            raise ValueError(f"seq_len must be a positive integer or None, got {seq_len!r}")
        if not isinstance(pad_sequences, bool):
            raise ValueError(f"pad_sequences must be True or False, got {pad_sequences!r}")
        self.seq_len = seq_len
        self.pad_sequences = pad_sequences
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        if isinstance(self.policy, RimsRecurrentPolicy):  # save the core layout chosen for lstm_hidden_size
            self.policy_kwargs = {**self.policy_kwargs, **self.policy.core_policy_kwargs()}
        old = self.rollout_buffer
        assert isinstance(old, RecurrentRolloutBuffer | RecurrentDictRolloutBuffer)
        buffer_cls = (
            TruncatedRecurrentDictRolloutBuffer
            if isinstance(self.observation_space, spaces.Dict)
            else TruncatedRecurrentRolloutBuffer
        )
        self.rollout_buffer = buffer_cls(
            self.n_steps,
            self.observation_space,
            self.action_space,
            old.hidden_state_shape,
            self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            seq_len=self.seq_len,
            layout=None
            if self.pad_sequences or not isinstance(self.policy, RimsRecurrentPolicy)
            else self.policy.sequence_layout(),
        )
