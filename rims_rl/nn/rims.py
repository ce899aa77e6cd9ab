"""Recurrent Independent Mechanisms (Goyal et al., ICLR 2021) as a drop-in for ``nn.LSTM``.

No SB3 or gymnasium imports. Section numbers refer to arXiv 1909.10893 v6. On CPU, whole sequences run through a
compiled time loop (``rims_native.py``, built on first use) where it is available, else through the PyTorch
whole-sequence path (``rims_fused.py``); both equal the autograd step below up to float rounding.

One step, for kT units of size d_h (paper §2.2-2.4):
  1. input attention over X = [0; x_t] (a null row, then the input);
  2. selection of the kA units that attend least to the null row;
  3. independent dynamics: each active unit updates with its own cell; inactive units keep their state;
  4. communication: active units read from all units through multi-head attention (residual).

Layout inside the time loop is unit-major, (n_units, batch, size), so that every per-unit
("group linear") projection is a single ``torch.baddbmm`` over all units.
"""

from __future__ import annotations

import math
from typing import Any

import torch as th
import torch.nn.functional as F
from torch import nn

from rims_rl.nn import rims_native
from rims_rl.nn.rims_fused import rims_sequence
from rims_rl.nn.rims_native import rims_sequence_native

CELLS = ("lstm", "gru")
SELECTIONS = ("null", "across_units")
RESIDUALS = ("plain", "gated")


def _check_positive(**sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")


class GroupLinear(nn.Module):
    """
    One independent linear map per unit, applied to all units in one batched matmul.

    :param n_units: number of units (kT)
    :param in_features: input size per unit
    :param out_features: output size per unit
    :param bias: whether each unit has a bias
    :param bias_features: how many of the first outputs have a bias (default: all); the others have none
    """

    def __init__(
        self, n_units: int, in_features: int, out_features: int, bias: bool = True, bias_features: int | None = None
    ) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.out_features = out_features
        n_bias = out_features if bias_features is None else bias_features
        self.weight = nn.Parameter(th.empty(n_units, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(th.empty(n_units, 1, n_bias).uniform_(-bound, bound)) if bias else None

    def full_bias(self) -> th.Tensor | None:
        """:return: the bias over all outputs (n_units, 1, out_features), zero where it has none; None without bias"""
        if self.bias is None or self.bias.shape[-1] == self.out_features:
            return self.bias
        return F.pad(self.bias, (0, self.out_features - self.bias.shape[-1]))

    def forward(self, x: th.Tensor) -> th.Tensor:
        """
        :param x: (n_units, batch, in_features)
        :return: (n_units, batch, out_features)
        """
        bias = self.full_bias()
        if bias is None:
            return th.bmm(x, self.weight)
        return th.baddbmm(bias, x, self.weight)


class RIMs(nn.Module):
    """
    A RIMs recurrent core with the call signature of ``nn.LSTM`` (one layer, not batch-first).

    :param input_size: size of the input vector x_t
    :param n_units: number of units kT
    :param k_active: number of units kA updated per step (1 <= kA <= kT; kA = kT disables sparsity)
    :param unit_size: state size d_h of each unit; ``hidden_size = n_units * unit_size``
    :param cell: ``"lstm"`` (state (h, c)) or ``"gru"`` (state h; c is handed back unchanged)
    :param input_key_size: key/query size per head of the input attention
    :param input_value_size: value size per head of the input attention (default ``4 * unit_size``)
    :param input_heads: heads of the input attention
    :param comm_key_size: key/query size per head of the communication attention
    :param comm_value_size: value size per head of the communication attention
    :param comm_heads: heads of the communication attention
    :param selection: ``"null"`` (paper: least attention on the null row) or ``"across_units"``
        (official Atari code: softmax competition across units, top kA kept and renormalised)
    :param communication: whether units communicate (step 4)
    :param residual: ``"plain"`` (paper: h + attention) or ``"gated"`` (h + sigmoid(W_g a) * tanh(W_o a))
    :param dropout: dropout on the attention probabilities; keep 0 for PPO (a stochastic choice of the active
        units makes the PPO ratio of old and new policy noisy)
    :param fused: run whole sequences through a hand-written forward/backward where it covers the configuration
        (LSTM cell, ``selection="null"``, no dropout while training); same results as the autograd step up to
        float rounding. False: always the autograd step.
    :param native: on CPU (float32/float64), let the fused path run in compiled code (``rims_native.py``: a C++
        kernel built on first use and cached; 3-5x faster at small sizes). Falls back to the PyTorch fused path
        on other devices, without a compiler, or with the environment variable ``RIMS_RL_NATIVE=0``.
    :param query_bias: give the input-attention queries a bias (default, as every core saved before this
        option). False is the paper's ``q = h W^q`` (section 2.2). Without the bias, a zero state (every episode
        start) gives every unit the query 0: all units attend 0.5 to the input and tie in the selection at the first
        step of each episode, so no unit can single out what is shown then. Measured on the cue-recall task (cue at
        the first step; ``tests/test_policies.py`` settings, 16k steps): success >= 0.9 for 2 of 3 seeds with the
        bias, 2 of 5 without. Loading a state dict saved with the bias into a core built without it turns it on.
    """

    num_layers = 1

    def __init__(
        self,
        input_size: int,
        n_units: int = 6,
        k_active: int = 4,
        unit_size: int = 64,
        cell: str = "lstm",
        input_key_size: int = 64,
        input_value_size: int | None = None,
        input_heads: int = 1,
        comm_key_size: int = 32,
        comm_value_size: int = 32,
        comm_heads: int = 4,
        selection: str = "null",
        communication: bool = True,
        residual: str = "plain",
        dropout: float = 0.0,
        fused: bool = True,
        native: bool = True,
        query_bias: bool = True,
    ) -> None:
        super().__init__()
        if input_value_size is None:
            input_value_size = 4 * unit_size if isinstance(unit_size, int) else unit_size
        _check_positive(
            input_size=input_size,
            n_units=n_units,
            unit_size=unit_size,
            input_key_size=input_key_size,
            input_value_size=input_value_size,
            input_heads=input_heads,
            comm_key_size=comm_key_size,
            comm_value_size=comm_value_size,
            comm_heads=comm_heads,
        )
        if isinstance(k_active, bool) or not isinstance(k_active, int) or not 1 <= k_active <= n_units:
            raise ValueError(f"k_active must be an integer with 1 <= k_active <= n_units={n_units}, got {k_active!r}")
        _check_choice("cell", cell, CELLS)
        _check_choice("selection", selection, SELECTIONS)
        _check_choice("residual", residual, RESIDUALS)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")

        self.input_size = input_size
        self.n_units = n_units
        self.k_active = k_active
        self.unit_size = unit_size
        self.hidden_size = n_units * unit_size
        self.cell = cell
        self.selection = selection
        self.communication = communication
        self.residual = residual
        self.dropout = dropout
        self.fused = bool(fused)
        self.native = bool(native)
        self.query_bias = bool(query_bias)
        self.input_heads = input_heads
        self.input_key_size = input_key_size
        self.comm_heads = comm_heads
        self.comm_key_size = comm_key_size
        self.comm_value_size = comm_value_size
        n_gates = 4 if cell == "lstm" else 3
        self._gate_size = n_gates * unit_size
        self.hidden_gates = n_units * self._gate_size

        # Step 1: shared keys and values of the input, no bias (so the null row's key and value are 0).
        self.input_key = nn.Linear(input_size, input_heads * input_key_size, bias=False)
        self.input_value = nn.Linear(input_size, input_heads * input_value_size, bias=False)
        # Step 3: per-unit cell weights on the attended input, W_x: (kT, heads, value, gates).
        bound = 1.0 / math.sqrt(unit_size)
        self.cell_input = nn.Parameter(
            th.empty(n_units, input_heads, input_value_size, self._gate_size).uniform_(-bound, bound)
        )
        # Steps 1+3 read h_{t-1}: per-unit recurrent gates and per-unit input queries in one projection
        # (the bias covers the gates only, unless query_bias).
        n_proj = self._gate_size + input_heads * input_key_size
        self.recurrent = GroupLinear(n_units, unit_size, n_proj, bias_features=None if query_bias else self._gate_size)
        # Step 4: per-unit communication queries, keys, values, and output projection.
        if communication:
            qkv = comm_heads * (2 * comm_key_size + comm_value_size)
            self.comm_qkv = GroupLinear(n_units, unit_size, qkv, bias=False)
            out = unit_size * (2 if residual == "gated" else 1)
            self.comm_out = GroupLinear(n_units, comm_heads * comm_value_size, out)
        self.last_active: th.Tensor | None = None

    def extra_repr(self) -> str:
        return (
            f"input_size={self.input_size}, n_units={self.n_units}, k_active={self.k_active}, unit_size={self.unit_size}, "
            f"cell={self.cell!r}, selection={self.selection!r}, communication={self.communication}, "
            f"residual={self.residual!r}, query_bias={self.query_bias}, fused={self.uses_fused()}, native={self.native}"
        )

    def forward(
        self,
        x: th.Tensor,
        state: tuple[th.Tensor, th.Tensor] | None = None,
        episode_starts: th.Tensor | None = None,
    ) -> tuple[th.Tensor, tuple[th.Tensor, th.Tensor]]:
        """
        :param x: input sequence (seq_len, batch, input_size)
        :param state: (h, c), each (1, batch, hidden_size); zeros when None. With ``cell="gru"``, c is returned as given.
        :param episode_starts: (seq_len, batch); where non-zero, that env's state is zeroed before that step
        :return: output (seq_len, batch, hidden_size) = h at every step, and the final (h, c).
            ``self.last_active`` then holds a (seq_len, batch, n_units) bool tensor of the units that updated.
        """
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"x must be shaped (seq_len, batch, input_size={self.input_size}), got {tuple(x.shape)}")
        seq_len, batch = x.shape[0], x.shape[1]
        if seq_len == 0 or batch == 0:
            raise ValueError(f"x must hold at least one step and one env, got shape {tuple(x.shape)}")
        if state is None:
            zeros = x.new_zeros(1, batch, self.hidden_size)
            state = (zeros, zeros)
        h0, c0 = state
        for name, s in (("h", h0), ("c", c0)):
            if s.shape != (1, batch, self.hidden_size):
                raise ValueError(
                    f"{name} must be shaped (1, batch={batch}, hidden_size={self.hidden_size}), got {tuple(s.shape)}"
                )
        starts = None
        reset_steps: set[int] = set()
        if episode_starts is not None:
            if episode_starts.shape != (seq_len, batch):
                raise ValueError(
                    f"episode_starts must be shaped (seq_len={seq_len}, batch={batch}), got {tuple(episode_starts.shape)}"
                )
            # A start sets that env's state to 0 (by assignment, so that no NaN or inf survives it).
            starts = episode_starts.detach().ne(0).contiguous()
            reset_steps = set(th.nonzero(starts.any(1)).flatten().tolist())
        reset = None if starts is None else starts.view(seq_len, 1, batch, 1)  # broadcasts over unit-major states

        # Step 1, input side, for all steps in one matmul each: keys (T, B, heads, key) and the
        # per-unit cell input of each head's value, U = V W_x, batch-major in memory: (T, B, kT, heads, gates).
        keys = self.input_key(x).view(seq_len, batch, self.input_heads, self.input_key_size)
        if self.input_heads == 1:
            # all units in one matmul, (T B, value) x (value, kT gates); for long inputs through the product of the
            # two maps, x (W_v W_x), when that costs fewer multiply-adds than forming the values first
            w_x = self.cell_input.view(self.n_units, -1, self._gate_size).transpose(0, 1).reshape(-1, self.hidden_gates)
            rows, n_values, n_in = seq_len * batch, w_x.shape[0], self.input_size
            if rows * n_values * (n_in + self.hidden_gates) > n_in * self.hidden_gates * (n_values + rows):
                cell_in = th.mm(x.reshape(rows, -1), th.mm(self.input_value.weight.t(), w_x))
            else:
                cell_in = th.mm(self.input_value(x).view(rows, -1), w_x)
        else:
            values = self.input_value(x).view(seq_len * batch, self.input_heads, -1)
            cell_in = th.einsum("nhv,khvg->nkhg", values, self.cell_input).contiguous()
        cell_in = cell_in.view(seq_len, batch, self.n_units, self.input_heads, self._gate_size)

        h = self._unit_major(h0)
        c = self._unit_major(c0)
        lib = self._native_kernel(x, h, c) if self.uses_fused() else None
        if lib is not None:
            out, c, active = rims_sequence_native(lib, self, keys, cell_in, h, c, starts)
            return self._finish(out, c, active, c0)
        cell_in = cell_in.transpose(1, 2)  # seen unit-major: (T, kT, B, heads, gates)
        if self.uses_fused():
            out, c, active = rims_sequence(self, keys, cell_in, h, c, reset, reset_steps)
            return self._finish(out, c, active, c0)
        outputs = []
        actives = []
        # unbind once: indexing [t] in the loop would make autograd build a full-size zero gradient per step
        for t, (keys_t, cell_in_t) in enumerate(zip(keys.unbind(0), cell_in.unbind(0), strict=True)):
            if reset is not None and t in reset_steps:
                h = h.masked_fill(reset[t], 0.0)
                c = c.masked_fill(reset[t], 0.0)
            h, c, active = self._step(keys_t, cell_in_t, h, c)
            outputs.append(h)
            actives.append(active)

        return self._finish(th.stack(outputs), c, th.stack(actives), c0)

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        """A state dict saved with the query bias (every core saved before ``query_bias`` existed) turns it on."""
        saved = state_dict.get(prefix + "recurrent.bias")
        bias = self.recurrent.bias
        full = self.recurrent.out_features
        if not self.query_bias and saved is not None and bias is not None and saved.shape[-1] == full != bias.shape[-1]:
            bias.data = bias.new_empty(saved.shape)  # same Parameter object: an optimizer holding it stays valid
            self.query_bias = True
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def uses_fused(self) -> bool:
        """Whether forward takes the hand-written whole-sequence path (see ``fused``)."""
        covered = self.cell == "lstm" and self.selection == "null"
        return self.fused and covered and not (self.dropout > 0.0 and self.training)

    def uses_native(self, x: th.Tensor) -> bool:
        """
        Whether forward on an input like ``x`` runs the compiled kernel (see ``native``); builds it on first use.

        :param x: an input (seq_len, batch, input_size): its device and dtype decide
        """
        return self.uses_fused() and self._native_kernel(x) is not None

    def _native_kernel(self, *tensors: th.Tensor) -> Any:
        if not self.native:
            return None
        if self.n_units > rims_native.MAX_UNITS or not rims_native.covers(*tensors, *self.parameters()):
            return None
        return rims_native.load()

    def _finish(
        self, out: th.Tensor, c: th.Tensor, active: th.Tensor, c0: th.Tensor
    ) -> tuple[th.Tensor, tuple[th.Tensor, th.Tensor]]:
        """
        h of every step, unit-major (T, kT, B, d_h) or already (T, B, hidden); final c (kT, B, d_h); active
        (T, kT, B) -> nn.LSTM layout.
        """
        batch = c.shape[1]
        self.last_active = active.transpose(1, 2).detach()  # (T, B, kT)
        if out.dim() == 4:
            out = out.permute(0, 2, 1, 3).reshape(out.shape[0], batch, self.hidden_size)
        h_n = out[-1:].clone()
        c_n = c.permute(1, 0, 2).reshape(1, batch, self.hidden_size) if self.cell == "lstm" else c0
        return out, (h_n, c_n)

    def _unit_major(self, s: th.Tensor) -> th.Tensor:
        """(1, B, kT * d_h) -> (kT, B, d_h)."""
        return s[0].view(-1, self.n_units, self.unit_size).transpose(0, 1)

    def _step(self, keys: th.Tensor, cell_in: th.Tensor, h: th.Tensor, c: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        One RIMs step.

        :param keys: input keys (B, heads, key)
        :param cell_in: per-unit cell input of each head's value (kT, B, heads, gates)
        :param h: (kT, B, d_h)
        :param c: (kT, B, d_h); unused for the GRU cell
        :return: new h, new c, active mask (kT, B) bool
        """
        proj = self.recurrent(h)  # (kT, B, gates + heads * key)
        gates_h = proj[..., : self._gate_size]
        queries = proj[..., self._gate_size :].unflatten(-1, (self.input_heads, self.input_key_size))

        # Step 1: attention of each unit over [null; x]. The null key is 0, so the softmax over the two
        # rows gives the input probability sigmoid(q.k / sqrt(d)) and the null probability 1 - that.
        logits = (queries * keys).sum(-1) / math.sqrt(self.input_key_size)  # (kT, B, heads)
        # Step 2: selection.
        if self.selection == "null":
            attn = th.sigmoid(logits)
            null_attn = 1.0 - attn.mean(-1)  # (kT, B), averaged over heads
            active = self._least(null_attn)
        else:  # across_units: units compete for the input, top kA kept and renormalised
            weights = th.softmax(logits.mean(-1), dim=0)  # (kT, B)
            active = self._least(-weights)
            weights = weights * active
            attn = (weights / weights.sum(0, keepdim=True)).unsqueeze(-1).expand_as(logits)
        if self.dropout > 0.0:
            attn = F.dropout(attn, self.dropout, self.training)

        # Step 3: independent dynamics; input gates from the attended input A_k = attn_k * V.
        if self.input_heads == 1:  # the sum over one head is the identity: skip it
            gates_x = attn * cell_in[..., 0, :]
        else:
            gates_x = (attn.unsqueeze(-1) * cell_in).sum(-2)
        mask = active.unsqueeze(-1)
        if self.cell == "lstm":
            i, f, g, o = (gates_x + gates_h).chunk(4, dim=-1)
            c_new = th.sigmoid(f) * c + th.sigmoid(i) * th.tanh(g)
            h_new = th.sigmoid(o) * th.tanh(c_new)
            c = th.where(mask, c_new, c)
        else:
            x_r, x_z, x_n = gates_x.chunk(3, dim=-1)
            h_r, h_z, h_n = gates_h.chunk(3, dim=-1)
            z = th.sigmoid(x_z + h_z)
            h_new = (1.0 - z) * th.tanh(x_n + th.sigmoid(x_r + h_r) * h_n) + z * h

        # Step 4: communication; queries of active units, keys and values of all units.
        if self.communication:
            h_new = h_new + self._communicate(th.where(mask, h_new, h))
        return th.where(mask, h_new, h), c, active

    def _least(self, score: th.Tensor) -> th.Tensor:
        """Bool mask (kT, B) of the kA units with the smallest score (ties: lower unit first)."""
        if self.k_active == self.n_units:
            return th.ones_like(score, dtype=th.bool)
        # stable sort: among equal scores the lower unit wins (with h = 0 and no query bias all units tie), the
        # same rule in every path; indices only, so no autograd node
        idx = th.sort(score.detach(), dim=0, stable=True).indices[: self.k_active]
        return th.zeros_like(score, dtype=th.bool).scatter_(0, idx, True)

    def _communicate(self, h: th.Tensor) -> th.Tensor:
        """
        :param h: (kT, B, d_h) states after the cell update
        :return: the residual (kT, B, d_h) to add to active units
        """
        n_heads, dk = self.comm_heads, self.comm_key_size
        qkv = self.comm_qkv(h)  # (kT, B, heads * (2 key + value))
        q, k, v = qkv.split([n_heads * dk, n_heads * dk, n_heads * self.comm_value_size], dim=-1)
        # (kT, B, heads * d) -> (B, heads, kT, d)
        q, k, v = (z.unflatten(-1, (n_heads, -1)).permute(1, 2, 0, 3) for z in (q, k, v))
        read = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        read = read.permute(2, 0, 1, 3).flatten(2)  # (kT, B, heads * value)
        out = self.comm_out(read)
        if self.residual == "gated":
            gate, value = out.chunk(2, dim=-1)
            return th.sigmoid(gate) * th.tanh(value)
        return out
