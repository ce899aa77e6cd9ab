"""Training steps per CPU second, side by side: SB3 PPO, stock RecurrentPPO, rims_rl LSTM-PPO and RIMs-PPO, on MinAtar
Breakout and the gridworld, for rims_rl at two commits ("before" and "after"), as ratios.

    git archive 539d65c | (mkdir -p /tmp/perf-before && tar -x -C /tmp/perf-before)
    python benchmarks/before_after.py --before /tmp/perf-before --steps 2048 --rounds 2

Every measurement is a fresh child process with one torch thread that builds the env, the hyperparameters and the
policy exactly as ``rims-train --env ENV --algo ALGO`` of its checkout does (agents/*.yml; DummyVecEnv), runs one
rollout and update as a warm-up (the RIMs kernel is built or loaded there), then times ``model.learn(steps)``. The
"before" arms import the package from ``--before`` (``PYTHONPATH``) and train with the class its CLI used
(sb3-contrib's RecurrentPPO); the "after" arms import this checkout and train with ``rims_rl.RecurrentPPO`` (this
CLI's). SB3 PPO (MlpPolicy, the same feature extractor and net_arch) and stock sb3-contrib RecurrentPPO
(MlpLstmPolicy with the same extractor, one LSTM of the same size shared by actor and critic) run once per round.
The agents of a round run one after the other, the order rotated every round. The figure is CPU time
(``time.process_time``), which other processes' time slices on a shared machine do not inflate; ratios are medians
over rounds of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"minatar": "minatar-breakout", "gridworld": "gridworld-pickup"}
# agent -> (checkout arm or None for "after" only, algo section of agents/*.yml)
AGENTS = ("ppo", "stock", "lstm_before", "lstm_after", "rims_before", "rims_after")


def child(setting: str, agent: str, steps: int, seed: int) -> dict[str, Any]:
    """Build and time one agent (runs in the child; the package is whichever ``PYTHONPATH`` gives)."""
    import torch as th

    import rims_rl
    from rims_rl.cli.train import _resolve_env, build_policy, make_training_env
    from rims_rl.config import load_agent_config

    th.set_num_threads(1)
    env_name = SETTINGS[setting]
    base = agent.split("_")[0]
    algo = "rims_ppo" if base == "rims" else "lstm_ppo"
    _, env_id = _resolve_env(env_name)
    config, _ = load_agent_config(algo, env_id)
    env = make_training_env(env_name, config, config.n_envs, seed, "dummy")
    policy_class, policy_kwargs = build_policy(config, algo)
    kwargs = dict(config.ppo_kwargs(), seed=seed, verbose=0, device="cpu")
    if base == "ppo":
        from stable_baselines3 import PPO

        kwargs = {k: v for k, v in kwargs.items() if k != "normalize_advantage" or v is not None}
        extractor = {k: policy_kwargs[k] for k in ("features_extractor_class", "features_extractor_kwargs", "net_arch")}
        model: Any = PPO("MlpPolicy", env, policy_kwargs=extractor, **kwargs)
    elif base == "stock":
        from sb3_contrib import RecurrentPPO

        stock = {k: policy_kwargs[k] for k in ("features_extractor_class", "features_extractor_kwargs", "net_arch")}
        stock.update(lstm_hidden_size=config.policy_kwargs.core_kwargs["hidden_size"], shared_lstm=True,
                     enable_critic_lstm=False)  # fmt: skip
        model = RecurrentPPO("MlpLstmPolicy", env, policy_kwargs=stock, **kwargs)
    else:
        if agent.endswith("_before"):
            from sb3_contrib import RecurrentPPO as cls
        else:
            from rims_rl.algos import RecurrentPPO as cls  # type: ignore[assignment]
        model = cls(policy_class, env, policy_kwargs=policy_kwargs, **kwargs)
    model.learn(model.n_steps * model.n_envs)  # warm-up
    start, start_cpu = time.perf_counter(), time.process_time()
    model.learn(steps, reset_num_timesteps=False)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return dict(setting=setting, agent=agent, steps=steps, cpu_s=cpu, wall_s=wall, steps_per_cpu_s=steps / cpu,
                steps_per_s=steps / wall, package=str(Path(rims_rl.__file__).parent.parent),
                algo_class=f"{type(model).__module__}.{type(model).__name__}")  # fmt: skip


def spawn(setting: str, agent: str, steps: int, seed: int, before: Path) -> dict[str, Any]:
    checkout = before if agent.endswith("_before") else ROOT
    env = dict(os.environ, PYTHONPATH=str(checkout))
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        setting,
        agent,
        "--steps",
        str(steps),
        "--seed",
        str(seed),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=checkout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{setting}/{agent} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if Path(result["package"]).resolve() != checkout.resolve():
        raise RuntimeError(f"{agent} imported rims_rl from {result['package']}, not {checkout}")
    return result


def ratio(runs: list[dict[str, Any]], setting: str, agent: str, base: str) -> float | None:
    """:return: median over rounds of agent / base steps per CPU second, from the same round."""
    mine = {r["round"]: r for r in runs if r["setting"] == setting and r["agent"] == agent}
    ref = {r["round"]: r for r in runs if r["setting"] == setting and r["agent"] == base}
    pairs = [mine[k]["steps_per_cpu_s"] / ref[k]["steps_per_cpu_s"] for k in mine if k in ref]
    return statistics.median(pairs) if pairs else None


def markdown(runs: list[dict[str, Any]], agents: list[str], settings: list[str]) -> str:
    lines = [
        "| setting | agent | steps per CPU s (median) | per round | x PPO | x stock | after / before |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for setting in settings:
        for agent in agents:
            mine = [r["steps_per_cpu_s"] for r in runs if r["setting"] == setting and r["agent"] == agent]
            if not mine:
                continue
            gain = ratio(runs, setting, agent, agent.replace("_after", "_before")) if agent.endswith("_after") else None
            cells = (ratio(runs, setting, agent, "ppo"), ratio(runs, setting, agent, "stock"), gain)
            text = [f"{c:.2f}" if c is not None else "-" for c in cells]
            lines.append(f"| {SETTINGS[setting]} | {agent} | {statistics.median(mine):,.0f} | "
                         f"{[round(m) for m in mine]} | {text[0]} | {text[1]} | **{text[2]}** |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, help="checkout of the 'before' commit (e.g. git archive 539d65c)")
    parser.add_argument("--steps", type=int, default=8192, help="timed training steps per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--agents", nargs="+", default=list(AGENTS), choices=AGENTS)
    parser.add_argument("--out", type=Path, help="write the runs (JSON) and the table (Markdown) next to this path")
    parser.add_argument("--child", nargs=2, metavar=("SETTING", "AGENT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.steps, args.seed)))
        return
    if args.before is None and any(a.endswith("_before") for a in args.agents):
        parser.error("--before CHECKOUT is needed for the *_before agents")
    runs = []
    for rnd in range(args.rounds):
        shift = rnd % len(args.agents)
        order = args.agents[shift:] + args.agents[:shift]
        for setting in args.settings:
            for agent in order:
                result = spawn(setting, agent, args.steps, args.seed, args.before)
                result["round"] = rnd
                runs.append(result)
                print(f"round {rnd} {setting:9s} {agent:12s} {result['steps_per_cpu_s']:8.0f} steps/CPU s "
                      f"({result['steps_per_s']:.0f} wall) {time.strftime('%H:%M:%S')}", flush=True)  # fmt: skip
    table = markdown(runs, args.agents, args.settings)
    print()
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(
            json.dumps(dict(args=vars(args) | {"before": str(args.before), "out": str(args.out)}, runs=runs), indent=1) + "\n"
        )
        args.out.with_suffix(".md").write_text(table)


if __name__ == "__main__":
    main()
