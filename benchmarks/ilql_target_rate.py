"""How fast ILQL learns FO Maze as its target networks track the online ones faster (issue 15, goal 1): the
quickstart's ILQL (from the quickstart's BC checkpoint, beta 8, 800 evaluation episodes) at each Polyak rate of
`--polyaks` and each step count of `--value-steps`, side by side in one run.

The Polyak rate is how far the target trunk and target Q heads move towards the online ones each step; values
propagate one token back per target update (Q <- r + gamma V(s'), V <- expectile of the target Q), so with rate
0.01 a hop takes about 100 steps. ILQL's definition is unchanged at any rate (spec §3.5; the paper: 0.005).

Run:  python benchmarks/ilql_target_rate.py --polyaks 0.01,0.05,0.2 --value-steps 600,1200 --threads 1
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, command_line, machine_info, quickstart_bc, quiet_libraries, write_json  # noqa: E402

quiet_libraries()

from lmrl_lightning.quickstart import train_and_evaluate  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--polyaks", default="0.01,0.05,0.2")
    p.add_argument("--value-steps", default="600,1200")
    p.add_argument("--episodes", type=int, default=800)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="runs/ilql_target_rate")
    p.add_argument("--results", default=str(RESULTS_DIR / "ilql_target_rate.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    _, bc, rows = quickstart_bc(out, args.episodes, args.seed)
    for steps in [int(s) for s in args.value_steps.split(",")]:
        for polyak in [float(x) for x in args.polyaks.split(",")]:
            started = time.time()
            row = train_and_evaluate("ILQL", out / "data" / "maze_fo", out / f"polyak_{polyak:g}_{steps}", "fo", "none",
                                     steps, args.episodes, args.seed, init_from=bc, polyak=polyak)
            rows.append({**row, "polyak": polyak, "wall_seconds": round(time.time() - started, 1)})
            print(f"ILQL polyak {polyak:g}, {steps} steps: score {row['normalised_score']:.1f}, "
                  f"success {row['success_rate']:.3f}, {row['seconds']:.0f} s", flush=True)
            write_json(Path(args.results), {"benchmark": "ilql_target_rate", "command": command_line(),
                                            "machine": machine_info(), "config": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
