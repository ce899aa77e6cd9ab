"""Across games (rims_rl.evaluation.games): per-game score ratios, the inclusion rule and the intervals over games."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from rims_rl.evaluation import games

MINATAR = Path(__file__).resolve().parents[1] / "docs" / "results" / "minatar_250k"


def _result(
    folder: Path,
    name: str,
    rims: list[float],
    lstm: list[float],
    random: float | list[float],
    splits=("train", "no-sticky"),
    episodes_csv: bool = False,
) -> Path:
    """An evaluator result folder: results.json (and episodes.csv with the random episodes when asked)."""
    episodes = [float(x) for x in np.atleast_1d(random)]
    mean = float(np.mean(episodes))
    half = 0.0 if len(episodes) < 2 else float(np.std(episodes, ddof=1) / math.sqrt(len(episodes)) * 2.0)
    scores = []
    for split in splits:
        for mode in ("sampled", "greedy"):
            scores.append({"agent": "rims", "env": split, "actions": mode, "mean": float(np.mean(rims)), "per_seed": rims})
            scores.append({"agent": "lstm", "env": split, "actions": mode, "mean": float(np.mean(lstm)), "per_seed": lstm})
        scores.append({"agent": "random", "env": split, "actions": "random", "mean": mean, "per_seed": [mean],
                       "ci": [mean - half, mean + half], "n_episodes": len(episodes)})  # fmt: skip
    targets = [{"label": s, "env_id": f"{name}-v0", "ref_score": 0.0} for s in splits]
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"meta": {"setting": name, "targets": targets}, "scores": scores}))
    if episodes_csv:
        lines = ["agent,core,actions,env,episode,return,length,success"]
        lines += [f"random,random,random,{s},{i},{x},10," for s in splits for i, x in enumerate(episodes)]
        (folder / "episodes.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_ratio_per_game_iqm_and_sign_test(tmp_path: Path) -> None:
    # ratios (S_rims - S_lstm) / (max(S_lstm, 0) - S_random): +1.0, +0.5, 0, -0.25, +2.0 (every LSTM margin >= 1)
    specs = [([3.0, 3.0, 3.0], [2.0, 2.0, 2.0], 1.0), ([4.0, 4.0, 4.0], [3.0, 3.0, 3.0], 1.0),
             ([2.0, 2.0, 2.0], [2.0, 2.0, 2.0], 0.0), ([4.0, 4.0, 4.0], [5.0, 5.0, 5.0], 1.0),
             ([5.0, 5.0, 5.0], [2.0, 2.0, 2.0], 0.5)]  # fmt: skip
    loaded = [games.load_game(_result(tmp_path / f"g{i}", f"game{i}", *spec)) for i, spec in enumerate(specs)]
    res = games.across_games(loaded, "train", "sampled", n_bootstrap=200)
    assert [round(r["ratio"], 6) for r in res["games"]] == [1.0, 0.5, 0.0, -0.25, 2.0]
    assert all(r["included"] and not r["floored"] for r in res["games"]) and res["n_included"] == 5
    assert res["median"]["value"] == pytest.approx(0.5)
    assert res["iqm"]["value"] == pytest.approx(0.5)  # 25% trimmed mean of 5 values: mean of the middle 3
    assert res["median"]["ci"] == pytest.approx([0.5, 0.5])  # identical seeds, one random score: nothing varies
    assert res["wins"] == 3 and res["n_games"] == 5
    assert res["sign_p"] == pytest.approx(0.625)  # binomial, 3 of the 4 games that are not ties, two-sided


def test_inclusion_rule_and_the_floor(tmp_path: Path) -> None:
    # learned: both cores beat random by 5 (in, ratio 1/5); unlearned: neither beats it by 1 (out, still listed);
    # rims-only: the LSTM at random (in, its denominator floored at 1)
    specs = {"learned": ([6.0, 7.0, 8.0], [5.0, 6.0, 7.0], 1.0), "unlearned": ([1.2, 1.3, 1.1], [1.1, 1.0, 1.2], 0.8),
             "rims-only": ([4.0, 4.5, 5.0], [1.0, 1.2, 1.1], 1.0)}  # fmt: skip
    loaded = [games.load_game(_result(tmp_path / k, k, *v)) for k, v in specs.items()]
    res = games.across_games(loaded, "train", "sampled", n_bootstrap=300)
    rows = {r["game"]: r for r in res["games"]}
    assert [rows[k]["included"] for k in specs] == [True, False, True] and res["n_included"] == 2
    assert rows["learned"]["ratio"] == pytest.approx(1 / 5) and not rows["learned"]["floored"]
    assert rows["rims-only"]["ratio"] == pytest.approx((4.5 - 1.1) / 1.0) and rows["rims-only"]["floored"]
    assert rows["unlearned"]["ratio"] == pytest.approx((1.2 - 1.1) / 1.0)  # floored, reported, not aggregated
    assert res["median"]["value"] == pytest.approx((0.2 + 3.4) / 2)  # over the two included games only
    text = games.games_markdown([res])
    assert "| unlearned | 1.200 (3) | 1.100 (3) | 0.800 |" in text and "over 2 of 3 games" in text


def test_undefined_replicates_are_counted_not_dropped(tmp_path: Path) -> None:
    # one LSTM seed failed (0): replicates of its seed alone have max(S_lstm, 0) - S_random <= 0 (random: 3.5)
    folder = _result(tmp_path / "g", "g", [9.0, 10.0, 11.0], [0.0, 12.0, 13.0], 3.5)
    st = games.ratio_intervals([games.load_game(folder).sample("train", "sampled")], n_bootstrap=2000)
    assert st.n_replicates == 3 * 2000
    # only the LSTM's resamples move the denominator: {0,0,0} (probability 1/27) is undefined; the floor binds
    # there and where two of the three seeds are the failed one (means 4 and 4.33 < 3.5 + 1: another 6/27)
    assert abs(st.n_undefined[0] / 2000 - 1 / 27) < 0.015 and abs(st.n_floored[0] / 2000 - 7 / 27) < 0.04
    assert np.isfinite(st.low).all() and np.isfinite(st.high).all() and np.isfinite(st.agg["iqm"][1])


def test_the_denominators_uncertainty_widens_the_ratio_interval(tmp_path: Path) -> None:
    rims, lstm = [7.0, 8.0, 9.0], [5.0, 6.0, 7.0]
    fixed = _result(tmp_path / "fixed", "g", rims, lstm, [1.0] * 30, episodes_csv=True)
    noisy = _result(tmp_path / "noisy", "g", rims, lstm, [-4.0, 6.0] * 15, episodes_csv=True)  # same mean, spread
    se = {}
    for name, folder in (("fixed", fixed), ("noisy", noisy)):
        sample = games.load_game(folder).sample("train", "sampled")
        assert sample.random_episodes is not None and sample.random_n == 30
        st = games.ratio_intervals([sample], n_bootstrap=4000, rng=np.random.default_rng(0))
        assert st.ratio[0] == pytest.approx(2 / 5)
        se[name] = float(st.se[0])
    # (the interval itself need not widen: a well-measured source adds degrees of freedom, a smaller t quantile)
    # delta method: the random score's variance s^2/m enters as (ratio / denominator)^2 s^2/m
    expected = (0.4 / 5) ** 2 * np.var([-4.0, 6.0] * 15, ddof=1) / 30
    assert se["noisy"] ** 2 - se["fixed"] ** 2 == pytest.approx(expected, rel=0.3)
    # and the LSTM's seeds move the denominator: the ratio's variance exceeds the numerator's alone over it
    one = games.ratio_intervals([games.load_game(fixed).sample("train", "sampled")], n_bootstrap=4000)
    welch_half = 4.303 * math.sqrt(2 * np.var(rims, ddof=1) / 3) / 5  # t(2) x se of the difference / denominator
    assert (one.high[0] - one.low[0]) / 2 > welch_half * 0.8


def test_fewer_than_three_seeds_give_no_interval(tmp_path: Path) -> None:
    a = games.load_game(_result(tmp_path / "a", "a", [3.0, 4.0], [2.0, 3.0], 0.5))
    b = games.load_game(_result(tmp_path / "b", "b", [5.0, 6.0, 7.0], [5.0, 6.0, 4.0], 0.5))
    res = games.across_games([a, b], "train", "sampled", n_bootstrap=100)
    assert "n/a" in res["note"] and "2 seed(s)" in res["note"]
    assert all(math.isnan(x) for r in res["games"] for x in r["ci"]) and math.isnan(res["iqm"]["ci"][0])
    text = games.games_markdown([res])
    assert "| +0.500 n/a |" in text and "(n/a: 2 seed(s) in a core; the intervals are calibrated from 3" in text


def test_scores_csv_folder_reads_as_its_results_json(tmp_path: Path) -> None:
    source = MINATAR / "eval" / "minatar-breakout"
    for name in ("scores.csv", "ratios.csv", "episodes.csv"):
        shutil.copy(source / name, tmp_path / name)
    from_json, from_csv = games.load_game(source), games.load_game(tmp_path)
    for split, modes in from_json.splits.items():
        for mode, s in modes.items():
            c = from_csv.splits[split][mode]
            assert c["rims"] == pytest.approx(s["rims"]) and c["lstm"] == pytest.approx(s["lstm"])
            assert (c["random"], c["random_n"], c["ref"]) == pytest.approx((s["random"], s["random_n"], s["ref"]))
            assert c["random_se"] == pytest.approx(s["random_se"], rel=1e-6) and s["random_se"] > 0
            assert c["random_episodes"] == s["random_episodes"] and len(s["random_episodes"]) == 30


def test_cli_writes_tables_and_refuses_mistakes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _result(tmp_path / "a", "minatar-breakout", [3.0, 4.0, 5.0], [2.0, 3.0, 3.5], 0.5)
    three = ("train", "no-sticky", "no-ramping")
    b = _result(tmp_path / "b", "minatar-asterix", [1.0, 2.0, 3.0], [2.0, 2.5, 3.0], 0.2, splits=three)
    out = tmp_path / "out"
    assert games.main([str(a), str(b), "-o", str(out), "--n-bootstrap", "100"]) == 0
    text = (out / "games.md").read_text()
    assert "### split `train`, sampled actions" in text and "no-ramping" not in text  # only splits both games have
    rows = (out / "games.csv").read_text().splitlines()
    assert rows[0].startswith("split,actions,game,") and "n_floored" in rows[0] and "n_undefined" in rows[0]
    assert sum(r.startswith("train,sampled,") for r in rows) == 2 + 2  # two games, then median and IQM
    capsys.readouterr()
    assert games.main([str(a), str(a), "-o", str(out)]) == 2
    assert "same game" in capsys.readouterr().err
    assert games.main([str(tmp_path / "missing"), "-o", str(out)]) == 2
    assert games.main([str(a), str(b), "-o", str(out), "--margin", "0"]) == 2
    assert "margin must be > 0" in capsys.readouterr().err


def test_seeds_for_power_matches_the_textbook_and_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rims_rl.evaluation import power

    # two-sample t-test, 80% power, two-sided 5%: 17 per group for a 1-SD difference, 64 for half an SD
    assert power.seeds_for_power(1.0, 1.0) == 17 and power.seeds_for_power(0.5, 1.0) == 64
    assert power.seeds_for_power(1e-3, 1.0) is None
    # a game whose LSTM beats random by 10 with seed SD 1: ratio 0.1 is a 1-SD difference
    folder = _result(tmp_path / "g", "g", [9.0, 10.0, 11.0], [9.0, 10.0, 11.0], 0.0)
    (row, _) = power.seeds_needed([games.load_game(folder)], ratios=(0.1,))
    assert row["denominator"] == pytest.approx(10.0) and row["sigma"] == pytest.approx(1.0) and row["included"]
    assert row["n_0.1"] == 17 and row["n_high_0.1"] > 17
    out = tmp_path / "out"
    assert power.main(["ratio", str(folder), "-o", str(out), "--ratio", "0.1", "0.2"]) == 0
    assert "| g | train | yes | 10.00 | 1.00 (" in (out / "seeds_needed.md").read_text()
    assert (out / "seeds_needed.csv").read_text().splitlines()[1].startswith("g,train,1,10,1,")
    with pytest.raises(SystemExit) as exc:
        power.main(["ratio", str(folder), "-o", str(out), "--power", "1.5"])
    assert exc.value.code == 2
