"""What a pre-registered comparison needs from the evaluator and the sweep report: per-split episode counts,
aggregates over a chosen set of held-out splits, DiD contrasts of two splits, and the check of the runs' pin."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from rims_rl.cli.evaluate import main as evaluate_main
from rims_rl.evaluation.report import comparison_csv, did_rows, headline_table, protocol_lines
from rims_rl.evaluation.scores import EnvScores, compare, iqm, welch
from rims_rl.evaluation.targets import setting_targets

SPLITS = ["train", "known", "more-distractors", "novel-distractors", "novel-kinds"]


def _scores(seed: int = 0, n_rims: int = 6, n_lstm: int = 7) -> list[EnvScores]:
    """Success episodes (0/1) per seed and split; the LSTM loses more on the novel splits."""
    rng = np.random.default_rng(seed)
    drop = {"rims": [0, 0, 0.2, 0.3, 0.3], "lstm": [0, 0, 0.2, 0.45, 0.4]}
    runs = {core: [[(rng.random(40) < 0.95 - d - rng.normal(0, 0.05)).astype(float) for d in drop[core]]
                   for _ in range(n)] for core, n in (("rims", n_rims), ("lstm", n_lstm))}  # fmt: skip
    return [EnvScores(s, s, 1.0, np.zeros(40), [r[j] for r in runs["rims"]], [r[j] for r in runs["lstm"]])
            for j, s in enumerate(SPLITS)]  # fmt: skip


def _seed_means(env_scores: list[EnvScores], core: str) -> np.ndarray:
    return np.array([[run.mean() for run in getattr(es, core)] for es in env_scores]).T  # (seeds, splits)


@pytest.mark.parametrize("method", ["welch", "bootstrap"])
def test_contrast_is_the_difference_of_two_dids(method: str) -> None:
    env_scores = _scores()
    c = compare(env_scores, n_bootstrap=200, method=method, metric="success",
                contrasts=[("novel-distractors", "more-distractors")])  # fmt: skip
    (k,) = c.contrasts
    did = {r.env: r.did for r in c.envs if r.heldout}
    assert k.value == pytest.approx(did["novel-distractors"] - did["more-distractors"])
    r, lstm = _seed_means(env_scores, "rims"), _seed_means(env_scores, "lstm")
    m, n = SPLITS.index("more-distractors"), SPLITS.index("novel-distractors")
    assert k.rims_per_seed == pytest.approx((r[:, m] - r[:, n]).tolist())
    assert k.lstm_per_seed == pytest.approx((lstm[:, m] - lstm[:, n]).tolist())
    _, low, high, p, _ = welch((lstm[:, m] - lstm[:, n])[:, None], (r[:, m] - r[:, n])[:, None])
    assert k.p_welch == pytest.approx(float(p[0]))
    if method == "welch":
        assert k.ci == pytest.approx((float(low[0]), float(high[0])))
    assert k.ci[0] <= k.value <= k.ci[1] and 0 < k.p_perm <= 1


def test_aggregates_over_chosen_splits() -> None:
    env_scores = _scores(1)
    chosen = ["more-distractors", "novel-distractors", "novel-kinds"]
    every = compare(env_scores, n_bootstrap=200, metric="success")
    some = compare(env_scores, n_bootstrap=200, metric="success", aggregate_splits=chosen)
    dids = {r.env: r.did for r in some.envs if r.heldout}
    assert some.aggregates["did"].iqm == pytest.approx(float(iqm(np.array([dids[s] for s in chosen]))))
    assert some.aggregates["did"].median == pytest.approx(float(np.median([dids[s] for s in chosen])))
    assert some.aggregates["did"].n_envs == 3 and every.aggregates["did"].n_envs == 4
    assert every.aggregates["did"].iqm != pytest.approx(some.aggregates["did"].iqm)
    diffs = {r.env: r.difference for r in some.envs}
    assert some.aggregates["difference"].median == pytest.approx(float(np.median([diffs[s] for s in chosen])))
    assert [r.env for r in some.envs if r.in_aggregate] == chosen and some.aggregate_splits == chosen
    assert [r.did for r in every.envs] == pytest.approx([r.did for r in some.envs], nan_ok=True)  # per split: unchanged
    with pytest.raises(ValueError, match="not a held-out split"):
        compare(env_scores, n_bootstrap=50, aggregate_splits=["train"])
    with pytest.raises(ValueError, match="not a held-out split"):
        compare(env_scores, n_bootstrap=50, contrasts=[("novel-distractors", "larger-room")])


def test_report_shows_contrast_and_aggregated_splits() -> None:
    chosen = ["more-distractors", "novel-distractors"]
    c = compare(_scores(2), n_bootstrap=100, metric="success", aggregate_splits=chosen,
                contrasts=[("novel-distractors", "more-distractors")])  # fmt: skip
    rows = {row[0]: row for row in did_rows(c)}
    assert "known (not aggregated)" in rows and "novel-distractors" in rows
    assert "DiD novel-distractors - DiD more-distractors" in rows
    assert "IQM (more-distractors, novel-distractors)" in rows
    _, headline = headline_table([c])
    assert [r[0] for r in headline][-3:] == ["DiD novel-distractors - DiD more-distractors",
                                             "median (more-distractors, novel-distractors)",
                                             "IQM (more-distractors, novel-distractors)"]  # fmt: skip
    csv_rows = comparison_csv(c).splitlines()
    (contrast,) = [line for line in csv_rows if line.split(",")[3] == "contrast:novel-distractors|more-distractors"]
    assert f"{c.contrasts[0].value}" in contrast
    assert "only these held-out splits: more-distractors, novel-distractors" in "".join(protocol_lines([c], {}))


def test_per_split_episode_counts() -> None:
    targets = setting_targets("gridworld-pickup", None, 100, None, None, {"train": 500, "novel-distractors": 500})
    counts = {t.label: t.n_episodes for t in targets}
    assert counts["train"] == counts["novel-distractors"] == 500
    assert counts["known"] == counts["larger-room"] == 100
    with pytest.raises(ValueError, match="has no split"):
        setting_targets("gridworld-pickup", None, 100, split_episodes={"novel": 500})
    with pytest.raises(ValueError, match="not evaluated"):
        setting_targets("gridworld-pickup", ["train", "known"], 100, split_episodes={"novel-distractors": 500})


def test_report_states_per_split_episodes() -> None:
    env_scores = _scores(3)
    env_scores[0] = EnvScores("train", "train", 1.0, np.zeros(80), [np.ones(80)] * 6, [np.ones(80)] * 7)
    line = protocol_lines([compare(env_scores, n_bootstrap=50, metric="success")], {})[0]
    assert "episodes per seed: 80 on train, 40 on known" in line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--split-episodes", "train"], "must be SPLIT=N"),
        (["--split-episodes", "train=0"], "positive"),
        (["--contrast", "novel-distractors"], "must be SPLIT_A:SPLIT_B"),
        (["--env", "RimsCueRecall-v0", "--split-episodes", "train=5"], "use --setting"),
        (["--setting", "gridworld-pickup", "--aggregate-splits", "train"], "not an evaluated held-out split"),
        (
            ["--setting", "gridworld-pickup", "--splits", "train", "known", "--contrast", "known:novel-kinds"],
            "'novel-kinds' is not an evaluated held-out split",
        ),
    ],
)
def test_cli_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Bad protocol options: one line, exit code 2, before any agent is looked up."""
    assert evaluate_main([*argv, "--rims", str(tmp_path / "none"), "--lstm", str(tmp_path / "none"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("evaluate.py: error: ") and err.count("\n") == 1 and message in err, err


# --- the sweep report: options passed to the evaluator, and the pin check -----------------------------------------


def _git(repo: Path, *args: str, date: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}  # fmt: skip
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


def _fake_runs(monkeypatch: pytest.MonkeyPatch, root: Path, commits: dict[str, str]) -> None:
    """Every trial is done; its run folder holds a provenance.yml with the commit given for its entry."""
    import rims_rl.sweep as sweep_module

    def run_folder(folder: Path, trial: object) -> Path:
        run = root / trial.name  # type: ignore[attr-defined]
        run.mkdir(parents=True, exist_ok=True)
        session = {"started": "2026-03-01T00:00:00+00:00", "commit": commits[trial.entry], "dirty": False}  # type: ignore[attr-defined]
        (run / "provenance.yml").write_text(yaml.safe_dump({"created": session["started"], "sessions": [session]}))
        return run

    monkeypatch.setattr(sweep_module, "trial_state", lambda folder, trial: "done")
    monkeypatch.setattr(sweep_module, "run_folder", run_folder)


def test_sweep_report_options_and_pin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    import rims_rl.cli.evaluate as evaluate_cli
    from rims_rl.sweep import main

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "PROTOCOL.md").write_text("endpoints\n")
    _git(repo, "init", "-q", date="2026-02-01T00:00:00+00:00")
    _git(repo, "add", ".", date="2026-02-01T00:00:00+00:00")
    _git(repo, "commit", "-qm", "protocol", date="2026-02-01T00:00:00+00:00")
    head = _git(repo, "rev-parse", "HEAD", date="2026-02-01T00:00:00+00:00")
    calls: list[list[str]] = []
    monkeypatch.setattr(evaluate_cli, "main", lambda argv: calls.append(argv) or 0)
    report = {"n_episodes": 100, "split_episodes": {"train": 500, "novel-distractors": 500},
              "aggregate_splits": ["more-distractors", "novel-distractors"],
              "contrasts": ["novel-distractors:more-distractors"], "protocol": str(repo / "PROTOCOL.md")}  # fmt: skip
    spec = tmp_path / "v2.yml"
    spec.write_text(yaml.safe_dump({"name": "v2", "settings": ["gridworld-pickup"], "seeds": 1, "n_timesteps": 64,
                                    "algos": ["rims_ppo", "lstm_ppo"], "report": report}))  # fmt: skip
    out = tmp_path / "out"

    _fake_runs(monkeypatch, tmp_path / "runs", {"rims_ppo": head, "lstm_ppo": head})
    assert main([str(spec), "--folder", str(out), "--report"]) == 0
    (argv,) = calls
    i = argv.index("--split-episodes")
    assert sorted(argv[i + 1 : i + 3]) == ["novel-distractors=500", "train=500"]
    assert argv[argv.index("--aggregate-splits") + 1 : argv.index("--aggregate-splits") + 3] == report["aggregate_splits"]
    assert argv[argv.index("--contrast") + 1] == "novel-distractors:more-distractors"
    assert f"pinned: every run from commit {head}" in (out / "report" / "provenance.md").read_text()

    calls.clear()
    _fake_runs(monkeypatch, tmp_path / "runs2", {"rims_ppo": head, "lstm_ppo": "f" * 40})
    capsys.readouterr()
    assert main([str(spec), "--folder", str(out), "--report"]) == 2
    err = capsys.readouterr().err
    assert "rims-sweep: error: report refused: the runs are not pinned" in err and "mixed commits" in err
    assert not calls  # nothing evaluated


@pytest.mark.parametrize(
    ("report", "message"),
    [
        ({"split_episodes": {"train": 0}}, "report.split_episodes.train must be an integer >= 1"),
        ({"split_episodes": ["train"]}, "report.split_episodes must be a mapping"),
        ({"contrasts": ["novel-distractors"]}, "report.contrasts must be a list of 'SPLIT_A:SPLIT_B'"),
        ({"aggregate_splits": "novel-distractors"}, "report.aggregate_splits must be a non-empty list"),
        ({"protocol": "no/such/PROTOCOL.md"}, "report.protocol: no such file /"),
    ],
)
def test_bad_report_options(tmp_path: Path, report: dict, message: str) -> None:
    from rims_rl.sweep import SweepError, load_sweep

    spec = tmp_path / "bad.yml"
    spec.write_text(yaml.safe_dump({"settings": ["gridworld-pickup"], "seeds": 1, "n_timesteps": 64, "report": report}))
    with pytest.raises(SweepError, match=message.replace("(", r"\(")):
        load_sweep(spec, str(tmp_path / "out"))
