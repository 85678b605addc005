"""Wordle scores: BC, %BC, MC Returns, ILQL, PPO and online %BC trained from the example configs, evaluated with
word-level greedy decoding over the 400 answers (each hidden word once: greedy play is deterministic, so the
paper's 4096 games would replay these 400), beside the paper's Table 2 (normalised) and Table 4 (raw return) numbers.

Each algorithm runs `examples/configs/wordle_<algorithm>.yaml` through the same LightningCLI as `lmrl fit`, with
the data, run directory and step counts rewritten for this benchmark; MC, ILQL, PPO and online %BC start from
the BC row's checkpoint (%BC too: it fine-tunes BC on the top 30% of games). MC and ILQL choose beta with their
config's BetaSweep (the first 200 answers). Rows can run in separate processes (one core each: `--threads 1`) on the
same `--out`: each adds its row to the results file.
Each row also says how the policy uses the feedback (`guess_quality`: legal guesses, and guesses after the
first that are consistent with the feedback; the data's rate is about 0.35).

Run:  python benchmarks/wordle_scores.py --algorithms BC          (about 50 minutes on 2 cores)
      python benchmarks/wordle_scores.py --algorithms MC --threads 1 & python benchmarks/wordle_scores.py --algorithms ILQL --threads 1
(writes benchmarks/results/wordle_scores.json after every row)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, machine_info, quiet_libraries  # noqa: E402

quiet_libraries()

from _scores import add_row, add_setting_argument, final_episodes, fit_row, rewritten_config  # noqa: E402
from lmrl_lightning.callbacks import RolloutEvaluation  # noqa: E402
from lmrl_lightning.data.prepare import prepare_task_data  # noqa: E402
from lmrl_lightning.tasks.wordle.env import guess_quality  # noqa: E402

# name -> (config, paper Table 2 normalised, paper Table 4 raw return)
ALGORITHMS = {
    "BC": ("wordle_bc", 79.9, -2.81),
    "%BC": ("wordle_filtered_bc", 79.1, -2.85),
    "MC": ("wordle_mc_returns", 94.9, -2.16),
    "ILQL": ("wordle_ilql", 97.7, -2.04),
    "PPO": ("wordle_ppo", 84.2, -2.63),
    "online %BC": ("wordle_online_filtered_bc", 95.2, -2.15),
}


def benchmark_config(name: str, out: Path, args) -> Path:
    """The example config with this benchmark's paths and lengths."""
    replacements = [("runs/wordle_", f"{out}/wordle_"), ("save_dir: runs", f"save_dir: {out}"),
                    ("data/wordle", str(args.data or out / "data"))]
    if name in ("PPO", "online %BC"):
        replacements.append(("max_epochs: 20 ", f"max_epochs: {args.rounds} "))
    else:
        steps = ("max_steps: 8000", f"max_steps: {args.steps}") if name == "BC" else \
            ("max_steps: 2000", f"max_steps: {args.value_steps}")
        replacements.append(steps)
    replacements.append(("episodes: 400       # every", f"episodes: {args.eval_episodes}       # every"))
    if name in ("MC", "ILQL") and args.candidate_value:
        replacements.append(("candidate_value: last", f"candidate_value: {args.candidate_value}"))
    if name in ("%BC", "MC", "ILQL") and args.value_decay:
        replacements.append(("      warmup_steps: 50", f"      warmup_steps: 50\n      decay: {args.value_decay}"))
    if name == "ILQL" and args.forced_targets:
        replacements.append(("      polyak: 0.01", f"      forced_targets: {args.forced_targets}\n      polyak: 0.01"))
    if name in ("MC", "ILQL") and args.betas:
        replacements.append(("betas: [0, 1, 4, 16]", f"betas: [{args.betas}]"))
    return rewritten_config(ALGORITHMS[name][0], out, replacements)


def run_row(name: str, config: Path, settings: Sequence[str] = ()) -> dict:
    """Fit one algorithm from its config; its evaluation summary, guess quality and (MC, ILQL) beta sweep."""
    cli, row = fit_row(name, config, settings=settings)
    _, paper_score, paper_return = ALGORITHMS[name]
    if name in ("MC", "ILQL"):
        evaluation = next(c for c in cli.trainer.callbacks if type(c) is RolloutEvaluation)
        row["candidate_value"] = evaluation.decoding.candidate_value
    if name == "ILQL":
        row["forced_targets"] = cli.model.value.forced_targets
    row.update(**guess_quality(final_episodes(cli)), paper_normalised=paper_score, paper_return=paper_return)
    print(f"{name}: score {row['normalised_score']:.1f} (paper {paper_score}), return {row['mean_return']:.3f} "
          f"(paper {paper_return}), success {row['success_rate']:.3f}, {row['seconds']:.0f} s", flush=True)
    return row


def markdown_table(rows: list[dict]) -> str:
    """The README's table of a results file's rows."""
    lines = ["| algorithm | normalised | return | success | paper normalised | paper return | legal / consistent guesses "
             "| steps | wall s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        reading = (", last token" if r.get("candidate_value") == "last" else "") + \
            (", online forced targets" if r.get("forced_targets") == "online" else "")
        name = r["algorithm"] + (f" (beta {r['beta']:g}{reading})" if "beta" in r else "")
        lines.append(f"| {name} | {r['normalised_score']:.1f} | {r['mean_return']:.2f} | {r['success_rate']:.3f} "
                     f"| {r['paper_normalised']} | {r['paper_return']} | {r['legal_guess_rate']:.2f} / "
                     f"{r['consistent_guess_rate']:.2f} | {r['optimizer_steps']} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algorithms", default=",".join(ALGORITHMS), help="comma-separated, in order; all but BC need BC")
    p.add_argument("--episodes", type=int, default=200_000, help="dataset size (paper: 1M)")
    p.add_argument("--data", default=None, help="an existing `lmrl data wordle` directory (default: OUT/data)")
    p.add_argument("--steps", type=int, default=8000, help="BC steps")
    p.add_argument("--value-steps", type=int, default=2000, help="%%BC, MC and ILQL steps (from BC)")
    p.add_argument("--candidate-value", choices=["sum", "last"], default=None,
                   help="MC/ILQL: how re-ranking reads the values over a word's tokens (default: the config's)")
    p.add_argument("--betas", default=None, help="MC/ILQL: the BetaSweep's grid, comma-separated (default: the config's)")
    p.add_argument("--value-decay", choices=["none", "cosine"], default=None,
                   help="%%BC/MC/ILQL: the learning rate after the warm-up (default: the config's, constant)")
    p.add_argument("--forced-targets", choices=["target", "online"], default=None,
                   help="ILQL: V's targets after a word prefix the data continues one way (default: the config's, target)")
    p.add_argument("--rounds", type=int, default=20, help="PPO and online %%BC rounds")
    p.add_argument("--eval-episodes", type=int, default=400, help="evaluation games (every answer once)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default="runs/wordle_scores")
    p.add_argument("--results", default=str(RESULTS_DIR / "wordle_scores.json"))
    p.add_argument("--table", action="store_true", help="print the results file's rows as a Markdown table and stop")
    add_setting_argument(p)
    args = p.parse_args(argv)
    if args.table:
        print(markdown_table(json.loads(Path(args.results).read_text())["rows"]))
        return
    if args.threads:
        torch.set_num_threads(args.threads)

    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    if not (data / "train.jsonl").is_file():
        stats = prepare_task_data("wordle", None, data, args.episodes, seed=0, progress=False)
        print(f"dataset: {args.episodes} games, success {stats['success_rate']['ours']:.3f}, "
              f"mean return {stats['mean_return']['ours']:.2f}", flush=True)
    for name in args.algorithms.split(","):
        row = run_row(name, benchmark_config(name, out, args), args.settings)
        payload = {"benchmark": "wordle_scores", "machine": machine_info(), "config": vars(args)}
        add_row(Path(args.results), row, payload, order={"algorithm": list(ALGORITHMS)})
    print(f"results: {args.results}")


if __name__ == "__main__":
    main()
