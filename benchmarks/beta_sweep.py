"""Decode-time beta sweep of value-based checkpoints (MC Returns, ILQL): normalised score at each beta, and for ILQL
with its online or its Polyak-averaged target networks (`Decoding.value_networks`); with re-ranking, the values
summed over a candidate's tokens or read at its last token (`Decoding.candidate_value`).

beta only weighs the value guidance at decoding time (logits_pi_beta + beta * guidance), so one trained checkpoint
serves every beta. Sweep on a policy seed other than the one of the final evaluation, then report the chosen
beta's score under the paper's protocol (maze_scores.py --mc-beta/--ilql-beta), so the choice is not fitted to the
reported episodes. Every checkpoint, beta and network set plays the same episodes (task protocol, policy seeds).

Run:  python benchmarks/beta_sweep.py runs/maze_scores/fo/checkpoints/ilql.ckpt --betas 1,2,4,8,16 --episodes 100
      python benchmarks/beta_sweep.py A.ckpt B.ckpt --betas 8 --value-networks online,target --seeds 0,1 --episodes 800
      python benchmarks/beta_sweep.py mc.ckpt --decoding rerank_greedy --candidate-value sum,last --episodes 200
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, command_line, machine_info, quiet_libraries, write_json  # noqa: E402

quiet_libraries()

from lmrl_lightning.algorithms.base import load_module  # noqa: E402
from lmrl_lightning.policies import Decoding  # noqa: E402
from lmrl_lightning.registry import get_task  # noqa: E402
from lmrl_lightning.evaluation import EvaluationProtocol, evaluate_module, summarise  # noqa: E402


def sweep(checkpoint: str, betas: list[float], networks: list[str], seeds: list[int], episodes: int,
          batch_size: int, kind: Optional[str] = None, readings: Sequence[str] = ("sum",)) -> tuple[dict, list[dict]]:
    """One checkpoint's rows: a (beta, networks, candidate reading) triple each, with its score per seed and their
    mean, decoding with `kind` (None: the task's default)."""
    module, meta = load_module(checkpoint)
    module.eval()
    task = get_task(meta.get("task") or "maze")
    variant = meta.get("variant") or task.variants[0]
    about = {"checkpoint": checkpoint, "algorithm": type(module).__name__, "task": task.name, "variant": variant}
    rows = []
    for beta, nets, reading in itertools.product(betas, networks, readings):
        start, runs = time.time(), []
        for seed in seeds:
            decoding = Decoding(kind or task.default_decoding, beta=beta, value_networks=nets, candidate_value=reading)
            protocol = EvaluationProtocol(task.name, variant, episodes, batch_size, seed, decoding)
            runs.append({"seed": seed, **vars(summarise(evaluate_module(module, protocol), task.normalisation[variant]))})
        score = statistics.fmean(r["normalised_score"] for r in runs)
        rows.append({"checkpoint": checkpoint, "beta": beta, "value_networks": nets, "candidate_value": reading,
                     "normalised_score": score, "seconds": round(time.time() - start, 1), "runs": runs})
        print(f"{checkpoint} beta {beta:>6g} {nets:>6} {reading:>4}: score {score:6.1f}  "
              + "  ".join(f"seed {r['seed']}: {r['normalised_score']:.1f} (success {r['success_rate']:.3f})"
                          for r in runs) + f"  ({rows[-1]['seconds']} s)", flush=True)
    return about, rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--betas", default="0,1,2,4,8,16,32", help="comma-separated")
    p.add_argument("--value-networks", default="online", help="comma-separated: online and/or target (ILQL)")
    p.add_argument("--decoding", default=None, choices=["sample", "greedy", "rerank", "rerank_greedy"],
                   help="default: the task's")
    p.add_argument("--candidate-value", default="sum",
                   help="comma-separated: sum and/or last (re-ranking: the values over a candidate's tokens or at its last)")
    p.add_argument("--episodes", type=int, default=100, help="evaluation episodes per beta (maze: 25 starts x 4)")
    p.add_argument("--seeds", default="1", help="comma-separated policy sampling seeds (the reported evaluation uses 0)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--results", default=None,
                   help="JSON output (default: benchmarks/results/beta_sweep_<algorithm>_<task>_<variant>.json)")
    args = p.parse_args(argv)
    betas = [float(b) for b in args.betas.split(",")]
    networks, seeds = args.value_networks.split(","), [int(s) for s in args.seeds.split(",")]

    checkpoints, rows = [], []
    for checkpoint in args.checkpoints:
        about, found = sweep(checkpoint, betas, networks, seeds, args.episodes, args.batch_size, args.decoding,
                             args.candidate_value.split(","))
        best = max(found, key=lambda r: r["normalised_score"])
        print(f"{checkpoint}: best beta {best['beta']:g} ({best['value_networks']}, {best['candidate_value']}): "
              f"{best['normalised_score']:.1f}")
        checkpoints.append({**about, "best_beta": best["beta"], "best_value_networks": best["value_networks"],
                            "best_candidate_value": best["candidate_value"]})
        rows += found
    first = checkpoints[0]
    name = f"{first['algorithm'].lower()}_{first['task']}_{first['variant']}"
    payload = {"benchmark": "beta_sweep", "command": command_line(), "machine": machine_info(), "config": vars(args),
               "checkpoints": checkpoints, "rows": rows}
    path = write_json(Path(args.results) if args.results else RESULTS_DIR / f"beta_sweep_{name}.json", payload)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
