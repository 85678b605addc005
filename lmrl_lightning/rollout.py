"""Batched policy <-> environment interaction (spec §1.5) and the evaluation summary.

A pool of `batch_size` environment slots is stepped together: one batched policy call per turn for every
live episode, and a slot whose episode ends is refilled with the next one, so long and short episodes
share batches without idle rows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

from tqdm.auto import tqdm

from lmrl_lightning.env import (
    BatchedTextPolicy,
    Episode,
    PrivilegedPolicy,
    Text,
    TextEnv,
    TextHistory,
    Turn,
)
from lmrl_lightning.registry import EvalEpisode, TaskSpec
from lmrl_lightning.scoring import Normalisation

_MASK64 = (1 << 64) - 1


def turn_seed(policy_seed: int, episode_index: int, turn: int) -> int:
    """A seed for one (episode, turn) that does not depend on batching or on the DDP rank."""
    x = (policy_seed * 0x9E3779B97F4A7C15 + episode_index * 0xBF58476D1CE4E5B9 + turn * 0x94D049BB133111EB) & _MASK64
    x ^= x >> 31
    return x & 0x7FFFFFFF


@dataclass
class _Slot:
    spec: EvalEpisode
    env: TextEnv
    history: TextHistory
    turns: list[Turn]
    n_actions: int = 0


def rollout(
    env: TextEnv,
    policy: Union[BatchedTextPolicy, PrivilegedPolicy],
    episodes: Sequence[EvalEpisode],
    batch_size: int = 64,
    policy_seed: int = 0,
    max_turns: int = 10_000,
    progress: bool = False,
    desc: str = "rollout",
) -> list[Episode]:
    """Play every episode in `episodes` to the end and return them as recorded `Episode`s, in input order.

    Each record holds every text of the interaction (not only the env's truncated view) with rewards on the
    actions; meta holds the episode index, env seed and options, and success when the env reports it.
    """
    pending = list(reversed(episodes))
    finished: dict[int, Episode] = {}
    slots: list[Optional[_Slot]] = [None] * min(batch_size, len(episodes))
    envs = [env.copy() for _ in slots]
    bar = tqdm(total=len(episodes), desc=desc, disable=not progress, leave=False)

    def start(i: int) -> None:
        spec = pending.pop()
        history = envs[i].reset(seed=spec.seed, options=spec.options)
        slots[i] = _Slot(spec, envs[i], history, [Turn(t.text, t.is_action) for t in history])

    for i in range(len(slots)):
        start(i)
    while any(s is not None for s in slots):
        live = [i for i, s in enumerate(slots) if s is not None]
        seeds = [turn_seed(policy_seed, slots[i].spec.index, slots[i].n_actions) for i in live]
        if isinstance(policy, PrivilegedPolicy):
            acted = [
                slots[i].history + (Text(policy.action(slots[i].env, slots[i].history, s), True),)
                for i, s in zip(live, seeds)
            ]
        else:
            acted = policy.act([slots[i].history for i in live], [False] * len(live), seeds)
        for i, post_action in zip(live, acted):
            slot = slots[i]
            action = post_action[-1]
            if not action.is_action:
                raise RuntimeError("a policy must return the history extended by one action Text")
            new_history, reward, done = slot.env.step(post_action)
            slot.n_actions += 1
            slot.turns.append(Turn(action.text, True, float(reward)))
            if new_history:
                slot.turns.append(Turn(new_history[-1].text, new_history[-1].is_action))
            slot.history = new_history
            if done or slot.n_actions >= max_turns:
                meta = {"index": slot.spec.index, "seed": slot.spec.seed, "options": slot.spec.options}
                success = slot.env.success()
                if success is not None:
                    meta["success"] = success
                finished[slot.spec.index] = Episode(slot.turns, bool(done), meta)
                bar.update(1)
                slots[i] = None
                if pending:
                    start(i)
    bar.close()
    return [finished[e.index] for e in episodes]


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



def format_transcript(episode: Episode) -> str:
    """A readable transcript: observations as they are, actions marked with `>` and their reward."""
    lines = []
    for t in episode.turns:
        text = t.text.rstrip("\n")
        lines.append(f"> {text}    [reward {t.reward:g}]" if t.is_action else text)
    return "\n".join(lines)


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
