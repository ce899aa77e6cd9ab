"""Reliability (issue 13, checkpoint side): files that never run code, exact resume, finite-or-nothing, bookkeeping.

The crafted-checkpoint cases build SB3 zips whose pickled entries would create a marker file in tmp_path when
unpickled, and assert that the marker never appears, whatever entry point reads the file.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path
from typing import Any

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import torch as th
from sb3_contrib import RecurrentPPO

from rims_rl.checkpoint import latest_checkpoint, list_checkpoints
from rims_rl.cli import evaluate as evaluate_cli
from rims_rl.cli.train import main as train_main

REPO = Path(__file__).resolve().parent.parent
ENV = "RimsCueRecall-v0"  # 4 envs x 32 steps = 128 timesteps per rollout (agents/*.yml)
FAST = ["--env", ENV, "--no-progress", "--verbose", "0", "--eval-episodes", "2"]


class _Marker:
    """Unpickling this creates the marker file (``open(path, "w")``): the stand-in for an attacker's payload."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def _payload(marker: Path) -> str:
    return base64.b64encode(pickle.dumps(_Marker(marker))).decode()


def _tiny_sb3_zip(path: Path) -> Path:
    """A real (SB3-format) RecurrentPPO zip on the cue-recall env, saved with SB3's own ``save``."""
    from rims_rl.policies import MlpRimsPolicy

    env = gym.make(ENV)
    model = RecurrentPPO(MlpRimsPolicy, env, n_steps=16, batch_size=16, n_epochs=1, device="cpu", seed=0,
                         policy_kwargs={"core": "lstm", "core_kwargs": {"hidden_size": 8}, "net_arch": []})  # fmt: skip
    model.save(path)
    return path


def _craft(clean: Path, out: Path, marker: Path, resume_entry: bool = False) -> Path:
    """Copy an SB3 zip, replacing its pickled ``lr_schedule`` (and optionally adding a resume entry) by the payload."""
    with zipfile.ZipFile(clean) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            content = src.read(name)
            if name == "data":
                data = json.loads(content)
                data["lr_schedule"] = {":type:": "<class 'function'>", ":serialized:": _payload(marker)}
                content = json.dumps(data).encode()
            dst.writestr(name, content)
        if resume_entry:
            dst.writestr("rims_rl_resume.pkl", cloudpickle.dumps(_Marker(marker)))
    return out


@pytest.fixture(scope="module")
def clean_sb3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_sb3_zip(tmp_path_factory.mktemp("sb3") / "clean.zip")


def _single_stderr_line(capsys: pytest.CaptureFixture[str]) -> str:
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_crafted_zip_never_runs_through_evaluate(tmp_path: Path, clean_sb3: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    crafted = _craft(clean_sb3, tmp_path / "crafted.zip", marker)
    run = tmp_path / "rims_ppo" / f"{ENV}_1"  # a run folder whose final model was replaced
    run.mkdir(parents=True)
    _craft(clean_sb3, run / f"{ENV}.zip", marker)
    for spec in (str(crafted), str(run)):
        code = evaluate_cli.main(["--rims", spec, "--env", ENV, "-n", "1", "--no-random", "-o", str(tmp_path / "e"), "-q"])
        assert code == 1
        line = _single_stderr_line(capsys)
        assert "--trust-remote-code" in line and "pickled" in line
        assert not marker.exists()
    # the explicit opt-in still reads ecosystem zips (the clean one: nothing to trigger)
    code = evaluate_cli.main(["--rims", str(clean_sb3), "--env", ENV, "-n", "1", "--no-random", "--trust-remote-code",
                              "--n-bootstrap", "10", "-o", str(tmp_path / "e"), "-q"])  # fmt: skip
    assert code == 0


def test_crafted_zip_never_runs_through_train_i_and_policy_load(
    tmp_path: Path, clean_sb3: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rims_rl.policies import MlpRimsPolicy
    from rims_rl.safe_io import UnsafeCheckpointError

    marker = tmp_path / "pwned"
    crafted = _craft(clean_sb3, tmp_path / "crafted.zip", marker)
    code = train_main([*FAST, "-n", "128", "--eval-freq", "0", "-f", str(tmp_path / "logs"), "-i", str(crafted)])
    assert code == 2
    assert "--trust-remote-code" in _single_stderr_line(capsys)
    assert not marker.exists()
    # an ecosystem zip (export_sb3 of a rims_rl run) is refused without the flag and used with it
    from rims_rl.safe_io import export_sb3

    tiny = [*FAST, "--algo", "lstm_ppo", "-n", "128", "--eval-freq", "0"]
    assert train_main([*tiny, "-f", str(tmp_path / "src")]) == 0
    exported = export_sb3(next((tmp_path / "src" / "lstm_ppo").iterdir()) / f"{ENV}.zip", tmp_path / "sb3.zip")
    capsys.readouterr()
    assert train_main([*tiny, "-f", str(tmp_path / "dst"), "-i", str(exported)]) == 2
    assert "--trust-remote-code" in _single_stderr_line(capsys)
    assert train_main([*tiny, "-f", str(tmp_path / "dst"), "-i", str(exported), "--trust-remote-code"]) == 0
    pth = tmp_path / "policy.pth"
    th.save({"state_dict": {}, "data": {"x": _Marker(marker)}}, pth)
    with pytest.raises(UnsafeCheckpointError):
        MlpRimsPolicy.load(str(pth), device="cpu")
    assert not marker.exists()


def test_crafted_resume_checkpoint_never_runs(tmp_path: Path, clean_sb3: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    logs = tmp_path / "logs"
    assert train_main([*FAST, "-n", "256", "--eval-freq", "0", "--save-freq", "128", "-f", str(logs)]) == 0
    run = next((logs / "rims_ppo").iterdir())
    (run / f"{ENV}.zip").unlink()
    for _, path in list_checkpoints(run / "checkpoints"):
        _craft(clean_sb3, path, marker, resume_entry=True)
    capsys.readouterr()
    with pytest.warns(UserWarning, match="skipping .*unreadable"):
        code = train_main(["--resume", str(run), "--no-progress", "--verbose", "0"])
    assert code == 2
    assert "no complete checkpoint" in _single_stderr_line(capsys)
    assert train_main(["--resume", str(run / "checkpoints" / "rl_model_128_steps.zip"), "--no-progress"]) == 2
    assert "cannot resume" in _single_stderr_line(capsys)
    assert not marker.exists()


def _tiny_zoo(root: Path, model_file: Path) -> str:
    from rims_rl.zoo import add_to_zoo

    return add_to_zoo(model_file, "cue/rims_ppo/seed0", "rims_ppo", "lstm", "cue", ENV, 0, root=root).id


@pytest.fixture(scope="module")
def safe_model(tmp_path_factory: pytest.TempPathFactory, clean_sb3: Path) -> Path:
    from rims_rl.safe_io import load_model, save_model

    return save_model(load_model(clean_sb3, trust_remote_code=True), tmp_path_factory.mktemp("safe") / "safe.zip")


def test_zoo_swapped_file_and_escaping_paths(
    tmp_path: Path, clean_sb3: Path, safe_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rims_rl.evaluation import gym_targets, resolve_agent
    from rims_rl.evaluation.runner import evaluate
    from rims_rl.zoo import get_zoo_entry, load_zoo_agent

    marker = tmp_path / "pwned"
    zoo = tmp_path / "zoo"
    agent_id = _tiny_zoo(zoo, safe_model)
    monkeypatch.setenv("RIMS_RL_ZOO", str(zoo))
    # swapped after the hash check: the checked bytes are the ones loaded
    spec = resolve_agent(agent_id)
    _craft(clean_sb3, zoo / get_zoo_entry(agent_id).path, marker)
    result = evaluate([spec], gym_targets([ENV], 1, [0], None), random_baseline=False)
    assert all(len(per_agent[spec.label][ENV].returns) == 1 for per_agent in result.episodes.values())
    assert not marker.exists()
    with pytest.raises(ValueError, match="sha256 mismatch"):
        load_zoo_agent(agent_id)
    # manifest paths that leave the zoo folder, with a matching hash
    outside = _craft(clean_sb3, tmp_path / "outside.zip", marker)
    digest = __import__("hashlib").sha256(outside.read_bytes()).hexdigest()
    (zoo / "agents" / "link.zip").symlink_to(outside)
    for rel in ("../outside.zip", str(outside), "agents/../../outside.zip", "agents/link.zip"):
        manifest = json.loads((zoo / "manifest.json").read_text())
        manifest["agents"][0].update(path=rel, sha256=digest)
        (zoo / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ValueError, match="zoo folder"):
            load_zoo_agent(agent_id)
        assert not marker.exists()


def test_no_unpickling_in_default_evaluate_and_zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python evaluate.py`` (no agents named: the zoo's) and every zoo id load with every unpickler disabled."""
    from rims_rl.zoo import list_zoo, load_zoo_agent

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("something was unpickled")

    for module, name in ((pickle, "loads"), (pickle, "load"), (cloudpickle, "loads"), (cloudpickle, "load"), (th, "load")):
        monkeypatch.setattr(module, name, forbidden)
    entries = list_zoo()
    assert entries, "the repository zoo is empty"
    for entry in entries:
        assert load_zoo_agent(entry.id).policy.core_name == entry.core
    argv = ["-n", "1", "--seeds", "0", "--splits", "novel-distractors", "--n-bootstrap", "20", "-o", str(tmp_path), "-q"]
    assert evaluate_cli.main(argv) == 0


def test_converted_zoo_agents_act_as_the_originals() -> None:
    """reference_outputs.json holds the original (pickled) agents' outputs, recorded by the conversion."""
    from rims_rl.zoo import REFERENCE_NAME, list_zoo, load_zoo_agent, reference_outputs, zoo_dir

    references = json.loads((zoo_dir() / REFERENCE_NAME).read_text())
    for entry in list_zoo():
        expected = references[entry.id]
        model = load_zoo_agent(entry.id)
        observations = [np.asarray(o, dtype=model.observation_space.dtype) for o in expected["observations"]]
        got = reference_outputs(model, observations)
        assert got["actions"] == expected["actions"], entry.id
        np.testing.assert_allclose(got["probs"], expected["probs"], rtol=0, atol=1e-6, err_msg=entry.id)


# ---------------------------------------------------------------------------------------------------------------------
# exact resume


def _params(path: Path) -> dict[str, th.Tensor]:
    from rims_rl.safe_io import load_model

    return load_model(path, device="cpu").policy.state_dict()


@pytest.mark.parametrize("env", [None, "minatar-breakout", "atari-flavours"])
def test_resume_exact_with_evaluation(
    env: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Default gridworld, MinAtar and Atari (episodes of varying length; Atari: life-loss pseudo-resets, emulator
    state, sticky actions, frame stack, transposed observations), evaluation on: Ctrl-C + resume == straight run.
    """
    if env == "minatar-breakout":
        pytest.importorskip("minatar")
    atari = env == "atari-flavours"  # Breakout; evaluation plays whole games, so one per evaluation, small core
    args = ([] if env is None else ["--env", env]) + [
            "--no-progress", "--verbose", "0", "--n-envs", "2", "-n", "640", "--seed", "1", "--eval-freq", "128",
            "--eval-episodes", "1" if atari else "2", "--save-freq", "0", "--heldout-episodes", "0",
            "-params", "n_steps:64", "batch_size:64", "n_epochs:2"]  # fmt: skip
    if atari:
        args += ["policy_kwargs.core_kwargs.unit_size:16"]
    assert train_main([*args, "-f", str(tmp_path / "full")]) == 0
    original_train = RecurrentPPO.train
    calls = {"n": 0}

    def train_then_sigint(self: RecurrentPPO) -> None:
        original_train(self)
        calls["n"] += 1
        if calls["n"] == 3:  # Ctrl-C during the update ending at 384 steps
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(RecurrentPPO, "train", train_then_sigint)
    assert train_main([*args, "-f", str(tmp_path / "split")]) == 130
    monkeypatch.setattr(RecurrentPPO, "train", original_train)
    (full,) = (tmp_path / "full" / "rims_ppo").iterdir()
    (split,) = (tmp_path / "split" / "rims_ppo").iterdir()
    assert [s for s, _ in list_checkpoints(split / "checkpoints")] == [384]
    assert train_main(["--resume", str(split), "--no-progress", "--verbose", "0", "--heldout-episodes", "0"]) == 0
    name = full.name.rsplit("_", 1)[0] + ".zip"  # the default setting's training env id
    a, b = _params(full / name), _params(split / name)
    for key in a:
        assert th.equal(a[key], b[key]), key
    with np.load(full / "evaluations.npz") as x, np.load(split / "evaluations.npz") as y:
        assert x["timesteps"].tolist() == y["timesteps"].tolist() == [128, 256, 384, 512, 640]
        np.testing.assert_array_equal(x["results"], y["results"])
        np.testing.assert_array_equal(x["ep_lengths"], y["ep_lengths"])


def test_resume_bookkeeping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Duplicates after a kill, corrupt evaluations.npz, .tmp litter, newest resumable run, finished runs."""
    logs = tmp_path / "logs"
    base = [*FAST, "--eval-freq", "128", "--save-freq", "128", "-f", str(logs)]
    assert train_main([*base, "-n", "384"]) == 0
    run = logs / "rims_ppo" / f"{ENV}_1"
    # a finished run: says so, exits 0, writes nothing
    capsys.readouterr()
    assert train_main(["--resume", str(run), "--no-progress", "--verbose", "0"]) == 0
    assert "already finished" in capsys.readouterr().out
    # simulate a kill after the 384-step evaluation, before its checkpoint; plus litter from interrupted writes
    (run / "checkpoints" / "rl_model_384_steps.zip").unlink()
    (run / f"{ENV}.zip").unlink()
    litter = [run / "checkpoints" / ".rl_model_384_steps.zip.abc123.tmp", run / ".evaluations.999.tmp.npz"]
    for path in litter:
        path.write_bytes(b"half")
    # a later failed start (no checkpoint) must not hijack --resume without a path
    failed = logs / "rims_ppo" / f"{ENV}_2"
    (failed / "checkpoints").mkdir(parents=True)
    (failed / "config.yml").write_text((run / "config.yml").read_text())
    assert train_main(["--resume", "--env", ENV, "-f", str(logs), "--no-progress", "--verbose", "0"]) == 0
    assert (run / f"{ENV}.zip").is_file() and not (failed / f"{ENV}.zip").exists()
    assert not any(path.exists() for path in litter)
    with np.load(run / "evaluations.npz") as data:
        assert data["timesteps"].tolist() == [128, 256, 384]
    # a truncated evaluations.npz does not stop a resume that continues with a larger -n
    npz = (run / "evaluations.npz").read_bytes()
    (run / "evaluations.npz").write_bytes(npz[: len(npz) // 2])
    with pytest.warns(UserWarning, match="unreadable"):
        assert train_main(["--resume", str(run), "-n", "512", "--no-progress", "--verbose", "0"]) == 0
    with np.load(run / "evaluations.npz") as data:
        assert data["timesteps"].tolist() == [512]
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [128, 256, 384, 512]


# ---------------------------------------------------------------------------------------------------------------------
# finite or nothing


class _NaNRewardAfter(gym.Wrapper):
    """Rewards become NaN after ``after`` steps of this env."""

    def __init__(self, env: gym.Env, after: int = 40) -> None:
        super().__init__(env)
        self.after, self.t = after, 0

    def step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.t += 1
        return obs, float("nan") if self.t > self.after else reward, terminated, truncated, info


def _make_nan_env(**kwargs: Any) -> gym.Env:
    from rims_rl.envs.memory import CueRecallEnv

    return _NaNRewardAfter(CueRecallEnv(**kwargs))


def test_nan_reward_never_written_as_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env_id = "RimsTestNaNReward-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=_make_nan_env)
    logs = tmp_path / "logs"
    # 2 envs x 32 steps, one minibatch per epoch; rewards turn NaN in the 2nd rollout (env step 40)
    argv = ["--env", env_id, "-n", "512", "--n-envs", "2", "--eval-freq", "0", "--save-freq", "64", "--no-progress",
            "--verbose", "0", "-f", str(logs), "-params", "n_steps:32", "batch_size:64", "n_epochs:1"]  # fmt: skip
    assert train_main(argv) == 1
    line = _single_stderr_line(capsys)
    run = next((logs / "rims_ppo").iterdir())
    assert "step 128" in line and "non-finite loss" in line and "rl_model_64_steps.zip" in line, line
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [64]
    assert latest_checkpoint(run / "checkpoints") == run / "checkpoints" / "rl_model_64_steps.zip"
    assert not (run / f"{env_id}.zip").exists()
    # --resume uses the last good checkpoint, meets the NaN again and stops the same way (no crash)
    # (the wrapper's step counter spans episodes, which replay does not rebuild: the NaN comes back later)
    assert train_main(["--resume", str(run), "--no-progress", "--verbose", "0"]) == 1
    assert "non-finite" in _single_stderr_line(capsys)
    assert list_checkpoints(run / "checkpoints")[0][0] == 64


# ---------------------------------------------------------------------------------------------------------------------
# kill -9 during a checkpoint write

_SLOW_WRITER = textwrap.dedent(
    """
    import os, sys, time
    import rims_rl.checkpoint as ck
    from rims_rl.cli.train import main

    original = ck.atomic_write
    state = {"n": 0}

    class Slow:  # the 3rd checkpoint write stops half-way
        def __init__(self, path):
            self.inner = original(path)
            self.checkpoint = "rl_model" in str(path)
        def __enter__(self):
            file = self.inner.__enter__()
            state["n"] += self.checkpoint
            if not self.checkpoint or state["n"] < 3:
                return file
            real = file.write
            def write(data):
                real(data[: len(data) // 2])
                file.flush()
                open(os.environ["SLOW_WRITE_SIGNAL"], "w").close()
                time.sleep(600)
            file.write = write
            return file
        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

    ck.atomic_write = Slow
    sys.exit(main(sys.argv[1:]))
    """
)


def test_kill9_during_checkpoint_write(tmp_path: Path) -> None:
    signal_file = tmp_path / "writing"
    argv = [*FAST, "-n", "100000", "--eval-freq", "0", "--save-freq", "128", "-f", str(tmp_path / "logs")]
    env = {**os.environ, "SLOW_WRITE_SIGNAL": str(signal_file), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, *argv], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not signal_file.exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the slowed checkpoint write never started"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run = next((tmp_path / "logs" / "rims_ppo").iterdir())
    folder = run / "checkpoints"
    assert [s for s, _ in list_checkpoints(folder)] == [128, 256]  # the half-written 384 is not under a final name
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")], "the interrupted write left its temp file"
    assert latest_checkpoint(folder) == folder / "rl_model_256_steps.zip"
    assert train_main(["--resume", str(run), "-n", "384", "--no-progress", "--verbose", "0"]) == 0
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert [s for s, _ in list_checkpoints(folder)] == [128, 256, 384]


def test_safe_format_round_trip_and_export(tmp_path: Path, safe_model: Path) -> None:
    """The safe file holds only JSON and safetensors entries; export gives an sb3-contrib zip with the same weights."""
    from rims_rl.safe_io import export_sb3, load_model

    with zipfile.ZipFile(safe_model) as archive:
        assert sorted(archive.namelist()) == ["arrays.safetensors", "rims_rl.json", "tensors.safetensors"]
    exported = export_sb3(safe_model, tmp_path / "sb3.zip")
    a = load_model(safe_model, device="cpu").policy.state_dict()
    b = RecurrentPPO.load(exported, device="cpu").policy.state_dict()
    assert all(th.equal(a[k], b[k]) for k in a)


def test_safe_format_stores_aliased_tensors_once(tmp_path: Path) -> None:
    """A shared features extractor is one module under three state-dict keys (features_extractor,
    pi_features_extractor, vf_features_extractor): the file holds its weights once, and a reload is equal."""
    from rims_rl import RecurrentPPO as RimsPPO
    from rims_rl.safe_io import Encoder, load_model, save_model
    from rims_rl.torch_layers import MinAtarCNN

    enc = Encoder()
    w = th.arange(6.0).reshape(2, 3)
    refs = [enc.encode(x)["__tensor__"] for x in (w, w, w.view(2, 3), w[0], w.clone(), th.zeros(0), th.zeros(0))]
    assert refs == ["t0", "t0", "t0", "t1", "t2", "t3", "t4"]  # the same view once; a row, a copy, empties apart

    kwargs = dict(features_extractor_class=MinAtarCNN, features_extractor_kwargs=dict(features_dim=16), lstm_hidden_size=8)
    model = RimsPPO("MlpRimsPolicy", "RimsMinAtar/Breakout-v0", n_steps=8, batch_size=8, policy_kwargs=kwargs,
                         device="cpu")  # fmt: skip
    state = model.policy.state_dict()
    extractor = [k for k in state if k.startswith("features_extractor.")]
    assert extractor and all(
        state[k].data_ptr() == state["pi_" + k].data_ptr() == state["vf_" + k].data_ptr() for k in extractor
    )
    enc = Encoder()
    enc.encode(model.get_parameters())
    optimizer_tensors = sum(isinstance(v, th.Tensor) for s in model.policy.optimizer.state_dict()["state"].values()
                            for v in s.values())  # fmt: skip
    assert len(enc.tensors) == len(state) - 2 * len(extractor) + optimizer_tensors
    path = save_model(model, tmp_path / "m.zip")
    loaded = load_model(path, device="cpu").policy.state_dict()
    assert loaded.keys() == state.keys() and all(th.equal(loaded[k], state[k]) for k in state)
