"""``rims-sweep`` / ``python sweep.py SWEEP.yml``: settings x algos x seeds as Ray trials, resumable.

A sweep file (``sweeps/*.yml``, read with ``yaml.safe_load``) names the settings or env ids, the seeds, the algos
(``rims_ppo``, ``lstm_ppo`` and named variants with ``-params`` overrides) and the budget. Every trial runs the
training CLI, ``rims_rl.cli.train.main``, in a child process of a Ray task, with ``-f <sweep>/<trial>``: the run
folder is ``<sweep>/<trial>/<algo>/<env>_1/`` (rl-baselines3-zoo layout). The sweep's state lives only in those
folders: a trial whose final model ``<run>/<env>.zip`` exists is done and skipped; one with a checkpoint in
``<run>/checkpoints/`` is resumed with ``--resume <run>``; any other is started afresh. See docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: Top-level keys of a sweep file.
SWEEP_KEYS = ("name", "folder", "settings", "seeds", "algos", "n_timesteps", "params", "n_envs", "eval_freq",
              "eval_episodes", "save_freq", "cpus_per_trial", "report")  # fmt: skip
#: Keys of one entry of ``algos``.
ALGO_KEYS = ("algo", "params", "seeds", "n_timesteps")
#: Keys of ``report`` (evaluator options; ``baseline``: the LSTM entry every RIMs entry is compared with;
#: ``protocol``: a pre-registration file, committed in git, against which the runs' recorded commits are checked).
REPORT_KEYS = ("baseline", "n_episodes", "n_envs", "splits", "seeds", "n_bootstrap", "actions", "jobs", "split_episodes",
               "aggregate_splits", "contrasts", "protocol")  # fmt: skip
STOP_FILE = ".stop"
TRIAL_FILE = "trial.json"
PROGRESS_FILE = "progress.json"
LOG_FILE = "train.log"
#: Runs the training CLI in a child process (the same ``main`` as ``train.py``).
TRAIN_CODE = "import sys; from rims_rl.cli.train import main; raise SystemExit(main(sys.argv[1:]))"


class SweepError(Exception):
    """A bad sweep file or command line, reported as one line (exit code 2) before anything starts."""


@dataclass
class Trial:
    """One training run of the sweep."""

    name: str
    """Folder name under the sweep folder, ``<env>__<algo entry>__s<seed>``."""
    env: str
    """Setting name or env id given to ``train.py --env``."""
    env_id: str
    """The training env id (names the run folder and the final model)."""
    entry: str
    """Name of the ``algos`` entry (``rims_ppo``, ``lstm_ppo`` or a variant)."""
    algo: str
    """``rims_ppo`` or ``lstm_ppo``."""
    seed: int
    n_timesteps: int
    """Budget in env steps (for progress and ETA)."""
    argv: list[str]
    """Arguments of a fresh start of ``train.py`` (the log folder is added at launch)."""
    setting: str | None = None
    """The setting whose held-out splits the report evaluates (None: a plain env id)."""
    split: str | None = None
    """For ``SETTING:SPLIT``: the one split trained on, and the one the report evaluates."""


@dataclass
class Sweep:
    """A validated sweep file."""

    name: str
    folder: Path
    trials: list[Trial]
    cpus_per_trial: int
    report: dict[str, Any] = field(default_factory=dict)
    entries: dict[str, str] = field(default_factory=dict)
    """``algos`` entry -> algo, in file order."""


def _sanitize(env_id: str) -> str:
    """:return: ``env_id`` as the training CLI names its run folders (``ALE/Pong-v5`` -> ``ALE-Pong-v5``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", env_id)


def _check_keys(data: Any, allowed: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise SweepError(f"{where} must be a mapping, got {type(data).__name__}")
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise SweepError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(allowed)}")
    return data


def _positive_int(value: Any, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SweepError(f"{where} must be an integer >= {minimum}, got {value!r}")
    return value


def _seeds(value: Any, where: str) -> list[int]:
    """:return: the seeds: ``N`` means 0..N-1, a list is taken as is."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise SweepError(f"{where}: zero seeds ({value}); give a count >= 1 or a list of seeds")
        return list(range(value))
    if isinstance(value, list):
        if not value:
            raise SweepError(f"{where}: zero seeds (empty list)")
        seeds = [_positive_int(s, f"{where} item", 0) for s in value]
        if len(set(seeds)) != len(seeds):
            raise SweepError(f"{where}: repeated seed in {seeds}")
        return seeds
    raise SweepError(f"{where} must be a seed count or a list of seeds, got {value!r}")


def _overrides(value: Any, where: str) -> list[str]:
    """:return: ``-params`` items ``key:value`` (values written as flow YAML) from a mapping."""
    if value is None:
        return []
    if not isinstance(value, dict):
        raise SweepError(f"{where} must be a mapping of hyperparameter -> value, e.g. {{learning_rate: 1.0e-3}}")
    items = []
    for key, val in value.items():
        text = yaml.safe_dump(val, default_flow_style=True, width=10_000).strip()
        items.append(f"{key}:{text.removesuffix('...').strip()}")
    return items


def _algo_entries(value: Any) -> dict[str, dict[str, Any]]:
    """:return: entry name -> its mapping (a plain list of algo names is accepted)."""
    from rims_rl.config import ALGOS

    if isinstance(value, list):
        value = {name: {} for name in value} if all(isinstance(v, str) for v in value) else value
    if not isinstance(value, dict) or not value:
        raise SweepError("algos must be a non-empty mapping (name -> {algo, params, seeds, n_timesteps}) or list of algos")
    entries = {}
    for name, spec in value.items():
        spec = _check_keys({} if spec is None else spec, ALGO_KEYS, f"algos.{name}")
        algo = spec.get("algo", name)
        if algo not in ALGOS:
            raise SweepError(f"algos.{name}: unknown algo {algo!r}; valid: {', '.join(ALGOS)} (set 'algo:' for a variant)")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(name)):
            raise SweepError(f"algos: entry name {name!r} may only hold letters, digits, '_', '.', '-'")
        entries[str(name)] = dict(spec, algo=algo)
    return entries


def _report_options(value: Any, entries: dict[str, dict[str, Any]], base: Path = Path()) -> dict[str, Any]:
    """:return: the validated ``report`` mapping, with ``baseline`` set (None: no LSTM entry to compare with)."""
    report = _check_keys(value or {}, REPORT_KEYS, "report")
    lstm_entries = [e for e, spec in entries.items() if spec["algo"] == "lstm_ppo"]
    baseline = report.get("baseline", "lstm_ppo" if "lstm_ppo" in lstm_entries else next(iter(lstm_entries), None))
    if baseline is not None and baseline not in lstm_entries:
        known = ", ".join(lstm_entries) or "none"
        raise SweepError(f"report.baseline {baseline!r} is not an lstm_ppo entry of algos ({known})")
    report["baseline"] = baseline
    for key in ("n_episodes", "n_envs", "n_bootstrap", "jobs"):
        if key in report:
            _positive_int(report[key], f"report.{key}")
    if report.get("actions", "both") not in ("both", "sampled", "greedy"):
        raise SweepError(f"report.actions must be both, sampled or greedy, got {report['actions']!r}")
    episodes = report.get("split_episodes", {})
    if not isinstance(episodes, dict) or not all(isinstance(k, str) for k in episodes):
        raise SweepError(f"report.split_episodes must be a mapping split -> episodes, got {episodes!r}")
    for split, count in episodes.items():
        _positive_int(count, f"report.split_episodes.{split}")
    contrasts = report.get("contrasts", [])
    if not isinstance(contrasts, list) or not all(isinstance(c, str) and c.count(":") == 1 for c in contrasts):
        raise SweepError(f"report.contrasts must be a list of 'SPLIT_A:SPLIT_B', got {contrasts!r}")
    if "protocol" in report:  # a path relative to the sweep file's folder
        protocol = (Path(base) / str(report["protocol"])).resolve()
        if not protocol.is_file():
            raise SweepError(f"report.protocol: no such file {protocol}")
        report["protocol"] = str(protocol)
    for key, kind in (("splits", str), ("seeds", int), ("aggregate_splits", str)):
        items = report.get(key)
        if items is not None and (not isinstance(items, list) or not items or not all(isinstance(v, kind) for v in items)):
            raise SweepError(f"report.{key} must be a non-empty list of {kind.__name__}, got {items!r}")
    return report


def _check_trial_config(algo: str, env_id: str, params: list[str], where: str) -> int:
    """
    Build the trial's hyperparameters and recurrent core once, as the trainer will (nothing is written).

    :return: the budget from the agents YAML (used when the sweep sets none)
    """
    from rims_rl.cli.train import build_policy
    from rims_rl.config import ALGOS, ConfigError, load_agent_config, parse_override
    from rims_rl.nn.cores import make_core

    try:
        config, _ = load_agent_config(algo, env_id, dict(parse_override(p) for p in params))
        build_policy(config, algo)
        make_core(ALGOS[algo], 4, **config.policy_kwargs.core_kwargs)
    except (ConfigError, ValueError, TypeError) as error:
        raise SweepError(f"{where}: {str(error).splitlines()[0]}") from None
    return int(config.n_timesteps)


def load_sweep(path: str | os.PathLike[str], folder: str | None = None) -> Sweep:
    """
    Read and validate a sweep file: every env, algo, override and core argument is checked here, before Ray starts.

    :param path: the YAML file
    :param folder: sweep folder override (default: the file's ``folder``, else ``logs/sweeps/<name>``)
    :return: the sweep with its trials
    :raises SweepError: anything invalid, as one line
    """
    from rims_rl.envs.vec import resolve

    path = Path(path)
    if not path.is_file():
        raise SweepError(f"no such sweep file: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SweepError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    data = _check_keys(data, SWEEP_KEYS, str(path))
    name = str(data.get("name") or path.stem)
    settings = data.get("settings")
    if isinstance(settings, str):
        settings = [settings]
    if not isinstance(settings, list) or not settings or not all(isinstance(s, str) for s in settings):
        raise SweepError("settings must be a non-empty list of setting names or env ids")
    seeds = _seeds(data.get("seeds"), "seeds")
    entries = _algo_entries(data.get("algos", ["rims_ppo", "lstm_ppo"]))
    common = _overrides(data.get("params"), "params")
    budget = data.get("n_timesteps")
    if budget is not None:
        budget = _positive_int(budget, "n_timesteps")
    cpus = _positive_int(data.get("cpus_per_trial", 1), "cpus_per_trial")
    flags = []
    for key, flag, minimum in (("n_envs", "--n-envs", 1), ("eval_freq", "--eval-freq", 0),
                               ("eval_episodes", "--eval-episodes", 1), ("save_freq", "--save-freq", 0)):  # fmt: skip
        if key in data:
            flags += [flag, str(_positive_int(data[key], key, minimum))]
    report = _report_options(data.get("report"), entries, path.parent)

    trials: list[Trial] = []
    for env in settings:
        try:
            setting, entry = resolve(env)
        except ValueError as error:
            raise SweepError(f"settings: {str(error).splitlines()[0]}") from None
        split = env.split(":", 1)[1] if setting is not None and ":" in env else None
        for entry_name, spec in entries.items():
            params = common + _overrides(spec.get("params"), f"algos.{entry_name}.params")
            default_budget = _check_trial_config(spec["algo"], entry.id, params, f"algos.{entry_name} on {env}")
            n = spec.get("n_timesteps", budget)
            n = default_budget if n is None else _positive_int(n, f"algos.{entry_name}.n_timesteps")
            for seed in _seeds(spec["seeds"], f"algos.{entry_name}.seeds") if "seeds" in spec else seeds:
                argv = ["--algo", spec["algo"], "--env", env, "--seed", str(seed), "-n", str(n), *flags]
                argv += ["--heldout-episodes", "0", "--no-progress", "--verbose", "1"]
                if params:
                    argv += ["-params", *params]
                trial_name = f"{_sanitize(env.replace(':', '-'))}__{entry_name}__s{seed}"
                setting_name = setting.name if setting is not None else None
                trials.append(Trial(trial_name, env, entry.id, entry_name, spec["algo"], seed, n, argv, setting_name, split))
    # seed-major order: Ray starts trials in this order, so a partial sweep holds whole seeds of every entry
    order = {e: i for i, e in enumerate(entries)}
    envs = {e: i for i, e in enumerate(settings)}
    trials.sort(key=lambda t: (envs[t.env], t.seed, order[t.entry]))
    names = [t.name for t in trials]
    if len(set(names)) != len(names):
        raise SweepError("two trials share a name (a setting listed twice?)")
    out = Path(folder or data.get("folder") or Path("logs") / "sweeps" / name)
    return Sweep(name, out.resolve(), trials, cpus, report, {e: s["algo"] for e, s in entries.items()})


# --- trial state on disk -------------------------------------------------------------------------------------------


def run_folder(sweep_folder: Path, trial: Trial) -> Path | None:
    """:return: the trial's run folder ``<sweep>/<trial>/<algo>/<env>_<n>/`` (None before the trainer made it)."""
    runs = sorted((sweep_folder / trial.name / trial.algo).glob(f"{_sanitize(trial.env_id)}_*/config.yml"))
    return runs[-1].parent if runs else None


def trial_state(sweep_folder: Path, trial: Trial) -> str:
    """
    :return: ``done`` (final model present, trained for the trial's budget), ``extend`` (finished at a smaller
        budget than the sweep now asks: continue it), ``resume`` (a checkpoint to resume from) or ``new``
    """
    run = run_folder(sweep_folder, trial)
    if run is None:
        return "new"
    if (run / f"{_sanitize(trial.env_id)}.zip").is_file():
        from rims_rl.checkpoint import list_checkpoints

        steps = max((n for n, _ in list_checkpoints(run / "checkpoints")), default=None)
        return "extend" if steps is not None and steps < trial.n_timesteps else "done"
    checkpoints = run / "checkpoints"
    if checkpoints.is_dir() and any(not p.name.startswith(".") for p in checkpoints.glob("*.zip")):
        return "resume"
    return "new"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from rims_rl.checkpoint import atomic_write

    with atomic_write(path) as file:
        file.write((json.dumps(data, indent=1) + "\n").encode())


def parse_progress(text: str) -> dict[str, float]:
    """
    :param text: the trainer's stdout (SB3's log tables, verbose 1)
    :return: the last ``total_timesteps`` and ``fps`` logged (keys absent when none yet)
    """
    out = {}
    for key in ("total_timesteps", "fps"):
        found = re.findall(rf"\|\s+{key}\s+\|\s+([0-9.e+]+)\s+\|", text)
        if found:
            out[key] = float(found[-1])
    return out


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ray workers block SIGINT: unblock it for the trainer, and kill the trainer if its Ray worker dies."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def execute_trial(trial: dict[str, Any], sweep_folder: str, threads: int, device: str, poll: float = 1.0) -> dict[str, Any]:
    """
    Run one trial to its end in a child process (the body of the Ray task; also callable without Ray).

    Starts ``train.py`` afresh, or with ``--resume <run>`` when the run has a checkpoint. Writes
    ``<trial>/progress.json`` (steps, fps, ETA) while it runs; stops the trainer with SIGINT (it then saves a
    checkpoint at the end of its rollout) when ``<sweep>/.stop`` appears.

    :param trial: :class:`Trial` as a dict
    :param sweep_folder: the sweep folder (on a shared file system when Ray runs on several machines)
    :param threads: torch threads of the trainer (the CPUs Ray gave the trial)
    :param device: torch device of the trainer
    :param poll: seconds between progress updates
    :return: ``{"trial", "status" (done | interrupted | failed), "rc", "steps", "fps", "seconds", "resumed"}``
    """
    spec = Trial(**trial)
    sweep = Path(sweep_folder)
    folder = sweep / spec.name
    state = trial_state(sweep, spec)
    if state == "done":
        return {"trial": spec.name, "status": "done", "rc": 0, "steps": spec.n_timesteps, "fps": 0.0, "seconds": 0.0,
                "resumed": False, "skipped": True}  # fmt: skip
    if (sweep / STOP_FILE).exists():  # queued when the sweep was stopped: do not start
        return {"trial": spec.name, "status": "interrupted", "rc": None, "steps": 0, "fps": 0.0, "seconds": 0.0,
                "resumed": False, "skipped": False}  # fmt: skip
    common = ["--num-threads", str(threads), "--device", device]
    if state in ("resume", "extend"):
        argv = ["--resume", str(run_folder(sweep, spec)), "-n", str(spec.n_timesteps), "--no-progress", "--verbose", "1",
                "--heldout-episodes", "0", *common]  # fmt: skip
    else:
        shutil.rmtree(folder / spec.algo, ignore_errors=True)  # a start that never reached its first checkpoint
        argv = [*spec.argv, "-f", str(folder), *common]
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    log_path = folder / LOG_FILE
    start = time.time()
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} rims-train {' '.join(argv)}\n".encode())
        log.flush()
        offset = log.tell()
        child = subprocess.Popen([sys.executable, "-c", TRAIN_CODE, *argv], stdout=log, stderr=subprocess.STDOUT,
                                 env=env, start_new_session=True, preexec_fn=_child_setup)  # fmt: skip
    progress: dict[str, Any] = {"trial": spec.name, "steps": 0, "fps": 0.0, "eta_s": None, "total": spec.n_timesteps,
                                "resumed": state == "resume", "status": "running"}  # fmt: skip
    _write_json(folder / PROGRESS_FILE, progress)
    text, stopping = "", False
    try:
        while child.poll() is None:
            time.sleep(poll)
            with open(log_path, "rb") as log:
                log.seek(offset)
                chunk = log.read()
            offset += len(chunk)
            text = (text + chunk.decode(errors="replace"))[-20_000:]
            progress.update(_progress(parse_progress(text), spec.n_timesteps))
            _write_json(folder / PROGRESS_FILE, progress)
            if not stopping and (sweep / STOP_FILE).exists():
                child.send_signal(signal.SIGINT)  # the trainer checkpoints at the end of its rollout, exits 130
                stopping = True
    except BaseException:  # the task was cancelled: stop the trainer rather than orphan it
        child.kill()
        child.wait()
        raise
    rc = child.returncode
    with open(log_path, "rb") as log:
        log.seek(max(0, offset - 20_000))
        progress.update(_progress(parse_progress(text + log.read().decode(errors="replace")), spec.n_timesteps))
    # the final model is written atomically and last: a stop that arrives while the trainer exits loses nothing
    status = "done" if trial_state(sweep, spec) == "done" else ("interrupted" if stopping or rc == 130 else "failed")
    progress.update(status=status, rc=rc, seconds=round(time.time() - start, 1))
    if status == "done":
        progress.update(steps=spec.n_timesteps, eta_s=0.0)
    _write_json(folder / PROGRESS_FILE, progress)
    return {"trial": spec.name, "status": status, "rc": rc, "steps": progress["steps"], "fps": progress["fps"],
            "seconds": progress["seconds"], "resumed": state == "resume", "skipped": False}  # fmt: skip


def _progress(parsed: dict[str, float], total: int) -> dict[str, Any]:
    if "total_timesteps" not in parsed:
        return {}
    steps, fps = int(parsed["total_timesteps"]), parsed.get("fps", 0.0)
    return {"steps": steps, "fps": fps, "eta_s": round(max(total - steps, 0) / fps, 1) if fps > 0 else None}


# --- driver ------------------------------------------------------------------------------------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def progress_line(trial: Trial, progress: dict[str, Any], status: str) -> str:
    """:return: one line: trial, status, steps / budget, fps, ETA."""
    steps = int(progress.get("steps") or 0)
    pct = 100.0 * steps / max(trial.n_timesteps, 1)
    fps = float(progress.get("fps") or 0.0)
    return (f"{trial.name:<48} {status:<11} {steps:>10,}/{trial.n_timesteps:<10,} {pct:5.1f}%  {fps:7.0f} steps/s  "
            f"ETA {_duration(progress.get('eta_s'))}")  # fmt: skip


class _Display:
    """Live lines: redrawn in place on a terminal, else printed every ``every`` seconds."""

    def __init__(self, every: float) -> None:
        self.tty = sys.stdout.isatty()
        self.every, self.last, self.drawn = every, 0.0, 0

    def show(self, lines: list[str]) -> None:
        """:param lines: one line per running trial"""
        if self.tty:
            self.release()
            sys.stdout.write("".join(f"{line}\n" for line in lines))
            self.drawn = len(lines)
        elif lines and time.time() - self.last >= self.every:
            sys.stdout.write("".join(f"{line}\n" for line in lines) + "\n")
            self.last = time.time()
        sys.stdout.flush()

    def release(self) -> None:
        """Erase the live lines (on a terminal), so that what is printed next stays."""
        if self.tty and self.drawn:
            sys.stdout.write(f"\x1b[{self.drawn}F\x1b[J")  # up to the block's first line, clear to the end
        self.drawn = 0


def summary_table(sweep: Sweep, results: dict[str, dict[str, Any]]) -> str:
    """:return: the end-of-sweep table (markdown): one row per trial."""
    rows = ["| trial | algo | seed | status | steps | steps/s | wall |", "| --- | --- | ---: | --- | ---: | ---: | ---: |"]
    for t in sweep.trials:
        r = results.get(t.name) or {"status": trial_state(sweep.folder, t)}
        status = r["status"] + (" (skipped)" if r.get("skipped") else "") + (" (resumed)" if r.get("resumed") else "")
        if r.get("rc") not in (None, 0, 130):
            status += f" rc {r['rc']}: see {t.name}/{LOG_FILE}"
        rows.append(f"| {t.name} | {t.entry} | {t.seed} | {status} | {int(r.get('steps') or 0):,} | "
                    f"{float(r.get('fps') or 0):.0f} | {_duration(r.get('seconds'))} |")  # fmt: skip
    return "\n".join(rows)


def _evaluator_options(report: dict[str, Any]) -> list[str]:
    """:return: the evaluator's arguments for the sweep file's ``report`` options (not the agents, not the jobs)"""
    options: list[str] = []
    for key, flag in (("n_episodes", "-n"), ("n_envs", "--n-envs"), ("n_bootstrap", "--n-bootstrap")):
        if key in report:
            options += [flag, str(report[key])]
    if report.get("seeds"):
        options += ["--seeds", *map(str, report["seeds"])]
    if report.get("actions"):
        options += ["--actions", str(report["actions"])]
    if report.get("split_episodes"):
        options += ["--split-episodes", *(f"{s}={n}" for s, n in report["split_episodes"].items())]
    if report.get("aggregate_splits"):
        options += ["--aggregate-splits", *report["aggregate_splits"]]
    if report.get("contrasts"):
        options += ["--contrast", *report["contrasts"]]
    return options


def run_report(sweep: Sweep, extra: list[str] | None = None, cpus: int | None = None) -> list[Path]:
    """
    The evaluator's comparison on the sweep's finished runs: per setting, every RIMs entry against the baseline
    LSTM entry, the trained seeds as the unit. Results go to ``<sweep>/report/<env>__<rims>_vs_<lstm>_<n>/``.

    Every comparison shares the episode cache ``<sweep>/report/cache`` (so the baseline's agents and the random
    policy are played once, not once per RIMs entry) and runs ``report.jobs`` evaluation workers (default: ``cpus``).

    :param sweep: the sweep
    :param extra: more evaluator arguments
    :param cpus: the sweep's CPU count (default: this machine's)
    :return: the result folders written
    :raises KeyboardInterrupt: Ctrl-C or SIGTERM during a comparison (the folders written before it are kept)
    :raises SweepError: with ``report.protocol``, finished runs not all trained by one clean commit that contains the
        protocol, or created before it was committed (the table is printed and written to ``report/provenance.md``)
    """
    from rims_rl.cli.evaluate import main as evaluate_main

    report, baseline = sweep.report, sweep.report.get("baseline")
    if baseline is None:
        print("report: no lstm_ppo entry in algos, nothing to compare")
        return []
    options = _evaluator_options(report)
    if report.get("protocol"):
        check_protocol_pin(sweep, str(report["protocol"]))
    jobs = report.get("jobs") or cpus or os.cpu_count() or 1
    options += ["--jobs", str(jobs), "--cache-dir", str(sweep.folder / "report" / "cache")]
    written = []
    for env in dict.fromkeys(t.env for t in sweep.trials):

        def finished(entry: str, env: str = env) -> list[str]:
            return [str(run_folder(sweep.folder, t)) for t in sweep.trials
                    if t.env == env and t.entry == entry and trial_state(sweep.folder, t) == "done"]  # fmt: skip

        lstm_runs = finished(baseline)
        trial = next(t for t in sweep.trials if t.env == env)
        splits = [trial.split] if trial.split is not None else report.get("splits")
        where = ["--setting", trial.setting] if trial.setting else ["--env", trial.env_id]
        if splits and trial.setting:
            where += ["--splits", *map(str, splits)]
        for entry, algo in sweep.entries.items():
            if algo != "rims_ppo":
                continue
            rims_runs, name = finished(entry), f"{_sanitize(env.replace(':', '-'))}__{entry}_vs_{baseline}"
            if not rims_runs or not lstm_runs:
                print(f"report {name}: skipped ({len(rims_runs)} finished {entry} runs, {len(lstm_runs)} {baseline} runs)")
                continue
            print(f"report {name}: {len(rims_runs)} vs {len(lstm_runs)} runs", flush=True)
            before = set((sweep.folder / "report").glob(f"{name}_*"))
            argv = ["--rims", *rims_runs, "--lstm", *lstm_runs, *where, "-o", str(sweep.folder / "report"), "--name", name,
                    "-q", *options, *(extra or [])]  # fmt: skip
            rc = evaluate_main(argv)
            if rc == 130:  # Ctrl-C or SIGTERM inside the evaluator: stop the report, not just this comparison
                raise KeyboardInterrupt
            if rc != 0:
                print(f"report {name}: the evaluator failed (rims-evaluate {' '.join(argv)})", file=sys.stderr)
                continue
            written += sorted(set((sweep.folder / "report").glob(f"{name}_*")) - before)
    return written


def check_protocol_pin(sweep: Sweep, protocol: str) -> None:
    """
    Check the finished runs against the pre-registration (:func:`rims_rl.provenance.check_pin`); the table goes to
    ``<sweep>/report/provenance.md`` whatever the verdict.

    :raises SweepError: the runs are not pinned
    """
    from rims_rl.provenance import check_pin

    runs = [run for t in sweep.trials if trial_state(sweep.folder, t) == "done" and (run := run_folder(sweep.folder, t))]
    check = check_pin(runs, protocol)
    (sweep.folder / "report").mkdir(parents=True, exist_ok=True)
    (sweep.folder / "report" / "provenance.md").write_text(check.table() + "\n")
    if not check.ok:
        print(check.table(), file=sys.stderr)
        raise SweepError(f"report refused: the runs are not pinned to {protocol} ({check.problems[0]}; all problems in "
                         f"{sweep.folder / 'report' / 'provenance.md'})")  # fmt: skip
    print(f"report: {len(runs)} runs pinned to commit {check.commits[0] if check.commits else '?'} ({protocol})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """
    :param argv: command-line arguments (None: ``sys.argv[1:]``)
    :return: parsed arguments
    """
    p = argparse.ArgumentParser(prog="rims-sweep", description="Run a sweep file (settings x algos x seeds) as Ray trials; "
                                "rerun the same command to resume.")  # fmt: skip
    p.add_argument("sweep_file", help="the sweep YAML (see sweeps/)")
    p.add_argument("--folder", default=None, help="sweep folder (default: the file's 'folder', else logs/sweeps/<name>)")
    p.add_argument("--address", default=None, help="join an existing Ray cluster (e.g. auto or HOST:6379); default: "
                   "start a local Ray on this machine")  # fmt: skip
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all cores)")
    p.add_argument("--cpus-per-trial", type=int, default=None, help="CPUs (= torch threads) per trial (default: the file's)")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per trial (e.g. 0.25: four trials share one GPU)")
    p.add_argument("--report", action="store_true", help="only write the report from the runs finished so far")
    p.add_argument("--no-report", action="store_true", help="no report when the sweep finishes")
    p.add_argument("--dry-run", action="store_true", help="list the trials and their state; start nothing")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between progress updates")
    p.add_argument("--log-every", type=float, default=30.0, help="seconds between progress prints when not on a terminal")
    return p.parse_args(argv)


def _check_folder(sweep: Sweep) -> None:
    """Refuse to mix trials started with other arguments into this sweep folder."""
    for t in sweep.trials:
        saved = _read_json(sweep.folder / t.name / TRIAL_FILE)
        if saved and _budget_raised(saved.get("argv"), t.argv):
            continue
        if saved and saved.get("argv") != t.argv:
            raise SweepError(f"{sweep.folder / t.name} was started with other arguments ({' '.join(saved.get('argv', []))}); "
                             "use another --folder or remove that trial folder")  # fmt: skip


def _budget_raised(saved: Any, argv: list[str]) -> bool:
    """:return: whether ``argv`` is ``saved`` with a larger ``-n`` and nothing else changed (the trial is extended)."""
    if not isinstance(saved, list) or len(saved) != len(argv) or "-n" not in argv:
        return False
    i = argv.index("-n")
    if [*saved[:i + 1], *saved[i + 2:]] != [*argv[:i + 1], *argv[i + 2:]]:
        return False
    try:
        return int(argv[i + 1]) > int(saved[i + 1])
    except (ValueError, IndexError):
        return False


def _start_ray(args: argparse.Namespace, cpus: int) -> None:
    """Start a local Ray (or join ``--address``) and check that it can hold one trial."""
    import ray

    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    else:
        ray.init(num_cpus=args.num_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    _stop_signals()  # ray.init installs its own SIGTERM handler, which kills the driver and with it every trainer
    resources = ray.cluster_resources()
    if resources.get("CPU", 0) < cpus:
        raise SweepError(f"a trial needs {cpus} CPUs but the Ray cluster has {resources.get('CPU', 0):g}")
    if args.num_gpus > resources.get("GPU", 0):
        raise SweepError(f"--num-gpus {args.num_gpus:g} per trial but the Ray cluster has {resources.get('GPU', 0):g} GPUs")


def run_sweep(args: argparse.Namespace) -> int:  # noqa: C901
    """
    :param args: parsed arguments
    :return: exit code (0 all done, 1 a trial failed, 130 interrupted)
    """
    sweep = load_sweep(args.sweep_file, args.folder)
    cpus = sweep.cpus_per_trial if args.cpus_per_trial is None else _positive_int(args.cpus_per_trial, "--cpus-per-trial")
    if args.num_gpus < 0 or (args.num_cpus is not None and args.num_cpus < 1) or args.poll <= 0:
        raise SweepError("--num-gpus must be >= 0, --num-cpus >= 1 and --poll > 0")
    if args.num_gpus > 0 and not args.address:
        import torch as th

        if not th.cuda.is_available():
            raise SweepError(f"--num-gpus {args.num_gpus:g}: torch sees no CUDA GPU on this machine")
    states = {t.name: trial_state(sweep.folder, t) for t in sweep.trials}
    _check_folder(sweep)
    counts = {s: sum(v == s for v in states.values()) for s in ("done", "resume", "new", "extend")}
    extend = f", {counts['extend']} to extend" if counts["extend"] else ""
    print(f"Sweep {sweep.name}: {len(sweep.trials)} trials in {sweep.folder} ({counts['done']} done, "
          f"{counts['resume']} to resume, {counts['new']} to start{extend})")  # fmt: skip
    if args.dry_run:
        for t in sweep.trials:
            print(f"  {t.name:<48} {states[t.name]:<7} {shlex.join(['rims-train', *t.argv])}")
        return 0
    if args.report:
        return _report(sweep, args.num_cpus)
    sweep.folder.mkdir(parents=True, exist_ok=True)
    (sweep.folder / STOP_FILE).unlink(missing_ok=True)
    if Path(args.sweep_file).resolve() != (sweep.folder / "sweep.yml").resolve():
        shutil.copyfile(args.sweep_file, sweep.folder / "sweep.yml")
    for t in sweep.trials:
        (sweep.folder / t.name).mkdir(exist_ok=True)
        _write_json(sweep.folder / t.name / TRIAL_FILE, asdict(t))

    results: dict[str, dict[str, Any]] = {}
    todo = [t for t in sweep.trials if states[t.name] != "done"]
    for t in todo:
        (sweep.folder / t.name / PROGRESS_FILE).unlink(missing_ok=True)  # left by an earlier, interrupted sweep
    interrupted = False
    if todo:
        try:
            import ray
        except ImportError:
            raise SweepError("sweeps run on Ray, which is not installed: pip install 'ray>=2.9'") from None
        try:
            _start_ray(args, cpus)
        except BaseException:
            ray.shutdown()
            raise
        device = "cuda" if args.num_gpus > 0 else "cpu"
        task = ray.remote(execute_trial).options(num_cpus=cpus, num_gpus=args.num_gpus, max_retries=0)
        pending = {task.remote(asdict(t), str(sweep.folder), cpus, device, min(args.poll, 1.0)): t for t in todo}
        display = _Display(args.log_every)
        stop_asked = 0
        try:
            while pending:
                try:
                    ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=args.poll)
                    for ref in ready:
                        trial = pending.pop(ref)
                        try:
                            results[trial.name] = ray.get(ref)
                        except Exception as error:  # the worker died: the trial stays resumable
                            results[trial.name] = {"trial": trial.name, "status": "failed", "rc": None,
                                                   "error": str(error).splitlines()[0]}  # fmt: skip
                        display.release()
                        r = results[trial.name]
                        print(progress_line(trial, _read_json(sweep.folder / trial.name / PROGRESS_FILE), r["status"]))
                    display.show([progress_line(t, _read_json(sweep.folder / t.name / PROGRESS_FILE), "running")
                                  for t in pending.values() if (sweep.folder / t.name / PROGRESS_FILE).exists()])  # fmt: skip
                except KeyboardInterrupt:
                    stop_asked += 1
                    interrupted = True
                    display.release()
                    if stop_asked > 1:
                        print("\nSecond Ctrl-C: stopping now; trials resume from their last checkpoint")
                        for ref in pending:
                            ray.cancel(ref, force=True)
                        break
                    (sweep.folder / STOP_FILE).touch()
                    print("\nCtrl-C: each running trial saves a checkpoint at the end of its rollout, then the sweep stops "
                          "(Ctrl-C again to stop now). Rerun the same command to resume.", flush=True)  # fmt: skip
        finally:
            (sweep.folder / STOP_FILE).unlink(missing_ok=True)
            ray.shutdown()
    for t in sweep.trials:
        if t.name not in results and states[t.name] == "done":
            results[t.name] = {"status": "done", "skipped": True, "steps": t.n_timesteps}
    table = summary_table(sweep, results)
    print(f"\n{table}")
    _write_json(sweep.folder / "summary.json", {"trials": results})
    (sweep.folder / "summary.md").write_text(table + "\n")
    complete = all(trial_state(sweep.folder, t) == "done" for t in sweep.trials)
    if complete and not args.no_report and _report(sweep, args.num_cpus) == 130:
        return 130
    if interrupted:
        print(f"Interrupted. Resume with: rims-sweep {args.sweep_file}" + (f" --folder {args.folder}" if args.folder else ""))
        return 130
    return 0 if complete else 1


def _report(sweep: Sweep, cpus: int | None) -> int:
    """:return: 0, or 130 when the report was interrupted (comparisons written before it and the cache are kept)"""
    try:
        written = run_report(sweep, cpus=cpus)
    except KeyboardInterrupt:
        print("rims-sweep: report interrupted; the comparisons written before it and the episode cache are kept",
              file=sys.stderr)  # fmt: skip
        return 130
    print("report: " + (", ".join(map(str, written)) or "nothing written"))
    return 0


def main(argv: list[str] | None = None) -> int:
    """
    Entry point of ``rims-sweep`` and ``python sweep.py``.

    :param argv: arguments (None: ``sys.argv[1:]``)
    :return: exit code (0 all trials done, 1 a trial failed, 2 bad sweep file or usage, 130 interrupted)
    """
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    _stop_signals()
    try:
        return run_sweep(args)
    except SweepError as error:
        print(f"rims-sweep: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nrims-sweep: interrupted before the trials started", file=sys.stderr)
        return 130
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])


def _stop_signals() -> None:
    """
    SIGTERM (a batch scheduler) and SIGINT stop the sweep as Ctrl-C does: trainers checkpoint, then the driver
    exits. SIGINT is honoured even when the driver was started in the background (``nohup ... &``), where the shell
    leaves it ignored.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm_as_ctrl_c)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _sigterm_as_ctrl_c(signum: int, frame: Any) -> None:
    """SIGTERM handler of the driver: raise KeyboardInterrupt (a clean stop, as Ctrl-C)."""
    raise KeyboardInterrupt
