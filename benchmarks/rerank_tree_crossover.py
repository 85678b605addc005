"""Where laying candidates side by side in the prompt's row (`rerank._tree_scores`) stops paying: per-state candidate
scoring with the tree mask against one row per (prompt, candidate) on gathered cache rows, for candidate sets of
growing size, on a freshly initialised model (weights do not change the cost) and random token ids.

Sets the evidence for `rerank.MAX_TREE_TOKENS`: the tree wins while its extra attention (every candidate token meets
every other candidate's positions, masked) costs less than the gathered copies of the prompt's cache.

Run:  python benchmarks/rerank_tree_crossover.py --threads 1
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, command_line, machine_info, median, quiet_libraries, write_json  # noqa: E402

quiet_libraries()

from lmrl_lightning.models.backbone import BackboneConfig, build_backbone  # noqa: E402
from lmrl_lightning.policies import rerank  # noqa: E402


class _Vocabulary:
    """What building a preset reads of a tokenizer: its size and special ids (no tokenizer is needed here)."""

    def __init__(self, size: int):
        self.size, self.bos_token_id, self.eos_token_id, self.pad_token_id = size, 0, 0, 1

    def __len__(self) -> int:
        return self.size


def build_model(preset: str, vocab: int, positions: int):
    return build_backbone(BackboneConfig(preset, max_positions=positions), _Vocabulary(vocab)).eval()


def timed(model, prompts, sets, tree: bool) -> float:
    features = lambda *args: rerank.lm_features(model, *args)  # noqa: E731
    scores = lambda f, tokens, _ends: rerank.token_logprobs(f[0], tokens)  # noqa: E731
    start = time.perf_counter()
    with torch.inference_mode():
        rerank.state_candidate_scores(features, scores, 0, prompts, sets, "cpu", None, tree=tree)
    return time.perf_counter() - start


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny-rope")
    p.add_argument("--sets", default="4x3,10x4,25x5,40x5,80x5,160x5,400x6",
                   help="comma-separated CANDIDATESxTOKENS (Wordle's answers: 400x6)")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--prompt-tokens", type=int, default=80, help="a chess FEN, letter-spaced, is about 70-90")
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--results", default=str(RESULTS_DIR / "rerank_tree_crossover.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sets.split(",")]
    model = build_model(args.preset, args.vocab, args.prompt_tokens + max(t for _, t in sizes) + 8)
    rerank.MAX_TREE_TOKENS = 10 ** 9  # the arms choose the path with `tree`
    rows = []
    for n_candidates, tokens in sizes:
        prompts = [[rng.randrange(3, args.vocab) for _ in range(args.prompt_tokens)] for _ in range(args.prompts)]
        sets = [[[rng.randrange(3, args.vocab) for _ in range(tokens)] for _ in range(n_candidates)] for _ in prompts]
        timed(model, prompts[:2], sets[:2], True)  # warm-up
        runs = {"tree": [], "gathered": []}
        for _ in range(args.repeats):
            runs["tree"].append(timed(model, prompts, sets, True))
            runs["gathered"].append(timed(model, prompts, sets, False))
        ratio = median([g / t for g, t in zip(runs["gathered"], runs["tree"])])
        rows.append({"candidates": n_candidates, "tokens_each": tokens, "set_tokens": n_candidates * tokens,
                     "tree_seconds": runs["tree"], "gathered_seconds": runs["gathered"],
                     "speedup_paired_median": round(ratio, 3)})
        print(f"{n_candidates} x {tokens} = {n_candidates * tokens} tokens: tree {median(runs['tree']):.3f} s, "
              f"gathered {median(runs['gathered']):.3f} s, {ratio:.2f}x", flush=True)
    write_json(Path(args.results), {"benchmark": "rerank_tree_crossover", "command": command_line(),
                                    "machine": machine_info(), "config": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
