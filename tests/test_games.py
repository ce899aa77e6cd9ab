"""Across games (rims_rl.evaluation.games): per-game score ratios and their IQM over games."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rims_rl.evaluation import games


def _result(
    folder: Path, name: str, rims: list[float], lstm: list[float], random: float, splits=("train", "no-sticky")
) -> Path:
    scores = []
    for split in splits:
        for mode in ("sampled", "greedy"):
            scores.append({"agent": "rims", "env": split, "actions": mode, "mean": float(np.mean(rims)), "per_seed": rims})
            scores.append({"agent": "lstm", "env": split, "actions": mode, "mean": float(np.mean(lstm)), "per_seed": lstm})
        scores.append({"agent": "random", "env": split, "actions": "random", "mean": random, "per_seed": [random]})
    targets = [{"label": s, "env_id": f"{name}-v0", "ref_score": 0.0} for s in splits]
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"meta": {"setting": name, "targets": targets}, "scores": scores}))
    return folder


def test_ratio_per_game_iqm_and_sign_test(tmp_path: Path) -> None:
    # ratios (S_rims - S_lstm) / (max(S_lstm, 0) - S_random): +1.0, +0.5, 0, -0.25, +2.0
    specs = [([3.0, 3.0, 3.0], [2.0, 2.0, 2.0], 1.0), ([4.0, 4.0, 4.0], [3.0, 3.0, 3.0], 1.0),
             ([2.0, 2.0, 2.0], [2.0, 2.0, 2.0], 0.0), ([4.0, 4.0, 4.0], [5.0, 5.0, 5.0], 1.0),
             ([5.0, 5.0, 5.0], [2.0, 2.0, 2.0], 0.5)]  # fmt: skip
    loaded = [games.load_game(_result(tmp_path / f"g{i}", f"game{i}", *spec)) for i, spec in enumerate(specs)]
    res = games.across_games(loaded, "train", "sampled", n_bootstrap=200)
    assert [round(r["ratio"], 6) for r in res["games"]] == [1.0, 0.5, 0.0, -0.25, 2.0]
    assert res["median"]["value"] == pytest.approx(0.5)
    assert res["iqm"]["value"] == pytest.approx(0.5)  # 25% trimmed mean of 5 values: mean of the middle 3
    assert res["median"]["ci"] == pytest.approx([0.5, 0.5])  # identical seeds: nothing to resample
    assert res["wins"] == 3 and res["n_games"] == 5
    assert res["sign_p"] == pytest.approx(0.625)  # binomial, 3 of the 4 games that are not ties, two-sided


def test_bootstrap_resamples_seeds_within_games(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    loaded = []
    for i in range(5):
        rims, lstm = list(rng.normal(3, 1, 3)), list(rng.normal(3, 1, 3))
        loaded.append(games.load_game(_result(tmp_path / f"g{i}", f"game{i}", rims, lstm, 0.0)))
    res = games.across_games(loaded, "train", "greedy", n_bootstrap=500)
    low, high = res["iqm"]["ci"]
    assert low < res["iqm"]["value"] < high and high - low > 0.05


def test_cli_writes_tables_and_refuses_mistakes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _result(tmp_path / "a", "minatar-breakout", [3.0, 4.0], [2.0, 3.0], 0.5)
    b = _result(tmp_path / "b", "minatar-asterix", [1.0, 2.0], [2.0, 2.5], 0.2, splits=("train", "no-sticky", "no-ramping"))
    out = tmp_path / "out"
    assert games.main([str(a), str(b), "-o", str(out), "--n-bootstrap", "100"]) == 0
    text = (out / "games.md").read_text()
    assert "### split `train`, sampled actions" in text and "no-ramping" not in text  # only splits both games have
    assert (out / "games.csv").read_text().startswith("split,actions,game,")
    capsys.readouterr()
    assert games.main([str(a), str(a), "-o", str(out)]) == 2
    assert "same game" in capsys.readouterr().err
    assert games.main([str(tmp_path / "missing"), "-o", str(out)]) == 2
