"""Shared test set-up."""

import torch as th

# The models in tests are tiny: one thread is faster than several and keeps parallel jobs from oversubscribing the CPU.
th.set_num_threads(1)
