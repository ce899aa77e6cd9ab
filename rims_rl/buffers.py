"""Rollout buffers: sb3-contrib's recurrent buffer, with training sequences laid out without padding and
optionally truncated to a fixed length.

**Layout.** sb3-contrib cuts every minibatch into sequences at episode starts and env changes and pads each one
to the longest (with MinAtar's short episodes, a 512-step minibatch becomes ~51 sequences of 32 steps: 1,600 rows,
3x the real ones), then the extractor, the core, the heads and the backward run over the padding. With
``layout`` set, the buffer hands out the minibatch's real rows only, in minibatch order, and a
:class:`SequenceLayout` (carried by the recurrent states, see :class:`LaidOutState`) that tells the policy where
each row goes in the core's (time, lane) grid:

- ``"lanes"`` (RIMs): the sequences are packed end to end into a few lanes, and the core's ``episode_starts``
  resets the state where a packed sequence begins (every packed sequence but a lane's first starts an episode).
  A sequence that does not start an episode (its state comes from the rollout: an env change, a truncation cut)
  always begins a lane, with the state stored for that step.
- ``"sequences"`` (LSTM/GRU): one lane per sequence, as sb3-contrib pads them (a torch RNN then runs the grid in
  one fused call); only the core sees the padding.

Either way every row sees the same initial state, the same inputs and the same resets as in sb3-contrib's padded
layout, no gradient crosses a reset, and padded rows never reach the loss, so the losses and gradients are
sb3-contrib's up to float rounding (rows are summed in another order).

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

import heapq
from dataclasses import dataclass

import numpy as np
import torch as th
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.type_aliases import (
    RecurrentDictRolloutBufferSamples,
    RecurrentRolloutBufferSamples,
    RNNStates,
)
from stable_baselines3.common.vec_env import VecNormalize

__all__ = [
    "LAYOUTS",
    "LaidOutState",
    "SequenceLayout",
    "TruncatedRecurrentDictRolloutBuffer",
    "TruncatedRecurrentRolloutBuffer",
    "sequence_cuts",
    "sequence_layout",
]

#: The layouts a buffer can hand out (None: sb3-contrib's padded sequences).
LAYOUTS = ("lanes", "sequences")


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


@dataclass(frozen=True)
class SequenceLayout:
    """
    Where the rows of an unpadded minibatch go in a recurrent core's (time, lane) grid.

    :param rows: (n_steps * n_lanes,) int64, time-major: the minibatch row at each grid cell, ``n_rows`` for padding
    :param cells: (n_rows,) int64: the grid cell of each minibatch row (``t * n_lanes + lane``)
    :param n_steps: time steps of the grid
    :param n_lanes: lanes of the grid
    """

    rows: th.Tensor
    cells: th.Tensor
    n_steps: int
    n_lanes: int


class LaidOutState(tuple):
    """A recurrent state ``(h, c)`` of a laid-out minibatch (one column per lane) that carries its :class:`SequenceLayout`."""

    layout: SequenceLayout

    def __new__(cls, state: tuple[th.Tensor, th.Tensor], layout: SequenceLayout) -> LaidOutState:
        self = super().__new__(cls, state)
        self.layout = layout
        return self


def sequence_layout(
    seq_start: np.ndarray, episode_start: np.ndarray, lanes: bool
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """
    Place the sequences of a minibatch in a (time, lane) grid.

    :param seq_start: (n,) bool, the steps where a sequence starts (the first step always does)
    :param episode_start: (n,) bool, the steps where an episode starts (the core resets the state there)
    :param lanes: pack sequences end to end into lanes (a sequence that does not start an episode always begins a
        lane; the others are placed longest first into the shortest lane); False: one lane per sequence
    :return: ``rows`` (n_steps * n_lanes,) the row at each time-major cell (``n`` for padding), ``cells`` (n,) the
        cell of each row, ``n_lanes``, and each lane's length
    """
    n = seq_start.size
    first = np.flatnonzero(seq_start)
    lengths = np.diff(np.append(first, n))
    n_seq = first.size
    if not lanes:
        lane, offset, n_lanes = np.arange(n_seq), np.zeros(n_seq, dtype=np.int64), n_seq
    else:
        forced = ~episode_start[first]  # these start from a stored state: each begins a lane
        n_lanes = int(min(n_seq, max(forced.sum(), -(-n // int(lengths.max())))))
        lane = np.empty(n_seq, dtype=np.int64)
        offset = np.empty(n_seq, dtype=np.int64)
        totals = np.zeros(n_lanes, dtype=np.int64)
        forced_ids = np.flatnonzero(forced)
        lane[forced_ids] = np.arange(forced_ids.size)
        offset[forced_ids] = 0
        totals[: forced_ids.size] = lengths[forced_ids]
        heap = [(int(totals[i]), i) for i in range(n_lanes)]
        heapq.heapify(heap)
        free = np.flatnonzero(~forced)
        for s in free[np.argsort(-lengths[free], kind="stable")]:  # longest first, into the shortest lane
            total, i = heapq.heappop(heap)
            lane[s], offset[s] = i, total
            heapq.heappush(heap, (total + int(lengths[s]), i))
            totals[i] = total + lengths[s]
        lengths = totals  # now per lane
    seq_of_row = np.cumsum(seq_start) - 1
    time = offset[seq_of_row] + np.arange(n) - first[seq_of_row]
    cells = time * n_lanes + lane[seq_of_row]
    n_steps = int(lengths.max())
    rows = np.full(n_steps * n_lanes, n, dtype=np.int64)
    rows[cells] = np.arange(n)
    return rows, cells, n_lanes, lengths


class _TruncatedMixin:
    """
    Adds the cuts of :func:`sequence_cuts` to sb3-contrib's sequence starts (``env_change``) and, with ``layout``,
    hands out unpadded minibatches (see the module docstring).
    """

    episode_starts: np.ndarray
    seq_len: int | None
    layout: str | None
    device: th.device

    def __init__(self, *args, seq_len: int | None = None, layout: str | None = None, **kwargs) -> None:
        if seq_len is not None and seq_len < 1:
            raise ValueError(f"seq_len must be a positive integer or None, got {seq_len!r}")
        if layout is not None and layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS} or None, got {layout!r}")
        self.seq_len = seq_len
        self.layout = layout
        super().__init__(*args, **kwargs)

    def _laid_out(self, batch_inds: np.ndarray, env_change: np.ndarray) -> tuple[SequenceLayout, np.ndarray]:
        """:return: the layout of the minibatch ``batch_inds`` and the minibatch position of each lane's first row."""
        episode_start = self.episode_starts[batch_inds].reshape(-1) > 0
        starts = np.logical_or(episode_start, env_change[batch_inds].reshape(-1) > 0)
        rows, cells, n_lanes, _ = sequence_layout(sequence_cuts(starts, self.seq_len), episode_start, self.layout == "lanes")
        layout = SequenceLayout(
            rows=th.as_tensor(rows, device=self.device),
            cells=th.as_tensor(cells, device=self.device),
            n_steps=rows.size // n_lanes,
            n_lanes=n_lanes,
        )
        return layout, rows[:n_lanes]

    def _states(self, batch_inds: np.ndarray, first: np.ndarray, layout: SequenceLayout) -> RNNStates:
        """:return: the stored states of each lane's first row, (n_layers, n_lanes, hidden), carrying ``layout``."""
        to_torch = self.to_torch  # type: ignore[attr-defined]
        states = []
        for hidden, cell in (("hidden_states_pi", "cell_states_pi"), ("hidden_states_vf", "cell_states_vf")):
            pair = (getattr(self, name)[batch_inds[first]].swapaxes(0, 1) for name in (hidden, cell))
            states.append(LaidOutState(tuple(to_torch(np.ascontiguousarray(a)) for a in pair), layout))
        return RNNStates(states[0], states[1])

    def _flat(self, batch_inds: np.ndarray) -> dict[str, th.Tensor]:
        """:return: the per-row fields of the minibatch, unpadded, in minibatch order."""
        to_torch = self.to_torch  # type: ignore[attr-defined]
        fields = {name: to_torch(getattr(self, source)[batch_inds].reshape(-1)) for name, source in (
            ("old_values", "values"), ("old_log_prob", "log_probs"), ("advantages", "advantages"),
            ("returns", "returns"), ("episode_starts", "episode_starts"))}  # fmt: skip
        fields["actions"] = to_torch(self.actions[batch_inds])  # type: ignore[attr-defined]
        fields["mask"] = th.ones(len(batch_inds), device=self.device)
        return fields

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
        if self.layout is None:
            return super()._get_samples(batch_inds, self._with_cuts(batch_inds, env_change), env)
        layout, first = self._laid_out(batch_inds, env_change)
        return RecurrentRolloutBufferSamples(
            observations=self.to_torch(self.observations[batch_inds]),
            lstm_states=self._states(batch_inds, first, layout),
            **self._flat(batch_inds),
        )


class TruncatedRecurrentDictRolloutBuffer(_TruncatedMixin, RecurrentDictRolloutBuffer):
    """Dict-observation version of :class:`TruncatedRecurrentRolloutBuffer`."""

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env_change: np.ndarray, env: VecNormalize | None = None
    ) -> RecurrentDictRolloutBufferSamples:
        if self.layout is None:
            return super()._get_samples(batch_inds, self._with_cuts(batch_inds, env_change), env)
        layout, first = self._laid_out(batch_inds, env_change)
        return RecurrentDictRolloutBufferSamples(
            observations={key: self.to_torch(obs[batch_inds]) for key, obs in self.observations.items()},
            lstm_states=self._states(batch_inds, first, layout),
            **self._flat(batch_inds),
        )
