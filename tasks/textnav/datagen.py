"""The Text-Nav offline dataset (spec §2.2, paper Table 1): `PartialWalkthroughAgent` episodes, streamed to JSONL.

Each episode draws, from its own seed, a start room (uniform over the 8 rooms) and the agent's optimal rooms
({office, bathroom, garden, backyard} with probability 0.75, else {kitchen, dining room, living room, bedroom}) and
is played for at most `DATA_MAX_STEPS` = 15 commands, as in the original; an episode cut at 15 commands is written
with done=true, as the original forced `dones[-1]`. The agent follows the walkthrough in its optimal rooms always
(the paper's policy; see `policies.FOLLOW_PROB` for the script's 0.1). It reads the simulator, not the text, so FO
and PO datasets of the same seed hold the same commands and differ only in the observations. Meta records
`start_room`, `optimal_rooms` and `variant`.

Expected statistics (`EXPECTED_STATS`, measured: `lmrl data textnav` defaults, seed 0, 2500 episodes, 20 minutes on
2 busy cores): 12.66 commands (std 3.51), success 0.248 (standard error 0.009), return 0.248 (std 0.432), against
the paper's Table 1: 12.2 (std 8.77), 0.26, 0.258 (std 0.424). A std of 8.77 cannot happen with at most 15 commands
and a mean of 12.2 (the largest possible is 5.6), so the paper's length is not counted in commands.
"""
from __future__ import annotations

import os
import random
from typing import Any, Iterator, Optional, Union

from lmrl_lightning.data.generation import RunningTable1Stats, write_generated_dataset
from lmrl_lightning.env import Episode
from lmrl_lightning.registry import EvalEpisode
from lmrl_lightning.rollout import rollout, turn_seed
from lmrl_lightning.scoring import format_dataset_stats
from lmrl_lightning.tasks.textnav.env import TextNavEnv
from lmrl_lightning.tasks.textnav.house import DEFAULT_SEED, ROOMS
from lmrl_lightning.tasks.textnav.policies import FOLLOW_PROB, PartialWalkthroughAgent, draw_optimal_rooms

DEFAULT_EPISODES = 2_500
DATA_MAX_STEPS = 15
BATCH = 64

# Paper Table 1 (spec §4.3), Text-Nav column.
PAPER_TABLE1: dict[str, float] = {"n_episodes": 2500, "mean_length": 12.2, "std_length": 8.77,
                                  "success_rate": 0.26, "mean_return": 0.258, "std_return": 0.424}
# This generator's own statistics (module docstring): what smaller samples are checked against.
EXPECTED_STATS: dict[str, float] = {"n_episodes": 2500, "mean_length": 12.66, "std_length": 3.51,
                                    "success_rate": 0.248, "mean_return": 0.248, "std_return": 0.432}


def episode_options(seed: int, index: int) -> tuple[int, dict[str, Any]]:
    """Env seed and reset options of episode `index`: its start room and the agent's optimal rooms."""
    episode_seed = turn_seed(seed, index, -1)
    rng = random.Random(episode_seed)
    start_room = rng.choice(ROOMS)
    return episode_seed, {"start_room": start_room, "optimal_rooms": list(draw_optimal_rooms(rng))}


def generate_dataset(
    out_dir: Union[str, os.PathLike],
    variant: str = "fo",
    n_episodes: int = DEFAULT_EPISODES,
    seed: int = 0,
    progress: bool = True,
    max_steps: int = DATA_MAX_STEPS,
    follow_prob: float = FOLLOW_PROB,
    house_seed: int = DEFAULT_SEED,
    cache_dir: Optional[str] = None,
) -> dict[str, Any]:
    """Play the behaviour policy and write `out_dir/train.jsonl` and `out_dir/stats.json`.

    Args:
        out_dir: directory for the dataset (created if missing).
        variant: "fo" or "po" observations (the same commands for both).
        n_episodes: episodes (paper: 2.5k).
        seed: seeds the episodes' start rooms, optimal rooms and the agent's draws.
        progress: show a progress bar.
        max_steps: commands per episode at most (the original: 15).
        follow_prob: the agent's probability of following the walkthrough in an optimal room (default 1.0, the
            paper's policy; the original script's 0.1 yields no successes, see `policies.FOLLOW_PROB`).
        house_seed, cache_dir: the compiled house (see `TextNavEnv`).

    Returns:
        The dataset statistics beside the paper's Table 1 (also written to `stats.json`).
    """
    env = TextNavEnv(variant, max_steps=max_steps, house_seed=house_seed, cache_dir=cache_dir)
    policy = PartialWalkthroughAgent(follow_prob)
    config = {"variant": variant, "n_episodes": n_episodes, "seed": seed, "max_steps": max_steps,
              "follow_prob": follow_prob, "house_seed": house_seed}
    return write_generated_dataset(
        out_dir, n_episodes, lambda indices: play_episodes(env, policy, indices, seed),
        RunningTable1Stats(PAPER_TABLE1), config, f"textnav {variant} dataset", unit="episode", progress=progress,
    )


def play_episodes(env: TextNavEnv, policy: PartialWalkthroughAgent, indices: range, seed: int) -> Iterator[Episode]:
    """The episodes `indices`, in order, BATCH at a time, their options moved into meta."""
    for start in range(indices.start, indices.stop, BATCH):
        specs = [EvalEpisode(i, *episode_options(seed, i)) for i in range(start, min(indices.stop, start + BATCH))]
        for episode in rollout(env, policy, specs, batch_size=len(specs), policy_seed=seed):
            episode.meta.update(episode.meta.pop("options"), variant=env.variant)
            yield episode


def format_stats_table(stats: dict[str, Any]) -> str:
    return format_dataset_stats(stats, "commands")
