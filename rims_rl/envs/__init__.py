"""rims_rl environments: gridworld novel-obstacle pick-up, Atari factory / flavours / game transfer, settings.

Importing this package registers the gymnasium ids:

- ``MiniGrid-RimsPickup-<Split>-v1`` for every split of :data:`PICKUP_V1_SPLITS` (``Train``, ``Known``,
  ``MoreDistractors``, ``NovelDistractors``, ``NovelKinds``, ``NovelColours``, ``LargerRoom``; setting
  ``gridworld-pickup``) and the first version's ``-Train-v0``, ``-Known-v0``, ``-NovelObstacles-v0``,
  ``-NovelLayout-v0`` (setting ``gridworld-pickup-v0``); observation ``Box(0, 10, (7, 7, 5), uint8)``,
  see :class:`TargetImageObs`;
- ``RimsCueRecall-v0`` (the memory task of :mod:`rims_rl.envs.memory`);
- ``RimsMinAtar/<Game>-v0`` for the five MinAtar games (when the ``minatar`` package is installed; see
  :mod:`rims_rl.envs.minatar`).
"""

from __future__ import annotations

import importlib.util

import gymnasium as gym

from typing import TYPE_CHECKING, Any

import ale_py

from rims_rl.envs.gridworld import (
    NOVEL_OBJECTS,
    NOVEL_OBSTACLES,
    PICKUP_SPLITS,
    PICKUP_V1_SPLITS,
    TRAIN_OBJECTS,
    TRAIN_OBSTACLES,
    RimsPickupEnv,
    TargetImageObs,
    make_pickup_env,
)
from rims_rl.envs.minatar import MINATAR_GAMES, MinAtarEnv, minatar_id, register_minatar
from rims_rl._lazy import lazy_attribute
from rims_rl.envs.settings import DEFAULT_SETTING, EnvEntry, Setting, list_settings, load_setting

gym.register_envs(ale_py)  # the ALE ids; the Atari factory itself (SB3, torch) is imported on first use

if TYPE_CHECKING:
    from rims_rl.envs.atari import (
        TRANSFER_SOURCES,
        TRANSFER_TARGETS,
        atari_games,
        atari_settings,
        check_no_frameskip,
        check_transfer_compatible,
        game_flavours,
        make_atari_env,
        transfer_pairs,
        wrap_atari,
    )
    from rims_rl.envs.vec import UnknownEnvError, make_env, make_eval_vec_env, make_vec_env, resolve

#: Names served on first use from modules that import SB3 and torch (a CLI's --help does not need them).
_LAZY = {
    **dict.fromkeys(
        ["TRANSFER_SOURCES", "TRANSFER_TARGETS", "atari_games", "atari_settings", "check_no_frameskip",
         "check_transfer_compatible", "game_flavours", "make_atari_env", "transfer_pairs", "wrap_atari"],
        "rims_rl.envs.atari",
    ),
    **dict.fromkeys(["UnknownEnvError", "make_env", "make_eval_vec_env", "make_vec_env", "resolve"], "rims_rl.envs.vec"),
}  # fmt: skip


def __getattr__(name: str) -> Any:
    """Import the Atari factory and the vec-env builders on first use (PEP 562)."""
    return lazy_attribute(globals(), _LAZY, __name__, name)


def _pickup_id(split: str, version: int) -> str:
    return "MiniGrid-RimsPickup-" + "".join(part.capitalize() for part in split.split("-")) + f"-v{version}"


#: Registered gridworld ids of the default setting ``gridworld-pickup`` (v1), by split.
PICKUP_IDS: dict[str, str] = {split: _pickup_id(split, 1) for split in PICKUP_V1_SPLITS}
#: Registered ids of the first version (setting ``gridworld-pickup-v0``; the zoo's first agents were trained on it).
PICKUP_IDS_V0: dict[str, str] = {split: _pickup_id(split, 0) for split in PICKUP_SPLITS}
CUE_RECALL_ID = "RimsCueRecall-v0"


def _register() -> list[str]:
    ids = []
    for version, pickup_ids in ((0, PICKUP_IDS_V0), (1, PICKUP_IDS)):
        for split, env_id in pickup_ids.items():
            if env_id not in gym.registry:
                kwargs = {"split": split, "version": version}
                gym.register(id=env_id, entry_point="rims_rl.envs.gridworld:make_pickup_env", kwargs=kwargs)
            ids.append(env_id)
    if importlib.util.find_spec("rims_rl.envs.memory") is not None:
        from rims_rl.envs import memory as memory  # the lead's memory task

        if CUE_RECALL_ID not in gym.registry:
            gym.register(id=CUE_RECALL_ID, entry_point="rims_rl.envs.memory:CueRecallEnv")
        ids.append(CUE_RECALL_ID)
    ids.extend(register_minatar())
    return ids


#: Every gymnasium id this package registers.
REGISTERED_IDS: list[str] = _register()

__all__ = [
    "CUE_RECALL_ID",
    "DEFAULT_SETTING",
    "MINATAR_GAMES",
    "NOVEL_OBJECTS",
    "NOVEL_OBSTACLES",
    "PICKUP_IDS",
    "PICKUP_IDS_V0",
    "PICKUP_SPLITS",
    "PICKUP_V1_SPLITS",
    "REGISTERED_IDS",
    "TRAIN_OBJECTS",
    "TRAIN_OBSTACLES",
    "TRANSFER_SOURCES",
    "TRANSFER_TARGETS",
    "EnvEntry",
    "MinAtarEnv",
    "RimsPickupEnv",
    "Setting",
    "TargetImageObs",
    "UnknownEnvError",
    "atari_games",
    "atari_settings",
    "check_no_frameskip",
    "check_transfer_compatible",
    "game_flavours",
    "list_settings",
    "load_setting",
    "make_atari_env",
    "make_env",
    "make_eval_vec_env",
    "make_pickup_env",
    "make_vec_env",
    "minatar_id",
    "resolve",
    "transfer_pairs",
    "wrap_atari",
]
