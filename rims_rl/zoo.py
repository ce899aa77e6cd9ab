"""The pretrained-agent zoo: a manifest (zoo/manifest.json) of checkpoints with their SHA-256, checked on load.

Checkpoints are SB3 .zip files, whose loading unpickles Python objects: only load files you trust. The hash
check guarantees a zoo file is the one the manifest was written for, not that the manifest itself is trustworthy.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rims_rl.resources import data_dir

ZOO_DIR = data_dir("zoo")
"""Default zoo folder (the repository's top-level zoo/); override with the RIMS_RL_ZOO environment variable."""

MANIFEST_NAME = "manifest.json"


@dataclass
class ZooEntry:
    """One pretrained agent.

    :param id: unique name, e.g. "gridworld-pickup/rims_ppo/seed0"
    :param algo: "rims_ppo" or "lstm_ppo"
    :param core: "rims" or "lstm"
    :param setting: the setting it was trained for, e.g. "gridworld-pickup"
    :param env: the training env id
    :param path: checkpoint path relative to the zoo folder
    :param sha256: hex digest of the checkpoint file
    :param seed: training seed
    """

    id: str
    algo: str
    core: str
    setting: str
    env: str
    path: str
    sha256: str
    seed: int | None = None


def zoo_dir() -> Path:
    """The zoo folder in use."""
    return Path(os.environ.get("RIMS_RL_ZOO", ZOO_DIR))


def sha256_file(path: str | Path) -> str:
    """SHA-256 hex digest of a file.

    :param path: the file
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST_NAME
    if not path.is_file():
        return {"version": 1, "agents": []}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"corrupt zoo manifest {path}: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("agents", []), list):
        raise ValueError(f"corrupt zoo manifest {path}: expected an object with an 'agents' list")
    return data


def list_zoo(root: str | Path | None = None) -> list[ZooEntry]:
    """All agents in the manifest.

    :param root: zoo folder (default :func:`zoo_dir`)
    :raises ValueError: a malformed manifest
    """
    root = Path(root) if root is not None else zoo_dir()
    entries = []
    fields = set(ZooEntry.__dataclass_fields__)
    for item in _read_manifest(root)["agents"]:
        missing = {"id", "algo", "core", "setting", "env", "path", "sha256"} - set(item)
        if missing:
            raise ValueError(f"zoo manifest entry {item.get('id', '?')!r} lacks {sorted(missing)}")
        entries.append(ZooEntry(**{k: v for k, v in item.items() if k in fields}))
    return entries


def get_zoo_entry(agent_id: str, root: str | Path | None = None) -> ZooEntry:
    """The manifest entry of one agent.

    :param agent_id: the entry's id
    :param root: zoo folder
    :raises KeyError: unknown id (the message lists close matches)
    """
    entries = {e.id: e for e in list_zoo(root)}
    if agent_id not in entries:
        close = difflib.get_close_matches(agent_id, list(entries), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; the zoo has {len(entries)} agents"
        raise KeyError(f"no zoo agent {agent_id!r}{hint}")
    return entries[agent_id]


def zoo_path(entry: ZooEntry, root: str | Path | None = None, verify: bool = True) -> Path:
    """The checkpoint file of a zoo entry, its SHA-256 checked.

    :param entry: the entry
    :param root: zoo folder
    :param verify: check the hash
    :raises FileNotFoundError: the file is missing
    :raises ValueError: the hash does not match the manifest
    """
    path = (Path(root) if root is not None else zoo_dir()) / entry.path
    if not path.is_file():
        raise FileNotFoundError(f"zoo agent {entry.id!r}: checkpoint missing at {path}")
    if verify:
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise ValueError(f"zoo agent {entry.id!r}: sha256 mismatch for {path} (manifest {entry.sha256}, file {actual})")
    return path


def load_zoo_agent(agent_id: str, root: str | Path | None = None, device: str = "cpu") -> Any:
    """Load a zoo agent after checking its integrity.

    :param agent_id: the entry's id
    :param root: zoo folder
    :param device: torch device
    :return: the RecurrentPPO model
    """
    from rims_rl.evaluation.checkpoints import load_model

    return load_model(zoo_path(get_zoo_entry(agent_id, root), root), device=device)


def add_to_zoo(
    checkpoint: str | Path,
    agent_id: str,
    algo: str,
    core: str,
    setting: str,
    env: str,
    seed: int | None = None,
    root: str | Path | None = None,
) -> ZooEntry:
    """Copy a checkpoint into the zoo and record it in the manifest (both written atomically).

    :param checkpoint: the .zip to add
    :param agent_id: unique id (an existing id is refused)
    :param algo: "rims_ppo" or "lstm_ppo"
    :param core: "rims" or "lstm"
    :param setting: setting name
    :param env: training env id
    :param seed: training seed
    :param root: zoo folder
    :raises ValueError: duplicate id
    """
    root = Path(root) if root is not None else zoo_dir()
    manifest = _read_manifest(root)
    if any(item.get("id") == agent_id for item in manifest["agents"]):
        raise ValueError(f"zoo already has an agent {agent_id!r}")
    rel = Path("agents") / (agent_id.replace("/", "__") + ".zip")
    dest = root / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.copyfile(checkpoint, tmp)
    os.replace(tmp, dest)
    entry = ZooEntry(agent_id, algo, core, setting, env, rel.as_posix(), sha256_file(dest), seed)
    manifest["agents"].append(asdict(entry))
    fd, tmp_name = tempfile.mkstemp(dir=root, prefix=".manifest.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    os.replace(tmp_name, root / MANIFEST_NAME)
    return entry
