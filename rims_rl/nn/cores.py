"""Recurrent cores with one call signature: ``core(x, (h, c), episode_starts) -> (out, (h, c))``.

The LSTM and GRU baselines wrap ``nn.LSTM`` / ``nn.GRU`` so that the policy treats every core alike.
Pure PyTorch: no SB3 or gymnasium imports.
"""

from __future__ import annotations

import inspect
import itertools
from typing import Any

import torch as th
from torch import nn

from rims_rl.nn.rims import RIMs

CORES = ("rims", "lstm", "gru")


class _TorchRNNCore(nn.Module):
    """
    ``nn.LSTM`` / ``nn.GRU`` (one layer) with per-step episode-start resets.

    A sequence is cut only at the steps where some env starts an episode, so a rollout with few resets
    costs few calls of the fused torch RNN rather than one call per step.

    :param input_size: size of the input vector
    :param hidden_size: size of the hidden state (default 384: the default RIMs state, 6 units x 64)
    """

    rnn: nn.LSTM | nn.GRU
    num_layers = 1
    has_cell_state = True

    def __init__(self, input_size: int, hidden_size: int = 384) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size

    def _run(self, x: th.Tensor, h: th.Tensor, c: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        raise NotImplementedError

    def forward(
        self,
        x: th.Tensor,
        state: tuple[th.Tensor, th.Tensor] | None = None,
        episode_starts: th.Tensor | None = None,
    ) -> tuple[th.Tensor, tuple[th.Tensor, th.Tensor]]:
        """
        :param x: (seq_len, batch, input_size)
        :param state: (h, c), each (1, batch, hidden_size); zeros when None (the GRU hands c back unchanged)
        :param episode_starts: (seq_len, batch); where non-zero, that env's state is zeroed before that step
        :return: output (seq_len, batch, hidden_size) and the final (h, c)
        """
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"x must be shaped (seq_len, batch, input_size={self.input_size}), got {tuple(x.shape)}")
        if state is None:
            zeros = x.new_zeros(1, x.shape[1], self.hidden_size)
            state = (zeros, zeros)
        h, c = state
        if episode_starts is None:
            out, h, c = self._run(x, h, c)
            return out, (h, c)
        if episode_starts.shape != x.shape[:2]:
            raise ValueError(f"episode_starts must be shaped {tuple(x.shape[:2])}, got {tuple(episode_starts.shape)}")
        reset = episode_starts.ne(0)
        cuts = [0, *th.nonzero(reset[1:].any(dim=1)).flatten().add(1).tolist(), x.shape[0]]
        outputs = []
        for start, end in itertools.pairwise(cuts):
            # a start sets the state to 0 by assignment (multiplying by 0 would keep a NaN or inf)
            mask = reset[start].view(1, -1, 1)
            h = h.masked_fill(mask, 0.0)
            c = c.masked_fill(mask, 0.0) if self.has_cell_state else c
            out, h, c = self._run(x[start:end], h, c)
            outputs.append(out)
        return th.cat(outputs), (h, c)


class LSTMCore(_TorchRNNCore):
    """The LSTM baseline: ``nn.LSTM`` with episode-start resets. See :class:`_TorchRNNCore`."""

    def __init__(self, input_size: int, hidden_size: int = 384) -> None:
        super().__init__(input_size, hidden_size)
        self.rnn = nn.LSTM(input_size, hidden_size)

    def _run(self, x: th.Tensor, h: th.Tensor, c: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        out, (h, c) = self.rnn(x, (h.contiguous(), c.contiguous()))
        return out, h, c


class GRUCore(_TorchRNNCore):
    """A GRU baseline: ``nn.GRU`` with episode-start resets; the second state tensor is handed back unchanged."""

    has_cell_state = False

    def __init__(self, input_size: int, hidden_size: int = 384) -> None:
        super().__init__(input_size, hidden_size)
        self.rnn = nn.GRU(input_size, hidden_size)

    def _run(self, x: th.Tensor, h: th.Tensor, c: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        out, h = self.rnn(x, h.contiguous())
        return out, h, c


_CORE_CLASSES: dict[str, type[nn.Module]] = {"rims": RIMs, "lstm": LSTMCore, "gru": GRUCore}


def make_core(core: str, input_size: int, **core_kwargs: Any) -> nn.Module:
    """
    Build a recurrent core by name.

    :param core: ``"rims"``, ``"lstm"`` or ``"gru"``
    :param input_size: size of the input vector (the features dimension)
    :param core_kwargs: constructor arguments of the core (for ``"lstm"``/``"gru"``: ``hidden_size``)
    :return: the core module
    """
    if core not in _CORE_CLASSES:
        raise ValueError(f"core must be one of {', '.join(repr(c) for c in CORES)}, got {core!r}")
    cls = _CORE_CLASSES[core]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "input_size")]
    unknown = sorted(set(core_kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"unknown core_kwargs {unknown} for core={core!r}; allowed: {allowed}")
    return cls(input_size, **core_kwargs)
