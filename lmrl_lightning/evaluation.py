"""A task's evaluation protocol (spec §1.5): this rank's share of the evaluation episodes, all ranks' episodes
gathered, and the summary the paper reports (raw return statistics, success rate, normalised score)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any, Optional, Sequence, Union

from lmrl_lightning.distributed import all_gather_objects
from lmrl_lightning.env import BatchedTextPolicy, Episode, PrivilegedPolicy
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.policies.decoding import Decoding, as_decoding
from lmrl_lightning.registry import TaskSpec, get_task
from lmrl_lightning.rollout import rollout
from lmrl_lightning.scoring import Normalisation
from lmrl_lightning.validation import check_int


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


def check_play_settings(settings: Any, prefix: str, counts: Sequence[str], seed: str) -> None:
    """Checks the fields that evaluation protocols and online rollouts share, each named as the CLI spells it
    (``prefix.field``): a task name, positive integer `counts` (None: the task's default), a `seed` >= 0; a
    `decoding` given as a mapping (as checkpoints store it) becomes a `Decoding`."""
    if not isinstance(settings.task, str) or not settings.task:
        raise LMRLError(f"{prefix}.task must name a registered task, got {settings.task!r}")
    for name in counts:
        if getattr(settings, name) is not None:
            check_int(f"{prefix}.{name}", getattr(settings, name))
    check_int(f"{prefix}.{seed}", getattr(settings, seed), low=0)
    if settings.decoding is not None:
        object.__setattr__(settings, "decoding", as_decoding(settings.decoding, field=f"{prefix}.decoding"))


@dataclass(frozen=True)
class EvaluationProtocol:
    """How a policy is evaluated on a task: the same settings for `RolloutEvaluation`, `BetaSweep` and `lmrl eval`.

    Args:
        task: registered task name.
        variant: task variant (default: the task's first).
        episodes: evaluation episodes in all (default: the task's protocol, e.g. the maze's 800 = 25 start positions
            x 32, start-major; Wordle's 4096 games). The maze plays a multiple of its 25 starts.
        batch_size: episodes stepped together (per DDP rank).
        policy_seed: seed of the policy's sampling (fixed, so that evaluations are comparable).
        decoding: how the policy acts (kind, temperature, beta, max_new_tokens; see `Decoding`); default: the task's
            default decoding kind at temperature 1.
        env_options: keyword arguments of the task's environment (as `rollouts.env_options`), e.g. a language-model
            oracle or buyer (`oracle_model`, `buyer_model`). The score is normalised with the task's constants, so
            options that change the rewards (Wordle's `bad_word_reward`) make it meaningless.
    """

    task: str
    variant: Optional[str] = None
    episodes: Optional[int] = None
    batch_size: int = 256
    policy_seed: int = 0
    decoding: Optional[Decoding] = None
    env_options: Optional[dict[str, Any]] = None

    def __post_init__(self) -> None:
        check_play_settings(self, "protocol", counts=("episodes", "batch_size"), seed="policy_seed")
        if self.env_options is not None and not isinstance(self.env_options, Mapping):
            raise LMRLError(f"protocol.env_options must be a mapping of keyword arguments, got {self.env_options!r}")

    @property
    def spec(self) -> TaskSpec:
        return get_task(self.task)

    def resolved(self) -> "EvaluationProtocol":
        """This protocol with the task's defaults filled in (variant, episodes, decoding) and checked against the
        task (an unknown task or variant, an episode count it cannot play), before anything is rolled out."""
        spec = self.spec
        variant = spec.check_variant(self.variant or spec.variants[0])
        episodes = self.episodes or spec.default_eval_episodes
        spec.eval_episodes(variant, episodes)
        decoding = as_decoding(self.decoding, spec.default_decoding)
        return dataclasses.replace(self, variant=variant, episodes=episodes, decoding=decoding)


def evaluate_task(
    policy: Union[BatchedTextPolicy, PrivilegedPolicy],
    protocol: EvaluationProtocol,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
) -> list[Episode]:
    """Play this rank's share (every world_size-th episode) of the evaluation `protocol` with `policy` (built
    already: the protocol's decoding is for whoever builds a module's policy, see `evaluate_module`)."""
    protocol = protocol.resolved()
    task, variant = protocol.spec, protocol.variant
    episodes = task.eval_episodes(variant, protocol.episodes)
    return rollout(
        task.make_env(variant, **(protocol.env_options or {})), policy, episodes[rank::world_size], protocol.batch_size,
        protocol.policy_seed,
        progress=progress, desc=f"eval {task.name}-{variant}",
    )


def evaluate_module(module, protocol: EvaluationProtocol, rank: int = 0, world_size: int = 1,
                    progress: bool = False) -> list[Episode]:
    """`evaluate_task` with the policy of an lmrl module (`LMRLModule.policy`), decoding as the protocol says."""
    protocol = protocol.resolved()
    policy = module.policy(protocol.decoding, protocol.spec.rerank_candidates())
    return evaluate_task(policy, protocol, rank, world_size, progress)


def gather_episodes(episodes: list[Episode]) -> list[Episode]:
    """All ranks' evaluation episodes on every rank, in evaluation order (the order of one process)."""
    return sorted(all_gather_objects(episodes), key=lambda e: e.meta["index"])
