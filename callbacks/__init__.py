from lmrl_lightning.callbacks.rollout_eval import BetaSweep, RolloutEvaluation

__all__ = ["BetaSweep", "RolloutEvaluation"]
