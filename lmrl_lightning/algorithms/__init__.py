from lmrl_lightning.algorithms.base import LMRLModule, load_module
from lmrl_lightning.algorithms.bc import BC, bc_loss
from lmrl_lightning.algorithms.ilql import ILQL, ilql_loss
from lmrl_lightning.algorithms.mc_returns import MCReturns, mc_loss
from lmrl_lightning.algorithms.online import OnlineModule
from lmrl_lightning.algorithms.online_filtered_bc import OnlineFilteredBC
from lmrl_lightning.algorithms.ppo import PPO, gae, ppo_loss
from lmrl_lightning.algorithms.settings import (
    BCRegularisation, ILQLValueLearning, Optimisation, PPOSettings, Rollouts, RoundFilter, Updates, ValueLearning,
)
from lmrl_lightning.algorithms.value import ValueModule

ALGORITHMS = {
    "bc": BC, "mc_returns": MCReturns, "ilql": ILQL, "ppo": PPO, "online_filtered_bc": OnlineFilteredBC,
}

__all__ = [
    "ALGORITHMS", "BC", "ILQL", "LMRLModule", "MCReturns", "OnlineFilteredBC", "OnlineModule", "PPO", "ValueModule",
    "BCRegularisation", "ILQLValueLearning", "Optimisation", "PPOSettings", "Rollouts", "RoundFilter", "Updates",
    "ValueLearning", "bc_loss", "gae", "ilql_loss", "load_module", "mc_loss", "ppo_loss",
]
