"""Rollout buffers: sb3-contrib's recurrent buffer with sequences truncated to a fixed length.

sb3-contrib cuts a minibatch into sequences only where an episode starts or the env changes, and pads every
sequence to the longest one; with long episodes a minibatch of 256 steps holds 2-4 sequences of up to
``n_steps`` steps, so the recurrent core runs ``n_steps`` sequential steps over a tiny batch. Cutting every
sequence longer than ``seq_len`` into pieces of ``seq_len`` steps, counted from its own start, gives many short
sequences instead: the core runs at most ``seq_len`` sequential steps over a wider batch, and a sequence that
already fits (a short episode) is never cut. Each piece starts from the state stored for its first step during
the rollout (sb3-contrib already does this at every sequence start), so only the gradient through time is
truncated to ``seq_len`` steps (truncated BPTT, as in R2D2 / CleanRL's LSTM PPO with short rollouts); the
forward pass sees the same states up to the policy change within one update.
"""

from __future__ import annotations

import numpy as np
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.type_aliases import RecurrentDictRolloutBufferSamples, RecurrentRolloutBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

__all__ = ["TruncatedRecurrentDictRolloutBuffer", "TruncatedRecurrentRolloutBuffer", "sequence_cuts"]


def sequence_cuts(starts: np.ndarray, seq_len: int | None) -> np.ndarray:
    """
    Where sequences start once every sequence longer than ``seq_len`` is cut into pieces of ``seq_len`` steps.

    :param starts: (n,) flags, in minibatch order, of the steps where sb3-contrib starts a sequence (an episode
        start or an env change); the first step always starts one
    :param seq_len: longest sequence (None: no cuts)
    :return: (n,) bool flags of the sequence starts after cutting (a superset of ``starts``)
    """
    flags = np.asarray(starts, dtype=bool).reshape(-1).copy()
    if flags.size:
        flags[0] = True
    if seq_len is None:
        return flags
    index = np.arange(flags.size)
    since_start = index - np.maximum.accumulate(np.where(flags, index, 0))
    return since_start % seq_len == 0


class _TruncatedMixin:
    """Adds the cuts of :func:`sequence_cuts` to sb3-contrib's sequence starts (``env_change``)."""

    episode_starts: np.ndarray
    seq_len: int | None

    def __init__(self, *args, seq_len: int | None = None, **kwargs) -> None:
        if seq_len is not None and seq_len < 1:
            raise ValueError(f"seq_len must be a positive integer or None, got {seq_len!r}")
        self.seq_len = seq_len
        super().__init__(*args, **kwargs)

    def _with_cuts(self, batch_inds: np.ndarray, env_change: np.ndarray) -> np.ndarray:
        if self.seq_len is None:
            return env_change
        starts = np.logical_or(self.episode_starts[batch_inds].reshape(-1) > 0, env_change[batch_inds].reshape(-1) > 0)
        cut = env_change.copy()
        cut.reshape(-1)[batch_inds[sequence_cuts(starts, self.seq_len)]] = 1.0
        return cut


class TruncatedRecurrentRolloutBuffer(_TruncatedMixin, RecurrentRolloutBuffer):
    """
    :class:`sb3_contrib.common.recurrent.buffers.RecurrentRolloutBuffer` whose sequences are at most ``seq_len`` long.

    :param seq_len: longest sequence (None: sb3-contrib's behaviour); other arguments as sb3-contrib's
    """

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env_change: np.ndarray, env: VecNormalize | None = None
    ) -> RecurrentRolloutBufferSamples:
        return super()._get_samples(batch_inds, self._with_cuts(batch_inds, env_change), env)


class TruncatedRecurrentDictRolloutBuffer(_TruncatedMixin, RecurrentDictRolloutBuffer):
    """Dict-observation version of :class:`TruncatedRecurrentRolloutBuffer`."""

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env_change: np.ndarray, env: VecNormalize | None = None
    ) -> RecurrentDictRolloutBufferSamples:
        return super()._get_samples(batch_inds, self._with_cuts(batch_inds, env_change), env)
