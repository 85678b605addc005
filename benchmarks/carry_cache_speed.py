"""Evaluation rollouts with KV caches carried across turns (`Decoding.carry_cache`) against without, on any task.

Loads a trained checkpoint, then plays the same evaluation episodes (the task's protocol, first `--episodes`) with
`carry_cache` true and false, alternating `--repeats` times (the machine may be shared: the paired ratio is what
counts), and reports each arm's seconds and episodes/s, the paired median ratio, the prompt tokens per agent turn,
and whether both arms played the same episodes (they should: the same turns from the same seeds). Rows are merged
into the results file by (task, variant, decoding).

Run:  python benchmarks/carry_cache_speed.py --checkpoint runs/textnav_scores/textnav_po_bc/checkpoints/last.ckpt \\
          --task textnav --variant po --episodes 64 --threads 1
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    RESULTS_DIR, command_line, load_average, machine_info, median, quiet_libraries, write_json,
)

quiet_libraries()

from lmrl_lightning.algorithms.base import load_module  # noqa: E402
from lmrl_lightning.evaluation import EvaluationProtocol, evaluate_module  # noqa: E402
from lmrl_lightning.policies import Decoding  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a trained module's checkpoint (local file)")
    p.add_argument("--task", required=True)
    p.add_argument("--variant", default=None)
    p.add_argument("--decoding", default=None, help="decoding kind (default: the task's)")
    p.add_argument("--episodes", type=int, default=64, help="the protocol's first episodes")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--results", default=str(RESULTS_DIR / "carry_cache_speed.json"))
    return p.parse_args(argv)


def play(module, args, carry: bool) -> tuple[float, list]:
    """Seconds to play the protocol's first episodes, and the episodes."""
    protocol = EvaluationProtocol(args.task, args.variant, args.episodes, args.batch_size).resolved()
    decoding = Decoding(args.decoding or protocol.decoding.kind, carry_cache=carry)
    start = time.perf_counter()
    episodes = evaluate_module(module, dataclasses.replace(protocol, decoding=decoding))
    return time.perf_counter() - start, episodes


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = machine_info()
    args.variant = EvaluationProtocol(args.task, args.variant).resolved().variant
    module, _ = load_module(args.checkpoint)
    module.eval()
    runs = {True: [], False: []}
    played = {}
    for repeat in range(args.repeats):
        for carry in (True, False):
            seconds, episodes = play(module, args, carry)
            runs[carry].append({"seconds": round(seconds, 3), "load_average": load_average()})
            played[carry] = episodes
            print(f"repeat {repeat}: carry_cache={carry}: {len(episodes)} episodes in {seconds:.1f} s", flush=True)
    turns = sum(sum(t.is_action for t in e.turns) for e in played[True])
    ratios = [off["seconds"] / on["seconds"] for on, off in zip(runs[True], runs[False])]
    rate = {carry: round(args.episodes / median([r["seconds"] for r in runs[carry]]), 3) for carry in runs}
    row = {
        "task": args.task, "variant": args.variant, "decoding": args.decoding or "task default",
        "checkpoint": args.checkpoint, "episodes": args.episodes, "batch_size": args.batch_size,
        "agent_turns": turns, "same_episodes": [e.turns for e in played[True]] == [e.turns for e in played[False]],
        "carried": {"runs": runs[True], "episodes_per_s": rate[True]},
        "not_carried": {"runs": runs[False], "episodes_per_s": rate[False]},
        "speedup_paired_median": round(median(ratios), 3), "command": command_line(), "machine": machine,
    }
    print(f"{args.task} {args.variant}: carried {row['carried']['episodes_per_s']} episodes/s, not carried "
          f"{row['not_carried']['episodes_per_s']}: {row['speedup_paired_median']}x (paired median); same episodes: "
          f"{row['same_episodes']}")
    results = Path(args.results)
    rows = json.loads(results.read_text())["rows"] if results.is_file() else []
    key = (row["task"], row["variant"], row["decoding"])
    rows = [r for r in rows if (r["task"], r["variant"], r["decoding"]) != key] + [row]
    write_json(results, {"benchmark": "carry_cache_speed", "rows": rows})
    return row


if __name__ == "__main__":
    main()
