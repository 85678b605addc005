"""The maze's offline dataset (paper C.1, Table 1): mixture-policy episodes confined to submazes.

Each episode starts at one of the 25 start cells drawn uniformly by the seed (the env's own start
distribution: 9 in the left T, 9 in the right T, 7 in the centre T, see `policies`) and is played by
`MixturePolicy(solver_prob, confine=True)`: 15% depth-first-solver moves, 85% random moves, never leaving
the start's submaze. Only centre-T episodes can reach the goal, so the data holds no start-to-goal
demonstration from the other two thirds of the maze: a learner has to stitch the value of the centre into
them (the point of the paper's construction).

Horizon. The paper's statistics (mean length 19.7 turns, std 24.5, success 0.11) cannot come from playing
every episode to the env's end (an episode that cannot succeed would always last 101 turns), and no single
shorter horizon fits them either: with a fixed horizon H most episodes last exactly H, so the std of the
length would be far below its mean, whereas the paper's std is larger than its mean. So each episode is cut
at its own horizon, drawn log-uniformly from `max_episode_steps = (1, 101)` (P(H = h) proportional to
log((h + 1) / h)): lengths spread over the whole range, short episodes most often, a few running through
all 100 moves and the failure step. Expected statistics (30k episodes): mean length 18.7, std 23.3, success
0.105, mean return -18.6, std 23.3, against Table 1's 19.7, 24.5, 0.11, -19.7, 24.5; one 1240-episode
draw varies by about one turn. An episode cut at its horizon before the env ended it is written with
`done=false` (truncated). ILQL's targets bootstrap move by move, the final move's from V of the observation
after it rather than 0. MC Returns adds gamma^k * V(that observation) to every move's return, k moves before the
cut: each windowed chunk of a cut episode says so and carries that observation's context. An int
`max_episode_steps` gives every episode the same horizon instead; 101 plays every episode to the env's end.

FO and PO datasets are the same interactions: the players read the simulator, not the text, so with the
same seed both variants make the same moves and differ only in the observation wording.
"""
from __future__ import annotations

import itertools
import math
import os
import random
from array import array
from collections import defaultdict
from typing import Any, Iterator, Sequence, Union

from lmrl_lightning.data.generation import write_generated_dataset
from lmrl_lightning.env import Episode
from lmrl_lightning.registry import EvalEpisode
from lmrl_lightning.rollout import rollout
from lmrl_lightning.scoring import format_dataset_stats
from lmrl_lightning.tasks.maze.env import DEFAULT_MAX_STEPS, START_POSITIONS, MazeEnv, Position, Variant
from lmrl_lightning.tasks.maze.policies import SUBMAZES, MixturePolicy, submaze_of

SUBMAZE_NAMES = tuple(SUBMAZES)

# The env's longest episode: `max_steps` moves and the failure step.
FULL_EPISODE_TURNS = DEFAULT_MAX_STEPS + 1

# Paper Table 1 (spec §4.3), maze column.
PAPER_TABLE1: dict[str, float] = {
    "n_episodes": 1240,
    "mean_length": 19.7,
    "std_length": 24.5,
    "success_rate": 0.11,
    "mean_return": -19.7,
    "std_return": 24.5,
}

Horizon = Union[int, tuple[int, int]]


def sample_horizon(rng: random.Random, max_episode_steps: Horizon) -> int:
    """One episode's horizon: the int itself, or a log-uniform draw from the inclusive range `(low, high)`."""
    if isinstance(max_episode_steps, int):
        return max_episode_steps
    low, high = max_episode_steps
    # floor(exp(U)) with U uniform on [log low, log(high + 1)) gives P(h) proportional to log((h + 1) / h).
    return min(high, int(math.exp(rng.uniform(math.log(low), math.log(high + 1)))))


def iter_plan(n_episodes: int, seed: int, max_episode_steps: Horizon) -> Iterator[tuple[EvalEpisode, str, int]]:
    """For each episode in turn: its `EvalEpisode` (start position in the options), its submaze and its horizon."""
    rng = random.Random(seed)
    for i in range(n_episodes):
        start: Position = rng.choice(START_POSITIONS)
        horizon = sample_horizon(rng, max_episode_steps)
        yield EvalEpisode(i, i, {"init_position": list(start)}), submaze_of(start), horizon


def plan_episodes(
    n_episodes: int, seed: int, max_episode_steps: Horizon
) -> list[tuple[EvalEpisode, str, int]]:
    """The whole plan of `iter_plan` as a list."""
    return list(iter_plan(n_episodes, seed, max_episode_steps))


def play_block(
    env: MazeEnv, policy: MixturePolicy, block: Sequence[tuple[EvalEpisode, str, int]], seed: int, batch_size: int
) -> list[Episode]:
    """Play one block of the plan; episodes come back in plan order, their meta completed."""
    # The rollout engine cuts episodes at one `max_turns` per call, so episodes are grouped by horizon. A
    # player's moves depend only on (seed, episode index, turn), so neither grouping nor blocking changes them.
    by_horizon: dict[int, list[EvalEpisode]] = defaultdict(list)
    for spec, _, horizon in block:
        by_horizon[horizon].append(spec)
    played: dict[int, Episode] = {}
    for horizon, specs in sorted(by_horizon.items()):
        for episode in rollout(env, policy, specs, batch_size=batch_size, policy_seed=seed, max_turns=horizon):
            played[episode.meta["index"]] = episode
    episodes = []
    for spec, submaze, horizon in block:
        episode = played[spec.index]
        episode.meta.update(
            {"start": spec.options["init_position"], "submaze": submaze, "horizon": horizon, "variant": env.variant}
        )
        episodes.append(episode)
    return episodes


def generate_dataset(
    out_dir: Union[str, os.PathLike],
    variant: Variant = "fo",
    n_episodes: int = 1240,
    seed: int = 0,
    solver_prob: float = 0.15,
    max_episode_steps: Horizon = (1, FULL_EPISODE_TURNS),
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """Play the confined mixture policy and write `out_dir/train.jsonl` and `out_dir/stats.json`, a block at a
    time (`write_generated_dataset`: memory stays flat; the statistics keep five numbers per episode).

    Args:
        out_dir: directory for the dataset (created if missing).
        variant: "fo" or "po" observations; the moves are the same for both.
        n_episodes: number of episodes (paper: 1.24k).
        seed: seeds the plan (starts, horizons) and the players' moves.
        solver_prob: probability that a move comes from the depth-first solver rather than at random.
        max_episode_steps: agent turns after which an episode is cut (done=false): an int for all episodes,
            or `(low, high)` to draw each episode's horizon log-uniformly (see the module docstring).
        batch_size: episodes stepped together by the rollout engine.
        progress: show a progress bar.

    Returns:
        The dataset statistics beside the paper's Table 1 (also written to `stats.json`).
    """
    _check_horizon(max_episode_steps)  # n_episodes is checked by write_generated_dataset
    env, policy = MazeEnv(variant), MixturePolicy(solver_prob, confine=True)
    plan = iter_plan(n_episodes, seed, max_episode_steps)

    def play_next_block(indices: range) -> list[Episode]:
        return play_block(env, policy, list(itertools.islice(plan, len(indices))), seed, batch_size)

    config = {"variant": variant, "n_episodes": n_episodes, "seed": seed, "solver_prob": solver_prob,
              "max_episode_steps": max_episode_steps}
    return write_generated_dataset(
        out_dir, n_episodes, play_next_block, _StatsColumns(), config, f"maze {variant} dataset", progress=progress
    )


class _StatsColumns:
    """Per-episode length, return, success, submaze and done, packed (a few bytes an episode)."""

    def __init__(self) -> None:
        self.lengths, self.returns = array("d"), array("d")
        self.successes, self.submazes, self.dones = array("b"), array("b"), array("b")

    def add(self, episode: Episode) -> None:
        self.lengths.append(float(episode.num_actions))
        self.returns.append(episode.total_reward)
        self.successes.append(episode.success)
        submaze = episode.meta.get("submaze")
        self.submazes.append(SUBMAZE_NAMES.index(submaze) if submaze in SUBMAZES else -1)
        self.dones.append(episode.done)

    def summary(self) -> dict[str, Any]:
        """Table 1 statistics (population std, as `evaluation.summarise`), each as `{"ours", "paper"}`, plus the
        success rate and episode count per submaze and the share of truncated episodes."""
        ours = {
            "n_episodes": len(self.lengths),
            "mean_length": _mean(self.lengths),
            "std_length": _std(self.lengths),
            "success_rate": _mean(self.successes),
            "mean_return": _mean(self.returns),
            "std_return": _std(self.returns),
        }
        stats: dict[str, Any] = {k: {"ours": v, "paper": PAPER_TABLE1[k]} for k, v in ours.items()}
        per_submaze: dict[str, dict[str, float]] = {}
        for code, name in enumerate(SUBMAZE_NAMES):
            group = [s for s, m in zip(self.successes, self.submazes) if m == code]
            if group:
                per_submaze[name] = {"n_episodes": len(group), "success_rate": _mean(group)}
        stats["per_submaze"] = per_submaze
        stats["truncated_fraction"] = _mean([1 - d for d in self.dones])
        return stats


def dataset_stats(episodes: Sequence[Episode]) -> dict[str, Any]:
    """The statistics of `generate_dataset` (see `_StatsColumns.summary`) for a list of episodes."""
    columns = _StatsColumns()
    for episode in episodes:
        columns.add(episode)
    return columns.summary()


def format_stats_table(stats: dict[str, Any]) -> str:
    """The statistics beside the paper's Table 1, with the success rate of each submaze."""
    lines = [format_dataset_stats(stats, "turns")]
    for name, group in stats.get("per_submaze", {}).items():
        label = f"success, {name}"
        lines.append(f"{label:<24}{group['success_rate']:>10.3f}{'':>10}   ({group['n_episodes']} episodes)")
    if "truncated_fraction" in stats:
        lines.append(f"{'truncated (done=false)':<24}{stats['truncated_fraction']:>10.3f}")
    return "\n".join(lines)


def _check_horizon(max_episode_steps: Horizon) -> None:
    if isinstance(max_episode_steps, int):
        low = high = max_episode_steps
    else:
        low, high = max_episode_steps
    if not 1 <= low <= high:
        raise ValueError(f"max_episode_steps must be >= 1 (or a range 1 <= low <= high), got {max_episode_steps}")


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _std(xs: Sequence[float]) -> float:
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))
