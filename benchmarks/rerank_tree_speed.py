"""Re-ranking evaluations with the candidates side by side in each prompt's row (`rerank._tree_scores`, a tree mask)
against one row per (prompt, candidate) on copies of the prompt's KV cache (the path before; `MAX_TREE_TOKENS` 0).

Loads trained checkpoints and plays the same evaluation episodes (the task's protocol, first `--episodes`, re-ranking
decoding) both ways, alternating `--repeats` times; reports each arm's seconds, the paired median ratio and whether
both arms played the same episodes (they should, up to float rounding of near-tied scores).

Run:  python benchmarks/rerank_tree_speed.py runs/maze_po_rope_s0/po/checkpoints/bc.ckpt --episodes 50 --threads 1   (the maze plays multiples of 25)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, command_line, load_average, machine_info, median, quiet_libraries, write_json  # noqa: E402

quiet_libraries()

from lmrl_lightning.algorithms.base import load_module  # noqa: E402
from lmrl_lightning.evaluation import EvaluationProtocol, evaluate_module  # noqa: E402
from lmrl_lightning.policies import Decoding, rerank  # noqa: E402
from lmrl_lightning.registry import get_task  # noqa: E402


def play(module, protocol: EvaluationProtocol, tree: bool) -> tuple[float, list]:
    default = rerank.MAX_TREE_TOKENS
    rerank.MAX_TREE_TOKENS = default if tree else 0
    try:
        start = time.perf_counter()
        episodes = evaluate_module(module, protocol)
        return time.perf_counter() - start, episodes
    finally:
        rerank.MAX_TREE_TOKENS = default


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--episodes", type=int, default=64, help="the protocol's first episodes")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--results", default=str(RESULTS_DIR / "rerank_tree_speed.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for checkpoint in args.checkpoints:
        module, meta = load_module(checkpoint)
        module.eval()
        task = get_task(meta.get("task") or "maze")
        variant = meta.get("variant") or task.variants[0]
        protocol = EvaluationProtocol(task.name, variant, args.episodes, args.batch_size, decoding=Decoding("rerank"))
        runs, played = {True: [], False: []}, {}
        for repeat in range(args.repeats):
            for tree in (True, False):
                seconds, played[tree] = play(module, protocol, tree)
                runs[tree].append({"seconds": round(seconds, 3), "load_average": load_average()})
                print(f"{checkpoint} repeat {repeat}: tree={tree}: {seconds:.1f} s", flush=True)
        ratios = [copies["seconds"] / side["seconds"] for side, copies in zip(runs[True], runs[False])]
        rows.append({
            "checkpoint": checkpoint, "algorithm": type(module).__name__, "task": task.name, "variant": variant,
            "episodes": args.episodes, "batch_size": args.batch_size,
            "agent_turns": sum(sum(t.is_action for t in e.turns) for e in played[True]),
            "same_episodes": [e.turns for e in played[True]] == [e.turns for e in played[False]],
            "side_by_side": runs[True], "copies": runs[False], "speedup_paired_median": round(median(ratios), 3),
        })
        print(f"{checkpoint}: {rows[-1]['speedup_paired_median']}x (paired median), same episodes: "
              f"{rows[-1]['same_episodes']}", flush=True)
        write_json(Path(args.results), {"benchmark": "rerank_tree_speed", "command": command_line(),
                                        "machine": machine_info(), "config": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
