"""Wordle scores: BC, %BC, MC Returns, ILQL, PPO and online %BC trained from the example configs, evaluated with
the paper's protocol (4096 games), beside the paper's Table 2 (normalised) and Table 4 (raw return) numbers.

Each algorithm runs `examples/configs/wordle_<algorithm>.yaml` through the same LightningCLI as `lmrl fit`, with
the data, run directory and step counts rewritten for this benchmark; MC, ILQL, PPO and online %BC start from
the BC row's checkpoint. MC and ILQL choose beta with their config's BetaSweep (400 games, policy seed 1).
Each row also says how the policy uses the feedback (`guess_quality`: legal guesses, and guesses after the
first that are consistent with the feedback; the data's rate is about 0.35).

Run:  python benchmarks/wordle_scores.py        (writes benchmarks/results/wordle_scores.json after every row)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, command_line, machine_info, quiet_libraries, write_json  # noqa: E402

quiet_libraries()

from lmrl_lightning.callbacks import BetaSweep, RolloutEvaluation  # noqa: E402
from lmrl_lightning.cli import _fit  # noqa: E402
from lmrl_lightning.data.prepare import prepare_task_data  # noqa: E402
from lmrl_lightning.tasks.wordle.env import guess_quality  # noqa: E402

CONFIGS = Path(__file__).resolve().parent.parent / "examples" / "configs"
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
    text = (CONFIGS / f"{ALGORITHMS[name][0]}.yaml").read_text()
    text = text.replace("runs/wordle_", f"{out}/wordle_").replace("save_dir: runs", f"save_dir: {out}")
    text = text.replace("data/wordle", str(out / "data"))
    text = text.replace("episodes: 4096", f"episodes: {args.eval_episodes}")
    text = text.replace("max_steps: 3000", f"max_steps: {args.steps}").replace("max_steps: 2000", f"max_steps: {args.value_steps}")
    text = text.replace("max_epochs: 20 ", f"max_epochs: {args.rounds} ")
    path = out / "configs" / f"{ALGORITHMS[name][0]}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algorithms", default=",".join(ALGORITHMS), help="comma-separated, in order; all but %%BC need BC")
    p.add_argument("--episodes", type=int, default=20_000, help="dataset size (paper: 1M)")
    p.add_argument("--steps", type=int, default=3000, help="BC and %%BC steps")
    p.add_argument("--value-steps", type=int, default=2000, help="MC and ILQL steps")
    p.add_argument("--rounds", type=int, default=20, help="PPO and online %%BC rounds")
    p.add_argument("--eval-episodes", type=int, default=4096, help="evaluation games (paper: 4096)")
    p.add_argument("--out", default="runs/wordle_scores")
    p.add_argument("--results", default=str(RESULTS_DIR / "wordle_scores.json"))
    args = p.parse_args(argv)

    started = time.time()
    out = Path(args.out)
    if not (out / "data" / "train.jsonl").is_file():
        stats = prepare_task_data("wordle", None, out / "data", args.episodes, seed=0, progress=False)
        print(f"dataset: {args.episodes} games, success {stats['success_rate']['ours']:.3f}, "
              f"mean return {stats['mean_return']['ours']:.2f}", flush=True)
    rows = []
    for name in args.algorithms.split(","):
        config = benchmark_config(name, out, args)
        start = time.time()
        cli = _fit(["-c", str(config)])
        seconds = time.time() - start
        callbacks = cli.trainer.callbacks
        evaluation = next(c for c in callbacks if type(c) is RolloutEvaluation)
        summary = evaluation.results[-1][1]
        sweep = next((c for c in callbacks if isinstance(c, BetaSweep)), None)
        _, paper_score, paper_return = ALGORITHMS[name]
        row = {"algorithm": name, "config": str(config), "optimizer_steps": cli.trainer.global_step,
               "seconds": round(seconds, 1), **vars(summary), **guess_quality(evaluation.last_episodes),
               "paper_normalised": paper_score, "paper_return": paper_return}
        if sweep is not None:
            row["beta"] = sweep.chosen
            row["beta_sweep"] = {f"{b:g}": round(s.normalised_score, 2) for b, s in sweep.results}
        if hasattr(cli.model, "round_history"):
            # Training rollouts' returns, on the training env's scale (-10 per invalid word).
            row["round_mean_returns"] = [round(r["mean_return"], 3) for r in cli.model.round_history]
        rows.append(row)
        print(f"{name}: score {summary.normalised_score:.1f} (paper {paper_score}), return {summary.mean_return:.3f} "
              f"(paper {paper_return}), success {summary.success_rate:.3f}, {seconds:.0f} s", flush=True)
        payload = {"benchmark": "wordle_scores", "command": command_line(), "machine": machine_info(),
                   "config": vars(args), "rows": rows, "wall_seconds": round(time.time() - started, 1)}
        write_json(Path(args.results), payload)
    print(f"wall time {payload['wall_seconds']} s; results: {args.results}")


if __name__ == "__main__":
    main()
