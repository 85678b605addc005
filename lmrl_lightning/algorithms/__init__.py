from lmrl_lightning.algorithms.base import LMRLModule, load_module
from lmrl_lightning.algorithms.bc import BC, bc_loss
from lmrl_lightning.algorithms.ilql import ILQL, ilql_loss
from lmrl_lightning.algorithms.mc_returns import MCReturns, mc_loss
from lmrl_lightning.algorithms.value import ValueModule

ALGORITHMS = {"bc": BC, "mc_returns": MCReturns, "ilql": ILQL}

__all__ = [
    "ALGORITHMS", "BC", "ILQL", "LMRLModule", "MCReturns", "ValueModule", "bc_loss", "ilql_loss", "load_module",
    "mc_loss",
]
