"""Does a gridworld test split shift the agents? Success per split, before any RIMs-vs-LSTM comparison.

For each agent (run folder, .zip or zoo id) and each split of a gridworld setting: success rate and mean return
over the split's fixed evaluation seeds, with sampled and with greedy actions, and the drop from the training split.
Per split also: the fraction of episodes whose target is in the first view, and a uniform-random agent's success.

    PYTHONPATH=. python benchmarks/pickup_shift.py logs/lstm_ppo/<run> -n 200
    PYTHONPATH=. python benchmarks/pickup_shift.py logs/lstm_ppo/<run> --splits train novel-distractors \
        --override n_novel_distractors=8

Success is a positive return (only picking up the target is rewarded). ``--override KEY=VALUE`` (value read as YAML)
changes an argument of every held-out split except ``known``, e.g. to try a larger shift without new env ids.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
import yaml

from rims_rl.envs import load_setting, make_env, make_eval_vec_env
from rims_rl.envs.gridworld import first_view_fraction
from rims_rl.evaluation.checkpoints import load_model, resolve_agent
from rims_rl.evaluation.rollout import UniformRandomAgent, run_episodes


def _split_kwargs(split: str, overrides: dict[str, Any]) -> dict[str, Any] | None:
    return None if split in ("train", "known") or not overrides else dict(overrides)


def _success(agent: Any, setting: str, split: str, n: int, n_envs: int, deterministic: bool, kw: dict | None) -> dict:
    env = make_eval_vec_env(setting, split, n_envs=n_envs, env_kwargs=kw)
    th.manual_seed(0)  # sampled actions: the same draws on every call
    episodes = run_episodes(agent, env, n, deterministic=deterministic)
    env.close()
    returns = episodes.returns
    return {"success": float(np.mean(returns > 0)), "return": float(np.mean(returns)), "n": len(returns)}


def main(argv: list[str] | None = None) -> int:
    """
    :param argv: command-line arguments
    :return: exit code
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("agents", nargs="*", help="run folders, .zip checkpoints or zoo ids")
    parser.add_argument("--setting", default="gridworld-pickup")
    parser.add_argument("--splits", nargs="+", default=None, help="default: all, training split first")
    parser.add_argument("-n", "--n-episodes", type=int, default=200)
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--override", nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-greedy", action="store_true", help="sampled actions only")
    parser.add_argument("-o", "--output", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    try:
        setting = load_setting(args.setting)
        splits = args.splits or setting.splits
        overrides = {k: yaml.safe_load(v) for k, _, v in (o.partition("=") for o in args.override)}
        agents = [resolve_agent(a) for a in args.agents]
    except (ValueError, FileNotFoundError) as e:
        print(f"pickup_shift: {e}", file=sys.stderr)
        return 2
    modes = ["sampled"] + ([] if args.no_greedy else ["greedy"])
    results: dict[str, Any] = {"setting": setting.name, "n_episodes": args.n_episodes, "overrides": overrides, "splits": {}}
    for split in splits:
        kw = _split_kwargs(split, overrides)
        entry = setting.env(split)
        probe = make_env(entry, training=False, env_kwargs=kw)
        row: dict[str, Any] = {"first_view": first_view_fraction(probe, 1000, seed=setting.eval_seeds[split])}
        probe.close()
        venv = make_eval_vec_env(setting, split, n_envs=args.n_envs, env_kwargs=kw)
        random_agent = UniformRandomAgent(venv.action_space, args.n_envs, seed=0)
        venv.close()
        row["random"] = _success(random_agent, setting.name, split, args.n_episodes, args.n_envs, False, kw)["success"]
        for spec in agents:
            model = load_model(spec.path)
            row[spec.label] = {m: _success(model, setting.name, split, args.n_episodes, args.n_envs, m == "greedy", kw)
                               for m in modes}
        results["splits"][split] = row
        print(f"{split}: {json.dumps(row)}", flush=True)
    columns = ["split", "target in first view", "random success"] + [
        f"{s.label} success {m} (drop)" for s in agents for m in modes]
    print("\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    base = results["splits"].get(splits[0])
    for split, row in results["splits"].items():
        cells = [f"{row['first_view']:.3f}", f"{row['random']:.3f}"]
        for spec in agents:
            for m in modes:
                s = row[spec.label][m]["success"]
                drop = base[spec.label][m]["success"] - s if base is not None else float("nan")
                cells.append(f"{s:.3f} ({drop:+.3f})")
        print(f"| {split} | " + " | ".join(cells) + " |")
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
