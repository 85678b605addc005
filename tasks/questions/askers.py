"""Scripted askers of the question games (both tasks): an information-gain expert and the noisy mixture that writes
the offline datasets.

Both keep the set of hidden things consistent with every answer so far: a thing stays a candidate while the
knowledge base would have given each answer the oracle gave (with the default oracle, exactly the things that fit).

* `InfoGainAsker` (the expert, the normalisation's maximum): asks the question whose answer leaves the least expected
  entropy over the candidates (a guess of one candidate counts as a question that splits it off), and guesses when
  one candidate is left. Deterministic: its first phrasing, ties to the first question.
* `MixtureAsker` (the datasets): each turn, with probability `skill` (the episode's `skill` reset option) the
  expert's question, in a random phrasing; otherwise noise: a random question of the grammar (60%), a repeat of an
  earlier question (20%) or a premature guess of a random thing (20%). The 20th question is always a guess, as the
  original's GPT-3.5 asker was told to make a final guess: of a random candidate, or, with probability
  1 - `final_skill` (reset option, default 1), of a random thing (an asker that lost track of the answers).
"""
from __future__ import annotations

import math
import random
import weakref
from collections.abc import Sequence
from typing import Optional

import numpy as np

from lmrl_lightning.env import PrivilegedPolicy, TextHistory
from lmrl_lightning.registry import EvalEpisode
from lmrl_lightning.rollout import rollout
from lmrl_lightning.tasks.questions.game import QuestionGame, QuestionsEnv
from lmrl_lightning.tasks.questions.grammar import Parsed

# Cumulative shares of the three kinds of noise: random question 60%, repeat 20%, premature guess 20%.
NOISE_SHARES = (0.6, 0.8)


class AnswerTable:
    """Every askable question's knowledge-base answer for every hidden thing, as codes (questions x things), and
    the candidates left by a conversation.

    Args:
        game: the task; its `askable()` lists (Parsed, phrasings) and `guess_texts(i)` the guesses of thing i.
    """

    def __init__(self, game: QuestionGame) -> None:
        self.game = game
        self.n = len(game.names)
        self.questions: list[tuple[Parsed, tuple[str, ...]]] = game.askable()
        self._answer_cache: dict[Parsed, tuple[np.ndarray, dict[str, int]]] = {}
        self._all = np.ones(self.n, dtype=bool)
        self.codes = np.array([self.answer_codes(parsed)[0] for parsed, _ in self.questions], dtype=np.int64)
        self.width = int(self.codes.max()) + 1
        self._offsets = (np.arange(len(self.questions)) * self.width)[:, None]
        self._choice_cache: dict[bytes, tuple[str, int]] = {}

    def _answers(self, parsed: Parsed) -> np.ndarray:
        return np.array([self.game.answer(i, parsed) for i in range(self.n)], dtype=object)

    def answer_codes(self, parsed: Parsed) -> tuple[np.ndarray, dict[str, int]]:
        """The knowledge base's answers to `parsed` for every thing, as codes, and the code of each answer text
        (cached per question: comparing small integers is what makes `candidates` fast)."""
        if parsed not in self._answer_cache:
            texts, codes = np.unique(self._answers(parsed), return_inverse=True)
            self._answer_cache[parsed] = (codes.astype(np.int16), {str(t): i for i, t in enumerate(texts)})
        return self._answer_cache[parsed]

    def candidates(self, asked: Sequence[tuple[Parsed, str]], known: Optional[tuple[int, np.ndarray]] = None) -> np.ndarray:
        """Indices of the things consistent with every (question, answer) so far; all things when none is (an
        oracle other than the knowledge base may contradict it). `known`: (k, the consistency mask of the first k
        questions), so that a conversation is filtered one new question at a time."""
        return _indices(self.consistent(asked, known))

    def consistent(self, asked: Sequence[tuple[Parsed, str]], known: Optional[tuple[int, np.ndarray]] = None) -> np.ndarray:
        """The mask of things consistent with `asked` (see `candidates`)."""
        start, mask = (0, self._all) if known is None or known[0] > len(asked) else known
        mask = mask.copy()
        for parsed, answer in asked[start:]:
            codes, code_of = self.answer_codes(parsed)
            mask &= codes == code_of.get(answer, -1)
        return mask

    def best(self, candidates: np.ndarray) -> tuple[str, int]:
        """("guess", thing) or ("ask", question row): the least expected entropy left over `candidates`."""
        key = candidates.tobytes()
        if key not in self._choice_cache:
            self._choice_cache[key] = self._best(candidates)
        return self._choice_cache[key]

    def _best(self, candidates: np.ndarray) -> tuple[str, int]:
        n = len(candidates)
        if n == 1:
            return "guess", int(candidates[0])
        counts = np.bincount((self.codes[:, candidates] + self._offsets).ravel(),
                             minlength=len(self.questions) * self.width).reshape(len(self.questions), self.width)
        with np.errstate(divide="ignore", invalid="ignore"):
            left = np.where(counts > 0, counts * np.log2(np.maximum(counts, 1)), 0.0).sum(axis=1) / n
        left[counts.max(axis=1) == n] = np.inf  # a question every candidate answers alike tells nothing
        guess_left = (n - 1) / n * math.log2(n - 1)
        row = int(np.argmin(left))
        if guess_left <= left[row] + 1e-9:
            return "guess", int(candidates[0])
        return "ask", row


def _indices(mask: np.ndarray) -> np.ndarray:
    found = np.flatnonzero(mask)
    return found if len(found) else np.arange(len(mask))


class ConversationTracker:
    """The consistency mask of each environment's conversation, updated one question at a time (an asker is called
    once per turn with the env's growing `asked` list). A mask is reused only for the same env object and the same
    episode: `reset` gives the env a new `asked` list, and a freed env's entry goes with it (weak keys), so a new env
    can never inherit another's mask."""

    def __init__(self, table: AnswerTable) -> None:
        self.table = table
        self._known: "weakref.WeakKeyDictionary[QuestionsEnv, tuple[list, int, np.ndarray]]" = weakref.WeakKeyDictionary()

    def candidates(self, env: QuestionsEnv) -> np.ndarray:
        asked, count, mask = self._known.get(env, (None, 0, None))
        mask = self.table.consistent(env.asked, (count, mask) if asked is env.asked else None)
        self._known[env] = (env.asked, len(env.asked), mask)
        return _indices(mask)


class InfoGainAsker(PrivilegedPolicy):
    """The expert: the most informative question each turn (see the module docstring); deterministic."""

    def __init__(self, table: AnswerTable) -> None:
        self.table = table
        self.tracker = ConversationTracker(table)

    def action(self, env: QuestionsEnv, history: TextHistory, seed: int) -> str:
        kind, which = self.table.best(self.tracker.candidates(env))
        texts = self.table.game.guess_texts(which) if kind == "guess" else self.table.questions[which][1]
        return texts[0] + "\n"


class MixtureAsker(PrivilegedPolicy):
    """The datasets' asker: the expert with probability `skill` per turn, else noise (see the module docstring).

    Args:
        table: the task's answer table.
        skill: the probability of an expert question when the episode's reset options carry no `skill`.
    """

    def __init__(self, table: AnswerTable, skill: float = 0.5) -> None:
        self.table = table
        self.skill = skill
        self.tracker = ConversationTracker(table)

    def action(self, env: QuestionsEnv, history: TextHistory, seed: int) -> str:
        rng = random.Random(seed)
        table = self.table
        candidates = self.tracker.candidates(env)
        if len(env.asked) == env.max_questions - 1:  # the final question: a guess
            final_skill = env.options.get("final_skill", 1.0)
            if final_skill < 1.0 and rng.random() >= final_skill:
                return self._guess(rng.randrange(table.n), rng)
            return self._guess(int(rng.choice(candidates)), rng)
        if rng.random() < env.options.get("skill", self.skill):
            kind, which = table.best(candidates)
            return self._guess(which, rng) if kind == "guess" else self._ask(which, rng)
        draw = rng.random()
        noise = "random" if draw < NOISE_SHARES[0] else "repeat" if draw < NOISE_SHARES[1] else "guess"
        if noise == "repeat" and env.asked:
            return rng.choice(previous_questions(history))
        if noise == "guess":
            return self._guess(rng.randrange(table.n), rng)
        return self._ask(rng.randrange(len(table.questions)), rng)

    def _ask(self, row: int, rng: random.Random) -> str:
        return rng.choice(self.table.questions[row][1]) + "\n"

    def _guess(self, thing: int, rng: random.Random) -> str:
        return rng.choice(self.table.game.guess_texts(thing)) + "\n"


def previous_questions(history: TextHistory) -> list[str]:
    """The agent's questions so far in `history` (its action texts)."""
    return [t.text for t in history if t.is_action]


def expert_returns(table: AnswerTable, env: QuestionsEnv, names: Optional[Sequence[int]] = None) -> list[float]:
    """The expert's return on each hidden thing (all by default), one deterministic episode each."""
    indices = range(table.n) if names is None else names
    episodes = rollout(env, InfoGainAsker(table), [EvalEpisode(i, i, {"index": i}) for i in indices], batch_size=256)
    return [e.total_reward for e in episodes]
