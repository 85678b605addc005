"""Chess Endgames' starting positions (spec §2.5): random legal placements of a lone black king against White's
king and heavy pieces, and the 645 fixed evaluation positions shipped with the package.

A setup is the original's piece string: `kQK` (black king; white queen and king), `kRK`, `kQRK`, `kRRK`. A random
position places the pieces one by one on distinct random squares and keeps the placement when python-chess finds
it valid with White to move and White not in check (the original's `large_piece_random_endgame`).

The evaluation positions (`eval_positions()`, data/endgame_eval_positions.txt) were drawn once by
`python -m lmrl_lightning.tasks.chess.make_eval_positions` (fixed seed; see that module for the filter). Training
positions are drawn the same way but every draw that hits an evaluation position is redrawn, so no generated
dataset and no online round ever starts from one (by construction, not by chance).
"""
from __future__ import annotations

import random
from functools import lru_cache
from importlib import resources
from typing import Optional

import chess

SETUPS: tuple[str, ...] = ("kQK", "kRK", "kQRK", "kRRK")
EVAL_POSITIONS_FILE = "endgame_eval_positions.txt"
N_EVAL_POSITIONS = 645


def position_key(fen: str) -> str:
    """The placement, side to move, castling and en-passant fields of a FEN: what makes two starts the same
    position (the move counters do not)."""
    return " ".join(fen.split()[:4])


def random_placement(setup: str, rng: random.Random) -> str:
    """A FEN of `setup`'s pieces on random distinct squares, valid, White to move and not in check."""
    if not setup or any(symbol not in "KQRBNPkqrbnp" for symbol in setup):
        raise ValueError(f"setup must be a string of piece letters such as 'kQK', got {setup!r}")
    board = chess.Board.empty()
    while True:
        board.clear()
        for symbol, square in zip(setup, rng.sample(chess.SQUARES, len(setup))):
            board.set_piece_at(square, chess.Piece.from_symbol(symbol))
        if board.is_valid() and not board.is_check() and not board.is_game_over():
            return board.fen()


@lru_cache(maxsize=None)
def eval_positions() -> tuple[str, ...]:
    """The 645 evaluation positions (FENs), in their fixed order."""
    text = resources.files("lmrl_lightning.tasks.chess").joinpath("data", EVAL_POSITIONS_FILE).read_text("utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


@lru_cache(maxsize=None)
def eval_position_keys() -> frozenset[str]:
    return frozenset(position_key(fen) for fen in eval_positions())


def training_position(seed: Optional[int], setup: Optional[str] = None) -> str:
    """A random start for training (datasets, online rounds): `setup` (default: one of SETUPS drawn by the seed),
    never one of the evaluation positions."""
    rng = random.Random(seed)
    setup = setup or rng.choice(SETUPS)
    excluded = eval_position_keys()
    while True:
        fen = random_placement(setup, rng)
        if position_key(fen) not in excluded:
            return fen
