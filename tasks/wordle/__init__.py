"""Wordle (spec §2.3): guess a five-letter word in six tries; registered as "wordle", one variant ("default")."""
from __future__ import annotations

from typing import Any

from lmrl_lightning.registry import EvalEpisode, TaskSpec, register_task
from lmrl_lightning.scoring import Normalisation, format_dataset_stats
from lmrl_lightning.data.original import read_sequence
from lmrl_lightning.tasks.wordle.datagen import PAPER_PROB_CONSISTENT, PAPER_TABLE1, generate_dataset
from lmrl_lightning.tasks.wordle.env import (
    EVAL_BAD_WORD_REWARD,
    TRAIN_BAD_WORD_REWARD,
    WordleEnv,
    answer_words,
    feedback,
    guess_words,
)
from lmrl_lightning.tasks.wordle.policies import (
    ConsistentWordlePolicy,
    InfoGainExpert,
    MixtureWordlePolicy,
    RandomWordlePolicy,
)

VARIANTS: tuple[str, ...] = ("default",)

# Spec §2.9's formula with our constants (the paper's are -6 / -4.12 / -1.94 on its 431-word list):
# minimum: six unsolved guesses; dataset average: mean return of `lmrl data wordle` at the paper's mixture
# (200k games, seed 0; see datagen); maximum: `InfoGainExpert`'s exact mean over all 400 hidden words
# (deterministic play, every word once; tests/test_wordle.py recomputes it).
EXPERT_RETURN = -1.875
DATASET_AVERAGE_RETURN = -4.01
NORMALISATION: dict[str, Normalisation] = {
    "default": Normalisation(minimum=-6.0, dataset_average=DATASET_AVERAGE_RETURN, maximum=EXPERT_RETURN),
}


def make_env(variant: str, **kwargs: Any) -> WordleEnv:
    """The game; `bad_word_reward=TRAIN_BAD_WORD_REWARD` gives the original's RL training environment."""
    TASK.check_variant(variant)
    return WordleEnv(**kwargs)


def eval_episodes(variant: str, episodes: int) -> list[EvalEpisode]:
    """`episodes` games (paper: 4096) whose hidden words cycle through the answer list in order: every word
    equally often up to the remainder, the same expectation as uniform draws with less variance. The
    episode index seeds the policy's sampling."""
    TASK.check_variant(variant)
    words = answer_words()
    return [EvalEpisode(i, i, {"answer": words[i % len(words)]}) for i in range(episodes)]


def format_stats_table(stats: dict[str, Any]) -> str:
    return format_dataset_stats(stats, "guesses")


TASK: TaskSpec = register_task(
    TaskSpec(
        name="wordle",
        variants=VARIANTS,
        make_env=make_env,
        normalisation=NORMALISATION,
        eval_episodes=eval_episodes,
        default_eval_episodes=4096,
        history_window={"default": None},
        # The 400 answers as actions, for word-level decoding (`rerank_greedy`: the likeliest whole word). Free
        # generation (`sample`, the paper's) stays the default.
        candidate_actions=tuple(" ".join(word) + "\n" for word in answer_words()),
        default_decoding="sample",
        generate_dataset=generate_dataset,
        format_stats=format_stats_table,
        read_original=read_sequence,  # the original's {"sequence", "reward", "done"} lines
        table1=PAPER_TABLE1,
        description="Wordle: guess the hidden five-letter word in six tries; type a word ('crane' or 'c r a n e'); "
        "feedback g = right place, y = elsewhere in the word, b = not in it.",
    )
)

__all__ = [
    "EVAL_BAD_WORD_REWARD",
    "EXPERT_RETURN",
    "NORMALISATION",
    "PAPER_PROB_CONSISTENT",
    "TASK",
    "TRAIN_BAD_WORD_REWARD",
    "ConsistentWordlePolicy",
    "InfoGainExpert",
    "MixtureWordlePolicy",
    "RandomWordlePolicy",
    "WordleEnv",
    "answer_words",
    "eval_episodes",
    "feedback",
    "format_stats_table",
    "generate_dataset",
    "guess_words",
    "make_env",
]
