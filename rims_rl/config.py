"""Typed hyperparameters for the training CLI, loaded from ``agents/<algo>.yml`` (rl-zoo layout, safe YAML only).

Each file maps an env id (or one of the fallbacks ``atari``, ``minigrid``, ``default``) to the keys of
:class:`AgentConfig`. Nothing is evaluated: class names (policy, features extractor, activation) are resolved
through explicit whitelists and schedules are written ``"lin_<initial value>"``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from rims_rl.resources import data_dir

#: Algorithm name -> recurrent core given to the policy (one trainer, RecurrentPPO; only the core differs).
ALGOS: dict[str, str] = {"rims_ppo": "rims", "lstm_ppo": "lstm"}

#: Default folder holding one YAML file per algorithm.
AGENTS_DIR = data_dir("agents")

#: Fallback sections, tried in this order after the exact env id.
FALLBACKS = ("atari", "minigrid", "minatar", "default")


class ConfigError(ValueError):
    """A hyperparameter file or override is invalid (reported to the user as one line)."""


@dataclass
class PolicyConfig:
    """Keyword arguments of the recurrent policy (``policy_kwargs``); only the keys that are set are passed on."""

    core_kwargs: dict[str, Any] = field(default_factory=dict)
    """Constructor arguments of the recurrent core (RIMs: n_units, k_active, unit_size, ...; LSTM: hidden_size)."""
    net_arch: list[int] | dict[str, list[int]] | None = None
    """Actor/critic MLP layers after the core (SB3 format)."""
    features_extractor: str | None = None
    """Name of the features extractor, resolved through a whitelist (``NatureCNN``, ``MiniGridCNN``, ...)."""
    features_extractor_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the features extractor (e.g. ``features_dim``)."""
    activation_fn: str | None = None
    """Activation of the MLP heads: ``tanh``, ``relu``, ``elu`` or ``leaky_relu``."""
    ortho_init: bool | None = None
    """Orthogonal initialisation of the heads (SB3 default: True)."""
    shared_core: bool | None = None
    """One core shared by actor and critic (the paper's setup)."""
    enable_critic_lstm: bool | None = None
    """Separate critic core (only with ``shared_core: false``)."""
    share_features_extractor: bool | None = None
    """Share the features extractor between actor and critic."""
    normalize_images: bool | None = None
    """Divide image observations by 255 (SB3 default: True)."""


@dataclass
class AgentConfig:
    """Hyperparameters of one agent on one env (one entry of ``agents/<algo>.yml``)."""

    policy: str = "MlpRimsPolicy"
    """Policy class name: ``MlpRimsPolicy``, ``CnnRimsPolicy`` or ``MultiInputRimsPolicy``."""
    n_timesteps: int = 100_000
    """Total environment steps (all envs together)."""
    n_envs: int = 8
    """Number of parallel environments."""
    n_steps: int = 128
    """Steps per env per rollout."""
    batch_size: int = 256
    """Minibatch size in steps (n_steps * n_envs / batch_size minibatches per epoch)."""
    n_epochs: int = 4
    """PPO epochs per rollout."""
    learning_rate: float | str = 2.5e-4
    """Adam learning rate; ``"lin_<value>"`` decays linearly from value to 0 over training."""
    clip_range: float | str = 0.2
    """PPO clip range; ``"lin_<value>"`` decays linearly to 0."""
    clip_range_vf: float | None = None
    """Value-function clip range (None: no clipping)."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    ent_coef: float = 0.01
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    max_grad_norm: float = 0.5
    """Gradient clipping norm."""
    normalize_advantage: bool = True
    """Normalize advantages per minibatch."""
    target_kl: float | None = None
    """Stop the epoch loop early above this KL (None: never)."""
    frame_stack: int | None = None
    """Stack this many observations (VecFrameStack); None: no stacking (the core carries memory)."""
    normalize: bool = False
    """Wrap the training env in VecNormalize (statistics are checkpointed)."""
    normalize_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of VecNormalize (e.g. ``norm_reward: false``)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments passed to ``gymnasium.make``."""
    policy_kwargs: PolicyConfig = field(default_factory=PolicyConfig)
    """Keyword arguments of the policy (see :class:`PolicyConfig`)."""

    def ppo_kwargs(self) -> dict[str, Any]:
        """
        :return: the keyword arguments of ``RecurrentPPO`` held here, schedules resolved
            (policy, env and policy_kwargs are built by the caller).
        """
        return dict(
            n_steps=self.n_steps,
            batch_size=self.batch_size,
            n_epochs=self.n_epochs,
            learning_rate=parse_schedule(self.learning_rate, "learning_rate"),
            clip_range=parse_schedule(self.clip_range, "clip_range"),
            clip_range_vf=self.clip_range_vf,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            ent_coef=self.ent_coef,
            vf_coef=self.vf_coef,
            max_grad_norm=self.max_grad_norm,
            normalize_advantage=self.normalize_advantage,
            target_kl=self.target_kl,
        )

    def validate(self, where: str = "hyperparameters") -> None:
        """
        Check the value ranges that the type check of :func:`_build` cannot see (RecurrentPPO would assert or
        train on nonsense later, after the run folder exists).

        :param where: location for the error message (e.g. ``rims_ppo.yml[minigrid]``)
        :raises ConfigError: the first value out of range, one line
        """
        self._check_finite(where)
        positive: dict[str, int] = {"n_timesteps": self.n_timesteps, "n_envs": self.n_envs, "n_steps": self.n_steps,
                    "batch_size": self.batch_size, "n_epochs": self.n_epochs}  # fmt: skip
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"hyperparameter {name!r} in {where} must be a positive integer, got {value}")
        if self.n_steps * self.n_envs < 2:
            raise ConfigError(f"n_steps * n_envs must be > 1 in {where} (got {self.n_steps} * {self.n_envs})")
        if self.batch_size < 2:
            raise ConfigError(f"hyperparameter 'batch_size' in {where} must be > 1 (advantages are normalized per batch)")
        in_unit: dict[str, float] = {"gamma": self.gamma, "gae_lambda": self.gae_lambda}
        for name, fraction in in_unit.items():
            if not 0.0 <= fraction <= 1.0:
                raise ConfigError(f"hyperparameter {name!r} in {where} must be in [0, 1], got {fraction}")
        for name in ("learning_rate", "clip_range"):
            schedule = getattr(self, name)
            if not schedule_start(schedule, name) > 0.0:
                raise ConfigError(f"hyperparameter {name!r} in {where} must be > 0, got {schedule!r}")
        non_negative: dict[str, float] = {"ent_coef": self.ent_coef, "vf_coef": self.vf_coef}
        for name, coef in non_negative.items():
            if not coef >= 0.0:
                raise ConfigError(f"hyperparameter {name!r} in {where} must be >= 0, got {coef}")
        for name, optional in (("max_grad_norm", self.max_grad_norm), ("clip_range_vf", self.clip_range_vf),
                               ("target_kl", self.target_kl)):  # fmt: skip
            if optional is not None and not optional > 0.0:
                raise ConfigError(f"hyperparameter {name!r} in {where} must be > 0, got {optional}")
        if self.frame_stack is not None and self.frame_stack < 0:
            raise ConfigError(f"hyperparameter 'frame_stack' in {where} must be >= 0 (0 or 1: none), got {self.frame_stack}")

    def _check_finite(self, where: str) -> None:
        """:raises ConfigError: a float hyperparameter (or a schedule's start) is NaN or infinite"""
        for name in ("learning_rate", "clip_range", "clip_range_vf", "gamma", "gae_lambda", "ent_coef", "vf_coef",
                     "max_grad_norm", "target_kl"):  # fmt: skip
            value = getattr(self, name)
            if value is None:
                continue
            if not math.isfinite(schedule_start(value, name)):
                raise ConfigError(f"hyperparameter {name!r} in {where} must be finite, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """:return: plain mapping (YAML-serialisable), as written to the run folder's config.yml."""
        return dataclasses.asdict(self)


def parse_schedule(value: float | str, name: str = "value") -> float | Callable[[float], float]:
    """
    Turn a YAML value into a constant or a linear schedule, without eval.

    :param value: a number, or a string ``"lin_<number>"`` (linear decay from number to 0)
    :param name: hyperparameter name, for the error message
    :return: a float, or a picklable schedule of ``progress_remaining`` (1 -> 0)
    """
    if isinstance(value, bool):
        raise ConfigError(f"hyperparameter {name!r} must be a number or 'lin_<number>', got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.startswith("lin_"):
        try:
            start = float(value[len("lin_") :])
        except ValueError:
            raise ConfigError(f"hyperparameter {name!r}: cannot parse schedule {value!r} (expected 'lin_<number>')") from None
        from stable_baselines3.common.utils import LinearSchedule  # deferred: importing SB3 loads torch

        return LinearSchedule(start, 0.0, 1.0)
    raise ConfigError(f"hyperparameter {name!r} must be a number or 'lin_<number>', got {value!r}")


def schedule_start(value: float | str, name: str = "value") -> float:
    """
    :param value: a number or ``"lin_<number>"``
    :param name: hyperparameter name, for the error message
    :return: the value at the start of training
    """
    start = parse_schedule(value, name)
    return start if isinstance(start, float) else float(str(value)[len("lin_") :])


def _type_ok(value: Any, hint: Any) -> bool:
    """
    :param value: a value read from YAML
    :param hint: a type hint from the dataclasses above
    :return: whether the value fits the hint (ints are accepted for floats)
    """
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if origin is not None:
        return isinstance(value, origin)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())
    return isinstance(value, hint)


def _build(cls: type, raw: Mapping[str, Any], where: str) -> Any:
    """
    Build a config dataclass from a mapping, rejecting unknown keys and wrongly typed values.

    :param cls: :class:`AgentConfig` or :class:`PolicyConfig`
    :param raw: mapping read from YAML
    :param where: location for error messages
    :return: an instance of ``cls``
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = [key for key in raw if key not in valid]
    if unknown:
        raise ConfigError(f"unknown hyperparameter {unknown[0]!r} in {where}; valid keys: {', '.join(valid)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if cls is AgentConfig and key == "policy_kwargs":
            values[key] = _build(PolicyConfig, value or {}, f"{where}.policy_kwargs")
            continue
        if not _type_ok(value, hints[key]):
            raise ConfigError(f"hyperparameter {key!r} in {where} has the wrong type: {value!r} (expected {hints[key]})")
        if hints[key] is int and isinstance(value, float):
            value = int(value)  # 1e6 in YAML is a float
        values[key] = value
    return cls(**values)


def parse_override(item: str) -> tuple[str, Any]:
    """
    Parse one ``-params`` item ``key:value`` (value read with ``yaml.safe_load``; dotted keys reach nested keys).

    :param item: e.g. ``"learning_rate:lin_3e-4"`` or ``"policy_kwargs.core_kwargs.k_active:3"``
    :return: (key, value)
    """
    key, sep, text = item.partition(":")
    if not sep or not key:
        raise ConfigError(f"-params expects key:value items, got {item!r}")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"-params {item!r}: value is not valid YAML ({str(error).splitlines()[0]})") from None
    return key.strip(), value


def apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """
    :param raw: hyperparameter mapping (not modified)
    :param overrides: ``{"a.b.c": value}``; dotted keys update nested mappings
    :return: a new mapping with the overrides applied
    """
    merged = yaml.safe_load(yaml.safe_dump(raw))  # deep copy of plain data
    for dotted, value in overrides.items():
        node = merged
        *parents, last = dotted.split(".")
        for part in parents:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"-params {dotted!r}: {part!r} is not a mapping")
            node = child
        node[last] = value
    return merged


def yaml_error_line(error: yaml.YAMLError, path: str | os.PathLike[str]) -> str:
    """:return: ``malformed YAML in PATH (line L, column C): PROBLEM``, one line"""
    mark = getattr(error, "problem_mark", None)
    at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    problem = getattr(error, "problem", None) or (str(error).splitlines() or ["?"])[0]
    return f"malformed YAML in {path}{at}: {problem}"


def select_section(env_id: str) -> list[str]:
    """
    :param env_id: gymnasium env id
    :return: the sections of an agents file to try, in order (exact id, family fallback, ``default``)
    """
    sections = [env_id]
    if env_id.startswith("ALE/") or "NoFrameskip" in env_id or env_id.startswith("Atari"):
        sections.append("atari")
    if env_id.startswith("MiniGrid") or env_id.startswith("BabyAI"):
        sections.append("minigrid")
    if env_id.startswith(("RimsMinAtar/", "MinAtar/")):
        sections.append("minatar")
    sections.append("default")
    return sections


def load_agent_config(
    algo: str,
    env_id: str,
    overrides: Mapping[str, Any] | None = None,
    agents_dir: str | os.PathLike[str] | None = None,
) -> tuple[AgentConfig, str]:
    """
    Load the hyperparameters of ``algo`` for ``env_id`` from ``agents/<algo>.yml``.

    :param algo: ``rims_ppo`` or ``lstm_ppo``
    :param env_id: gymnasium env id (used to pick the section)
    :param overrides: ``-params`` overrides, ``{"key" or "a.b": value}``
    :param agents_dir: folder of the YAML files (default: the repository's ``agents/``)
    :return: (config, name of the section used)
    """
    if algo not in ALGOS:
        raise ConfigError(f"unknown algo {algo!r}; valid: {', '.join(ALGOS)}")
    path = Path(agents_dir) if agents_dir is not None else AGENTS_DIR
    path = path / f"{algo}.yml"
    try:
        with open(path, encoding="utf-8") as file:
            content = yaml.safe_load(file)
    except FileNotFoundError:
        raise ConfigError(f"hyperparameter file not found: {path}") from None
    except yaml.YAMLError as error:
        raise ConfigError(yaml_error_line(error, path)) from None
    if not isinstance(content, dict):
        raise ConfigError(f"{path} must map env ids (or atari/minigrid/default) to hyperparameters")
    section = next((name for name in select_section(env_id) if name in content), None)
    if section is None:
        raise ConfigError(f"no entry for {env_id!r} in {path} and no 'default' entry")
    raw = content[section] or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}[{section}] must be a mapping")
    raw = apply_overrides(raw, overrides or {})
    return _build(AgentConfig, raw, f"{path.name}[{section}]"), section
