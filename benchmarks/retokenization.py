"""How often a sampled turn's tokens differ from the tokens its text encodes to (a round trip through the text).

Online rollouts keep an action as text; PPO's update and its KL re-encode that text. Where the policy sampled a
non-canonical tokenisation (e.g. " city" as " c" + "ity"), the tokens scored are not the tokens sampled: their
log-probabilities under the policy can be far lower than the sampled ones', which distorts the ratio and the KL.
This plays a checkpoint's evaluation episodes with free sampling, records every generated turn, and reports the
share of turns whose re-encoded tokens differ, and the policy's log-probability of the sampled tokens against the
re-encoded ones on those turns.

Run:  python benchmarks/retokenization.py CKPT [CKPT ...] --episodes 64 --threads 1
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, command_line, machine_info, quiet_libraries, write_json  # noqa: E402

from lmrl_lightning.algorithms.base import load_module  # noqa: E402
from lmrl_lightning.evaluation import EvaluationProtocol, evaluate_module  # noqa: E402
from lmrl_lightning.policies.rerank import candidate_logprobs  # noqa: E402
from lmrl_lightning.policies.sampling import LMPolicy, eval_mode  # noqa: E402


def recorded_turns(module, task: str, episodes: int) -> list[tuple[list[int], list[int], str]]:
    """(prompt ids, generated ids, action text) of every turn of `episodes` sampled evaluation games."""
    turns = []
    generate = LMPolicy.generate

    def recording(self, prompts, seeds):
        outputs = generate(self, prompts, seeds)
        turns.extend((list(p), list(o), self.action_text(o)) for p, o in zip(prompts, outputs))
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
    differing = []
    for prompt, generated, text in turns:
        canonical = encode.encode(text, add_special_tokens=False)
        spelled = encode.decode(generated, skip_special_tokens=True).startswith(text)
        if spelled and generated[:len(canonical)] != canonical:
            differing.append((prompt, generated, canonical, text))
    gaps = []
    with eval_mode(module.model), torch.no_grad():
        for prompt, generated, canonical, text in differing[:max_scored]:
            # the sampled tokens up to the turn's end, as many as decode to the action text
            n = next(k for k in range(1, len(generated) + 1)
                     if encode.decode(generated[:k], skip_special_tokens=True).startswith(text))
            sampled, encoded = candidate_logprobs(module.model, encode.pad_token_id, [prompt],
                                                  [generated[:n], canonical])[0].tolist()
            gaps.append(sampled - encoded)
    row = {"checkpoint": path, "task": task, "algorithm": meta.get("algorithm"), "turns": len(turns),
           "turns_retokenised_differently": len(differing),
           "share_differing": round(len(differing) / max(len(turns), 1), 4)}
    if gaps:
        gaps_t = torch.tensor(gaps)
        row.update(scored=len(gaps), logp_sampled_minus_canonical_mean=round(float(gaps_t.mean()), 3),
                   logp_sampled_minus_canonical_max=round(float(gaps_t.max()), 3),
                   examples=[{"text": t, "sampled": encode.convert_ids_to_tokens(g[:len(c) + 2]),
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
