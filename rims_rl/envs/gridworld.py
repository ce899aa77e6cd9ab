"""Gridworld pick-up with novel distractors (paper §4.2, App. D.6-7) on MiniGrid.

One room, a target object and distractor objects, seen through MiniGrid's partial 7x7 egocentric view. The agent
must pick up the target: success gives ``1 - 0.9 * steps / max_steps``; picking up anything else ends the episode
with 0.

Version 1 (the default setting ``gridworld-pickup``; ids ``MiniGrid-RimsPickup-<Split>-v1``, :data:`PICKUP_V1_SPLITS`):
the target and 2 known distractors are keys/balls in red, green or blue (:data:`TRAIN_OBJECTS`) in a 6x6 room;
layouts with the target in the first view are mostly rejected. Held-out splits change one factor each:

- ``known``: the training distribution, restricted to layouts that training can never produce;
- ``more-distractors``: 8 more known distractors;
- ``novel-distractors``: 8 more distractors of kinds/colours never seen in training (:data:`NOVEL_OBJECTS`);
- ``novel-kinds`` / ``novel-colours``: the same with only the novel kind (boxes) / only novel colours;
- ``larger-room``: an 8x8 room.

Version 0 (setting ``gridworld-pickup-v0``, ids ``-v0``, :data:`PICKUP_SPLITS`): a 4x4 room with 2 blocking
obstacles; held-out splits recolour the obstacles (``novel-obstacles``) or enlarge the room (``novel-layout``).

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

#: v1: the target and the known distractors are keys and balls in red, green or blue (6 kinds x colours).
TRAIN_OBJECTS: tuple[tuple[str, str], ...] = tuple((k, c) for k in ("key", "ball") for c in ("red", "green", "blue"))
#: v1: pick-up-able objects never seen in training: boxes (a novel kind, any colour) and keys/balls in novel colours.
NOVEL_OBJECTS: tuple[tuple[str, str], ...] = tuple(
    (k, c) for k in TARGET_TYPES for c in COLOR_NAMES if (k, c) not in TRAIN_OBJECTS
)
#: v1: novel kind only (boxes in the training colours) and novel colours only (keys/balls in unseen colours).
NOVEL_KIND_OBJECTS = tuple((k, c) for k, c in NOVEL_OBJECTS if k == "box" and ("key", c) in TRAIN_OBJECTS)
NOVEL_COLOUR_OBJECTS = tuple((k, c) for k, c in NOVEL_OBJECTS if k != "box")

_V1_BASE: dict[str, Any] = dict(
    size=8, n_obstacles=0, n_distractors=2, obstacles=TRAIN_OBSTACLES, objects=TRAIN_OBJECTS, first_view_keep=0.25
)
#: Number of distractors the v1 test splits add to the training's 2 (known or novel ones).
N_ADDED_DISTRACTORS = 8

#: Keyword arguments of :class:`RimsPickupEnv` for each v1 split (the default setting ``gridworld-pickup``).
#: Each held-out split changes one factor of ``train``.
PICKUP_V1_SPLITS: dict[str, dict[str, Any]] = {
    "train": dict(_V1_BASE, layout_split="train"),
    "known": dict(_V1_BASE, layout_split="heldout"),
    "more-distractors": dict(_V1_BASE, n_distractors=2 + N_ADDED_DISTRACTORS, layout_split="any"),
    "novel-distractors": dict(
        _V1_BASE, n_novel_distractors=N_ADDED_DISTRACTORS, novel_objects=NOVEL_OBJECTS, layout_split="any"
    ),
    "novel-kinds": dict(
        _V1_BASE, n_novel_distractors=N_ADDED_DISTRACTORS, novel_objects=NOVEL_KIND_OBJECTS, layout_split="any"
    ),
    "novel-colours": dict(
        _V1_BASE, n_novel_distractors=N_ADDED_DISTRACTORS, novel_objects=NOVEL_COLOUR_OBJECTS, layout_split="any"
    ),
    "larger-room": dict(_V1_BASE, size=10, layout_split="any"),
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
    :param objects: the (kind, colour) pairs the target and the ``n_distractors`` known distractors are drawn from;
        ``None`` (v0): any pick-up-able kind in any colour
    :param n_novel_distractors: number of further distractors drawn from ``novel_objects``
    :param novel_objects: (kind, colour) pairs of the novel distractors; disjoint from ``objects``
    :param first_view_keep: probability of keeping a generated layout whose target is in the agent's first view
        (1: no rejection; lower values make episodes that start with the target out of sight more common)
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
        objects: tuple[tuple[str, str], ...] | None = None,
        n_novel_distractors: int = 0,
        novel_objects: tuple[tuple[str, str], ...] = (),
        first_view_keep: float = 1.0,
        **kwargs: Any,
    ) -> None:
        if size < 5:
            raise ValueError(f"size must be >= 5 (got {size})")
        if layout_split not in ("train", "heldout", "any"):
            raise ValueError(f"layout_split must be 'train', 'heldout' or 'any' (got {layout_split!r})")
        free = (size - 2) ** 2 - 1 - (n_distractors + n_novel_distractors + 1)
        if not 0 <= n_obstacles <= free // 2:
            raise ValueError(f"n_obstacles must be in [0, {free // 2}] for size {size} (got {n_obstacles})")
        if n_distractors < 0 or n_novel_distractors < 0:
            raise ValueError(f"distractor counts must be >= 0 (got {n_distractors}, {n_novel_distractors})")
        for kind, colour in (*(objects or ()), *novel_objects):
            _make_object(kind, colour)  # validates
        if objects is not None and len(set(objects)) < 2:
            raise ValueError("objects needs at least two distinct (kind, colour) pairs (one target, distractors that differ)")
        if n_novel_distractors and not novel_objects:
            raise ValueError("novel_objects is empty but n_novel_distractors > 0")
        if not 0.0 < first_view_keep <= 1.0:
            raise ValueError(f"first_view_keep must be in (0, 1] (got {first_view_keep})")
        if set(novel_objects) & set(objects or ()):
            raise ValueError(f"novel_objects overlap objects: {sorted(set(novel_objects) & set(objects or ()))}")
        for kind, colour in obstacles:
            make_obstacle(kind, colour)  # validates
        if not obstacles and n_obstacles:
            raise ValueError("obstacles is empty but n_obstacles > 0")
        self.n_obstacles = n_obstacles
        self.n_distractors = n_distractors
        self.obstacles = tuple((str(k), str(c)) for k, c in obstacles)
        self.layout_split: LayoutSplit = layout_split
        self.objects = None if objects is None else tuple((str(k), str(c)) for k, c in objects)
        self.n_novel_distractors = n_novel_distractors
        self.novel_objects = tuple((str(k), str(c)) for k, c in novel_objects)
        self.first_view_keep = float(first_view_keep)
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
            if self.is_solvable() and self._in_layout_split() and self._keep_first_view():
                return
        raise RuntimeError(f"could not generate a solvable {self.layout_split!r} layout in {_MAX_TRIES} tries")

    def _gen_candidate(self, width: int, height: int) -> None:
        self.grid = Grid(width, height)
        self.grid.wall_rect(0, 0, width, height)
        for _ in range(self.n_obstacles):
            kind, colour = self.obstacles[self._rand_int(0, len(self.obstacles))]
            self.place_obj(make_obstacle(kind, colour))
        if self.objects is None:  # v0: any kind and colour, drawn kind first
            self.target_type = self._rand_elem(TARGET_TYPES)
            self.target_color = self._rand_elem(COLOR_NAMES)
        else:
            self.target_type, self.target_color = self.objects[self._rand_int(0, len(self.objects))]
        self.place_obj(_make_object(self.target_type, self.target_color))
        for _ in range(self.n_distractors):
            while True:
                if self.objects is None:
                    kind, colour = self._rand_elem(TARGET_TYPES), self._rand_elem(COLOR_NAMES)
                else:
                    kind, colour = self.objects[self._rand_int(0, len(self.objects))]
                if (kind, colour) != (self.target_type, self.target_color):
                    break
            self.place_obj(_make_object(kind, colour))
        for _ in range(self.n_novel_distractors):  # never equal to the target: novel_objects and objects are disjoint
            self.place_obj(_make_object(*self.novel_objects[self._rand_int(0, len(self.novel_objects))]))
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

    def _keep_first_view(self) -> bool:
        if self.first_view_keep >= 1.0 or not self.target_in_view(self.gen_obs()["image"]):
            return True
        return bool(self.np_random.random() < self.first_view_keep)

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

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """
        Start an episode (a new layout).

        :param seed: gymnasium seed
        :param options: unused
        :return: (obs, info); ``info["target_in_view"]``: whether the target is in the first egocentric view
        """
        obs, info = super().reset(seed=seed, options=options)
        info["target_in_view"] = self.target_in_view(obs["image"])
        return obs, info

    def target_in_view(self, image: np.ndarray) -> bool:
        """
        :param image: MiniGrid's egocentric symbolic view, ``(view, view, 3)``
        :return: whether a cell of the view shows the target (object and colour; no distractor has both)
        """
        match = (image[..., 0] == OBJECT_TO_IDX[self.target_type]) & (image[..., 1] == COLOR_TO_IDX[self.target_color])
        return bool(match.any())

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


def make_pickup_env(split: str = "train", version: int = 0, **kwargs: Any) -> gym.Env:
    """
    Entry point of the registered ``MiniGrid-RimsPickup-*`` ids: the split's env under :class:`TargetImageObs`.

    :param split: one of :data:`PICKUP_SPLITS` (version 0) or :data:`PICKUP_V1_SPLITS` (version 1)
    :param version: 0 (the ``-v0`` ids, setting ``gridworld-pickup-v0``) or 1 (``-v1``, setting ``gridworld-pickup``)
    :param kwargs: override the split's :class:`RimsPickupEnv` arguments (e.g. ``render_mode``)
    :return: the wrapped env
    """
    splits = {0: PICKUP_SPLITS, 1: PICKUP_V1_SPLITS}.get(version)
    if splits is None:
        raise ValueError(f"unknown pick-up version {version!r}; allowed: 0, 1")
    if split not in splits:
        raise ValueError(f"unknown pick-up v{version} split {split!r}; allowed: {', '.join(splits)}")
    return TargetImageObs(RimsPickupEnv(**{**splits[split], **kwargs}))


def first_view_fraction(env: gym.Env, n_episodes: int, seed: int = 0) -> float:
    """
    Fraction of episodes whose target is in the agent's first egocentric view.

    :param env: a pick-up env (any wrapper over :class:`RimsPickupEnv`), seeded here once with ``seed``
    :param n_episodes: number of resets
    :param seed: seed of the first reset
    :return: the fraction in [0, 1]
    """
    seen = 0
    for i in range(n_episodes):
        _, info = env.reset(seed=seed if i == 0 else None)
        seen += bool(info["target_in_view"])
    return seen / n_episodes
