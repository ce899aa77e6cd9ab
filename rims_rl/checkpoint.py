"""Atomic checkpoints and exact resume for RecurrentPPO.

A checkpoint is an ordinary SB3 model zip (``RecurrentPPO.load`` reads it) with one extra entry,
``rims_rl_resume.pkl``, holding what SB3 does not save: the recurrent states of the last rollout step, the RNG
states (python, numpy, torch) and the training VecEnv's state (the env objects with their own RNGs, frame stacks,
VecNormalize statistics). Checkpoints are taken at rollout boundaries, where this is the whole training state.

The resume entry is a (cloud)pickle: only load checkpoints you trust, as with any SB3 zip.
"""

from __future__ import annotations

import io
import os
import random
import re
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import cloudpickle
import numpy as np
import torch as th
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper

RESUME_ENTRY = "rims_rl_resume.pkl"
CHECKPOINT_RE = re.compile(r"^rl_model_(\d+)_steps\.zip$")


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """
    Write a file atomically: a temporary file in the same folder, flushed and fsynced, then ``os.replace``.
    A crash (even ``kill -9``) leaves either the old file or the new one under ``path``, never a partial one.

    :param path: final file name
    :return: context manager yielding a binary file object
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def save_model_atomic(model: RecurrentPPO, path: str | os.PathLike[str], resume_state: dict[str, Any] | None = None) -> Path:
    """
    Save ``model`` as an SB3 zip, atomically, optionally with the resume state inside.

    :param model: the model
    :param path: final file name (``.zip`` appended if missing)
    :param resume_state: output of :func:`capture_resume_state`, or None for a plain model file
    :return: the path written
    """
    path = Path(path)
    if path.suffix != ".zip":
        path = path.with_name(path.name + ".zip")
    buffer = io.BytesIO()
    model.save(buffer)
    if resume_state is not None:
        with zipfile.ZipFile(buffer, mode="a") as archive:
            archive.writestr(RESUME_ENTRY, cloudpickle.dumps(resume_state))
    with atomic_write(path) as file:
        file.write(buffer.getvalue())
    return path


def _env_layers(venv: VecEnv) -> list[VecEnv]:
    """:return: the VecEnv wrapper chain, outermost first, ending with the base VecEnv."""
    layers = [venv]
    while isinstance(layers[-1], VecEnvWrapper):
        layers.append(layers[-1].venv)
    return layers


def get_env_state(venv: VecEnv) -> bytes | None:
    """
    :param venv: the training VecEnv (any VecEnvWrapper chain over a DummyVecEnv)
    :return: the pickled state of every layer (env objects included), or None where it cannot be captured
        (SubprocVecEnv, unpicklable envs) — resume is then not exact and says so
    """
    layers = _env_layers(venv)
    if not isinstance(layers[-1], DummyVecEnv):
        return None
    skip = ("venv", "class_attributes")
    states = [{key: value for key, value in vars(layer).items() if key not in skip} for layer in layers]
    try:
        return cloudpickle.dumps(states)
    except Exception as error:  # e.g. an emulator handle that cannot be pickled
        message = f"training env state not saved ({type(error).__name__}: {error}); resume will not be exact"
        warnings.warn(message, stacklevel=2)
        return None


def set_env_state(venv: VecEnv, state: bytes) -> None:
    """
    :param venv: a freshly built VecEnv with the same wrapper chain as the saved one
    :param state: output of :func:`get_env_state`
    """
    layers = _env_layers(venv)
    states = cloudpickle.loads(state)
    if len(states) != len(layers):
        raise ValueError(f"saved env has {len(states)} wrapper layers, the new one has {len(layers)}")
    base = layers[-1]
    assert isinstance(base, DummyVecEnv)
    for env in base.envs:
        env.close()
    for layer, layer_state in zip(layers, states, strict=True):
        layer.__dict__.update(layer_state)


def capture_resume_state(model: RecurrentPPO) -> dict[str, Any]:
    """
    Everything needed to continue training exactly that ``model.save`` leaves out. Call at a rollout boundary.

    :param model: the model being trained
    :return: a picklable mapping
    """
    assert model.env is not None
    return {
        "last_lstm_states": model._last_lstm_states,
        "python_rng": random.getstate(),
        "numpy_rng": np.random.get_state(),
        "torch_rng": th.get_rng_state(),
        "cuda_rng": th.cuda.get_rng_state_all() if th.cuda.is_available() else None,
        "action_space_rng": model.action_space.np_random.bit_generator.state,
        "env_state": get_env_state(model.env),
    }


def read_resume_state(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """
    :param path: a checkpoint zip
    :return: its resume state, or None for a plain model file
    """
    with zipfile.ZipFile(path) as archive:
        if RESUME_ENTRY not in archive.namelist():
            return None
        return cloudpickle.loads(archive.read(RESUME_ENTRY))


def restore_resume_state(model: RecurrentPPO, state: dict[str, Any]) -> bool:
    """
    Put the saved recurrent states, env state and RNG states back (after ``RecurrentPPO.load(..., force_reset=False)``).

    :param model: the loaded model, attached to a freshly built training env
    :param state: output of :func:`capture_resume_state`
    :return: whether the env state was restored (False: resume is not bit-exact)
    """
    assert model.env is not None
    model._last_lstm_states = state["last_lstm_states"]
    env_restored = False
    if state.get("env_state") is not None:
        set_env_state(model.env, state["env_state"])
        env_restored = True
    random.setstate(state["python_rng"])
    np.random.set_state(state["numpy_rng"])
    th.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and th.cuda.is_available():
        th.cuda.set_rng_state_all(state["cuda_rng"])
    model.action_space.np_random.bit_generator.state = state["action_space_rng"]
    return env_restored


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


def latest_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    """
    :param folder: a run's ``checkpoints/`` folder
    :return: the newest checkpoint that opens as a valid zip with a resume state, or None
    """
    for _, path in reversed(list_checkpoints(folder)):
        try:
            with zipfile.ZipFile(path) as archive:
                if RESUME_ENTRY in archive.namelist() and archive.testzip() is None:
                    return path
        except (zipfile.BadZipFile, OSError):
            warnings.warn(f"skipping unreadable checkpoint {path}", stacklevel=2)
    return None
