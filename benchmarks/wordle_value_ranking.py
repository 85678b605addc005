"""Do the value heads of Wordle's MC and ILQL rank words better than BC's likelihood? A diagnostic for issue 14.

On held-out positions of the data policy (seed 100000 + i; 1 to 3 guesses played, game not over), every one of the
400 answers is scored, as word-level decoding scores it, by:
- `logp`: the policy's log-probability of the word (BC's own ranking; MC and ILQL decode with their BC policy);
- `guidance`: the value term beta adds (MC: sum of Q over the word's tokens; ILQL: sum of min(Q1, Q2) - V),
  read as score(beta=1) - score(beta=0);
- `last-token guidance`: the same at the word's last token only (`Decoding.candidate_value: last`): the value of
  the whole word, Q(s, w), without the values of its prefixes.
Per score: `consistent_auc`, the chance that a random consistent answer outranks a random inconsistent one (0.5:
blind; the data's information is that consistent answers can win); `top_consistent`, how often the top word is
consistent; `top_remaining`, the expected number of answers still consistent after guessing the top word (lower:
more informative; the expert minimises it); `top_is_answer`.

Run:  python benchmarks/wordle_value_ranking.py --out-dir runs/wordle_scores --positions 200
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, command_line, machine_info, quiet_libraries, write_json  # noqa: E402

quiet_libraries()

from lmrl_lightning.algorithms.base import load_module  # noqa: E402
from lmrl_lightning.policies import Decoding  # noqa: E402
from lmrl_lightning.registry import get_task  # noqa: E402
from lmrl_lightning.tasks.wordle.env import WordleEnv, answer_words, consistent_mask, feedback_table  # noqa: E402
from lmrl_lightning.tasks.wordle.policies import MixtureWordlePolicy  # noqa: E402
from lmrl_lightning.tasks.wordle.datagen import PAPER_PROB_CONSISTENT  # noqa: E402

RUNS = {"BC": "wordle_bc", "%BC": "wordle_filtered_bc", "MC": "wordle_mc_returns", "ILQL": "wordle_ilql"}


def held_out_positions(n: int) -> tuple[list, list[int]]:
    """Histories ending in feedback after 1-3 guesses of the data policy, from games the data never played, and
    each one's hidden word (index in the answer list)."""
    env, policy = WordleEnv(), MixtureWordlePolicy(PAPER_PROB_CONSISTENT)
    positions, answers, index = [], [], {w: i for i, w in enumerate(answer_words())}
    seed = 100_000
    while len(positions) < n:
        history, done = env.reset(seed=seed), False
        for turn in range(random.Random(seed).randint(1, 3)):
            history, _, done = env.step(policy.act(history, seed=seed * 7 + turn))
            if done:
                break
        if not done:
            positions.append(history)
            answers.append(index[env.answer])
        seed += 1
    return positions, answers


def expected_remaining(mask: np.ndarray) -> np.ndarray:
    """For each answer as the next guess: the expected number of answers still consistent after its feedback,
    the hidden word uniform over the consistent ones."""
    table = feedback_table()[:, mask]  # [guess, consistent hidden word] -> pattern code
    counts = np.zeros((table.shape[0], 243))
    np.add.at(counts, (np.arange(table.shape[0])[:, None].repeat(table.shape[1], 1), table), 1)
    return (counts ** 2).sum(1) / max(mask.sum(), 1)


def ranking_metrics(scores: torch.Tensor, masks: list, remaining: list, answers: list) -> dict:
    auc, top_consistent, top_remaining, top_answer = [], [], [], []
    for s, mask, rem, answer in zip(scores.numpy(), masks, remaining, answers):
        if 0 < mask.sum() < len(mask):
            good, bad = s[mask], s[~mask]
            auc.append(float((good[:, None] > bad[None, :]).mean() + 0.5 * (good[:, None] == bad[None, :]).mean()))
        top = int(s.argmax())
        top_consistent.append(bool(mask[top]))
        top_remaining.append(float(rem[top]))
        top_answer.append(top == answer)
    return {"consistent_auc": round(float(np.mean(auc)), 4), "top_consistent": round(float(np.mean(top_consistent)), 4),
            "top_remaining": round(float(np.mean(top_remaining)), 2), "top_is_answer": round(float(np.mean(top_answer)), 4)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", default="runs/wordle_scores", help="wordle_scores.py's --out")
    p.add_argument("--positions", type=int, default=200)
    p.add_argument("--betas", default="1,4,16", help="combined logp + beta * guidance rows")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(RESULTS_DIR / "wordle_value_ranking.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    histories, answers = held_out_positions(args.positions)
    masks = [consistent_mask(h) for h in histories]
    remaining = [expected_remaining(m) for m in masks]
    words = answer_words()
    candidates = get_task("wordle").candidate_actions
    rows = [{"scores": "uniform (blind)", **ranking_metrics(torch.zeros(len(histories), len(words)), masks,
                                                            remaining, answers)}]
    for name, run in RUNS.items():
        checkpoint = Path(args.out_dir) / run / "checkpoints" / "last.ckpt"
        if not checkpoint.is_file():
            continue
        module, _ = load_module(checkpoint)
        module.eval()
        first = len(rows)
        with torch.inference_mode():
            value_based = module.value_guidance() is not None
            # beta 0: the policy's own likelihood (None would add the module's trained or swept beta).
            logp = module.policy(Decoding("rerank_greedy", beta=0.0 if value_based else None), candidates).scores(histories)
            rows.append({"scores": f"{name} logp", **ranking_metrics(logp, masks, remaining, answers)})
            for reading, label in (("sum", "guidance"), ("last", "last-token guidance")) if value_based else ():
                decoding = Decoding("rerank_greedy", beta=1.0, candidate_value=reading)
                guidance = module.policy(decoding, candidates).scores(histories) - logp
                rows.append({"scores": f"{name} {label}", **ranking_metrics(guidance, masks, remaining, answers)})
                for beta in [float(b) for b in args.betas.split(",") if b]:
                    rows.append({"scores": f"{name} logp + {beta:g} {label}",
                                 **ranking_metrics(logp + beta * guidance, masks, remaining, answers)})
        print(*rows[first:], sep="\n", flush=True)
    write_json(Path(args.out), {"benchmark": "wordle_value_ranking", "command": command_line(),
                                "machine": machine_info(), "config": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
