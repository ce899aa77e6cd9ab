"""Same-seed learning curves of RIMs-PPO with and without truncated training sequences.

Truncation (``rims_rl.algos.RecurrentPPO(seq_len=L)``) changes learning dynamics (gradients through time stop
at chunk boundaries), so it must be shown not to hurt learning before it is used. This script trains the same
agent, same seed, once with sb3-contrib's sequences (``seq_len=None``) and once per truncation length, and logs
the mean training episode return after every rollout.

Usage::

    python benchmarks/truncation_curves.py --env RimsCueRecall-v0 --steps 16000 --seq-lens none 16 4 --seeds 0 1 2
    python benchmarks/truncation_curves.py --env MiniGrid-RimsPickup-Train-v0 --steps 150000 --seq-lens none 32 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

ROOT = Path(__file__).resolve().parents[1]


class _Curve(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.points: list[tuple[int, float]] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buf = self.model.ep_info_buffer
        if buf:
            self.points.append((self.num_timesteps, float(statistics.mean(e["r"] for e in buf))))


def train(env_id: str, seq_len: int | None, steps: int, seed: int, threads: int) -> dict[str, Any]:
    import torch as th
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    import rims_rl
    import rims_rl.envs
    from rims_rl.algos import RecurrentPPO
    from rims_rl.envs.memory import CueRecallEnv, recall_success
    from rims_rl.torch_layers import MiniGridCNN

    th.set_num_threads(threads)
    if env_id.startswith("MiniGrid"):
        # agents/rims_ppo.yml's minigrid defaults
        env = make_vec_env(env_id, n_envs=16, seed=seed, vec_env_cls=DummyVecEnv)
        hp = dict(n_steps=128, batch_size=256, n_epochs=4, learning_rate=1e-3, clip_range=0.2, ent_coef=0.01)
        policy_kwargs = dict(
            features_extractor_class=MiniGridCNN,
            features_extractor_kwargs=dict(features_dim=128, cell_channels=32),
            net_arch=[64],
            core="rims",
            core_kwargs=dict(n_units=4, k_active=2, unit_size=32),
        )
    else:  # the lead's cue-recall learning test (tests/test_policies.py): 3 cues, delay 6, chance 1/3
        env = make_vec_env(lambda: CueRecallEnv(n_cues=3, delay=6), n_envs=8, seed=seed, vec_env_cls=DummyVecEnv)
        hp = dict(n_steps=32, batch_size=64, n_epochs=4, learning_rate=3e-3, gamma=0.9, ent_coef=0.01)
        small = dict(
            n_units=4, k_active=2, unit_size=16, input_key_size=16, input_value_size=16, comm_key_size=8, comm_value_size=8
        )
        policy_kwargs = dict(net_arch=[32], core="rims", core_kwargs=small)
    model = RecurrentPPO(
        rims_rl.MlpRimsPolicy, env, policy_kwargs=policy_kwargs, seq_len=seq_len, seed=seed, verbose=0, device="cpu", **hp
    )
    curve = _Curve()
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps, callback=curve)
    wall = time.perf_counter() - t0
    pts = curve.points
    success = None if env_id.startswith("MiniGrid") else recall_success(model, n_cues=3, delay=6)
    last = [r for _, r in pts[-max(1, len(pts) // 5) :]]
    return dict(
        env_id=env_id,
        seq_len=seq_len,
        seed=seed,
        steps=model.num_timesteps,
        wall_s=wall,
        final_return=statistics.mean(last),
        eval_success=success,
        curve=pts,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="RimsCueRecall-v0", help="RimsCueRecall-v0 (3 cues, delay 6) or a MiniGrid id")
    parser.add_argument("--steps", type=int, default=16_000)
    parser.add_argument("--seq-lens", nargs="+", default=["none", "16"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    results = []
    for seed in args.seeds:
        for s in args.seq_lens:
            seq_len = None if s == "none" else int(s)
            r = train(args.env, seq_len, args.steps, seed, args.threads)
            results.append(r)
            print(
                f"{args.env} seed {seed} seq_len {seq_len}: final return {r['final_return']:.3f} "
                f"eval success {r['eval_success']} ({r['steps']} steps, {r['wall_s']:.0f} s)",
                flush=True,
            )
    name = args.env.replace("/", "_")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"curves_{name}.json").write_text(json.dumps(dict(args=vars(args), results=results)) + "\n")
    lines = [
        "| env | seed | seq_len | steps | final return (mean of last 20% rollouts) | return at 25/50/75/100% "
        "| eval success (deterministic, 60 episodes) |",
        "| --- | ---: | --- | ---: | ---: | --- | ---: |",
    ]
    for r in results:
        pts = r["curve"]
        marks = [pts[min(len(pts) - 1, int(len(pts) * q) - 1)][1] for q in (0.25, 0.5, 0.75, 1.0)] if pts else []
        lines.append(
            f"| {r['env_id']} | {r['seed']} | {r['seq_len']} | {r['steps']} | {r['final_return']:.3f} | "
            f"{' / '.join(f'{m:.2f}' for m in marks)} | {r['eval_success'] if r['eval_success'] is not None else '-'} |"
        )
    md = "\n".join(lines) + "\n"
    (out / f"curves_{name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
