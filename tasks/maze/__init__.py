"""The maze task (spec §2.1): FO and PO variants of the double-T maze, registered as "maze"."""
from __future__ import annotations

from typing import Any

from lmrl_lightning.errors import LMRLError
from lmrl_lightning.registry import EvalEpisode, TaskSpec, register_task
from lmrl_lightning.scoring import Normalisation
from lmrl_lightning.data.original import read_text_history, transitions_reader
from lmrl_lightning.env import END_OF_TURN
from lmrl_lightning.tasks.maze.datagen import PAPER_TABLE1, format_stats_table, generate_dataset
from lmrl_lightning.tasks.maze.env import DEFAULT_LAST_K, GOAL, MOVES, START_POSITIONS, MazeEnv
from lmrl_lightning.tasks.maze.policies import (
    MixturePolicy,
    OptimalMazePolicy,
    RandomMazePolicy,
    SuboptimalMazeSolver,
)

VARIANTS: tuple[str, ...] = ("fo", "po")

# Spec §2.9 / paper Table 5: minimum return, dataset-average return, expert return. The FO maximum is the
# BFS optimum averaged over the 25 starts; the PO maximum's policy is not known.
NORMALISATION: dict[str, Normalisation] = {
    "fo": Normalisation(minimum=-101.0, dataset_average=-83.0, maximum=-6.84),
    "po": Normalisation(minimum=-101.0, dataset_average=-83.0, maximum=-25.75),
}


def make_env(variant: str, **kwargs: Any) -> MazeEnv:
    """The maze of `variant`; keyword arguments go to `MazeEnv` (max_steps, last_k)."""
    return MazeEnv(TASK.check_variant(variant), **kwargs)


def eval_episodes(variant: str, episodes: int) -> list[EvalEpisode]:
    """`episodes` episodes, an equal number from each of the 25 starts, start-major (the paper's protocol, E.1:
    800 = 25 starts x 32); the episode index doubles as its env seed (the start is fixed by the options, so the
    seed is unused)."""
    TASK.check_variant(variant)
    n_starts = len(START_POSITIONS)
    if not isinstance(episodes, int) or episodes < n_starts or episodes % n_starts:
        raise LMRLError(
            f"maze evaluation episodes must be a multiple of its {n_starts} start positions (the paper's protocol: "
            f"{n_starts * 32} = {n_starts} x 32), got {episodes!r}"
        )
    per_start = episodes // n_starts
    return [
        EvalEpisode(i * per_start + k, i * per_start + k, {"init_position": list(start)})
        for i, start in enumerate(START_POSITIONS)
        for k in range(per_start)
    ]


def _with_end_of_turn(text: str) -> str:
    return text if text.endswith(END_OF_TURN) else text + END_OF_TURN


_READ_FO_GAME = transitions_reader(_with_end_of_turn, _with_end_of_turn)


def read_original_maze(record: Any, where: str):
    """One line of the original's maze files (spec §2.1): FO games are lists of `{"state", "action", "reward",
    "done"}` (texts given the end-of-turn newline when they lack it), PO games `{"text_history", "rewards",
    "dones"}`."""
    if isinstance(record, list):
        return _READ_FO_GAME(record, where)
    return read_text_history(record, where)


TASK: TaskSpec = register_task(
    TaskSpec(
        name="maze",
        variants=VARIANTS,
        make_env=make_env,
        normalisation=NORMALISATION,
        eval_episodes=eval_episodes,
        default_eval_episodes=25 * 32,  # 32 from each start
        history_window=dict(DEFAULT_LAST_K),
        candidate_actions=MOVES,
        # Sampled re-ranking of the four moves (the original's ReRankerSamplePolicy). Free generation
        # (`decoding="sample"`, the paper's BC protocol) also works, but a model trained from scratch has no
        # prior over text it never saw, so in states outside its data it writes invalid moves (-4 each).
        default_decoding="rerank",
        generate_dataset=generate_dataset,
        format_stats=format_stats_table,
        read_original=read_original_maze,
        table1=PAPER_TABLE1,
        description="Double-T maze: reach the goal at (8, 6) with 'move left/right/up/down'; "
        "FO shows the position, PO only the adjacent walls.",
    )
)

__all__ = [
    "GOAL",
    "MOVES",
    "NORMALISATION",
    "START_POSITIONS",
    "TASK",
    "MazeEnv",
    "MixturePolicy",
    "OptimalMazePolicy",
    "RandomMazePolicy",
    "SuboptimalMazeSolver",
    "eval_episodes",
    "format_stats_table",
    "generate_dataset",
    "make_env",
]
