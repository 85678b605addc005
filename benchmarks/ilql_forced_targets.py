"""ILQL on FO Maze with V's targets at forced tokens taken from the online Q (`value.forced_targets: online`) against
the paper's target-network Q everywhere (issue 15, goal 1: a value method at 90 within the quickstart's minutes).

A maze action is three tokens (`move`, the direction, the newline) and only the direction is a choice in the data,
so with the paper's targets a value crosses one turn through three target lags (about 1/polyak steps each: V <-
expectile of the target Q); `online` leaves one. Both arms: the quickstart's data, its BC checkpoint (800 steps) and
its ILQL settings (lr 3e-4, tau 0.95, Polyak 0.01, beta 8, batch 64), the same seed; each is evaluated with the
quickstart's protocol (`--episodes`, 25 starts) after each of `--eval-at` steps, in one run. Training seconds
exclude the evaluations. An arm `online:cosine` also decays the learning rate to 0 at the last of `--eval-at`
(`optim.decay: cosine`; its earlier evaluations are mid-schedule), and `target:cosine:0.05` also sets the targets'
Polyak rate (default: the quickstart's 0.01). With `--value-networks online,target` every evaluation runs once per
decoding network set (`Decoding.value_networks`) on the same episodes.

Run:  python benchmarks/ilql_forced_targets.py --eval-at 500,1000,2000,3000 --threads 1
      (writes benchmarks/results/ilql_forced_targets.json)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, command_line, machine_info, quickstart_bc, quiet_libraries, write_json  # noqa: E402

quiet_libraries()

import lightning as L  # noqa: E402

from lmrl_lightning.callbacks import RolloutEvaluation  # noqa: E402
from lmrl_lightning.data.datamodule import EpisodeDataModule  # noqa: E402
from lmrl_lightning.evaluation import EvaluationProtocol  # noqa: E402
from lmrl_lightning.policies import Decoding  # noqa: E402
from lmrl_lightning.quickstart import TOKENIZER_DIR, TRAIN_FILE, VALUE_POLYAK, make_module, make_trainer  # noqa: E402


class EvaluateAtSteps(RolloutEvaluation):
    """Evaluates after each of `steps` optimiser steps; the time spent evaluating is kept apart."""

    def __init__(self, protocol: EvaluationProtocol, steps: list[int], prefix: str = "eval/"):
        super().__init__(protocol, every_n_epochs=0, n_transcripts=0)
        self.steps, self.eval_seconds, self.prefix = set(steps), 0.0, prefix

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step in self.steps and self._evaluated_step != trainer.global_step:
            start = time.time()
            summary = self.evaluate(trainer, pl_module, self.prefix)
            self.eval_seconds += time.time() - start
            print(f"  step {trainer.global_step} ({self.decoding.value_networks}): score "
                  f"{summary.normalised_score:.1f}, success {summary.success_rate:.3f}", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arms", default="target,online",
                   help="forced_targets values, each optionally :cosine or :none, then optionally :POLYAK")
    p.add_argument("--value-networks", default="online", help="comma-separated: decode with online and/or target")
    p.add_argument("--eval-at", default="500,1000,2000,3000", help="optimiser steps after which to evaluate")
    p.add_argument("--episodes", type=int, default=800, help="evaluation episodes (the quickstart's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="runs/ilql_forced_targets")
    p.add_argument("--results", default=str(RESULTS_DIR / "ilql_forced_targets.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    data_dir, bc, bc_rows = quickstart_bc(out, args.episodes, args.seed)
    steps = sorted(int(s) for s in args.eval_at.split(","))
    rows = []
    networks = args.value_networks.split(",")
    for arm in args.arms.split(","):
        forced_targets, decay, polyak = (arm.split(":") + ["", ""])[:3]
        L.seed_everything(args.seed, verbose=False)
        module = make_module("ILQL", data_dir / TOKENIZER_DIR, bc, forced_targets=forced_targets, decay=decay or "none",
                             polyak=float(polyak) if polyak else VALUE_POLYAK)
        data = EpisodeDataModule(str(data_dir / TRAIN_FILE), task="maze", variant="fo", batch_size=64)
        evaluations = {
            kind: EvaluateAtSteps(EvaluationProtocol("maze", "fo", args.episodes, batch_size=1024,
                                                     decoding=Decoding("rerank", value_networks=kind)), steps,
                                  "eval/" if kind == networks[0] else f"eval_{kind}/")
            for kind in networks
        }
        trainer = make_trainer(out / arm.replace(":", "_"), "ilql", max(steps), "cpu", list(evaluations.values()))
        start = time.time()
        print(f"ILQL, {arm}:", flush=True)
        trainer.fit(module, data)
        curves = {kind: [{"step": step, "normalised_score": s.normalised_score, "success_rate": s.success_rate,
                          "mean_return": s.mean_return} for step, s in evaluation.results]
                  for kind, evaluation in evaluations.items()}
        eval_seconds = sum(e.eval_seconds for e in evaluations.values())
        rows.append({"arm": arm, "forced_targets": forced_targets, "decay": decay or "none",
                     "polyak": float(polyak) if polyak else VALUE_POLYAK, "curve": curves[networks[0]],
                     **{f"curve_{kind}": curve for kind, curve in curves.items() if kind != networks[0]},
                     "decoding_networks": networks,
                     "train_seconds": round(time.time() - start - eval_seconds, 1)})
        write_json(Path(args.results), {"benchmark": "ilql_forced_targets", "command": command_line(),
                                        "machine": machine_info(), "config": vars(args), "bc": bc_rows, "rows": rows})
    for row in rows:
        print(f"{row['arm']:>13}: " + ", ".join(f"{c['step']}: {c['normalised_score']:.1f}" for c in row["curve"])
              + f" ({row['train_seconds']:.0f} s of training)")


if __name__ == "__main__":
    main()
