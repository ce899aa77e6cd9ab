"""The evaluator's units: per-unit seeding (order independence), ``--jobs`` (bitwise the same episodes), the episode
cache, and the sweep report evaluating the LSTM baseline once."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sb3_contrib import RecurrentPPO

import rims_rl.evaluation.runner as runner
from rims_rl.cli.evaluate import main
from rims_rl.evaluation import gym_targets, resolve_agent
from rims_rl.evaluation.runner import evaluate
from rims_rl.safe_io import save_model

ENV = "RimsCueRecall-v0"


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Untrained tiny RIMs and LSTM agents on the cue-recall env (their sampled actions draw on torch's RNG)."""
    import rims_rl.envs  # noqa: F401  (registers the env id)
    from rims_rl.policies import MlpRimsPolicy

    root = tmp_path_factory.mktemp("agents")
    paths = {}
    for core, core_kwargs in (("rims", {"n_units": 4, "k_active": 2, "unit_size": 8}), ("lstm", {"hidden_size": 16})):
        model = RecurrentPPO(MlpRimsPolicy, ENV, n_steps=16, batch_size=16, seed=0, device="cpu",
                             policy_kwargs={"core": core, "core_kwargs": core_kwargs, "net_arch": []})  # fmt: skip
        paths[core] = save_model(model, root / f"{core}.zip")
    return paths


def _cli(agents: dict[str, Path], out: Path, *extra: str) -> Path:
    """Run the CLI on both agents (2 evaluation seeds x 3 episodes); :return: the result folder."""
    argv = ["--rims", str(agents["rims"]), "--lstm", str(agents["lstm"]), "--env", ENV, "-n", "3", "--seeds", "0", "1",
            "--ref-score", "1", "--n-bootstrap", "20", "--n-permutations", "20", "-o", str(out), "-q", *extra]  # fmt: skip
    assert main(argv) == 0
    (folder,) = list(out.iterdir())
    return folder


def _numbers(folder: Path) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """:return: episodes.csv rows and results.json without its meta (which names the command line)"""
    with (folder / "episodes.csv").open() as f:
        rows = list(csv.DictReader(f))
    results = json.loads((folder / "results.json").read_text())
    results.pop("meta", None)
    return rows, results


def _units(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, bool]]:
    """Count the units played in this process: (checkpoint or "random", seed, greedy) per call of evaluate_seed."""
    played: list[tuple[str, int, bool]] = []
    original = runner.evaluate_seed

    def counting(agent: Any, target: Any, seed: int, n_envs: int = 1, deterministic: bool = False,
                 checkpoint: str = "agent", options: Any = None) -> Any:  # fmt: skip
        played.append((checkpoint if agent is not None else "random", seed, deterministic))
        return original(agent, target, seed, n_envs, deterministic, checkpoint, options)

    monkeypatch.setattr(runner, "evaluate_seed", counting)
    return played


def test_jobs_give_bitwise_the_same_episodes(agents: dict[str, Path], tmp_path: Path) -> None:
    """``--jobs 2`` (spawned workers) writes exactly the numbers of ``--jobs 1``, sampled and greedy actions alike."""
    one = _numbers(_cli(agents, tmp_path / "one", "--jobs", "1"))
    two = _numbers(_cli(agents, tmp_path / "two", "--jobs", "2"))
    assert one == two
    rows = one[0]
    assert {r["actions"] for r in rows if r["agent"] != "random"} == {"sampled", "greedy"}
    assert len(rows) == 2 * 2 * 2 * 3 + 2 * 3  # agents x modes x seeds x episodes, and the random policy


def test_an_agent_plays_the_same_episodes_whatever_ran_before(agents: dict[str, Path]) -> None:
    """Evaluating B alone gives B the same episodes as evaluating A then B (each unit seeds the RNGs itself)."""
    targets = gym_targets([ENV], 4, [0, 1])
    alone = evaluate([resolve_agent(agents["lstm"], "lstm")], targets, actions="sampled", random_baseline=False)
    both = evaluate([resolve_agent(agents["rims"], "rims"), resolve_agent(agents["lstm"], "lstm")], targets,
                    actions="sampled", random_baseline=False)  # fmt: skip
    label = resolve_agent(agents["lstm"]).label
    a, b = alone.episodes["sampled"][label][ENV], both.episodes["sampled"][label][ENV]
    for field in ("returns", "lengths", "successes"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_cache_hits_misses_and_corrupt_entries(
    agents: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second run with the same cache plays nothing and writes the same numbers; changed episodes or checkpoint
    bytes miss; a corrupt entry is evaluated again without an error."""
    played = _units(monkeypatch)
    cache = tmp_path / "cache"
    first = _numbers(_cli(agents, tmp_path / "a", "--cache-dir", str(cache)))
    assert len(played) == 2 * 2 * 2 + 2  # (agents x modes x seeds) + random x seeds
    entries = sorted(cache.rglob("*.json"))
    assert len(entries) == len(played)
    played.clear()
    assert _numbers(_cli(agents, tmp_path / "b", "--cache-dir", str(cache))) == first
    assert played == []
    # another episode count: every unit misses
    argv = ["--agent", str(agents["lstm"]), "--env", ENV, "--seeds", "0", "--actions", "greedy", "--no-random",
            "-o", str(tmp_path / "c"), "-q", "--cache-dir", str(cache)]  # fmt: skip
    assert main([*argv, "-n", "2"]) == 0 and len(played) == 1
    assert main([*argv, "-n", "2"]) == 0 and len(played) == 1  # now a hit
    # other checkpoint bytes (one weight nudged): a miss
    from rims_rl.safe_io import load_model

    model = load_model(agents["lstm"])
    next(iter(model.policy.parameters())).data.view(-1)[0] += 1e-3
    changed = save_model(model, tmp_path / "changed.zip")
    assert main(["--agent", str(changed), *argv[2:], "-n", "2"]) == 0 and len(played) == 2
    # corrupt entries (truncated, not JSON, not a mapping): played again and overwritten, no error
    for entry, junk in zip(entries[:3], ("{", "\x00\x01", "[1, 2]"), strict=True):
        entry.write_text(junk)
    played.clear()
    assert _numbers(_cli(agents, tmp_path / "d", "--cache-dir", str(cache))) == first
    assert len(played) == 3
    assert all(isinstance(json.loads(e.read_text()), dict) for e in entries[:3])


def test_worker_error_is_one_line(agents: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An error inside a worker (a space mismatch) is the CLI's one-line error with exit code 1, no traceback."""
    argv = ["--agent", str(agents["lstm"]), "--env", "CartPole-v1", "-n", "1", "--no-random", "--jobs", "2",
            "-o", str(tmp_path), "-q"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: observation space mismatch") and err.count("\n") == 1, err


def test_sweep_report_evaluates_the_lstm_baseline_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two RIMs entries against one LSTM entry: the LSTM agent's units come from the cache in the second comparison."""
    import yaml

    from rims_rl.cli.train import main as train_main
    from rims_rl.sweep import load_sweep, run_report

    spec = tmp_path / "tiny.yml"
    spec.write_text(yaml.safe_dump({
        "name": "tiny", "settings": [ENV], "seeds": 1, "n_timesteps": 32, "n_envs": 1, "eval_freq": 0, "save_freq": 0,
        "params": {"n_steps": 32, "batch_size": 32, "n_epochs": 1},
        "algos": {"rims_ppo": {"algo": "rims_ppo"}, "rims_small": {"algo": "rims_ppo"}, "lstm_ppo": {"algo": "lstm_ppo"}},
        "report": {"n_episodes": 2, "n_bootstrap": 20, "jobs": 1},
    }))  # fmt: skip
    sweep = load_sweep(spec, str(tmp_path / "sweep"))
    for trial in sweep.trials:  # the trials' own train.py runs, without Ray
        folder = sweep.folder / trial.name
        assert train_main([*trial.argv, "-f", str(folder), "--no-progress", "--verbose", "0", "--heldout-episodes", "0"]) == 0
    played = _units(monkeypatch)
    written = run_report(sweep)
    assert len(written) == 2
    # per comparison: 2 units of the RIMs agent, 2 of the LSTM agent (sampled, greedy), 1 of the random policy
    lstm = [unit for unit in played if "lstm_ppo" in unit[0]]
    assert len(lstm) == len(set(lstm)) == 2, played
    assert len([unit for unit in played if unit[0] == "random"]) == 1 and len(played) == 2 + 2 + 2 + 1
    assert len(list((sweep.folder / "report" / "cache").rglob("*.json"))) == 7


def test_jobs_on_a_setting_split_with_zoo_agents(tmp_path: Path) -> None:
    """Setting targets (the setting itself goes to the workers) and zoo agents (workers re-read and check the bytes):
    ``--jobs 2`` equals ``--jobs 1`` on the gridworld, and the cache gives the same numbers back."""
    argv = ["--rims", "gridworld-pickup/rims_ppo/seed0", "--lstm", "gridworld-pickup/lstm_ppo/seed0", "--setting",
            "gridworld-pickup", "--splits", "novel-distractors", "-n", "4", "--seeds", "0", "--n-bootstrap", "20",
            "--n-permutations", "20", "-q"]  # fmt: skip
    numbers = []
    for name, extra in (("one", ["--jobs", "1"]), ("two", ["--jobs", "2", "--cache-dir", str(tmp_path / "cache")]),
                        ("cached", ["--cache-dir", str(tmp_path / "cache")])):  # fmt: skip
        assert main([*argv, *extra, "-o", str(tmp_path / name)]) == 0
        (folder,) = list((tmp_path / name).iterdir())
        numbers.append(_numbers(folder))
    assert numbers[0] == numbers[1] == numbers[2]
