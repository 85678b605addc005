"""How often a sampled turn's tokens differ from the tokens its text encodes to (a round trip through the text).

A model can sample an action in other pieces than its text's encoding (e.g. " city" as " c" + "ity"). Online updates
used to re-encode the text and so scored tokens nobody sampled, whose log-probabilities under the policy can be far
lower than the sampled ones', distorting the ratio and the KL; turns now carry such tokens (`Text.token_ids`, from
`LMPolicy.sampled_tokens`). This plays a checkpoint's evaluation episodes with free sampling and reports the share of
turns sampled that way, and the policy's log-probability of the sampled tokens against the encoding's on them.

Run:  python benchmarks/retokenization.py CKPT [CKPT ...] --episodes 64 --threads 1
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, command_line, machine_info, quiet_libraries, write_json  # noqa: E402

from lmrl_lightning.algorithms.base import load_module  # noqa: E402
from lmrl_lightning.evaluation import EvaluationProtocol, evaluate_module  # noqa: E402
from lmrl_lightning.policies.rerank import candidate_logprobs  # noqa: E402
from lmrl_lightning.policies.sampling import LMPolicy, eval_mode  # noqa: E402


def recorded_turns(module, task: str, episodes: int) -> list[tuple[list[int], str, Optional[tuple[int, ...]]]]:
    """(prompt ids, action text, the sampled tokens where they are not the text's encoding: `LMPolicy.sampled_tokens`)
    of every turn of `episodes` sampled evaluation games."""
    turns = []
    generate = LMPolicy.generate

    def recording(self, prompts, seeds):
        outputs = generate(self, prompts, seeds)
        turns.extend((list(p), self.action_text(o), self.sampled_tokens(o)) for p, o in zip(prompts, outputs))
        return outputs

    LMPolicy.generate = recording
    try:
        evaluate_module(module, EvaluationProtocol(task, episodes=episodes))
    finally:
        LMPolicy.generate = generate
    return turns


def measure(path: str, episodes: int, max_scored: int) -> dict:
    module, meta = load_module(path)
    task = meta["task"]
    turns = recorded_turns(module, task, episodes)
    encode = module.tokenizer
    differing = [(prompt, list(sampled), encode.encode(text, add_special_tokens=False), text)
                 for prompt, text, sampled in turns if sampled is not None]
    gaps = []
    with eval_mode(module.model), torch.no_grad():
        for prompt, sampled, canonical, text in differing[:max_scored]:
            scores = candidate_logprobs(module.model, encode.pad_token_id, [prompt], [sampled, canonical])[0]
            gaps.append(float(scores[0] - scores[1]))
    row = {"checkpoint": path, "task": task, "algorithm": meta.get("algorithm"), "turns": len(turns),
           "turns_retokenised_differently": len(differing),
           "share_differing": round(len(differing) / max(len(turns), 1), 4)}
    if gaps:
        gaps_t = torch.tensor(gaps)
        row.update(scored=len(gaps), logp_sampled_minus_canonical_mean=round(float(gaps_t.mean()), 3),
                   logp_sampled_minus_canonical_max=round(float(gaps_t.max()), 3),
                   examples=[{"text": t, "sampled": encode.convert_ids_to_tokens(g),
                              "canonical": encode.convert_ids_to_tokens(c)} for _, g, c, t in differing[:3]])
    print(row, flush=True)
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--episodes", type=int, default=64)
    p.add_argument("--max-scored", type=int, default=200, help="differing turns whose log-probabilities are compared")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--results", default=str(RESULTS_DIR / "retokenization.json"))
    args = p.parse_args(argv)
    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [measure(c, args.episodes, args.max_scored) for c in args.checkpoints]
    write_json(Path(args.results), {"benchmark": "retokenization", "command": command_line(), "machine": machine_info(),
                                    "config": vars(args), "rows": rows})
    print(f"results: {args.results}")


if __name__ == "__main__":
    main()
