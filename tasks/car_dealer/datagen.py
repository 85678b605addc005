"""Car Dealer's offline dataset: the mixed scripted seller against random rule-based buyers, streamed to JSONL.

Each episode draws a buyer profile from its seed (spec §2.8's randomisation) and a seller style (discount-lover,
feature-talker, concise and firm; `policies.MixedSeller`). Each record's meta holds the original's `buyer_info` and
`output` (`{"car_bought", "msrp", "buy_price"}`) and the seller's `style`.

Statistics (`lmrl data car_dealer`, 19,000 episodes, seed 0) beside the paper's Table 1: see `PAPER_TABLE1` and the
README. The return and success rate are matched; conversations are shorter than the paper's 16.5 seller turns
because the concise style closes in about five turns (the discount style averages about 16).
"""
from __future__ import annotations

import os
from typing import Any, Iterator, Union

from lmrl_lightning.data.generation import RunningTable1Stats, write_generated_dataset
from lmrl_lightning.env import Episode
from lmrl_lightning.registry import EvalEpisode
from lmrl_lightning.rollout import rollout, turn_seed
from lmrl_lightning.scoring import format_dataset_stats
from lmrl_lightning.tasks.car_dealer.env import CarDealerEnv
from lmrl_lightning.tasks.car_dealer.policies import MixedSeller

DEFAULT_EPISODES = 19_000  # the paper's dataset size
BATCH = 256

# Paper Table 1 (spec §4.3), Car Dealer column.
PAPER_TABLE1: dict[str, float] = {
    "n_episodes": 19_000, "mean_length": 16.5, "std_length": 3.61, "success_rate": 0.53, "mean_return": 0.562,
    "std_return": 0.422,
}


def episode_seed(seed: int, index: int) -> int:
    """The reset seed of episode `index` (its buyer profile, wording and seller settings): independent of blocking."""
    return turn_seed(seed, index, -1)


def generate_dataset(
    out_dir: Union[str, os.PathLike],
    variant: str = "default",
    n_episodes: int = DEFAULT_EPISODES,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Play the mixed seller against random rule buyers and write `out_dir/train.jsonl` and `out_dir/stats.json`.

    Args:
        out_dir: directory for the dataset (created if missing).
        variant: Car Dealer has one variant, "default" (the rule-based buyer).
        n_episodes: conversations (the paper: 19k).
        seed: seeds the buyer profiles, the buyers' wording and the sellers' styles and settings.
        progress: show a progress bar.

    Returns:
        The dataset statistics beside the paper's Table 1 (also written to `stats.json`).
    """
    journal: dict[int, dict[str, Any]] = {}
    env, seller = CarDealerEnv(journal=journal), MixedSeller()
    config = {"n_episodes": n_episodes, "seed": seed, "seller": "mixed", "buyer": "rule"}
    return write_generated_dataset(
        out_dir, n_episodes, lambda indices: play_conversations(env, seller, journal, indices, seed),
        RunningTable1Stats(PAPER_TABLE1), config, "car_dealer dataset", unit="conversation", progress=progress,
    )


def play_conversations(env: CarDealerEnv, seller: MixedSeller, journal: dict, indices: range,
                       seed: int) -> Iterator[Episode]:
    """The conversations `indices`, in order, each with the original's buyer_info/output and the seller's style."""
    for start in range(indices.start, indices.stop, BATCH):
        specs = [EvalEpisode(i, episode_seed(seed, i)) for i in range(start, min(indices.stop, start + BATCH))]
        for episode in rollout(env, seller, specs, batch_size=len(specs), policy_seed=seed):
            record = journal.pop(episode.meta["seed"])
            episode.meta.pop("options")
            episode.meta.update(record, style=seller.style_of(episode.meta["seed"]).name)
            yield episode


def format_stats_table(stats: dict[str, Any]) -> str:
    return format_dataset_stats(stats, "seller turns")
