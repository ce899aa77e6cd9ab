"""Recurrent cores in pure PyTorch (no SB3 or gymnasium imports)."""

from rims_rl.nn.cores import CORES, GRUCore, LSTMCore, make_core
from rims_rl.nn.rims import RIMs

__all__ = ["CORES", "GRUCore", "LSTMCore", "RIMs", "make_core"]
