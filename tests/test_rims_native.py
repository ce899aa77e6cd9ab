"""The compiled RIMs kernel's dispatch: built on first use, cached, and the PyTorch fallback when it is unavailable."""

from __future__ import annotations

import pytest
import torch as th

from rims_rl.nn import RIMs, rims_native

IN = 7


def make(**kwargs) -> RIMs:
    th.manual_seed(0)
    base = dict(n_units=5, k_active=2, unit_size=6, input_key_size=8, input_value_size=5, comm_key_size=4, comm_value_size=3)
    base.update(kwargs)
    return RIMs(IN, **base).double()


def forward_backward(core: RIMs, x: th.Tensor, starts: th.Tensor) -> list[th.Tensor]:
    core.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    out, (h, c) = core(x, None, starts)
    (out.pow(2).sum() + c.sum()).backward()
    return [out, h, c, x.grad, *(p.grad for p in core.parameters())]


def test_first_use_builds_into_the_cache_and_the_next_process_only_loads(fresh_loader, monkeypatch):
    if rims_native._compiler() is None:
        pytest.skip("no C++ compiler")
    core = make()
    x = th.randn(5, 3, IN, dtype=th.float64)
    assert core.uses_native(x)
    built = list(fresh_loader.glob("rims_kernel_*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    # a new process: the loader starts over and finds the library in the cache without compiling
    monkeypatch.setitem(rims_native._state, "tried", False)
    monkeypatch.setitem(rims_native._state, "lib", None)
    run = rims_native._run

    def refuse_compiling(args, timeout_s):
        assert "--version" in args, f"compiled again: {args}"
        return run(args, timeout_s)

    monkeypatch.setattr(rims_native, "_run", refuse_compiling)
    assert rims_native.load() is not None
    assert built[0].stat().st_mtime_ns == stamp


def test_without_a_compiler_the_pytorch_path_runs_with_one_notice_line(fresh_loader, monkeypatch, capsys):
    core = make()
    x = th.randn(6, 3, IN, dtype=th.float64)
    starts = (th.rand(6, 3) < 0.3).double()
    core.native = False
    expected = forward_backward(core, x, starts)
    core.native = True
    monkeypatch.setattr(rims_native, "_compiler", lambda: None)
    assert not core.uses_native(x)
    got = forward_backward(core, x, starts)
    forward_backward(core, x, starts)
    notice = capsys.readouterr().err.strip().splitlines()
    assert len(notice) == 1 and "no C++ compiler" in notice[0] and "PyTorch path" in notice[0]
    assert not list(fresh_loader.glob("*.so"))
    for a, b in zip(got, expected, strict=True):
        assert th.equal(a, b)


def test_a_failing_build_falls_back_with_the_compiler_message(fresh_loader, monkeypatch, tmp_path, capsys):
    broken = tmp_path / "broken.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(rims_native, "SOURCE", broken)
    if rims_native._compiler() is None:
        pytest.skip("no C++ compiler")
    assert rims_native.load() is None
    assert "building the kernel failed" in rims_native.unavailable_reason()
    assert "error" in rims_native.unavailable_reason(), "the compiler's first error line is quoted"
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_the_environment_variable_disables_the_kernel(fresh_loader, monkeypatch):
    monkeypatch.setenv(rims_native.DISABLE_ENV, "0")
    core = make()
    x = th.randn(4, 2, IN, dtype=th.float64)
    assert core.uses_fused() and not core.uses_native(x)
    assert rims_native.unavailable_reason() == f"disabled by {rims_native.DISABLE_ENV}"
    assert not fresh_loader.exists(), "nothing is built when disabled"


@pytest.mark.parametrize(
    "x, covered",
    [
        (th.zeros(2, 1, IN, dtype=th.float64), True),
        (th.zeros(2, 1, IN, dtype=th.float32), True),
        (th.zeros(2, 1, IN, dtype=th.float16), False),  # other dtypes: the PyTorch path
        (th.zeros(2, 1, IN, dtype=th.float64, device="meta"), False),  # any device but the CPU (CUDA too)
    ],
    ids=["cpu-float64", "cpu-float32", "cpu-float16", "meta-device"],
)
def test_dispatch_takes_the_kernel_only_for_cpu_float_tensors(x, covered):
    if rims_native.load() is None:
        pytest.skip(f"compiled RIMs kernel unavailable: {rims_native.unavailable_reason()}")
    core = make().to(x.dtype)
    assert rims_native.covers(x, *core.parameters()) is covered
    assert core.uses_native(x) is covered
    assert not make(native=False).uses_native(x)
    assert not make(cell="gru").uses_native(x), "configurations the fused path does not cover never reach the kernel"


def test_dispatch_keeps_cuda_tensors_on_the_pytorch_path():
    if not th.cuda.is_available():
        pytest.skip("no CUDA device")
    core = make().cuda()
    x = th.randn(5, 3, IN, dtype=th.float64, device="cuda")
    assert not core.uses_native(x)
    out, _ = core(x)
    reference, _ = make().double()(x.cpu())
    assert th.allclose(out.cpu(), reference, atol=1e-9)
