"""Maze online RL: PPO and online filtered BC from the BC checkpoint, evaluated with the paper's protocol
(`--episodes`, 800 = 25 starts x 32), beside the paper's Table 2 numbers, with the rollout throughput inside
training and the time split between rollouts and updates.

The BC checkpoint is the one `benchmarks/maze_scores.py` trained (same `--out`); it is trained here if missing.

Run:  python benchmarks/maze_online.py --variant fo     (writes benchmarks/results/maze_online_fo.json)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, command_line, machine_info, quiet_libraries, write_json  # noqa: E402

quiet_libraries()

import lightning as L  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402

from lmrl_lightning.algorithms import (  # noqa: E402
    PPO, OnlineFilteredBC, Optimisation, PPOSettings, Rollouts, RoundFilter, Updates,
)
from lmrl_lightning.callbacks import RolloutEvaluation  # noqa: E402
from lmrl_lightning.evaluation import EvaluationProtocol  # noqa: E402
from lmrl_lightning.quickstart import prepare_maze_data, run_algorithms  # noqa: E402

# Paper Table 2 (normalised), maze rows.
PAPER = {"fo": {"PPO": 79.7, "online %BC": 57.4}, "po": {"PPO": 42.4, "online %BC": 53.1}}


def make_module(name: str, variant: str, bc: Path, args) -> L.LightningModule:
    rollouts = Rollouts("maze", variant, episodes_per_round=args.episodes_per_round,
                        batch_size=args.episodes_per_round, seed=args.seed)
    max_length = 64 if variant == "fo" else 512
    if name == "PPO":
        # maze scripts: gamma 0.99 FO / 1.0 PO, value_coef 0.5 FO / 1.0 PO, KL 0.001, V bias -1
        ppo = PPOSettings(gamma=0.99 if variant == "fo" else 1.0, value_coef=0.5 if variant == "fo" else 1.0,
                          kl_coef=0.001, value_bias=-1.0)
        return PPO(init_from=str(bc), optim=Optimisation(args.ppo_lr), rollouts=rollouts,
                   updates=Updates(32, max_length=max_length), ppo=ppo)
    return OnlineFilteredBC(init_from=str(bc), optim=Optimisation(args.bc_lr), rollouts=rollouts,
                            updates=Updates(128, max_length=max_length), filter=RoundFilter("success"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="fo", choices=["fo", "po"])
    p.add_argument("--algorithms", default="PPO,online %BC")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--episodes-per-round", type=int, default=128, help="episodes per round (paper scripts: 128)")
    p.add_argument("--ppo-lr", type=float, default=1e-4)
    p.add_argument("--bc-lr", type=float, default=1e-4)
    p.add_argument("--episodes", type=int, default=800, help="evaluation episodes, 25 starts x 32 (paper: 800)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/maze_scores", help="working directory shared with maze_scores.py")
    p.add_argument("--results", default=None)
    args = p.parse_args(argv)

    started = time.time()
    out_dir = Path(args.out) / args.variant
    bc = out_dir / "checkpoints" / "bc.ckpt"
    if not bc.is_file():
        prepare_maze_data(out_dir / "data" / f"maze_{args.variant}", args.variant, args.seed)
        run_algorithms(["BC"], out_dir, args.variant, args.episodes, 800, 0, args.seed)
    rows = []
    for name in args.algorithms.split(","):
        L.seed_everything(args.seed, verbose=False)
        slug = name.replace("%", "filtered_").replace(" ", "_").lower()
        module = make_module(name, args.variant, bc, args)
        protocol = EvaluationProtocol("maze", args.variant, args.episodes, batch_size=1024)
        evaluation = RolloutEvaluation(protocol, every_n_epochs=0)
        trainer = L.Trainer(
            max_epochs=args.rounds, accelerator="cpu", devices=1, enable_model_summary=False, enable_progress_bar=False,
            logger=TensorBoardLogger(str(out_dir / "tensorboard"), name=slug), log_every_n_steps=25,
            callbacks=[evaluation, ModelCheckpoint(dirpath=str(out_dir / "checkpoints"), filename=slug,
                                                   enable_version_counter=False)],
        )
        start = time.time()
        trainer.fit(module)
        seconds = time.time() - start
        history = module.round_history
        rollout_s = sum(r["rollout_seconds"] for r in history)
        update_s = sum(r["update_seconds"] for r in history)
        summary = evaluation.results[-1][1]
        rows.append({
            "algorithm": name, "rounds": len(history), "optimizer_steps": trainer.global_step, "seconds": seconds,
            "rollout_seconds": rollout_s, "update_seconds": update_s,
            "rollout_fraction": rollout_s / (rollout_s + update_s),
            "training_episodes": sum(r["episodes"] for r in history),
            "rollout_episodes_per_second": sum(r["episodes"] for r in history) / rollout_s,
            "round_normalised_scores": [round(r["normalised_score"], 2) for r in history],
            **vars(summary), "paper_normalised": PAPER[args.variant][name],
        })
        r = rows[-1]
        print(f"{name}: score {r['normalised_score']:.1f} (paper {r['paper_normalised']}), success "
              f"{r['success_rate']:.3f}, {r['rollout_episodes_per_second']:.1f} episodes/s in rollouts, "
              f"rollout/update {rollout_s:.0f}/{update_s:.0f} s", flush=True)
        # Written after every algorithm: a run stopped later keeps the rows it finished.
        payload = {"benchmark": "maze_online", "command": command_line(), "machine": machine_info(),
                   "config": vars(args), "rows": rows, "wall_seconds": round(time.time() - started, 1)}
        path = write_json(
            Path(args.results) if args.results else RESULTS_DIR / f"maze_online_{args.variant}.json", payload
        )
    print(f"wall time {payload['wall_seconds']} s; results: {path}")


if __name__ == "__main__":
    main()
