"""Chess (spec §2.4) and Chess Endgames (spec §2.5) against Stockfish 15.1: registered as "chess" and "endgames",
one variant each ("default"). Needs the Stockfish binary (`apt-get install -y stockfish`) and python-chess.

The opponent (`env.OPPONENT`). The paper's opponent is Stockfish "Elo 1200" (`UCI_Elo: 1200`, 100 ms a move), which
Stockfish 15.1 cannot play: its UCI_Elo range starts at 1350 and it ignores values below (python-chess refuses them).
Depending on the wrapper version the original either played at 1350 or at full strength; its data (White at
"800-1600" wins 60% against it) fits 1350, not full strength. So the opponent plays at UCI_Elo 1350 with
UCI_LimitStrength on: the nearest setting to 1200 and what the original most likely ran. 15.1 maps Elo 1350 to
Skill Level 0, which picks among its 4 best moves at depth 1 with a clock-seeded random weakness, so its moves are
not reproducible (no 15.1 option seeds it); 400 nodes a move replace the 100 ms (more would not change its play).
Measured (tasks/chess/measure_opponent.py; first run, 20 games each): it won all 20 games against a uniformly random
mover (mean 21 White moves) and all 20 against a 1-ply greedy material player (mean 18).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

from lmrl_lightning.errors import LMRLError
from lmrl_lightning.registry import EvalEpisode, TaskSpec, register_task
from lmrl_lightning.scoring import Normalisation
from lmrl_lightning.tasks.chess.datagen import PAPER_TABLE1, format_stats_table, generate_dataset
from lmrl_lightning.tasks.chess.engine import EnginePlayer, close_engines, engine_move, stockfish_path
from lmrl_lightning.tasks.chess.env import (
    MAX_MOVES,
    OPPONENT,
    ChessEnv,
    EndgameEnv,
    board_diagram,
    episode_metrics,
    legal_actions_for_history,
    legal_move_texts,
    spaced,
)
from lmrl_lightning.tasks.chess.original import read_original_chess
from lmrl_lightning.tasks.chess.policies import (
    EpsilonGreedyStockfish,
    GreedyMaterialPlayer,
    RandomMover,
    StockfishPlayer,
)
from lmrl_lightning.tasks.chess.positions import N_EVAL_POSITIONS, SETUPS, eval_positions, training_position

VARIANTS: tuple[str, ...] = ("default",)

# Spec §2.9 / paper Table 5: minimum return (401 illegal moves), dataset-average return, maximum (a win).
NORMALISATION: dict[str, dict[str, Normalisation]] = {
    "chess": {"default": Normalisation(minimum=-401.0, dataset_average=0.21, maximum=1.0)},
    "endgames": {"default": Normalisation(minimum=-1.0, dataset_average=0.586, maximum=1.0)},
}
PAPER_EVAL_GAMES = 1000


def env_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The env's keyword arguments from a config (`rollouts.env_options`): `opponent` may be a mapping of
    `EnginePlayer` fields; unknown names are refused with one line."""
    known = {"opponent", "max_moves", "start_fen"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise LMRLError(f"chess env_options: unknown option {unknown[0]!r}; valid: {', '.join(sorted(known))}")
    kwargs = dict(kwargs)
    opponent = kwargs.get("opponent")
    if isinstance(opponent, dict):
        fields = {f.name for f in dataclasses.fields(EnginePlayer)}
        if set(opponent) - fields:
            raise LMRLError(f"env_options.opponent: unknown field {sorted(set(opponent) - fields)[0]!r}; "
                            f"valid: {', '.join(sorted(fields))}")
        kwargs["opponent"] = EnginePlayer(**opponent)
    return kwargs


def make_chess_env(variant: str, **kwargs: Any) -> ChessEnv:
    """Full games from the initial position (or `start_fen`); keyword arguments go to `ChessEnv`."""
    CHESS.check_variant(variant)
    return ChessEnv(**env_arguments(kwargs))


def make_endgame_env(variant: str, **kwargs: Any) -> EndgameEnv:
    """Endgames from the reset's `fen` option or a random training position; keyword arguments go to `ChessEnv`."""
    ENDGAMES.check_variant(variant)
    return EndgameEnv(**env_arguments(kwargs))


def chess_eval_episodes(variant: str, episodes: int) -> list[EvalEpisode]:
    """`episodes` games from the initial position (paper: 1000); the index seeds the policy's sampling."""
    CHESS.check_variant(variant)
    return [EvalEpisode(i, i, None) for i in range(episodes)]


def endgame_eval_episodes(variant: str, episodes: int) -> list[EvalEpisode]:
    """One game from each of the first `episodes` evaluation positions (paper: all 645, one game each); more
    episodes than positions cycle through them again."""
    ENDGAMES.check_variant(variant)
    fens = eval_positions()
    return [EvalEpisode(i, i, {"fen": fens[i % len(fens)]}) for i in range(episodes)]


_COMMON: dict[str, Any] = dict(
    variants=VARIANTS,
    history_window={"default": 1},  # the env shows the current position only
    # Re-ranking decoding chooses among the position's legal moves (illegal-move rate 0); free generation, the
    # paper's protocol, stays the default.
    state_candidate_actions=legal_actions_for_history,
    default_decoding="sample",
    format_stats=format_stats_table,
    read_original=read_original_chess,
    show_observation=board_diagram,
)

CHESS: TaskSpec = register_task(
    TaskSpec(
        name="chess",
        make_env=make_chess_env,
        normalisation=NORMALISATION["chess"],
        eval_episodes=chess_eval_episodes,
        default_eval_episodes=PAPER_EVAL_GAMES,
        generate_dataset=functools.partial(generate_dataset, task="chess"),
        table1=PAPER_TABLE1["chess"],
        description="Chess as White against Stockfish (UCI_Elo 1350): type a move in SAN ('Nf3' or 'N f 3'); "
        "an illegal move costs -1 and you move again; a win +1, a loss -1.",
        **_COMMON,
    )
)

ENDGAMES: TaskSpec = register_task(
    TaskSpec(
        name="endgames",
        make_env=make_endgame_env,
        normalisation=NORMALISATION["endgames"],
        eval_episodes=endgame_eval_episodes,
        default_eval_episodes=N_EVAL_POSITIONS,
        generate_dataset=functools.partial(generate_dataset, task="endgames"),
        table1=PAPER_TABLE1["endgames"],
        description="Chess endgame as White (king and queen/rooks against a lone king): mate Stockfish's king; "
        "type moves in SAN ('Qd7' or 'Q d 7'); an illegal move costs -1.",
        **_COMMON,
    )
)

TASKS = (CHESS, ENDGAMES)

__all__ = [
    "CHESS", "ENDGAMES", "MAX_MOVES", "NORMALISATION", "OPPONENT", "SETUPS", "TASKS", "ChessEnv", "EndgameEnv",
    "EnginePlayer", "EpsilonGreedyStockfish", "board_diagram", "GreedyMaterialPlayer", "RandomMover", "StockfishPlayer",
    "chess_eval_episodes", "close_engines", "endgame_eval_episodes", "engine_move", "episode_metrics",
    "eval_positions", "format_stats_table", "generate_dataset", "legal_actions_for_history", "legal_move_texts",
    "make_chess_env", "make_endgame_env", "spaced", "stockfish_path", "training_position",
]
