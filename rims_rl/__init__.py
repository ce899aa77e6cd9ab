"""rims_rl: Recurrent Independent Mechanisms as the recurrent core of sb3-contrib's RecurrentPPO.

Importing the package registers its gymnasium environments.
"""

from rims_rl import envs as envs  # registers the gymnasium ids
from rims_rl.algos import RecurrentPPO
from rims_rl.nn import GRUCore, LSTMCore, RIMs, make_core
from rims_rl.policies import CnnRimsPolicy, MlpRimsPolicy, MultiInputRimsPolicy, RimsRecurrentPolicy
from rims_rl.torch_layers import MiniGridCNN

__version__ = "0.1.0"

__all__ = [
    "CnnRimsPolicy",
    "GRUCore",
    "LSTMCore",
    "MiniGridCNN",
    "MlpRimsPolicy",
    "MultiInputRimsPolicy",
    "RIMs",
    "RecurrentPPO",
    "RimsRecurrentPolicy",
    "__version__",
    "make_core",
]
