"""Training steps/s of RIMs-PPO and LSTM-PPO on one MinAtar game, with the hyperparameters of agents/*.yml.

Each measurement runs ``model.learn(steps)`` in a fresh child process with one torch thread (model and env
construction are not timed), exactly as ``train.py --algo ALGO --env minatar-<game>`` builds them. Rounds
alternate the order of the two agents. Prints one line per measurement and a JSON summary.

    python benchmarks/minatar_fps.py --game Breakout --steps 8192 --rounds 2
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

ALGOS = ("rims_ppo", "lstm_ppo")


def child(algo: str, game: str, steps: int, seed: int) -> float:
    """
    :param algo: ``rims_ppo`` or ``lstm_ppo``
    :param game: a MinAtar game name
    :param steps: training steps to time
    :param seed: seed of the run
    :return: training steps per second of ``model.learn(steps)``
    """
    import torch as th
    from rims_rl.algos import RecurrentPPO

    from rims_rl.cli.train import build_policy, make_training_env
    from rims_rl.config import load_agent_config
    from rims_rl.envs import minatar_id

    th.set_num_threads(1)
    config, _ = load_agent_config(algo, minatar_id(game))
    env = make_training_env(f"minatar-{game.lower()}", config, config.n_envs, seed, "dummy")
    policy_class, policy_kwargs = build_policy(config, algo)
    model = RecurrentPPO(policy_class, env, policy_kwargs=policy_kwargs, seed=seed, verbose=0, **config.ppo_kwargs())
    start = time.perf_counter()
    model.learn(steps)
    return steps / (time.perf_counter() - start)


def main() -> None:
    """Run the measurements (or, with ``--child``, one of them)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="Breakout")
    parser.add_argument("--steps", type=int, default=8192, help="timed training steps per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.game, args.steps, args.seed)))
        return
    fps: dict[str, list[float]] = {a: [] for a in ALGOS}
    for r in range(args.rounds):
        for algo in ALGOS if r % 2 == 0 else ALGOS[::-1]:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", algo, "--game", args.game]
            cmd += ["--steps", str(args.steps), "--seed", str(args.seed)]
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
            fps[algo].append(float(out.strip().splitlines()[-1]))
            print(f"round {r} {algo}: {fps[algo][-1]:.1f} steps/s", flush=True)
    summary = {a: {"median": statistics.median(v), "rounds": v} for a, v in fps.items()}
    print(json.dumps(dict(game=args.game, steps=args.steps, fps=summary), indent=1))


if __name__ == "__main__":
    main()
