"""What a paper-scale Atari grid costs: CPU time per step measured here, env time against network time.

Each measurement runs in a fresh child process with one torch thread and is timed in CPU seconds of that process
(``time.process_time``), so other jobs on the machine slow the wall clock but not the figure much:

- ``env``: agent steps of the training VecEnv alone (``make_vec_env(GAME, n_envs=8, training=True,
  frame_stack=4)``, the gymnasium path, random actions): the env's share of a training step;
- ``rims_ppo`` / ``lstm_ppo``: ``model.learn(steps)`` with the ``atari`` hyperparameters of agents/ALGO.yml
  (rollouts and PPO updates): the whole training step.

From the medians it prints the cost table of the grid (games x 2 cores x seeds x steps per run): core-hours and days
of a machine with ``--cpu-cores`` cores, measured; and hours of a GPU machine, **estimated**: each trial keeps its
env time on one CPU core and its network time divided by ``--gpu-speedup`` (an assumption, not a measurement),
``--gpu-trials`` trials at a time; plus the floor where the envs alone occupy all ``--gpu-cores`` cores.

    python benchmarks/atari_cost.py --steps 2048 --env-steps 4000 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's rims_rl, not an installed one

KINDS = ("env", "rims_ppo", "lstm_ppo")


def child(kind: str, game: str, n_envs: int, steps: int) -> float:
    """:return: CPU seconds of this process per agent step (summed over the envs) of ``kind``"""
    import numpy as np
    import torch as th

    th.set_num_threads(1)
    if kind == "env":
        from rims_rl.envs import make_vec_env

        venv = make_vec_env(game, n_envs=n_envs, seed=0, training=True, frame_stack=4)
        venv.reset()
        actions = np.random.default_rng(0).integers(venv.action_space.n, size=(steps // n_envs, n_envs))  # type: ignore[attr-defined]
        start = time.process_time()
        for a in actions:
            venv.step(a)
        elapsed = time.process_time() - start
        venv.close()
        return elapsed / (len(actions) * n_envs)
    from rims_rl import RecurrentPPO
    from rims_rl.cli.train import build_policy, make_training_env
    from rims_rl.config import load_agent_config
    from rims_rl.envs.atari import atari_id

    config, _ = load_agent_config(kind, atari_id(game))
    env = make_training_env(game, config, n_envs, 0, "dummy")
    policy_class, policy_kwargs = build_policy(config, kind)
    ppo = config.ppo_kwargs()
    model = RecurrentPPO(policy_class, env, policy_kwargs=policy_kwargs, seed=0, verbose=0, device="cpu", **ppo)
    model.learn(ppo["n_steps"] * n_envs)  # warm-up rollout and update, not timed
    before, start = model.num_timesteps, time.process_time()
    model.learn(steps, reset_num_timesteps=False)  # whole rollouts: at least one of n_steps x n_envs
    return (time.process_time() - start) / (model.num_timesteps - before)


def cost_table(per_step: dict[str, float], args: argparse.Namespace) -> str:
    """:return: the markdown cost table from the medians (CPU seconds per step)"""
    env = per_step["env"]
    lines = ["| grid | env steps | core-hours (measured) | days of this machine | GPU machine-hours (estimate) | "
             "env-only floor (hours) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for games in args.games:
        runs = games * args.seeds
        steps = runs * args.run_steps  # per core
        core_s = steps * (per_step["rims_ppo"] + per_step["lstm_ppo"])
        network = {k: max(per_step[k] - env, 0.0) for k in ("rims_ppo", "lstm_ppo")}
        gpu_s = steps * sum(env + network[k] / args.gpu_speedup for k in network) / args.gpu_trials
        floor_s = 2 * steps * env / args.gpu_cores
        lines.append(f"| {games} games x {args.seeds} seeds x 2 cores x {args.run_steps / 1e6:g}M | {2 * steps / 1e6:,.0f}M | "
                     f"{core_s / 3600:,.0f} | {core_s / 3600 / args.cpu_cores / 24:,.0f} | {gpu_s / 3600:,.0f} | "
                     f"{floor_s / 3600:,.0f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    """Run the measurements (or, with ``--child``, one of them) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="Breakout")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2048, help="timed training steps per measurement")
    parser.add_argument("--env-steps", type=int, default=4000, help="timed agent steps of the env-only measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--games", type=int, nargs="+", default=[11, 41], help="games (atari.yml 11, Table 7 41)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--run-steps", type=float, default=10e6, help="env steps per run")
    parser.add_argument("--cpu-cores", type=int, default=2, help="cores of this machine, for the days column")
    parser.add_argument("--gpu-speedup", type=float, default=10.0, help="ASSUMED network speed-up on the GPU")
    parser.add_argument("--gpu-trials", type=int, default=4, help="trials at a time on the GPU machine")
    parser.add_argument("--gpu-cores", type=int, default=16, help="CPU cores of the GPU machine, for the env-only floor")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        steps = args.env_steps if args.child == "env" else args.steps
        print(json.dumps(child(args.child, args.game, args.n_envs, steps)))
        return
    measured: dict[str, list[float]] = {k: [] for k in KINDS}
    for r in range(args.rounds):
        for kind in KINDS if r % 2 == 0 else KINDS[::-1]:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--game", args.game,
                   "--n-envs", str(args.n_envs), "--steps", str(args.steps), "--env-steps", str(args.env_steps)]  # fmt: skip
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
            measured[kind].append(float(out.strip().splitlines()[-1]))
            print(f"round {r} {kind}: {measured[kind][-1] * 1e3:.2f} ms of CPU per step", flush=True)
    per_step = {k: statistics.median(v) for k, v in measured.items()}
    print(json.dumps({"game": args.game, "n_envs": args.n_envs, "cpu_s_per_step": measured}, indent=1))
    print(cost_table(per_step, args))


if __name__ == "__main__":
    main()
