"""Reliability of ``rims-train`` (issue 23, items 6-14): one line, an exit code, nothing left behind or lost.

A refused command (exit 2) writes nothing: no run folder for a new run, no change to a resumed run's files. A run
that stops on its own (a non-finite value, a failed write: exit 1) says in one line where it stopped and which
checkpoint is the last good one, and ``--resume`` continues from there. All in-process, on the cue-recall env
(4 envs x 32 steps = 128 timesteps per rollout).
"""

from __future__ import annotations

import errno
import os
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest
import torch as th
from sb3_contrib import RecurrentPPO

import rims_rl.checkpoint as checkpoint_module
from rims_rl.checkpoint import NonFiniteError, latest_checkpoint, list_checkpoints, read_resume_state
from rims_rl.cli.train import main
from rims_rl.safe_io import META_ENTRY, TENSORS_ENTRY, load_model, save_model

ENV = "RimsCueRecall-v0"
QUIET = ["--no-progress", "--verbose", "0"]
FAST = ["--env", ENV, *QUIET, "--eval-freq", "0"]
STRAIGHT = [*FAST, "-n", "256", "--save-freq", "128"]  # checkpoints at 128 and 256, then the final model


def _refused(capsys: pytest.CaptureFixture[str], code: int, *needles: str, status: int = 2) -> str:
    """Assert the exit code and exactly one stderr line ``rims-train: error: ...`` holding every needle."""
    out, err = capsys.readouterr()
    assert code == status, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rims-train: error:"), err
    assert "Traceback" not in out + err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    """:return: every file under ``folder`` (relative name -> bytes), to show that a refusal changed nothing"""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of :data:`STRAIGHT` (never modified: tests copy it)."""
    logs = tmp_path_factory.mktemp("straight")
    assert main([*STRAIGHT, "-f", str(logs)]) == 0
    return logs / "rims_ppo" / f"{ENV}_1"


@pytest.fixture
def run(straight: Path, tmp_path: Path) -> Path:
    """A copy of the straight run, as ``<tmp>/logs/rims_ppo/<env>_1``."""
    copy = tmp_path / "logs" / "rims_ppo" / straight.name
    shutil.copytree(straight, copy)
    return copy


def _params(path: Path) -> dict[str, th.Tensor]:
    return load_model(path, device="cpu").policy.state_dict()


def _assert_same_weights(a: Path, b: Path) -> None:
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys()
    for key in pa:
        assert th.equal(pa[key], pb[key]), key


# --- 6: non-finite hyperparameters up front; a divergence inside an update stops like any non-finite value ----------


@pytest.mark.parametrize("override", ["learning_rate:.inf", "learning_rate:lin_inf", "ent_coef:.inf", "max_grad_norm:.nan"])
def test_6_non_finite_hyperparameter_refused(override: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    code = main([*FAST, "-f", str(logs), "-params", override])
    _refused(capsys, code, override.split(":")[0], "finite")
    assert not logs.exists()


def test_6_divergence_inside_an_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The second update runs at learning rate 1e6: the NaN logits it makes part-way stop training in one line."""
    original = RecurrentPPO.train
    calls = {"n": 0}

    def diverging_train(self: RecurrentPPO) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            self.lr_schedule = lambda _: 1.0e6
        original(self)

    monkeypatch.setattr(RecurrentPPO, "train", diverging_train)
    logs = tmp_path / "logs"
    code = main([*FAST, "-n", "512", "--save-freq", "128", "-f", str(logs)])
    run = logs / "rims_ppo" / f"{ENV}_1"
    line = _refused(capsys, code, "step 256", "non-finite", "rl_model_128_steps.zip", f"--resume {run}", status=1)
    assert "update" in line or "weights" in line, line
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [128]
    assert latest_checkpoint(run / "checkpoints") == run / "checkpoints" / "rl_model_128_steps.zip"
    assert not (run / f"{ENV}.zip").exists()


# --- 7: an explicit checkpoint holding NaN; the first boundary after a restart is checked -----------------------------


def _poison(path: Path, what: str) -> None:
    """Rewrite a checkpoint with a NaN weight or a NaN recurrent state (bypassing the finite-or-nothing save)."""
    model = load_model(path, device="cpu")
    resume = read_resume_state(path)
    assert resume is not None
    if what == "weights":
        with th.no_grad():
            next(model.policy.parameters()).view(-1)[0] = float("nan")
    else:
        resume["last_lstm_states"].pi[0].view(-1)[0] = float("nan")
    save_model(model, path, {"resume": resume})


@pytest.mark.parametrize("what", ["weights", "recurrent state"])
def test_7_resume_explicit_nan_checkpoint(what: str, run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = run / "checkpoints" / "rl_model_128_steps.zip"
    _poison(target, what)
    (run / f"{ENV}.zip").unlink()
    before = _snapshot(run)
    code = main(["--resume", str(target), *QUIET])
    _refused(capsys, code, str(target), f"non-finite {what}")
    assert _snapshot(run) == before


def test_7_first_boundary_after_restart_is_checked(straight: Path, tmp_path: Path) -> None:
    from rims_rl.callbacks import ResumableCheckpointCallback

    model = load_model(straight / "checkpoints" / "rl_model_128_steps.zip", device="cpu")
    with th.no_grad():
        next(model.policy.parameters()).view(-1)[0] = float("nan")
    callback = ResumableCheckpointCallback(128, str(tmp_path))
    callback.init_callback(model)
    callback.on_training_start({}, {})
    with pytest.raises(NonFiniteError, match="non-finite weights"):
        callback.on_rollout_start()
    assert list(tmp_path.iterdir()) == []


# --- 8: a batch larger than the rollout -------------------------------------------------------------------------------


def test_8_batch_size_above_the_rollout_says_what_is_used(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*FAST, "-n", "128", "-f", str(tmp_path), "-params", "batch_size:100000"]) == 0
    plan = capsys.readouterr().out.splitlines()[0]
    assert "batch_size 100,000 is more than a rollout" in plan and "one minibatch of 128" in plan, plan


# --- 9: -i refused before the run folder exists -----------------------------------------------------------------------


def test_9_refused_trained_agent_leaves_no_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused = tmp_path / "refused.zip"
    refused.write_bytes(b"not a checkpoint")
    logs = tmp_path / "logs"
    for _ in range(2):  # a retry must not add a folder either (it used to make _2, _3, ...)
        code = main([*FAST, "-f", str(logs), "-i", str(refused)])
        _refused(capsys, code, "--trained-agent", str(refused))
        assert not logs.exists()


# --- 10: --device ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device, needle", [("bogus", "not a torch device"), ("cuda", "CUDA is not available"),
                                            ("cuda:0", "CUDA is not available")])  # fmt: skip
def test_10_device_checked_up_front(
    device: str, needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(th.cuda, "is_available", lambda: False)  # the same on a machine with a GPU
    logs = tmp_path / "logs"
    code = main([*FAST, "-f", str(logs), "--device", device])
    _refused(capsys, code, "--device", needle)
    assert not logs.exists()


# --- 11: a refused --resume -n N rewrites nothing ---------------------------------------------------------------------


def test_11_refused_resume_extension_rewrites_nothing(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a checkpoint that reads well but was made on another env: refused when it is loaded, after the up-front checks
    other = tmp_path / "other"
    tiny = ["--env", "CartPole-v1", *QUIET, "--eval-freq", "0", "--n-envs", "2", "-n", "32", "-params", "n_steps:16",
            "batch_size:32"]  # fmt: skip
    assert main([*tiny, "-f", str(other)]) == 0
    (foreign,) = (other / "rims_ppo" / "CartPole-v1_1" / "checkpoints").iterdir()
    capsys.readouterr()
    checkpoints = run / "checkpoints"
    shutil.copy(foreign, checkpoints / "rl_model_384_steps.zip")
    (checkpoints / ".rl_model_512_steps.zip.abc.tmp").write_bytes(b"litter")  # removed only by a resume that starts
    (checkpoints / "rl_model_512_steps.zip").write_bytes(b"truncated")
    before = _snapshot(run)
    for name, needle in (("rl_model_384_steps.zip", "cannot load"), ("rl_model_512_steps.zip", "unreadable")):
        code = main(["--resume", str(checkpoints / name), "-n", "1024", *QUIET])
        _refused(capsys, code, "--resume", name, needle)
        assert _snapshot(run) == before


# --- 12: a run record that is not YAML or lacks keys -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name, text, needle",
    [
        ("args.yml", "env: [unclosed\n", "malformed YAML"),
        ("args.yml", "- a list\n", "not a mapping"),
        ("args.yml", None, "lacks 'seed'"),
        ("args.yml", "", "not a mapping"),
        ("config.yml", "n_steps: {{\n", "malformed YAML"),
        ("config.yml", "learning_rate: .inf\n", "finite"),
        ("config.yml", "n_stepz: 32\n", "n_stepz"),
    ],
)
def test_12_broken_run_record(name: str, text: str | None, needle: str, run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    (run / f"{ENV}.zip").unlink()  # an unfinished run
    if text is None:  # args.yml without one key
        saved = yaml.safe_load((run / name).read_text())
        del saved["seed"]
        text = yaml.safe_dump(saved)
    (run / name).write_text(text)
    before = _snapshot(run)
    code = main(["--resume", str(run), *QUIET])
    _refused(capsys, code, "--resume", name, needle)
    assert _snapshot(run) == before


# --- 13: an explicit checkpoint that is not a zip, has a bad CRC or nests JSON deeply ----------------------------------


def _bad_crc(path: Path) -> None:
    """Flip one byte inside the stored tensors (the zip's directory stays intact: only the CRC check fails)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(TENSORS_ENTRY)
    name_len = int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _deep_json(path: Path) -> None:
    depth = 200_000
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(META_ENTRY, '{"format": ' + "[" * depth + "]" * depth + "}")


@pytest.mark.parametrize("damage", ["not a zip", "bad CRC", "deep JSON"])
def test_13_unreadable_explicit_checkpoint(damage: str, run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = run / "checkpoints" / "rl_model_128_steps.zip"
    if damage == "not a zip":
        target.write_bytes(b"PK but not really a zip")
    elif damage == "bad CRC":
        _bad_crc(target)
    else:
        _deep_json(target)
    (run / f"{ENV}.zip").unlink()
    before = _snapshot(run)
    code = main(["--resume", str(target), *QUIET])
    _refused(capsys, code, "--resume", str(target), "unreadable")
    assert _snapshot(run) == before


# --- 14: a write that fails mid-run (disk full, read-only folder) ------------------------------------------------------


@pytest.mark.parametrize(
    "error, fails",
    [
        (errno.ENOSPC, "rl_model_256_steps.zip"),  # disk full at the second checkpoint
        (errno.EROFS, "rl_model_256_steps.zip"),  # the folder turned read-only
        (errno.ENOSPC, f"{ENV}.zip"),  # disk full at the final model, after the last checkpoint
    ],
)
def test_14_failed_write_mid_run(
    error: int, fails: str, straight: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    original = checkpoint_module.atomic_write

    @contextmanager
    def failing_write(path: Any) -> Iterator[IO[bytes]]:
        if Path(path).name == fails:  # as the OS reports it: no temporary file stays behind
            raise OSError(error, os.strerror(error), str(path))
        with original(path) as file:
            yield file

    monkeypatch.setattr(checkpoint_module, "atomic_write", failing_write)
    logs = tmp_path / "logs"
    code = main([*STRAIGHT, "-f", str(logs)])
    run = logs / "rims_ppo" / f"{ENV}_1"
    last = "rl_model_256_steps.zip" if fails == f"{ENV}.zip" else "rl_model_128_steps.zip"
    _refused(capsys, code, str(run), fails, last, f"--resume {run}", status=2)
    assert not (run / f"{ENV}.zip").exists()
    monkeypatch.setattr(checkpoint_module, "atomic_write", original)
    # nothing lost: --resume finishes the run as if nothing had happened
    assert main(["--resume", str(run), *QUIET]) == 0
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [128, 256]
    _assert_same_weights(straight / f"{ENV}.zip", run / f"{ENV}.zip")
