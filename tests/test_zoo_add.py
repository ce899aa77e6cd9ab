"""``python -m rims_rl.zoo add``: finished runs enter the zoo without their Adam state, acting exactly as trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rims_rl import zoo
from rims_rl.cli.train import main as train_main


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    argv = ["--env", "gridworld-pickup", "-n", "256", "--n-envs", "2", "--seed", "3", "--eval-freq", "0",
            "--heldout-episodes", "0", "--no-progress", "--verbose", "0", "-f", str(root),
            "-params", "n_steps:64", "batch_size:64", "n_epochs:1"]  # fmt: skip
    assert train_main(argv) == 0
    (folder,) = (root / "rims_ppo").iterdir()
    return folder


def test_add_runs_replaces_a_setting_and_records_the_budget(run: Path, tmp_path: Path) -> None:
    root = tmp_path / "zoo"
    (root / "agents").mkdir(parents=True)
    old = root / "agents" / "old.zip"
    old.write_bytes(b"old agent")
    manifest = {"version": 1, "agents": [{"id": "grid/old", "algo": "rims_ppo", "core": "rims", "setting": "old-setting",
                                          "env": "E", "path": "agents/old.zip", "sha256": "0" * 64}]}  # fmt: skip
    (root / "manifest.json").write_text(json.dumps(manifest))
    (entry,) = zoo.add_runs([run], root, drop_settings=("old-setting",), log=lambda _: None)
    assert not old.exists()
    assert entry.id == "gridworld-pickup/rims_ppo/seed3" and entry.seed == 3 and entry.setting == "gridworld-pickup"
    assert entry.n_timesteps == 256 and entry.command is not None and "-f" not in entry.command.split()
    assert [e.id for e in zoo.list_zoo(root)] == [entry.id]
    stored = zoo.zoo_path(entry, root)
    final = run / "MiniGrid-RimsPickup-Train-v1.zip"
    assert stored.stat().st_size < 0.5 * final.stat().st_size  # no Adam moments
    agent = zoo.load_zoo_agent(entry.id, root)
    assert not agent.policy.optimizer.state
    references = json.loads((root / zoo.REFERENCE_NAME).read_text())
    from rims_rl.safe_io import load_model

    observations = references[entry.id]["observations"]
    assert zoo.reference_outputs(agent, observations) == zoo.reference_outputs(load_model(final), observations)
    with pytest.raises(ValueError, match="already has"):
        zoo.add_runs([run], root, log=lambda _: None)


def test_add_refuses_unfinished_runs_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "zoo").mkdir()
    assert zoo.main(["add", str(tmp_path), "--root", str(tmp_path / "zoo")]) == 2
    assert capsys.readouterr().err.strip().endswith("is not a train.py run folder (no args.yml)")


def test_manifest_evaluation_defaults(tmp_path: Path) -> None:
    """The manifest's per-setting episode budget for ``evaluate.py`` with no arguments; malformed ones are refused."""
    (tmp_path / "manifest.json").write_text(json.dumps({"version": 1, "agents": [],
                                                        "evaluation": {"gridworld-pickup": {"n_episodes": 50}}}))  # fmt: skip
    assert zoo.zoo_evaluation("gridworld-pickup", tmp_path) == {"n_episodes": 50}
    assert zoo.zoo_evaluation("minatar", tmp_path) == {}
    (tmp_path / "manifest.json").write_text(json.dumps({"agents": [], "evaluation": {"g": {"n_envs": 4}}}))
    assert zoo.zoo_evaluation("g", tmp_path) == {"n_envs": 4}
    for bad in ({"n_episodes": 0}, {"n_episodes": "50"}, {"episodes": 50}, [50], {"n_envs": 0}, {"n_envs": 2.0}):
        (tmp_path / "manifest.json").write_text(json.dumps({"agents": [], "evaluation": {"gridworld-pickup": bad}}))
        with pytest.raises(ValueError, match=r"evaluation\.gridworld-pickup"):
            zoo.zoo_evaluation("gridworld-pickup", tmp_path)


def test_manifest_command_of_an_extended_run(tmp_path: Path) -> None:
    """An extended run's command.txt has its first command and then one ``--resume RUN -n N`` line per extension
    (train.py appends it); the manifest keeps both, without machine paths, the extension resuming the newest run."""
    (tmp_path / "command.txt").write_text(
        "rims-train --algo lstm_ppo --env gridworld-pickup --seed 0 -n 500000 -f /x/sweep --num-threads 1\n"
        "rims-train --resume /x/sweep/lstm_ppo/MiniGrid-RimsPickup-Train-v1_1 -n 750000 --num-threads 1\n"
    )
    assert zoo._run_command(tmp_path, "lstm_ppo", "gridworld-pickup") == (
        "rims-train --algo lstm_ppo --env gridworld-pickup --seed 0 -n 500000 --num-threads 1 && "
        "rims-train --algo lstm_ppo --env gridworld-pickup -n 750000 --num-threads 1 --resume"
    )
    assert zoo._run_command(tmp_path / "missing", "lstm_ppo", "gridworld-pickup") is None
