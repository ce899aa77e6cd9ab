"""Record one evaluation episode to MP4, with the RIMs' active units drawn beside the frame."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from rims_rl.evaluation.rollout import active_units
from rims_rl.evaluation.targets import EvalTarget


def unit_panel(history: list[np.ndarray], n_units: int, height: int, window: int = 48) -> np.ndarray:
    """Image of the active units over the last ``window`` steps: one row per unit, one column per step.

    :param history: per step, bool array (n_units,)
    :param n_units: number of units
    :param height: panel height in pixels (the frame's height)
    :param window: steps shown (newest on the right)
    :return: uint8 RGB image (height, width, 3)
    """
    grid = np.zeros((n_units, window), dtype=bool)
    recent = history[-window:]
    if recent:
        grid[:, window - len(recent) :] = np.stack(recent, axis=1)
    cell = max(1, height // max(1, n_units))
    img = np.repeat(np.repeat(grid, cell, axis=0), max(2, height // window), axis=1)  # panel about as wide as tall
    rgb = np.where(img[..., None], np.array([255, 200, 40], np.uint8), np.array([30, 30, 60], np.uint8))
    pad = height - rgb.shape[0]
    if pad > 0:
        rgb = np.concatenate([rgb, np.zeros((pad, rgb.shape[1], 3), np.uint8)], axis=0)
    return rgb[:height]


def _render(env: Any) -> np.ndarray:
    base = env.envs[0]
    frame = base.render()
    if frame is None:  # env created without render_mode: ask the underlying env for frames
        base.unwrapped.render_mode = "rgb_array"
        frame = base.render()
    if frame is None:
        raise ValueError("the evaluation env cannot render rgb_array frames, so no video can be recorded")
    return np.asarray(frame, dtype=np.uint8)


def record_video(
    model: Any,
    target: EvalTarget,
    path: str | Path,
    deterministic: bool = False,
    max_steps: int = 2000,
    fps: int = 15,
    seed: int | None = None,
) -> Path:
    """Play one episode (recurrent state carried) and write it to MP4, frames with the active-unit panel.

    :param model: loaded agent (the panel is drawn when its core is RIMs)
    :param target: evaluation env (its factory must build DummyVecEnv with rgb_array rendering)
    :param path: MP4 destination (written atomically)
    :param deterministic: greedy actions
    :param max_steps: stop after this many steps
    :param fps: frames per second
    :param seed: env seed (default: the target's first evaluation seed)
    :return: the path written
    """
    import imageio.v2 as imageio

    seed = target.seeds[0] if seed is None else seed
    try:
        env = target.make_env(n_envs=1, seed=seed, render_mode="rgb_array")
    except TypeError:
        env = target.make_env(n_envs=1, seed=seed)
    frames: list[Any] = []
    history: list[np.ndarray] = []
    try:
        obs = env.reset()
        state, start = None, np.ones(1, dtype=bool)
        for _ in range(max_steps):
            frame = _render(env)
            action, state = model.predict(obs, state=state, episode_start=start, deterministic=deterministic)
            active = active_units(model)
            if active is not None:
                history.append(active[0])
                frame = np.concatenate(
                    [frame, np.zeros((frame.shape[0], 8, 3), np.uint8), unit_panel(history, active.shape[-1], frame.shape[0])],
                    axis=1,
                )
            frames.append(frame)
            obs, _, done, _ = env.step(action)
            start = done
            if done[0]:
                break
    finally:
        env.close()
    # libx264 wants even sizes
    h, w = frames[0].shape[:2]
    frames = [np.pad(f, ((0, h % 2), (0, w % 2), (0, 0))) for f in frames]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from rims_rl.checkpoint import create_temp_file

    fd, tmp = create_temp_file(path.parent, f".{path.stem}.", ".mp4")  # the umask's mode, as every other result
    os.close(fd)
    try:
        imageio.mimsave(tmp, frames, fps=fps, macro_block_size=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
