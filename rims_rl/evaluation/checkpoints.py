"""Finding and loading checkpoints: run folders, .zip files and zoo ids, with clear errors."""

from __future__ import annotations

import io
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
    :param content: the file's bytes when already read and verified (zoo agents: hashed bytes, loaded as is)
    :param trust_remote_code: allow an SB3 zip that is not in the safe format (it unpickles)
    """

    label: str
    path: Path
    core: str | None = None
    algo: str | None = None
    env: str | None = None
    seed: int | None = None
    content: bytes | None = None
    trust_remote_code: bool = False


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
    from rims_rl.zoo import get_zoo_entry, read_zoo_file, zoo_dir

    try:
        entry = get_zoo_entry(str(spec))
    except KeyError as e:
        raise FileNotFoundError(f"{spec!r} is neither a run folder, a checkpoint file nor a zoo id ({e.args[0]})") from None
    content = read_zoo_file(entry)  # read once, hashed; the model is loaded from these bytes
    return AgentSpec(label=entry.id, path=zoo_dir() / entry.path, core=core or entry.core, algo=entry.algo, env=entry.env,
                     seed=entry.seed, content=content)  # fmt: skip


def load_model(source: str | Path | AgentSpec, device: str = "cpu", trust_remote_code: bool = False) -> RecurrentPPO:
    """Load a RecurrentPPO checkpoint in rims_rl's safe format (nothing is unpickled).

    :param source: the .zip file, or an :class:`AgentSpec` (its verified ``content`` is used when present)
    :param device: torch device
    :param trust_remote_code: also load an SB3/sb3-contrib zip (which unpickles Python objects: trusted files only)
    :raises FileNotFoundError: the file does not exist
    :raises rims_rl.safe_io.UnsafeCheckpointError: an SB3 zip without ``trust_remote_code`` (a ValueError)
    :raises ValueError: the file is not a readable checkpoint
    """
    from rims_rl.safe_io import TRUST_HINT, UnsafeCheckpointError
    from rims_rl.safe_io import load_model as load_safe

    spec = source if isinstance(source, AgentSpec) else None
    path = spec.path if spec is not None else Path(source)  # type: ignore[arg-type]
    trust = trust_remote_code or (spec is not None and spec.trust_remote_code)
    content = spec.content if spec is not None else None
    if content is None:
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        content = path.read_bytes()
    if not zipfile.is_zipfile(io.BytesIO(content)):
        raise ValueError(f"corrupt checkpoint {path}: not a zip archive")
    try:
        return load_safe(content, device=device, trust_remote_code=trust)
    except UnsafeCheckpointError as e:
        if str(e) == TRUST_HINT:
            raise UnsafeCheckpointError(f"refusing to load {path}: {e}") from None
        raise UnsafeCheckpointError(f"corrupt or unreadable checkpoint {path}: {e}") from None
    except Exception as e:  # a broken archive raises many kinds (KeyError, zipfile errors, RuntimeError)
        raise ValueError(f"corrupt or unreadable checkpoint {path}: {type(e).__name__}: {e}") from e
