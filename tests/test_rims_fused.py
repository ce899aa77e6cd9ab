"""The hand-written whole-sequence RIMs paths against the autograd step: PyTorch (rims_rl/nn/rims_fused.py) and
compiled (rims_rl/nn/rims_native.py, with rims_kernel.cpp)."""

from __future__ import annotations

import itertools

import pytest
import torch as th

from rims_rl.nn import RIMs, rims_native

IN, UNITS, D = 7, 5, 6
CONFIGS = [
    dict(input_heads=heads, residual=res, communication=comm, k_active=k)
    for heads, (comm, res), k in itertools.product((1, 2), ((True, "plain"), (True, "gated"), (False, "plain")), (2, UNITS))
]


def make(**kwargs) -> RIMs:
    th.manual_seed(0)
    base = dict(n_units=UNITS, unit_size=D, input_key_size=8, input_value_size=5, comm_key_size=4, comm_value_size=3)
    base.update(kwargs)
    return RIMs(IN, **base).double()


PATHS = ["torch", "native"]


def needs_kernel(path: str) -> None:
    if path == "native" and rims_native.load() is None:
        pytest.skip(f"compiled RIMs kernel unavailable: {rims_native.unavailable_reason()}")


def run(
    core: RIMs, fused: bool, x: th.Tensor, state: tuple[th.Tensor, th.Tensor], starts: th.Tensor, native: bool = False
) -> dict:
    core.fused, core.native = fused, native
    assert core.uses_native(x) is (fused and native)
    core.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    h0, c0 = (s.clone().requires_grad_() for s in state)
    out, (h, c) = core(x, (h0, c0), starts)
    weights = th.randn(out.shape, generator=th.Generator().manual_seed(3), dtype=th.float64).to(out.dtype)
    ((out * weights).sum() + h.pow(2).sum() + 1.7 * c.sum()).backward()
    result = {"out": out, "h": h, "c": c, "active": core.last_active, "dx": x.grad, "dh0": h0.grad, "dc0": c0.grad}
    result.update({f"d{name}": p.grad for name, p in core.named_parameters()})
    return result


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    # input_value_size=16 > input size 7: the cell input is formed through the product of the two maps, x (W_v W_x)
    "kwargs",
    [*CONFIGS, dict(query_bias=False), dict(comm_heads=3), dict(input_value_size=16)],
    ids=lambda k: "-".join(f"{n}={v}" for n, v in k.items()),
)
def test_fused_path_equals_autograd_step_in_values_and_gradients(kwargs, path):
    needs_kernel(path)
    core = make(**kwargs)
    assert core.uses_fused()
    th.manual_seed(1)
    steps, batch = 15, 4
    x = th.randn(steps, batch, IN, dtype=th.float64)
    state = (th.randn(1, batch, core.hidden_size, dtype=th.float64), th.randn(1, batch, core.hidden_size, dtype=th.float64))
    starts = (th.rand(steps, batch) < 0.25).double()
    starts[0, 0] = 1.0
    fused, reference = run(core, True, x, state, starts, path == "native"), run(core, False, x, state, starts)
    assert fused.keys() == reference.keys()
    assert th.equal(fused["active"], reference["active"])
    for name in fused:
        assert fused[name] is not None and reference[name] is not None, name
        assert th.allclose(fused[name], reference[name], rtol=1e-9, atol=1e-11), name
    assert all(reference[f"d{n}"].abs().sum() > 0 for n, _ in core.named_parameters()), "every weight gets a gradient"


@pytest.mark.parametrize("path", PATHS)
def test_inference_without_autograd_equals_training_forward(path):
    needs_kernel(path)
    core = make(native=path == "native")
    x, starts = th.randn(9, 3, IN, dtype=th.float64), (th.rand(9, 3) < 0.3).double()
    out, (h, c) = core(x, None, starts)
    with th.no_grad():
        out_ng, (h_ng, c_ng) = core(x, None, starts)
    with th.inference_mode():
        out_inf, _ = core(x, None, starts)
    assert out.requires_grad and not out_ng.requires_grad
    assert th.equal(out.detach(), out_ng) and th.equal(out_ng, out_inf)
    assert th.equal(h.detach(), h_ng) and th.equal(c.detach(), c_ng)


@pytest.mark.parametrize(
    "kwargs, fused",
    [
        (dict(), True),
        (dict(fused=False), False),
        (dict(cell="gru"), False),
        (dict(selection="across_units"), False),
        (dict(dropout=0.1), False),  # while training: dropout is only in the autograd step
    ],
)
def test_fused_path_is_used_only_where_it_covers_the_configuration(kwargs, fused):
    core = make(**kwargs)
    assert core.uses_fused() is fused
    assert f"fused={fused}" in repr(core)
    if "dropout" in kwargs:
        assert core.eval().uses_fused(), "without dropout at evaluation the fused path applies"


@pytest.mark.parametrize("path", PATHS)
def test_double_backward_equals_the_autograd_step(path):
    needs_kernel(path)
    x = th.randn(4, 2, IN, dtype=th.float64)
    second = []
    for core in (make(native=path == "native"), make(fused=False)):
        xx = x.clone().requires_grad_()
        out, _ = core(xx)
        (grad,) = th.autograd.grad(out.pow(2).sum(), xx, create_graph=True)
        grad.pow(2).sum().backward()
        second.append([xx.grad, *(p.grad for p in core.parameters())])
    for got, expected in zip(*second, strict=True):
        assert got is not None and th.allclose(got, expected, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("path", PATHS)
def test_a_second_backward_through_a_retained_graph_adds_the_same_gradients(path):
    needs_kernel(path)
    core = make(native=path == "native")
    x = th.randn(6, 3, IN, dtype=th.float64, requires_grad=True)
    starts = th.zeros(6, 3)
    starts[2, 1] = 1.0
    out, _ = core(x, None, starts)
    loss = out.pow(2).sum()
    loss.backward(retain_graph=True)
    first = {n: p.grad.clone() for n, p in core.named_parameters()}
    first_x = x.grad.clone()
    loss.backward()
    assert th.allclose(x.grad, 2 * first_x)
    for name, p in core.named_parameters():
        assert th.allclose(p.grad, 2 * first[name]), name


def test_compiled_path_in_float32_is_close_to_the_float64_reference():
    needs_kernel("native")
    core = make(k_active=2)
    th.manual_seed(2)
    x = th.randn(20, 5, IN, dtype=th.float64)
    state = (th.randn(1, 5, core.hidden_size, dtype=th.float64), th.randn(1, 5, core.hidden_size, dtype=th.float64))
    starts = (th.rand(20, 5) < 0.2).double()
    reference = run(core, False, x, state, starts)
    core.float()
    single = run(core, True, x.float(), tuple(s.float() for s in state), starts, native=True)
    assert th.equal(single["active"], reference["active"])
    for name in reference:
        assert th.allclose(single[name].double(), reference[name].double(), rtol=1e-4, atol=1e-5), name
