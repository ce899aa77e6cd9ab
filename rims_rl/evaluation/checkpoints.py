"""Finding and loading checkpoints: run folders, .zip files and zoo ids, with clear errors."""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sb3_contrib import RecurrentPPO

ALGO_CORES = {"rims_ppo": "rims", "lstm_ppo": "lstm"}


@dataclass
class AgentSpec:
    """A checkpoint to evaluate.

    :param label: name shown in tables
    :param path: the .zip file
    :param core: "rims", "lstm", ... when known
    :param algo: e.g. "rims_ppo" when known
    :param env: the training env or setting, when known
    :param seed: the training seed, when known
    """

    label: str
    path: Path
    core: str | None = None
    algo: str | None = None
    env: str | None = None
    seed: int | None = None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return {}
    if isinstance(data, list):  # rl-zoo writes config.yml as a list of [key, value] pairs
        data = {k: v for k, v in (item for item in data if isinstance(item, (list, tuple)) and len(item) == 2)}
    return data if isinstance(data, dict) else {}


def _checkpoint_step(path: Path) -> int:
    match = re.match(r"^rl_model_(\d+)_steps\.zip$", path.name)
    return int(match.group(1)) if match else -1


def run_folder_checkpoint(folder: Path, best: bool = False) -> Path:
    """The checkpoint to evaluate in a run folder.

    Default: the final model ``<env>.zip``, else the newest ``checkpoints/rl_model_<steps>_steps.zip``, else
    ``best_model.zip``. With ``best=True``: ``best_model.zip`` first (selected on the training-split evaluations).

    :param folder: logs/<algo>/<env>_<n>/
    :param best: prefer best_model.zip
    :raises FileNotFoundError: when the folder has no checkpoint
    """
    best_path = folder / "best_model.zip"
    if best and best_path.is_file():
        return best_path
    finals = sorted(p for p in folder.glob("*.zip") if p.is_file() and p.name != "best_model.zip")
    if finals:
        return finals[0]
    checkpoints = sorted((folder / "checkpoints").glob("*.zip"), key=lambda p: (_checkpoint_step(p), p.stat().st_mtime))
    if checkpoints:
        return checkpoints[-1]
    if best_path.is_file():
        return best_path
    raise FileNotFoundError(f"no checkpoint (<env>.zip, checkpoints/*.zip or best_model.zip) in run folder {folder}")


def resolve_agent(spec: str | Path, core: str | None = None, best: bool = False) -> AgentSpec:
    """Turn a run folder, a .zip path or a zoo id into an :class:`AgentSpec`.

    :param spec: run folder, checkpoint file or zoo id
    :param core: the core when the caller knows it (e.g. given with ``--rims``)
    :param best: in a run folder, evaluate best_model.zip rather than the final model
    :raises FileNotFoundError: when nothing exists under that name
    """
    path = Path(spec)
    if path.is_dir():
        ckpt = run_folder_checkpoint(path, best)
        args = _read_yaml(path / "args.yml")
        config = _read_yaml(path / "config.yml")
        algo = args.get("algo") or config.get("algo") or (path.parent.name if path.parent.name in ALGO_CORES else None)
        seed = args.get("seed")
        return AgentSpec(
            label=f"{path.parent.name}/{path.name}",
            path=ckpt,
            core=core or ALGO_CORES.get(str(algo)) or config.get("core"),
            algo=str(algo) if algo else None,
            env=args.get("env") or config.get("env"),
            seed=int(seed) if isinstance(seed, int) else None,
        )
    if path.is_file() or str(spec).endswith(".zip"):
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        return AgentSpec(
            label=path.stem if path.parent.name in ("", ".") else f"{path.parent.name}/{path.stem}", path=path, core=core
        )
    from rims_rl.zoo import get_zoo_entry, zoo_path

    try:
        entry = get_zoo_entry(str(spec))
    except KeyError as e:
        raise FileNotFoundError(f"{spec!r} is neither a run folder, a checkpoint file nor a zoo id ({e.args[0]})") from None
    return AgentSpec(
        label=entry.id, path=zoo_path(entry), core=core or entry.core, algo=entry.algo, env=entry.env, seed=entry.seed
    )


def load_model(path: str | Path, device: str = "cpu") -> RecurrentPPO:
    """Load a RecurrentPPO checkpoint.

    :param path: the .zip file
    :param device: torch device
    :raises FileNotFoundError: the file does not exist
    :raises ValueError: the file is not a readable SB3 checkpoint
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        import rims_rl.policies  # noqa: F401  (custom policy classes must be importable to unpickle)
    except ImportError:
        pass
    if not zipfile.is_zipfile(path):
        raise ValueError(f"corrupt checkpoint {path}: not a zip archive")
    try:
        return RecurrentPPO.load(path, device=device)
    except Exception as e:  # SB3 raises many kinds (KeyError, pickle errors, RuntimeError) for a broken archive
        raise ValueError(f"corrupt or unreadable checkpoint {path}: {type(e).__name__}: {e}") from e
