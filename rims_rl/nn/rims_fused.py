"""A whole-sequence RIMs forward with a hand-written backward (one autograd node per sequence).

``RIMs`` built with autograd records ~40 small ops per sequential step, and its backward computes the
per-unit weight gradients once per step. Here the forward runs without autograd and keeps what the
backward needs; the backward walks the sequence in reverse computing only the gradients that carry
through time, and forms every weight gradient once, as one batched matmul over all steps.

Covered: the LSTM cell, ``selection="null"``, communication on or off with a plain or gated residual, any
number of input heads, no dropout. ``RIMs`` uses the autograd step for everything else, and the compiled
kernel of ``rims_native.py`` instead of this path on CPU where that kernel is available (same results). The results equal
the autograd path up to float rounding (tests/test_rims_fused.py checks values and gradients in float64).
A backward with ``create_graph=True`` (second derivatives, a gradient penalty) runs autograd through the same
forward instead (:func:`differentiable_backward`), so that its result has a graph too.

Shapes are unit-major as in ``rims.py``: kT units, B envs, unit size d.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import torch as th
import torch.nn.functional as F

#: the core's settings the sequence functions read; the forward keeps a copy for its backward, so that a setting
#: changed on the module between the two cannot make the backward read the saved tensors with other dimensions
CONFIG = ("n_units", "unit_size", "input_heads", "input_key_size", "k_active", "communication", "residual",
          "comm_heads", "comm_key_size", "comm_value_size")  # fmt: skip


def config(core: Any) -> SimpleNamespace:
    """:return: a copy of the settings of ``core`` (a ``RIMs``) the sequence functions read (:data:`CONFIG`)."""
    return SimpleNamespace(**{name: getattr(core, name) for name in CONFIG})


class _Saved:
    """Per-step tensors kept by the forward for the backward (lists indexed by step)."""

    def __init__(self) -> None:
        self.h: list[th.Tensor] = []  # state the step read (after any reset), (kT, B, d)
        self.c: list[th.Tensor] = []
        self.mask: list[th.Tensor] = []  # active units as float, (kT, B, 1)
        self.attn: list[th.Tensor] = []  # input attention probabilities, (kT, B, heads)
        self.queries: list[th.Tensor] = []  # (kT, B, heads, key)
        self.gates: list[th.Tensor] = []  # sigmoid(i, f, o) and tanh(g) in gate order, (kT, B, 4d)
        self.gate_grad: list[th.Tensor] = []  # derivative of each gate's nonlinearity, (kT, B, 4d)
        self.tanh_c: list[th.Tensor] = []  # tanh(c_new), (kT, B, d)
        self.comm_in: list[th.Tensor] = []  # states the communication reads, (kT, B, d)
        self.comm_qkv: list[th.Tensor] = []  # (kT, B, heads, ·) each, as a tuple
        self.comm_probs: list[th.Tensor] = []  # (kT query, kT key, B, heads)
        self.comm_read: list[th.Tensor] = []  # (kT, B, heads * value)
        self.comm_out: list[th.Tensor] = []  # pre-residual output (gated: gate and value halves), (kT, B, ·)


def rims_sequence(
    core: Any,
    keys: th.Tensor,
    cell_in: th.Tensor,
    h0: th.Tensor,
    c0: th.Tensor,
    reset: th.Tensor | None,
    reset_steps: set[int],
) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """
    Run a RIMs core (``rims_rl.nn.RIMs`` with a covered configuration) over a sequence.

    :param keys: input keys (T, B, heads, key)
    :param cell_in: per-unit cell input of each head's value (T, kT, B, heads, 4d)
    :param h0: (kT, B, d)
    :param c0: (kT, B, d)
    :param reset: (T, 1, B, 1) bool, True where an env starts an episode (its state is set to 0 first), or None
    :param reset_steps: the steps t where some env starts
    :return: h at every step (T, kT, B, d), the final c (kT, B, d), the active mask (T, kT, B) bool
    """
    comm = core.communication
    params = [core.recurrent.weight, core.recurrent.full_bias()]
    if comm:
        params += [core.comm_qkv.weight, core.comm_out.weight, core.comm_out.bias]
    tensors = (keys, cell_in, h0, c0, *params)
    if th.is_grad_enabled() and any(t.requires_grad for t in tensors):
        out, c_n, active = _RimsSequence.apply(core, reset, reset_steps, *tensors)
        return out, c_n, active
    with th.no_grad():
        out, c_n, active = _forward(core, keys, cell_in, h0, c0, reset, reset_steps, params, None)
    return out, c_n, active


def _forward(
    core: Any,
    keys: th.Tensor,
    cell_in: th.Tensor,
    h: th.Tensor,
    c: th.Tensor,
    reset: th.Tensor | None,
    reset_steps: set[int],
    params: list[th.Tensor],
    saved: _Saved | None,
) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    d, heads, key_size, k_active = core.unit_size, core.input_heads, core.input_key_size, core.k_active
    gate_size = 4 * d
    w_rec, b_rec = params[0], params[1]
    scale = 1.0 / math.sqrt(key_size)
    n_units, batch = h.shape[0], h.shape[1]
    comm_on = core.communication
    # with k_active == n_units every unit updates: one all-true mask for every step
    all_on = th.ones(n_units, batch, dtype=th.bool, device=h.device) if k_active == n_units else None
    outputs, actives = [], []
    for t, (keys_t, cell_in_t) in enumerate(zip(keys.unbind(0), cell_in.unbind(0), strict=True)):
        if reset is not None and t in reset_steps:  # by assignment: no NaN or inf survives a start
            h = h.masked_fill(reset[t], 0.0)
            c = c.masked_fill(reset[t], 0.0)
        proj = th.baddbmm(b_rec, h, w_rec)
        queries = proj[..., gate_size:].unflatten(-1, (heads, key_size))
        attn = th.sigmoid((queries * keys_t).sum(-1) * scale)  # (kT, B, heads)
        if all_on is not None:
            active = all_on
        else:
            null_attn = 1.0 - attn.mean(-1)
            idx = th.sort(null_attn, dim=0, stable=True).indices[:k_active]  # ties: lower unit first
            active = th.zeros(n_units, batch, dtype=th.bool, device=h.device).scatter_(0, idx, True)
        mask = active.unsqueeze(-1)
        if heads == 1:
            z = th.addcmul(proj[..., :gate_size], attn, cell_in_t[..., 0, :])
        else:
            z = proj[..., :gate_size] + (attn.unsqueeze(-1) * cell_in_t).sum(-2)
        gates = th.sigmoid(z)
        tanh_g = th.tanh(z[..., 2 * d : 3 * d])
        i, f, o = gates[..., :d], gates[..., d : 2 * d], gates[..., 3 * d :]
        c_new = th.addcmul(f * c, i, tanh_g)
        tanh_c = th.tanh(c_new)
        h_new = o * tanh_c
        if comm_on:
            comm_in = th.where(mask, h_new, h)
            h_new = h_new + _communicate(core, comm_in, params, saved)
        h_out = th.where(mask, h_new, h)
        if saved is not None:
            gate_grad = gates * (1.0 - gates)
            gate_grad[..., 2 * d : 3 * d] = 1.0 - tanh_g * tanh_g
            gates[..., 2 * d : 3 * d] = tanh_g  # i, f, o were read above; no autograd here, so in place is safe
            saved.h.append(h)
            saved.c.append(c)
            saved.mask.append(mask.to(h.dtype))
            saved.attn.append(attn)
            saved.queries.append(queries)
            saved.gates.append(gates)
            saved.gate_grad.append(gate_grad)
            saved.tanh_c.append(tanh_c)
            if comm_on:
                saved.comm_in.append(comm_in)
        c = th.where(mask, c_new, c)
        h = h_out
        outputs.append(h)
        actives.append(active)
    return th.stack(outputs), c, th.stack(actives)


def _communicate(core: Any, h: th.Tensor, params: list[th.Tensor], saved: _Saved | None) -> th.Tensor:
    """Communication residual for states h (kT, B, d); same maths as ``RIMs._communicate`` without dropout."""
    w_qkv, w_out, b_out = params[2], params[3], params[4]
    n_heads, dk, dv = core.comm_heads, core.comm_key_size, core.comm_value_size
    qkv = th.bmm(h, w_qkv)
    # Unit-major broadcasting instead of batched (B * heads) tiny matmuls: no permutes, no copies.
    q, k, v = (z.unflatten(-1, (n_heads, -1)) for z in qkv.split([n_heads * dk, n_heads * dk, n_heads * dv], -1))
    scores = (q.unsqueeze(1) * k.unsqueeze(0)).sum(-1) * (1.0 / math.sqrt(dk))  # (kT query, kT key, B, heads)
    probs = th.softmax(scores, dim=1)
    read = (probs.unsqueeze(-1) * v.unsqueeze(0)).sum(1).flatten(2)  # (kT, B, heads * value)
    out = th.baddbmm(b_out, read, w_out)
    if saved is not None:
        saved.comm_qkv.append((q, k, v))  # type: ignore[arg-type]
        saved.comm_probs.append(probs)
        saved.comm_read.append(read)
        saved.comm_out.append(out)
    if core.residual == "gated":
        gate, value = out.chunk(2, dim=-1)
        return th.sigmoid(gate) * th.tanh(value)
    return out


class _RimsSequence(th.autograd.Function):
    @staticmethod
    def forward(ctx: Any, core: Any, reset: th.Tensor | None, reset_steps: set[int], *tensors: th.Tensor) -> Any:
        keys, cell_in, h0, c0, *params = tensors
        saved = _Saved()
        core = config(core)
        out, c_n, active = _forward(core, keys, cell_in, h0, c0, reset, reset_steps, list(params), saved)
        ctx.core, ctx.reset, ctx.reset_steps, ctx.saved = core, reset, reset_steps, saved
        ctx.save_for_backward(*tensors)
        ctx.mark_non_differentiable(active)
        return out, c_n, active

    @staticmethod
    def backward(ctx: Any, d_out: th.Tensor | None, d_c_n: th.Tensor | None, _d_active: Any) -> Any:
        if th.is_grad_enabled():  # create_graph=True: the gradient must itself be differentiable
            inputs = ctx.saved_tensors
            return (None, None, None, *differentiable_backward(ctx.core, ctx.reset, ctx.reset_steps, inputs, d_out, d_c_n))
        core, reset, reset_steps, saved = ctx.core, ctx.reset, ctx.reset_steps, ctx.saved
        keys, cell_in, _h0, _c0, *params = ctx.saved_tensors
        w_rec = params[0]
        comm = core.communication
        d, heads, key_size = core.unit_size, core.input_heads, core.input_key_size
        scale = 1.0 / math.sqrt(key_size)
        steps = keys.shape[0]
        h_last = saved.h[-1]
        dh = th.zeros_like(h_last)
        dc = th.zeros_like(h_last) if d_c_n is None else d_c_n.clone()
        d_keys, d_cell_in = [], []
        # Weight gradients accumulate in place, one small baddbmm per step and weight.
        grads = [th.zeros_like(p) for p in params]
        for t in range(steps - 1, -1, -1):
            if d_out is not None:
                dh = dh + d_out[t]
            m = saved.mask[t]
            h, c = saved.h[t], saved.c[t]
            gates, gate_grad, tanh_c = saved.gates[t], saved.gate_grad[t], saved.tanh_c[t]
            # h_out = where(m, h_new (+ comm), h); c_out = where(m, c_new, c)
            dh_new = dh * m
            dc_new = dc * m
            dh_prev = dh - dh_new
            dc_prev = dc - dc_new
            if comm:
                d_comm_in, d_out_t = _communicate_backward(core, params, saved, t, dh_new)
                grads[2].baddbmm_(saved.comm_in[t].transpose(1, 2), d_comm_in[1])
                grads[3].baddbmm_(saved.comm_read[t].transpose(1, 2), d_out_t)
                grads[4].add_(d_out_t.sum(1, keepdim=True))
                dh_new = dh_new + d_comm_in[0] * m
                dh_prev = dh_prev + d_comm_in[0] * (1.0 - m)
            i, f, tanh_g, o = gates[..., :d], gates[..., d : 2 * d], gates[..., 2 * d : 3 * d], gates[..., 3 * d :]
            dc_new = th.addcmul(dc_new, dh_new * o, 1.0 - tanh_c * tanh_c)
            dc_prev = th.addcmul(dc_prev, dc_new, f)
            dz = th.cat([dc_new * tanh_g, dc_new * c, dc_new * i, dh_new * tanh_c], -1) * gate_grad
            attn, queries = saved.attn[t], saved.queries[t]
            cell_in_t = cell_in[t]
            if heads == 1:
                d_cell_in.append((attn * dz).unsqueeze(-2))
                d_attn = (dz * cell_in_t[..., 0, :]).sum(-1, keepdim=True)
            else:
                d_cell_in.append(attn.unsqueeze(-1) * dz.unsqueeze(-2))
                d_attn = (dz.unsqueeze(-2) * cell_in_t).sum(-1)
            d_logits = (d_attn * attn * (1.0 - attn) * scale).unsqueeze(-1)  # (kT, B, heads, 1)
            d_keys.append((d_logits * queries).sum(0))
            d_p = th.cat([dz, (d_logits * keys[t]).flatten(-2)], -1)
            grads[0].baddbmm_(h.transpose(1, 2), d_p)
            grads[1].add_(d_p.sum(1, keepdim=True))
            dh = th.baddbmm(dh_prev, d_p, w_rec.transpose(1, 2))
            dc = dc_prev
            if reset is not None and t in reset_steps:
                dh = dh.masked_fill(reset[t], 0.0)
                dc = dc.masked_fill(reset[t], 0.0)

        d_keys_t = th.stack(d_keys[::-1])
        d_cell_in_t = th.stack(d_cell_in[::-1])
        # ctx.saved is kept: a second backward (retain_graph=True) reads it again; it is freed with the graph
        return (None, None, None, d_keys_t, d_cell_in_t, dh, dc, *grads)


def differentiable_backward(
    core: Any,
    reset: th.Tensor | None,
    reset_steps: set[int],
    inputs: tuple[th.Tensor, ...],
    d_out: th.Tensor | None,
    d_c_n: th.Tensor | None,
    batch_major: bool = False,
) -> list[th.Tensor | None]:
    """
    The backward as a differentiable function of the inputs and the incoming gradients, for a backward run with
    ``create_graph=True`` (a gradient penalty, second derivatives): the sequence is run again with autograd
    recording (the same maths as the forward) and autograd gives the gradients, with their own graph. The
    hand-written backwards are not differentiable themselves.

    :param core: the forward's :func:`config`
    :param reset: as for :func:`rims_sequence`
    :param reset_steps: as for :func:`rims_sequence`
    :param inputs: the forward's (keys, cell_in, h0, c0, *params) as saved by it (still part of their graph)
    :param d_out: gradient of the output sequence, or None
    :param d_c_n: gradient of the final c, or None
    :param batch_major: the compiled path's layouts: cell_in (T, B, kT, heads, 4d), the output (T, B, kT d), a bias
        over the gate outputs only
    :return: the gradient of each input (None where it needs none)
    """
    keys, cell_in, h0, c0, *params = inputs
    if batch_major:
        cell_in = cell_in.transpose(1, 2)
        bias, n_out = params[1], params[0].shape[-1]
        params = [params[0], F.pad(bias, (0, n_out - bias.shape[-1])), *params[2:]]
    out, c_n, _ = _forward(core, keys, cell_in, h0, c0, reset, reset_steps, params, None)
    if batch_major:
        out = out.permute(0, 2, 1, 3).flatten(2)
    pairs = [(o, g) for o, g in ((out, d_out), (c_n, d_c_n)) if g is not None and o.requires_grad]
    wanted = [i for i, t in enumerate(inputs) if t.requires_grad]
    grads: list[th.Tensor | None] = [None] * len(inputs)
    if pairs and wanted:
        got = th.autograd.grad(
            [o for o, _ in pairs], [inputs[i] for i in wanted], [g for _, g in pairs], create_graph=True, allow_unused=True
        )
        for i, g in zip(wanted, got, strict=True):
            grads[i] = g
    return grads


def _communicate_backward(
    core: Any, params: list[th.Tensor], saved: _Saved, t: int, d_res: th.Tensor
) -> tuple[tuple[th.Tensor, th.Tensor], th.Tensor]:
    """
    :param d_res: gradient of the communication residual (kT, B, d)
    :return: (gradient of the states it read, gradient of the qkv projection), gradient of the output projection
    """
    w_qkv, w_out = params[2], params[3]
    n_heads, dk = core.comm_heads, core.comm_key_size
    q, k, v = saved.comm_qkv[t]  # type: ignore[misc]
    probs = saved.comm_probs[t]
    if core.residual == "gated":
        gate, value = saved.comm_out[t].chunk(2, dim=-1)
        s, tv = th.sigmoid(gate), th.tanh(value)
        d_o = th.cat([d_res * tv * s * (1.0 - s), d_res * s * (1.0 - tv * tv)], -1)
    else:
        d_o = d_res
    d_read = th.bmm(d_o, w_out.transpose(1, 2)).unflatten(-1, (n_heads, -1))  # (kT, B, heads, value)
    d_probs = (d_read.unsqueeze(1) * v.unsqueeze(0)).sum(-1)  # (kT query, kT key, B, heads)
    d_v = (probs.unsqueeze(-1) * d_read.unsqueeze(1)).sum(0)
    d_scores = probs * (d_probs - (d_probs * probs).sum(1, keepdim=True)) * (1.0 / math.sqrt(dk))
    d_q = (d_scores.unsqueeze(-1) * k.unsqueeze(0)).sum(1)
    d_k = (d_scores.unsqueeze(-1) * q.unsqueeze(1)).sum(0)
    d_qkv = th.cat([z.flatten(2) for z in (d_q, d_k, d_v)], -1)  # (kT, B, ·)
    d_in = th.bmm(d_qkv, w_qkv.transpose(1, 2))
    return (d_in, d_qkv), d_o
