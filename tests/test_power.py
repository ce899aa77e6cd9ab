"""Power planning (rims_rl.evaluation.power): the MDE formula, the episode-noise split, and v1's committed data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from rims_rl.evaluation.power import (
    Endpoint,
    endpoint_variance,
    main,
    mde,
    read_seed_scores,
    seeds_for,
    split_drops,
)

REPO = Path(__file__).resolve().parent.parent
V1 = REPO / "docs" / "results" / "gridworld_v1_750k" / "rims_ppo_vs_lstm_ppo" / "seeds.csv"


def _csv(path: Path, rows: dict[str, list[dict[str, float]]], n: int = 100) -> Path:
    lines = ["agent,core,seed,split,actions,return,success,n_episodes,path"]
    for core, seeds in rows.items():
        for seed, by_split in enumerate(seeds):
            for split, p in by_split.items():
                lines.append(f"a{seed},{core},{seed},{split},sampled,{p},{p},{n},x")
                lines.append(f"a{seed},{core},{seed},{split},greedy,0,0,{n},x")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_mde_formula_and_its_inverse() -> None:
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert mde(0.1, 10) == pytest.approx(z * 0.1 * math.sqrt(2 / 10))
    assert mde(0.1, 10, 20) == pytest.approx(z * 0.1 * math.sqrt(1 / 10 + 1 / 20))
    assert mde(0.1, 10, t_quantiles=True) > mde(0.1, 10)
    for t_quantiles in (False, True):
        n = seeds_for(0.09, 0.05, t_quantiles=t_quantiles)
        assert mde(0.09, n, t_quantiles=t_quantiles) <= 0.05 < mde(0.09, n - 1, t_quantiles=t_quantiles)


def test_mde_has_the_stated_power() -> None:
    """Simulated comparisons with a true DiD equal to the MDE: a Welch test at 0.05 rejects in about 80% of them."""
    rng = np.random.default_rng(0)
    n, sd = 25, 0.09
    effect = mde(sd, n, t_quantiles=True)
    lstm, rims = rng.normal(effect, sd, (4000, n)), rng.normal(0, sd, (4000, n))
    p = stats.ttest_ind(lstm, rims, axis=1, equal_var=False).pvalue
    assert 0.76 < (p < 0.05).mean() < 0.84


def test_variance_split_into_seeds_and_episodes(tmp_path: Path) -> None:
    rows = {"rims": [{"train": 1.0, "x": 0.5}, {"train": 0.9, "x": 0.7}, {"train": 0.8, "x": 0.6}],
            "lstm": [{"train": 1.0, "x": 0.4}, {"train": 0.9, "x": 0.5}]}  # fmt: skip
    scores = read_seed_scores(_csv(tmp_path / "s.csv", rows))
    v = endpoint_variance(scores, Endpoint.did("x"))
    gaps_r, gaps_l = np.array([0.5, 0.2, 0.2]), np.array([0.6, 0.4])
    pooled = (2 * gaps_r.var(ddof=1) + 1 * gaps_l.var(ddof=1)) / 3
    assert v.total == pytest.approx(pooled) and v.did == pytest.approx(gaps_l.mean() - gaps_r.mean())
    p_x = np.array([0.5, 0.7, 0.6, 0.4, 0.5])
    assert v.episode["x"] == pytest.approx(float(np.mean(p_x * (1 - p_x) / 99)))
    assert v.episode["train"] == pytest.approx(float(np.mean([0, 0.09, 0.16, 0, 0.09])) / 99)
    assert v.sd() == pytest.approx(math.sqrt(pooled))
    fewer_noise = v.between + v.episode["train"] + v.episode["x"] * 100 / 500
    assert v.sd({"x": 500}) == pytest.approx(math.sqrt(fewer_noise))
    assert v.sd({"x": 10**9}) < v.sd({"x": 500}) < v.sd()
    c = endpoint_variance(scores, Endpoint.contrast("x", "train"))  # per seed: train - x, the same as the gap
    assert c.total == pytest.approx(v.total)


def test_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = _csv(tmp_path / "one.csv", {"rims": [{"train": 1.0, "x": 0.5}], "lstm": [{"train": 1.0, "x": 0.4}] * 2})
    with pytest.raises(ValueError, match="rims has 1 seed"):
        endpoint_variance(read_seed_scores(one), Endpoint.did("x"))
    with pytest.raises(ValueError, match="no score on y"):
        endpoint_variance(read_seed_scores(_csv(tmp_path / "two.csv", {"rims": [{"train": 1, "x": 0.5}] * 2,
                                                                       "lstm": [{"train": 1, "x": 0.4}] * 2})),
                          Endpoint.did("y"))  # fmt: skip
    with pytest.raises(ValueError, match="needs success of both cores"):
        read_seed_scores(_csv(tmp_path / "lstm.csv", {"lstm": [{"train": 1.0}] * 2}))
    assert main(["did", str(tmp_path / "missing.csv")]) == 2
    assert "error" in capsys.readouterr().err


def test_v1_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    """The committed v1 comparison: the LSTM's drops and the primary endpoint's MDE quoted in the v2 protocol."""
    scores = read_seed_scores(V1)
    drops = split_drops(scores)
    hurt = [s for s, (_, low, _) in drops.items() if low > 0]
    assert hurt == ["more-distractors", "novel-distractors", "novel-kinds", "novel-colours"]
    assert drops["novel-distractors"][0] == pytest.approx(0.378, abs=5e-4)
    v = endpoint_variance(scores, Endpoint.did("novel-distractors"))
    assert v.did == pytest.approx(-0.008, abs=5e-4)
    assert mde(v.sd(), 10, t_quantiles=True) == pytest.approx(0.116, abs=5e-4)
    planned = {"train": 500, "more-distractors": 500, "novel-distractors": 500}
    assert mde(v.sd(planned), 40, t_quantiles=True) == pytest.approx(0.048, abs=5e-4)
    planned_args = ["--episodes", "train=500", "novel-distractors=500", "more-distractors=500", "--t-quantiles"]
    assert main(["did", str(V1), *planned_args]) == 0
    out = capsys.readouterr().out
    assert "| did:novel-distractors | -0.008 | 0.088 | 0.31 | 0.076 |" in out
