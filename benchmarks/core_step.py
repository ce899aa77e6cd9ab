"""Forward + backward time of one recurrent core over a sequence (RIMs vs nn.LSTM), per sequential step.

    python benchmarks/core_step.py --seq-len 100 --batch 16 --input 128
    python benchmarks/core_step.py --sizes atari --batch 3          # paper's Atari core: 6 units, k_active 5, 85

Gridworld sizes by default: RIMs 4 units, k_active 2, unit size 32 (hidden 128) vs an LSTM of 128.
``rims`` is the default (fused whole-sequence forward/backward); ``rims_autograd`` is the same core with
``fused=False`` (one autograd graph of ~40 ops per step). The cores take turns within every repeat, and the
ratio autograd / fused is the median of the per-repeat ratios (robust to a machine whose speed drifts).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch as th

from rims_rl.nn import LSTMCore, RIMs

SIZES = {
    "gridworld": dict(input_size=128, rims=dict(n_units=4, k_active=2, unit_size=32)),
    "atari": dict(input_size=512, rims=dict(n_units=6, k_active=5, unit_size=85)),
}


def time_once(core: th.nn.Module, x: th.Tensor, starts: th.Tensor) -> float:
    """:return: seconds for one forward+backward of the whole sequence."""
    start = time.perf_counter()
    out, _ = core(x, None, starts)
    out.sum().backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", choices=sorted(SIZES), default="gridworld")
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    sizes = SIZES[args.sizes]
    n_in, rims_kwargs = sizes["input_size"], sizes["rims"]
    hidden = rims_kwargs["n_units"] * rims_kwargs["unit_size"]
    cores = {
        "rims": RIMs(n_in, **rims_kwargs),
        "rims_autograd": RIMs(n_in, **rims_kwargs, fused=False),
        "lstm": LSTMCore(n_in, hidden),
    }
    x = th.randn(args.seq_len, args.batch, n_in, requires_grad=True)
    starts = th.zeros(args.seq_len, args.batch)
    starts[args.seq_len // 4, 0] = 1.0
    times: dict[str, list[float]] = {name: [] for name in cores}
    for i in range(args.repeats + 2):
        for name, core in cores.items():
            dt = time_once(core, x, starts)
            if i >= 2:  # warm-up
                times[name].append(dt)
    for name, ts in times.items():
        dt = statistics.median(ts)
        print(f"{name}: {dt * 1e3:.1f} ms per fwd+bwd of {args.seq_len} steps = {dt / args.seq_len * 1e6:.0f} us/step")
    ratio = statistics.median(a / f for a, f in zip(times["rims_autograd"], times["rims"], strict=True))
    print(f"rims_autograd / rims (median of per-repeat ratios): {ratio:.2f}; sizes {args.sizes}, batch {args.batch}")


if __name__ == "__main__":
    main()
