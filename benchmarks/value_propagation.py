"""How far back a value method's values carry its data's outcomes: Q of the data's own actions (and the guidance
decoding adds: ILQL's Q - V, MC's Q) binned by how many action tokens remain to the episode's end, for the data's
successful and unsuccessful episodes side by side.

ILQL bootstraps one action token at a time, and each step back passes through its Polyak-averaged target
networks, which lag about 1/polyak optimiser steps; MC Returns regresses on the returns directly. Where won and
lost episodes get the same values, decoding gets no guidance (advantages near 0) and stays at BC's level, however
large beta is. Every checkpoint reads the same episodes (the first `--episodes` successful and unsuccessful ones
of `--data`, in file order), chunked as the checkpoint's task trains (its history window).

Run:  python benchmarks/value_propagation.py runs/tn_fo_cos/textnav_fo_ilql/checkpoints/last.ckpt \
          runs/tn_fo_cos/textnav_fo_mc_returns/checkpoints/last.ckpt --data runs/textnav_rerun/data_fo/train.jsonl
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

import torch  # noqa: E402

from lmrl_lightning.algorithms.base import load_module  # noqa: E402
from lmrl_lightning.algorithms.value import ValueModule  # noqa: E402
from lmrl_lightning.data.collate import collate_chunks  # noqa: E402
from lmrl_lightning.data.jsonl import iter_episodes  # noqa: E402
from lmrl_lightning.data.tokenize import TurnTokenizer, episode_to_chunks  # noqa: E402
from lmrl_lightning.env import Episode  # noqa: E402
from lmrl_lightning.policies.rerank import model_positions  # noqa: E402
from lmrl_lightning.registry import get_task  # noqa: E402


def split_episodes(path: str, per_group: int) -> tuple[list[Episode], list[Episode], str]:
    """The first `per_group` successful and unsuccessful episodes of `path` and how they were told apart: the
    episodes' `success` where the data records it, else a return above the median of the first 10,000."""
    head = list(itertools.islice(iter_episodes(path), 10_000))
    if any("success" in e.meta for e in head):
        good, rule = (lambda e: e.success), "success"
    else:
        median = statistics.median(e.total_reward for e in head)
        good, rule = (lambda e: e.total_reward > median), f"return above the median ({median:g})"
    won = [e for e in head if good(e)][:per_group]
    lost = [e for e in head if not good(e)][:per_group]
    return won, lost, rule


def action_token_values(module: ValueModule, episode: Episode, window: Optional[int],
                        max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Q of each of the episode's action tokens and the guidance there, in episode order, [n] each."""
    chunks = episode_to_chunks(episode, TurnTokenizer(module.tokenizer), window, max_length, "truncate")
    batch = collate_chunks(chunks, module.tokenizer.pad_token_id)
    hidden = module.hidden(module.trunk, batch["input_ids"], batch["attention_mask"])[:, :-1]
    tokens, mask = batch["input_ids"][:, 1:], batch["action_mask"]
    return module.action_value_at(hidden, tokens)[mask].float(), module.guidance_at(hidden, tokens)[mask].float()


def bin_label(edges: Sequence[int], remaining: int) -> str:
    for low, high in zip(edges, edges[1:]):
        if low <= remaining < high:
            return f"{low}-{high - 1}"
    return f"{edges[-1]}+"


@torch.no_grad()
def profile(checkpoint: str, groups: dict[str, list[Episode]], edges: Sequence[int]) -> dict:
    """One checkpoint's mean Q and guidance per (group, bin of action tokens left to the episode's end)."""
    module, meta = load_module(checkpoint)
    if not isinstance(module, ValueModule):
        raise SystemExit(f"{checkpoint}: a {type(module).__name__} has no values (MC Returns or ILQL only)")
    module.eval()
    task = get_task(meta.get("task") or "maze")
    variant = meta.get("variant") or task.variants[0]
    window = task.history_window.get(variant)
    max_length = model_positions(module.trunk)
    sums: dict[tuple[str, str], list[float]] = {}
    start = time.time()
    for group, episodes in groups.items():
        for episode in episodes:
            q, guidance = (x.tolist() for x in action_token_values(module, episode, window, max_length))
            for k, (q_k, guidance_k) in enumerate(zip(q, guidance)):
                acc = sums.setdefault((group, bin_label(edges, len(q) - 1 - k)), [0.0, 0.0, 0])
                acc[0] += q_k
                acc[1] += guidance_k
                acc[2] += 1
    bins = [bin_label(edges, e) for e in edges]
    rows = []
    for b in bins:
        row = {"tokens_left": b}
        for group in groups:
            q_sum, g_sum, count = sums.get((group, b), (0.0, 0.0, 0))
            row[group] = {"q": q_sum / count, "guidance": g_sum / count, "action_tokens": count} if count else None
        if all(row[g] is not None for g in groups):
            first, second = list(groups)
            row["q_gap"] = row[first]["q"] - row[second]["q"]
        rows.append(row)
    return {"checkpoint": checkpoint, "algorithm": type(module).__name__, "task": task.name, "variant": variant,
            "history_window": window, "seconds": round(time.time() - start, 1), "bins": rows}


def markdown_table(results: list[dict]) -> str:
    lines = ["| checkpoint | algorithm | tokens left | Q, successful | Q, unsuccessful | gap | guidance, successful "
             "| guidance, unsuccessful |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for b in r["bins"]:
            if b["successful"] is None or b["unsuccessful"] is None:
                continue
            lines.append(f"| {r['checkpoint']} | {r['algorithm']} | {b['tokens_left']} | {b['successful']['q']:.3f} "
                         f"| {b['unsuccessful']['q']:.3f} | {b['q_gap']:.3f} | {b['successful']['guidance']:.3f} "
                         f"| {b['unsuccessful']['guidance']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="MC Returns or ILQL checkpoints")
    p.add_argument("--data", required=True, help="the JSONL episodes to read the values on (e.g. the training data)")
    p.add_argument("--episodes", type=int, default=20, help="episodes per group (successful, unsuccessful)")
    p.add_argument("--bins", default="0,6,12,24,48,96", help="lower edges of the tokens-left bins, comma-separated")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--results", default=str(RESULTS_DIR / "value_propagation.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    edges = sorted(int(b) for b in args.bins.split(","))
    won, lost, rule = split_episodes(args.data, args.episodes)
    if not won or not lost:
        raise SystemExit(f"{args.data}: needs both successful and unsuccessful episodes ({rule}); found "
                         f"{len(won)} and {len(lost)}")
    groups = {"successful": won, "unsuccessful": lost}
    results = [profile(c, groups, edges) for c in args.checkpoints]
    print(markdown_table(results))
    write_json(Path(args.results), {
        "benchmark": "value_propagation", "command": command_line(), "machine": machine_info(),
        "config": {**vars(args), "groups": rule, "episodes_per_group": [len(won), len(lost)]}, "results": results,
    })
    print(f"results: {args.results}")


if __name__ == "__main__":
    main()
