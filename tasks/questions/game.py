"""The question-game environment shared by Twenty Questions (spec §2.6) and Guess My City (spec §2.7).

An episode hides one thing (an object, a city). The agent's texts are questions, one per turn; the environment's
texts are the oracle's answers:

    Questions:\\n            (the first observation)
    Is it an animal?\\n      (action, reward -1)
    No.\\n                   (observation)
    ...
    Is it a cat?\\n          (action, reward 0 when it correctly guesses: the episode ends)

Every question costs -1, except the one that correctly guesses, which earns 0 and ends the episode; the episode
also ends after `max_questions` questions (20). Returns lie in [-20, 0].

Two oracles answer behind one interface (`QuestionOracle.answer`, a whole batch of episodes' questions at once):
`KnowledgeBaseOracle`, the default, answers from the task's fact table through its question grammar (deterministic,
offline, microseconds); `LanguageModelQuestionOracle` prompts a local Hugging Face model with the original's prompt
and reads its greedy completion, answering a batch in one `generate` call per `batch_size` questions
(`step_many` steps many environments with one oracle call).
"""
from __future__ import annotations

import copy
import functools
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional, Protocol

from lmrl_lightning.env import EpisodeOverError, Text, TextEnv, TextHistory
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.validation import check_int
from lmrl_lightning.tasks.questions.grammar import Parsed, QuestionGrammar

if TYPE_CHECKING:  # torch and transformers load only when a language-model oracle is asked for
    from lmrl_lightning.lm_oracle import LanguageModelOracle

INITIAL_TEXT = "Questions:\n"
MAX_QUESTIONS = 20
QUESTION_REWARD = -1.0
CORRECT_GUESS_REWARD = 0.0
REWARDS = (QUESTION_REWARD, CORRECT_GUESS_REWARD)


class QuestionGame(ABC):
    """A task's hidden things, its question grammar and its answers (the knowledge base and the LM prompts)."""

    grammar: QuestionGrammar

    @property
    @abstractmethod
    def names(self) -> tuple[str, ...]:
        """The display name of each hidden thing, in index order."""

    @abstractmethod
    def answer(self, index: int, parsed: Parsed) -> str:
        """The knowledge base's answer (one line, no newline) to a question about thing `index`."""

    @abstractmethod
    def lm_prompt(self, index: int, question: str) -> str:
        """The original's oracle prompt for `question` about thing `index`."""

    @abstractmethod
    def read_completion(self, index: int, question: str, parsed: Parsed, completion: str) -> str:
        """The answer text made of a language model's completion (e.g. "Yes."/"No." for 20Q)."""

    @abstractmethod
    def fallback_answer(self, index: int) -> str:
        """The answer to a question that cannot be asked at all (empty, over-long): the original's invalid
        question answer."""

    @abstractmethod
    def guessed(self, index: int, parsed: Parsed, answer: str) -> bool:
        """Whether the question `parsed`, answered `answer`, correctly guesses thing `index` (ends the episode)."""

    def askable(self) -> list[tuple[Parsed, tuple[str, ...]]]:
        """Every question of the grammar but the guesses (and each yes/no question's opposite, where the grammar has
        one) with its phrasings: `phrasings` maps an attribute to its phrasings per polarity."""
        return [(Parsed(a, polarity == "yes"), tuple(texts))
                for a, forms in self.phrasings.items() for polarity, texts in forms.items()]

    def guess_texts(self, index: int) -> tuple[str, ...]:
        """The question texts that guess thing `index`, the task's preferred wording first (`_guess_texts`)."""
        return self._guess_texts[index]

    def index_of(self, name: str) -> int:
        """The index of the thing called `name` (any case); a one-line error lists none but says how to find them."""
        lowered = name.strip().lower()
        for i, candidate in enumerate(self.names):
            if candidate.lower() == lowered:
                return i
        raise LMRLError(f"no hidden thing called {name!r}; see the task's data files for the names")


class QuestionOracle(Protocol):
    """Answers a batch of questions: one (hidden thing index, question text, parse) per live episode."""

    def answer(self, questions: Sequence[tuple[int, str, Parsed]]) -> list[str]: ...


class KnowledgeBaseOracle:
    """The default oracle: the task's fact table through its question grammar (`QuestionGame.answer`)."""

    def __init__(self, game: QuestionGame) -> None:
        self.game = game

    def answer(self, questions: Sequence[tuple[int, str, Parsed]]) -> list[str]:
        return [self.game.answer(index, parsed) for index, _, parsed in questions]


class LanguageModelQuestionOracle:
    """A local Hugging Face model as the oracle, prompted as the original's (`QuestionGame.lm_prompt`): all
    questions of a batch go to one `LanguageModelOracle.complete` call. Questions that cannot be asked at all (empty,
    over-long) get the fallback answer without reaching the model."""

    def __init__(self, game: QuestionGame, model: "LanguageModelOracle") -> None:
        self.game = game
        self.model = model

    def answer(self, questions: Sequence[tuple[int, str, Parsed]]) -> list[str]:
        answers: list[Optional[str]] = [None] * len(questions)
        asked = []
        for k, (index, question, _) in enumerate(questions):
            if self.game.grammar.key(question) is None:
                answers[k] = self.game.fallback_answer(index)
            else:
                asked.append(k)
        prompts = [self.game.lm_prompt(questions[k][0], questions[k][1]) for k in asked]
        for k, completion in zip(asked, self.model.complete(prompts) if prompts else []):
            index, question, parsed = questions[k]
            answers[k] = one_line(self.game.read_completion(index, question, parsed, completion))
        return [a if a is not None else "" for a in answers]


@functools.lru_cache(maxsize=8)
def language_model_oracle(
    game: QuestionGame, model_dir: str, device: str, dtype: str, batch_size: int, max_new_tokens: int
) -> LanguageModelQuestionOracle:
    """The language-model oracle of these settings, one per process (over the process-wide model, `shared_oracle`):
    every env of a game that `make_env` builds with them shares it, so `step_many` answers all their questions in
    one batched call."""
    from lmrl_lightning.lm_oracle import shared_oracle

    return LanguageModelQuestionOracle(game, shared_oracle(str(model_dir), device, dtype, batch_size, max_new_tokens))


def one_line(text: str) -> str:
    """`text` on one line (an observation ends at its newline)."""
    return " ".join(text.split())


class QuestionsEnv(TextEnv):
    """One question game: the hidden thing, the questions so far and their answers.

    Reset options: `name` (the thing to hide, by display name), `index` (by index), or `deterministic: True` (index
    `seed % n`, the original's deterministic mode); otherwise the thing is drawn uniformly with `seed`. Every option
    stays in `self.options` for scripted askers (the datasets' asker settings).

    Args:
        game: the task's knowledge (names, grammar, answers, prompts).
        oracle: who answers; default the knowledge base.
        max_questions: questions per episode (the paper: 20).
    """

    def __init__(self, game: QuestionGame, oracle: Optional[QuestionOracle] = None, max_questions: int = MAX_QUESTIONS):
        if not isinstance(max_questions, int) or isinstance(max_questions, bool) or max_questions < 1:
            raise LMRLError(f"max_questions must be a positive integer, got {max_questions!r}")
        self.game = game
        self.oracle = oracle if oracle is not None else KnowledgeBaseOracle(game)
        self.max_questions = max_questions
        self.index: Optional[int] = None
        self.options: dict[str, Any] = {}
        self.asked: list[tuple[Parsed, str]] = []
        self.done = False
        self.correct = False

    def reset(self, seed: Optional[int] = None, options: Optional[dict[str, Any]] = None) -> TextHistory:
        self.options = dict(options or {})
        n = len(self.game.names)
        if "name" in self.options:
            self.index = self.game.index_of(str(self.options["name"]))
        elif "index" in self.options:
            index = self.options["index"]
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
                raise LMRLError(f"reset option index must be an integer from 0 to {n - 1}, got {index!r}")
            self.index = index
        elif self.options.get("deterministic") and seed is not None:
            self.index = seed % n
        else:
            self.index = random.Random(seed).randrange(n)
        self.asked, self.done, self.correct = [], False, False
        return (Text(INITIAL_TEXT, False),)

    @property
    def hidden(self) -> str:
        """The hidden thing's name (after `reset`)."""
        if self.index is None:
            raise EpisodeOverError("call reset() before asking about the hidden thing")
        return self.game.names[self.index]

    def step(self, history: TextHistory) -> tuple[TextHistory, float, bool]:
        return step_many([self], [history])[0]

    @staticmethod
    def step_many(envs: Sequence["QuestionsEnv"], histories: Sequence[TextHistory]) -> list[tuple[TextHistory, float, bool]]:
        """`TextEnv.step_many`: the rollout engine's batched step (one oracle call for all live episodes)."""
        return step_many(envs, histories)

    def success(self) -> Optional[bool]:
        return self.correct

    def end_message(self) -> Optional[str]:
        return f"It was: {self.hidden}." if self.index is not None else None

    def copy(self) -> "QuestionsEnv":
        """A fresh copy sharing the game and the oracle (a language model is loaded once, never deep-copied)."""
        clone = copy.copy(self)
        clone.options, clone.asked = dict(self.options), list(self.asked)
        return clone

    def _question(self, history: TextHistory) -> str:
        if not history or not history[-1].is_action:
            raise ValueError("step() takes the history ending in the agent's action (a question)")
        if self.index is None or self.done:
            raise EpisodeOverError("the episode is over (or never started); call reset() first")
        return history[-1].text

    def _record(self, history: TextHistory, parsed: Parsed, answer: str) -> tuple[TextHistory, float, bool]:
        answer = one_line(answer)
        self.asked.append((parsed, answer))
        self.correct = self.game.guessed(self.index, parsed, answer)
        self.done = self.correct or len(self.asked) >= self.max_questions
        reward = CORRECT_GUESS_REWARD if self.correct else QUESTION_REWARD
        return history + (Text(answer + "\n", False),), reward, self.done


def step_many(envs: Sequence[QuestionsEnv], histories: Sequence[TextHistory]) -> list[tuple[TextHistory, float, bool]]:
    """Step every env with its history (ending in its question), asking each oracle once for all its questions:
    a language-model oracle (shared by the envs `make_env` builds with the same settings) answers the whole batch in
    ceil(n / batch_size) generate calls."""
    if len(envs) != len(histories):
        raise ValueError(f"{len(envs)} envs but {len(histories)} histories")
    questions = [env._question(history) for env, history in zip(envs, histories)]
    parses = [env.game.grammar.parse(q) for env, q in zip(envs, questions)]
    answers: list[str] = [""] * len(envs)
    by_oracle: dict[int, list[int]] = {}
    for k, env in enumerate(envs):
        by_oracle.setdefault(id(env.oracle), []).append(k)
    for members in by_oracle.values():
        oracle = envs[members[0]].oracle
        replies = oracle.answer([(envs[k].index, questions[k], parses[k]) for k in members])
        for k, reply in zip(members, replies):
            answers[k] = reply
    return [env._record(h, p, a) for env, h, p, a in zip(envs, histories, parses, answers)]


ENV_OPTIONS = ("max_questions", "oracle_model", "oracle_device", "oracle_dtype", "oracle_batch_size",
               "oracle_max_new_tokens")


def make_questions_env(game: QuestionGame, task: str, default_max_new_tokens: int, **options: Any) -> QuestionsEnv:
    """A `QuestionsEnv` from a config's `env_options`: `max_questions`, and `oracle_model` (a local model directory:
    the language-model oracle instead of the knowledge base) with `oracle_device`, `oracle_dtype`,
    `oracle_batch_size`, `oracle_max_new_tokens`. Unknown options are refused with one line."""
    unknown = sorted(set(options) - set(ENV_OPTIONS))
    if unknown:
        raise LMRLError(f"{task} env_options: unknown option {unknown[0]!r}; valid: {', '.join(ENV_OPTIONS)}")
    oracle: Optional[QuestionOracle] = None
    if options.get("oracle_model") is not None:
        for field in ("oracle_batch_size", "oracle_max_new_tokens"):
            if field in options:
                check_int(f"{task} env_options.{field}", options[field])
        oracle = language_model_oracle(
            game, options["oracle_model"], options.get("oracle_device", "cpu"), options.get("oracle_dtype", "float32"),
            options.get("oracle_batch_size", 32), options.get("oracle_max_new_tokens", default_max_new_tokens),
        )
    elif any(k.startswith("oracle_") for k in options):
        raise LMRLError(f"{task} env_options: oracle settings need oracle_model (a local model directory)")
    return QuestionsEnv(game, oracle, options.get("max_questions", MAX_QUESTIONS))
