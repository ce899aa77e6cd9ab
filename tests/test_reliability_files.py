"""Reliability of what rims_rl reads, writes and builds: crafted files, the compiled kernel's cache, the kernel's
boundaries. Every crafted file is made by the test; the kernel cases run the compiled path (skipped without a
compiler) next to the PyTorch paths they must agree with.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch as th

from rims_rl import safe_io
from rims_rl.nn import RIMs, rims_native
from rims_rl.nn.rims_fused import rims_sequence

REPO = Path(__file__).resolve().parent.parent
IN = 7
PATHS = ["torch", "native"]


def make(**kwargs) -> RIMs:
    th.manual_seed(0)
    base = dict(n_units=5, k_active=2, unit_size=6, input_key_size=8, input_value_size=5, comm_key_size=4, comm_value_size=3)
    base.update(kwargs)
    return RIMs(IN, **base).double()


def needs_kernel(path: str = "native") -> object:
    if path != "native":
        return None
    lib = rims_native.load()
    if lib is None:
        pytest.skip(f"compiled RIMs kernel unavailable: {rims_native.unavailable_reason()}")
    return lib


def needs_compiler() -> str:
    compiler = rims_native._compiler()
    if compiler is None:
        pytest.skip("no C++ compiler")
    return compiler


def grads_of(core: RIMs, x: th.Tensor, starts: th.Tensor | None = None) -> list[th.Tensor]:
    core.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    out, (_, c) = core(x, None, starts)
    (out.pow(2).sum() + c.sum()).backward()
    return [out.detach(), x.grad, *(p.grad for p in core.parameters())]


def assert_all_close(got: list[th.Tensor | None], expected: list[th.Tensor | None]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            th.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, equal_nan=True)


# ---------------------------------------------------------------------------------------------------------------------
# 1. zip bomb


def _zip(path: Path, entries: list[tuple[str, int, int, int, bytes]]) -> None:
    """A zip written field by field: (name, method, crc32, uncompressed size, stored bytes) per entry."""
    local, central = bytearray(), bytearray()
    for name, method, crc, size, data in entries:
        raw = name.encode()
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(data), size,
                               len(raw), 0, 0, 0, 0, 0, len(local)) + raw  # fmt: skip
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), size, len(raw), 0)
        local += raw + data
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), len(local), 0)
    path.write_bytes(bytes(local + central + end))


def _bomb(path: Path, gib: int = 1) -> Path:
    """
    A safe-format agent whose tensors.safetensors is a valid safetensors file holding one zero float32 tensor of
    ``gib`` GiB, deflated to about 1 MB: each MiB of zeros is the same deflate block after a full flush, so the
    stream is written without compressing a gigabyte.
    """
    n = gib << 30
    header = json.dumps({"t0": {"dtype": "F32", "shape": [n // 4], "data_offsets": [0, n]}}).encode()
    head = struct.pack("<Q", len(header)) + header
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    zeros = bytes(1 << 20)
    start = deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    stream = start + block * (n >> 20) + deflate.flush()
    crc = zlib.crc32(head)
    for _ in range(n >> 20):
        crc = zlib.crc32(zeros, crc)
    meta = json.dumps({"format": safe_io.FORMAT, "version": safe_io.VERSION, "kind": "model",
                       "algo": "rims_rl.RecurrentPPO", "params": {"__tensor__": "t0"}}).encode()  # fmt: skip
    _zip(path, [(safe_io.META_ENTRY, 0, zlib.crc32(meta), len(meta), meta),
                (safe_io.TENSORS_ENTRY, 8, crc, len(head) + n, stream)])  # fmt: skip
    return path


def test_zip_bomb_is_refused_before_it_is_decompressed(tmp_path: Path) -> None:
    """
    ``evaluate.py --rims bomb.zip`` with a 1.0 MB zip holding a 1 GiB zero tensor refuses it in one line. Peak
    memory (ru_maxrss of the evaluating process) grew by about 1 MB over its imports (357 MB in all on the machine
    this was written on); before the entry sizes were checked it reached 2.4 GB. Asserted: under 300 MB of growth.
    """
    bomb = _bomb(tmp_path / "bomb.zip")
    assert bomb.stat().st_size < 2 << 20
    with zipfile.ZipFile(bomb) as archive:  # a real bomb: the zip module would inflate it to 1 GiB
        assert archive.getinfo(safe_io.TENSORS_ENTRY).file_size > 1 << 30
    script = textwrap.dedent(f"""
        import json, resource, sys
        import rims_rl.cli.evaluate, rims_rl.evaluation, rims_rl.safe_io
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rc = rims_rl.cli.evaluate.main(["--rims", {str(bomb)!r}, "-q"])
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"rc": rc, "before_kb": before, "after_kb": after}}))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["rc"] == 1, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "MAX_TENSOR_BYTES" in lines[0] and "Traceback" not in run.stderr, run.stderr
    assert (result["after_kb"] - result["before_kb"]) / 1024 < 300, result

    # an entry under the cap whose header declares more data than the entry holds: refused before reading it
    header = json.dumps({"t0": {"dtype": "F64", "shape": [1 << 20], "data_offsets": [0, 8 << 20]}}).encode()
    liar = tmp_path / "liar.zip"
    with zipfile.ZipFile(liar, "w") as archive:
        archive.writestr(safe_io.META_ENTRY, json.dumps({"format": safe_io.FORMAT, "version": safe_io.VERSION}))
        archive.writestr(safe_io.TENSORS_ENTRY, struct.pack("<Q", len(header)) + header + bytes(16))
    with pytest.raises(safe_io.UnsafeCheckpointError, match="declares 8388608 bytes of tensors, the entry holds 16"):
        safe_io.read_container(liar)


# ---------------------------------------------------------------------------------------------------------------------
# 2. zoo convert


class _Marker:
    """Unpickling this creates the marker file: the stand-in for an attacker's payload."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def test_zoo_convert_needs_trust_remote_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An SB3 (pickle) zip in the zoo is refused by ``convert`` without --trust-remote-code: one line, exit 2."""
    import base64
    import hashlib

    from rims_rl.zoo import main as zoo_main

    marker = tmp_path / "payload-ran"
    payload = base64.b64encode(pickle.dumps(_Marker(marker))).decode()
    agent = tmp_path / "zoo" / "agents" / "a.zip"
    agent.parent.mkdir(parents=True)
    with zipfile.ZipFile(agent, "w") as archive:
        archive.writestr("data", json.dumps({"lr_schedule": {":type:": "<class 'function'>", ":serialized:": payload}}))
    before = agent.read_bytes()
    entry = {"id": "a", "algo": "rims_ppo", "core": "rims", "setting": "s", "env": "E-v0", "path": "agents/a.zip",
             "sha256": hashlib.sha256(before).hexdigest()}  # fmt: skip
    (tmp_path / "zoo" / "manifest.json").write_text(json.dumps({"version": 1, "agents": [entry]}))
    assert zoo_main(["convert", "--root", str(tmp_path / "zoo")]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--trust-remote-code" in lines[0] and "Traceback" not in out + err
    assert not marker.exists() and agent.read_bytes() == before


# ---------------------------------------------------------------------------------------------------------------------
# 3. a library planted in the kernel cache


def test_a_library_planted_in_the_cache_is_never_loaded(fresh_loader: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    compiler = needs_compiler()
    marker = tmp_path / "constructor-ran"
    planted_source = tmp_path / "planted.c"
    planted_source.write_text(
        "#include <stdio.h>\n"
        f'__attribute__((constructor)) static void run(void) {{ FILE* f = fopen("{marker}", "w"); if (f) fclose(f); }}\n'
    )
    target = rims_native._target(compiler)
    fresh_loader.mkdir(mode=0o755, parents=True)

    def plant() -> None:
        subprocess.run([compiler, "-x", "c", "-shared", "-fPIC", str(planted_source), "-o", str(target)], check=True)

    def reset() -> None:
        monkeypatch.setitem(rims_native._state, "tried", False)
        monkeypatch.setitem(rims_native._state, "lib", None)

    # under the expected name, without a matching record: built over, the planted one never opened
    plant()
    assert rims_native.load() is not None
    assert not marker.exists()
    assert rims_native._verified(target)
    # a wrong record is no better
    reset()
    plant()
    rims_native._digest_file(target).write_text("0" * 64 + "\n")
    assert rims_native.load() is not None and not marker.exists()
    # a cache folder others can write to is refused outright: one notice, the PyTorch path
    reset()
    plant()
    fresh_loader.chmod(0o777)
    capsys.readouterr()
    core = make()
    x = th.randn(4, 2, IN, dtype=th.float64)
    assert not core.uses_native(x)
    assert "writable by others" in rims_native.unavailable_reason()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not marker.exists()
    # a library lacking a function: a notice and the PyTorch path, not an AttributeError
    fresh_loader.chmod(0o755)
    reset()
    partial = tmp_path / "partial.cpp"
    partial.write_text('extern "C" int rims_kernel_version() { return 3; }\n')
    monkeypatch.setattr(rims_native, "SOURCE", partial)
    assert rims_native.load() is None
    assert "lacks a function" in rims_native.unavailable_reason() and "rims_forward_f32" in rims_native.unavailable_reason()
    out, _ = core(x)
    assert th.isfinite(out).all()


# ---------------------------------------------------------------------------------------------------------------------
# 4. a compiler that hangs


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def test_a_compiler_that_hangs_is_stopped(fresh_loader: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """``<compiler> --version`` past its timeout: the compiler and what it started are killed, the PyTorch path runs."""
    if not Path("/proc/self/stat").exists() or shutil.which("sleep") is None:
        pytest.skip("needs /proc and sleep")
    pid_file = tmp_path / "child.pid"
    hanging = tmp_path / "hanging-c++"
    hanging.write_text(f"#!/bin/sh\nsleep 600 &\necho $! > {pid_file}\nwait\n")
    hanging.chmod(0o755)
    monkeypatch.setenv("CXX", str(hanging))
    monkeypatch.setattr(rims_native, "VERSION_TIMEOUT_S", 1)
    assert rims_native.load() is None
    assert "took more than 1 s" in rims_native.unavailable_reason()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 30  # SIGKILL was sent; wait for the kernel to finish the process
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(child), "the compiler's child process survived"


# ---------------------------------------------------------------------------------------------------------------------
# 5. VecNormalize metadata


def test_vecnormalize_file_sets_only_known_settings_with_their_types(tmp_path: Path) -> None:
    import gymnasium as gym
    from safetensors import safe_open
    from safetensors.numpy import save_file
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from rims_rl.checkpoint import load_vecnormalize, save_vecnormalize

    def venv() -> VecNormalize:
        return VecNormalize(DummyVecEnv([lambda: gym.make("CartPole-v1")]), gamma=0.9)

    source = venv()
    source.obs_rms.mean[:] = 3.0
    good = save_vecnormalize(source, tmp_path / "good.safetensors")
    with safe_open(str(good), framework="np") as file:
        meta = json.loads(file.metadata()["rims_rl"])
        arrays = {key: file.get_tensor(key) for key in file.keys()}

    def crafted(name: str, **settings: object) -> Path:
        path = tmp_path / name
        save_file(arrays, str(path), metadata={"rims_rl": json.dumps({**meta, "settings": {**meta["settings"], **settings}})})
        return path

    for path, message in [
        (crafted("venv.safetensors", venv=None), "unknown VecNormalize settings"),
        (crafted("method.safetensors", step_async=1), "unknown VecNormalize settings"),
        (crafted("type.safetensors", gamma="0.5"), "'gamma' must be a finite number"),
        (crafted("bool.safetensors", norm_obs=1), "'norm_obs' must be true or false"),
    ]:
        target = venv()
        methods = dict(vars(target))
        with pytest.raises(safe_io.UnsafeCheckpointError, match=message):
            load_vecnormalize(path, target)
        assert vars(target).keys() == methods.keys() and target.gamma == 0.9 and not target.obs_rms.mean.any()
    loaded = load_vecnormalize(good, venv())
    assert np.all(loaded.obs_rms.mean == 3.0) and loaded.ret_rms.mean.shape == ()


# ---------------------------------------------------------------------------------------------------------------------
# 15-18. the kernel's boundaries (each against the PyTorch paths)


@pytest.mark.parametrize("path", PATHS)
def test_settings_changed_between_forward_and_backward_do_not_change_the_backward(path: str) -> None:
    """The backward uses the forward's dimensions (changed ones made the kernel write out of bounds)."""
    needs_kernel(path)
    x = th.randn(5, 3, IN, dtype=th.float64)
    expected = grads_of(make(comm_heads=2, native=path == "native"), x)
    core = make(comm_heads=2, native=path == "native")
    xx = x.clone().requires_grad_()
    out, (_, c) = core(xx)
    core.residual, core.comm_heads = "gated", 4
    (out.pow(2).sum() + c.sum()).backward()
    assert_all_close([out.detach(), xx.grad, *(p.grad for p in core.parameters())], expected)


def _direct_inputs(core: RIMs, steps: int, batch: int) -> list[th.Tensor]:
    """keys, cell_in (batch-major), h0, c0 for a direct call of the sequence functions."""
    g = th.Generator().manual_seed(1)
    keys = th.randn(steps, batch, core.input_heads, core.input_key_size, generator=g, dtype=th.float64)
    cell_in = th.randn(steps, batch, core.n_units, core.input_heads, 4 * core.unit_size, generator=g, dtype=th.float64)
    h0, c0 = (0.5 * th.randn(core.n_units, batch, core.unit_size, generator=g, dtype=th.float64) for _ in range(2))
    return [keys, cell_in, h0, c0]


def test_a_direct_kernel_call_with_65_units_matches_pytorch_and_misfit_buffers_are_refused() -> None:
    lib = needs_kernel()
    core = make(n_units=65, k_active=7, unit_size=3, input_key_size=4, comm_heads=2)
    assert core.n_units > rims_native.MAX_UNITS, "RIMs itself sends this core to the PyTorch path"
    results = []
    for native in (True, False):
        inputs = [t.clone().requires_grad_() for t in _direct_inputs(core, 4, 2)]
        if native:
            out, c_n, active = rims_native.rims_sequence_native(lib, core, *inputs, None)
        else:
            keys, cell_in, h0, c0 = inputs
            out, c_n, active = rims_sequence(core, keys, cell_in.transpose(1, 2), h0, c0, None, set())
            out = out.permute(0, 2, 1, 3).flatten(2)
        core.zero_grad(set_to_none=True)
        (out.pow(2).sum() + c_n.sum()).backward()
        results.append([out.detach(), c_n.detach(), active, *(t.grad for t in inputs), *(p.grad for p in core.parameters())])
    assert_all_close(*results)
    keys, cell_in, h0, c0 = _direct_inputs(core, 4, 2)
    with pytest.raises(ValueError, match=r"cell_in must be a contiguous CPU torch\.float64 tensor of"):
        rims_native.rims_sequence_native(lib, core, keys, cell_in[:, :, :64], h0, c0, None)


@pytest.mark.parametrize("path", PATHS)
def test_gradient_penalty_equals_the_autograd_step(path: str) -> None:
    """Second derivatives (a gradient penalty on the input) through the fused paths equal autograd's."""
    needs_kernel(path)
    x = th.randn(5, 3, IN, dtype=th.float64)
    starts = th.zeros(5, 3)
    starts[2, 1] = 1.0
    results = []
    for core in (make(native=path == "native"), make(fused=False)):
        xx = x.clone().requires_grad_()
        out, (_, c) = core(xx, None, starts)
        (g,) = th.autograd.grad(out.pow(2).sum() + c.sum(), xx, create_graph=True)
        penalty = g.pow(2).sum()
        results.append([penalty.detach(), *th.autograd.grad(penalty, list(core.parameters()), allow_unused=True)])
    assert sum(t is not None for t in results[1]) > 3
    assert_all_close(*results)


@pytest.mark.parametrize("path", PATHS)
def test_nan_selects_the_units_the_pytorch_step_selects(path: str) -> None:
    """NaN input ranks as in torch.sort (after every number, ties by unit) on every path: never all units active."""
    needs_kernel(path)
    x = th.randn(5, 3, IN, dtype=th.float64)
    x[1, 2] = float("nan")
    for poisoned_unit in (None, 3):
        results = []
        for core in (make(native=path == "native"), make(fused=False)):
            if poisoned_unit is not None:  # NaN in one unit's recurrent weights: that unit ranks last
                with th.no_grad():
                    core.recurrent.weight[poisoned_unit, 0, 4 * core.unit_size] = float("nan")  # a query column
            out, (_, c) = core(x)
            results.append([out, c, core.last_active])
        assert_all_close(*results)
        active = results[0][2]
        assert (active.sum(-1) == 2).all(), "k_active units, also where the input is NaN"
        assert active[1, 2].tolist() == [True, True, False, False, False] or poisoned_unit is not None
        if poisoned_unit is not None:
            assert not active[:, :, poisoned_unit].any()


# ---------------------------------------------------------------------------------------------------------------------
# 19. first use, devices, library modes


def test_first_use_from_two_threads_builds_once_and_both_get_the_kernel(fresh_loader: Path, monkeypatch) -> None:
    needs_compiler()
    build = rims_native._build
    inside, second_done = threading.Event(), threading.Event()
    builds = []

    def slow_build(compiler: str) -> Path:
        builds.append(compiler)
        inside.set()
        second_done.wait(timeout=2)  # an unlocked loader lets the second thread return meanwhile (with no kernel)
        return build(compiler)

    monkeypatch.setattr(rims_native, "_build", slow_build)
    got: dict[str, object] = {}

    def first() -> None:
        got["first"] = rims_native.load()

    def second() -> None:
        inside.wait(timeout=60)
        got["second"] = rims_native.load()
        second_done.set()

    old = os.umask(0o022)
    try:
        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
    finally:
        os.umask(old)
    assert got["first"] is not None and got["second"] is got["first"] and len(builds) == 1
    (library,) = fresh_loader.glob("rims_kernel_*.so")
    assert library.stat().st_mode & 0o777 == 0o755, "readable by others sharing the cache, writable by no one else"
    assert rims_native._digest_file(library).stat().st_mode & 0o777 == 0o644


def test_episode_starts_on_another_device_never_reaches_the_kernel() -> None:
    lib = needs_kernel()
    core = make()
    keys, cell_in, h0, c0 = _direct_inputs(core, 3, 2)
    starts = th.zeros(3, 2, dtype=th.bool, device="meta")  # stands for a CUDA tensor: a pointer the kernel cannot read
    with pytest.raises(ValueError, match=r"episode_starts must be a contiguous CPU torch\.bool tensor"):
        rims_native.rims_sequence_native(lib, core, keys, cell_in, h0, c0, starts)


# ---------------------------------------------------------------------------------------------------------------------
# umask


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)], ids=["umask-022", "umask-077"])
def test_written_results_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    from rims_rl.checkpoint import atomic_write
    from rims_rl.evaluation.report import atomic_write_text
    from rims_rl.zoo import _write_manifest

    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "config.yml") as file:
            file.write(b"seed: 0\n")
        atomic_write_text(tmp_path / "report.md", "# report\n")
        _write_manifest(tmp_path, {"version": 1, "agents": []})
    finally:
        os.umask(old)
    for name in ("config.yml", "report.md", "manifest.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yml", "manifest.json", "report.md"]


# ---------------------------------------------------------------------------------------------------------------------
# the kernel under AddressSanitizer and UndefinedBehaviorSanitizer

_SANITIZED = """
import sys
import torch as th
from rims_rl.nn import RIMs, rims_native

rims_native.FLAGS = (*rims_native.FLAGS, "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                     "-fno-omit-frame-pointer")
assert rims_native.load() is not None, rims_native.unavailable_reason()
for dtype in (th.float32, th.float64):
    th.manual_seed(0)
    kw = dict(unit_size=6, input_key_size=8, input_value_size=5, comm_key_size=4, comm_value_size=3)
    # 15: settings changed between forward and backward
    core = RIMs(7, n_units=5, k_active=2, comm_heads=2, **kw).to(dtype)
    x = th.randn(5, 3, 7, dtype=dtype, requires_grad=True)
    out, _ = core(x)
    core.residual, core.comm_heads = "gated", 4
    out.sum().backward()
    # 16: 65 units, straight to the kernel (twice the old fixed buffer's size ahead)
    big = RIMs(7, n_units=65, k_active=7, comm_heads=2, **kw).to(dtype)
    keys = th.randn(3, 2, 1, 8, dtype=dtype, requires_grad=True)
    cell_in = th.randn(3, 2, 65, 1, 24, dtype=dtype, requires_grad=True)
    h0 = th.zeros(65, 2, 6, dtype=dtype)
    out, c_n, _ = rims_native.rims_sequence_native(rims_native.load(), big, keys, cell_in, h0, h0, None)
    (out.sum() + c_n.sum()).backward()
    # 18: NaN input and NaN weights (NaN through exp and the ranking)
    core = RIMs(7, n_units=5, k_active=2, residual="gated", **kw).to(dtype)
    with th.no_grad():
        core.recurrent.weight[3, 0, 24] = float("nan")
    x = th.randn(5, 3, 7, dtype=dtype)
    x[1, 2] = float("nan")
    x.requires_grad_()
    out, _ = core(x, None, th.ones(5, 3))
    out.sum().backward()
print("clean")
"""


@pytest.mark.slow
def test_the_kernel_is_clean_under_address_and_undefined_behaviour_sanitizers(tmp_path: Path) -> None:
    """Builds the kernel with -fsanitize=address,undefined and runs the cases above (15, 16, 18) through it."""
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no g++")
    probe = tmp_path / "probe.cpp"
    probe.write_text("int main() { return 0; }\n")
    if subprocess.run([compiler, "-fsanitize=address,undefined", str(probe), "-o", str(tmp_path / "probe")]).returncode:
        pytest.skip("g++ cannot build with -fsanitize=address,undefined here")
    asan = subprocess.run([compiler, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    env = {**os.environ, "PYTHONPATH": str(REPO), "CXX": compiler, "RIMS_RL_CACHE": str(tmp_path / "cache"),
           "LD_PRELOAD": asan, "ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS": "print_stacktrace=1"}  # fmt: skip
    env.pop(rims_native.DISABLE_ENV, None)
    run = subprocess.run([sys.executable, "-c", _SANITIZED], capture_output=True, text=True, env=env, timeout=900)
    report = run.stdout + run.stderr
    assert run.returncode == 0 and "clean" in run.stdout, report[-4000:]
    assert "AddressSanitizer" not in report and "runtime error" not in report, report[-4000:]
