"""How strong the chess opponent is: scripted White players against `env.OPPONENT` (UCI_Elo 1350, 400 nodes).

    python -m lmrl_lightning.tasks.chess.measure_opponent [--games 100] [--out results.json]

Prints (and with --out writes as JSON, with the command and engine settings), per White player (uniformly random legal moves; 1-ply greedy material), White's wins, draws and losses
from the initial position, the mean game length in White moves, and games per second. Each player's game i uses
policy seed i; the opponent's handicap is clock-seeded inside Stockfish 15.1, so figures vary a little between runs.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from lmrl_lightning.atomic import atomic_write_json
from lmrl_lightning.env import PerEpisodePolicy
from lmrl_lightning.evaluation import summarise
from lmrl_lightning.registry import get_task
from lmrl_lightning.rollout import rollout
from lmrl_lightning.tasks.chess.engine import close_engines
from lmrl_lightning.tasks.chess.env import OPPONENT
from lmrl_lightning.tasks.chess.policies import GreedyMaterialPlayer, RandomMover


def measure(player, games: int) -> dict[str, float]:
    """White's results with `player` over `games` games against the opponent."""
    task = get_task("chess")
    start = time.perf_counter()
    episodes = rollout(task.make_env("default"), PerEpisodePolicy(player), task.eval_episodes("default", games),
                       batch_size=min(games, 64))
    seconds = time.perf_counter() - start
    returns = [e.total_reward for e in episodes]
    return {"games": games, "white_wins": sum(r > 0 for r in returns), "draws": sum(r == 0 for r in returns),
            "white_losses": sum(r < 0 for r in returns), "mean_length": summarise(episodes).mean_length,
            "games_per_s": games / seconds}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=100)
    parser.add_argument("--out", default=None, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    results = {}
    try:
        for name, player in (("random mover", RandomMover()), ("greedy material", GreedyMaterialPlayer())):
            results[name] = {k: round(v, 2) for k, v in measure(player, args.games).items()}
            print(name, results[name], flush=True)
    finally:
        close_engines()
    if args.out:
        atomic_write_json(args.out, {"command": " ".join(["python -m lmrl_lightning.tasks.chess.measure_opponent",
                                                          *sys.argv[1:]]),
                                     "opponent": dataclasses.asdict(OPPONENT), "results": results})


if __name__ == "__main__":
    main()
