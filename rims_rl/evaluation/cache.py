"""On-disk cache of evaluation episodes: one JSON file per evaluation unit, never pickle.

A unit is one agent (or the uniform-random baseline) under one action mode on one target and one evaluation seed.
Its key is plain data: the sha256 of the checkpoint's bytes, the target (env id, the env's identity: the setting's
split entry or the plain id, split label, evaluation seed, episodes), ``n_envs``, the action mode, the env options
read from the agent's run folder (frame stack, env_kwargs, VecNormalize kwargs and the sha256 of its statistics),
the torch device, the versions of the packages that decide the numbers, and :data:`CACHE_VERSION`. The file is
``<cache dir>/<first two hex digits>/<sha256 of the key>.json`` and holds the key itself, so a file is used only
when its key matches exactly. Unreadable or corrupt files count as misses (they are evaluated again and overwritten).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from rims_rl.evaluation.report import atomic_write_text
from rims_rl.evaluation.rollout import Episodes

#: Bump when the entry layout or the meaning of a key changes: older entries are then ignored.
CACHE_VERSION = 1


def sha256_bytes(data: bytes) -> str:
    """:return: the hex sha256 of ``data``"""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """
    :param path: a file
    :return: the hex sha256 of its bytes
    :raises FileNotFoundError: the file does not exist
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    return sha256_bytes(path.read_bytes())


def software_versions() -> dict[str, str]:
    """:return: versions of the packages whose code decides the episodes (part of every key)"""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("rims_rl", "torch", "numpy", "gymnasium", "stable_baselines3", "sb3_contrib", "minigrid"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = ""
    return out


def key_digest(key: dict[str, Any]) -> str:
    """
    :param key: a unit's key (plain JSON data)
    :return: the hex sha256 of its canonical JSON (sorted keys)
    """
    return sha256_bytes(json.dumps(key, sort_keys=True, separators=(",", ":")).encode())


def episodes_to_plain(episodes: Episodes) -> dict[str, list[Any]]:
    """
    :param episodes: episodes of one unit
    :return: returns, lengths and successes as JSON lists (a missing success flag, nan, as null); floats are written
        with their shortest exact representation, so reading them back gives the same bits
    """
    successes = np.asarray(episodes.successes, dtype=np.float64)
    return {
        "returns": [float(v) for v in episodes.returns],
        "lengths": [int(v) for v in episodes.lengths],
        "successes": [None if math.isnan(v) else float(v) for v in successes],
    }


def episodes_from_plain(data: dict[str, Any]) -> Episodes:
    """
    :param data: as written by :func:`episodes_to_plain`
    :return: the episodes
    :raises ValueError: lists of different lengths or of the wrong kind
    """
    returns = np.asarray([float(v) for v in data["returns"]], dtype=np.float64)
    lengths = np.asarray([int(v) for v in data["lengths"]], dtype=np.int64)
    successes = np.asarray([math.nan if v is None else float(v) for v in data["successes"]], dtype=np.float64)
    if not len(returns) == len(lengths) == len(successes):
        raise ValueError("episode lists of different lengths")
    return Episodes(returns, lengths, successes)


class EpisodeCache:
    """The episode cache in one folder.

    :param folder: where the entries live (created on the first write)
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path(self, key: dict[str, Any]) -> Path:
        """:return: the file of the entry with this key"""
        digest = key_digest(key)
        return self.folder / digest[:2] / f"{digest}.json"

    def get(self, key: dict[str, Any]) -> tuple[Episodes, dict[str, Any]] | None:
        """
        :param key: the unit's key
        :return: (episodes, the agent facts stored with them), or None when there is no usable entry (missing,
            unreadable, corrupt, another key or format version)
        """
        try:
            entry = json.loads(self.path(key).read_text())
            if not isinstance(entry, dict) or entry.get("version") != CACHE_VERSION or entry.get("key") != key:
                return None
            episodes = episodes_from_plain(entry["episodes"])
            n_episodes = key.get("target", {}).get("n_episodes")
            if n_episodes is not None and len(episodes.returns) != n_episodes:
                return None
            agent = entry.get("agent") or {}
            return (episodes, agent) if isinstance(agent, dict) else None
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None

    def put(self, key: dict[str, Any], episodes: Episodes, agent: dict[str, Any] | None = None) -> None:
        """Write (or overwrite) an entry atomically.

        :param key: the unit's key
        :param episodes: its episodes
        :param agent: facts about the agent read from the loaded model (core name, core size), stored with them
        """
        entry = {"version": CACHE_VERSION, "key": key, "episodes": episodes_to_plain(episodes), "agent": agent or {}}
        atomic_write_text(self.path(key), json.dumps(entry, sort_keys=True) + "\n")
