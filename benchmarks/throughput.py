"""Training throughput of stock RecurrentPPO-LSTM, SB3 PPO, rims_rl LSTM-PPO and rims_rl RIMs-PPO, side by side.

Every measurement runs in a fresh child process (same interpreter, same thread count), and the agents are run
round-robin (A B C D, then again with the order rotated), so that machine drift hits all agents alike; the
table quotes each agent's median steps/s and ratios to the stock baseline and to PPO.

Peak memory is the child's ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (peak resident set size of the whole
process, in MiB: includes the interpreter, torch, the envs and the rollout buffer; tracemalloc is not used because
it does not see torch's tensor allocations). ``rss_model`` is the RSS after the model and envs are built, before
training, so ``peak - rss_model`` is roughly what training itself added.

Usage (the default run takes a few minutes on 2 CPU cores)::

    python benchmarks/throughput.py                          # both settings, 8,192 steps, 1 round
    python benchmarks/throughput.py --steps 2048 --rounds 1  # quick
    python benchmarks/throughput.py --setting atari --rounds 3 --agents ppo rims rims_sp rims_sp_t16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# Agents: name -> description. Flags for lstm/rims: "_sp" wraps the features extractor in
# the policy's skip_padding=True (default); "_t<L>" trains with sequences truncated to L steps (rims_rl.algos.RecurrentPPO);
# "_ag" (rims only) runs the RIMs core's autograd step instead of its fused whole-sequence path (RIMs(fused=False));
# "_pt" (rims only) runs the fused path in PyTorch instead of the compiled kernel (RIMs(native=False)).
AGENTS = {
    "stock": "sb3-contrib RecurrentPPO, stock Cnn/MlpLstmPolicy (shared LSTM)",
    "stockdef": "sb3-contrib RecurrentPPO, stock Cnn/MlpLstmPolicy, default arrangement (separate actor and critic LSTMs)",
    "ppo": "SB3 PPO CnnPolicy, 4-frame stack (gridworld: MiniGridCNN, no stack)",
    "lstm": "rims_rl LSTM-PPO: rims_rl.RecurrentPPO + CnnRimsPolicy(core='lstm')",
    "rims": "rims_rl RIMs-PPO: rims_rl.RecurrentPPO + CnnRimsPolicy(core='rims')",
}
DEFAULT_AGENTS = ["stock", "stockdef", "ppo", "lstm_sp", "rims_sp", "rims_sp_ag"]
SETTINGS = ("atari", "gridworld")

# Shared PPO hyperparameters: the paper's Atari setup (App. D.8); for the gridworld, the comparison's own
# (agents/rims_ppo.yml and agents/lstm_ppo.yml, section "minigrid": the two differ only in the core).
_ATARI_PPO = dict(
    n_steps=128,
    batch_size=256,
    n_epochs=4,
    learning_rate=2.5e-4,
    clip_range=0.1,
    ent_coef=0.01,
    vf_coef=0.5,
    max_grad_norm=0.5,
    gamma=0.99,
    gae_lambda=0.95,
)
GRID_ID = "MiniGrid-RimsPickup-Train-v0"


def _grid_config(algo: str = "rims_ppo") -> Any:
    """:return: the gridworld comparison's AgentConfig (agents/<algo>.yml, section minigrid)."""
    sys.path.insert(0, str(ROOT))  # this checkout's rims_rl, not another one installed in the interpreter
    from rims_rl.config import load_agent_config

    return load_agent_config(algo, GRID_ID)[0]


def ppo_kwargs(setting: str) -> dict[str, Any]:
    """:return: the PPO hyperparameters shared by every agent of a setting."""
    if setting == "atari":
        return dict(_ATARI_PPO)
    kwargs = _grid_config().ppo_kwargs()
    return {k: v for k, v in kwargs.items() if v is not None}


def n_envs(setting: str) -> int:
    """:return: the number of envs of a setting (Atari 8; gridworld as in agents/*.yml)."""
    return 8 if setting == "atari" else int(_grid_config().n_envs)


def core_config(setting: str) -> dict[str, Any]:
    """:return: same recurrent state size for every recurrent agent of a setting: LSTM hidden and RIMs sizes."""
    if setting == "atari":
        return dict(hidden=510, rims=dict(n_units=6, k_active=5, unit_size=85))
    rims = _grid_config("rims_ppo").policy_kwargs.core_kwargs
    return dict(hidden=_grid_config("lstm_ppo").policy_kwargs.core_kwargs["hidden_size"], rims=dict(rims))


GRID_FALLBACK_ID = "MiniGrid-DoorKey-5x5-v0"


def _parse_agent(name: str) -> tuple[str, int | None, bool, dict[str, bool]]:
    """ "rims_sp_t16" -> ("rims", 16, True, {}): base agent, truncation length (or None), skip-padding extractor,
    RIMs path options (``fused``, ``native``)."""
    base, *flags = name.split("_")
    seq_len, skip, path = None, False, {}
    for flag in flags:
        if flag == "sp":
            skip = True
        elif flag == "ag" and base == "rims":
            path["fused"] = False
        elif flag == "pt" and base == "rims":
            path["native"] = False
        elif flag.startswith("t") and flag[1:].isdigit():
            seq_len = int(flag[1:])
        else:
            raise ValueError(f"unknown agent flag {flag!r} in {name!r}")
    if base not in AGENTS or (flags and base not in ("lstm", "rims")):
        raise ValueError(f"unknown agent {name!r}")
    return base, seq_len, skip, path


# --------------------------------------------------------------------------------------------------- child side
def _make_env(setting: str, agent: str, seed: int) -> tuple[Any, str]:
    from stable_baselines3.common.env_util import make_atari_env, make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

    if setting == "atari":
        import ale_py
        import gymnasium as gym

        gym.register_envs(ale_py)
        env = make_atari_env(
            "ALE/Breakout-v5",
            n_envs=n_envs(setting),
            seed=seed,
            vec_env_cls=DummyVecEnv,
            env_kwargs=dict(frameskip=1, repeat_action_probability=0.25),
        )
        if agent == "ppo":
            env = VecFrameStack(env, n_stack=4)
        return env, "ALE/Breakout-v5"
    env_id = GRID_ID
    try:
        import rims_rl.envs  # noqa: F401  (registers the gridworld ids)
        import gymnasium as gym

        gym.spec(env_id)
        wrapper = None
    except Exception:  # the gridworld env is not there: DoorKey with the image only
        from minigrid.wrappers import ImgObsWrapper

        env_id, wrapper = GRID_FALLBACK_ID, ImgObsWrapper
    env = make_vec_env(env_id, n_envs=n_envs(setting), seed=seed, vec_env_cls=DummyVecEnv, wrapper_class=wrapper)
    return env, env_id


def _make_model(setting: str, agent: str, env: Any, seed: int) -> Any:
    from sb3_contrib import RecurrentPPO
    from stable_baselines3 import PPO

    import rims_rl

    from rims_rl.algos import RecurrentPPO as PackageRecurrentPPO
    from rims_rl.torch_layers import MiniGridCNN

    base, seq_len, skip, path = _parse_agent(agent)
    kwargs = dict(ppo_kwargs(setting), seed=seed, verbose=0, device="cpu")
    cores = core_config(setting)
    hidden = cores["hidden"]
    if setting == "atari":
        extractor: dict[str, Any] = {}
        net_arch: list[int] = []
    else:
        grid = _grid_config().policy_kwargs
        extractor = dict(features_extractor_class=MiniGridCNN, features_extractor_kwargs=dict(grid.features_extractor_kwargs))
        net_arch = list(grid.net_arch)
    if base == "ppo":
        return PPO(
            "CnnPolicy" if setting == "atari" else "MlpPolicy", env, policy_kwargs=dict(extractor, net_arch=net_arch), **kwargs
        )
    if base in ("stock", "stockdef"):
        policy = "CnnLstmPolicy" if setting == "atari" else "MlpLstmPolicy"
        policy_kwargs = dict(extractor, net_arch=net_arch, lstm_hidden_size=hidden)
        if base == "stock":
            policy_kwargs.update(shared_lstm=True, enable_critic_lstm=False)
        return RecurrentPPO(policy, env, policy_kwargs=policy_kwargs, **kwargs)
    policy_cls = rims_rl.CnnRimsPolicy if setting == "atari" else rims_rl.MlpRimsPolicy
    core_kwargs = dict(hidden_size=hidden) if base == "lstm" else dict(cores["rims"], **path)
    policy_kwargs = dict(extractor, net_arch=net_arch, core=base, core_kwargs=core_kwargs)
    # "_sp": the policy's skip_padding (the extractor runs once for all of sb3-contrib's all-zero padding rows)
    policy_kwargs["skip_padding"] = skip
    # the package's class, as rims-train uses it (unpadded minibatches; seq_len cuts with "_t<L>")
    return PackageRecurrentPPO(policy_cls, env, policy_kwargs=policy_kwargs, seq_len=seq_len, **kwargs)


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_child(setting: str, agent: str, steps: int, seed: int, threads: int, profile: str | None) -> dict[str, Any]:
    import torch as th

    th.set_num_threads(threads)
    env, env_id = _make_env(setting, agent, seed)
    model = _make_model(setting, agent, env, seed)
    rss_model = _rss_mib()
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    start, start_cpu = time.perf_counter(), time.process_time()
    model.learn(total_timesteps=steps)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    if profile:
        prof.disable()
        prof.dump_stats(profile)
    env.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return dict(
        setting=setting,
        agent=agent,
        env_id=env_id,
        steps=model.num_timesteps,
        wall_s=wall,
        steps_per_s=model.num_timesteps / wall,
        cpu_s=cpu,
        steps_per_cpu_s=model.num_timesteps / cpu,  # CPU time: what time-slicing on a shared machine does not inflate
        rss_model_mib=rss_model,
        peak_rss_mib=peak,
    )


# -------------------------------------------------------------------------------------------------- acting step
def acting_latency(threads: int, iters: int, rounds: int = 5) -> dict[str, Any]:
    """Latency of one acting step for one env: RIMs core vs nn.LSTM of the same state size (Atari config)."""
    import torch as th
    from torch import nn

    from rims_rl.nn import RIMs

    th.set_num_threads(threads)
    th.manual_seed(0)
    feat = 512
    cfg = core_config("atari")
    rims = RIMs(feat, **cfg["rims"]).eval()
    lstm = nn.LSTM(feat, cfg["hidden"]).eval()
    x = th.randn(1, 1, feat)
    state = (th.zeros(1, 1, cfg["hidden"]), th.zeros(1, 1, cfg["hidden"]))
    starts = th.zeros(1, 1)
    calls = {
        "rims": lambda: rims(x, state, starts),
        "lstm": lambda: lstm(x, state),
    }
    times: dict[str, list[float]] = {k: [] for k in calls}
    with th.inference_mode():
        for fn in calls.values():  # warm-up
            for _ in range(50):
                fn()
        for _ in range(rounds):  # interleaved rounds
            for name, fn in calls.items():
                t0 = time.perf_counter()
                for _ in range(iters):
                    fn()
                times[name].append((time.perf_counter() - t0) / iters * 1e6)
    med = {k: statistics.median(v) for k, v in times.items()}
    return dict(
        rims_us=med["rims"],
        lstm_us=med["lstm"],
        ratio=med["rims"] / med["lstm"],
        hidden=cfg["hidden"],
        rims_config=cfg["rims"],
        input_size=feat,
        iters=iters,
        rounds=rounds,
    )


# -------------------------------------------------------------------------------------------------- parent side
def environment_info(threads: int) -> dict[str, Any]:
    import gymnasium
    import sb3_contrib
    import stable_baselines3
    import torch as th

    return dict(
        machine=platform.machine(),
        processor=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        python=platform.python_version(),
        torch=th.__version__,
        device="cpu",
        torch_threads=threads,
        sb3=stable_baselines3.__version__,
        sb3_contrib=sb3_contrib.__version__,
        gymnasium=gymnasium.__version__,
        date=time.strftime("%Y-%m-%d %H:%M:%S"),
    )


def _spawn(setting: str, agent: str, steps: int, seed: int, threads: int) -> dict[str, Any]:
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
        "--threads",
        str(threads),
    ]
    # the child imports this checkout's rims_rl, whatever else the interpreter has installed
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{setting}/{agent} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict[str, Any]], agents: list[str]) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for setting in SETTINGS:
        rows = [r for r in runs if r["setting"] == setting]
        if not rows:
            continue
        per_agent = {}
        for agent in agents:
            mine = [r for r in rows if r["agent"] == agent]
            if mine:
                per_agent[agent] = dict(
                    steps_per_s=statistics.median(r["steps_per_s"] for r in mine),
                    all_steps_per_s=[round(r["steps_per_s"], 1) for r in mine],
                    steps_per_cpu_s=statistics.median(r.get("steps_per_cpu_s", float("nan")) for r in mine),
                    peak_rss_mib=max(r["peak_rss_mib"] for r in mine),
                    rss_model_mib=max(r["rss_model_mib"] for r in mine),
                    env_id=mine[0]["env_id"],
                )
        # Ratios from the same rounds: median over rounds of (agent / baseline) in that round.
        for agent, row in per_agent.items():
            for base in ("stock", "ppo", "lstm_sp"):
                pairs = [
                    a["steps_per_s"] / b["steps_per_s"]
                    for a in rows
                    if a["agent"] == agent
                    for b in rows
                    if b["agent"] == base and b["round"] == a["round"]
                ]
                row[f"x_{base}"] = statistics.median(pairs) if pairs else None
            pairs = [
                a["steps_per_cpu_s"] / b["steps_per_cpu_s"]
                for a in rows
                if a["agent"] == agent and "steps_per_cpu_s" in a
                for b in rows
                if b["agent"] == "lstm_sp" and b["round"] == a["round"] and "steps_per_cpu_s" in b
            ]
            row["x_lstm_sp_cpu"] = statistics.median(pairs) if pairs else None
        table[setting] = per_agent
    return table


def markdown(table: dict[str, dict[str, Any]], latency: dict[str, Any] | None, info: dict[str, Any], args: Any) -> str:
    lines = [
        f"Steps per setting: {args.steps:,} (DummyVecEnv); rounds: {args.rounds}; torch {info['torch']} "
        f"({info['device']}, {info['torch_threads']} threads), SB3 {info['sb3']}, sb3-contrib {info['sb3_contrib']}, "
        f"{info['cpu_count']} CPUs, {info['date']}.",
        "Atari: 8 envs, n_steps 128, batch 256, 4 epochs; RIMs n_units 6, k_active 5, unit_size 85 (hidden 510); "
        "LSTMs hidden 510; shared core/features.",
        "Gridworld: agents/*.yml minigrid (16 envs, n_steps 128, batch 256, 4 epochs, MiniGridCNN features 128 with "
        "cell_channels 32, net_arch [64]); RIMs n_units 4, k_active 2, unit_size 32 (hidden 128); LSTMs hidden 128.",
        "",
        "| setting | agent | steps/s (median) | per round | x stock | x PPO | x lstm_sp | steps per CPU s | x lstm_sp (CPU) "
        "| peak RSS MiB | RSS before MiB |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for setting, rows in table.items():
        for agent, r in rows.items():
            xs, xp, xl, xc = (f"{r[k]:.2f}" if r.get(k) else "-" for k in ("x_stock", "x_ppo", "x_lstm_sp", "x_lstm_sp_cpu"))
            lines.append(
                f"| {setting} ({r['env_id']}) | {agent} | {r['steps_per_s']:.1f} | {r['all_steps_per_s']} | {xs} | {xp} | "
                f"{xl} | {r['steps_per_cpu_s']:.1f} | {xc} | {r['peak_rss_mib']:.0f} | {r['rss_model_mib']:.0f} |"
            )
    lines.append("")
    lines.append(
        "Agents: "
        + "; ".join(f"`{k}` = {v}" for k, v in AGENTS.items())
        + "; `_sp` = the policy's skip_padding=True, its default (no extractor work on sb3-contrib's "
        "padding; same losses and gradients); `_t<L>` = rims_rl.algos.RecurrentPPO with training sequences "
        "truncated to L steps from stored states (changes learning dynamics); `_ag` = the RIMs core's autograd "
        "step (`RIMs(fused=False)`) instead of its fused whole-sequence forward/backward (same results); `_pt` = "
        "the fused path in PyTorch (`RIMs(native=False)`) instead of the compiled kernel (same results)."
    )
    if latency:
        lines += [
            "",
            f"Acting step, one env, input {latency['input_size']}: RIMs {latency['rims_us']:.0f} us vs nn.LSTM(hidden "
            f"{latency['hidden']}) {latency['lstm_us']:.0f} us -> ratio {latency['ratio']:.2f}x "
            f"(median of {latency['rounds']} interleaved rounds of {latency['iters']} calls, inference mode).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8192, help="training steps per measurement")
    parser.add_argument("--rounds", type=int, default=1, help="round-robin rounds (agent order rotated each round)")
    parser.add_argument("--setting", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument(
        "--agents",
        nargs="+",
        default=DEFAULT_AGENTS,
        help="stock stockdef ppo lstm rims; flags for lstm/rims: _sp (skip_padding on; off without it), _t<L> (truncated "
        "sequences); for rims: _ag (autograd step instead of the fused path), _pt (fused path in PyTorch, no kernel)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("RIMS_BENCH_THREADS", "1")),
        help="torch.set_num_threads in every child (default 1: the machine is shared)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency-iters", type=int, default=300, help="calls per acting-latency round (0: skip)")
    parser.add_argument("--out", default=str(RESULTS), help="folder for throughput.json / throughput.md")
    parser.add_argument("--tag", default="", help="suffix of the result file names")
    parser.add_argument("--child", nargs=2, metavar=("SETTING", "AGENT"), help=argparse.SUPPRESS)
    parser.add_argument("--profile", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(run_child(args.child[0], args.child[1], args.steps, args.seed, args.threads, args.profile)))
        return

    info = environment_info(args.threads)
    print(json.dumps(info))
    runs = []
    for rnd in range(args.rounds):
        order = args.agents[rnd % len(args.agents) :] + args.agents[: rnd % len(args.agents)]
        for setting in args.setting:
            for agent in order:
                r = _spawn(setting, agent, args.steps, args.seed, args.threads)
                r["round"] = rnd
                runs.append(r)
                print(
                    f"round {rnd} {setting:9s} {agent:9s} {r['steps_per_s']:7.1f} steps/s  peak {r['peak_rss_mib']:.0f} MiB",
                    flush=True,
                )
    latency = acting_latency(args.threads, args.latency_iters) if args.latency_iters > 0 else None
    table = summarise(runs, args.agents)
    md = markdown(table, latency, info, args)
    print()
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = f"_{args.tag}" if args.tag else ""
    (out / f"throughput{suffix}.json").write_text(
        json.dumps(dict(info=info, args=vars(args), runs=runs, table=table, acting_latency=latency), indent=1) + "\n"
    )
    (out / f"throughput{suffix}.md").write_text(md)


if __name__ == "__main__":
    main()
