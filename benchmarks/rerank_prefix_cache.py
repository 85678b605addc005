"""Re-ranking candidates with a shared prompt cache against scoring every prompt x candidate row in full.

Re-ranking decoding scores each of a task's fixed candidate actions (the maze's four moves) after every
episode's history. The baseline runs the prompt+candidate rows as one left-padded batch, so each prompt is
encoded once per candidate; ours (`candidate_logprobs`) encodes each prompt once, repeats its KV cache per
candidate and runs only the candidates' tokens on top. Both arms score the same PO-maze histories (the 40-text
window of scripted episodes, the longest prompts the maze has) with the same tiny GPT-2; the scores must agree.
Arms alternate `--repeats` times; the median of the paired ratios is reported.

Run:  python benchmarks/rerank_prefix_cache.py        (writes benchmarks/results/rerank_prefix_cache.json)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, command_line, machine_info, median, quiet_libraries, write_json  # noqa: E402

quiet_libraries()

import torch  # noqa: E402

from lmrl_lightning.data.jsonl import read_episodes  # noqa: E402
from lmrl_lightning.data.prepare import prepare_task_data  # noqa: E402
from lmrl_lightning.models.backbone import BackboneConfig, build_backbone, load_tokenizer  # noqa: E402
from lmrl_lightning.policies.rerank import candidate_logprobs  # noqa: E402
from lmrl_lightning.policies.sampling import left_pad  # noqa: E402
from lmrl_lightning.tasks.maze import MOVES  # noqa: E402


@torch.inference_mode()
def full_rows_logprobs(model, pad_id, prompts, candidates) -> torch.Tensor:
    """The baseline: every prompt + candidate row through the model, left-padded, candidate tokens summed."""
    rows = [p + c for p in prompts for c in candidates]
    ids, mask, positions = left_pad(rows, pad_id, "cpu")
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    lengths = torch.tensor([len(c) for c in candidates] * len(prompts))
    width = ids.shape[1]
    in_candidate = torch.arange(width - 1)[None, :] >= (width - 1 - lengths)[:, None]
    return (logp * in_candidate).sum(-1).view(len(prompts), len(candidates))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--histories", default="800,128", help="comma-separated batch sizes (800: one PO evaluation turn)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(RESULTS_DIR / "rerank_prefix_cache.json"))
    args = p.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        prepare_task_data("maze", "po", tmp, n_episodes=300, seed=0, progress=False)
        tokenizer = load_tokenizer(BackboneConfig(args.preset, tokenizer=f"{tmp}/tokenizer"))
        episodes = read_episodes(f"{tmp}/train.jsonl")
    model = build_backbone(BackboneConfig(args.preset, tokenizer="unused"), tokenizer).eval()
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    # The agent's context before each action of the long episodes: the last 40 texts.
    contexts = [
        [i for t in e.turns[max(0, k - 40):k] for i in encode(t.text)]
        for e in episodes if e.num_actions >= 30 for k, t in enumerate(e.turns) if t.is_action and k >= 40
    ]
    candidates = [encode(m) for m in MOVES]
    rows = []
    for n in [int(x) for x in args.histories.split(",")]:
        prompts = [contexts[(i * 7919) % len(contexts)] for i in range(n)]
        times = {"full_rows": [], "prefix_cache": []}
        for _ in range(args.repeats):
            for arm, fn in (("full_rows", full_rows_logprobs), ("prefix_cache", candidate_logprobs)):
                start = time.perf_counter()
                scores = fn(model, tokenizer.pad_token_id, prompts, candidates)
                times[arm].append(time.perf_counter() - start)
                if arm == "full_rows":
                    reference = scores
            max_diff = (scores - reference).abs().max().item()
        ratios = [a / b for a, b in zip(times["full_rows"], times["prefix_cache"])]
        rows.append({"histories": n, "candidates": len(candidates),
                     "mean_prompt_tokens": sum(map(len, prompts)) / n,
                     "full_rows_s": median(times["full_rows"]), "prefix_cache_s": median(times["prefix_cache"]),
                     "speedup_median_paired": median(ratios), "max_abs_score_diff": max_diff})
        r = rows[-1]
        print(f"{n} histories x {len(candidates)} candidates ({r['mean_prompt_tokens']:.0f} prompt tokens): full rows "
              f"{r['full_rows_s']:.2f} s, prefix cache {r['prefix_cache_s']:.2f} s, x{r['speedup_median_paired']:.2f}, "
              f"max |score diff| {max_diff:.1e}", flush=True)
    write_json(Path(args.out), {"benchmark": "rerank_prefix_cache", "command": command_line(),
                                "machine": machine_info(), "config": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
