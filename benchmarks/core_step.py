"""Forward + backward time of one recurrent core over a sequence (RIMs vs nn.LSTM), per sequential step.

    python benchmarks/core_step.py --seq-len 100 --batch 16 --input 128

Gridworld sizes by default: RIMs 4 units, k_active 2, unit size 32 (hidden 128) vs an LSTM of 128.
``rims`` is the default (fused whole-sequence forward/backward); ``rims_autograd`` is the same core with
``fused=False`` (one autograd graph of ~40 ops per step).
"""

from __future__ import annotations

import argparse
import time

import torch as th

from rims_rl.nn import LSTMCore, RIMs


def time_core(core: th.nn.Module, seq_len: int, batch: int, input_size: int, repeats: int) -> float:
    """:return: seconds per forward+backward of the whole sequence (median of ``repeats``)."""
    x = th.randn(seq_len, batch, input_size, requires_grad=True)
    starts = th.zeros(seq_len, batch)
    starts[seq_len // 4, 0] = 1.0
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        out, _ = core(x, None, starts)
        out.sum().backward()
        if i >= 2:  # warm-up
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--input", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    cores = {
        "rims": RIMs(args.input, n_units=4, k_active=2, unit_size=32),
        "rims_autograd": RIMs(args.input, n_units=4, k_active=2, unit_size=32, fused=False),
        "lstm": LSTMCore(args.input, 128),
    }
    for name, core in cores.items():
        dt = time_core(core, args.seq_len, args.batch, args.input, args.repeats)
        print(f"{name}: {dt * 1e3:.1f} ms per fwd+bwd of {args.seq_len} steps = {dt / args.seq_len * 1e6:.0f} us/step")


if __name__ == "__main__":
    main()
