"""Which code trained a run: the git commit of the package's source tree, recorded in the run folder.

Every start of the trainer on a run folder (the fresh start, then each resume or extension) appends one session
to ``<run>/provenance.yml``::

    created: '2026-12-01T10:00:00+00:00'   # when the run folder was created (its first session)
    sessions:
    - {started: '2026-12-01T10:00:00+00:00', commit: 1a2b..., dirty: false, version: 0.1.0}
    - {started: ..., commit: ..., dirty: ...}   # a resume

``commit`` is ``git rev-parse HEAD`` of the checkout the ``rims_rl`` package was imported from, and ``dirty`` whether
that checkout had changes (``git status --porcelain``: tracked or untracked files not ignored); both are None when
the package is not a git checkout (an installed wheel) or git is missing. :func:`check_pin` reads these records
back for a pre-registered comparison: every run must come from one clean commit, created after the protocol file was
committed. ``python -m rims_rl.provenance SWEEP_FOLDER --protocol PROTOCOL.md`` prints the table and the verdict.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROVENANCE_FILE = "provenance.yml"
GIT_TIMEOUT_S = 10.0


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _git(cwd: Path, *args: str) -> str | None:
    """:return: git's stdout (stripped), or None when git is missing, fails or takes longer than GIT_TIMEOUT_S."""
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}
    try:
        done = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S,
                              env=env, check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def source_root() -> Path:
    """:return: the folder holding the imported ``rims_rl`` package (a checkout's root, or site-packages)."""
    return Path(__file__).resolve().parent.parent


def code_version(root: Path | None = None) -> dict[str, Any]:
    """
    :param root: the folder holding the ``rims_rl`` package (default: the imported one's)
    :return: ``{"commit": str | None, "dirty": bool | None}``; None for both unless ``root`` is the top of a git
        work tree (an installed package inside some other repository is not that repository's code)
    """
    root = (root or source_root()).resolve()
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root:
        return {"commit": None, "dirty": None}
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain") if commit is not None else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def record_session(run_folder: str | os.PathLike[str], root: Path | None = None) -> dict[str, Any]:
    """
    Append this start of the trainer to ``<run_folder>/provenance.yml`` (with ``created`` on the first).

    :param run_folder: the run folder
    :param root: the folder holding the ``rims_rl`` package (default: the imported one's)
    :return: the file's content as written
    """
    from rims_rl import __version__
    from rims_rl.checkpoint import atomic_write

    path = Path(run_folder) / PROVENANCE_FILE
    data = read_provenance(run_folder) or {}
    now = _now()
    data.setdefault("created", now)
    session = {"started": now, **code_version(root), "version": __version__}
    data["sessions"] = [*data.get("sessions", []), session]
    with atomic_write(path) as file:
        file.write(yaml.safe_dump(data, sort_keys=False).encode())
    return data


def read_provenance(run_folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """:return: ``<run_folder>/provenance.yml`` as a mapping, or None when absent or not a mapping of sessions"""
    path = Path(run_folder) / PROVENANCE_FILE
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("sessions", []), list):
        return None
    return data


def protocol_commit(protocol: str | os.PathLike[str]) -> tuple[str, dt.datetime, list[str]] | None:
    """
    :param protocol: a file committed in a git repository (the pre-registration)
    :return: (the commit that added it, that commit's time, the later commits that changed it, each as
        ``"<hash> <ISO time>"``), or None when the file is in no commit
    """
    path = Path(protocol).resolve()
    log = _git(path.parent, "log", "--format=%H %cI", "--", path.name)
    if not log:
        return None
    lines = log.splitlines()  # newest first
    first, when = lines[-1].split(" ", 1)
    return first, dt.datetime.fromisoformat(when), lines[:-1]


@dataclass
class PinCheck:
    """The recorded code version of every run of a comparison, and what breaks the pin.

    :param runs: run folder -> its sessions' commits (None: not a git checkout), dirty flags and creation time
    :param problems: one line per violation (empty: every run comes from one clean commit, after the protocol)
    :param notes: information that is no violation (the protocol's later, dated amendments)
    """

    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def commits(self) -> list[str | None]:
        """The distinct commits recorded, in order of first appearance."""
        return list(dict.fromkeys(c for r in self.runs.values() for c in r["commits"]))

    @property
    def ok(self) -> bool:
        """Whether the comparison is pinned: no problem found."""
        return not self.problems

    def table(self) -> str:
        """:return: a markdown table, one row per run, then the problems and notes"""
        rows = ["| run | created | commit(s) | dirty |", "| --- | --- | --- | --- |"]
        for run, r in self.runs.items():
            commits = ", ".join("none" if c is None else c[:12] for c in dict.fromkeys(r["commits"])) or "no record"
            dirty = ", ".join(str(d) for d in dict.fromkeys(r["dirty"])) or "?"
            rows.append(f"| {run} | {r['created'] or '?'} | {commits} | {dirty} |")
        lines = ["\n".join(rows), ""]
        pinned = f"pinned: every run from commit {self.commits[0]}" if self.runs else "no run to check"
        lines += [f"PIN BROKEN: {p}" for p in self.problems] or [pinned]
        return "\n".join(lines + self.notes)


def check_pin(run_folders: Sequence[str | os.PathLike[str]], protocol: str | os.PathLike[str] | None = None) -> PinCheck:
    """
    Check that every run was trained, in every session, by one clean commit, and (with ``protocol``) that each run
    folder was created after the protocol file was first committed, by code that contains it.

    :param run_folders: the compared run folders
    :param protocol: the pre-registration file (None: only the commits are checked)
    :return: the runs' records and the problems found
    """
    check = PinCheck()
    for folder in run_folders:
        data = read_provenance(folder)
        sessions = [s for s in (data or {}).get("sessions", []) if isinstance(s, dict)]
        check.runs[str(folder)] = {"created": (data or {}).get("created"), "commits": [s.get("commit") for s in sessions],
                                   "dirty": [s.get("dirty") for s in sessions]}  # fmt: skip
        if not sessions:
            check.problems.append(f"{folder}: no {PROVENANCE_FILE} (trained by code that did not record its commit)")
        elif any(s.get("commit") is None for s in sessions):
            check.problems.append(f"{folder}: a session ran from code outside a git checkout (no commit recorded)")
        if any(s.get("dirty") for s in sessions):
            check.problems.append(f"{folder}: trained by a checkout with uncommitted changes")
    commits = [c for c in check.commits if c is not None]
    if len(commits) > 1:
        counts = {c: sum(c in r["commits"] for r in check.runs.values()) for c in commits}
        check.problems.append("mixed commits: " + ", ".join(f"{c[:12]} ({n} runs)" for c, n in counts.items()))
    if protocol is not None:
        _check_protocol(check, Path(protocol), commits)
    return check


def _check_protocol(check: PinCheck, protocol: Path, commits: list[str]) -> None:
    found = protocol_commit(protocol)
    if found is None:
        check.problems.append(f"{protocol} is in no git commit: the protocol must be committed before the runs")
        return
    first, when, amendments = found
    check.notes.append(f"protocol {protocol.name}: committed {when.isoformat()} ({first[:12]})")
    check.notes += [f"  amended: {line[:12]} {line.split(' ', 1)[1]}" for line in amendments]
    for run, r in check.runs.items():
        try:
            created = dt.datetime.fromisoformat(str(r["created"]))
        except ValueError:
            continue  # no record: reported above
        if created < when:
            check.problems.append(f"{run}: created {r['created']}, before the protocol was committed ({when.isoformat()})")
    for commit in commits:
        if _git(protocol.parent, "merge-base", "--is-ancestor", first, commit) is None:
            check.problems.append(f"commit {commit[:12]} does not contain the protocol's commit {first[:12]}")


def sweep_run_folders(sweep_folder: str | os.PathLike[str]) -> list[Path]:
    """:return: the run folders of a sweep folder (``<sweep>/<trial>/<algo>/<env>_<n>/``, those with a config.yml)"""
    return sorted(p.parent for p in Path(sweep_folder).glob("*/*/*/config.yml"))


def main(argv: list[str] | None = None) -> int:
    """
    ``python -m rims_rl.provenance SWEEP_FOLDER [--protocol FILE]``: print each run's recorded commit and whether
    the sweep is pinned.

    :return: 0 pinned, 1 not pinned, 2 bad usage (no run folder found)
    """
    p = argparse.ArgumentParser(prog="python -m rims_rl.provenance", description="Check that a sweep's runs share one "
                                "clean commit, created after the protocol was committed.")  # fmt: skip
    p.add_argument("folders", nargs="+", help="sweep folders or run folders")
    p.add_argument("--protocol", default=None, help="the pre-registration file, committed in git")
    args = p.parse_args(argv)
    runs = [r for f in args.folders for r in ([Path(f)] if (Path(f) / "config.yml").is_file() else sweep_run_folders(f))]
    if not runs:
        print(f"{p.prog}: error: no run folder (with config.yml) in {', '.join(args.folders)}", file=sys.stderr)
        return 2
    check = check_pin(runs, args.protocol)
    print(check.table())
    return 0 if check.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
