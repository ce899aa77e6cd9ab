"""The RIMs time loop in compiled code: ``rims_kernel.cpp`` built on first use, called through ctypes.

The kernel includes no torch headers, so the first build takes seconds (one ``c++`` call), and the shared library
is cached under ``$RIMS_RL_CACHE`` (default ``$XDG_CACHE_HOME/rims_rl`` or ``~/.cache/rims_rl``), keyed by a hash
of the source, the compiler and this CPU, so later processes only load it. Without a compiler, or with
``RIMS_RL_NATIVE=0``, ``RIMs`` keeps to its PyTorch paths (one notice line on stderr when a compiler is missing).

The forward runs the whole sequence in one call and saves what the backward needs; the backward walks the sequence
in reverse in one call and accumulates every weight gradient on the way. Covered: CPU tensors, float32 or float64, the
configurations of ``rims_fused.py``. Shapes are unit-major as in ``rims.py``: kT units, B envs, unit size d.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import torch as th

SOURCE = Path(__file__).with_name("rims_kernel.cpp")
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-std=c++17", "-shared", "-fPIC")
DISABLE_ENV = "RIMS_RL_NATIVE"
MAX_UNITS = 64  # the kernel's bound on n_units (a stack buffer per softmax)
BUILD_TIMEOUT_S = 300

_state: dict[str, Any] = {"lib": None, "tried": False, "reason": ""}


def cache_dir() -> Path:
    """:return: the folder that holds built kernels."""
    if os.environ.get("RIMS_RL_CACHE"):
        return Path(os.environ["RIMS_RL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rims_rl"


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the machine and, on Linux, the CPU's model and feature flags."""
    parts = [platform.machine(), platform.system()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("model name", "flags")):
                    parts.append(line.strip())
                if len(parts) >= 4:
                    break
    except OSError:
        parts.append(platform.processor())
    return "\n".join(parts)


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _build(compiler: str) -> Path:
    """Compile the kernel into the cache (atomically: concurrent first uses are safe) and return its path."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), compiler, version, " ".join(FLAGS), _cpu_signature()]).encode())
    target = cache_dir() / f"rims_kernel_{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        try:
            cmd = [compiler, *FLAGS, str(SOURCE), "-o", tmp]
            result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"the compiler took more than {BUILD_TIMEOUT_S} s") from None
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines() or ["the compiler failed without a message"]
            raise RuntimeError(next((line for line in lines if "error" in line), lines[-1]))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _disabled() -> bool:
    """:return: whether the environment variable ``RIMS_RL_NATIVE`` turns the kernel off."""
    return os.environ.get(DISABLE_ENV, "1").strip().lower() in ("0", "false", "no", "off")


def load() -> ctypes.CDLL | None:
    """
    :return: the compiled kernel, building it on first use; None where it is disabled or cannot be built
        (the reason is in ``unavailable_reason()``; a missing compiler or a failed build is said once on stderr).
    """
    if _disabled():
        return None
    if _state["tried"]:
        return _state["lib"]
    _state["tried"] = True
    compiler = _compiler()
    if compiler is None:
        _state["reason"] = "no C++ compiler found (set CXX or install g++)"
    else:
        try:
            lib = ctypes.CDLL(str(_build(compiler)))
            for name in ("rims_forward_f32", "rims_forward_f64", "rims_backward_f32", "rims_backward_f64"):
                getattr(lib, name).argtypes = [ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_void_p)]
                getattr(lib, name).restype = None
            _state["lib"] = lib
        except (OSError, RuntimeError) as error:
            _state["reason"] = f"building the kernel failed: {error}"
    if _state["lib"] is None:
        print(f"rims_rl: RIMs runs its PyTorch path, slower on CPU: {_state['reason']}", file=sys.stderr)
    return _state["lib"]


def unavailable_reason() -> str:
    """:return: why ``load()`` returned None ('' when it did not, or has not been called)."""
    if _disabled():
        return f"disabled by {DISABLE_ENV}"
    return str(_state["reason"])


def covers(*tensors: th.Tensor) -> bool:
    """:return: whether the kernel can run on these tensors (CPU, one dtype, float32 or float64)."""
    dtype = tensors[0].dtype
    return dtype in (th.float32, th.float64) and all(t.device.type == "cpu" and t.dtype == dtype for t in tensors)


def _ptrs(tensors: Sequence[th.Tensor | None]) -> Any:
    return (ctypes.c_void_p * len(tensors))(*[None if t is None else t.data_ptr() for t in tensors])


def _dims(values: list[int]) -> Any:
    return (ctypes.c_int64 * len(values))(*values)


def _params(core: Any) -> list[th.Tensor]:
    params = [core.recurrent.weight, core.recurrent.bias]
    if core.communication:
        params += [core.comm_qkv.weight, core.comm_out.weight, core.comm_out.bias]
    return params


def rims_sequence_native(
    lib: ctypes.CDLL,
    core: Any,
    keys: th.Tensor,
    cell_in: th.Tensor,
    h0: th.Tensor,
    c0: th.Tensor,
    starts: th.Tensor | None,
) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """
    Run a RIMs core over a sequence in compiled code (same arguments and results as ``rims_fused.rims_sequence``).

    :param keys: input keys (T, B, heads, key)
    :param cell_in: per-unit cell input of each head's value, batch-major (T, B, kT, heads, 4d)
    :param h0: (kT, B, d)
    :param c0: (kT, B, d)
    :param starts: (T, B) bool, True where an env starts an episode (its state is set to 0 first), or None
    :return: h at every step (T, B, kT * d), the final c (kT, B, d), the active mask (T, kT, B) bool
    """
    params = _params(core)
    tensors = (keys, cell_in, h0, c0, *params)
    if th.is_grad_enabled() and any(t.requires_grad for t in tensors):
        out, c_n, active = _NativeSequence.apply(lib, core, starts, *tensors)
        return out, c_n, active
    with th.no_grad():
        out, c_n, active, _ = _forward(lib, core, keys, cell_in, h0, c0, starts, params)
    return out, c_n, active


def _layout(core: Any, keys: th.Tensor, h0: th.Tensor) -> list[int]:
    comm = core.communication
    n_bias = core.recurrent.bias.shape[-1]
    return [
        keys.shape[0],  # T
        h0.shape[1],  # B
        core.n_units,
        core.unit_size,
        core.input_heads,
        core.input_key_size,
        core.k_active,
        int(comm),
        int(comm and core.residual == "gated"),
        core.comm_heads if comm else 0,
        core.comm_key_size if comm else 0,
        core.comm_value_size if comm else 0,
        n_bias,
    ]


def _forward(
    lib: ctypes.CDLL,
    core: Any,
    keys: th.Tensor,
    cell_in: th.Tensor,
    h0: th.Tensor,
    c0: th.Tensor,
    starts: th.Tensor | None,
    params: list[th.Tensor],
) -> tuple[th.Tensor, th.Tensor, th.Tensor, list[th.Tensor]]:
    """:return: out (T, B, kT * d), c_n (kT, B, d), active (T, kT, B) bool, and the saved tensors (kT, T, B, ·)."""
    dims = _layout(core, keys, h0)
    n_steps, batch, n_units, d, heads, key_size = dims[:6]
    n_heads, dk, dv = dims[9:12]
    out_size = 2 * d if dims[8] else d
    new = keys.new_empty
    unit_major = (n_units, n_steps, batch)
    saved = [
        new(*unit_major, d),  # h read by each step
        new(*unit_major, d),  # c read by each step
        new(*unit_major, 4 * d),  # gate activations
        new(*unit_major, d),  # tanh(c_new)
        new(*unit_major, heads),  # input attention
        new(*unit_major, heads * key_size),  # input queries
        new(*unit_major, d),  # states the communication reads
        new(*unit_major, n_heads * (2 * dk + dv)),  # communication q, k, v
        new(*unit_major, n_units * n_heads),  # communication probabilities (per query unit: key unit, head)
        new(*unit_major, n_heads * dv),  # communication read
        new(*unit_major, out_size if n_heads else 0),  # communication output before the residual
    ]
    out = new(n_steps, batch, n_units * d)
    c_n = new(n_units, batch, d)
    active = th.empty(n_steps, n_units, batch, dtype=th.bool)
    w: list[th.Tensor | None] = [p.detach().contiguous() for p in params]
    w += [None] * (5 - len(w))  # no communication weights without communication
    ptrs: list[th.Tensor | None] = [t.detach().contiguous() for t in (keys, cell_in, h0, c0)]
    ptrs += [*w, starts, out, c_n, active, *saved]
    fn = lib.rims_forward_f64 if keys.dtype == th.float64 else lib.rims_forward_f32
    fn(_dims(dims), _ptrs(ptrs))
    return out, c_n, active, saved


class _NativeSequence(th.autograd.Function):
    @staticmethod
    def forward(ctx: Any, lib: ctypes.CDLL, core: Any, starts: th.Tensor | None, *tensors: th.Tensor) -> Any:
        keys, cell_in, h0, c0, *params = tensors
        out, c_n, active, saved = _forward(lib, core, keys, cell_in, h0, c0, starts, list(params))
        ctx.lib, ctx.core, ctx.starts, ctx.n_params = lib, core, starts, len(params)
        # save_for_backward: freed after backward unless retain_graph=True, which then works as for any op
        ctx.save_for_backward(keys, cell_in, active, *params, *saved)
        ctx.mark_non_differentiable(active)
        return out, c_n, active

    @staticmethod
    @th.autograd.function.once_differentiable
    def backward(ctx: Any, d_out: th.Tensor | None, d_c_n: th.Tensor | None, _d_active: Any) -> Any:
        lib, core, starts = ctx.lib, ctx.core, ctx.starts
        keys, cell_in, active, *rest = ctx.saved_tensors
        params, saved = rest[: ctx.n_params], rest[ctx.n_params :]
        dims = _layout(core, keys, saved[0][:, 0])
        n_units, n_steps, batch, d = saved[0].shape
        new = keys.new_empty
        d_out = th.zeros(n_steps, batch, n_units * d, dtype=keys.dtype) if d_out is None else d_out.contiguous()
        d_c_n = th.zeros(n_units, batch, d, dtype=keys.dtype) if d_c_n is None else d_c_n.contiguous()
        wt = [params[0].detach().transpose(1, 2).contiguous()]
        wt += [p.detach().transpose(1, 2).contiguous() for p in params[2:4]] if core.communication else [None, None]
        d_keys = new(keys.shape)
        d_cell_in = new(cell_in.shape)
        dh0, dc0 = new(n_units, batch, d), new(n_units, batch, d)
        grads = [new(p.shape) for p in params]  # the kernel accumulates the weight gradients over all steps
        grads += [None] * (5 - len(grads))  # type: ignore[list-item]
        ptrs = [d_out, d_c_n, keys.contiguous(), cell_in.contiguous(), *wt, starts, active, *saved]
        ptrs += [d_keys, d_cell_in, dh0, dc0, *grads]
        fn = lib.rims_backward_f64 if keys.dtype == th.float64 else lib.rims_backward_f32
        fn(_dims(dims), _ptrs(ptrs))
        grads = grads[: len(params)]
        return (None, None, None, d_keys, d_cell_in, dh0, dc0, *grads)
