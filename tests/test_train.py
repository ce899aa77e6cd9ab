"""Training CLI: exact resume, crash-safe checkpoints, one-line errors (``main(argv)`` in-process, tiny budgets)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch as th
from sb3_contrib import RecurrentPPO

import rims_rl.checkpoint as checkpoint_module
from rims_rl.checkpoint import atomic_write, latest_checkpoint, list_checkpoints, read_resume_state
from rims_rl.cli.train import main
from rims_rl.safe_io import load_model

REPO = Path(__file__).resolve().parent.parent
ENV = "RimsCueRecall-v0"  # 4 envs x 32 steps = 128 timesteps per rollout (agents/*.yml)
FAST = ["--env", ENV, "--no-progress", "--verbose", "0", "--eval-episodes", "2"]


def _run_folder(log: Path, algo: str = "rims_ppo") -> Path:
    (folder,) = (log / algo).iterdir()
    return folder


def _params(path: Path) -> dict[str, th.Tensor]:
    return load_model(path, device="cpu").policy.state_dict()


@pytest.mark.parametrize("algo", ["rims_ppo", "lstm_ppo"])
def test_resume_equals_uninterrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, algo: str) -> None:
    """Training 2N steps == training N steps, Ctrl-C, then --resume for N more (same seed)."""
    args = [*FAST, "--algo", algo, "-n", "384", "--seed", "3", "--eval-freq", "128", "--save-freq", "0",
            "-params", "learning_rate:lin_1e-3", "clip_range:lin_0.2"]  # fmt: skip
    assert main([*args, "-f", str(tmp_path / "full")]) == 0
    full = _run_folder(tmp_path / "full", algo)

    # Interrupted run: a Ctrl-C arrives during the 2nd gradient update (timestep 256 of 384).
    original_train = RecurrentPPO.train
    calls = {"n": 0}

    def train_then_sigint(self: RecurrentPPO) -> None:
        original_train(self)
        calls["n"] += 1
        if calls["n"] == 2:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(RecurrentPPO, "train", train_then_sigint)
    assert main([*args, "-f", str(tmp_path / "split")]) == 130
    monkeypatch.setattr(RecurrentPPO, "train", original_train)
    split = _run_folder(tmp_path / "split", algo)
    assert [steps for steps, _ in list_checkpoints(split / "checkpoints")] == [256]
    assert not (split / f"{ENV}.zip").exists()

    assert main(["--resume", str(split), "--no-progress", "--verbose", "0"]) == 0
    final_full, final_split = _params(full / f"{ENV}.zip"), _params(split / f"{ENV}.zip")
    assert final_full.keys() == final_split.keys()
    for name in final_full:
        assert th.allclose(final_full[name], final_split[name], atol=1e-6), name
    # evaluations of the interrupted run are kept and continued (same format as SB3's EvalCallback)
    with np.load(full / "evaluations.npz") as a, np.load(split / "evaluations.npz") as b:
        assert a["timesteps"].tolist() == b["timesteps"].tolist() == [128, 256, 384]


def test_run_folder_layout(tmp_path: Path) -> None:
    assert main([*FAST, "-n", "256", "--eval-freq", "128", "--save-freq", "128", "-f", str(tmp_path)]) == 0
    run = _run_folder(tmp_path)
    assert run.name == f"{ENV}_1"
    for name in ("config.yml", "args.yml", "command.txt", "best_model.zip", f"{ENV}.zip", "evaluations.npz"):
        assert (run / name).is_file(), name
    assert [steps for steps, _ in list_checkpoints(run / "checkpoints")] == [128, 256]
    assert list(run.glob("tb_1/events.out.tfevents.*"))
    assert main([*FAST, "-n", "128", "--eval-freq", "0", "-f", str(tmp_path)]) == 0
    assert (tmp_path / "rims_ppo" / f"{ENV}_2").is_dir()


def test_atomic_write_failure_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure in the middle of a write leaves the previous file intact and no partial file anywhere."""
    target = tmp_path / "rl_model_128_steps.zip"
    target.write_bytes(b"old good checkpoint")

    def failing_fsync(fd: int) -> None:
        raise OSError("disk died")

    monkeypatch.setattr(checkpoint_module.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk died"), atomic_write(target) as file:
        file.write(b"half of a new")
    assert target.read_bytes() == b"old good checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_kill9_leaves_last_checkpoint_loadable(tmp_path: Path) -> None:
    """SIGKILL during training (checkpoints every rollout): every file under a final name is complete."""
    cmd = [sys.executable, str(REPO / "train.py"), *FAST, "-n", "1000000", "--eval-freq", "0", "--save-freq", "128",
           "-f", str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            runs = list((tmp_path / "rims_ppo").glob("*/checkpoints"))
            if runs and len(list_checkpoints(runs[0])) >= 3:
                break
            time.sleep(0.05)
        else:
            pytest.fail("no checkpoints written within 120 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    folder = next((tmp_path / "rims_ppo").glob("*/checkpoints"))
    for _, path in list_checkpoints(folder):  # no partial file under a final name
        with zipfile.ZipFile(path) as archive:
            assert archive.testzip() is None
        assert read_resume_state(path) is not None
    last = latest_checkpoint(folder)
    assert last is not None
    load_model(last, device="cpu")
    steps = int(last.name.split("_")[2])
    assert main(["--resume", str(folder.parent), "-n", str(steps + 128), "--no-progress", "--verbose", "0"]) == 0


def _one_line_error(capsys: pytest.CaptureFixture[str], code: int, *needles: str) -> None:
    out, err = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rims-train: error:"), err
    for needle in needles:
        assert needle in lines[0]


def test_unknown_hyperparameter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*FAST, "-f", str(tmp_path), "-params", "learning_rat:1e-3"])
    _one_line_error(capsys, code, "learning_rat", "valid keys", "learning_rate")
    assert not (tmp_path / "rims_ppo").exists()


def test_malformed_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "rims_ppo.yml").write_text("default:\n  n_steps: [1, 2\n")
    code = main([*FAST, "-f", str(tmp_path), "--agents-dir", str(tmp_path)])
    _one_line_error(capsys, code, "malformed YAML", "line")


def test_wrong_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*FAST, "-f", str(tmp_path), "-params", "gamma:high"])
    _one_line_error(capsys, code, "gamma")


def test_unknown_algo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--algo", "dqn", *FAST, "-f", str(tmp_path)])
    _one_line_error(capsys, code, "dqn", "rims_ppo")


def test_unknown_env(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*FAST, "--env", "RimsCueRecal-v0", "-f", str(tmp_path)])
    _one_line_error(capsys, code, "RimsCueRecal-v0", "RimsCueRecall-v0")


def test_trained_agent_space_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*FAST, "-n", "128", "--eval-freq", "0", "-f", str(tmp_path)]) == 0
    model = _run_folder(tmp_path) / f"{ENV}.zip"
    capsys.readouterr()
    code = main(
        ["--env", "CartPole-v1", "-n", "128", "--no-progress", "--verbose", "0", "-f", str(tmp_path), "-i", f"{model}"]
    )
    _one_line_error(capsys, code, "observation_space")
    # same spaces: the weights are copied into the new run
    assert main([*FAST, "-n", "128", "--eval-freq", "0", "-f", str(tmp_path / "warm"), "-i", str(model)]) == 0


def test_help_lists_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--algo", "--env", "--n-timesteps", "--seed", "--log-folder", "--eval-freq", "--eval-episodes", "--save-freq",
                 "--tensorboard-log", "-params", "--device", "--vec-env", "--n-envs", "--trained-agent", "--resume",
                 "--progress"):  # fmt: skip
        assert flag in out, flag


@pytest.mark.skipif(os.environ.get("RIMS_TEST_NO_TB") == "1", reason="tensorboard check disabled")
def test_tensorboard_rims_diagnostics(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main([*FAST, "-n", "256", "--eval-freq", "128", "-f", str(tmp_path)]) == 0
    (events,) = _run_folder(tmp_path).glob("tb_1/events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    scalars = accumulator.Tags()["scalars"]
    assert {f"rims/unit_{k}_active_frac" for k in range(4)} <= set(scalars)
    assert "rims/activation_heatmap" in accumulator.Tags()["images"]
    fracs = [accumulator.Scalars(f"rims/unit_{k}_active_frac")[-1].value for k in range(4)]
    assert sum(fracs) == pytest.approx(2.0, abs=1e-5)  # k_active = 2 of 4 units every step


def test_atari_game_transfer_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Train on the transfer setting's source game, then start a target game ("SETTING:SPLIT") from it."""
    tiny = ["--no-progress", "--verbose", "0", "--n-envs", "2", "-params", "n_steps:32", "batch_size:64"]
    tiny += ["policy_kwargs.core_kwargs.unit_size:8", "--eval-freq", "0"]
    assert main(["--env", "atari-transfer", "-n", "64", "-f", str(tmp_path / "src"), *tiny]) == 0
    source = _run_folder(tmp_path / "src") / "ALE-Pong-v5.zip"
    out = capsys.readouterr().out
    assert "Held-out evaluation: python evaluate.py --rims" in out, "Atari skips the in-process summary"
    # a bare ALE id has neither the setting's frame stack nor (for Pong) its 18 actions: refused, one line
    code = main(["--env", "ALE/Alien-v5", "-n", "64", "-f", str(tmp_path / "bare"), "-i", str(source), *tiny])
    _one_line_error(capsys, code, "observation_space")
    code = main(["--env", "atari-transfer:Alien", "-n", "64", "-f", str(tmp_path / "dst"), "-i", str(source), *tiny])
    assert code == 0, capsys.readouterr().err
    target = load_model(_run_folder(tmp_path / "dst") / "ALE-Alien-v5.zip", device="cpu")
    assert target.action_space.n == 18 and target.observation_space.shape == (4, 84, 84)
    code = main(["--env", "atari-transfer:Alien", "-n", "64", "-f", str(tmp_path), "--heldout-episodes", "-1", *tiny])
    _one_line_error(capsys, code, "--heldout-episodes")
    code = main(["--env", "atari-transfer:Nope", "-n", "64", "-f", str(tmp_path), *tiny])
    _one_line_error(capsys, code, "no split 'Nope'", "Alien")


def _budget(argv: list[str]) -> tuple[int, int, int, int]:
    from rims_rl.cli.train import parse_args, resolve_budget
    from rims_rl.config import load_agent_config, parse_override

    args = parse_args(argv)
    overrides = dict(parse_override(item) for item in args.hyperparams)
    config, _ = load_agent_config(args.algo, "MiniGrid-RimsPickup-Train-v0", overrides)
    return resolve_budget(args, config)


def test_default_budget_is_one_rule() -> None:
    """A bare run and `--seed 1` differ only in the seed (the second used to train 500k steps instead of 30k)."""
    from rims_rl.cli.train import QUICK_START

    quick = (QUICK_START["n_timesteps"], 16, QUICK_START["eval_freq"], QUICK_START["save_freq"])
    assert _budget([]) == _budget(["--seed", "1"]) == _budget(["--algo", "lstm_ppo", "--no-progress"]) == quick
    from rims_rl.config import load_agent_config

    yaml_budget = load_agent_config("rims_ppo", "MiniGrid-RimsPickup-Train-v0")[0].n_timesteps
    assert yaml_budget != QUICK_START["n_timesteps"]
    assert _budget(["--env", "gridworld-pickup"])[0] == yaml_budget  # a named env: the YAML's budget
    assert _budget(["-n", "2048"])[0] == 2048 and _budget(["--n-envs", "2"])[1] == 2
    assert _budget(["-params", "n_timesteps:4096"])[0] == 4096  # -params n_timesteps counts as a budget too


def test_help_states_each_default_once(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "30,000" in out and "(default: 0)" in out  # the quick-start budget, and the seed's default
    for option in out.split(" -")[1:]:  # one entry per option
        assert option.count("default") <= 1, option


def test_first_contact_plan_summary_and_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The plan (budget first) is printed before training; the end-of-run summary puts each split beside the
    uniform-random policy, with success rates; a resumed LSTM run's hint names --lstm (it used to say --rims)."""
    tiny = ["--algo", "lstm_ppo", "--env", "gridworld-pickup", "--n-envs", "2", "--eval-freq", "0", "--no-progress",
            "--verbose", "0", "-params", "n_steps:16", "batch_size:32", "-f", str(tmp_path)]  # fmt: skip
    from rims_rl.envs import load_setting

    setting = load_setting("gridworld-pickup")
    assert main([*tiny, "-n", "32", "--heldout-episodes", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"Training lstm_ppo (lstm core) on gridworld-pickup ({setting.train_env.id}) for 32 timesteps")
    assert out[1].startswith("Run folder:")
    (header,) = [line for line in out if line.strip().startswith("split")]
    assert header.split() == ["split", "agent", "return", "random", "return", "agent", "success", "random", "success"]
    rows = out[out.index(header) + 1 :]
    assert [row.split()[0] for row in rows] == setting.splits and len(rows) > 1
    for row in rows:  # mean +/- std, random mean, success %, random success %
        assert row.split()[2] == "+/-" and row.split()[-1].endswith("%") and row.split()[-2].endswith("%")
    (run,) = (tmp_path / "lstm_ppo").iterdir()
    assert main(["--resume", str(run), "-n", "64", "--heldout-episodes", "0", "--no-progress", "--verbose", "0"]) == 0
    assert f"Held-out evaluation: python evaluate.py --lstm {run} --setting gridworld-pickup" in capsys.readouterr().out
