"""Sweeps on Ray (``rims_rl.sweep``): a tiny 2 x 2 sweep with its report, Ctrl-C and resume, bad sweep files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch as th
import yaml

from rims_rl.cli.train import main as train_main
from rims_rl.evaluation.checkpoints import load_model
from rims_rl.sweep import SweepError, _check_folder, execute_trial, load_sweep, main, run_folder, trial_state

REPO = Path(__file__).resolve().parent.parent
GRID_ENV = "MiniGrid-RimsPickup-Train-v1"  # the gridworld-pickup setting's training env


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _sweep(path: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_AUTH_MODE="disabled")
    return subprocess.run([sys.executable, "sweep.py", str(path), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_tiny_sweep_runs_folders_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """2 seeds x 2 cores on a local Ray limited to 2 CPUs: rl-zoo run folders, summary, the evaluator's report."""
    spec = _write(tmp_path / "tiny.yml", {
        "name": "tiny", "settings": ["gridworld-pickup"], "seeds": 2, "algos": ["rims_ppo", "lstm_ppo"],
        "n_timesteps": 128, "n_envs": 2, "eval_freq": 0, "save_freq": 0,
        "params": {"n_steps": 64, "batch_size": 64, "n_epochs": 1},
        "report": {"n_episodes": 2, "n_envs": 2, "splits": ["known"], "n_bootstrap": 50},
    })  # fmt: skip
    out = tmp_path / "sweep"
    result = _sweep(spec, "--folder", str(out), "--num-cpus", "2", "--poll", "0.5")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for algo in ("rims_ppo", "lstm_ppo"):
        for seed in (0, 1):
            run = out / f"gridworld-pickup__{algo}__s{seed}" / algo / f"{GRID_ENV}_1"
            assert (run / f"{GRID_ENV}.zip").is_file() and (run / "config.yml").is_file()
            assert yaml.safe_load((run / "args.yml").read_text())["seed"] == seed
    assert "| gridworld-pickup__lstm_ppo__s1 | lstm_ppo | 1 | done |" in (out / "summary.md").read_text()
    (report,) = [p for p in (out / "report").iterdir() if p.name != "cache"]  # cache: the evaluator's episode cache
    assert any((out / "report" / "cache").rglob("*.json"))
    assert report.name == "gridworld-pickup__rims_ppo_vs_lstm_ppo_1"
    results = json.loads((report / "results.json").read_text())
    agents = results["meta"]["agents"]
    assert sorted((a["core"], a["seed"]) for a in agents) == [("lstm", 0), ("lstm", 1), ("rims", 0), ("rims", 1)]
    assert (report / "report.md").is_file()

    # Rerun: every trial is done, so nothing trains and Ray is not even started.
    ray = pytest.importorskip("ray")
    assert main([str(spec), "--folder", str(out), "--no-report"]) == 0
    assert "4 done, 0 to resume, 0 to start" in capsys.readouterr().out and not ray.is_initialized()


def _progress_steps(folder: Path) -> int:
    try:
        return int(json.loads((folder / "progress.json").read_text()).get("steps", 0))
    except (OSError, ValueError):
        return 0


def _background_start() -> None:  # pragma: no cover - runs in the child before exec
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell leaves it for `nohup python sweep.py ... &`


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_sweep_resumes_exactly(tmp_path: Path, stop: signal.Signals) -> None:
    """
    Ctrl-C (or a scheduler's SIGTERM) of a driver started in the background, once one trial has finished and another
    has a checkpoint; the rerun skips the finished trial and resumes the other from its checkpoint, ending with the
    parameters of an uninterrupted run. (Before: SIGINT was ignored in a background driver, and Ray's own SIGTERM
    handler killed the driver and every trainer with it.)
    """
    spec = _write(tmp_path / "resume.yml", {
        "name": "resume", "settings": ["RimsCueRecall-v0"], "seeds": [3], "eval_freq": 0, "save_freq": 128,
        "params": {"n_epochs": 1, "learning_rate": "lin_1e-3"},
        "algos": {"short": {"algo": "lstm_ppo", "n_timesteps": 128}, "long": {"algo": "rims_ppo", "n_timesteps": 10240}},
    })  # fmt: skip
    # Both trials spend most of their first seconds starting up; "long" must still be mid-run when "short" is done and
    # the Ctrl-C arrives: 2,560 steps (2 s at the compiled core's ~1,100 steps/s) once finished first, 10,240 leave ~8 s.
    out = tmp_path / "sweep"
    sweep = load_sweep(spec, str(out))
    short, long = sweep.trials
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_AUTH_MODE="disabled")
    command = [sys.executable, "sweep.py", str(spec), "--folder", str(out), "--num-cpus", "2", "--poll", "0.2", "--no-report"]
    driver = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              preexec_fn=_background_start)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (trial_state(out, short) == "done" and _progress_steps(out / long.name) >= 256):
            assert driver.poll() is None and time.monotonic() < deadline, "the sweep ended before it could be interrupted"
            time.sleep(0.1)
        driver.send_signal(stop)
        output, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, output[-3000:]
    assert trial_state(out, long) == "resume", output[-3000:]  # stopped mid-trial, with a checkpoint
    short_model = run_folder(out, short) / "RimsCueRecall-v0.zip"
    finished_at = short_model.stat().st_mtime_ns

    result = _sweep(spec, "--folder", str(out), "--num-cpus", "2", "--poll", "0.5", "--no-report")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 done, 1 to resume, 0 to start" in result.stdout
    assert short_model.stat().st_mtime_ns == finished_at
    assert (out / short.name / "train.log").read_text().count("\n=== ") == 1  # the finished trial was not rerun
    log = (out / long.name / "train.log").read_text()
    assert log.count("\n=== ") == 2 and "--resume" in log.split("\n=== ")[2] and "Resuming" in log

    # The same trial without the interruption (the sweep runs it with one thread on the CPU).
    assert train_main([*long.argv, "-f", str(tmp_path / "ref"), "--num-threads", "1", "--device", "cpu"]) == 0
    ref_run = next((tmp_path / "ref" / "rims_ppo").iterdir())
    reference = load_model(ref_run / "RimsCueRecall-v0.zip", "cpu").policy.state_dict()
    resumed = load_model(run_folder(out, long) / "RimsCueRecall-v0.zip", "cpu").policy.state_dict()
    assert reference.keys() == resumed.keys()
    for name, tensor in reference.items():
        assert th.equal(tensor, resumed[name]), name


BASE = {"name": "bad", "settings": ["RimsCueRecall-v0"], "seeds": 1, "algos": ["rims_ppo", "lstm_ppo"], "n_timesteps": 128}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"settings": ["gridworld-pickupp"]}, "unknown env or setting 'gridworld-pickupp'"),
        ({"seed": 3}, "unknown key 'seed'"),
        ({"seeds": 0}, "zero seeds"),
        ({"seeds": []}, "zero seeds"),
        ({"algos": {"ctrl": {"algo": "rims_ppo", "seeds": 0}}}, "algos.ctrl.seeds: zero seeds"),
        ({"algos": ["gru_ppo"]}, "unknown algo 'gru_ppo'"),
        ({"algos": {"ctrl": {"algo": "rims_ppo", "param": {}}}}, "algos.ctrl: unknown key 'param'"),
        ({"algos": {"ctrl": {"algo": "rims_ppo", "params": {"policy_kwargs.core_kwargs.k_activ": 2}}}}, "k_activ"),
        ({"algos": {"ctrl": {"algo": "rims_ppo", "params": {"learning_rat": 0.1}}}}, "learning_rat"),
        ({"report": {"baseline": "rims_ppo"}}, "report.baseline 'rims_ppo'"),
        ({"report": {"deterministic": True}}, "deterministic"),  # the evaluator's flag is --actions greedy
        ({"report": {"actions": "mode"}}, "report.actions must be both, sampled or greedy"),
        ({"n_timesteps": 0}, "n_timesteps must be an integer >= 1"),
    ],
)
def test_bad_sweep_file_one_line_nothing_started(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict, message: str
) -> None:
    """A bad sweep file: exit code 2, one line on stderr, no sweep folder, no Ray."""
    ray = pytest.importorskip("ray")
    spec = _write(tmp_path / "bad.yml", {**BASE, **change})
    assert main([str(spec), "--folder", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rims-sweep: error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists() and not ray.is_initialized()


@pytest.mark.skipif(th.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_gpus_without_a_gpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--num-gpus`` on a machine without a GPU: one line, exit code 2, nothing started."""
    spec = _write(tmp_path / "ok.yml", BASE)
    assert main([str(spec), "--folder", str(tmp_path / "out"), "--num-gpus", "1"]) == 2
    assert "torch sees no CUDA GPU" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_missing_sweep_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A sweep file that does not exist or is not YAML: one line, exit code 2."""
    assert main([str(tmp_path / "nope.yml")]) == 2
    (tmp_path / "x.yml").write_text("settings: [a\n")
    assert main([str(tmp_path / "x.yml")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "no such sweep file" in lines[0] and "not valid YAML" in lines[1]


def test_report_evaluates_atari_ids_with_the_training_wrappers() -> None:
    """The Atari sweep's report: ``evaluate.py --env ALE/<Game>-v5`` builds the env training used (84x84 frames)."""
    from rims_rl.envs import make_vec_env
    from rims_rl.evaluation.targets import gym_targets

    (target,) = gym_targets(["ALE/Pong-v5"], 1, [0])
    evaluation, training = target.make_env(n_envs=1, seed=0), make_vec_env("ALE/Pong-v5", n_envs=1, seed=0)
    assert evaluation.observation_space == training.observation_space
    assert evaluation.action_space == training.action_space
    evaluation.close()
    training.close()


def test_dry_run_lists_the_example_sweeps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The example sweep files validate; trials are listed seed-major (a partial sweep holds whole seeds)."""
    assert main([str(REPO / "sweeps" / "gridworld.yml"), "--dry-run", "--folder", str(tmp_path / "g")]) == 0
    out = capsys.readouterr().out
    assert "30 trials" in out and "0 done" in out
    names = [line.split()[0] for line in out.splitlines()[1:]]
    entries = ("rims_ppo", "lstm_ppo", "rims_all_active", "rims_no_communication")
    assert names[:4] == [f"gridworld-pickup__{e}__s0" for e in entries]
    assert "-params policy_kwargs.core_kwargs.communication:false" in out
    assert main([str(REPO / "sweeps" / "atari.yml"), "--dry-run", "--folder", str(tmp_path / "a")]) == 0
    assert "66 trials" in capsys.readouterr().out
    assert not (tmp_path / "g").exists() and not (tmp_path / "a").exists()


def test_raising_the_budget_extends_finished_trials(tmp_path: Path) -> None:
    """
    A finished sweep rerun with a larger ``n_timesteps``: its trials are extended (``train.py --resume RUN -n N``),
    not refused or restarted, and with constant schedules end exactly where a run with the larger budget from the
    start ends. Any other change to a trial is still refused.
    """
    base = {"name": "extend", "settings": ["RimsCueRecall-v0"], "seeds": [2], "eval_freq": 0, "save_freq": 0,
            "algos": ["rims_ppo"], "params": {"n_epochs": 1, "learning_rate": 1.0e-3}}  # fmt: skip
    out = tmp_path / "sweep"
    short = load_sweep(_write(tmp_path / "short.yml", {**base, "n_timesteps": 128}), str(out))
    (trial,) = short.trials
    (out / trial.name).mkdir(parents=True)
    (out / trial.name / "trial.json").write_text(json.dumps({"argv": trial.argv}))
    assert execute_trial(asdict(trial), str(out), threads=1, device="cpu", poll=0.2)["status"] == "done"
    longer = load_sweep(_write(tmp_path / "long.yml", {**base, "n_timesteps": 384}), str(out))
    (extended,) = longer.trials
    assert trial_state(out, extended) == "extend" and trial_state(out, trial) == "done"
    _check_folder(longer)  # a raised budget is not "other arguments"
    result = execute_trial(asdict(extended), str(out), threads=1, device="cpu", poll=0.2)
    assert result["status"] == "done" and trial_state(out, extended) == "done"
    record = run_folder(out, extended)  # the run's record says what it is now trained for, and how
    assert yaml.safe_load((record / "args.yml").read_text())["n_timesteps"] == 384
    first, extension = (record / "command.txt").read_text().splitlines()
    assert "-n 128" in first and extension.startswith(f"rims-train --resume {record} -n 384")
    assert train_main([*extended.argv, "-f", str(tmp_path / "ref"), "--num-threads", "1", "--device", "cpu"]) == 0
    ref_run = next((tmp_path / "ref" / "rims_ppo").iterdir())
    reference = load_model(ref_run / "RimsCueRecall-v0.zip", "cpu").policy.state_dict()
    grown = load_model(run_folder(out, extended) / "RimsCueRecall-v0.zip", "cpu").policy.state_dict()
    for name, tensor in reference.items():
        assert th.equal(tensor, grown[name]), name
    changed = load_sweep(_write(tmp_path / "lr.yml", {**base, "n_timesteps": 384, "params": {"n_epochs": 2}}), str(out))
    with pytest.raises(SweepError, match="other arguments"):
        _check_folder(changed)


def test_an_interrupted_report_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """Ctrl-C or SIGTERM during ``--report`` (the evaluator returns 130) stops the whole report with exit code 130;
    before, the next comparison started, so a report sent SIGTERM kept running."""
    import rims_rl.cli.evaluate as evaluate_cli
    import rims_rl.sweep as sweep_module

    calls: list[list[str]] = []
    monkeypatch.setattr(evaluate_cli, "main", lambda argv: calls.append(argv) or 130)
    monkeypatch.setattr(sweep_module, "trial_state", lambda folder, trial: "done")
    monkeypatch.setattr(sweep_module, "run_folder", lambda folder, trial: tmp_path / trial.name)
    algos = {"rims_ppo": {}, "lstm_ppo": {}, "rims_b": {"algo": "rims_ppo"}}
    spec = _write(tmp_path / "two.yml", {"name": "two", "settings": ["gridworld-pickup"], "seeds": 1, "n_timesteps": 64,
                                         "algos": algos})  # fmt: skip
    assert main([str(spec), "--folder", str(tmp_path / "out"), "--report"]) == 130
    assert len(calls) == 1  # the second comparison (rims_b) never started
    assert "report interrupted" in capsys.readouterr().err
