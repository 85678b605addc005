"""A task's evaluation protocol (spec §1.5): this rank's share of the evaluation episodes, all ranks' episodes
gathered, and the summary the paper reports (raw return statistics, success rate, normalised score)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

from lmrl_lightning.distributed import all_gather_objects
from lmrl_lightning.env import BatchedTextPolicy, Episode, PrivilegedPolicy
from lmrl_lightning.registry import TaskSpec
from lmrl_lightning.rollout import rollout
from lmrl_lightning.scoring import Normalisation


@dataclass
class RolloutSummary:
    n_episodes: int
    mean_return: float
    std_return: float
    min_return: float
    max_return: float
    mean_length: float
    success_rate: Optional[float]
    normalised_score: Optional[float]

    def as_metrics(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in vars(self).items() if v is not None}


def summarise(episodes: Sequence[Episode], normalisation: Optional[Normalisation] = None) -> RolloutSummary:
    """Mean/std/min/max of the undiscounted return, mean number of agent turns, success rate and the
    normalised score of the mean return (how the paper reports every number)."""
    if not episodes:
        raise ValueError("no episodes to summarise")
    returns = [e.total_reward for e in episodes]
    mean = sum(returns) / len(returns)
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / len(returns))
    successes = [e.meta["success"] for e in episodes if "success" in e.meta]
    return RolloutSummary(
        n_episodes=len(episodes),
        mean_return=mean,
        std_return=std,
        min_return=min(returns),
        max_return=max(returns),
        mean_length=sum(e.num_actions for e in episodes) / len(episodes),
        success_rate=sum(successes) / len(successes) if len(successes) == len(episodes) else None,
        normalised_score=normalisation(mean) if normalisation is not None else None,
    )


def evaluate_task(
    policy: Union[BatchedTextPolicy, PrivilegedPolicy],
    task: TaskSpec,
    variant: str,
    n_rollouts: Optional[int] = None,
    batch_size: int = 256,
    policy_seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
) -> list[Episode]:
    """Play this rank's share (every world_size-th episode) of the task's evaluation protocol."""
    episodes = task.eval_episodes(task.check_variant(variant), n_rollouts or task.default_eval_rollouts)
    return rollout(
        task.make_env(variant), policy, episodes[rank::world_size], batch_size, policy_seed,
        progress=progress, desc=f"eval {task.name}-{variant}",
    )


def gather_episodes(episodes: list[Episode]) -> list[Episode]:
    """All ranks' evaluation episodes on every rank, in evaluation order (the order of one process)."""
    return sorted(all_gather_objects(episodes), key=lambda e: e.meta["index"])
