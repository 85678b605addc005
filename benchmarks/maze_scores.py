"""Maze scores: BC, %BC, MC Returns and ILQL on the maze (FO or PO), evaluated with the paper's protocol
(`--episodes`, 800 = 25 start positions x 32), beside the paper's Table 2 (normalised) and Table 4 (raw return)
numbers.

Each algorithm runs through `lmrl_lightning.quickstart.train_and_evaluate` (the same code as `lmrl quickstart`):
BC and %BC train a model preset from scratch (`--preset`, default tiny); MC and ILQL start from the BC row's checkpoint (or `--bc-checkpoint`).

Run:  python benchmarks/maze_scores.py --variant fo     (writes benchmarks/results/maze_scores_fo.json)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, command_line, machine_info, quiet_libraries, write_json  # noqa: E402

quiet_libraries()

from lmrl_lightning.quickstart import (  # noqa: E402
    DEFAULT_STEPS, DEFAULT_VALUE_STEPS, PAPER, format_table, prepare_maze_data, run_algorithms,
)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="fo", choices=["fo", "po"])
    p.add_argument("--algorithms", default="BC,%BC,MC,ILQL", help="comma-separated, in order; MC/ILQL need BC first")
    p.add_argument("--bc-checkpoint", default=None, help="start MC/ILQL from this BC checkpoint instead of a BC row")
    p.add_argument("--episodes", type=int, default=800, help="evaluation episodes, 25 starts x 32 (paper: 800)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="BC and %%BC training steps")
    p.add_argument("--value-steps", type=int, default=DEFAULT_VALUE_STEPS, help="MC and ILQL training steps")
    p.add_argument("--mc-beta", type=float, default=None, help="MC decoding beta (default: quickstart's)")
    p.add_argument("--ilql-beta", type=float, default=None, help="ILQL decoding beta (default: quickstart's)")
    p.add_argument("--beta-sweep", default="", help="comma-separated betas: choose MC/ILQL's by a seed+1 sweep")
    p.add_argument("--decay", default="none", choices=["none", "cosine"],
                   help="learning rate after the warm-up: constant (this benchmark's results so far) or cosine to 0 at "
                        "the last step (the quickstart's default)")
    p.add_argument("--preset", default="tiny", help="BC/%%BC model preset (tiny: GPT-2 blocks; tiny-rope: Llama blocks)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--accelerator", default="cpu", help="Lightning accelerator for training and evaluation (cpu, gpu)")
    p.add_argument("--out", default="runs/maze_scores", help="working directory (data, checkpoints, logs)")
    p.add_argument("--results", default=None, help="JSON output (default: benchmarks/results/maze_scores_<variant>.json)")
    args = p.parse_args(argv)

    started = time.time()
    out_dir = Path(args.out) / args.variant
    print(f"[1/{1 + len(args.algorithms.split(','))}] maze {args.variant.upper()} dataset")
    prepare_maze_data(out_dir / "data" / f"maze_{args.variant}", args.variant, args.seed)
    results = Path(args.results) if args.results else RESULTS_DIR / f"maze_scores_{args.variant}.json"

    def save(rows: list[dict]) -> Path:
        # Written after every row: a run stopped part-way keeps the rows it finished.
        return write_json(results, {
            "benchmark": "maze_scores",
            "command": command_line(),
            "machine": machine_info(),
            "config": vars(args),
            "rows": rows,
            "paper": {name: {"normalised": s, "return": r} for name, (s, r) in PAPER[args.variant].items()},
            "table": format_table(rows, args.variant),
            "wall_seconds": round(time.time() - started, 1),
        })

    rows = run_algorithms(
        args.algorithms.split(","), out_dir, args.variant, args.episodes, args.steps, args.value_steps, args.seed,
        betas={"MC": args.mc_beta, "ILQL": args.ilql_beta},
        beta_sweep=[float(b) for b in args.beta_sweep.split(",") if b], accelerator=args.accelerator, on_row=save,
        bc_checkpoint=Path(args.bc_checkpoint) if args.bc_checkpoint else None, decay=args.decay, preset=args.preset,
    )
    print()
    print(format_table(rows, args.variant))
    print(f"\nwall time {time.time() - started:.1f} s; results: {save(rows)}")


if __name__ == "__main__":
    main()
