from lmrl_lightning.callbacks.rollout_eval import RolloutEvaluation, gather_episodes

__all__ = ["RolloutEvaluation", "gather_episodes"]
