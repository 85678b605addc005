"""Wordle's offline dataset (paper C.3, Table 1): games of the mixture policy, streamed to JSONL.

Each game draws its hidden word uniformly from the answer list (by the episode's seed) and is played by
`MixtureWordlePolicy(prob_consistent)`: each guess is a random answer consistent with the feedback so far
with probability `prob_consistent`, otherwise a uniformly random answer. The paper describes its data as
"uniform random with 66% probability, otherwise constraint-satisfying", so the default is 0.34.

Statistics with our lists at 0.34 (`lmrl data wordle --episodes 200000`, seed 0): success 0.718, mean length
4.72 guesses (std 1.30), mean return -4.01 (std 1.61), against Table 1's 0.70, 4.82 (1.27), -4.12 (1.59).
The small gap is expected: our answer list (400 words) is not the paper's (431), and our consistent player
keeps exactly the answers that would have produced every feedback, whereas the original's per-position
letter knowledge ignores what repeated letters reveal about letter counts, so its "smart" guesses are a
little weaker.

Games are generated and written in blocks, so memory stays flat however many are asked for (the paper: 1M).
"""
from __future__ import annotations

import os
import random
from typing import Any, Iterator, Union

from lmrl_lightning.data.generation import RunningTable1Stats, write_generated_dataset
from lmrl_lightning.env import Episode, PerEpisodePolicy
from lmrl_lightning.registry import EvalEpisode
from lmrl_lightning.rollout import rollout, turn_seed
from lmrl_lightning.tasks.wordle.env import WordleEnv, answer_words
from lmrl_lightning.tasks.wordle.policies import MixtureWordlePolicy

PAPER_PROB_CONSISTENT = 0.34
# The paper used 1M games; 200k are what the tiny model needs to reach its data in 8000 steps (README: "What it
# takes to learn Wordle"), and generate in 2-3 minutes.
DEFAULT_EPISODES = 200_000

# Paper Table 1 (spec §4.3), Wordle column.
PAPER_TABLE1: dict[str, float] = {
    "n_episodes": 1_000_000,
    "mean_length": 4.82,
    "std_length": 1.27,
    "success_rate": 0.70,
    "mean_return": -4.12,
    "std_return": 1.59,
}


def episode_seed(seed: int, index: int) -> int:
    """The seed of game `index` (its hidden word): independent of blocking, distinct across dataset seeds."""
    return turn_seed(seed, index, -1)


def draw_answer(episode_seed: int) -> str:
    """The hidden word of a game, uniform over the answers (recorded in the episode's meta)."""
    return random.Random(episode_seed).choice(answer_words())


def generate_dataset(
    out_dir: Union[str, os.PathLike],
    variant: str = "default",
    n_episodes: int = DEFAULT_EPISODES,
    seed: int = 0,
    prob_consistent: float = PAPER_PROB_CONSISTENT,
    progress: bool = True,
) -> dict[str, Any]:
    """Play the mixture policy and write `out_dir/train.jsonl` and `out_dir/stats.json`.

    Args:
        out_dir: directory for the dataset (created if missing).
        variant: Wordle has one variant, "default".
        n_episodes: number of games (paper: 1M; the default trains a tiny model on CPU in minutes).
        seed: seeds the hidden words and the players' guesses.
        prob_consistent: probability that a guess is consistent with the feedback so far.
        progress: show a progress bar.

    Returns:
        The dataset statistics beside the paper's Table 1 (also written to `stats.json`).
    """
    env, policy = WordleEnv(), PerEpisodePolicy(MixtureWordlePolicy(prob_consistent))
    config = {"n_episodes": n_episodes, "seed": seed, "prob_consistent": prob_consistent}
    return write_generated_dataset(
        out_dir, n_episodes, lambda indices: play_games(env, policy, indices, seed), RunningTable1Stats(PAPER_TABLE1), config,
        "wordle dataset", unit="game", progress=progress,
    )


def play_games(env: WordleEnv, policy: PerEpisodePolicy, indices: range, seed: int) -> Iterator[Episode]:
    """The games `indices` of the dataset of `seed`, in order; each records its hidden word in meta["answer"]."""
    seeds = [episode_seed(seed, i) for i in indices]
    specs = [EvalEpisode(i, s, {"answer": draw_answer(s)}) for i, s in zip(indices, seeds)]
    for episode in rollout(env, policy, specs, batch_size=len(specs), policy_seed=seed):
        episode.meta["answer"] = episode.meta.pop("options")["answer"]
        yield episode
