"""Forward + backward time of one recurrent core over a sequence (RIMs vs nn.LSTM), per sequential step.

    python benchmarks/core_step.py                                   # gridworld sizes, batch 16
    python benchmarks/core_step.py --batch 8 32 --repeats 20
    python benchmarks/core_step.py --sizes atari --batch 3           # paper's Atari core: 6 units, k_active 5, 85

Gridworld sizes by default: RIMs 4 units, k_active 2, unit size 32 (hidden 128) vs ``LSTMCore(128)``.
Cores: ``rims`` is the default (the fused path, compiled where the kernel is available: rims_rl/nn/rims_native.py),
``rims_torch`` the fused path in PyTorch (``native=False``: the fallback, and the default before the kernel),
``rims_autograd`` the autograd step (``fused=False``), ``lstm`` the baseline at the same state size.

The cores take turns within every repeat. Time is the process's CPU time (``time.process_time``; one torch thread),
which time-slicing by other processes on a shared machine does not inflate; wall-clock medians are printed too.
Ratios are medians of the per-repeat ratios, robust to a machine whose speed drifts.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch as th

from rims_rl.nn import LSTMCore, RIMs, rims_native

SIZES = {
    "gridworld": dict(input_size=128, rims=dict(n_units=4, k_active=2, unit_size=32)),
    "atari": dict(input_size=512, rims=dict(n_units=6, k_active=5, unit_size=85)),
}


def time_once(core: th.nn.Module, x: th.Tensor, starts: th.Tensor) -> tuple[float, float]:
    """:return: CPU seconds and wall seconds for one forward+backward of the whole sequence."""
    cpu, wall = time.process_time(), time.perf_counter()
    out, _ = core(x, None, starts)
    out.sum().backward()
    return time.process_time() - cpu, time.perf_counter() - wall


def measure(sizes: str, batch: int, seq_len: int, repeats: int) -> dict[str, float]:
    """:return: per-step medians (us) of each core and the median per-repeat ratios to the LSTM."""
    n_in, rims_kwargs = SIZES[sizes]["input_size"], SIZES[sizes]["rims"]
    hidden = rims_kwargs["n_units"] * rims_kwargs["unit_size"]
    th.manual_seed(0)
    cores = {
        "rims": RIMs(n_in, **rims_kwargs),
        "rims_torch": RIMs(n_in, **rims_kwargs, native=False),
        "rims_autograd": RIMs(n_in, **rims_kwargs, fused=False),
        "lstm": LSTMCore(n_in, hidden),
    }
    x = th.randn(seq_len, batch, n_in, requires_grad=True)
    starts = th.zeros(seq_len, batch)
    starts[seq_len // 4, 0] = 1.0
    cpu: dict[str, list[float]] = {name: [] for name in cores}
    wall: dict[str, list[float]] = {name: [] for name in cores}
    for i in range(repeats + 2):
        for name, core in cores.items():
            c, w = time_once(core, x, starts)
            if i >= 2:  # warm-up
                cpu[name].append(c)
                wall[name].append(w)
    result = {}
    for name in cores:
        result[f"{name}_us"] = statistics.median(cpu[name]) / seq_len * 1e6
        result[f"{name}_wall_us"] = statistics.median(wall[name]) / seq_len * 1e6
        result[f"{name}/lstm"] = statistics.median(a / b for a, b in zip(cpu[name], cpu["lstm"], strict=True))
    result["rims/rims_torch"] = statistics.median(a / b for a, b in zip(cpu["rims"], cpu["rims_torch"], strict=True))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", choices=sorted(SIZES), default="gridworld")
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--batch", type=int, nargs="+", default=[16])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    kernel = "compiled kernel" if rims_native.load() is not None else f"no kernel ({rims_native.unavailable_reason()})"
    print(f"sizes {args.sizes}, {args.seq_len} steps, {args.repeats} interleaved repeats, {args.threads} thread(s), {kernel}")
    print("| batch | rims us/step | rims_torch | rims_autograd | lstm | rims / lstm | rims_torch / lstm | rims / rims_torch |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for batch in args.batch:
        r = measure(args.sizes, batch, args.seq_len, args.repeats)
        print(
            f"| {batch} | {r['rims_us']:.0f} | {r['rims_torch_us']:.0f} | {r['rims_autograd_us']:.0f} | {r['lstm_us']:.0f} "
            f"| **{r['rims/lstm']:.2f}** | {r['rims_torch/lstm']:.2f} | {r['rims/rims_torch']:.2f} |"
        )
    print("us/step: median CPU time per sequential step (forward + backward); ratios: medians of per-repeat ratios")


if __name__ == "__main__":
    main()
