"""Write Chess Endgames' 645 evaluation positions (run once; the file ships with the package):

    python -m lmrl_lightning.tasks.chess.make_eval_positions [--out tasks/chess/data/endgame_eval_positions.txt]

Positions are drawn as for training (`positions.random_placement`, the setup uniform over kQK, kRK, kQRK, kRRK,
seed 645) and kept when they are "not trivially solvable" and won for White: full-strength Stockfish (Threads 1,
NODES nodes, so the file does not depend on the machine) reports a forced mate for White that takes at least
MIN_MATE_PLIES = 15 plies, i.e. mate in 8 or more of White's moves, or reports no mate within its budget but an
evaluation of at least MIN_CENTIPAWNS for White. The paper keeps positions where Stockfish's mate distance is 15 or
more (appendix E.3); read as moves this would keep almost nothing (king and queen mate in at most 10 moves, the
double-piece setups in fewer), so plies are read. Duplicates are skipped. The header records these settings.
"""
from __future__ import annotations

import argparse
import random
from collections import Counter
from pathlib import Path

import chess
import chess.engine

from lmrl_lightning.tasks.chess.engine import HASH_MB, close_engines, stockfish_path
from lmrl_lightning.tasks.chess.positions import N_EVAL_POSITIONS, SETUPS, position_key, random_placement

SEED = 645
NODES = 20_000
MIN_MATE_PLIES = 15
MIN_CENTIPAWNS = 500
DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "endgame_eval_positions.txt"


def not_trivially_solvable(engine: chess.engine.SimpleEngine, fen: str) -> bool:
    """Whether White wins `fen`, but not by a mate shorter than MIN_MATE_PLIES plies (see the module docstring)."""
    info = engine.analyse(chess.Board(fen), chess.engine.Limit(nodes=NODES), game=object())
    score = info["score"].white()
    mate = score.mate()
    if mate is not None:
        return mate > 0 and 2 * mate - 1 >= MIN_MATE_PLIES
    return score.score() >= MIN_CENTIPAWNS


def draw_positions(n: int, seed: int) -> tuple[list[str], Counter]:
    """`n` distinct kept positions, drawn in order from `seed`; also how many of each setup were kept."""
    rng, kept, keys, per_setup = random.Random(seed), [], set(), Counter()
    with chess.engine.SimpleEngine.popen_uci(stockfish_path()) as engine:
        engine.configure({"Threads": 1, "Hash": HASH_MB})
        while len(kept) < n:
            setup = rng.choice(SETUPS)
            fen = random_placement(setup, rng)
            if position_key(fen) not in keys and not_trivially_solvable(engine, fen):
                kept.append(fen)
                keys.add(position_key(fen))
                per_setup[setup] += 1
    return kept, per_setup


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--n", type=int, default=N_EVAL_POSITIONS)
    args = parser.parse_args(argv)
    try:
        fens, per_setup = draw_positions(args.n, SEED)
    finally:
        close_engines()
    header = (f"# Chess Endgames evaluation positions: {len(fens)} FENs, seed {SEED}, Stockfish 15.1 at {NODES} nodes, "
              f"kept when White mates in >= {MIN_MATE_PLIES} plies or leads by >= {MIN_CENTIPAWNS} cp without a "
              f"mate found; per setup: {dict(sorted(per_setup.items()))}. Written by make_eval_positions.py.\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + "".join(f + "\n" for f in fens), encoding="utf-8")
    print(f"wrote {len(fens)} positions to {args.out}: {dict(sorted(per_setup.items()))}")


if __name__ == "__main__":
    main()
