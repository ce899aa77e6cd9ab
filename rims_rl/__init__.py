"""rims_rl: Recurrent Independent Mechanisms as the recurrent core of sb3-contrib's RecurrentPPO.

Importing the package registers its gymnasium environments.
"""

from typing import TYPE_CHECKING, Any

from rims_rl import envs as envs  # registers the gymnasium ids
from rims_rl._lazy import lazy_attribute

if TYPE_CHECKING:
    from rims_rl.algos import RecurrentPPO
    from rims_rl.nn import GRUCore, LSTMCore, RIMs, make_core
    from rims_rl.policies import CnnRimsPolicy, MlpRimsPolicy, MultiInputRimsPolicy, RimsRecurrentPolicy
    from rims_rl.torch_layers import MiniGridCNN

#: Names imported on first use (they import torch and SB3; a CLI's --help does not need them).
_LAZY = {
    "RecurrentPPO": "rims_rl.algos",
    "GRUCore": "rims_rl.nn",
    "LSTMCore": "rims_rl.nn",
    "RIMs": "rims_rl.nn",
    "make_core": "rims_rl.nn",
    "CnnRimsPolicy": "rims_rl.policies",
    "MlpRimsPolicy": "rims_rl.policies",
    "MultiInputRimsPolicy": "rims_rl.policies",
    "RimsRecurrentPolicy": "rims_rl.policies",
    "MiniGridCNN": "rims_rl.torch_layers",
}


def __getattr__(name: str) -> Any:
    """Import the model classes on first use (PEP 562)."""
    return lazy_attribute(globals(), _LAZY, __name__, name)


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
