"""Learning curves with seed bands and the flatness check (rims_rl.evaluation.curves)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rims_rl.evaluation import curves


def _run(root: Path, name: str, steps: list[int], means: list[float], env_id: str = "Env-v0") -> Path:
    run = root / name / "rims_ppo" / f"{env_id}_1"
    run.mkdir(parents=True)
    (run / "config.yml").write_text("{}\n")
    (run / f"{env_id}.zip").write_bytes(b"final")
    results = np.repeat(np.asarray(means, dtype=float)[:, None], 4, axis=1)
    np.savez(run / "evaluations.npz", timesteps=np.asarray(steps), results=results, ep_lengths=np.ones_like(results))
    return run


def test_seed_curves_align_on_common_steps_and_band_is_a_t_interval(tmp_path: Path) -> None:
    a = _run(tmp_path, "a", [10, 20, 30], [0.1, 0.2, 0.3])
    b = _run(tmp_path, "b", [10, 20, 30, 40], [0.3, 0.4, 0.5, 0.6])  # a longer run: only the shared steps count
    steps, scores = curves.seed_curves([a, b])
    assert steps.tolist() == [10, 20, 30]
    np.testing.assert_allclose(scores, [[0.1, 0.2, 0.3], [0.3, 0.4, 0.5]])
    mean, low, high = curves.t_interval(scores)
    np.testing.assert_allclose(mean, [0.2, 0.3, 0.4])
    np.testing.assert_allclose(high - mean, 12.706 * 0.1414214 / np.sqrt(2), rtol=1e-3)  # t(0.975, 1) * sd / sqrt(n)
    assert np.all(low < mean)


def test_flatness_tells_a_climbing_curve_from_a_flat_one(tmp_path: Path) -> None:
    steps = list(range(50, 550, 50))  # 10 points up to 500
    rng = np.random.default_rng(0)
    climbing = [_run(tmp_path, f"c{i}", steps, list(np.linspace(0.1, 0.9, 10) + rng.normal(0, 0.01, 10))) for i in range(5)]
    flat = [_run(tmp_path, f"f{i}", steps, list(0.9 + rng.normal(0, 0.01, 10))) for i in range(5)]
    up = curves.flatness(*curves.seed_curves(climbing))
    level = curves.flatness(*curves.seed_curves(flat))
    assert up["from_step"] == 400 and up["to_step"] == 500 and up["n_seeds"] == 5
    assert up["ci_low"] > 0.1  # mean of 450-500 minus mean of 350-400 is ~0.18
    assert level["ci_low"] < 0 < level["ci_high"]


def test_sweep_groups_and_cli_outputs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for entry in ("rims_ppo", "lstm_ppo"):
        for seed in (1, 0):
            _run(sweep, f"grid__{entry}__s{seed}", [10, 20], [0.1 * seed, 0.2])
    unfinished = _run(sweep, "grid__rims_ppo__s2", [10], [0.0])
    (unfinished / "Env-v0.zip").unlink()  # no final model: not counted
    groups = curves.sweep_groups(sweep)
    assert sorted(groups) == ["lstm_ppo", "rims_ppo"]
    assert [p.parts[-3] for p in groups["rims_ppo"]] == ["grid__rims_ppo__s0", "grid__rims_ppo__s1"]
    out = tmp_path / "out"
    assert curves.main([str(sweep), "-o", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"learning_curves.png", "learning_curves.csv", "learning_curves.md"}
    header, first = (out / "learning_curves.csv").read_text().splitlines()[:2]
    assert header == "group,step,n_seeds,mean,ci_low,ci_high,run_0,run_1"
    assert first.startswith("lstm_ppo,10,2,0.05,") and first.endswith(",0,0.1")  # seeds in order
    table = (out / "learning_curves.md").read_text().splitlines()
    assert [row.split(" | ")[0] for row in table[2:]] == ["| lstm_ppo", "| rims_ppo"] and not table[0].startswith("#")


def test_a_sweep_of_several_games_is_curved_per_game_never_mixed(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    level = {"minatar-breakout": 10.0, "minatar-asterix": 1.0}  # scores of different games: averaging them is wrong
    for env, base in level.items():
        for k, entry in enumerate(("rims_ppo", "lstm_ppo")):
            for seed in (0, 1):
                _run(sweep, f"{env}__{entry}__s{seed}", [10, 20], [base + k + seed, base + k + seed + 0.5])
    games = curves.sweep_games(sweep)
    assert {env: sorted(groups) for env, groups in games.items()} == {e: ["lstm_ppo", "rims_ppo"] for e in level}
    assert [p.parts[-3] for p in games["minatar-asterix"]["rims_ppo"]] == [
        "minatar-asterix__rims_ppo__s0", "minatar-asterix__rims_ppo__s1"]  # fmt: skip
    assert sorted(curves.sweep_groups(sweep)) == sorted(f"{e}/{a}" for e in level for a in ("lstm_ppo", "rims_ppo"))
    out = tmp_path / "out"
    assert curves.main([str(sweep), "-o", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {*level, "learning_curves.md"}
    for env, base in level.items():
        assert {p.name for p in (out / env).iterdir()} == {"learning_curves.png", "learning_curves.csv", "learning_curves.md"}
        rows = [line.split(",") for line in (out / env / "learning_curves.csv").read_text().splitlines()[1:]]
        assert {row[0] for row in rows} == {"rims_ppo", "lstm_ppo"}
        for k, entry in enumerate(("rims_ppo", "lstm_ppo")):
            own = [(float(r[6]) + float(r[7])) / 2 for r in rows if r[0] == entry]  # that game's runs only
            means = [float(r[3]) for r in rows if r[0] == entry]
            np.testing.assert_allclose(means, [base + k + 0.5, base + k + 1.0])
            np.testing.assert_allclose(means, own)
        assert (out / env / "learning_curves.md").read_text() in (out / "learning_curves.md").read_text()
    combined = (out / "learning_curves.md").read_text()
    assert combined.index("## minatar-asterix\n") < combined.index("## minatar-breakout\n")
    assert "| rims_ppo | 2 | 10.750 |" in combined and "| rims_ppo | 2 | 1.750 |" in combined  # mixed: 6.250


def test_a_game_without_finished_runs_is_listed_but_written_nowhere(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        _run(sweep, f"minatar-breakout__rims_ppo__s{seed}", [10, 20], [0.1, 0.2 + seed])
    (sweep / "minatar-freeway__rims_ppo__s0").mkdir()  # started, nothing finished yet: still a game of this sweep
    out = tmp_path / "out"
    assert curves.main([str(sweep), "-o", str(out)]) == 0
    assert (out / "minatar-breakout" / "learning_curves.png").is_file() and not (out / "minatar-freeway").exists()
    assert "## minatar-freeway\n\nNo finished runs yet." in (out / "learning_curves.md").read_text()
    with pytest.raises(SystemExit) as exit_info:  # extra runs cannot join a sweep of several games
        curves.main([str(sweep), "--group", f"x={sweep}", "-o", str(out)])
    assert exit_info.value.code == 2


def test_one_seed_has_no_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one = [_run(tmp_path, "one", [10, 20, 30, 40], [0.1, 0.2, 0.3, 0.4])]
    two = [_run(tmp_path, f"two{i}", [10, 20, 30, 40], [0.1, 0.2 + i, 0.3, 0.4 + i]) for i in range(2)]
    groups = {"solo": one, "pair": two}
    mean, low, high = curves.t_interval(curves.seed_curves(one)[1])
    np.testing.assert_allclose(mean, [0.1, 0.2, 0.3, 0.4])
    assert np.isnan(low).all() and np.isnan(high).all()  # no zero-width interval
    table = curves.flatness_markdown(groups)
    solo, pair = (line for line in table.splitlines()[2:])
    assert solo.startswith("| solo | 1 |") and solo.endswith("| n/a (1 seed) |")
    assert "n/a" not in pair and pair.endswith("] |")
    rows = [line.split(",") for line in curves.curves_csv(groups).splitlines()[1:]]
    assert all(r[4] == r[5] == "" for r in rows if r[0] == "solo")
    assert all(float(r[4]) < float(r[3]) < float(r[5]) for r in rows if r[0] == "pair" and r[6] != r[7])
    bands: list[str] = []
    from matplotlib.axes import Axes

    fill_between = Axes.fill_between

    def spy(self: Axes, *args: Any, **kwargs: Any) -> Any:
        bands.append(kwargs["color"])
        return fill_between(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "fill_between", spy)
    curves.plot_curves(groups, tmp_path / "curves.png")
    assert bands == ["C1"] and (tmp_path / "curves.png").stat().st_size > 0  # a band for the pair only
    out = tmp_path / "out"
    assert curves.main(["--group", f"solo={one[0]}", "-o", str(out)]) == 0
    assert "n/a (1 seed)" in (out / "learning_curves.md").read_text()


def test_cli_usage_mistakes_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        curves.main([str(tmp_path / "missing"), "-o", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert curves.main(["--group", f"x={tmp_path / 'nothing'}", "-o", str(tmp_path / "o")]) == 2
    assert "no evaluations.npz" in capsys.readouterr().err
