"""sweeps/gridworld_v2.yml: the arms, seeds and budget the protocol states, and the parameter-matched LSTM."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rims_rl.config import ALGOS, load_agent_config, parse_override
from rims_rl.nn.cores import make_core
from rims_rl.sweep import load_sweep

REPO = Path(__file__).resolve().parent.parent


def _core_parameters(algo: str, params: list[str]) -> int:
    config, _ = load_agent_config(algo, "MiniGrid-RimsPickup-Train-v1", dict(parse_override(p) for p in params))
    features = config.policy_kwargs.features_extractor_kwargs["features_dim"]
    core = make_core(ALGOS[algo], features, **config.policy_kwargs.core_kwargs)
    return sum(p.numel() for p in core.parameters())


def test_arms_seeds_and_budget(tmp_path: Path) -> None:
    sweep = load_sweep(REPO / "sweeps" / "gridworld_v2.yml", str(tmp_path / "v2"))
    seeds = Counter(t.entry for t in sweep.trials)
    assert seeds == {"rims_ppo": 40, "lstm_ppo": 40, "lstm_matched": 10, "rims_k3": 10, "rims_all_active": 10,
                     "rims_no_communication": 10}  # fmt: skip
    assert {t.n_timesteps for t in sweep.trials} == {750_000}
    assert sorted(t.seed for t in sweep.trials if t.entry == "rims_ppo") == list(range(40))
    assert sweep.report["split_episodes"] == {"train": 500, "more-distractors": 500, "novel-distractors": 500}
    assert sweep.report["protocol"] == str(REPO / "docs" / "results" / "gridworld_v2" / "PROTOCOL.md")


def test_parameter_matched_lstm() -> None:
    """The matched LSTM's core is within 5% of RIMs' (v1's counts: RIMs 181,120, LSTM 128 132,096)."""
    sweep = load_sweep(REPO / "sweeps" / "gridworld_v2.yml", "/nonexistent/v2")
    params = {t.entry: (t.algo, t.argv[t.argv.index("-params") + 1 :] if "-params" in t.argv else []) for t in sweep.trials}
    counts = {entry: _core_parameters(algo, p) for entry, (algo, p) in params.items()}
    assert counts["rims_ppo"] == counts["rims_k3"] == 181_120 and counts["lstm_ppo"] == 132_096
    assert counts["lstm_matched"] == 180_236
    assert abs(counts["lstm_matched"] / counts["rims_ppo"] - 1) < 0.05
    assert _core_parameters("lstm_ppo", ["policy_kwargs.core_kwargs.hidden_size:158"]) - counts["rims_ppo"] > (
        counts["rims_ppo"] - counts["lstm_matched"]
    )  # 157 is the closest hidden size


def test_schedules_are_constant_so_extension_is_exact() -> None:
    """Extending a run (sweep 'extend') ends where a longer run ends only with constant schedules."""
    for algo in ("rims_ppo", "lstm_ppo"):
        config, section = load_agent_config(algo, "MiniGrid-RimsPickup-Train-v1", {})
        assert section == "minigrid"
        assert isinstance(config.learning_rate, float) and isinstance(config.clip_range, float)


def test_budget_check_extends_the_main_trials(tmp_path: Path) -> None:
    """The 1.5M sweep's trials are seeds 0-9 of the main arms with the same arguments but a larger budget, so a copied
    trial folder of the main sweep is extended, not refused or restarted."""
    from rims_rl.sweep import _budget_raised

    main = {t.name: t for t in load_sweep(REPO / "sweeps" / "gridworld_v2.yml", str(tmp_path / "a")).trials}
    longer = load_sweep(REPO / "sweeps" / "gridworld_v2_1500k.yml", str(tmp_path / "b")).trials
    assert sorted((t.entry, t.seed) for t in longer) == sorted((e, s) for e in ("rims_ppo", "lstm_ppo") for s in range(10))
    for t in longer:
        assert t.n_timesteps == 1_500_000 and _budget_raised(main[t.name].argv, t.argv)
