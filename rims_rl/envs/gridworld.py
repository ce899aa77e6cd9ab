"""Gridworld novel-obstacle pick-up (paper §4.2, App. D.6-7) on MiniGrid.

One room with blocking obstacles, a target object and distractor objects. The agent must pick up the
target: success gives ``1 - 0.9 * steps / max_steps``; picking up anything else ends the episode with 0.

Splits (each a registered gymnasium id, see :data:`PICKUP_SPLITS`):

- ``train``: obstacles drawn from :data:`TRAIN_OBSTACLES`; layouts from the "train" half of layout space;
- ``known``: the same distribution, restricted to layouts that training can never produce;
- ``novel-obstacles``: obstacles drawn only from :data:`NOVEL_OBSTACLES` (kinds or colours never used in training);
- ``novel-layout``: known obstacle kinds, but more of them in a larger room.

The train / known split of layout space uses a stable hash of the generated episode (grid, agent pose,
target): one tenth of all layouts is reserved for ``known`` and is rejected by the ``train`` generator.
Every generated episode is checked by a breadth-first search and regenerated if the target cannot be reached.
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from minigrid.core.constants import COLOR_NAMES, COLOR_TO_IDX, OBJECT_TO_IDX, STATE_TO_IDX
from minigrid.core.grid import Grid
from minigrid.core.mission import MissionSpace
from minigrid.core.world_object import Ball, Box, Door, Key, Wall, WorldObj
from minigrid.minigrid_env import MiniGridEnv

LayoutSplit = Literal["train", "heldout", "any"]

#: Object kinds the agent may be asked to pick up (all pick-up-able MiniGrid objects).
TARGET_TYPES: tuple[str, ...] = ("key", "ball", "box")
#: Obstacles seen in training: (kind, colour). All obstacles block movement and cannot be picked up.
TRAIN_OBSTACLES: tuple[tuple[str, str], ...] = (("wall", "grey"), ("wall", "blue"), ("wall", "green"))
#: Obstacles never seen in training: walls of unseen colours and locked doors (a kind never seen at all).
NOVEL_OBSTACLES: tuple[tuple[str, str], ...] = (
    ("wall", "red"),
    ("wall", "purple"),
    ("wall", "yellow"),
    *(("door", colour) for colour in COLOR_NAMES),
)

#: Largest integer code in the symbolic view (MiniGrid's object index of the agent); the observation's ``high``.
OBS_HIGH = max(max(OBJECT_TO_IDX.values()), max(COLOR_TO_IDX.values()), max(STATE_TO_IDX.values()))

#: Keyword arguments of :class:`RimsPickupEnv` for each split; the registered ids are in ``rims_rl.envs``.
PICKUP_SPLITS: dict[str, dict[str, Any]] = {
    "train": dict(size=6, n_obstacles=2, obstacles=TRAIN_OBSTACLES, layout_split="train"),
    "known": dict(size=6, n_obstacles=2, obstacles=TRAIN_OBSTACLES, layout_split="heldout"),
    "novel-obstacles": dict(size=6, n_obstacles=2, obstacles=NOVEL_OBSTACLES, layout_split="any"),
    "novel-layout": dict(size=8, n_obstacles=6, obstacles=TRAIN_OBSTACLES, layout_split="any"),
}

#: Actions: MiniGrid's left, right, forward, pickup (drop, toggle and done are never useful here).
N_ACTIONS = 4

_HELDOUT_BUCKETS = 10  # one layout in this many is reserved for the held-out "known" split
_MAX_TRIES = 1000


def make_obstacle(kind: str, colour: str) -> WorldObj:
    """
    Build a blocking, non-pick-up-able MiniGrid object.

    :param kind: ``"wall"`` or ``"door"`` (a locked door: it cannot be opened, the agent never holds a key)
    :param colour: a MiniGrid colour name
    :return: the MiniGrid object
    """
    if colour not in COLOR_NAMES:
        raise ValueError(f"unknown obstacle colour {colour!r}; allowed: {', '.join(COLOR_NAMES)}")
    if kind == "wall":
        return Wall(colour)
    if kind == "door":
        return Door(colour, is_open=False, is_locked=True)
    raise ValueError(f"unknown obstacle kind {kind!r}; allowed: wall, door")


def _make_object(kind: str, colour: str) -> WorldObj:
    return {"key": Key, "ball": Ball, "box": Box}[kind](colour)


class RimsPickupEnv(MiniGridEnv):
    """
    Pick up the target object among distractors, in a room with obstacles.

    The target is named by :attr:`target_type` and :attr:`target_color` (and by the text mission);
    :class:`TargetImageObs` puts it into the observation.

    :param size: grid size including the outer walls (the room's interior is ``size - 2`` cells wide)
    :param n_obstacles: number of single-cell obstacles
    :param n_distractors: number of distractor objects (each differs from the target in kind or colour)
    :param obstacles: the (kind, colour) pairs obstacles are drawn from
    :param layout_split: ``"train"`` / ``"heldout"`` keep only layouts from that part of layout space, ``"any"`` keeps all
    :param max_steps: episode step limit (truncation); default ``2 * size**2``
    :param kwargs: passed to :class:`minigrid.minigrid_env.MiniGridEnv` (e.g. ``render_mode``)
    """

    def __init__(
        self,
        size: int = 6,
        n_obstacles: int = 2,
        n_distractors: int = 2,
        obstacles: tuple[tuple[str, str], ...] = TRAIN_OBSTACLES,
        layout_split: LayoutSplit = "any",
        max_steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        if size < 5:
            raise ValueError(f"size must be >= 5 (got {size})")
        if layout_split not in ("train", "heldout", "any"):
            raise ValueError(f"layout_split must be 'train', 'heldout' or 'any' (got {layout_split!r})")
        free = (size - 2) ** 2 - 1 - (n_distractors + 1)
        if not 0 <= n_obstacles <= free // 2:
            raise ValueError(f"n_obstacles must be in [0, {free // 2}] for size {size} (got {n_obstacles})")
        if n_distractors < 0:
            raise ValueError(f"n_distractors must be >= 0 (got {n_distractors})")
        for kind, colour in obstacles:
            make_obstacle(kind, colour)  # validates
        if not obstacles and n_obstacles:
            raise ValueError("obstacles is empty but n_obstacles > 0")
        self.n_obstacles = n_obstacles
        self.n_distractors = n_distractors
        self.obstacles = tuple((str(k), str(c)) for k, c in obstacles)
        self.layout_split: LayoutSplit = layout_split
        self.target_type = TARGET_TYPES[0]
        self.target_color = COLOR_NAMES[0]
        mission_space = MissionSpace(mission_func=self._gen_mission, ordered_placeholders=[COLOR_NAMES, list(TARGET_TYPES)])
        super().__init__(
            mission_space=mission_space,
            grid_size=size,
            max_steps=2 * size * size if max_steps is None else max_steps,
            see_through_walls=False,
            **kwargs,
        )
        # Only the actions the task needs: turn left, turn right, forward, pick up (MiniGrid's first four).
        self.action_space = spaces.Discrete(N_ACTIONS)

    @staticmethod
    def _gen_mission(color: str, obj_type: str) -> str:
        return f"pick up the {color} {obj_type}"

    def _gen_grid(self, width: int, height: int) -> None:
        for _ in range(_MAX_TRIES):
            self._gen_candidate(width, height)
            if self.is_solvable() and self._in_layout_split():
                return
        raise RuntimeError(f"could not generate a solvable {self.layout_split!r} layout in {_MAX_TRIES} tries")

    def _gen_candidate(self, width: int, height: int) -> None:
        self.grid = Grid(width, height)
        self.grid.wall_rect(0, 0, width, height)
        for _ in range(self.n_obstacles):
            kind, colour = self.obstacles[self._rand_int(0, len(self.obstacles))]
            self.place_obj(make_obstacle(kind, colour))
        self.target_type = self._rand_elem(TARGET_TYPES)
        self.target_color = self._rand_elem(COLOR_NAMES)
        self.place_obj(_make_object(self.target_type, self.target_color))
        for _ in range(self.n_distractors):
            while True:
                kind, colour = self._rand_elem(TARGET_TYPES), self._rand_elem(COLOR_NAMES)
                if (kind, colour) != (self.target_type, self.target_color):
                    break
            self.place_obj(_make_object(kind, colour))
        self.place_agent()
        self.mission = self._gen_mission(self.target_color, self.target_type)

    def layout_hash(self) -> str:
        """:return: a stable hex digest of the current episode's layout (grid, agent pose, target)."""
        h = hashlib.sha256(self.grid.encode().tobytes())
        h.update(
            repr((tuple(int(v) for v in self.agent_pos), int(self.agent_dir), self.target_type, self.target_color)).encode()
        )
        return h.hexdigest()

    def _in_layout_split(self) -> bool:
        if self.layout_split == "any":
            return True
        heldout = int(self.layout_hash()[:8], 16) % _HELDOUT_BUCKETS == 0
        return heldout == (self.layout_split == "heldout")

    def is_solvable(self) -> bool:
        """:return: whether a cell next to the target can be reached from the agent through empty cells (BFS)."""
        start = (int(self.agent_pos[0]), int(self.agent_pos[1]))
        seen = {start}
        queue = deque([start])
        while queue:
            x, y = queue.popleft()
            for nx, ny in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
                cell = self.grid.get(nx, ny)
                if cell is not None and cell.type == self.target_type and cell.color == self.target_color:
                    return True
                if cell is None and (nx, ny) not in seen:
                    seen.add((nx, ny))
                    queue.append((nx, ny))
        return False

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """
        Step MiniGrid; any pick-up ends the episode, rewarded only when it is the target.

        :param action: a MiniGrid action index
        :return: gymnasium's (obs, reward, terminated, truncated, info); info["success"] is set at a pick-up
        """
        obs, reward, terminated, truncated, info = super().step(action)
        if self.carrying is not None:
            success = self.carrying.type == self.target_type and self.carrying.color == self.target_color
            reward = float(self._reward()) if success else 0.0
            terminated = True
            info["success"] = success
        return obs, float(reward), terminated, truncated, info


class TargetImageObs(gym.ObservationWrapper):
    """
    MiniGrid observation as one small-integer image, with the target named in two constant planes.

    Output: ``Box(0, OBS_HIGH, (view, view, 5), uint8)``; channels 0-2 are MiniGrid's egocentric symbolic view
    (object index, colour index, state), channel 3 the target's object index, channel 4 its colour index.
    ``high`` is small (not 255), so SB3 does not treat it as an image. The text mission is not needed.

    :param env: a MiniGrid env whose unwrapped env has ``target_type`` / ``target_color``
        (or MiniGrid Fetch's ``targetType`` / ``targetColor``)
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        image_space = env.observation_space["image"]  # type: ignore[index]
        h, w, _ = image_space.shape
        self.observation_space = spaces.Box(low=0, high=OBS_HIGH, shape=(h, w, 5), dtype=np.uint8)

    def _target(self) -> tuple[int, int]:
        base = self.env.unwrapped
        kind = getattr(base, "target_type", None) or getattr(base, "targetType", None)
        colour = getattr(base, "target_color", None) or getattr(base, "targetColor", None)
        if kind is None or colour is None:
            raise ValueError(f"{type(base).__name__} has no target_type/target_color: TargetImageObs cannot name the target")
        return OBJECT_TO_IDX[kind], COLOR_TO_IDX[colour]

    def observation(self, observation: dict[str, Any]) -> np.ndarray:
        """
        :param observation: MiniGrid's dict observation
        :return: the ``(view, view, 5)`` uint8 image
        """
        image = np.asarray(observation["image"], dtype=np.uint8)
        kind, colour = self._target()
        planes = np.empty((*image.shape[:2], 2), dtype=np.uint8)
        planes[..., 0] = kind
        planes[..., 1] = colour
        return np.concatenate([image, planes], axis=-1)


def make_pickup_env(split: str = "train", **kwargs: Any) -> gym.Env:
    """
    Entry point of the registered ``MiniGrid-RimsPickup-*`` ids: the split's env under :class:`TargetImageObs`.

    :param split: one of :data:`PICKUP_SPLITS`
    :param kwargs: override the split's :class:`RimsPickupEnv` arguments (e.g. ``render_mode``)
    :return: the wrapped env
    """
    if split not in PICKUP_SPLITS:
        raise ValueError(f"unknown pick-up split {split!r}; allowed: {', '.join(PICKUP_SPLITS)}")
    return TargetImageObs(RimsPickupEnv(**{**PICKUP_SPLITS[split], **kwargs}))
