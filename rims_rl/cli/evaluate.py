"""``evaluate.py`` / ``rims-evaluate``: held-out evaluation and the RIMs-versus-LSTM score ratio.

``--setting A B ...`` (several settings, no agent named): the zoo's RIMs and LSTM agents of each setting, each
evaluated as ``--setting A`` alone would be (its own manifest budget) into ``<parent>/A/``, ``<parent>/B/``, ...,
then the across-games comparison (:mod:`rims_rl.evaluation.games`) into ``<parent>/games.md`` and ``games.csv``.

Exit codes: 0 done; 1 a clear error (missing/corrupt checkpoint, space mismatch, unknown setting, a failed worker
process); 2 bad usage (a value out of range, two settings files with one name, a malformed zoo manifest, agents named
with several settings, a setting given twice); 3 nothing to evaluate (no arguments and no pretrained RIMs and LSTM
agents in the zoo; with several settings: some setting has none, checked before anything is played).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rims_rl.cli.args import CliError, HelpFormatter, OneLineParser, non_negative_int, positive_int
from rims_rl.envs.settings import SettingsError

EXIT_NOTHING_TO_EVALUATE = 3
DEFAULT_SETTING = "gridworld-pickup"


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (usage errors: one line, exit code 2)."""
    p = OneLineParser(
        prog="evaluate.py",
        description="Evaluate RIMs and LSTM checkpoints on held-out envs; score ratio with bootstrap CIs, tables, plots. "
        "With no agent: the zoo's RIMs and LSTM agents, on the setting the zoo manifest records for them; with "
        "several --setting names, on each of them, then the across-games comparison (games.md, games.csv).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--rims", nargs="+", default=[], metavar="CKPT", help="RIMs agents: run folders, .zip files, zoo ids")
    p.add_argument("--lstm", nargs="+", default=[], metavar="CKPT", help="LSTM agents: run folders, .zip files, zoo ids")
    p.add_argument("--agent", nargs="+", default=[], metavar="CKPT", help="other agents (scores only; core read from model)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--setting", nargs="+", default=None, metavar="SETTING",
                       help="setting of the held-out splits (default: the zoo agents', else "
                            f"{DEFAULT_SETTING}); several (no agent named): the zoo's agents of each, one result "
                            "folder per setting under OUTPUT_DIR/<name>_<n>/, and the across-games tables there")  # fmt: skip
    where.add_argument("--env", nargs="+", default=None, metavar="ENV_ID", help="plain gymnasium env ids instead of a setting")
    p.add_argument("--splits", nargs="+", default=None,
                   help="held-out splits of the setting, of every setting when several (default: all)")  # fmt: skip
    p.add_argument("-n", "--n-episodes", type=positive_int, default=None,
                   help="episodes per env and seed (default: the setting's n_eval_episodes, or 10)")  # fmt: skip
    p.add_argument("--split-episodes", type=split_count, nargs="+", default=None, metavar="SPLIT=N",
                   help="episodes per seed on these splits instead of -n (e.g. train=500 novel-distractors=500)")
    p.add_argument("--aggregate-splits", nargs="+", default=None, metavar="SPLIT",
                   help="held-out splits the aggregates (median, IQM) run over (default: every held-out split)")
    p.add_argument("--contrast", type=split_pair, nargs="+", default=[], metavar="A:B",
                   help="DiD contrasts of two held-out splits, DiD(A) - DiD(B), each reported with its interval and "
                        "p-values (e.g. novel-distractors:more-distractors: what novelty adds beyond crowding)")
    p.add_argument("--seeds", type=non_negative_int, nargs="+", default=None,
                   help="evaluation seeds (default: the setting's, or 0)")  # fmt: skip
    p.add_argument("--n-envs", type=positive_int, default=None,
                   help="parallel envs (episodes are still counted fairly, but which episodes are played depends on it; "
                        "default 1, or the zoo manifest's for the zoo's agents)")  # fmt: skip
    p.add_argument("--actions", choices=["both", "sampled", "greedy"], default="both",
                   help="action modes played, each on the same env seeds (both: sampled and greedy)")  # fmt: skip
    p.add_argument("--jobs", type=positive_int, default=None,
                   help="worker processes for the evaluation units (same episodes as 1; default: 1 for named agents, "
                        "one per CPU for the zoo's)")  # fmt: skip
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="episode cache: units already evaluated with the same checkpoint bytes, env and options are "
                        "read from DIR instead of played again (docs/evaluation.md)")  # fmt: skip
    p.add_argument("--ref-score", type=float, default=None, help="S_ref override (default: human score / max return)")
    p.add_argument("--no-random", action="store_true", help="skip the uniform-random baseline (no ratio then)")
    p.add_argument("--n-bootstrap", type=positive_int, default=2000, help="bootstrap replicates for the CIs")
    p.add_argument("--ci-method", choices=["auto", "welch", "bootstrap"], default="auto",
                   help="interval method (auto: Welch below 10 seeds per core, else the joint seed bootstrap; "
                        "docs/evaluation.md)")  # fmt: skip
    p.add_argument("--n-permutations", type=positive_int, default=2000, help="most seed relabellings for permutation p-values")
    p.add_argument("--bootstrap-seed", type=non_negative_int, default=0, help="seed of the bootstrap")
    p.add_argument("-o", "--output-dir", default="logs/eval", help="results go to a fresh OUTPUT_DIR/<name>_<n>/")
    p.add_argument("--name", default=None,
                   help="result folder name (default: the setting or env; several settings: games)")  # fmt: skip
    p.add_argument(
        "--video",
        nargs="?",
        const="",
        default=None,
        metavar="MP4",
        help="also record one episode of the first RIMs agent (else the first agent) to MP4",
    )
    p.add_argument("--video-steps", type=positive_int, default=1000, help="maximum steps in the video")
    p.add_argument(
        "--transfer-finetuned",
        nargs="+",
        default=None,
        metavar="RUN",
        help="game transfer score: fine-tuned run folders (with --transfer-scratch)",
    )
    p.add_argument("--transfer-scratch", nargs="+", default=None, metavar="RUN", help="from-scratch run folders")
    p.add_argument("--list-zoo", action="store_true", help="list the pretrained agents and exit")
    p.add_argument("--load-best", action="store_true", help="in run folders, evaluate best_model.zip (default: final model)")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="also load SB3/sb3-contrib zips not in rims_rl's safe format (they unpickle Python objects, "
        "which can run code: only for files you trust)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--num-threads", type=int, default=1, help="torch CPU threads (1: fastest for small models; <= 0: default)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    return p


def split_count(text: str) -> tuple[str, int]:
    """:return: ``SPLIT=N`` as (split, N >= 1) :raises argparse.ArgumentTypeError: another form"""
    split, sep, count = text.rpartition("=")
    if not sep or not split:
        raise argparse.ArgumentTypeError(f"must be SPLIT=N (e.g. train=500), got {text!r}")
    return split, positive_int(count)


def split_pair(text: str) -> tuple[str, str]:
    """:return: ``A:B`` as (A, B) :raises argparse.ArgumentTypeError: another form"""
    a, sep, b = text.partition(":")
    if not sep or not a or not b or ":" in b:
        raise argparse.ArgumentTypeError(f"must be SPLIT_A:SPLIT_B (e.g. novel-distractors:more-distractors), got {text!r}")
    return a, b


def _zoo_entries() -> list[Any]:
    """
    :return: the zoo manifest's entries
    :raises CliError: a malformed manifest (a user's file: exit code 2)
    """
    from rims_rl.zoo import list_zoo

    from rims_rl.zoo import MANIFEST_NAME, zoo_dir

    try:
        return list_zoo()
    except ValueError as error:
        raise CliError(str(error).splitlines()[0]) from None
    except (TypeError, AttributeError) as error:  # an entry of the wrong shape (e.g. a list instead of an object)
        raise CliError(f"corrupt zoo manifest {zoo_dir() / MANIFEST_NAME}: {error}") from None


def zoo_default_setting(entries: list[Any]) -> str | None:
    """
    :param entries: zoo manifest entries
    :return: the setting recorded in the manifest for the zoo's RIMs and LSTM agents: among the settings that have
        both, the default setting if it is one of them, else the first in manifest order; None when none has both
    """
    both = [s for s in dict.fromkeys(e.setting for e in entries)
            if {"rims", "lstm"} <= {e.core for e in entries if e.setting == s}]  # fmt: skip
    if not both:
        return None
    return DEFAULT_SETTING if DEFAULT_SETTING in both else both[0]


def _zoo_defaults(setting: str) -> tuple[list[str], list[str]]:
    entries = [e for e in _zoo_entries() if e.setting == setting]
    return [e.id for e in entries if e.core == "rims"], [e.id for e in entries if e.core == "lstm"]


def _zoo_run(args: argparse.Namespace, setting: str, say: Any) -> tuple[list[str], list[str]]:
    """
    The no-argument run: the zoo's RIMs and LSTM agents of ``setting``, with the manifest's episode budget unless
    ``-n`` is given (so the README's table is this command's output). Prints what it will play, or how to train
    agents when the zoo has none (then returns empty lists).
    """
    rims, lstm = _zoo_defaults(setting)
    if not rims or not lstm:
        print(NO_AGENTS_MESSAGE.format(setting=setting))
        return [], []
    from rims_rl.zoo import zoo_evaluation

    try:
        defaults = zoo_evaluation(setting)
    except ValueError as error:
        raise CliError(str(error)) from None
    args.n_episodes = defaults.get("n_episodes") if args.n_episodes is None else args.n_episodes
    args.n_envs = defaults.get("n_envs") if args.n_envs is None else args.n_envs
    episodes = f"{args.n_episodes} episodes" if args.n_episodes else "the setting's episode count"
    say(f"the zoo's {len(rims)} RIMs and {len(lstm)} LSTM agents on {setting}: {episodes} per split, agent and "
        f"action mode ({args.actions}), {args.n_envs or 1} env(s) at a time")  # fmt: skip
    return rims, lstm


NO_AGENTS_MESSAGE = """No pretrained RIMs and LSTM agents for {setting} are installed in the zoo (zoo/manifest.json),
so there is nothing to compare yet. Train one of each, then evaluate the run folders:

    python train.py --algo rims_ppo --env {setting} --seed 0
    python train.py --algo lstm_ppo --env {setting} --seed 0
    python evaluate.py --rims logs/rims_ppo/<run> --lstm logs/lstm_ppo/<run>

(or add them to the zoo with rims_rl.zoo.add_to_zoo). See docs/evaluation.md."""


def _env_options(agents: list[Any], specs: list[str]) -> dict[str, Any]:
    """
    :param agents: the resolved agents, in the order of ``specs``
    :param specs: what the user gave (run folders, .zip files, zoo ids)
    :return: agent label -> how its training envs were built, for agents inside a run folder
    """
    from rims_rl.evaluation.runner import env_options_from_run, run_folder_of

    options = {}
    for agent, spec in zip(agents, specs, strict=True):
        folder = run_folder_of(spec) if Path(spec).exists() else None
        if folder is not None:
            options[agent.label] = env_options_from_run(folder)
    return options


def _transfer(args: argparse.Namespace, say: object) -> int:
    from rims_rl.evaluation import atomic_write_text, new_output_dir, transfer_score

    if not args.transfer_finetuned or not args.transfer_scratch:
        raise ValueError("--transfer-finetuned and --transfer-scratch must be given together")
    result = transfer_score(args.transfer_finetuned, args.transfer_scratch)
    out = new_output_dir(args.output_dir, args.name or "transfer")
    payload = {**asdict(result), "finetuned": args.transfer_finetuned, "scratch": args.transfer_scratch}
    atomic_write_text(out / "transfer.json", json.dumps(payload, indent=2, default=str) + "\n")
    print(f"transfer score (AUC fine-tuned / AUC from scratch, up to {result.until:.0f} steps): {result.score:.3f}")
    print(f"written: {out / 'transfer.json'}")
    return 0


def _run(args: argparse.Namespace) -> int:
    def say(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr)

    if args.list_zoo:
        entries = _zoo_entries()
        steps = {e.id: "?" if e.n_timesteps is None else f"{e.n_timesteps:,} steps" for e in entries}
        print("\n".join(f"{e.id}\t{e.algo}\t{e.core}\t{e.setting}\t{steps[e.id]}\t{e.path}" for e in entries)
              or "the zoo is empty")  # fmt: skip
        return 0
    if args.transfer_finetuned or args.transfer_scratch:
        return _transfer(args, say)
    settings = args.setting or []
    if len(settings) > 1:
        return _games_run(args, settings, say)
    args.setting = settings[0] if settings else None  # one setting: as before this option took several
    rims, lstm = list(args.rims), list(args.lstm)
    setting_name = args.setting
    jobs = args.jobs or 1  # named agents: one process unless --jobs says otherwise
    if not (rims or lstm or args.agent):
        jobs = args.jobs  # the zoo's agents: one worker per CPU (at most one per task) unless --jobs says otherwise
        if setting_name is None and not args.env:
            setting_name = zoo_default_setting(_zoo_entries())  # the setting the manifest records for its agents
        rims, lstm = _zoo_run(args, setting_name or DEFAULT_SETTING, say)
        if not rims or not lstm:
            return EXIT_NOTHING_TO_EVALUATE
    _evaluate_and_write(args, rims, lstm, setting_name, jobs, say)
    return 0


def _evaluate_and_write(
    args: argparse.Namespace,
    rims: list[str],
    lstm: list[str],
    setting_name: str | None,
    jobs: int | None,
    say: Any,
    out: Path | None = None,
) -> Path:
    """
    Evaluate the agents on the setting (or ``--env``), write the result folder and print the tables.

    :param out: the result folder (default: a fresh ``OUTPUT_DIR/<name>_<n>/``)
    :return: the result folder
    """
    from rims_rl.evaluation import (
        evaluate,
        gym_targets,
        load_model,
        new_output_dir,
        print_tables,
        record_video,
        resolve_agent,
        setting_targets,
        write_outputs,
    )

    args.n_envs = args.n_envs or 1
    setting = setting_name or DEFAULT_SETTING  # where to evaluate is checked before the agents are looked up
    split_episodes = dict(args.split_episodes or [])
    if args.env and (split_episodes or args.aggregate_splits or args.contrast):
        raise CliError("--split-episodes, --aggregate-splits and --contrast name a setting's splits; use --setting")
    if args.env:
        targets = gym_targets(args.env, args.n_episodes or 10, args.seeds or [0], args.ref_score)
        name = args.name or "_".join(e.replace("/", "-") for e in args.env)
    else:
        targets = setting_targets(setting, args.splits, args.n_episodes, args.seeds, args.ref_score, split_episodes)
        name = args.name or setting
        held = [t.label for t in targets if t.label != "train"]
        for split in [*(args.aggregate_splits or []), *(s for pair in args.contrast for s in pair)]:
            if split not in held:
                raise CliError(f"--aggregate-splits/--contrast: {split!r} is not an evaluated held-out split "
                               f"({', '.join(held) or 'none'})")  # fmt: skip
    if any(not Path(spec).exists() and not str(spec).endswith(".zip") for spec in [*rims, *lstm, *args.agent]):
        _zoo_entries()  # zoo ids are given: a malformed manifest is reported as such (exit code 2)
    agents = [resolve_agent(s, "rims", args.load_best) for s in rims] + [
        resolve_agent(s, "lstm", args.load_best) for s in lstm
    ]
    agents += [resolve_agent(s, None, args.load_best) for s in args.agent]
    for a in agents:
        a.trust_remote_code = args.trust_remote_code
    labels = [a.label for a in agents]
    for i, a in enumerate(agents):  # labels must be unique
        if labels.count(a.label) > 1:
            a.label = f"{a.label}#{i}"
    # each run folder's agent plays on envs built as its training envs were (frame stack, env_kwargs, VecNormalize)
    env_options = _env_options(agents, [*rims, *lstm, *args.agent])
    result = evaluate(
        agents,
        targets,
        n_envs=args.n_envs,
        actions=args.actions,
        random_baseline=not args.no_random,
        device=args.device,
        log=say,
        env_options=env_options,
        jobs=jobs,
        cache_dir=args.cache_dir,
    )
    comparisons = result.comparisons(args.n_bootstrap, args.bootstrap_seed, args.ci_method, args.n_permutations,
                                     args.aggregate_splits, args.contrast)  # fmt: skip
    summaries = result.summaries()
    if rims and lstm and not comparisons:
        say("no ratio: S_ref is unknown for some env (pass --ref-score) or the random baseline was skipped")
    out = new_output_dir(args.output_dir, name) if out is None else out
    meta = {
        "name": name,
        "command": shlex.join(sys.argv),
        "setting": None if args.env else setting,
        "targets": [
            {"label": t.label, "env_id": t.env_id, "seeds": t.seeds, "n_episodes": t.n_episodes, "ref_score": t.ref_score}
            for t in targets
        ],
        "agents": [{"label": a.label, "path": str(a.path), "core": a.core, "algo": a.algo, "seed": a.seed} for a in agents],
        "actions": args.actions,
        "n_envs": args.n_envs,
        "n_bootstrap": args.n_bootstrap,
        "ci_method": args.ci_method,
        "n_permutations": args.n_permutations,
    }
    files = write_outputs(out, comparisons, summaries, result, meta, split_plot=True)
    print_tables(comparisons, summaries, cores=result.cores, agent_cores={a.label: a.core for a in agents})
    if args.video is not None:
        spec = next((a for a in agents if a.core == "rims"), agents[0])
        path = Path(args.video) if args.video else out / f"video_{spec.label.replace('/', '_')}.mp4"
        files["video"] = record_video(
            load_model(spec, args.device), targets[0], path, args.actions == "greedy", max_steps=args.video_steps
        )
    print(f"results written to {out}: " + ", ".join(sorted(p.name for p in files.values())))
    return out


def _games_run(args: argparse.Namespace, settings: list[str], say: Any) -> int:
    """
    Several settings (games): the zoo's agents of each, evaluated as ``--setting <one>`` would be, into
    ``<parent>/<setting>/``, then the across-games comparison into ``<parent>/games.md`` and ``games.csv``. The
    arguments, settings, splits and zoo agents of every setting are checked before the first episode is played (a
    checkpoint that fails to load still fails when its setting's turn comes; the folders written before it are kept).

    :return: exit code
    """
    from rims_rl.evaluation import new_output_dir, setting_targets
    from rims_rl.evaluation.games import load_game, write_games
    from rims_rl.zoo import MANIFEST_NAME, zoo_dir, zoo_evaluation

    twice = [s for s in dict.fromkeys(settings) if settings.count(s) > 1]
    if twice:
        raise CliError(f"setting {twice[0]} is given twice in --setting; give each setting once")
    if args.rims or args.lstm or args.agent:
        raise CliError("name agents (--rims, --lstm, --agent) with one setting at a time; several settings evaluate "
                       "the zoo's agents of each")  # fmt: skip
    if args.video:
        raise CliError("--video MP4 with several settings: give --video without a path (one video per setting folder)")
    # unknown settings and splits fail here, before anything is played
    splits = [[t.label for t in setting_targets(s, args.splits, args.n_episodes, args.seeds, args.ref_score,
                                                dict(args.split_episodes or []))]
              for s in settings]  # fmt: skip
    if not [split for split in splits[0] if all(split in other for other in splits[1:])]:
        raise CliError(f"the settings {', '.join(settings)} share no split; pick common ones with --splits")
    missing = [s for s in settings if not all(_zoo_defaults(s))]
    if missing:
        print(f"evaluate.py: error: no pretrained RIMs and LSTM agents for {', '.join(missing)} in the zoo "
              f"({zoo_dir() / MANIFEST_NAME}); nothing evaluated (docs/evaluation.md, Zoo)", file=sys.stderr)  # fmt: skip
        return EXIT_NOTHING_TO_EVALUATE
    for s in settings:  # a malformed evaluation budget too
        try:
            zoo_evaluation(s)
        except ValueError as error:
            raise CliError(str(error)) from None
    parent = new_output_dir(args.output_dir, args.name or "games")
    folders = []
    for s in settings:
        one = argparse.Namespace(**{**vars(args), "setting": s, "name": None})  # this setting's budget stays its own
        rims, lstm = _zoo_run(one, s, say)
        folder = parent / s.replace("/", "_")
        folder.mkdir()
        folders.append(_evaluate_and_write(one, rims, lstm, s, one.jobs, say, folder))
    markdown = write_games([load_game(f) for f in folders], parent, args.n_bootstrap, args.bootstrap_seed)
    print(markdown)
    print(f"across games written to {parent}: games.md, games.csv; one result folder per game: "
          + ", ".join(f.name for f in folders))  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the evaluator.

    :param argv: command-line arguments (default: sys.argv[1:])
    :return: exit code (0 ok, 1 error, 2 usage, 3 nothing to evaluate)
    """
    try:
        args = build_parser().parse_args(argv)
    except CliError as error:
        print(f"evaluate.py: error: {error}", file=sys.stderr)
        return 2
    if args.num_threads > 0:
        import torch as th

        th.set_num_threads(args.num_threads)
    try:
        return _run(args)
    except (CliError, SettingsError) as error:  # the user's arguments or files: bad usage
        print(f"evaluate.py: error: {error}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; results already written are kept", file=sys.stderr)
        return 130
    except Exception as error:  # a worker process that died or failed unexpectedly: one line, exit code 1
        runner = sys.modules.get("rims_rl.evaluation.runner")  # not imported yet: it cannot be a worker's error
        if runner is None or not isinstance(error, runner.EvaluationWorkerError):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
