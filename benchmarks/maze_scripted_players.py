"""Reference rows for the maze tables: the scripted players under the paper's evaluation protocol.

Each player (uniform random walk, the depth-first solver, the data-collection mixture, BFS optimal) plays the
`--episodes` (800 = 25 starts x 32) of `lmrl eval`, unconfined, for up to 101 turns. The players read the
simulator's state, so their moves are the same on FO and PO; the normalised score differs only by the
variant's constants. A learned PO policy that cannot infer its position from the move history plays like the
random walk; one that does can approach the optimum.

Run:  python benchmarks/maze_scripted_players.py   (writes benchmarks/results/maze_scripted_players.json)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, command_line, machine_info, write_json  # noqa: E402

from lmrl_lightning.registry import get_task  # noqa: E402
from lmrl_lightning.evaluation import EvaluationProtocol, evaluate_task, summarise  # noqa: E402
from lmrl_lightning.tasks.maze.policies import (  # noqa: E402
    MixturePolicy, OptimalMazePolicy, RandomMazePolicy, SuboptimalMazeSolver,
)

PLAYERS = {
    "random walk": RandomMazePolicy(),
    "data mixture (15% solver)": MixturePolicy(0.15),
    "depth-first solver": SuboptimalMazeSolver(),
    "BFS optimal": OptimalMazePolicy(),
}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=800, help="evaluation episodes, 25 starts x 32 (paper: 800)")
    p.add_argument("--results", default=str(RESULTS_DIR / "maze_scripted_players.json"))
    args = p.parse_args(argv)
    task = get_task("maze")
    started = time.time()
    rows = []
    head = f"{'player':<28}{'return':>9}{'success':>9}{'FO score':>10}{'PO score':>10}"
    print(head + "\n" + "-" * len(head))
    for name, player in PLAYERS.items():
        summary = summarise(evaluate_task(player, EvaluationProtocol("maze", "po", args.episodes, batch_size=1024)))
        normalised = {v: task.normalisation[v](summary.mean_return) for v in ("fo", "po")}
        rows.append({"player": name, **vars(summary), "normalised": normalised})
        print(f"{name:<28}{summary.mean_return:>9.2f}{summary.success_rate:>9.3f}{normalised['fo']:>10.1f}"
              f"{normalised['po']:>10.1f}")
    path = write_json(Path(args.results), {
        "benchmark": "maze_scripted_players", "command": command_line(), "machine": machine_info(),
        "config": vars(args), "rows": rows, "wall_seconds": round(time.time() - started, 1),
    })
    print(f"results: {path}")


if __name__ == "__main__":
    main()
