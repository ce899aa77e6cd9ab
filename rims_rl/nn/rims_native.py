"""The RIMs time loop in compiled code: ``rims_kernel.cpp`` built on first use, called through ctypes.

The kernel includes no torch headers, so the first build takes seconds (one ``c++`` call), and the shared library
is cached under ``$RIMS_RL_CACHE`` (default ``$XDG_CACHE_HOME/rims_rl`` or ``~/.cache/rims_rl``), keyed by a hash
of the source, the compiler and this CPU, so later processes only load it. Without a compiler, or with
``RIMS_RL_NATIVE=0``, ``RIMs`` keeps to its PyTorch paths (one notice line on stderr when a compiler is missing).

A library is loaded only from a cache folder owned by this user and writable by no one else, and only when it
matches the SHA-256 recorded when it was built (anything else there is built over); every compiler command has a
timeout. Every buffer is checked against the dimensions the kernel will index it with right before each call.

The forward runs the whole sequence in one call and saves what the backward needs; the backward walks the sequence
in reverse in one call and accumulates every weight gradient on the way (a backward with ``create_graph=True``
takes autograd through the PyTorch step instead, so second derivatives are exact). Covered: CPU tensors, float32 or
float64, the configurations of ``rims_fused.py``. Shapes are unit-major as in ``rims.py``: kT units, B envs, unit
size d.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch as th

from rims_rl.nn.rims_fused import config, differentiable_backward

SOURCE = Path(__file__).with_name("rims_kernel.cpp")
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-std=c++17", "-shared", "-fPIC")
DISABLE_ENV = "RIMS_RL_NATIVE"
MAX_UNITS = 64  # RIMs sends cores of at most this many units to the kernel (which itself takes any number)
BUILD_TIMEOUT_S = 300
VERSION_TIMEOUT_S = 30  # ``<compiler> --version``: a compiler that does not answer is given up on
SYMBOLS = ("rims_forward_f32", "rims_forward_f64", "rims_backward_f32", "rims_backward_f64")

_state: dict[str, Any] = {"lib": None, "tried": False, "reason": ""}
_lock = threading.Lock()  # the first use builds once; another thread's first use waits for it


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


def _run(cmd: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """
    Run a compiler command; past ``timeout_s`` its whole process group (the driver and what it started) is killed.

    :raises RuntimeError: it did not finish in time
    """
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise RuntimeError(f"'{' '.join(cmd[:2])}' took more than {timeout_s} s (stopped)") from None
    return subprocess.CompletedProcess(cmd, process.returncode, stdout, stderr)


def _private(path: Path, what: str) -> str | None:
    """:return: why ``path`` cannot be trusted (owned by another user, or writable by group or others), or None."""
    info = path.stat()
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        return f"{what} {path} belongs to another user"
    if info.st_mode & 0o022:
        return f"{what} {path} is writable by others (mode {info.st_mode & 0o777:o})"
    return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digest_file(library: Path) -> Path:
    return library.with_name(library.name + ".sha256")


def _verified(library: Path) -> bool:
    """
    :return: whether ``library`` is one this user built: it and its recorded SHA-256 are owned by this user, not
        writable by others, and the library's content has that hash
    """
    record = _digest_file(library)
    try:
        if _private(library, "library") or _private(record, "record"):
            return False
        return record.read_text(encoding="ascii").strip() == _sha256(library)
    except (OSError, UnicodeDecodeError):
        return False


def _target(compiler: str) -> Path:
    """:return: the cached library's path, named by a hash of the source, the compiler, its flags and this CPU."""
    version = _run([compiler, "--version"], VERSION_TIMEOUT_S).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), compiler, version, " ".join(FLAGS), _cpu_signature()]).encode())
    return cache_dir() / f"rims_kernel_{key.hexdigest()[:16]}.so"


def _build(compiler: str) -> Path:
    """
    Compile the kernel into the cache, unless a library verified by :func:`_verified` is already there, and return
    its path. The library and its hash are each renamed into place (concurrent first uses are safe); a library
    that fails the check (planted, altered, or left by an interrupted build) is built again over it.

    :raises RuntimeError: the cache folder is not private to this user, the compiler failed or timed out
    """
    target = _target(compiler)
    folder = target.parent
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    problem = _private(folder, "the kernel cache")
    if problem:
        raise RuntimeError(f"{problem}; set RIMS_RL_CACHE to a folder of your own")
    if _verified(target):
        return target
    work = Path(tempfile.mkdtemp(prefix=".build.", dir=folder))
    try:
        built = work / "kernel.so"  # created by the linker: its mode follows the umask
        result = _run([compiler, *FLAGS, str(SOURCE), "-o", str(built)], BUILD_TIMEOUT_S)
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines() or ["the compiler failed without a message"]
            raise RuntimeError(next((line for line in lines if "error" in line), lines[-1]))
        built.chmod(built.stat().st_mode & 0o755)  # readable by those the umask lets read, writable by no one else
        record = work / "kernel.so.sha256"
        record.write_text(_sha256(built) + "\n", encoding="ascii")
        record.chmod(record.stat().st_mode & 0o644)
        os.replace(built, target)
        os.replace(record, _digest_file(target))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not _verified(target):
        raise RuntimeError(f"{target} changed while it was being installed")
    return target


def _disabled() -> bool:
    """:return: whether the environment variable ``RIMS_RL_NATIVE`` turns the kernel off."""
    return os.environ.get(DISABLE_ENV, "1").strip().lower() in ("0", "false", "no", "off")


def _open() -> tuple[ctypes.CDLL | None, str]:
    """:return: the kernel, or None and why not."""
    compiler = _compiler()
    if compiler is None:
        return None, "no C++ compiler found (set CXX or install g++)"
    try:
        path = _build(compiler)
        lib = ctypes.CDLL(str(path))
    except (OSError, RuntimeError) as error:
        return None, f"building the kernel failed: {error}"
    try:
        for name in SYMBOLS:
            getattr(lib, name).argtypes = [ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_void_p)]
            getattr(lib, name).restype = ctypes.c_int
    except AttributeError as error:
        return None, f"the built kernel {path.name} lacks a function ({error})"
    return lib, ""


def load() -> ctypes.CDLL | None:
    """
    :return: the compiled kernel, building it on first use; None where it is disabled or cannot be built
        (the reason is in ``unavailable_reason()``; a missing compiler or a failed build is said once on stderr).
        Thread-safe: a first use from several threads builds once, and every thread gets the kernel.
    """
    if _disabled():
        return None
    if _state["tried"]:
        return _state["lib"]
    with _lock:
        if not _state["tried"]:
            _state["lib"], _state["reason"] = _open()
            _state["tried"] = True
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


def _dims(values: list[int]) -> Any:
    return (ctypes.c_int64 * len(values))(*values)


def _params(core: Any) -> list[th.Tensor]:
    params = [core.recurrent.weight, core.recurrent.bias]
    if core.communication:
        params += [core.comm_qkv.weight, core.comm_out.weight, core.comm_out.bias]
    return params


ALLOCATED = -1
"""In place of a buffer's size for :func:`_call`: a tensor allocated here from the same dimensions (it fits)."""


def _call(fn: Any, dims: list[int], buffers: Sequence[tuple[str, th.Tensor | None, int | None]], dtype: th.dtype) -> None:
    """
    Call a kernel entry after checking every buffer it was given against the dimensions it will be indexed with:
    a CPU, contiguous tensor of the kernel's dtype (bool for masks) with exactly the elements the loops read or write.

    :param buffers: (name, tensor or None, the number of elements it must have; None: it must be None;
        :data:`ALLOCATED`: allocated from ``dims`` by the caller)
    :raises ValueError: a buffer that does not fit (nothing is read or written)
    """
    pointers: list[int | None] = []
    for name, tensor, numel in buffers:
        if tensor is None or numel is None:
            if tensor is not None or numel is not None:
                raise ValueError(f"RIMs kernel: {name} {'is missing' if tensor is None else 'is not used'}")
            pointers.append(None)
            continue
        if numel == ALLOCATED:
            pointers.append(tensor.data_ptr())
            continue
        kind = th.bool if name == "episode_starts" else dtype
        if not tensor.is_cpu or tensor.dtype != kind or not tensor.is_contiguous() or tensor.numel() != numel:
            raise ValueError(
                f"RIMs kernel: {name} must be a contiguous CPU {kind} tensor of {numel} elements, got "
                f"{tensor.dtype} on {tensor.device} with {tensor.numel()}"
            )
        pointers.append(tensor.data_ptr())
    if fn(_dims(dims), (ctypes.c_void_p * len(pointers))(*pointers)) != 0:
        raise ValueError(f"RIMs kernel: dimensions {dims} do not describe a core")


@functools.lru_cache(maxsize=64)
def _buffer_sizes(dims: tuple[int, ...]) -> dict[str, Any]:
    """:return: the number of elements of each buffer the kernel indexes, for these dimensions (None: not used)."""
    n_steps, batch, n_units, d, heads, key_size, _, comm, gated, n_heads, dk, dv, n_bias = dims
    gates, proj, qkv = 4 * d, 4 * d + heads * key_size, n_heads * (2 * dk + dv)
    out_size = (2 * d if gated else d) if comm else 0
    rows = n_units * n_steps * batch
    saved = [d, d, gates, d, heads, heads * key_size, d, qkv, n_units * n_heads, n_heads * dv, out_size]
    return {
        "keys": n_steps * batch * heads * key_size,
        "cell_in": n_steps * batch * n_units * heads * gates,
        "state": n_units * batch * d,
        "w_rec": n_units * d * proj,
        "b_rec": n_units * n_bias,
        "w_qkv": n_units * d * qkv if comm else None,
        "w_out": n_units * n_heads * dv * out_size if comm else None,
        "b_out": n_units * out_size if comm else None,
        "episode_starts": n_steps * batch,
        "out": n_steps * batch * n_units * d,
        "saved": [rows * size for size in saved],
    }


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
    :param starts: (T, B) bool on the CPU, True where an env starts an episode (its state is set to 0 first), or None
    :return: h at every step (T, B, kT * d), the final c (kT, B, d), the active mask (T, kT, B) bool
    :raises ValueError: a tensor that does not fit the core (shape, device, dtype), checked before the kernel runs
    """
    params = _params(core)
    tensors = (keys, cell_in, h0, c0, *params)
    if th.is_grad_enabled() and any(t.requires_grad for t in tensors):
        out, c_n, active = _NativeSequence.apply(lib, core, starts, *tensors)
        return out, c_n, active
    with th.no_grad():
        out, c_n, active, _ = _forward(lib, _layout(core, keys, h0), keys, cell_in, h0, c0, starts, params)
    return out, c_n, active


def _layout(core: Any, keys: th.Tensor, h0: th.Tensor) -> list[int]:
    """:return: the kernel's dimensions for ``core`` and these inputs."""
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
    dims: list[int],
    keys: th.Tensor,
    cell_in: th.Tensor,
    h0: th.Tensor,
    c0: th.Tensor,
    starts: th.Tensor | None,
    params: list[th.Tensor],
) -> tuple[th.Tensor, th.Tensor, th.Tensor, list[th.Tensor]]:
    """:return: out (T, B, kT * d), c_n (kT, B, d), active (T, kT, B) bool, and the saved tensors (kT, T, B, ·)."""
    n_steps, batch, n_units, d = dims[:4]
    sizes = _buffer_sizes(tuple(dims))
    new = keys.new_empty
    saved = [new(n_units, n_steps, batch, size // (n_units * n_steps * batch)) for size in sizes["saved"]]
    out = new(n_steps, batch, n_units * d)
    c_n = new(n_units, batch, d)
    active = th.empty(n_steps, n_units, batch, dtype=th.bool)
    w: list[th.Tensor | None] = [p.detach().contiguous() for p in params]
    w += [None] * (5 - len(w))  # no communication weights without communication
    inputs = [t.detach().contiguous() for t in (keys, cell_in, h0, c0)]
    names = ("keys", "cell_in", "state", "state", "w_rec", "b_rec", "w_qkv", "w_out", "b_out")
    buffers = [(name, t, sizes[name]) for name, t in zip(names, [*inputs, *w], strict=True)]
    buffers += [("episode_starts", starts, None if starts is None else sizes["episode_starts"])]
    buffers += [(name, t, ALLOCATED) for name, t in (("out", out), ("c_n", c_n), ("active", active))]
    buffers += [("saved", t, ALLOCATED) for t in saved]
    _call(lib.rims_forward_f64 if keys.dtype == th.float64 else lib.rims_forward_f32, dims, buffers, keys.dtype)
    return out, c_n, active, saved


class _NativeSequence(th.autograd.Function):
    @staticmethod
    def forward(ctx: Any, lib: ctypes.CDLL, core: Any, starts: th.Tensor | None, *tensors: th.Tensor) -> Any:
        keys, cell_in, h0, c0, *params = tensors
        dims = _layout(core, keys, h0)
        out, c_n, active, saved = _forward(lib, dims, keys, cell_in, h0, c0, starts, list(params))
        # the backward reads the forward's dimensions and settings, never the module's (which may change meanwhile)
        ctx.lib, ctx.dims, ctx.config, ctx.starts, ctx.n_inputs = lib, dims, config(core), starts, len(tensors)
        # save_for_backward: freed after backward unless retain_graph=True, which then works as for any op
        ctx.save_for_backward(*tensors, active, *saved)
        ctx.mark_non_differentiable(active)
        return out, c_n, active

    @staticmethod
    def backward(ctx: Any, d_out: th.Tensor | None, d_c_n: th.Tensor | None, _d_active: Any) -> Any:
        lib, dims, starts = ctx.lib, ctx.dims, ctx.starts
        inputs = ctx.saved_tensors[: ctx.n_inputs]
        if th.is_grad_enabled():  # create_graph=True: the gradient must itself be differentiable
            reset = None if starts is None else starts.view(starts.shape[0], 1, starts.shape[1], 1)
            steps = set() if starts is None else set(th.nonzero(starts.any(1)).flatten().tolist())
            grads = differentiable_backward(ctx.config, reset, steps, inputs, d_out, d_c_n, batch_major=True)
            return (None, None, None, *grads)
        keys, cell_in, _h0, _c0, *params = inputs
        active, *saved = ctx.saved_tensors[ctx.n_inputs :]
        n_steps, batch, n_units, d = dims[:4]
        comm = bool(dims[7])
        sizes = _buffer_sizes(tuple(dims))
        new = keys.new_empty
        d_out = th.zeros(n_steps, batch, n_units * d, dtype=keys.dtype) if d_out is None else d_out.contiguous()
        d_c_n = th.zeros(n_units, batch, d, dtype=keys.dtype) if d_c_n is None else d_c_n.contiguous()
        wt = [params[0].detach().transpose(1, 2).contiguous()]
        wt += [p.detach().transpose(1, 2).contiguous() for p in params[2:4]] if comm else [None, None]
        d_keys = new(keys.shape)
        d_cell_in = new(cell_in.shape)
        dh0, dc0 = new(n_units, batch, d), new(n_units, batch, d)
        grads = [new(p.shape) for p in params]  # the kernel accumulates the weight gradients over all steps
        grads += [None] * (5 - len(grads))  # type: ignore[list-item]
        given = [("out", d_out), ("state", d_c_n), ("keys", keys.detach().contiguous())]
        given += [("cell_in", cell_in.detach().contiguous()), *zip(("w_rec", "w_qkv", "w_out"), wt, strict=True)]
        buffers = [(name, t, sizes[name]) for name, t in given]
        buffers += [("episode_starts", starts, None if starts is None else sizes["episode_starts"])]
        buffers += [(name, t, ALLOCATED) for name, t in (("active", active), *(("saved", t) for t in saved))]
        made = [("d_keys", d_keys), ("d_cell_in", d_cell_in), ("dh0", dh0), ("dc0", dc0)]  # shaped as checked inputs
        buffers += [(name, t, ALLOCATED) for name, t in made]
        weights = ("w_rec", "b_rec", "w_qkv", "w_out", "b_out")
        buffers += [(name, g, sizes[name]) for name, g in zip(weights, grads, strict=True)]
        _call(lib.rims_backward_f64 if keys.dtype == th.float64 else lib.rims_backward_f32, dims, buffers, keys.dtype)
        grads = grads[: len(params)]
        return (None, None, None, d_keys, d_cell_in, dh0, dc0, *grads)
