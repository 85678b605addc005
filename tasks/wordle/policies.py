"""Scripted Wordle players (spec §2.3). They read only the text history, as an agent does.

* `RandomWordlePolicy`: a uniformly random word of the answer list.
* `ConsistentWordlePolicy`: a uniformly random answer consistent with all feedback so far.
* `MixtureWordlePolicy(prob_consistent)`: the dataset's behaviour policy, each guess consistent with
  probability `prob_consistent`, else random (the original's `RandomMixturePolicy(prob_smart)`).
* `InfoGainExpert`: the paper's upper bound; guesses the consistent answer that maximises the expected
  information (entropy of the feedback pattern) over the consistent set, deterministic, ties to the first word.

Guesses come from the answer list, as in the original (whose one vocabulary served as answers and guesses).
"""
from __future__ import annotations

import random
from functools import lru_cache
from typing import Optional

import numpy as np

from lmrl_lightning.env import Text, TextHistory, TextPolicy
from lmrl_lightning.tasks.wordle.env import N_PATTERNS, answer_words, consistent_mask, feedback_table, spaced


def _guess(history: TextHistory, word: str) -> TextHistory:
    return tuple(history) + (Text(spaced(word), True),)


class RandomWordlePolicy(TextPolicy):
    def act(self, history: TextHistory, seed: Optional[int] = None) -> TextHistory:
        return _guess(history, random.Random(seed).choice(answer_words()))


class ConsistentWordlePolicy(TextPolicy):
    """A random consistent answer; a random answer if none is consistent (a hidden word off the list)."""

    def act(self, history: TextHistory, seed: Optional[int] = None) -> TextHistory:
        return _guess(history, _consistent_choice(history, random.Random(seed)))


def _consistent_choice(history: TextHistory, rng: random.Random) -> str:
    candidates = np.flatnonzero(consistent_mask(history))
    words = answer_words()
    return words[int(candidates[rng.randrange(len(candidates))])] if len(candidates) else rng.choice(words)


class MixtureWordlePolicy(TextPolicy):
    """The data policy: consistent with probability `prob_consistent`, otherwise a random answer."""

    def __init__(self, prob_consistent: float):
        if not 0.0 <= prob_consistent <= 1.0:
            raise ValueError(f"prob_consistent must be in [0, 1], got {prob_consistent}")
        self.prob_consistent = prob_consistent

    def act(self, history: TextHistory, seed: Optional[int] = None) -> TextHistory:
        rng = random.Random(seed)
        if rng.random() < self.prob_consistent:
            return _guess(history, _consistent_choice(history, rng))
        return _guess(history, rng.choice(answer_words()))


class InfoGainExpert(TextPolicy):
    """Greedy maximum expected information gain over the consistent answers (deterministic)."""

    def act(self, history: TextHistory, seed: Optional[int] = None) -> TextHistory:
        candidates = np.flatnonzero(consistent_mask(history))
        if not len(candidates):
            return RandomWordlePolicy().act(history, seed)
        return _guess(history, answer_words()[best_guess(candidates.tobytes())])


@lru_cache(maxsize=65536)
def best_guess(candidates_bytes: bytes) -> int:
    """Index of the consistent answer whose feedback over the consistent set has the highest entropy."""
    candidates = np.frombuffer(candidates_bytes, dtype=np.int64)
    if len(candidates) <= 2:
        return int(candidates[0])
    codes = feedback_table()[np.ix_(candidates, candidates)].astype(np.int64)
    rows = np.repeat(np.arange(len(candidates)), len(candidates))
    counts = np.bincount(rows * N_PATTERNS + codes.ravel(), minlength=len(candidates) * N_PATTERNS)
    p = counts.reshape(len(candidates), N_PATTERNS) / len(candidates)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    # argmax returns the first maximum: ties go to the earlier word, so the expert is deterministic.
    return int(candidates[int(np.argmax(entropy))])
