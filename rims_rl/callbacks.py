"""Training callbacks: resumable checkpoints with Ctrl-C handling, evaluation that survives resume, RIMs diagnostics.

Each one subclasses an SB3 callback and overrides as little as possible.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
from stable_baselines3.common.logger import Image
from stable_baselines3.common.vec_env import VecEnv

from rims_rl.checkpoint import capture_resume_state, save_model_atomic


class TrainingInterrupted(Exception):
    """Raised at a rollout boundary after Ctrl-C, once the checkpoint is on disk."""

    def __init__(self, checkpoint: Path) -> None:
        super().__init__(f"training interrupted; checkpoint saved to {checkpoint}")
        self.checkpoint = checkpoint


class ResumableCheckpointCallback(CheckpointCallback):
    """
    CheckpointCallback that saves complete resume checkpoints (model + optimizer + RNG + env state), atomically,
    at rollout boundaries only (the one point where nothing is half-collected), every ``save_freq`` timesteps.

    Ctrl-C (SIGINT, see :meth:`handle_sigint`) asks it to save at the next boundary and stop with
    :class:`TrainingInterrupted`; a second Ctrl-C stops at once (the previous checkpoint stays valid).

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

    def _on_training_start(self) -> None:
        self.last_save_timesteps = self.num_timesteps

    def _on_step(self) -> bool:
        return True  # saving happens at rollout boundaries, see _on_rollout_start

    def _on_rollout_start(self) -> None:
        # Called after the previous rollout's gradient update: policy, optimizer, env and RNGs are consistent.
        if self.num_timesteps == self.last_save_timesteps:
            return
        due = self.save_every > 0 and self.num_timesteps - self.last_save_timesteps >= self.save_every
        if due or self.stop_requested:
            self.save_checkpoint()
        if self.stop_requested:
            assert self.last_checkpoint is not None
            raise TrainingInterrupted(self.last_checkpoint)

    def save_checkpoint(self) -> Path:
        """:return: path of the checkpoint written for the current timestep (a rollout boundary)."""
        path = Path(self._checkpoint_path(extension="zip"))
        self.last_checkpoint = save_model_atomic(self.model, path, capture_resume_state(self.model))  # type: ignore[arg-type]
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

    :param eval_env: evaluation env
    :param eval_freq: evaluate every this many timesteps (all envs together)
    :param kwargs: passed to EvalCallback
    """

    def __init__(self, eval_env: VecEnv, eval_freq: int, **kwargs: Any) -> None:
        super().__init__(eval_env, eval_freq=max(eval_freq, 1), **kwargs)
        self.eval_every = eval_freq
        self.next_eval = eval_freq

    def _init_callback(self) -> None:
        super()._init_callback()
        npz = f"{self.log_path}.npz"  # EvalCallback's log_path is ".../evaluations"; np.savez adds ".npz"
        if self.log_path is not None and os.path.exists(npz):
            with np.load(npz) as previous:
                self.evaluations_timesteps = previous["timesteps"].tolist()
                self.evaluations_results = previous["results"].tolist()
                self.evaluations_length = previous["ep_lengths"].tolist()
                if "successes" in previous:
                    self.evaluations_successes = previous["successes"].tolist()
            if self.evaluations_results:
                self.best_mean_reward = float(max(np.mean(r) for r in self.evaluations_results))

    def _on_training_start(self) -> None:
        self.next_eval = (self.num_timesteps // self.eval_every + 1) * self.eval_every if self.eval_every > 0 else 0

    def _on_step(self) -> bool:
        if self.eval_every <= 0 or self.num_timesteps < self.next_eval:
            return True
        self.next_eval = (self.num_timesteps // self.eval_every + 1) * self.eval_every
        self.n_calls = self.eval_freq  # make the parent's "n_calls % eval_freq == 0" test true exactly now
        return super()._on_step()


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
