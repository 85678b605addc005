from lmrl_lightning.callbacks.rollout_eval import BetaSweep, RolloutEvaluation, gather_episodes

__all__ = ["BetaSweep", "RolloutEvaluation", "gather_episodes"]
