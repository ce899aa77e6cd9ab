"""The pretrained-agent zoo: a manifest (zoo/manifest.json) of checkpoints with their SHA-256, checked on load.

Zoo agents are in rims_rl's safe format (:mod:`rims_rl.safe_io`: JSON + safetensors, never unpickled). A file
is read once; its SHA-256 is computed over those bytes and the model is loaded from the same bytes, so a file
swapped after the check is never loaded. Manifest paths must stay inside the zoo folder (no absolute paths, no
``..``, no symlink leading out). ``python -m rims_rl.zoo convert --trust-remote-code`` converts old SB3-pickle agents
(the flag trusts them explicitly), checks that each converted agent acts exactly as the original, and updates the manifest.
``python -m rims_rl.zoo add RUN...`` adds the final models of finished training runs (weights without the Adam
state: an agent to act with, not to resume), with their setting, seed, budget and command.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from rims_rl.resources import data_dir

ZOO_DIR = data_dir("zoo")
"""Default zoo folder (the repository's top-level zoo/); override with the RIMS_RL_ZOO environment variable."""

MANIFEST_NAME = "manifest.json"
REFERENCE_NAME = "reference_outputs.json"
"""Per agent: fixed observations and the original (pre-conversion) agent's action probabilities on them."""


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
    :param n_timesteps: training steps the agent had (its budget; None: not recorded)
    :param command: the training command (its ``-f`` folder dropped)
    """

    id: str
    algo: str
    core: str
    setting: str
    env: str
    path: str
    sha256: str
    seed: int | None = None
    n_timesteps: int | None = None
    command: str | None = None


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
        if not isinstance(item, dict):
            raise ValueError(
                f"corrupt zoo manifest {root / MANIFEST_NAME}: an entry is a {type(item).__name__}, not an object"
            )
        missing = {"id", "algo", "core", "setting", "env", "path", "sha256"} - set(item)
        if missing:
            raise ValueError(f"zoo manifest entry {item.get('id', '?')!r} lacks {sorted(missing)}")
        entries.append(ZooEntry(**{k: v for k, v in item.items() if k in fields}))
    return entries


def zoo_evaluation(setting: str, root: str | Path | None = None) -> dict[str, Any]:
    """
    The manifest's evaluation defaults for a setting (``"evaluation": {"<setting>": {"n_episodes": 50, "n_envs": 4}}``):
    what ``evaluate.py`` with no arguments plays, so that the README's table is that command's output (the episodes
    played depend on both: the number of envs decides which env seed plays which episode).

    :param setting: setting name
    :param root: zoo folder
    :return: e.g. ``{"n_episodes": 50, "n_envs": 4}`` (empty when the manifest sets none)
    :raises ValueError: a malformed entry
    """
    root = Path(root) if root is not None else zoo_dir()
    data = _read_manifest(root).get("evaluation", {})
    entry = data.get(setting, {}) if isinstance(data, dict) else None
    if not isinstance(entry, dict) or set(entry) - {"n_episodes", "n_envs"}:
        raise ValueError(f"corrupt zoo manifest {root / MANIFEST_NAME}: evaluation.{setting} must be "
                         "{'n_episodes': N, 'n_envs': M} (either optional)")  # fmt: skip
    for key in ("n_episodes", "n_envs"):
        n = entry.get(key)
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise ValueError(f"corrupt zoo manifest {root / MANIFEST_NAME}: evaluation.{setting}.{key} must be >= 1")
    return dict(entry)


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


def _inside(root: Path, rel: str, agent_id: str) -> Path:
    """
    :param root: the zoo folder
    :param rel: a manifest path
    :param agent_id: for messages
    :return: ``root / rel``, after checking that it stays inside ``root`` (symlinks resolved)
    :raises ValueError: an absolute path, a ``..`` component, or a path resolving outside the zoo folder
    """
    parts = PurePosixPath(rel).parts if isinstance(rel, str) else ()
    if not parts or rel.startswith(("/", "\\")) or "\\" in rel or ".." in parts or (len(rel) > 1 and rel[1] == ":"):
        raise ValueError(f"zoo agent {agent_id!r}: path {rel!r} must be relative to the zoo folder, without '..'")
    path = root / rel
    if not path.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"zoo agent {agent_id!r}: path {rel!r} resolves outside the zoo folder {root}")
    return path


def zoo_path(entry: ZooEntry, root: str | Path | None = None, verify: bool = True) -> Path:
    """The checkpoint file of a zoo entry, its SHA-256 checked (use :func:`read_zoo_file` to load it).

    :param entry: the entry
    :param root: zoo folder
    :param verify: check the hash
    :raises FileNotFoundError: the file is missing
    :raises ValueError: the hash does not match the manifest, or the path leaves the zoo folder
    """
    path = _inside(Path(root) if root is not None else zoo_dir(), entry.path, entry.id)
    if verify:
        read_zoo_file(entry, root)
    elif not path.is_file():
        raise FileNotFoundError(f"zoo agent {entry.id!r}: checkpoint missing at {path}")
    return path


def read_zoo_file(entry: ZooEntry, root: str | Path | None = None) -> bytes:
    """The bytes of a zoo agent's file, read once and checked against the manifest's SHA-256.

    :param entry: the entry
    :param root: zoo folder
    :return: the verified bytes (load the model from these, never from the path again)
    :raises FileNotFoundError: the file is missing
    :raises ValueError: the hash does not match, or the path leaves the zoo folder
    """
    path = _inside(Path(root) if root is not None else zoo_dir(), entry.path, entry.id)
    if not path.is_file():
        raise FileNotFoundError(f"zoo agent {entry.id!r}: checkpoint missing at {path}")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != entry.sha256:
        raise ValueError(f"zoo agent {entry.id!r}: sha256 mismatch for {path} (manifest {entry.sha256}, file {actual})")
    return data


def load_zoo_agent(agent_id: str, root: str | Path | None = None, device: str = "cpu") -> Any:
    """Load a zoo agent after checking its integrity (one read: the hashed bytes are the loaded bytes).

    :param agent_id: the entry's id
    :param root: zoo folder
    :param device: torch device
    :return: the RecurrentPPO model
    """
    from rims_rl.evaluation.checkpoints import AgentSpec, load_model

    entry = get_zoo_entry(agent_id, root)
    data = read_zoo_file(entry, root)
    root_path = Path(root) if root is not None else zoo_dir()
    return load_model(AgentSpec(label=entry.id, path=root_path / entry.path, content=data), device=device)


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
    :raises rims_rl.safe_io.UnsafeCheckpointError: the checkpoint is not in the safe format
    """
    from rims_rl.checkpoint import atomic_write
    from rims_rl.safe_io import read_container

    root = Path(root) if root is not None else zoo_dir()
    manifest = _read_manifest(root)
    if any(isinstance(item, dict) and item.get("id") == agent_id for item in manifest["agents"]):
        raise ValueError(f"zoo already has an agent {agent_id!r}")
    data = Path(checkpoint).read_bytes()
    read_container(data)  # only safe-format files enter the zoo
    rel = Path("agents") / (agent_id.replace("/", "__") + ".zip")
    with atomic_write(root / rel) as file:
        file.write(data)
    entry = ZooEntry(agent_id, algo, core, setting, env, rel.as_posix(), hashlib.sha256(data).hexdigest(), seed)
    manifest["agents"].append(asdict(entry))
    _write_manifest(root, manifest)
    return entry


def _write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    from rims_rl.checkpoint import atomic_write

    with atomic_write(root / MANIFEST_NAME) as file:
        file.write((json.dumps(manifest, indent=1) + "\n").encode())


def reference_outputs(model: Any, observations: list[Any]) -> dict[str, Any]:
    """
    Deterministic actions and action probabilities of ``model`` over a sequence of observations, recurrent state
    carried (one env, one episode).

    :param model: a RecurrentPPO
    :param observations: single observations (not batched), in order
    :return: {"actions": [int, ...], "probs": [[float, ...], ...]}
    """
    import numpy as np
    import torch as th

    policy = model.policy
    state = None
    actions, probs = [], []
    for t, obs in enumerate(observations):
        start = np.array([t == 0])
        batch = np.asarray(obs)[None]
        action, state = model.predict(batch, state=state, episode_start=start, deterministic=True)
        actions.append(int(np.asarray(action).reshape(-1)[0]))
    with th.no_grad():
        lstm_states = None
        for t, obs in enumerate(observations):
            tensor, _ = policy.obs_to_tensor(np.asarray(obs)[None])
            if lstm_states is None:
                zeros = th.zeros(policy.lstm_hidden_state_shape[0], 1, policy.lstm_hidden_state_shape[2])
                lstm_states = (zeros, zeros.clone())
            starts = th.tensor([1.0 if t == 0 else 0.0])
            distribution, lstm_states = policy.get_distribution(tensor, lstm_states, starts)
            probs.append([float(p) for p in distribution.distribution.probs[0]])
    return {"actions": actions, "probs": probs}


def _reference_observations(model: Any, n: int = 8) -> list[Any]:
    space = model.observation_space
    space.seed(0)
    return [space.sample() for _ in range(n)]


def _zoo_state(root: str | Path | None) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """:return: the zoo folder, its manifest and its reference outputs (empty when there are none yet)"""
    folder = Path(root) if root is not None else zoo_dir()
    references_path = folder / REFERENCE_NAME
    references = json.loads(references_path.read_text()) if references_path.is_file() else {}
    return folder, _read_manifest(folder), references


def _write_references(root: Path, references: dict[str, Any]) -> None:
    from rims_rl.checkpoint import atomic_write

    with atomic_write(root / REFERENCE_NAME) as file:
        file.write((json.dumps(references, indent=1) + "\n").encode())


def convert_zoo(root: str | Path | None = None, log: Any = print, trust_remote_code: bool = False) -> list[str]:
    """
    Convert every zoo agent that is still an SB3 pickle zip to the safe format, in place (same path, new hash).
    Reading one unpickles it, so it needs ``trust_remote_code=True`` as every other SB3 load; each converted agent
    must give exactly the original's actions and action probabilities on fixed observations (recorded in
    ``reference_outputs.json`` for the tests). Idempotent: safe files are skipped.

    :param root: zoo folder
    :param log: printer
    :param trust_remote_code: unpickle the SB3 zips (their code runs): only for a zoo whose source you trust
    :return: the ids converted
    :raises rims_rl.safe_io.UnsafeCheckpointError: an SB3 zip without ``trust_remote_code`` (nothing is written)
    """
    import numpy as np

    from rims_rl.checkpoint import atomic_write
    from rims_rl.safe_io import is_safe_file, load_model, model_bytes

    root, manifest, references = _zoo_state(root)
    converted = []
    for item in manifest["agents"]:
        entry = ZooEntry(**{k: v for k, v in item.items() if k in ZooEntry.__dataclass_fields__})
        data = read_zoo_file(entry, root)
        if is_safe_file(data):
            log(f"{entry.id}: already in the safe format")
            continue
        original = load_model(data, device="cpu", trust_remote_code=trust_remote_code)
        observations = _reference_observations(original)
        expected = reference_outputs(original, observations)
        new = model_bytes(original)
        again = reference_outputs(load_model(new, device="cpu"), observations)
        if again != expected:
            raise RuntimeError(f"{entry.id}: the converted agent acts differently from the original; nothing written")
        with atomic_write(_inside(root, entry.path, entry.id)) as file:
            file.write(new)
        item["sha256"] = hashlib.sha256(new).hexdigest()
        references[entry.id] = {"observations": np.asarray(observations).tolist(), **expected}
        _write_manifest(root, manifest)
        _write_references(root, references)
        converted.append(entry.id)
        log(f"{entry.id}: converted ({len(data)} -> {len(new)} bytes), identical actions and probabilities")
    return converted


def add_runs(
    runs: list[str | Path], root: str | Path | None = None, drop_settings: tuple[str, ...] = (), log: Any = print
) -> list[ZooEntry]:
    """
    Add the final models of finished ``train.py`` runs to the zoo as ``<setting>/<algo>/seed<seed>``, without
    their optimizer state, checking that each stored agent acts exactly as the run's model; record reference
    outputs for the tests. Entries of ``drop_settings`` are removed from the manifest first (their files too).

    :param runs: run folders (``<algo>/<env id>_<n>/`` with ``args.yml`` and the final ``<env id>.zip``)
    :param root: zoo folder
    :param drop_settings: settings whose agents the new ones replace
    :param log: printer
    :return: the new entries
    :raises ValueError: not a finished run, a duplicate id, or a run without a setting
    """
    import numpy as np
    import yaml

    from rims_rl.checkpoint import atomic_write
    from rims_rl.safe_io import load_model, model_bytes

    root, manifest, references = _zoo_state(root)
    kept = []
    for item in manifest["agents"]:
        if isinstance(item, dict) and item.get("setting") in drop_settings:
            references.pop(str(item.get("id")), None)
            with contextlib.suppress(FileNotFoundError):
                _inside(root, str(item.get("path")), str(item.get("id"))).unlink()
            log(f"{item.get('id')}: removed ({item.get('setting')})")
        else:
            kept.append(item)
    manifest["agents"] = kept
    ids = {item.get("id") for item in kept if isinstance(item, dict)}
    entries = []
    for run in map(Path, runs):
        args_file = run / "args.yml"
        if not args_file.is_file():
            raise ValueError(f"{run} is not a train.py run folder (no args.yml)")
        args = yaml.safe_load(args_file.read_text())
        final = run / f"{args['env_id'].replace('/', '-')}.zip"
        if not final.is_file():
            raise ValueError(f"{run} has no final model ({final.name}): not finished")
        if not args.get("setting"):
            raise ValueError(f"{run} was not trained on a setting; the zoo keys agents by setting")
        agent_id = f"{args['setting']}/{args['algo']}/seed{args['seed']}"
        if agent_id in ids:
            raise ValueError(f"zoo already has an agent {agent_id!r}")
        model = load_model(final, device="cpu")
        observations = _reference_observations(model)
        expected = reference_outputs(model, observations)
        model.policy.optimizer.state.clear()  # an agent to act with: the Adam moments are two thirds of the file
        data = model_bytes(model)
        if reference_outputs(load_model(data, device="cpu"), observations) != expected:
            raise RuntimeError(f"{agent_id}: the stored agent acts differently from the run's model; nothing written")
        rel = Path("agents") / (agent_id.replace("/", "__") + ".zip")
        with atomic_write(root / rel) as file:
            file.write(data)
        command = _run_command(run, args["algo"], args["env"])
        core = "rims" if args["algo"] == "rims_ppo" else "lstm"
        entry = ZooEntry(agent_id, args["algo"], core, args["setting"], args["env_id"], rel.as_posix(),
                         hashlib.sha256(data).hexdigest(), int(args["seed"]), int(model.num_timesteps), command)  # fmt: skip
        manifest["agents"].append(asdict(entry))
        references[agent_id] = {"observations": np.asarray(observations).tolist(), **expected}
        ids.add(agent_id)
        entries.append(entry)
        log(f"{agent_id}: added ({len(data):,} bytes, {model.num_timesteps:,} steps)")
    _write_manifest(root, manifest)
    _write_references(root, references)
    return entries


def _run_command(run: Path, algo: str, env: str) -> str | None:
    """
    :return: the commands that trained a run, without its log folder: the first line of its ``command.txt``, then each
        extension (``--resume RUN -n N``) as ``--algo A --env E ... --resume``, which resumes the newest run of that
        algo and env wherever the first command put it; None without a ``command.txt``
    """
    import shlex

    lines = (run / "command.txt").read_text().splitlines() if (run / "command.txt").is_file() else []
    commands = []
    for number, line in enumerate(filter(None, map(str.strip, lines))):
        words = shlex.split(line)
        drop = set()
        for i, word in enumerate(words):
            if word in ("-f", "--log-folder", "--resume"):  # the flag and its value (--resume may have none)
                has_value = i + 1 < len(words) and not (word == "--resume" and words[i + 1].startswith("-"))
                drop |= {i, i + 1} if has_value else {i}
        kept = [w for i, w in enumerate(words) if i not in drop]
        if number > 0:
            kept = [kept[0], "--algo", algo, "--env", env, *kept[1:], "--resume"]
        commands.append(shlex.join(kept))
    return " && ".join(commands) or None


def main(argv: list[str] | None = None) -> int:
    """
    ``python -m rims_rl.zoo convert --trust-remote-code [--root DIR]``: convert old-format zoo agents (see
    :func:`convert_zoo`; without the flag an SB3 zip is refused).
    ``python -m rims_rl.zoo add RUN... [--drop-setting NAME] [--root DIR]``: add finished runs (see :func:`add_runs`).

    :param argv: arguments
    :return: exit code
    """
    parser = argparse.ArgumentParser(prog="python -m rims_rl.zoo")
    parser.add_argument("command", choices=["convert", "add"])
    parser.add_argument("runs", nargs="*", help="add: finished train.py run folders")
    parser.add_argument("--drop-setting", nargs="+", default=[], help="add: remove the agents of these settings first")
    parser.add_argument("--root", default=None, help="zoo folder (default: the repository's zoo/)")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="convert: unpickle SB3 zips (runs their code; trusted zoos only)"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "add":
            if not args.runs:
                parser.error("add: give one or more run folders")
            add_runs(args.runs, args.root, tuple(args.drop_setting))
        else:
            convert_zoo(args.root, trust_remote_code=args.trust_remote_code)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"rims_rl.zoo: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, ValueError) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
