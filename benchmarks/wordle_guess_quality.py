"""How Wordle checkpoints use the feedback: legal-guess rate and consistent-guess rate (`guess_quality`) of each
checkpoint's sampled games, beside the same rates of the dataset it learned from. `wordle_scores.py` records these
for its rows; this script computes them for checkpoints already trained.

Run:  python benchmarks/wordle_guess_quality.py --out-dir runs/wordle_scores
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, command_line, machine_info, quiet_libraries, write_json  # noqa: E402

quiet_libraries()

from lmrl_lightning.algorithms.base import load_module  # noqa: E402
from lmrl_lightning.data.jsonl import iter_episodes  # noqa: E402
from lmrl_lightning.policies import Decoding  # noqa: E402
from lmrl_lightning.registry import get_task  # noqa: E402
from lmrl_lightning.evaluation import EvaluationProtocol, evaluate_module  # noqa: E402
from lmrl_lightning.tasks.wordle.env import guess_quality  # noqa: E402

RUNS = ("wordle_bc", "wordle_filtered_bc", "wordle_mc_returns", "wordle_ilql", "wordle_ppo", "wordle_online_filtered_bc")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", default="runs/wordle_scores", help="wordle_scores.py's --out")
    p.add_argument("--games", type=int, default=400)
    p.add_argument("--out", default=str(RESULTS_DIR / "wordle_guess_quality.json"))
    args = p.parse_args(argv)
    root = Path(args.out_dir)
    data = list(itertools.islice(iter_episodes(root / "data" / "train.jsonl"), 4000))
    rows = [{"run": "dataset (first 4000 games)", **guess_quality(data)}]
    for run in RUNS:
        checkpoint = root / run / "checkpoints" / "last.ckpt"
        if checkpoint.is_file():
            module, _ = load_module(checkpoint)
            protocol = EvaluationProtocol("wordle", "default", args.games, 400, 0, Decoding("sample"))
            episodes = evaluate_module(module, protocol)
            rows.append({"run": run, **guess_quality(episodes)})
        print(rows[-1], flush=True)
    write_json(Path(args.out), {"benchmark": "wordle_guess_quality", "command": command_line(),
                                "machine": machine_info(), "config": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
