"""Batched policy <-> environment interaction (spec §1.5) and episode records (`evaluation.py` summarises them).

A pool of `batch_size` environment slots is stepped together: one batched policy call per turn for every
live episode, and a slot whose episode ends is refilled with the next one, so long and short episodes
share batches without idle rows.
"""
from __future__ import annotations

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
from lmrl_lightning.registry import EvalEpisode

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


def format_transcript(episode: Episode) -> str:
    """A readable transcript: observations as they are, actions marked with `>` and their reward."""
    lines = []
    for t in episode.turns:
        text = t.text.rstrip("\n")
        lines.append(f"> {text}    [reward {t.reward:g}]" if t.is_action else text)
    return "\n".join(lines)
