"""Where one RecurrentPPO training run's CPU time goes, per phase (cProfile), as ``train.py`` builds the model.

    python benchmarks/profile_train.py --env minatar-breakout --algo rims_ppo --steps 16384
    python benchmarks/profile_train.py --env gridworld-pickup --algo lstm_ppo --steps 8192 --stock
    PYTHONPATH=/tmp/perf-before python benchmarks/profile_train.py --stock   # another checkout's package

The model, env and hyperparameters are those of ``rims-train --env ENV --algo ALGO`` (agents/*.yml, one torch
thread, DummyVecEnv); ``--stock`` trains with sb3-contrib's own RecurrentPPO class (its buffer and padded
sequences) instead of the package's. One ``model.learn(steps)`` runs under cProfile; the table gives each phase's
cumulative time (a phase includes the phases indented under it) and its share of ``learn``. cProfile adds a
per-call overhead to Python calls, so the shares, not the absolute seconds, are what to read.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

if not os.environ.get("PYTHONPATH"):  # this checkout's rims_rl, unless PYTHONPATH names one (e.g. an older commit's)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# phase -> (indent, list of (file suffix, function name[, caller name]) whose cumulative times add up to it; with a
# caller name, only the time of the calls made by that function)
PHASES: list[tuple[str, int, list[tuple[str, ...]]]] = [
    ("learn()", 0, [("on_policy_algorithm.py", "learn")]),
    ("rollout (collect_rollouts)", 1, [("ppo_recurrent.py", "collect_rollouts"), ("algos.py", "collect_rollouts")]),
    ("env.step (VecEnv)", 2, [("base_vec_env.py", "step")]),
    ("policy call (forward, no grad)", 2, [("recurrent/policies.py", "forward")]),
    ("feature extractor", 3, [("policies.py", "extract_features", "forward")]),
    ("core (_process_sequence)", 3, [("policies.py", "_process_sequence", "forward")]),
    ("buffer.add (states copied out)", 2, [("recurrent/buffers.py", "add")]),
    ("callbacks (on_step)", 2, [("callbacks.py", "on_step")]),
    ("GAE (compute_returns_and_advantage)", 2, [("buffers.py", "compute_returns_and_advantage")]),
    ("PPO update (train)", 1, [("ppo_recurrent.py", "train")]),
    ("minibatching + padding (buffer.get)", 2, [("recurrent/buffers.py", "get"), ("rims_rl/buffers.py", "get")]),
    ("evaluate_actions (forward)", 2, [("policies.py", "evaluate_actions")]),
    ("feature extractor", 3, [("policies.py", "extract_features", "evaluate_actions")]),
    ("core forward (_process_sequence)", 3, [("policies.py", "_process_sequence", "evaluate_actions")]),
    ("backward (autograd, core backward included)", 2, [("_tensor.py", "backward")]),
    ("optimizer step", 2, [("optimizer.py", "wrapper")]),
    ("grad-norm clip", 2, [("clip_grad.py", "clip_grad_norm_")]),
    ("logger.record/dump", 1, [("logger.py", "record"), ("logger.py", "dump")]),
]


def build(env_name: str, algo: str, seed: int, stock: bool):
    """:return: the model as ``rims-train`` builds it (sb3-contrib's class with ``stock``)."""
    import torch as th

    from rims_rl.cli.train import _resolve_env, build_policy, make_training_env
    from rims_rl.config import load_agent_config

    th.set_num_threads(1)
    _, env_id = _resolve_env(env_name)
    config, _ = load_agent_config(algo, env_id)
    env = make_training_env(env_name, config, config.n_envs, seed, "dummy")
    policy_class, policy_kwargs = build_policy(config, algo)
    if stock:
        from sb3_contrib import RecurrentPPO
    else:
        from rims_rl.algos import RecurrentPPO  # type: ignore[assignment]
    return RecurrentPPO(policy_class, env, policy_kwargs=policy_kwargs, seed=seed, verbose=0, **config.ppo_kwargs())


def phase_table(stats: pstats.Stats) -> list[tuple[str, int, float]]:
    """:return: (phase, indent, cumulative seconds) per phase of :data:`PHASES`."""
    rows = []
    raw = stats.stats  # type: ignore[attr-defined]
    for name, indent, functions in PHASES:
        total = 0.0
        for (file, _line, func), (_cc, _nc, _tt, ct, callers) in raw.items():
            for suffix, fn, *caller in functions:
                if not (file.endswith(suffix) and func == fn):
                    continue
                if caller:  # only the calls made by that caller
                    total += sum(c_stats[3] for c, c_stats in callers.items() if c[2] == caller[0])
                elif not any(c[0].endswith(suffix) and c[2] == fn for c in callers):  # a nested call counts once
                    total += ct
        rows.append((name, indent, total))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="minatar-breakout")
    parser.add_argument("--algo", default="rims_ppo", choices=("rims_ppo", "lstm_ppo"))
    parser.add_argument("--steps", type=int, default=16384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stock", action="store_true", help="sb3-contrib's RecurrentPPO class instead of the package's")
    parser.add_argument("--dump", help="write the raw cProfile stats here")
    parser.add_argument("--top", type=int, default=0, help="also print the N functions with the most own time")
    args = parser.parse_args()
    model = build(args.env, args.algo, args.seed, args.stock)
    model.learn(model.n_steps * model.n_envs)  # warm-up: one rollout and update (kernel load, allocator)
    profiler = cProfile.Profile(time.process_time)  # CPU time: other processes' time slices do not count
    profiler.enable()
    model.learn(args.steps, reset_num_timesteps=False)
    profiler.disable()
    if args.dump:
        profiler.dump_stats(args.dump)
    stats = pstats.Stats(profiler)
    rows = phase_table(stats)
    learn = rows[0][2]
    import rims_rl

    cls = "sb3_contrib.RecurrentPPO" if args.stock else "rims_rl.RecurrentPPO"
    package = Path(rims_rl.__file__).parent.parent
    print(
        f"{args.env} {args.algo} ({cls}, rims_rl from {package}), {args.steps} steps, CPU time under cProfile: {learn:.2f} s"
    )
    print("| phase | CPU s | share of learn |")
    print("| --- | ---: | ---: |")
    for name, indent, seconds in rows:
        print(f"| {'&nbsp;' * 4 * indent}{name} | {seconds:.2f} | {seconds / learn:.0%} |")
    if args.top:
        stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
