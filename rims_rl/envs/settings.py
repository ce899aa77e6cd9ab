"""Settings as data: one YAML file per setting (top-level ``envs/*.yml``), read by one loader.

A setting names its training env(s), its held-out env(s) (ordered: split name -> env), fixed evaluation seeds
and the evaluation budget. The Atari flavour setting's held-out list is computed from ALE when it is loaded.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from rims_rl.resources import data_dir

#: Environment variable naming another settings directory (searched first).
SETTINGS_DIR_ENV = "RIMS_RL_SETTINGS_DIR"
#: The setting used when none is named.
DEFAULT_SETTING = "gridworld-pickup"
#: Seed distance between the evaluation seeds of consecutive splits (each split's episodes use seeds
#: ``eval_seed + i * EVAL_SEED_STRIDE + k``; training uses small seeds far below ``eval_seed``).
EVAL_SEED_STRIDE = 10_000


logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EnvEntry:
    """One env of a setting: a gymnasium id (or ALE game) and the kwargs to build it with."""

    id: str
    """gymnasium id, e.g. ``"MiniGrid-RimsPickup-Train-v0"`` or ``"ALE/Pong-v5"``"""
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    """extra constructor kwargs (Atari: ``mode``, ``difficulty``, ``full_action_space``, ``repeat_action_probability``)"""

    @property
    def is_atari(self) -> bool:
        """Whether the entry is an ALE game (built by :func:`rims_rl.envs.atari.make_atari_env`)."""
        from rims_rl.envs import atari  # deferred: it imports SB3 (and torch)

        return atari.is_atari_id(self.id)


@dataclasses.dataclass(frozen=True)
class Setting:
    """A generalization setting: where to train and where to evaluate."""

    name: str
    """setting name, e.g. ``"gridworld-pickup"``"""
    kind: str
    """one of ``gridworld``, ``atari-flavours``, ``atari-transfer``, ``gym``"""
    description: str
    """one line for humans"""
    train_envs: dict[str, EnvEntry]
    """training env(s), ordered; one for most settings, the source games for ``atari-transfer``"""
    heldout: dict[str, EnvEntry]
    """held-out env(s), ordered: split name -> env"""
    eval_seed: int
    """base evaluation seed; see :attr:`eval_seeds`"""
    n_eval_episodes: int
    """default number of evaluation episodes per split"""
    s_ref: float | None
    """reference score for the score ratio (max attainable return for gridworlds; None: per-game human score)"""
    frame_stack: int | None
    """frames stacked at the VecEnv level (None: none)"""
    source: str
    """the YAML file the setting was read from"""

    @property
    def train_env(self) -> EnvEntry:
        """The (first) training env."""
        return next(iter(self.train_envs.values()))

    @property
    def splits(self) -> list[str]:
        """``"train"`` followed by the held-out split names, in order."""
        return ["train", *self.heldout]

    @property
    def eval_seeds(self) -> dict[str, int]:
        """First evaluation seed of each split (``"train"`` first); consecutive splits are EVAL_SEED_STRIDE apart."""
        names = list(dict.fromkeys([*self.splits, *self.train_envs]))
        return {split: self.eval_seed + i * EVAL_SEED_STRIDE for i, split in enumerate(names)}

    def env(self, split: str) -> EnvEntry:
        """
        :param split: ``"train"``, a held-out split name, or (atari-transfer) a source game name
        :return: the split's env
        """
        if split == "train":
            return self.train_env
        if split in self.heldout:
            return self.heldout[split]
        if split in self.train_envs:
            return self.train_envs[split]
        allowed = list(dict.fromkeys([*self.splits, *self.train_envs]))
        raise ValueError(f"setting {self.name!r} has no split {split!r}; allowed: {', '.join(allowed)}")

    def to_dict(self) -> dict[str, Any]:
        """:return: the setting as YAML-safe plain data (for a run's saved config)."""
        out = dataclasses.asdict(self)
        out["eval_seeds"] = self.eval_seeds
        return out


def settings_dirs() -> list[Path]:
    """:return: the directories searched for ``*.yml`` settings, in order ($RIMS_RL_SETTINGS_DIR, then the packaged ones)."""
    dirs = []
    if os.environ.get(SETTINGS_DIR_ENV):
        dirs.append(Path(os.environ[SETTINGS_DIR_ENV]))
    dirs.append(data_dir("envs"))
    return [d for d in dirs if d.is_dir()]


class SettingsError(ValueError):
    """A settings problem that concerns the user's files (e.g. two files defining one name); one line."""


#: Keys every setting file may hold, by kind (beyond ``name``, ``kind``, ``description`` and the common ones).
_COMMON_KEYS = {"name", "kind", "description", "eval_seed", "n_eval_episodes", "s_ref", "frame_stack"}
_KIND_KEYS = {
    "gridworld": ({"train"}, {"heldout"}),
    "gym": ({"train"}, {"heldout"}),
    "minatar": ({"train"}, {"heldout"}),  # parsed like gym
    "atari-flavours": ({"game"}, {"full_action_space", "repeat_action_probability"}),
    "atari-transfer": ({"sources", "targets"}, {"full_action_space", "repeat_action_probability"}),
}
_KINDS = tuple(_KIND_KEYS)
#: Settings files already reported as broken (each is named once per process).
_reported: set[tuple[str, str]] = set()


def _check(data: Any, path: Path) -> dict[str, Any]:
    """
    Validate the structure of one settings file (cheap: no env is built, ALE is not queried).

    :param data: the file's YAML content
    :param path: the file, for messages
    :return: the content, a mapping with a string ``name``
    :raises ValueError: one line saying what is wrong
    """
    if not isinstance(data, dict):
        raise ValueError(f"expected a mapping with name, kind, ... (got {type(data).__name__})")
    name, kind = data.get("name"), data.get("kind")
    if not isinstance(name, str) or not name:
        raise ValueError("'name' must be a non-empty string")
    if kind not in _KIND_KEYS:
        raise ValueError(f"'kind' must be one of {', '.join(_KINDS)} (got {kind!r})")
    required, optional = _KIND_KEYS[kind]
    missing = sorted(required - set(data))
    if missing:
        raise ValueError(f"kind {kind!r} needs key(s) {', '.join(missing)}")
    allowed = required | optional | _COMMON_KEYS
    unknown = sorted(map(str, set(data) - allowed))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
    if kind in ("gridworld", "gym", "minatar"):
        _entry(data["train"], "train")
        heldout = data.get("heldout") or {}
        if not isinstance(heldout, dict):
            raise ValueError("'heldout' must map split names to envs")
        for split, spec in heldout.items():
            _entry(spec, f"heldout.{split}")
    if kind == "atari-transfer":
        for key in ("sources", "targets"):
            if not isinstance(data[key], list) or not data[key] or not all(isinstance(g, str) for g in data[key]):
                raise ValueError(f"{key!r} must be a non-empty list of game names")
    _check_numbers(data)
    return data


def _check_numbers(data: dict[str, Any]) -> None:
    """
    :param data: a settings file's content
    :raises ValueError: a numeric key out of range or of the wrong type
    """
    for key, low in (("eval_seed", 0), ("n_eval_episodes", 1), ("frame_stack", 0)):
        value = data.get(key)
        if key not in data or (value is None and key != "n_eval_episodes"):
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{key!r} must be an integer >= {low} (got {value!r})")
    s_ref = data.get("s_ref")
    if s_ref is not None and (not isinstance(s_ref, int | float) or isinstance(s_ref, bool)):
        raise ValueError(f"'s_ref' must be null or a number (got {s_ref!r})")


def _read_setting_file(path: Path) -> dict[str, Any]:
    """
    :param path: a settings file
    :return: its validated content
    :raises ValueError: unreadable, malformed (or tagged) YAML, or a wrong structure; one line
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"malformed YAML{at}: {problem}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read it: {error}") from None
    return _check(data, path)


def _setting_files() -> dict[str, list[Path]]:
    """
    Find the settings files; each is validated on its own: a broken one is named in one warning line (once per
    process) and skipped, the others keep working.

    :return: setting name -> the files defining it (more than one: the name is ambiguous, see :func:`load_setting`)
    """
    files: dict[str, list[Path]] = {}
    for directory in settings_dirs():
        for path in sorted(directory.glob("*.yml")):
            try:
                data = _read_setting_file(path)
            except ValueError as error:
                message = " ".join(str(error).split())
                if (str(path), message) not in _reported:
                    _reported.add((str(path), message))
                    logger.warning("rims_rl: warning: skipping settings file %s: %s", path, message)
                continue
            files.setdefault(data["name"], []).append(path)
    return files


def list_settings() -> list[str]:
    """:return: the names of all settings found (see :func:`settings_dirs`), the default first."""
    names = sorted(_setting_files())
    return sorted(names, key=lambda n: n != DEFAULT_SETTING)


def load_setting(name: str = DEFAULT_SETTING, **overrides: Any) -> Setting:
    """
    Read a setting from its YAML file.

    :param name: setting name (see :func:`list_settings`)
    :param overrides: replace top-level YAML keys, e.g. ``game="Pong"`` for ``atari-flavours``
    :return: the setting
    """
    files = _setting_files()
    if name not in files:
        import difflib

        close = difflib.get_close_matches(name, list(files), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        where = ", ".join(str(d) for d in settings_dirs()) or f"none found (set ${SETTINGS_DIR_ENV})"
        raise ValueError(f"unknown setting {name!r}{hint} (known: {', '.join(sorted(files))}; searched: {where})")
    if len(files[name]) > 1:
        first, second = files[name][:2]
        raise SettingsError(f"setting name {name!r} is defined by two files: {first} and {second}; rename one")
    data = _read_setting_file(files[name][0])
    unknown = set(overrides) - set(data)
    if unknown:
        raise ValueError(f"setting {name!r} has no key(s) {sorted(unknown)}; allowed: {sorted(data)}")
    data.update(overrides)
    return _parse(data, str(files[name][0]))


def _entry(spec: Any, where: str) -> EnvEntry:
    if isinstance(spec, str):
        return EnvEntry(spec)
    if isinstance(spec, dict) and "id" in spec and set(spec) <= {"id", "kwargs"}:
        return EnvEntry(str(spec["id"]), dict(spec.get("kwargs") or {}))
    raise ValueError(f"{where}: an env must be an id string or a mapping with 'id' and optional 'kwargs' (got {spec!r})")


def _atari_kwargs(data: dict[str, Any], full_action_space: bool) -> dict[str, Any]:
    from rims_rl.envs import atari

    return dict(
        full_action_space=full_action_space,
        repeat_action_probability=float(data.get("repeat_action_probability", atari.STICKY_ACTION_PROB)),
    )


def _parse(data: dict[str, Any], source: str) -> Setting:
    from rims_rl.envs import atari  # deferred: it imports SB3 (and torch)

    kind = data.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"{source}: kind must be one of {', '.join(_KINDS)} (got {kind!r})")
    train: dict[str, EnvEntry]
    heldout: dict[str, EnvEntry]
    if kind == "atari-flavours":
        game = str(data["game"])
        flavours = atari.game_flavours(game)
        fas = data.get("full_action_space", "auto")
        full = flavours["minimal_action_sets_differ"] if fas == "auto" else bool(fas)
        env_id = atari.atari_id(game)
        train = {"train": EnvEntry(env_id, _atari_kwargs(data, full))}
        heldout = {
            f"mode{m}-difficulty{d}": EnvEntry(env_id, {**_atari_kwargs(data, full), "mode": m, "difficulty": d})
            for m, d in flavours["heldout"]
        }
    elif kind == "atari-transfer":
        kwargs = _atari_kwargs(data, bool(data.get("full_action_space", True)))
        train = {g: EnvEntry(atari.atari_id(g), kwargs) for g in data["sources"]}
        heldout = {g: EnvEntry(atari.atari_id(g), kwargs) for g in data["targets"]}
    else:
        train = {"train": _entry(data["train"], f"{source}: train")}
        heldout = {str(k): _entry(v, f"{source}: heldout.{k}") for k, v in (data.get("heldout") or {}).items()}
    frame_stack = data.get("frame_stack")
    s_ref = data.get("s_ref")
    return Setting(
        name=str(data["name"]),
        kind=str(kind),
        description=str(data.get("description", "")).strip(),
        train_envs=train,
        heldout=heldout,
        eval_seed=int(data.get("eval_seed", 1_000_000)),
        n_eval_episodes=int(data.get("n_eval_episodes", 100)),
        s_ref=None if s_ref is None else float(s_ref),
        frame_stack=None if frame_stack in (None, 0, 1) else int(frame_stack),
        source=source,
    )
