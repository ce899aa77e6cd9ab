"""What to evaluate on: a setting's held-out splits, or plain gymnasium env ids, as env factories."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stable_baselines3.common.vec_env import VecEnv

from rims_rl.evaluation.scores import reference_score

EnvFactory = Callable[..., VecEnv]
"""``factory(n_envs=..., seed=..., render_mode=None, frame_stack=None, env_kwargs=None) -> VecEnv`` (with a Monitor
below any reward clipping; ``frame_stack``/``env_kwargs``: as the agent was trained, see
``rims_rl.evaluation.runner.EnvOptions``)."""


@dataclass
class EvalTarget:
    """One evaluation env.

    :param label: name in tables (the split name, or the env id)
    :param env_id: gymnasium env id
    :param make_env: factory of the vectorized evaluation env
    :param seeds: evaluation seeds; ``n_episodes`` episodes are played for each
    :param n_episodes: episodes per seed
    :param ref_score: S_ref (None: unknown, the ratio cannot be computed)
    """

    label: str
    env_id: str
    make_env: EnvFactory
    seeds: list[int]
    n_episodes: int
    ref_score: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalEnvFactory:
    """Builds the evaluation VecEnv of one split with rims_rl's builder, as training builds it.

    A plain dataclass rather than a closure, so that a target can be sent to an evaluation worker process and named
    in the episode cache.

    :param env: a gymnasium id or a setting
    :param split: the split of a setting ("train" for a plain id)
    """

    env: Any
    split: str

    def __call__(
        self,
        n_envs: int = 1,
        seed: int | None = None,
        render_mode: str | None = None,
        frame_stack: int | None = None,
        env_kwargs: dict[str, Any] | None = None,
    ) -> VecEnv:
        """
        :param n_envs: parallel envs
        :param seed: evaluation seed
        :param render_mode: gymnasium render mode
        :param frame_stack: frames stacked as in the agent's training (None: the setting's default)
        :param env_kwargs: extra constructor kwargs as in the agent's training
        :return: the evaluation VecEnv
        """
        from rims_rl import envs as rims_envs

        kwargs = {**(env_kwargs or {}), **({"render_mode": render_mode} if render_mode else {})}
        return rims_envs.make_eval_vec_env(
            self.env, self.split, n_envs=n_envs, seed=seed, frame_stack=frame_stack, env_kwargs=kwargs or None
        )

    def identity(self) -> dict[str, Any]:
        """
        :return: what decides the envs this factory builds, as plain data (the episode cache's key): the env id, or the
            setting (every field but its description and file) and the split
        """
        if isinstance(self.env, str):
            return {"env": self.env, "split": self.split}
        setting = self.env.to_dict()
        for key in ("description", "source"):
            setting.pop(key, None)
        return {"setting": setting, "split": self.split}


def _eval_env_factory(env: Any, split: str) -> EvalEnvFactory:
    """
    :param env: a gymnasium id or a setting
    :param split: the split of a setting ("train" for a plain id)
    :return: ``factory(n_envs, seed, render_mode, frame_stack, env_kwargs)`` building the evaluation VecEnv with
        rims_rl's builder, as training builds it
    """
    return EvalEnvFactory(env, split)


def gym_targets(
    env_ids: Sequence[str], n_episodes: int, seeds: Sequence[int], ref_score: float | None = None
) -> list[EvalTarget]:
    """Targets for plain gymnasium ids, each built with ``rims_rl.envs.make_eval_vec_env`` as training builds them
    (Monitor included; ALE ids get the Atari preprocessing with true scores).

    :param env_ids: gymnasium ids
    :param n_episodes: episodes per seed
    :param seeds: evaluation seeds
    :param ref_score: S_ref for all of them (default: looked up per id; None when unknown)
    """
    targets = []
    for env_id in env_ids:
        factory = _eval_env_factory(env_id, "train")  # ALE ids get the Atari preprocessing training used

        ref = ref_score
        if ref is None:
            try:
                ref = reference_score(env_id)
            except ValueError:
                ref = None
        targets.append(EvalTarget(env_id, env_id, factory, list(seeds), n_episodes, ref))
    return targets


def setting_targets(
    name: str,
    splits: Sequence[str] | None = None,
    n_episodes: int | None = None,
    seeds: Sequence[int] | None = None,
    ref_score: float | None = None,
    split_episodes: Mapping[str, int] | None = None,
) -> list[EvalTarget]:
    """Targets for a setting's training and held-out splits (built by ``rims_rl.envs.make_eval_vec_env``).

    :param name: setting name, e.g. "gridworld-pickup"
    :param splits: splits to evaluate (default: "train" then every held-out split, in the setting's order; the
        training split is the reference of the generalization gap; atari-transfer: the target games only)
    :param n_episodes: episodes per seed (default: the setting's ``n_eval_episodes``)
    :param seeds: evaluation seeds (default: the setting's seed of each split)
    :param ref_score: override S_ref
    :param split_episodes: episodes per seed for some splits (split -> count), overriding ``n_episodes`` there
    :raises ValueError: unknown setting or split, or a ``split_episodes`` split that is not evaluated
    """
    from rims_rl import envs as rims_envs

    setting = rims_envs.load_setting(name)
    default = setting.heldout if setting.kind == "atari-transfer" else setting.splits  # transfer: other games, no gap
    chosen = list(splits) if splits else list(default)
    for split in split_episodes or {}:
        setting.env(split)  # an unknown split fails as in ``splits``
        if split not in chosen:
            raise ValueError(f"episodes given for split {split!r}, which is not evaluated (splits: {', '.join(chosen)})")
    targets = []
    for split in chosen:
        entry = setting.env(split)

        factory = _eval_env_factory(setting, split)

        ref = ref_score if ref_score is not None else setting.s_ref
        if ref is None:
            ref = reference_score(entry.id, setting.kind)
        split_seeds = list(seeds) if seeds else [int(setting.eval_seeds[split])]
        targets.append(
            EvalTarget(
                split,
                entry.id,
                factory,
                split_seeds,
                int((split_episodes or {}).get(split) or n_episodes or setting.n_eval_episodes),
                float(ref),
                {"setting": name, "kind": setting.kind},
            )
        )
    return targets
