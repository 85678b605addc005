"""Decode-time beta sweep of a value-based checkpoint (MC Returns, ILQL): normalised score at each beta.

beta only weighs the value guidance at decoding time (logits_pi_beta + beta * guidance), so one trained checkpoint
serves every beta. Sweep on a policy seed other than the one of the final evaluation, then report the chosen
beta's score under the paper's protocol (maze_scores.py --mc-beta/--ilql-beta), so the choice is not fitted to the
reported episodes.

Run:  python benchmarks/beta_sweep.py runs/maze_scores/fo/checkpoints/ilql.ckpt --betas 1,2,4,8,16 --episodes 100
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, command_line, machine_info, quiet_libraries, write_json  # noqa: E402

quiet_libraries()

from lmrl_lightning.algorithms.base import load_module  # noqa: E402
from lmrl_lightning.policies import Decoding  # noqa: E402
from lmrl_lightning.registry import get_task  # noqa: E402
from lmrl_lightning.evaluation import EvaluationProtocol, evaluate_module, summarise  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--betas", default="0,1,2,4,8,16,32", help="comma-separated")
    p.add_argument("--episodes", type=int, default=100, help="evaluation episodes per beta (maze: 25 starts x 4)")
    p.add_argument("--seed", type=int, default=1, help="policy sampling seed (the reported evaluation uses 0)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--results", default=None, help="JSON output (default: benchmarks/results/beta_sweep_<name>.json)")
    args = p.parse_args(argv)

    module, meta = load_module(args.checkpoint)
    task = get_task(meta.get("task") or "maze")
    variant = meta.get("variant") or task.variants[0]
    rows = []
    for beta in (float(b) for b in args.betas.split(",")):
        start = time.time()
        decoding = Decoding(task.default_decoding, beta=beta)
        protocol = EvaluationProtocol(task.name, variant, args.episodes, args.batch_size, args.seed, decoding)
        summary = summarise(evaluate_module(module, protocol), task.normalisation[variant])
        rows.append({"beta": beta, "seconds": round(time.time() - start, 1), **vars(summary)})
        print(f"beta {beta:>6g}: score {summary.normalised_score:6.1f}  success {summary.success_rate:.3f}  "
              f"return {summary.mean_return:8.2f}  ({rows[-1]['seconds']} s)", flush=True)
    best = max(rows, key=lambda r: r["normalised_score"])
    print(f"best beta {best['beta']:g}: score {best['normalised_score']:.1f}")
    name = f"{type(module).__name__.lower()}_{task.name}_{variant}"
    payload = {"benchmark": "beta_sweep", "command": command_line(), "machine": machine_info(), "config": vars(args),
               "algorithm": type(module).__name__, "task": task.name, "variant": variant, "rows": rows,
               "best_beta": best["beta"]}
    path = write_json(Path(args.results) if args.results else RESULTS_DIR / f"beta_sweep_{name}.json", payload)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
