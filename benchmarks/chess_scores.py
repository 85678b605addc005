"""Chess and Chess Endgames scores: BC, %BC, MC Returns, ILQL, PPO and online %BC trained from the example configs
(`examples/configs/endgames_*.yaml` and `chess_*.yaml`), each evaluated twice on the paper's protocol
(Endgames: the 645 fixed positions, one game each; chess: games from the initial position):

- `sample`: free generation token by token, the paper's decoding (a model trained from scratch writes illegal
  moves: -1 each, the board unchanged);
- `rerank`: one of the position's legal moves, sampled from the softmax of their scores (`TaskSpec.
  state_candidate_actions`): illegal-move rate 0, which shows what the algorithms do with legal play.

Beside each row: the paper's Table 2 score and Table 7 return (Endgames), win rate, illegal-move rate and game length
(Tables 6-7's metrics), wall time and evaluation games/s. %BC, MC, ILQL, PPO and online %BC start from the BC row's
checkpoint (%BC fine-tunes it on the won games, as the config says). Rows can run in separate processes on the same `--out`
(`--threads 1` each): each merges its rows into the results file.

Run:  python benchmarks/chess_scores.py --task endgames --algorithms BC              (data first if missing)
      python benchmarks/chess_scores.py --task endgames --algorithms MC,ILQL --threads 1
      python benchmarks/chess_scores.py --task endgames --table                      (the README table)
(writes benchmarks/results/<task>_scores.json after every row)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, machine_info, quiet_libraries  # noqa: E402

quiet_libraries()

from _scores import add_row, add_setting_argument, final_episodes, fit_row, rewritten_config  # noqa: E402
from lmrl_lightning.data.prepare import prepare_task_data  # noqa: E402
from lmrl_lightning.evaluation import EvaluationProtocol, evaluate_module, summarise  # noqa: E402
from lmrl_lightning.policies.decoding import Decoding  # noqa: E402
from lmrl_lightning.registry import get_task  # noqa: E402
from lmrl_lightning.tasks.chess import close_engines, episode_metrics  # noqa: E402

# name -> (config, paper Table 2 normalised, paper raw return); Endgames (spec §2.5, §4: Tables 2 and 7; online
# %BC's return is not in Table 7, it is Table 2's score converted back with the normalisation constants).
ENDGAMES = {
    "BC": ("endgames_bc", 35.1, 0.112),
    "%BC": ("endgames_filtered_bc", 17.7, -0.439),
    "MC": ("endgames_mc_returns", 50.2, 0.588),
    "ILQL": ("endgames_ilql", 45.8, 0.452),
    "PPO": ("endgames_ppo", 77.5, 0.814),
    "online %BC": ("endgames_online_filtered_bc", 36.2, 0.148),
}
# Full games (spec §2.4, Tables 2 and 4).
CHESS = {
    "BC": ("chess_bc", 47.2, -22.3),
    "%BC": ("chess_filtered_bc", 42.9, -56.5),
    "MC": ("chess_mc_returns", 46.5, -28.2),
    "ILQL": ("chess_ilql", 47.3, -21.4),
    "PPO": ("chess_ppo", 48.0, -16.0),
    "online %BC": ("chess_online_filtered_bc", 47.2, -22.3),
}
ALGORITHMS = {"endgames": ENDGAMES, "chess": CHESS}
DECODINGS = ("sample", "rerank")
BC_STEPS = {"endgames": 3000, "chess": 4000}
EVAL_GAMES = {"endgames": 645, "chess": 1000}  # the paper's protocols, as the configs say
VALUE_STEPS = {"%BC": 1000, "MC": 2000, "ILQL": 2000}


def benchmark_config(task: str, name: str, out: Path, args) -> Path:
    """The example config with this benchmark's paths, lengths and evaluation games."""
    replacements = [(f"runs/{task}_", f"{out}/{task}_"), ("save_dir: runs", f"save_dir: {out}"),
                    (f"data/{task}", str(args.data or out / "data"))]
    if name in ("PPO", "online %BC"):
        replacements.append(("max_epochs: 20 ", f"max_epochs: {args.rounds} "))
        if args.rollout_decoding:
            replacements.append(("      episodes_per_round: 64", f"      decoding: {{kind: {args.rollout_decoding}}}\n"
                                                                   "      episodes_per_round: 64"))
    elif name == "BC":
        replacements.append((f"max_steps: {BC_STEPS[task]}", f"max_steps: {args.steps or BC_STEPS[task]}"))
    else:
        default = VALUE_STEPS[name]
        replacements.append((f"max_steps: {default}", f"max_steps: {args.value_steps or default}"))
    replacements.append((f"episodes: {EVAL_GAMES[task]}", f"episodes: {args.eval_episodes}"))
    return rewritten_config(ALGORITHMS[task][name][0], out, replacements)


def chess_row(row: dict, episodes: list, paper: tuple) -> dict:
    """A row with the chess metrics of its episodes and the paper's figures."""
    _, paper_score, paper_return = paper
    return {**row, **episode_metrics(episodes), "paper_normalised": paper_score, "paper_return": paper_return}


def run_algorithm(task: str, name: str, config: Path, eval_episodes: int,
                  rollout_decoding: Optional[str] = None, settings: Sequence[str] = ()) -> list[dict]:
    """Fit one algorithm; its rows: the config's evaluation (free sampling), then legal-move re-ranking. Online
    algorithms' rows say how their rollouts decoded (`rollout_decoding`, None: the config's)."""
    paper = ALGORITHMS[task][name]
    cli, row = fit_row(name, config, settings=settings)
    if name in ("PPO", "online %BC"):
        row["rollout_decoding"] = rollout_decoding or "sample"
    rows = [chess_row({**row, "decoding": "sample"}, final_episodes(cli), paper)]
    protocol = EvaluationProtocol(task, episodes=eval_episodes, decoding=Decoding(kind="rerank"))
    started = time.time()
    episodes = sorted(evaluate_module(cli.model, protocol), key=lambda e: e.meta["index"])
    seconds = time.time() - started
    summary = summarise(episodes, get_task(task).normalisation["default"])
    rows.append(chess_row({**row, **vars(summary), "decoding": "rerank", "eval_seconds": round(seconds, 1),
                           "eval_games_per_second": round(len(episodes) / seconds, 2)}, episodes, paper))
    for r in rows:
        print(f"{name} ({r['decoding']}): score {r['normalised_score']:.1f} (paper {paper[1]}), return "
              f"{r['mean_return']:.3f}, wins {r['win_rate']:.3f}, illegal {r['illegal_move_rate']:.3f}, "
              f"length {r['mean_length']:.1f}", flush=True)
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The README's table of a results file's rows."""
    lines = ["| algorithm | decoding | normalised | return | wins | illegal moves | length | paper normalised "
             "| paper return | steps | wall s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = r["algorithm"] + (f" (beta {r['beta']:g})" if "beta" in r else "")
        if r.get("rollout_decoding") == "rerank":
            name += " (re-ranked rollouts)"
        lines.append(f"| {name} | {r['decoding']} | {r['normalised_score']:.1f} | {r['mean_return']:.3f} "
                     f"| {r['win_rate']:.3f} | {r['illegal_move_rate']:.3f} | {r['mean_length']:.1f} "
                     f"| {r['paper_normalised']} | {r['paper_return']} | {r['optimizer_steps']} "
                     f"| {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="endgames", choices=sorted(ALGORITHMS))
    p.add_argument("--algorithms", default=None, help="comma-separated, in order; all but BC start from BC")
    p.add_argument("--episodes", type=int, default=None, help="dataset games (default: lmrl data's)")
    p.add_argument("--data", default=None, help="an existing `lmrl data` directory (default: OUT/data)")
    p.add_argument("--steps", type=int, default=None, help="BC steps (default: the config's)")
    p.add_argument("--value-steps", type=int, default=None, help="%%BC, MC and ILQL steps (default: the configs')")
    p.add_argument("--rounds", type=int, default=20, help="PPO and online %%BC rounds")
    p.add_argument("--rollout-decoding", default=None, choices=["sample", "rerank"],
                   help="PPO and online %%BC rollouts: free sampling (the configs', the paper's) or re-ranking the "
                        "legal moves; a later run of the same algorithm replaces the row")
    p.add_argument("--eval-episodes", type=int, default=None,
                   help="evaluation games (default: the paper's, Endgames' 645 positions or 1000 chess games)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default=None, help="working directory (default: runs/<task>_scores)")
    p.add_argument("--results", default=None, help="default: benchmarks/results/<task>_scores.json")
    p.add_argument("--table", action="store_true", help="print the results file's rows as a Markdown table and stop")
    add_setting_argument(p)
    args = p.parse_args(argv)
    args.eval_episodes = args.eval_episodes or EVAL_GAMES[args.task]
    results = Path(args.results or RESULTS_DIR / f"{args.task}_scores.json")
    if args.table:
        print(markdown_table(json.loads(results.read_text())["rows"]))
        return
    if args.threads:
        torch.set_num_threads(args.threads)

    out = Path(args.out or f"runs/{args.task}_scores")
    data = Path(args.data) if args.data else out / "data"
    payload = {"benchmark": "chess_scores", "task": args.task, "machine": machine_info(), "config": vars(args)}
    if not (data / "train.jsonl").is_file():
        started = time.time()
        stats = prepare_task_data(args.task, None, data, args.episodes, seed=0, progress=False)
        seconds = time.time() - started
        payload["dataset"] = {"seconds": round(seconds, 1), "games_per_second": round(
            stats["n_episodes"]["ours"] / seconds, 2), **{k: v for k, v in stats.items() if k != "config"}}
        print(f"dataset: {stats['n_episodes']['ours']} games in {seconds:.0f} s", flush=True)
    else:  # an existing dataset: its statistics (its generation time is not known here)
        stats = json.loads((data / "stats.json").read_text())
        payload["dataset"] = {"path": str(data), **{k: v for k, v in stats.items() if k != "config"}}
    try:
        for name in (args.algorithms or ",".join(ALGORITHMS[args.task])).split(","):
            for row in run_algorithm(args.task, name, benchmark_config(args.task, name, out, args),
                                     args.eval_episodes, args.rollout_decoding, args.settings):
                add_row(results, row, payload, order={"algorithm": list(ALGORITHMS[args.task]),
                                                           "decoding": DECODINGS})
    finally:
        close_engines()
    print(f"results: {results}")


if __name__ == "__main__":
    main()
