"""Env steps/s of the two ALE paths, gymnasium (DummyVecEnv of SB3-wrapped ALE envs) and EnvPool, random actions.

Both build ``make_vec_env(GAME, n_envs, training=True, frame_stack=4)``; only ``vec_env_cls`` differs
(``"dummy"`` or ``"envpool"``). Each measurement runs in a fresh child process (construction and the first
reset not timed); rounds alternate the order of the paths. Prints one line per measurement and a JSON summary.

    python benchmarks/envpool_fps.py --game Breakout --n-envs 8 --steps 4000 --rounds 2
    python benchmarks/envpool_fps.py --train rims_ppo --steps 2048   # RIMs-PPO training steps/s on both paths

With ``--train ALGO`` each measurement is ``model.learn(steps)`` of ALGO with the ``atari`` hyperparameters of
agents/ALGO.yml (one torch thread), so env time and network time can be told apart by comparing with the env-only
measurement.
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

PATHS = ("dummy", "envpool")


def child(path: str, game: str, n_envs: int, steps: int, train: str | None = None) -> float:
    """
    :param path: ``dummy`` (gymnasium path) or ``envpool``
    :param game: ALE game name
    :param n_envs: number of envs
    :param steps: agent steps to time, summed over the envs
    :param train: None (random actions, env only) or ``rims_ppo`` / ``lstm_ppo`` (time ``model.learn``)
    :return: agent steps per second (each agent step is 4 emulator frames)
    """
    import numpy as np

    from rims_rl.envs import make_vec_env

    if train is not None:
        import torch as th

        from rims_rl.algos import RecurrentPPO
        from rims_rl.cli.train import build_policy, make_training_env
        from rims_rl.config import load_agent_config
        from rims_rl.envs.atari import atari_id

        th.set_num_threads(1)
        config, _ = load_agent_config(train, atari_id(game))
        env = make_training_env(game, config, n_envs, 0, path)
        policy_class, policy_kwargs = build_policy(config, train)
        model = RecurrentPPO(policy_class, env, policy_kwargs=policy_kwargs, seed=0, verbose=0, **config.ppo_kwargs())
        start = time.perf_counter()
        model.learn(steps)
        return steps / (time.perf_counter() - start)
    venv = make_vec_env(game, n_envs=n_envs, seed=0, training=True, vec_env_cls=path, frame_stack=4)  # type: ignore[arg-type]
    venv.reset()
    rng = np.random.default_rng(0)
    actions = rng.integers(venv.action_space.n, size=(steps // n_envs, n_envs))  # type: ignore[attr-defined]
    start = time.perf_counter()
    for a in actions:
        venv.step(a)
    elapsed = time.perf_counter() - start
    venv.close()
    return len(actions) * n_envs / elapsed


def main() -> None:
    """Run the measurements (or, with ``--child``, one of them)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="Breakout")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4000, help="timed agent steps per measurement (all envs)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--train", default=None, choices=["rims_ppo", "lstm_ppo"], help="time training, not env steps")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.game, args.n_envs, args.steps, args.train)))
        return
    fps: dict[str, list[float]] = {p: [] for p in PATHS}
    for r in range(args.rounds):
        for path in PATHS if r % 2 == 0 else PATHS[::-1]:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", path, "--game", args.game]
            cmd += ["--n-envs", str(args.n_envs), "--steps", str(args.steps)] + (["--train", args.train] if args.train else [])
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
            fps[path].append(float(out.strip().splitlines()[-1]))
            print(f"round {r} {path}: {fps[path][-1]:.1f} {'training' if args.train else 'agent'} steps/s", flush=True)
    summary = {p: {"median": statistics.median(v), "rounds": v} for p, v in fps.items()}
    print(json.dumps(dict(game=args.game, n_envs=args.n_envs, steps=args.steps, train=args.train, fps=summary), indent=1))


if __name__ == "__main__":
    main()
