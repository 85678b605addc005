"""Re-ranking without the candidates' last column: a candidate's position k scores its token k + 1, so its last
token's forward pass scores nothing. Candidate scoring on gathered cache rows (decoding: `state_candidate_scores`;
PPO's update: `chunk_candidate_logprobs`, forward and backward) as it is now, against `lmrl_lightning/policies/
rerank.py` at `--before-ref` (which ran every column), interleaved in one process on the same inputs, for Wordle's
400 answers of 6 tokens and smaller sets; a freshly initialised model (weights do not change the cost) and random
token ids. The scores of both arms are compared.

Run:  python benchmarks/rerank_last_column.py --before-ref 19f805e --threads 1
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    RESULTS_DIR, command_line, machine_info, median, modules_at_revision, quiet_libraries, resolve_revision, write_json,
)

quiet_libraries()

from lmrl_lightning.policies import rerank  # noqa: E402
from rerank_tree_crossover import build_model  # noqa: E402


def decode_scores(module, model, prompts, sets) -> tuple[float, torch.Tensor]:
    """Seconds and scores of decoding's per-state candidate scoring on gathered rows."""
    features = lambda *args: module.lm_features(model, *args)  # noqa: E731
    scores = lambda f, tokens, _ends: module.token_logprobs(f[0], tokens)  # noqa: E731
    start = time.perf_counter()
    with torch.inference_mode():
        out = module.state_candidate_scores(features, scores, 0, prompts, sets, "cpu", None, tree=False)
    return time.perf_counter() - start, torch.cat(out)


def update_scores(module, model, ids, mask, choice, sets) -> tuple[float, torch.Tensor]:
    """Seconds of PPO's candidate pass forward and backward, and its scores."""
    model.zero_grad()
    start = time.perf_counter()
    hidden, scores = module.chunk_candidate_logprobs(model, 0, ids, mask, choice, sets)
    (scores.sum() + hidden.pow(2).mean()).backward()
    return time.perf_counter() - start, scores.detach()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before-ref", required=True, type=resolve_revision, help="rerank.py's revision to compare with")
    p.add_argument("--preset", default="tiny-rope")
    p.add_argument("--sets", default="4x3,30x5,400x6", help="comma-separated CANDIDATESxTOKENS (Wordle: 400x6)")
    p.add_argument("--prompts", type=int, default=16, help="decoding: prompts scored at once")
    p.add_argument("--chunks", type=int, default=8, help="update: chunks of a minibatch, 4 decisions each")
    p.add_argument("--prompt-tokens", type=int, default=75, help="a Wordle game's prompt is up to about 75 tokens")
    p.add_argument("--vocab", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--results", default=str(RESULTS_DIR / "rerank_last_column.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    before = modules_at_revision(args.before_ref, ["lmrl_lightning/policies/rerank.py"])["rerank"]
    for module in (rerank, before):
        module.MAX_TREE_TOKENS = 0  # both arms on gathered cache rows, the path that changed
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sets.split(",")]
    model = build_model(args.preset, args.vocab, args.prompt_tokens + max(t for _, t in sizes) + 8)
    tokens = lambda n: [rng.randrange(3, args.vocab) for _ in range(n)]  # noqa: E731
    rows = []
    for n_candidates, length in sizes:
        prompts = [tokens(args.prompt_tokens) for _ in range(args.prompts)]
        sets = [[tokens(length) for _ in range(n_candidates)] for _ in prompts]
        ids = torch.tensor([tokens(args.prompt_tokens) for _ in range(args.chunks)])
        mask = torch.ones_like(ids)
        choice = torch.full_like(ids, -1)
        choice[:, [15, 30, 45, 60]] = 0
        update_sets = [sets[0]] * int((choice >= 0).sum())
        arms = {"decode": lambda m: decode_scores(m, model, prompts, sets),
                "update": lambda m: update_scores(m, model, ids, mask, choice, update_sets)}
        row = {"candidates": n_candidates, "tokens_each": length}
        for name, arm in arms.items():
            arm(rerank), arm(before)  # warm-up
            now, then = [], []
            for _ in range(args.repeats):
                seconds, scores = arm(rerank)
                now.append(seconds)
                seconds, scores_before = arm(before)
                then.append(seconds)
            ratio = median([b / a for a, b in zip(now, then)])
            difference = float((scores - scores_before).abs().max())
            row[name] = {"now_seconds": now, "before_seconds": then, "speedup_paired_median": round(ratio, 3),
                         "max_score_difference": difference}
            print(f"{n_candidates} x {length} {name}: now {median(now):.3f} s, before {median(then):.3f} s, "
                  f"{ratio:.2f}x, scores within {difference:.1e}", flush=True)
        rows.append(row)
    write_json(Path(args.results), {"benchmark": "rerank_last_column", "command": command_line(),
                                    "machine": machine_info(), "config": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
