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
    """One environment of the pool and the episode it is playing."""

    spec: EvalEpisode
    env: TextEnv
    history: TextHistory
    turns: list[Turn]
    n_actions: int = 0
    done: bool = False

    @classmethod
    def start(cls, env: TextEnv, spec: EvalEpisode) -> "_Slot":
        history = env.reset(seed=spec.seed, options=spec.options)
        return cls(spec, env, history, [Turn(t.text, t.is_action) for t in history])

    def record(self, post_action: TextHistory, result: tuple[TextHistory, float, bool], max_turns: int) -> bool:
        """Record the policy's action (the last text of `post_action`) and the env's `result` of it; True when the
        episode is over."""
        action = post_action[-1]
        new_history, reward, done = result
        self.n_actions += 1
        self.turns.append(Turn(action.text, True, float(reward), action.token_ids))
        if new_history:
            self.turns.append(Turn(new_history[-1].text, new_history[-1].is_action))
        self.history, self.done = new_history, bool(done)
        return self.done or self.n_actions >= max_turns

    def episode(self) -> Episode:
        """The record of the finished episode (asks the env for success before it is reset for the next one)."""
        meta = {"index": self.spec.index, "seed": self.spec.seed, "options": self.spec.options}
        success = self.env.success()
        if success is not None:
            meta["success"] = success
        return Episode(self.turns, self.done, meta)


def _act(policy: Union[BatchedTextPolicy, PrivilegedPolicy], slots: Sequence[_Slot], policy_seed: int):
    """Each slot's history extended by the policy's action: one batched call (a privileged policy: one per slot)."""
    seeds = [turn_seed(policy_seed, s.spec.index, s.n_actions) for s in slots]
    if isinstance(policy, PrivilegedPolicy):
        return [s.history + (Text(policy.action(s.env, s.history, seed), True),) for s, seed in zip(slots, seeds)]
    return policy.act([s.history for s in slots], [False] * len(slots), seeds)


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
    envs = [env.copy() for _ in range(min(batch_size, len(episodes)))]
    try:
        _play(envs, policy, pending, finished, policy_seed, max_turns, progress, desc)
    finally:  # the copies' resources (a game interpreter) go back, whatever happened
        for copy in envs:
            copy.close()
    return [finished[e.index] for e in episodes]


def _play(envs, policy, pending: list[EvalEpisode], finished: dict[int, Episode], policy_seed: int, max_turns: int,
          progress: bool, desc: str) -> None:
    """Play the `pending` episodes (popped from the end) on the `envs` slots into `finished`."""
    total = len(pending)
    slots: list[Optional[_Slot]] = [_Slot.start(e, pending.pop()) for e in envs]
    with tqdm(total=total, desc=desc, disable=not progress, leave=False) as bar:
        while any(s is not None for s in slots):
            live = [i for i, s in enumerate(slots) if s is not None]
            acted = _act(policy, [slots[i] for i in live], policy_seed)
            if not all(post_action and post_action[-1].is_action for post_action in acted):
                raise RuntimeError("a policy must return the history extended by one action Text")
            # One call for every live episode: an env that asks a model for its replies answers them together.
            results = type(envs[0]).step_many([slots[i].env for i in live], acted)
            for i, post_action, result in zip(live, acted, results):
                if slots[i].record(post_action, result, max_turns):
                    finished[slots[i].spec.index] = slots[i].episode()
                    bar.update(1)
                    slots[i] = _Slot.start(envs[i], pending.pop()) if pending else None


def format_transcript(episode: Episode) -> str:
    """A readable transcript: observations as they are, actions marked with `>` and their reward."""
    lines = []
    for t in episode.turns:
        text = t.text.rstrip("\n")
        lines.append(f"> {text}    [reward {t.reward:g}]" if t.is_action else text)
    return "\n".join(lines)
