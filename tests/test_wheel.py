"""The built wheel works outside the checkout: settings, hyperparameters and the zoo are package data.

Builds the wheel, installs it (with its dependencies) into a fresh virtual environment in a temporary folder, and runs
the installed console scripts from that folder, with no access to the repository. Slow (a full install: about a minute
with a warm pip cache), so it is marked ``wheel`` and run by ``.ci/run`` (``python -m pytest -m wheel``), not by the
default test run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.wheel

REPO = Path(__file__).resolve().parent.parent


def _run(cmd: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIMS_RL_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{' '.join(cmd)} failed ({result.returncode}):\n{output}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """:return: (bin folder of a fresh venv with the wheel installed, a work folder outside the checkout)"""
    root = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"), str(REPO)], cwd=root)
    (wheel,) = (root / "dist").glob("rims_rl-*.whl")
    _run([sys.executable, "-m", "venv", str(root / "venv")], cwd=root)
    bin_dir = root / "venv" / "bin"
    # The CPU build of torch first (as README's set-up does), then the wheel and its dependencies.
    _run([str(bin_dir / "pip"), "install", "-q", "torch==2.13.0"], cwd=root)
    _run([str(bin_dir / "pip"), "install", "-q", str(wheel)], cwd=root)
    work = root / "work"
    work.mkdir()
    return bin_dir, work


def test_wheel_holds_the_data_and_runs_outside_the_checkout(installed: tuple[Path, Path]) -> None:
    bin_dir, work = installed
    python = str(bin_dir / "python")
    where = _run([python, "-c", "import rims_rl, rims_rl.resources as r; print(rims_rl.__file__); print(r.data_dir('envs'))"],
                 cwd=work).stdout.split()  # fmt: skip
    assert not where[0].startswith(str(REPO)), f"imported the checkout, not the wheel: {where[0]}"
    assert "site-packages" in where[1] and where[1].endswith(os.path.join("_data", "envs"))
    settings = _run([python, "-c", "import rims_rl.envs as E; print(' '.join(E.list_settings()))"], cwd=work).stdout.split()
    assert "gridworld-pickup" in settings

    assert "usage" in _run([str(bin_dir / "rims-train"), "--help"], cwd=work).stdout
    # A tiny training on the default setting (hyperparameters from the wheel's agents/*.yml).
    train = [str(bin_dir / "rims-train"), "-n", "256", "--eval-freq", "0", "--save-freq", "0", "--heldout-episodes", "0"]
    _run([*train, "-params", "n_envs:2", "n_steps:64", "batch_size:64", "--no-progress", "-f", str(work / "logs")], cwd=work)
    finals = list((work / "logs").glob("rims_ppo/*/*.zip"))
    assert finals, "no final model written"

    listing = _run([str(bin_dir / "rims-evaluate"), "--list-zoo"], cwd=work).stdout
    manifest = json.loads((REPO / "zoo" / "manifest.json").read_text())
    ids = [agent["id"] for agent in manifest["agents"]]
    assert ids and all(agent_id in listing for agent_id in ids)
    # A zoo agent loads from the installed package (hash-checked) and acts.
    code = (
        "from rims_rl.zoo import load_zoo_agent\n"
        f"model = load_zoo_agent({ids[0]!r})\n"
        "import numpy as np\n"
        "action, _ = model.predict(model.observation_space.sample(), episode_start=np.ones(1, dtype=bool))\n"
        "print('acted', action)\n"
    )
    assert "acted" in _run([python, "-c", code], cwd=work).stdout
