"""The offline datasets of Twenty Questions and Guess My City (paper Table 1), streamed to JSONL.

The paper's conversations came from GPT-3.5 and then FLAN-T5-XL self-play; here `askers.MixtureAsker` asks and the
knowledge base answers. Each episode hides thing `index % n` (every thing equally often, the paper's "roughly equal
conversations per object") and draws its asker: with probability `good_share` a good asker (the expert's question
with probability `good_skill` each turn), otherwise a weak one (`weak_skill`); every asker's 20th question is a guess,
of a thing that fits the answers with probability `final_skill`, else of a random thing.
The two shares are set so that success rate and mean return match Table 1. Table 1's three dialogue numbers cannot
all hold (a return is minus the number of questions plus one for a success: 20Q's 14.9 questions and 0.31 success
give -14.6, not -17.3), so success and return are matched and the length follows (with failures at 20 questions,
20Q's successes then take 12.3 questions, which fits a GPT asker).

Measured with the defaults (`lmrl data twenty_questions`, seed 0) and written in each task's PAPER_TABLE1 comment.
Episodes record `skill` and the hidden thing's name (`word` for 20Q as the original's files, `city`) in meta.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any, Iterator, Union

from lmrl_lightning.data.generation import RunningTable1Stats, write_generated_dataset
from lmrl_lightning.env import Episode
from lmrl_lightning.registry import EvalEpisode
from lmrl_lightning.rollout import rollout, turn_seed
from lmrl_lightning.scoring import format_dataset_stats
from lmrl_lightning.tasks.questions.askers import AnswerTable, MixtureAsker
from lmrl_lightning.tasks.questions.game import QuestionGame, QuestionsEnv

BATCH = 1024  # episodes stepped together in one rollout


@dataclass(frozen=True)
class AskerMixture:
    """Who asks in a dataset: `good_share` of the episodes at `good_skill`, the rest at `weak_skill`; the final
    guess fits the answers with probability `final_skill`."""

    good_share: float
    good_skill: float
    weak_skill: float
    final_skill: float = 1.0

    def skill(self, episode_seed: int) -> float:
        good = random.Random(episode_seed).random() < self.good_share
        return self.good_skill if good else self.weak_skill


def generate_questions_dataset(
    out_dir: Union[str, os.PathLike],
    game: QuestionGame,
    mixture: AskerMixture,
    paper_table1: dict[str, float],
    name_field: str,
    n_episodes: int,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Play the mixture of askers against the knowledge base; write `out_dir/train.jsonl` and `out_dir/stats.json`.

    Returns the dataset statistics beside the paper's Table 1 (also written to `stats.json`)."""
    env, table = QuestionsEnv(game), AnswerTable(game)
    asker = MixtureAsker(table)
    config = {"n_episodes": n_episodes, "seed": seed, "good_share": mixture.good_share,
              "good_skill": mixture.good_skill, "weak_skill": mixture.weak_skill, "final_skill": mixture.final_skill}
    return write_generated_dataset(
        out_dir, n_episodes, lambda indices: play_block(env, asker, game, mixture, name_field, indices, seed),
        RunningTable1Stats(paper_table1), config, f"{name_field} dataset", unit="conversation", progress=progress,
    )


def play_block(
    env: QuestionsEnv, asker: MixtureAsker, game: QuestionGame, mixture: AskerMixture, name_field: str,
    indices: range, seed: int,
) -> Iterator[Episode]:
    """The conversations `indices` of the dataset of `seed`, in order, BATCH at a time."""
    n = len(game.names)
    for start in range(indices.start, indices.stop, BATCH):
        specs = []
        for i in range(start, min(indices.stop, start + BATCH)):
            episode_seed = turn_seed(seed, i, -1)
            options = {"index": i % n, "skill": mixture.skill(episode_seed), "final_skill": mixture.final_skill}
            specs.append(EvalEpisode(i, episode_seed, options))
        for episode in rollout(env, asker, specs, batch_size=len(specs), policy_seed=seed):
            options = episode.meta.pop("options")
            episode.meta.update(skill=options["skill"], **{name_field: game.names[options["index"]]})
            yield episode


def format_stats_table(stats: dict[str, Any]) -> str:
    return format_dataset_stats(stats, "questions")
