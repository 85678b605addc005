"""The loop every task's dataset generator shares: play episodes in blocks, stream them to `train.jsonl`, and write
their statistics to `stats.json`.

Blocks keep memory flat however many episodes are asked for (the paper's Wordle set has 1M): a block is played,
written and dropped before the next is played, and statistics are accumulated one episode at a time.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Union

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
                for episode in play_block(block):
                    statistics.add(episode)
                    yield episode
                bar.update(len(block))

    out = Path(out_dir)
    write_episodes(out / TRAIN_FILE, episodes())
    stats = statistics.summary()
    stats["config"] = config
    atomic_write_json(out / STATS_FILE, stats)
    return stats
