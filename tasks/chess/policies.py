"""Scripted chess players (White). Text players read only the position in the history, as an agent does; the
Stockfish players read the game's board from the environment (`PrivilegedPolicy`, as the dataset generators do).

* `RandomMover`: a uniformly random legal move.
* `GreedyMaterialPlayer`: one ply of look-ahead: mates if it can, else takes the most material (promotions
  count), ties broken at random.
* `StockfishPlayer`: Stockfish with fixed settings, or with the Elo a game's reset options name (`agent_elo`,
  the chess dataset's per-game agent strength).
* `EpsilonGreedyStockfish`: with probability epsilon (the game's `epsilon` reset option) a random legal move,
  otherwise full-strength Stockfish (the Endgames dataset's player, spec §2.5).
"""
from __future__ import annotations

import random
from typing import Optional

import chess

from lmrl_lightning.env import PrivilegedPolicy, Text, TextEnv, TextHistory, TextPolicy
from lmrl_lightning.tasks.chess.engine import MAX_ELO, MIN_ELO, EnginePlayer, engine_move
from lmrl_lightning.tasks.chess.env import ChessEnv, board_from_observation, spaced

PIECE_VALUES = {chess.PAWN: 1, chess.KNIGHT: 3, chess.BISHOP: 3, chess.ROOK: 5, chess.QUEEN: 9, chess.KING: 0}
FULL_STRENGTH = EnginePlayer(nodes=1000)


def _position(history: TextHistory) -> chess.Board:
    return board_from_observation(history[-1].text)


def _played(history: TextHistory, board: chess.Board, move: chess.Move) -> TextHistory:
    return tuple(history) + (Text(spaced(board.san(move)), True),)


class RandomMover(TextPolicy):
    """A uniformly random legal move of the position shown."""

    def act(self, history: TextHistory, seed: Optional[int] = None) -> TextHistory:
        board = _position(history)
        return _played(history, board, random.Random(seed).choice(list(board.legal_moves)))


def material_gain(board: chess.Board, move: chess.Move) -> int:
    """Material White wins with `move` (the captured piece, plus a promotion's gain over the pawn)."""
    gain = 0
    if board.is_en_passant(move):
        gain = PIECE_VALUES[chess.PAWN]
    elif board.piece_at(move.to_square) is not None:
        gain = PIECE_VALUES[board.piece_at(move.to_square).piece_type]
    if move.promotion:
        gain += PIECE_VALUES[move.promotion] - PIECE_VALUES[chess.PAWN]
    return gain


class GreedyMaterialPlayer(TextPolicy):
    """One ply: a mating move if there is one, else a move winning the most material (random among ties)."""

    def act(self, history: TextHistory, seed: Optional[int] = None) -> TextHistory:
        board = _position(history)
        return _played(history, board, self.choose(board, random.Random(seed)))

    @staticmethod
    def choose(board: chess.Board, rng: random.Random) -> chess.Move:
        moves = list(board.legal_moves)
        rng.shuffle(moves)  # ties at random: max keeps the first best of a shuffled list

        def value(move: chess.Move) -> int:
            board.push(move)
            mates = board.is_checkmate()
            board.pop()
            return 1000 if mates else material_gain(board, move)

        return max(moves, key=value)


def agent_player(agent_elo: float, nodes: int = 1000) -> EnginePlayer:
    """The engine settings for a sampled agent Elo: UCI_Elo clamped into Stockfish 15.1's 1350..2850. The paper's
    800-1349 become 1350, exactly what the original's Elo settings gave (15.1 ignores values below its range)."""
    return EnginePlayer(elo=int(min(max(round(agent_elo), MIN_ELO), MAX_ELO)), nodes=nodes)


class StockfishPlayer(PrivilegedPolicy):
    """Stockfish's move in the game's position: `player`, or when None the game's `agent_elo` reset option."""

    def __init__(self, player: Optional[EnginePlayer] = None, nodes: int = 1000):
        self.player = player
        self.nodes = nodes

    def action(self, env: TextEnv, history: TextHistory, seed: int) -> str:
        board = _game_board(env)
        player = self.player or agent_player(env.options["agent_elo"], self.nodes)
        return spaced(board.san(engine_move(board, player)))


class EpsilonGreedyStockfish(PrivilegedPolicy):
    """A random legal move with probability epsilon (the game's `epsilon` option, else `epsilon`), otherwise
    `player`'s move (default: full strength, 1000 nodes)."""

    def __init__(self, epsilon: float = 0.0, player: EnginePlayer = FULL_STRENGTH):
        self.epsilon = epsilon
        self.player = player

    def action(self, env: TextEnv, history: TextHistory, seed: int) -> str:
        board = _game_board(env)
        rng = random.Random(seed)
        if rng.random() < env.options.get("epsilon", self.epsilon):
            move = rng.choice(list(board.legal_moves))
        else:
            move = engine_move(board, self.player)
        return spaced(board.san(move))


def _game_board(env: TextEnv) -> chess.Board:
    if not isinstance(env, ChessEnv):
        raise TypeError(f"a Stockfish player plays in a ChessEnv, got {type(env).__name__}")
    return env.board.copy(stack=False)
