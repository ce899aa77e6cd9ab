"""Hyperparameter files: safe loading, fallbacks, schedules, overrides, rejection of unknown keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from stable_baselines3.common.utils import LinearSchedule

from rims_rl.cli.train import build_policy
from rims_rl.config import ALGOS, AgentConfig, ConfigError, load_agent_config, parse_override, parse_schedule


@pytest.mark.parametrize("algo", list(ALGOS))
@pytest.mark.parametrize(
    ("env_id", "section"),
    [("ALE/Pong-v5", "atari"), ("MiniGrid-RimsPickup-Train-v0", "minigrid"), ("RimsCueRecall-v0", "RimsCueRecall-v0"),
     ("CartPole-v1", "default")],
)  # fmt: skip
def test_shipped_files_load(algo: str, env_id: str, section: str) -> None:
    config, used = load_agent_config(algo, env_id)
    assert used == section
    policy_class, policy_kwargs = build_policy(config, algo)
    assert policy_kwargs["core"] == ALGOS[algo]
    assert policy_class.__name__ == config.policy


def test_atari_defaults_follow_the_paper() -> None:
    rims, _ = load_agent_config("rims_ppo", "ALE/Pong-v5")
    lstm, _ = load_agent_config("lstm_ppo", "ALE/Pong-v5")
    for config in (rims, lstm):
        assert (config.n_envs, config.n_steps, config.n_epochs, config.batch_size) == (8, 128, 4, 256)  # 4 minibatches
        assert (config.learning_rate, config.clip_range) == ("lin_2.5e-4", 0.1)
        assert (config.gamma, config.gae_lambda, config.ent_coef, config.vf_coef, config.max_grad_norm) == (
            0.99, 0.95, 0.01, 0.5, 0.5)  # fmt: skip
    assert rims.policy_kwargs.core_kwargs == {"n_units": 6, "k_active": 5, "unit_size": 85}
    assert lstm.policy_kwargs.core_kwargs == {"hidden_size": 6 * 85}
    # only the core differs
    rims_rest, lstm_rest = rims.to_dict(), lstm.to_dict()
    rims_rest["policy_kwargs"].pop("core_kwargs")
    lstm_rest["policy_kwargs"].pop("core_kwargs")
    assert rims_rest == lstm_rest


@pytest.mark.parametrize(
    "env_id", ["ALE/Pong-v5", "MiniGrid-RimsPickup-Train-v1", "RimsMinAtar/Breakout-v0", "RimsCueRecall-v0", "CartPole-v1"]
)
def test_only_the_core_differs_between_the_two_agent_files(env_id: str) -> None:
    """Every section of agents/rims_ppo.yml and agents/lstm_ppo.yml is identical apart from core_kwargs."""
    rims, rims_section = load_agent_config("rims_ppo", env_id)
    lstm, lstm_section = load_agent_config("lstm_ppo", env_id)
    assert rims_section == lstm_section
    rims_rest, lstm_rest = rims.to_dict(), lstm.to_dict()
    assert rims_rest["policy_kwargs"].pop("core_kwargs") != lstm_rest["policy_kwargs"].pop("core_kwargs")
    assert rims_rest == lstm_rest


def test_linear_schedule_without_eval() -> None:
    schedule = parse_schedule("lin_2.5e-4")
    assert isinstance(schedule, LinearSchedule)
    assert schedule(1.0) == pytest.approx(2.5e-4) and schedule(0.5) == pytest.approx(1.25e-4) and schedule(0.0) == 0.0
    assert parse_schedule(3) == 3.0
    for bad in ("lin_abc", "__import__('os')", True, "2.5e-4"):
        with pytest.raises(ConfigError):
            parse_schedule(bad)  # type: ignore[arg-type]


def test_overrides_are_yaml_and_dotted() -> None:
    assert parse_override("learning_rate:lin_3e-4") == ("learning_rate", "lin_3e-4")
    assert parse_override("net:[64, 64]") == ("net", [64, 64])
    overrides = dict(parse_override(item) for item in ["n_steps:64", "policy_kwargs.core_kwargs.k_active:3"])
    config, _ = load_agent_config("rims_ppo", "CartPole-v1", overrides)
    assert config.n_steps == 64
    assert config.policy_kwargs.core_kwargs == {"n_units": 4, "k_active": 3, "unit_size": 32}
    with pytest.raises(ConfigError, match="key:value"):
        parse_override("no_colon")


def test_unknown_keys_list_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="valid keys: policy, n_timesteps"):
        load_agent_config("rims_ppo", "CartPole-v1", {"n_step": 3})
    with pytest.raises(ConfigError, match=r"'core_kwarg'.*valid keys: core_kwargs"):
        load_agent_config("rims_ppo", "CartPole-v1", {"policy_kwargs.core_kwarg": {}})


def test_types_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="gamma"):
        load_agent_config("rims_ppo", "CartPole-v1", {"gamma": "0.9x"})
    with pytest.raises(ConfigError, match="n_envs"):
        load_agent_config("rims_ppo", "CartPole-v1", {"n_envs": 2.5})
    config, _ = load_agent_config("rims_ppo", "CartPole-v1", {"n_timesteps": 1e6})  # YAML 1e6 is a float
    assert config.n_timesteps == 1_000_000 and isinstance(config.n_timesteps, int)


def test_unsafe_yaml_rejected(tmp_path: Path) -> None:
    (tmp_path / "rims_ppo.yml").write_text("default: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_agent_config("rims_ppo", "CartPole-v1", agents_dir=tmp_path)


def test_whitelisted_names_only() -> None:
    config = AgentConfig(policy="os.system")
    with pytest.raises(ConfigError, match="unknown policy"):
        build_policy(config, "rims_ppo")
    config = AgentConfig()
    config.policy_kwargs.features_extractor = "torch.nn.Identity"
    with pytest.raises(ConfigError, match="unknown features_extractor"):
        build_policy(config, "rims_ppo")
