"""The loop every task's dataset generator shares: play episodes in blocks, stream them to `train.jsonl`, and write
their statistics to `stats.json`.

Blocks keep memory flat however many episodes are asked for (the paper's Wordle set has 1M): a block is played,
written and dropped before the next is played, and statistics are accumulated one episode at a time.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol, Union

from tqdm.auto import tqdm

from lmrl_lightning.atomic import atomic_write_json
from lmrl_lightning.data.jsonl import write_episodes
from lmrl_lightning.env import Episode

BLOCK = 4096
TRAIN_FILE = "train.jsonl"
STATS_FILE = "stats.json"


class EpisodeStatistics(Protocol):
    def add(self, episode: Episode) -> None: ...

    def summary(self) -> dict[str, Any]: ...


class RunningTable1Stats:
    """Table 1's statistics (episodes, length, success, return) accumulated one episode at a time, each beside the
    paper's value in `paper` (None where it has none; population std, as `evaluation.summarise`): an
    `EpisodeStatistics`."""

    def __init__(self, paper: Optional[dict[str, float]] = None) -> None:
        self.paper = paper or {}
        self.n = 0
        self.sums = {"length": 0.0, "length_sq": 0.0, "return": 0.0, "return_sq": 0.0, "success": 0.0}

    def add(self, episode: Episode) -> None:
        self.n += 1
        for key, value in (("length", float(episode.num_actions)), ("return", episode.total_reward)):
            self.sums[key] += value
            self.sums[key + "_sq"] += value * value
        self.sums["success"] += float(episode.success)

    def summary(self) -> dict[str, Any]:
        n = self.n
        mean = {k: self.sums[k] / n for k in ("length", "return", "success")}
        std = {k: math.sqrt(max(0.0, self.sums[k + "_sq"] / n - mean[k] ** 2)) for k in ("length", "return")}
        ours = {"n_episodes": n, "mean_length": mean["length"], "std_length": std["length"],
                "success_rate": mean["success"], "mean_return": mean["return"], "std_return": std["return"]}
        return {k: {"ours": v, "paper": self.paper.get(k)} for k, v in ours.items()}


def write_generated_dataset(
    out_dir: Union[str, os.PathLike],
    n_episodes: int,
    play_block: Callable[[range], Iterable[Episode]],
    statistics: EpisodeStatistics,
    config: dict[str, Any],
    desc: str,
    unit: str = "it",
    progress: bool = True,
) -> dict[str, Any]:
    """Write `out_dir/train.jsonl` and `out_dir/stats.json`; returns the statistics (with `config` under "config").

    `play_block(indices)` plays the episodes of one block of consecutive indices, in that order; blocks are asked
    for in order, from 0 up to `n_episodes`, at most `BLOCK` at a time.
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")

    def episodes() -> Iterator[Episode]:
        with tqdm(total=n_episodes, desc=desc, disable=not progress, unit=unit) as bar:
            for start in range(0, n_episodes, BLOCK):
                block = range(start, min(n_episodes, start + BLOCK))
                # The bar moves per episode: a block can be the whole dataset (chess: 2000 games, ~20 minutes).
                for episode in play_block(block):
                    statistics.add(episode)
                    bar.update(1)
                    yield episode

    out = Path(out_dir)
    write_episodes(out / TRAIN_FILE, episodes())
    stats = statistics.summary()
    stats["config"] = config
    atomic_write_json(out / STATS_FILE, stats)
    return stats
