"""The offline datasets of Chess and Chess Endgames (spec §2.4, §2.5, paper Table 1), streamed to JSONL.

Chess: Stockfish against Stockfish. Each game draws the agent's Elo y ~ Uniform[800, 1600] (the paper's range)
and White plays at UCI_Elo clamp(y, 1350, 2850) (`policies.agent_player`: Stockfish 15.1 has no lower setting,
and values below 1350 left the original's engines at 1350 too); Black is the evaluation opponent
(`env.OPPONENT`). Each episode's meta records the sampled `agent_elo`, the `engine_elo` played and the opponent's
reply after every agent move (`opponent_moves`, SAN; None after the game's last move), with the texts (state,
action) in the turns: what the original's files record per move.

Endgames: each game starts from a random training position (setup uniform over kQK, kRK, kQRK, kRRK, never one of
the evaluation positions) and White is epsilon-greedy: epsilon ~ Uniform[0, 1] per game (the paper's epsilon
distribution is not known), a random legal move with probability epsilon, else full-strength Stockfish at 1000
nodes; Black is the evaluation opponent. Meta records `fen`, `setup` and `epsilon`.

Games are played in blocks, `BATCH` at a time in one rollout, and written as they finish, so memory stays flat at
any size (the paper: 625k chess games, ~98k endgames). Defaults are sized to generate in a few minutes on 2 cores.
"""
from __future__ import annotations

import os
import random
from typing import Any, Iterator, Optional, Union

import chess

from lmrl_lightning.data.generation import RunningTable1Stats, write_generated_dataset
from lmrl_lightning.env import Episode
from lmrl_lightning.registry import EvalEpisode
from lmrl_lightning.rollout import rollout, turn_seed
from lmrl_lightning.scoring import format_dataset_stats
from lmrl_lightning.tasks.chess.engine import close_engines
from lmrl_lightning.tasks.chess.env import ChessEnv, EndgameEnv, board_from_observation, parse_move
from lmrl_lightning.tasks.chess.policies import EpsilonGreedyStockfish, StockfishPlayer, agent_player
from lmrl_lightning.tasks.chess.positions import SETUPS, training_position

DEFAULT_CHESS_GAMES = 600
DEFAULT_ENDGAMES = 2_000
PAPER_AGENT_ELO = (800.0, 1600.0)
BATCH = 64  # games stepped together; the engine answers them one by one

# Paper Table 1 (spec §2.4, §2.5).
PAPER_TABLE1: dict[str, dict[str, float]] = {
    "chess": {"n_episodes": 625_000, "mean_length": 46.7, "std_length": 18.16, "success_rate": 0.60,
              "mean_return": 0.210, "std_return": 0.970},
    "endgames": {"n_episodes": 97_756, "mean_length": 11.9, "std_length": 12.0, "success_rate": 0.59,
                 "mean_return": 0.586, "std_return": 0.492},
}


def chess_game_options(seed: int, index: int) -> tuple[int, dict[str, Any]]:
    """Env seed and reset options of chess game `index`: the sampled agent Elo (independent of blocking)."""
    game_seed = turn_seed(seed, index, -1)
    agent_elo = random.Random(game_seed).uniform(*PAPER_AGENT_ELO)
    return game_seed, {"agent_elo": agent_elo, "engine_elo": agent_player(agent_elo).elo}


def endgame_options(seed: int, index: int) -> tuple[int, dict[str, Any]]:
    """Env seed and reset options of endgame `index`: its setup, start position and epsilon."""
    game_seed = turn_seed(seed, index, -1)
    rng = random.Random(game_seed)
    setup, epsilon = rng.choice(SETUPS), rng.random()
    return game_seed, {"fen": training_position(rng.randrange(2**31), setup), "setup": setup, "epsilon": epsilon}


def opponent_moves(episode: Episode) -> list[Optional[str]]:
    """The opponent's reply (SAN) after each agent move, read off consecutive positions: None after an illegal move
    (the board did not change) and after the move that ended the game."""
    replies: list[Optional[str]] = []
    texts = episode.turns
    for k, text in enumerate(texts):
        if text.is_action:
            before = board_from_observation(texts[k - 1].text)
            after = texts[k + 1].text if k + 1 < len(texts) else None
            replies.append(_reply(before, text.text, after))
    return replies


def _reply(board: chess.Board, action: str, after: Optional[str]) -> Optional[str]:
    move = parse_move(board, action)
    if move is None or after is None:
        return None
    board.push(move)
    target = board_from_observation(after).board_fen()
    for reply in board.legal_moves:
        board.push(reply)
        found = board.board_fen() == target
        board.pop()
        if found:
            return board.san(reply)
    return None


def generate_dataset(
    out_dir: Union[str, os.PathLike],
    variant: str = "default",
    n_episodes: Optional[int] = None,
    seed: int = 0,
    progress: bool = True,
    task: str = "chess",
) -> dict[str, Any]:
    """Play the task's data games and write `out_dir/train.jsonl` and `out_dir/stats.json`.

    Args:
        out_dir: directory for the dataset (created if missing).
        variant: both tasks have one variant, "default".
        n_episodes: games (default: DEFAULT_CHESS_GAMES or DEFAULT_ENDGAMES; the paper: 625k / ~98k).
        seed: seeds the games' settings and the players' random moves.
        progress: show a progress bar.
        task: "chess" or "endgames".

    Returns:
        The dataset statistics beside the paper's Table 1 (also written to `stats.json`).
    """
    chess_task = task == "chess"
    n = n_episodes or (DEFAULT_CHESS_GAMES if chess_task else DEFAULT_ENDGAMES)
    env = ChessEnv() if chess_task else EndgameEnv()
    policy = StockfishPlayer() if chess_task else EpsilonGreedyStockfish()
    options = chess_game_options if chess_task else endgame_options
    config = {"task": task, "n_episodes": n, "seed": seed}
    try:
        return write_generated_dataset(
            out_dir, n, lambda indices: play_games(env, policy, options, indices, seed), RunningTable1Stats(PAPER_TABLE1[task]), config,
            f"{task} dataset", unit="game", progress=progress,
        )
    finally:
        close_engines()


def play_games(env: ChessEnv, policy, options, indices: range, seed: int) -> Iterator[Episode]:
    """The games `indices`, in order, BATCH at a time; each records its options and the opponent's replies."""
    for start in range(indices.start, indices.stop, BATCH):
        specs = [EvalEpisode(i, *options(seed, i)) for i in range(start, min(indices.stop, start + BATCH))]
        for episode in rollout(env, policy, specs, batch_size=len(specs), policy_seed=seed):
            episode.meta.update(episode.meta.pop("options"))
            episode.meta["opponent_moves"] = opponent_moves(episode)
            yield episode


def format_stats_table(stats: dict[str, Any]) -> str:
    return format_dataset_stats(stats, "moves")
