"""Atomic checkpoints and exact resume for RecurrentPPO, in a format that cannot run code.

A checkpoint is a safe-format model file (:mod:`rims_rl.safe_io`: JSON + safetensors in a zip, never unpickled)
whose ``extra`` values hold the resume state, i.e. what the model's own attributes leave out: the recurrent
states of the last rollout step, the RNG states (python, numpy, torch, the action space's), the training VecEnv's
state and the evaluation VecEnv's state (:mod:`rims_rl.envs.replay`: replay of the current episode from its
recorded RNG state, plus the VecEnv layers' arrays). Checkpoints are taken at rollout boundaries, where this is the
whole training state. A checkpoint with a non-finite tensor is never written (:class:`NonFiniteError`).
"""

from __future__ import annotations

import math
import os
import random
import re
import secrets
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch as th
from stable_baselines3.common.vec_env import VecEnv

from rims_rl import safe_io
from rims_rl.envs.replay import NotCapturable, get_venv_state, make_generator, set_venv_state

CHECKPOINT_RE = re.compile(r"^rl_model_(\d+)_steps\.zip$")
TMP_RE = re.compile(r"^\..+\.tmp(\.npz)?$")


def create_temp_file(folder: str | os.PathLike[str], prefix: str, suffix: str) -> tuple[int, str]:
    """
    Create a new file with a random name, as ``tempfile.mkstemp`` does, but with the mode ``open`` gives a new file
    (0o666 less the umask) instead of 0o600: a file renamed into place then has the same mode as any other result
    (on a shared machine, readable by others exactly when the umask allows it).

    :param folder: where
    :param prefix: name prefix
    :param suffix: name suffix
    :return: (open file descriptor for writing, path)
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        name = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            return os.open(name, flags, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name in {folder}")


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """
    Write a file atomically: a temporary file in the same folder, flushed and fsynced, then ``os.replace``.
    A crash (even ``kill -9``) leaves either the old file or the new one under ``path``, never a partial one.
    The file gets the mode the umask gives new files (:func:`create_temp_file`).

    :param path: final file name
    :return: context manager yielding a binary file object
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = create_temp_file(path.parent, f".{path.name}.", ".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with _ignore_os_error():
            os.unlink(tmp_name)
        raise
    # make the rename itself durable
    with _ignore_os_error():
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextmanager
def _ignore_os_error() -> Iterator[None]:
    try:
        yield
    except OSError:
        pass


class NonFiniteError(RuntimeError):
    """
    Training produced a non-finite value: no checkpoint is written for this step.

    :param step: the timestep
    :param cause: e.g. "non-finite loss"
    :param last_good: the newest complete checkpoint, if any
    """

    def __init__(self, step: int, cause: str, last_good: Path | None) -> None:
        where = f"last good checkpoint: {last_good}" if last_good is not None else "no good checkpoint yet"
        super().__init__(f"training stopped at step {step}: {cause}; no checkpoint written for it ({where})")
        self.step, self.cause, self.last_good = step, cause, last_good


def nonfinite_cause(model: Any) -> str | None:
    """
    :param model: a RecurrentPPO between two rollouts
    :return: None if every weight, optimizer tensor and recurrent state is finite, else the cause: non-finite
        loss (the last update's logged loss), gradients (Adam's moment estimates), weights or recurrent state
    """
    weights = [
        name for name, p in model.policy.state_dict().items() if p.is_floating_point() and not bool(th.isfinite(p).all())
    ]
    optimizer_ok = safe_io.all_finite(model.policy.optimizer.state_dict()["state"])
    states_ok = safe_io.all_finite(getattr(model, "_last_lstm_states", None))
    if not weights and optimizer_ok and states_ok:
        return None
    logged = getattr(getattr(model, "_logger", None), "name_to_value", {})
    losses = {key: value for key, value in logged.items() if key.startswith("train/") and "loss" in key}
    bad_losses = sorted(key for key, value in losses.items() if not np.isfinite(value))
    if bad_losses:
        return f"non-finite loss ({', '.join(bad_losses)})"
    if not optimizer_ok:
        return "non-finite gradients (optimizer state)"
    if weights:
        return f"non-finite weights ({', '.join(weights[:3])}{', ...' if len(weights) > 3 else ''})"
    return "non-finite recurrent state"


def save_model_atomic(model: Any, path: str | os.PathLike[str], resume_state: dict[str, Any] | None = None) -> Path:
    """
    Save ``model`` in the safe format, atomically, optionally with the resume state inside.

    :param model: the model
    :param path: final file name (``.zip`` appended if missing)
    :param resume_state: output of :func:`capture_resume_state`, or None for a plain model file
    :return: the path written
    :raises NonFiniteError: a non-finite tensor (nothing is written)
    """
    cause = nonfinite_cause(model)
    if cause is not None:
        raise NonFiniteError(model.num_timesteps, cause, None)
    return safe_io.save_model(model, path, None if resume_state is None else {"resume": resume_state})


def _venv_state(venv: VecEnv | None, what: str) -> list[dict[str, Any]] | None:
    if venv is None:
        return None
    try:
        return get_venv_state(venv)
    except NotCapturable as error:
        _warn_once(f"{what} state not saved ({error}); resume will not be exact")
        return None


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, stacklevel=3)


def _axes_by_stride(obs: Any) -> Any:
    """The memory order of the last observation (VecTransposeImage hands out transposed views): axes, outermost first."""
    if isinstance(obs, dict):
        return {key: _axes_by_stride(value) for key, value in obs.items()}
    if not isinstance(obs, np.ndarray):
        return None
    return [int(axis) for axis in np.argsort([-stride for stride in obs.strides], kind="stable")]


def _with_axes(obs: Any, axes: Any) -> Any:
    """
    Lay the loaded last observation out in memory as the live one was. Values are unchanged, but a convolution
    over a transposed view rounds differently from one over a contiguous array (a last-bit difference that
    grows over an update), so exact resume needs the same layout.
    """
    if isinstance(obs, dict) and isinstance(axes, dict):
        return {key: _with_axes(value, axes.get(key)) for key, value in obs.items()}
    if not isinstance(obs, np.ndarray) or axes is None or sorted(axes) != list(range(obs.ndim)):
        return obs
    return np.ascontiguousarray(obs.transpose(axes)).transpose(np.argsort(axes))


def capture_resume_state(model: Any, eval_env: VecEnv | None = None) -> dict[str, Any]:
    """
    Everything needed to continue training exactly that the model's attributes leave out. Call at a rollout
    boundary.

    :param model: the model being trained
    :param eval_env: the evaluation VecEnv, if evaluation is on
    :return: a mapping of JSON-able values, arrays and tensors
    """
    assert model.env is not None
    return {
        "last_lstm_states": model._last_lstm_states,
        "python_rng": random.getstate(),
        "numpy_rng": np.random.get_state(),
        "torch_rng": th.get_rng_state(),
        "cuda_rng": th.cuda.get_rng_state_all() if th.cuda.is_available() else None,
        "action_space_rng": dict(model.action_space.np_random.bit_generator.state),
        "last_obs_axes": _axes_by_stride(model._last_obs),
        "env_state": _venv_state(model.env, "training env"),
        "eval_env_state": _venv_state(eval_env, "evaluation env"),
        "has_eval_env": eval_env is not None,
    }


def read_resume_state(path: str | os.PathLike[str] | bytes) -> dict[str, Any] | None:
    """
    :param path: a checkpoint (path or bytes)
    :return: its resume state, or None for a plain model file
    """
    extra = safe_io.read_extra(path)
    if extra is None or not isinstance(extra.get("resume"), dict):
        return None
    return extra["resume"]


def restore_resume_state(model: Any, state: dict[str, Any]) -> bool:
    """
    Put the saved recurrent states, env state and RNG states back (after loading with ``force_reset=False``).
    The env is replayed first, so nothing it draws from the global RNGs disturbs them.

    :param model: the loaded model, attached to a freshly built training env
    :param state: output of :func:`capture_resume_state`
    :return: whether the env state was restored (False: resume is not bit-exact)
    """
    assert model.env is not None
    model._last_lstm_states = state["last_lstm_states"]
    model._last_obs = _with_axes(model._last_obs, state.get("last_obs_axes"))
    env_restored = False
    if state.get("env_state") is not None:
        set_venv_state(model.env, state["env_state"])
        env_restored = True
    python_rng = state["python_rng"]
    random.setstate((int(python_rng[0]), tuple(int(x) for x in python_rng[1]), python_rng[2]))
    np.random.set_state(tuple(state["numpy_rng"]))  # type: ignore[arg-type]
    th.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and th.cuda.is_available():
        th.cuda.set_rng_state_all(state["cuda_rng"])
    model.action_space._np_random = make_generator(state["action_space_rng"])
    return env_restored


def restore_eval_env(eval_env: VecEnv, state: dict[str, Any] | None) -> bool:
    """
    :param eval_env: the freshly built evaluation VecEnv
    :param state: the resume state (None: a fresh run)
    :return: whether its state was restored
    """
    if state is None or state.get("eval_env_state") is None:
        return False
    set_venv_state(eval_env, state["eval_env_state"])
    return True


def resume_model(path: str | os.PathLike[str], env: VecEnv, device: str = "auto", **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """
    Load a checkpoint for exact resume: the model attached to ``env`` (rebuilt as for training), the training
    env's and the global RNGs' states restored.

    :param path: the checkpoint
    :param env: the freshly built training VecEnv
    :param device: torch device
    :param kwargs: attributes to set on the model (e.g. ``tensorboard_log``)
    :return: (model, resume state; pass it to :func:`restore_eval_env` once the evaluation env is built)
    :raises safe_io.UnsafeCheckpointError: not a safe-format checkpoint with a resume state
    """
    payload = Path(path).read_bytes()
    state = read_resume_state(payload)
    if state is None:
        raise safe_io.UnsafeCheckpointError(f"{path} has no resume state (a final or best model, not a checkpoint)")
    model = safe_io.load_model(payload, env=env, device=device, force_reset=False, **kwargs)
    if not restore_resume_state(model, state):
        warnings.warn("the training env state could not be restored: the resumed run is not bit-exact", stacklevel=2)
    return model, state


def remove_tmp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """
    Remove the temporary files an interrupted atomic write left behind (``.<name>.<random>.tmp``).

    :param folder: a run folder (its ``checkpoints/`` is cleaned too)
    :return: the files removed
    """
    removed = []
    for sub in (Path(folder), Path(folder) / "checkpoints"):
        if sub.is_dir():
            for path in sub.iterdir():
                if path.is_file() and TMP_RE.match(path.name):
                    with _ignore_os_error():
                        path.unlink()
                        removed.append(path)
    return removed


def list_checkpoints(folder: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """
    :param folder: a run's ``checkpoints/`` folder
    :return: (timesteps, path) of every complete checkpoint, oldest first (temporary files are ignored)
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = CHECKPOINT_RE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def checkpoint_problem(path: str | os.PathLike[str]) -> str | None:
    """
    :param path: a checkpoint file
    :return: why training cannot resume from it (unreadable, no resume state, non-finite weights or optimizer
        state, non-finite recurrent state), one line; None if it can
    """
    try:
        meta, decoder = safe_io.read_container(path)
        extra = decoder.decode(meta["extra"]) if "extra" in meta else None
        params = decoder.decode(meta.get("params"))
    except (zipfile.BadZipFile, OSError, safe_io.UnsafeCheckpointError, KeyError, ValueError, TypeError,
            RecursionError) as error:  # fmt: skip
        why = "an SB3 zip (pickled), not a rims_rl safe checkpoint" if str(error) == safe_io.TRUST_HINT else str(error)
        return f"unreadable ({(why.splitlines() or [type(error).__name__])[0][:120]})"
    if not isinstance(extra, dict) or not isinstance(extra.get("resume"), dict):
        return "no resume state"
    if not safe_io.all_finite(params):
        return "non-finite weights or optimizer state"
    if not safe_io.all_finite(extra["resume"].get("last_lstm_states")):
        return "non-finite recurrent state"
    return None


def latest_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    """
    :param folder: a run's ``checkpoints/`` folder
    :return: the newest checkpoint that :func:`checkpoint_problem` finds nothing wrong with, or None
    """
    for _, path in reversed(list_checkpoints(folder)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        warnings.warn(f"skipping {path}: {problem}", stacklevel=2)
    return None


def save_vecnormalize(venv: Any, path: str | os.PathLike[str]) -> Path:
    """
    Save VecNormalize statistics as one safetensors file (arrays; settings and counts in its JSON metadata).

    :param venv: a VecNormalize
    :param path: the file (``vecnormalize.safetensors`` in a run folder)
    :return: the path written
    """
    import json

    from safetensors.numpy import save as save_arrays

    arrays: dict[str, np.ndarray] = {}
    counts: dict[str, float] = {}

    def put(prefix: str, rms: Any) -> None:
        if isinstance(rms, dict):
            for key, value in rms.items():
                put(f"{prefix}.{key}", value)
            return
        arrays[f"{prefix}.mean"] = np.ascontiguousarray(rms.mean, dtype=np.float64)
        arrays[f"{prefix}.var"] = np.ascontiguousarray(rms.var, dtype=np.float64)
        counts[prefix] = float(rms.count)

    if venv.norm_obs:
        put("obs_rms", venv.obs_rms)
    put("ret_rms", venv.ret_rms)
    settings = {
        name: getattr(venv, name) for name in ("norm_obs", "norm_reward", "clip_obs", "clip_reward", "gamma", "epsilon")
    }
    settings["norm_obs_keys"] = getattr(venv, "norm_obs_keys", None)
    metadata = {
        "rims_rl": json.dumps({"format": "rims_rl.vecnormalize", "version": 1, "settings": settings, "counts": counts})
    }
    path = Path(path)
    with atomic_write(path) as file:
        file.write(save_arrays(arrays, metadata=metadata))
    return path


#: the VecNormalize settings a statistics file holds, and the types each must have (nothing else is set from a file)
VECNORMALIZE_SETTINGS: dict[str, tuple[type, ...]] = {
    "norm_obs": (bool,),
    "norm_reward": (bool,),
    "clip_obs": (int, float),
    "clip_reward": (int, float),
    "gamma": (int, float),
    "epsilon": (int, float),
}


def _vecnormalize_settings(meta: dict[str, Any], path: Any) -> dict[str, Any]:
    """:return: the file's settings, each a known VecNormalize attribute of the right type (bool or finite number)."""
    settings = meta.get("settings")
    if not isinstance(settings, dict):
        raise safe_io.UnsafeCheckpointError(f"{path}: malformed VecNormalize settings")
    unknown = sorted(set(settings) - set(VECNORMALIZE_SETTINGS) - {"norm_obs_keys"})
    if unknown:
        raise safe_io.UnsafeCheckpointError(f"{path}: unknown VecNormalize settings {unknown[:5]}")
    known = {}
    for name, types in VECNORMALIZE_SETTINGS.items():
        value = settings.get(name)
        number = types != (bool,)
        if number:
            fits = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        else:
            fits = isinstance(value, bool)
        if not fits:
            kind = "a finite number" if number else "true or false"
            raise safe_io.UnsafeCheckpointError(f"{path}: VecNormalize setting {name!r} must be {kind}, got {value!r:.40}")
        known[name] = value
    keys = settings.get("norm_obs_keys")
    if keys is not None and not (isinstance(keys, list) and all(isinstance(key, str) for key in keys)):
        raise safe_io.UnsafeCheckpointError(f"{path}: VecNormalize setting 'norm_obs_keys' must be a list of names")
    return known


def load_vecnormalize(path: str | os.PathLike[str], venv: Any) -> Any:
    """
    Put statistics saved by :func:`save_vecnormalize` into a VecNormalize (no unpickling). Only the settings in
    :data:`VECNORMALIZE_SETTINGS` are set, each checked for its type, and every statistic must be present with the
    shape the VecNormalize has; nothing is changed unless the whole file is valid.

    :param path: the file
    :param venv: a VecNormalize over the right env
    :return: ``venv``
    :raises safe_io.UnsafeCheckpointError: not such a file, or one whose content does not fit ``venv``
    """
    import json

    from safetensors import safe_open

    with safe_open(str(path), framework="np") as file:
        try:
            meta = json.loads((file.metadata() or {}).get("rims_rl", "{}"))
        except json.JSONDecodeError:
            meta = None
        if not isinstance(meta, dict) or meta.get("format") != "rims_rl.vecnormalize":
            raise safe_io.UnsafeCheckpointError(f"{path} is not a rims_rl VecNormalize file")
        arrays = {key: file.get_tensor(key) for key in file.keys()}  # safe_open has no __iter__
    settings = _vecnormalize_settings(meta, path)
    counts = meta.get("counts")
    if not isinstance(counts, dict):
        raise safe_io.UnsafeCheckpointError(f"{path}: malformed VecNormalize counts")
    if settings["norm_obs"] and getattr(venv, "obs_rms", None) is None:
        raise safe_io.UnsafeCheckpointError(f"{path} normalizes observations; this VecNormalize was built without")
    updates: list[tuple[Any, np.ndarray, np.ndarray, float]] = []

    def get(prefix: str, rms: Any) -> None:
        if isinstance(rms, dict):
            for key, value in rms.items():
                get(f"{prefix}.{key}", value)
            return
        mean, var, count = arrays.get(f"{prefix}.mean"), arrays.get(f"{prefix}.var"), counts.get(prefix)
        shape = np.shape(rms.mean)  # a 0-d statistic (the return's) is stored with shape (1,)
        if mean is None or var is None or mean.size != np.prod(shape) or var.size != np.prod(shape):
            raise safe_io.UnsafeCheckpointError(f"{path}: no {prefix} statistics of shape {shape}")
        if isinstance(count, bool) or not isinstance(count, int | float) or not math.isfinite(count) or count < 0:
            raise safe_io.UnsafeCheckpointError(f"{path}: malformed {prefix} count {count!r:.40}")
        updates.append((rms, mean.reshape(shape), var.reshape(shape), float(count)))

    if settings["norm_obs"]:
        get("obs_rms", venv.obs_rms)
    get("ret_rms", venv.ret_rms)
    for name, value in settings.items():
        setattr(venv, name, value)
    for rms, mean, var, count in updates:
        rms.mean, rms.var, rms.count = mean, var, count
    return venv
