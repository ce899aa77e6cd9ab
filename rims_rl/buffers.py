"""Rollout buffers: sb3-contrib's recurrent buffer with sequences truncated to a fixed length.

sb3-contrib cuts a minibatch into sequences only where an episode starts or the env changes, and pads every
sequence to the longest one; with long episodes a minibatch of 256 steps holds 2-4 sequences of up to
``n_steps`` steps, so the recurrent core runs ``n_steps`` sequential steps over a tiny batch. Cutting every env's
rollout also at fixed positions (every ``seq_len`` steps) gives many short sequences instead: the core runs at
most ``seq_len`` sequential steps over a wider batch. Each cut sequence starts from the state stored for its
first step during the rollout (sb3-contrib already does this at every sequence start), so only the gradient
through time is truncated to ``seq_len`` steps (truncated BPTT, as in R2D2 / CleanRL's LSTM PPO with short
rollouts); the forward pass sees the same states up to the policy change within one update.
"""

from __future__ import annotations

import numpy as np
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.type_aliases import RecurrentDictRolloutBufferSamples, RecurrentRolloutBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

__all__ = ["TruncatedRecurrentDictRolloutBuffer", "TruncatedRecurrentRolloutBuffer", "chunk_starts"]


def chunk_starts(n_steps: int, n_envs: int, seq_len: int | None) -> np.ndarray:
    """
    Flags of the steps that start a fixed-length chunk, in the buffer's env-major flattened order.

    :param n_steps: rollout length per env
    :param n_envs: number of envs
    :param seq_len: chunk length (None: no chunks, all False)
    :return: (n_envs * n_steps,) float array, 1.0 where ``step % seq_len == 0``
    """
    step = np.tile(np.arange(n_steps), n_envs)  # env-major: env 0's steps, then env 1's, ...
    if seq_len is None:
        return np.zeros(n_envs * n_steps)
    return (step % seq_len == 0).astype(np.float64)


class _TruncatedMixin:
    """Adds chunk starts to sb3-contrib's sequence starts (``env_change``) before the sequences are cut."""

    buffer_size: int
    n_envs: int
    seq_len: int | None

    def __init__(self, *args, seq_len: int | None = None, **kwargs) -> None:
        if seq_len is not None and seq_len < 1:
            raise ValueError(f"seq_len must be a positive integer or None, got {seq_len!r}")
        self.seq_len = seq_len
        super().__init__(*args, **kwargs)

    def _with_chunks(self, env_change: np.ndarray) -> np.ndarray:
        if self.seq_len is None:
            return env_change
        return np.maximum(env_change, chunk_starts(self.buffer_size, self.n_envs, self.seq_len).reshape(env_change.shape))


class TruncatedRecurrentRolloutBuffer(_TruncatedMixin, RecurrentRolloutBuffer):
    """
    :class:`sb3_contrib.common.recurrent.buffers.RecurrentRolloutBuffer` whose sequences are at most ``seq_len`` long.

    :param seq_len: longest sequence (None: sb3-contrib's behaviour); other arguments as sb3-contrib's
    """

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env_change: np.ndarray, env: VecNormalize | None = None
    ) -> RecurrentRolloutBufferSamples:
        return super()._get_samples(batch_inds, self._with_chunks(env_change), env)


class TruncatedRecurrentDictRolloutBuffer(_TruncatedMixin, RecurrentDictRolloutBuffer):
    """Dict-observation version of :class:`TruncatedRecurrentRolloutBuffer`."""

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env_change: np.ndarray, env: VecNormalize | None = None
    ) -> RecurrentDictRolloutBufferSamples:
        return super()._get_samples(batch_inds, self._with_chunks(env_change), env)
