from lmrl_lightning.algorithms.base import LMRLModule, load_module
from lmrl_lightning.algorithms.bc import BC, bc_loss

ALGORITHMS = {"bc": BC}

__all__ = ["ALGORITHMS", "BC", "LMRLModule", "bc_loss", "load_module"]
