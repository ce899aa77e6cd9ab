"""Provenance: each run folder records the commit of the code that trained it; a comparison's pin is checked."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from rims_rl import provenance
from rims_rl.cli.train import main as train_main
from rims_rl.provenance import PROVENANCE_FILE, check_pin, code_version, read_provenance, record_session


def _git(repo: Path, *args: str, date: str | None = None) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    if date is not None:
        env.update(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "rims_rl").mkdir(parents=True)
    (repo / "rims_rl" / "__init__.py").write_text("x = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "code", date="2026-01-01T00:00:00+00:00")
    return repo


def _run(folder: Path, created: str, *sessions: tuple[str | None, bool | None]) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yml").write_text("{}\n")
    data = {"created": created, "sessions": [{"started": created, "commit": c, "dirty": d} for c, d in sessions]}
    (folder / PROVENANCE_FILE).write_text(yaml.safe_dump(data))
    return folder


def test_code_version_of_a_checkout(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    head = _git(repo, "rev-parse", "HEAD")
    assert code_version(repo) == {"commit": head, "dirty": False}
    (repo / "rims_rl" / "__init__.py").write_text("x = 2\n")
    assert code_version(repo) == {"commit": head, "dirty": True}
    (repo / "rims_rl" / "__init__.py").write_text("x = 1\n")
    (repo / "rims_rl" / "new.py").write_text("")  # an untracked source file is a change too
    assert code_version(repo)["dirty"] is True


def test_code_version_outside_a_checkout(tmp_path: Path) -> None:
    assert code_version(tmp_path) == {"commit": None, "dirty": None}
    repo = _repo(tmp_path)
    (repo / "venv" / "site-packages").mkdir(parents=True)  # a package installed inside some other repository
    assert code_version(repo / "venv" / "site-packages") == {"commit": None, "dirty": None}


def test_code_version_when_git_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = _repo(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert code_version(repo) == {"commit": None, "dirty": None}


def test_record_session_appends(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    first = record_session(tmp_path, repo)
    second = record_session(tmp_path, repo)
    assert second["created"] == first["created"]
    assert [s["commit"] for s in read_provenance(tmp_path)["sessions"]] == [_git(repo, "rev-parse", "HEAD")] * 2


def test_trainer_records_each_session(tmp_path: Path) -> None:
    """A fresh run writes provenance.yml with this checkout's commit; extending it adds a second session."""
    fast = ["--env", "RimsCueRecall-v0", "--no-progress", "--verbose", "0", "--eval-freq", "0", "--heldout-episodes", "0"]
    assert train_main([*fast, "-n", "128", "--save-freq", "128", "-f", str(tmp_path)]) == 0
    (run,) = (tmp_path / "rims_ppo").iterdir()
    data = read_provenance(run)
    assert data is not None and len(data["sessions"]) == 1
    assert data["sessions"][0] == {"started": data["created"], **code_version(), "version": data["sessions"][0]["version"]}
    assert dt.datetime.fromisoformat(data["created"]) <= dt.datetime.now(dt.timezone.utc)
    assert train_main(["--resume", str(run), "-n", "256", "--no-progress", "--verbose", "0"]) == 0
    assert len(read_provenance(run)["sessions"]) == 2


def test_check_pin_one_clean_commit(tmp_path: Path) -> None:
    runs = [_run(tmp_path / f"r{i}", "2026-01-02T00:00:00+00:00", ("a" * 40, False)) for i in range(3)]
    check = check_pin(runs)
    assert check.ok and check.commits == ["a" * 40]
    assert "pinned: every run from commit " + "a" * 40 in check.table()


def test_check_pin_refuses_mixed_dirty_and_unrecorded(tmp_path: Path) -> None:
    t = "2026-01-02T00:00:00+00:00"
    resumed_elsewhere = _run(tmp_path / "b", t, ("a" * 40, False), ("b" * 40, False))
    mixed = check_pin([_run(tmp_path / "a", t, ("a" * 40, False)), resumed_elsewhere])
    assert not mixed.ok and mixed.problems == [f"mixed commits: {'a' * 12} (2 runs), {'b' * 12} (1 runs)"]
    dirty = check_pin([_run(tmp_path / "c", t, ("a" * 40, True))])
    assert not dirty.ok and "uncommitted changes" in dirty.problems[0]
    (tmp_path / "d").mkdir()
    missing = check_pin([tmp_path / "d"])
    assert not missing.ok and "no provenance.yml" in missing.problems[0]
    wheel = check_pin([_run(tmp_path / "e", t, (None, None))])
    assert not wheel.ok and "outside a git checkout" in wheel.problems[0]


def test_check_pin_against_the_protocol(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "PROTOCOL.md").write_text("endpoints\n")
    _git(repo, "add", "PROTOCOL.md")
    _git(repo, "commit", "-qm", "protocol", date="2026-02-01T00:00:00+00:00")
    pinned = _git(repo, "rev-parse", "HEAD")
    before = _git(repo, "rev-parse", "HEAD~1")
    (repo / "PROTOCOL.md").write_text("endpoints\namendment\n")
    _git(repo, "commit", "-qam", "amendment", date="2026-03-01T00:00:00+00:00")

    ok = check_pin([_run(tmp_path / "a", "2026-02-02T00:00:00+00:00", (pinned, False))], repo / "PROTOCOL.md")
    assert ok.ok, ok.problems
    assert any("amended" in n and "2026-03-01" in n for n in ok.notes)  # a dated amendment is no violation

    early = check_pin([_run(tmp_path / "b", "2026-01-15T00:00:00+00:00", (pinned, False))], repo / "PROTOCOL.md")
    assert not early.ok and "before the protocol was committed" in early.problems[0]

    old_code = check_pin([_run(tmp_path / "c", "2026-02-02T00:00:00+00:00", (before, False))], repo / "PROTOCOL.md")
    assert not old_code.ok and "does not contain the protocol's commit" in old_code.problems[0]

    (repo / "DRAFT.md").write_text("not committed\n")
    draft = check_pin([tmp_path / "a"], repo / "DRAFT.md")
    assert not draft.ok and "is in no git commit" in draft.problems[0]


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = tmp_path / "sweep"
    _run(sweep / "trial_a" / "rims_ppo" / "Env_1", "2026-01-02T00:00:00+00:00", ("a" * 40, False))
    _run(sweep / "trial_b" / "lstm_ppo" / "Env_1", "2026-01-02T00:00:00+00:00", ("a" * 40, False))
    assert provenance.main([str(sweep)]) == 0
    assert "trial_b" in capsys.readouterr().out
    _run(sweep / "trial_c" / "lstm_ppo" / "Env_1", "2026-01-02T00:00:00+00:00", ("c" * 40, False))
    assert provenance.main([str(sweep)]) == 1
    assert "PIN BROKEN: mixed commits" in capsys.readouterr().out
    assert provenance.main([str(tmp_path / "nothing")]) == 2
