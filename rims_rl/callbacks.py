"""Training callbacks: resumable checkpoints with Ctrl-C handling, evaluation that survives resume, RIMs diagnostics.

Each one subclasses an SB3 callback and overrides as little as possible.
"""

from __future__ import annotations

import os
import signal
import traceback
import warnings
import zipfile
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
from stable_baselines3.common.logger import Image
from stable_baselines3.common.vec_env import VecEnv

from rims_rl.checkpoint import (
    NonFiniteError,
    capture_resume_state,
    nonfinite_cause,
    restore_eval_env,
    save_model_atomic,
)
from rims_rl.envs.replay import attach_recorders


class TrainingInterrupted(Exception):
    """Raised at a rollout boundary after Ctrl-C, once the checkpoint is on disk."""

    def __init__(self, checkpoint: Path) -> None:
        super().__init__(f"training interrupted; checkpoint saved to {checkpoint}")
        self.checkpoint = checkpoint


def nonfinite_distribution(error: ValueError, model: Any) -> str | None:
    """
    Tell the error torch.distributions raises on non-finite action logits (an update that diverged part-way, or a
    non-finite observation) from other errors, without any check during training.

    :param error: raised by ``model.learn``
    :param model: the model being trained
    :return: the cause, for :class:`~rims_rl.checkpoint.NonFiniteError`; None for another error
    """
    message = str(error)
    if "to satisfy the constraint" not in message or "invalid values" not in message:
        return None
    in_update = any(frame.name == "train" for frame in traceback.extract_tb(error.__traceback__))
    where = "during an update (it diverged)" if in_update else "while collecting a rollout"
    cause = nonfinite_cause(model)
    return f"non-finite action logits {where}" + (f" ({cause})" if cause else "")


class ResumableCheckpointCallback(CheckpointCallback):
    """
    CheckpointCallback that saves complete resume checkpoints (model + optimizer + RNG + env state), atomically,
    at rollout boundaries only (the one point where nothing is half-collected), every ``save_freq`` timesteps.

    Ctrl-C (SIGINT, see :meth:`handle_sigint`) asks it to save at the next boundary and stop with
    :class:`TrainingInterrupted`; a second Ctrl-C stops at once (the previous checkpoint stays valid).

    At every rollout boundary the weights, optimizer state and recurrent states are checked: a non-finite one
    stops training with :class:`~rims_rl.checkpoint.NonFiniteError` (naming the step, the cause and the last good
    checkpoint) and no checkpoint is written for that step. With an evaluation callback registered
    (:meth:`track_evaluation`), its env's state is part of every checkpoint.

    :param save_freq: save every this many timesteps (all envs together); <= 0: only on Ctrl-C and at the end
    :param save_path: the run's ``checkpoints/`` folder
    :param verbose: 1 prints each save
    """

    def __init__(self, save_freq: int, save_path: str, verbose: int = 0) -> None:
        super().__init__(save_freq=max(save_freq, 1), save_path=save_path, name_prefix="rl_model", verbose=verbose)
        self.save_every = save_freq
        self.last_save_timesteps = 0
        self.stop_requested = False
        self.last_checkpoint: Path | None = None
        self.eval_env: VecEnv | None = None

    def track_evaluation(self, eval_env: VecEnv | None) -> None:
        """
        :param eval_env: the evaluation env whose state (RNGs, current episode) every checkpoint must include
        """
        self.eval_env = eval_env

    def _on_training_start(self) -> None:
        self.last_save_timesteps = self.num_timesteps

    def _on_step(self) -> bool:
        return True  # saving happens at rollout boundaries, see _on_rollout_start

    def _on_rollout_start(self) -> None:
        # Called after the previous rollout's gradient update: policy, optimizer, env and RNGs are consistent.
        self.check_finite()  # also at the first boundary (a resumed run's loaded state)
        if self.num_timesteps == self.last_save_timesteps:
            return
        due = self.save_every > 0 and self.num_timesteps - self.last_save_timesteps >= self.save_every
        if due or self.stop_requested:
            self.save_checkpoint()
        if self.stop_requested:
            assert self.last_checkpoint is not None
            raise TrainingInterrupted(self.last_checkpoint)

    def check_finite(self) -> None:
        """:raises NonFiniteError: a non-finite weight, optimizer tensor or recurrent state (names the last good one)."""
        cause = nonfinite_cause(self.model)
        if cause is not None:
            raise NonFiniteError(self.num_timesteps, cause, self.last_checkpoint)

    def save_checkpoint(self) -> Path:
        """
        :return: path of the checkpoint written for the current timestep (a rollout boundary)
        :raises NonFiniteError: nothing written, the model holds a non-finite tensor
        """
        self.check_finite()
        path = Path(self._checkpoint_path(extension="zip"))
        state = capture_resume_state(self.model, self.eval_env)
        self.last_checkpoint = save_model_atomic(self.model, path, state)
        self.last_save_timesteps = self.num_timesteps
        if self.verbose >= 1:
            print(f"Saving checkpoint to {path}")
        return self.last_checkpoint

    def handle_sigint(self, signum: int, frame: FrameType | None) -> None:
        """
        SIGINT handler: request a checkpoint and a clean stop; restore the default handler so a second Ctrl-C
        raises KeyboardInterrupt immediately.

        :param signum: signal number
        :param frame: current frame
        """
        self.stop_requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("\nCtrl-C: saving a checkpoint at the end of this rollout (Ctrl-C again to stop now)", flush=True)


class SaveBestModelCallback(BaseCallback):
    """
    Called by EvalCallback on a new best mean reward: saves ``best_model.zip`` atomically.

    :param save_path: the run folder
    """

    def __init__(self, save_path: str) -> None:
        super().__init__()
        self.save_path = save_path

    def _on_step(self) -> bool:
        save_model_atomic(self.model, os.path.join(self.save_path, "best_model.zip"))  # type: ignore[arg-type]
        return True


class ResumableEvalCallback(EvalCallback):
    """
    EvalCallback (same ``evaluations.npz`` format) that keeps the earlier evaluations of a resumed run and evaluates
    every ``eval_freq`` timesteps (not callback calls), so a resumed run evaluates at the same steps.

    ``evaluations.npz`` is written atomically (a temporary file, then ``os.replace``). On resume, evaluations after
    the checkpoint's step (written before a kill) are dropped, an unreadable file is set aside with a warning, and
    the evaluation env's state saved in the checkpoint is restored, so the resumed run evaluates on the same
    episodes with the same RNG draws as an uninterrupted one.

    :param eval_env: evaluation env (its envs get replay recorders, see :mod:`rims_rl.envs.replay`)
    :param eval_freq: evaluate every this many timesteps (all envs together)
    :param resume_state: the checkpoint's resume state when resuming (None: a fresh run)
    :param kwargs: passed to EvalCallback
    """

    def __init__(self, eval_env: VecEnv, eval_freq: int, resume_state: dict[str, Any] | None = None, **kwargs: Any) -> None:
        attach_recorders(eval_env)
        super().__init__(eval_env, eval_freq=max(eval_freq, 1), **kwargs)
        self.eval_every = eval_freq
        self.next_eval = eval_freq
        self.resume_state = resume_state

    def _init_callback(self) -> None:
        super()._init_callback()
        if self.resume_state is not None and not restore_eval_env(self.eval_env, self.resume_state):
            warnings.warn("the evaluation env state was not in the checkpoint: the resumed run is not bit-exact", stacklevel=2)
        self.resume_state = None
        if self.log_path is None:
            return
        npz = Path(f"{self.log_path}.npz")  # EvalCallback's log_path is ".../evaluations"; np.savez adds ".npz"
        if not npz.exists():
            return
        try:
            with np.load(npz) as previous:
                timesteps = previous["timesteps"].tolist()
                keep = [i for i, step in enumerate(timesteps) if step <= self.model.num_timesteps]
                self.evaluations_timesteps = [timesteps[i] for i in keep]
                self.evaluations_results = [previous["results"][i].tolist() for i in keep]
                self.evaluations_length = [previous["ep_lengths"][i].tolist() for i in keep]
                if "successes" in previous:
                    self.evaluations_successes = [previous["successes"][i].tolist() for i in keep]
        except (OSError, ValueError, KeyError, EOFError, IndexError, zipfile.BadZipFile) as error:
            aside = npz.with_name(npz.name + ".unreadable")
            os.replace(npz, aside)
            warnings.warn(f"{npz} is unreadable ({type(error).__name__}); moved to {aside.name}, earlier evaluations "
                          "are not in the new file", stacklevel=2)  # fmt: skip
            self.evaluations_timesteps, self.evaluations_results, self.evaluations_length = [], [], []
            return
        if self.evaluations_results:
            self.best_mean_reward = float(max(np.mean(r) for r in self.evaluations_results))

    def _on_training_start(self) -> None:
        self.next_eval = (self.num_timesteps // self.eval_every + 1) * self.eval_every if self.eval_every > 0 else 0

    def _on_step(self) -> bool:
        if self.eval_every <= 0 or self.num_timesteps < self.next_eval:
            return True
        self.next_eval = (self.num_timesteps // self.eval_every + 1) * self.eval_every
        self.n_calls = self.eval_freq  # make the parent's "n_calls % eval_freq == 0" test true exactly now
        if self.log_path is None:
            return super()._on_step()
        # the parent writes np.savez(log_path): point it at a temporary name, then move that file into place
        final = f"{self.log_path}.npz"
        self.log_path = os.path.join(os.path.dirname(final), f".evaluations.{os.getpid()}.tmp")
        try:
            result = super()._on_step()
        finally:
            tmp, self.log_path = f"{self.log_path}.npz", final[: -len(".npz")]
        if os.path.exists(tmp):
            with open(tmp, "rb") as file:
                os.fsync(file.fileno())
            os.replace(tmp, final)
        return result


def activation_heatmap(active: np.ndarray, cell_h: int = 12, max_width: int = 800) -> np.ndarray:
    """
    :param active: (T, n_units) bool, which units updated at each step
    :param cell_h: pixel height of one unit's row
    :param max_width: target width in pixels
    :return: (n_units * cell_h, T * cell_w, 3) uint8 image, units by time, active = bright (like the paper's Fig. 2)
    """
    steps = active.shape[0]
    cell_w = max(1, max_width // max(steps, 1))
    image = np.where(active.T, 235, 35).astype(np.uint8)  # (n_units, T)
    image = np.repeat(np.repeat(image, cell_h, axis=0), cell_w, axis=1)
    image[::cell_h, :] = 90  # thin separators between units
    return np.repeat(image[:, :, None], 3, axis=2)


def rollout_activations(model: Any, env: VecEnv, max_steps: int = 1000) -> np.ndarray:
    """
    Run one deterministic episode (first env of ``env``) carrying the recurrent state and record the active units.

    :param model: a RecurrentPPO model whose policy has a RIMs core
    :param env: a VecEnv (only env 0's episode is recorded)
    :param max_steps: stop after this many steps
    :return: (T, n_units) bool
    """
    obs = env.reset()
    state = None
    episode_starts = np.ones((env.num_envs,), dtype=bool)
    rows = []
    for _ in range(max_steps):
        action, state = model.predict(obs, state=state, episode_start=episode_starts, deterministic=True)
        rows.append(model.policy.lstm_actor.last_active[-1, 0].cpu().numpy().copy())
        obs, _, dones, _ = env.step(action)
        episode_starts = dones
        if dones[0]:
            break
    return np.stack(rows).astype(bool)


class RimsDiagnosticsCallback(BaseCallback):
    """
    TensorBoard diagnostics of the RIMs core (no-op for the LSTM core):

    - ``rims/unit_<k>_active_frac``: fraction of rollout steps (all envs) in which unit k updated;
    - ``rims/activation_heatmap``: units x time image over one evaluation episode, when called after an evaluation
      (pass it as EvalCallback's ``callback_after_eval``) or every rollout if ``heatmap_env`` is given and no
      evaluation runs.

    :param heatmap_env: env for the heatmap episode when used outside EvalCallback (None: use the parent's eval env)
    """

    def __init__(self, heatmap_env: VecEnv | None = None) -> None:
        super().__init__()
        self.heatmap_env = heatmap_env
        self.active_sum: np.ndarray | None = None
        self.count = 0

    def _is_rims(self) -> bool:
        return getattr(self.model.policy, "core_name", None) == "rims"

    def _on_step(self) -> bool:
        if not self._is_rims():
            return True
        if self.parent is not None:  # called by EvalCallback after an evaluation
            self.log_heatmap(self.parent.eval_env)  # type: ignore[attr-defined]
            return True
        active = getattr(self.model.policy.lstm_actor, "last_active", None)  # (1, n_envs, n_units) of this step
        if isinstance(active, th.Tensor):
            summed = active.reshape(-1, active.shape[-1]).float().sum(0).cpu().numpy()
            self.active_sum = summed if self.active_sum is None else self.active_sum + summed
            self.count += active.shape[0] * active.shape[1]
        return True

    def _on_rollout_end(self) -> None:
        if self.active_sum is None or self.count == 0:
            return
        for k, total in enumerate(self.active_sum):
            self.logger.record(f"rims/unit_{k}_active_frac", float(total / self.count))
        self.logger.record("rims/active_units_mean", float(self.active_sum.sum() / self.count))
        self.active_sum, self.count = None, 0

    def log_heatmap(self, env: VecEnv) -> None:
        """
        :param env: env to run one deterministic episode on
        """
        active = rollout_activations(self.model, env)
        self.logger.record(
            "rims/activation_heatmap", Image(activation_heatmap(active), "HWC"), exclude=("stdout", "log", "json", "csv")
        )
        self.logger.dump(self.num_timesteps)
