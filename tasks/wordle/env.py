"""Wordle (spec §2.3): guess a hidden five-letter word in six tries from coloured letter feedback.

Text format (the original's `ReformatWordleEnvironment`): the history starts with `"Wordle:\\n"`; each guess
is an action with its letters space-separated, `"c r a n e\\n"`, and each feedback an observation,
`"b y b g b\\n"` (g: right letter, right place; y: in the word elsewhere; b: not in the word, or every copy
of it already accounted for). Spacing makes a tokenizer see one letter per token. The feedback follows the
official rule for repeated letters; the original's `transition_state` instead marks every non-green copy of a
letter that is in the word yellow, which tells a player less about letter counts.

Rewards: -1 for each guess that does not solve the puzzle, 0 for the guess that does, so returns lie in
[-6, 0]. An invalid guess (not five letters a-z once spaces are removed, or not in the guess list) uses up a
try, earns `bad_word_reward` (-1 in the paper's evaluation; the original's RL training scripts use -10) and
gets an empty feedback line `"\\n"`. The episode ends at the solving guess or after six guesses.

The hidden word is drawn uniformly from the answer list at reset. The original instead draws lazily: at each
valid guess it samples a word uniformly from the answers still consistent with all feedback so far. Both give
the same distribution over feedback sequences: after any feedback, the words consistent with it are exactly
the hidden words that could have produced it, and under a uniform prior each of them is equally likely, so
sampling from the consistent set is sampling from the posterior of a word fixed at reset (chain rule over
the turns). Drawing at reset lets a seed name the episode and the evaluation fix each hidden word.
"""
from __future__ import annotations

import random
from functools import lru_cache
from importlib import resources
from typing import Any, Optional, Sequence

import numpy as np

from lmrl_lightning.env import EpisodeOverError, Text, TextEnv, TextHistory

WORD_LENGTH = 5
MAX_GUESSES = 6
HEADER = "Wordle:\n"
INVALID_FEEDBACK = "\n"
GUESS_REWARD = -1.0
SOLVED_REWARD = 0.0
EVAL_BAD_WORD_REWARD = -1.0
TRAIN_BAD_WORD_REWARD = -10.0  # the original's RL training environments
N_PATTERNS = 3**WORD_LENGTH
SOLVED_PATTERN = "ggggg"


@lru_cache(maxsize=None)
def answer_words() -> tuple[str, ...]:
    """The hidden words (400 common words, sorted; see wordlists/README.md for source and licence)."""
    return _read_list("answers.txt")


@lru_cache(maxsize=None)
def answer_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(answer_words())}


@lru_cache(maxsize=None)
def guess_words() -> frozenset[str]:
    """Every legal guess (10,305 words, the answers included)."""
    return frozenset(_read_list("guesses.txt"))


def _read_list(name: str) -> tuple[str, ...]:
    text = resources.files("lmrl_lightning.tasks.wordle").joinpath("wordlists", name).read_text(encoding="utf-8")
    return tuple(w for w in text.split() if w)


def feedback(guess: str, answer: str) -> str:
    """Wordle's colours for `guess` against `answer`, as five letters of g/y/b.

    Repeated letters follow the official rules: greens are matched first; then, left to right, a letter is
    yellow only while the answer still has an unmatched copy of it, else grey. So "speed" against "abide" is
    "bbyby" (one e yellow, the second grey: the answer has one e), and "geese" against "those" is "bbbgg" (the
    answer's only e is taken by the green, so the other two are grey).
    """
    colours = ["b"] * WORD_LENGTH
    unmatched: dict[str, int] = {}
    for i, (g, a) in enumerate(zip(guess, answer)):
        if g == a:
            colours[i] = "g"
        else:
            unmatched[a] = unmatched.get(a, 0) + 1
    for i, g in enumerate(guess):
        if colours[i] != "g" and unmatched.get(g, 0) > 0:
            colours[i] = "y"
            unmatched[g] -= 1
    return "".join(colours)


def pattern_code(pattern: str) -> int:
    """A g/y/b pattern as an integer in [0, 243): base 3, b = 0, y = 1, g = 2, first letter least significant."""
    return sum("byg".index(c) * 3**i for i, c in enumerate(pattern))


def spaced(word: str) -> str:
    """`"crane"` -> `"c r a n e\\n"`: the text form of a guess or a feedback pattern."""
    return " ".join(word) + "\n"


def parse_guess(text: str) -> str:
    """The guessed word in an action text: spaces and the newline removed, lower-cased."""
    return "".join(text.split()).lower()


def parse_feedback(text: str) -> Optional[str]:
    """The g/y/b pattern of a feedback text, or None for an invalid guess's empty line."""
    pattern = "".join(text.split())
    return pattern or None


@lru_cache(maxsize=None)
def feedback_table() -> np.ndarray:
    """`table[i, j]` = pattern code of guessing answer i when answer j is hidden (400 x 400, computed once)."""
    words = answer_words()
    return np.array([[pattern_code(feedback(g, a)) for a in words] for g in words], dtype=np.uint8)


def consistent_mask(history: Sequence[Text]) -> np.ndarray:
    """Which answers agree with every valid guess and its feedback in `history` (invalid guesses say nothing)."""
    words, index = answer_words(), answer_index()
    mask = np.ones(len(words), dtype=bool)
    for guess, pattern in guesses_and_feedback(history):
        code = pattern_code(pattern)
        if guess in index:
            mask &= feedback_table()[index[guess]] == code
        else:
            mask &= np.array([pattern_code(feedback(guess, a)) == code for a in words])
    return mask


def guesses_and_feedback(history: Sequence[Text]) -> list[tuple[str, str]]:
    """The (guess, pattern) pairs of the valid guesses in a history, in order."""
    pairs = []
    for action, observation in zip(history, history[1:]):
        if action.is_action and not observation.is_action:
            pattern = parse_feedback(observation.text)
            if pattern is not None:
                pairs.append((parse_guess(action.text), pattern))
    return pairs


def guess_quality(episodes: Sequence) -> dict[str, float]:
    """How a player uses the feedback, over recorded episodes (`Episode`s): the share of its guesses that are
    legal words, and the share of its guesses after the first that are answers consistent with all feedback
    before them (the data policy's 34% consistent guesses give about 0.35; a random answer is rarely consistent)."""
    legal = guesses = later = consistent = 0
    for episode in episodes:
        history = [Text(t.text, t.is_action) for t in episode.turns]
        for k, text in enumerate(history):
            if not text.is_action:
                continue
            guess = parse_guess(text.text)
            guesses += 1
            legal += is_legal_guess(guess)
            if k > 1:
                later += 1
                consistent += guess in answer_index() and bool(consistent_mask(history[:k])[answer_index()[guess]])
    return {"legal_guess_rate": legal / max(guesses, 1), "consistent_guess_rate": consistent / max(later, 1)}


class WordleEnv(TextEnv):
    """One game of Wordle; the agent sees the whole history (at most 13 texts).

    Args:
        bad_word_reward: reward of an invalid guess (paper evaluation -1; the original RL training envs -10).
        answers: hidden words to draw from (default: the 400-word answer list).
        max_guesses: tries per game.

    `reset(seed, options={"answer": "crane"})` fixes the hidden word; without it the seed draws one uniformly.
    """

    def __init__(
        self,
        bad_word_reward: float = EVAL_BAD_WORD_REWARD,
        answers: Optional[Sequence[str]] = None,
        max_guesses: int = MAX_GUESSES,
    ):
        self.bad_word_reward = float(bad_word_reward)
        self.answers = tuple(answers) if answers is not None else answer_words()
        self.max_guesses = max_guesses
        self.answer: Optional[str] = None
        self.n_guesses = 0
        self.solved = False

    def reset(self, seed: Optional[int] = None, options: Optional[dict[str, Any]] = None) -> TextHistory:
        answer = (options or {}).get("answer")
        if answer is None:
            answer = random.Random(seed).choice(self.answers)
        elif not is_legal_guess(answer):
            raise ValueError(f"hidden word {answer!r} is not a five-letter word of the guess list")
        self.answer, self.n_guesses, self.solved = answer, 0, False
        return (Text(HEADER, False),)

    def step(self, history: TextHistory) -> tuple[TextHistory, float, bool]:
        if self.answer is None:
            raise EpisodeOverError("step() before the first reset(); call reset() first")
        if self.done:
            raise EpisodeOverError("step() after the game ended; call reset() first")
        if not history or not history[-1].is_action:
            raise ValueError("step() needs a history whose last text is the agent's action")
        guess = parse_guess(history[-1].text)
        self.n_guesses += 1
        if is_legal_guess(guess):
            pattern = feedback(guess, self.answer)
            self.solved = pattern == SOLVED_PATTERN
            reward = SOLVED_REWARD if self.solved else GUESS_REWARD
            observation = spaced(pattern)
        else:
            reward, observation = self.bad_word_reward, INVALID_FEEDBACK
        return tuple(history) + (Text(observation, False),), reward, self.done

    @property
    def done(self) -> bool:
        return self.solved or self.n_guesses >= self.max_guesses

    def success(self) -> bool:
        return self.solved

    def end_message(self) -> Optional[str]:
        return f"the word was {self.answer!r}" if self.answer else None


def is_legal_guess(word: str) -> bool:
    return len(word) == WORD_LENGTH and word in guess_words()
