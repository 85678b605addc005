"""ILQL checkpoints decoded with their online networks against their Polyak-averaged target networks
(`Decoding.value_networks`; the original's re-ranker scores with the target Q), side by side on the same episodes.

Each checkpoint is evaluated with the task's protocol and default decoding at its own beta (or each of `--betas`),
once per policy seed in `--seeds` for each of the two network sets, so both arms see the same start states and
sampling seeds.
Issue 15 (goal 1): the FO-Maze ILQL scores swing by about 10 points between evaluations of one run; the averaged
weights are a candidate for steadier guidance.

Run:  python benchmarks/ilql_decode_networks.py runs/ilql_forced_targets/*/checkpoints/ilql.ckpt --seeds 0,1 --threads 1
      (writes benchmarks/results/ilql_decode_networks.json; the checkpoints: `ilql_forced_targets.py`'s four arms)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, command_line, machine_info, quiet_libraries, write_json  # noqa: E402

quiet_libraries()

from lmrl_lightning.algorithms.base import load_module  # noqa: E402
from lmrl_lightning.evaluation import EvaluationProtocol, evaluate_module, summarise  # noqa: E402
from lmrl_lightning.policies import Decoding  # noqa: E402
from lmrl_lightning.registry import get_task  # noqa: E402

NETWORKS = ("online", "target")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="ILQL checkpoints (.ckpt)")
    p.add_argument("--task", default="maze")
    p.add_argument("--variant", default="fo")
    p.add_argument("--episodes", type=int, default=800, help="evaluation episodes per seed (maze: 25 starts x 32)")
    p.add_argument("--seeds", default="0", help="comma-separated policy sampling seeds")
    p.add_argument("--betas", default="", help="comma-separated decoding betas (default: each checkpoint's own)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--results", default=str(RESULTS_DIR / "ilql_decode_networks.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    task = get_task(args.task)
    seeds = [int(s) for s in args.seeds.split(",")]
    started, rows = time.time(), []
    betas = [float(b) for b in args.betas.split(",") if b] or [None]
    for checkpoint in args.checkpoints:
        module, _ = load_module(checkpoint)
        module.eval()
        for beta in betas:
            row = {"checkpoint": checkpoint, "beta": beta if beta is not None else float(module.decoding_beta)}
            for networks in NETWORKS:
                scores = []
                for seed in seeds:
                    decoding = Decoding(task.default_decoding, beta=beta, value_networks=networks)
                    protocol = EvaluationProtocol(args.task, args.variant, args.episodes, 1024, seed, decoding)
                    summary = summarise(evaluate_module(module, protocol), task.normalisation[args.variant])
                    scores.append(summary.normalised_score)
                    print(f"{checkpoint} beta {row['beta']:g} {networks} seed {seed}: {summary.normalised_score:.1f} "
                          f"(success {summary.success_rate:.3f})", flush=True)
                row[networks] = {"scores": scores, "mean": statistics.fmean(scores)}
            rows.append(row)
            write_json(Path(args.results), {
                "benchmark": "ilql_decode_networks", "command": command_line(), "machine": machine_info(),
                "config": vars(args), "rows": rows, "wall_seconds": round(time.time() - started, 1),
            })
    for row in rows:
        print(f"{row['checkpoint']} beta {row['beta']:g}: online {row['online']['mean']:.1f}, "
              f"target {row['target']['mean']:.1f}")


if __name__ == "__main__":
    main()
