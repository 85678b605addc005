"""Run by tests/test_ddp_eval.py: fit a tiny BC module for one step with lr=0 on `devices` CPU processes and let
RolloutEvaluation evaluate it at the end of fit; every rank writes `rank<r>.json` into `out_dir`.

    python ddp_eval_script.py DATA_DIR OUT_DIR DEVICES

Each file holds the indices of the episodes that rank played itself and the gathered episodes and summary it
saw. Evaluation runs on a copy of the maze whose episodes stop after a few steps, so that it stays short.
"""
import dataclasses
import json
import sys
from pathlib import Path

import lightning as L

import lmrl_lightning.callbacks.rollout_eval as rollout_eval
from lmrl_lightning.algorithms import BC, Optimisation
from lmrl_lightning.callbacks import RolloutEvaluation
from lmrl_lightning.data.datamodule import EpisodeDataModule
from lmrl_lightning.data.prepare import TOKENIZER_DIR, TRAIN_FILE
from lmrl_lightning.evaluation import EvaluationProtocol
from lmrl_lightning.models.backbone import BackboneConfig
from lmrl_lightning.policies import Decoding
from lmrl_lightning.registry import register_task
from lmrl_lightning.tasks.maze import TASK, MazeEnv

register_task(
    dataclasses.replace(TASK, name="maze_short", make_env=lambda variant: MazeEnv(variant, max_steps=10))
)
N_EPISODES = 25 * 2  # 2 from each maze start

played: list[int] = []
_evaluate_module = rollout_eval.evaluate_module


def evaluate_and_record(*args, **kwargs):
    """The callback's evaluate_module, noting which episodes this rank played."""
    episodes = _evaluate_module(*args, **kwargs)
    played.extend(e.meta["index"] for e in episodes)
    return episodes


def main(data_dir: Path, out_dir: Path, devices: int) -> None:
    rollout_eval.evaluate_module = evaluate_and_record
    L.seed_everything(0)
    # lr=0: the training step leaves the weights as seeded, whatever data each rank's step sees.
    module = BC(BackboneConfig("tiny", tokenizer=str(data_dir / TOKENIZER_DIR)), optim=Optimisation(lr=0.0))
    data = EpisodeDataModule(str(data_dir / TRAIN_FILE), task="maze", variant="fo", max_length=64, batch_size=4)
    # A high temperature turns the untrained model's re-ranking (which always prefers the move with the fewest
    # tokens) into a random walk, so that episodes differ in moves, length and return.
    protocol = EvaluationProtocol("maze_short", "fo", N_EPISODES, decoding=Decoding("rerank", temperature=100.0))
    evaluation = RolloutEvaluation(protocol, every_n_epochs=0)
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", max_steps=1,
        limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[evaluation],
    )
    trainer.fit(module, data)
    (out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps({
        "world_size": trainer.world_size,
        "played": played,
        "episodes": [
            {
                "index": e.meta["index"],
                "seed": e.meta["seed"],
                "return": e.total_reward,
                "length": e.num_actions,
                "success": e.meta["success"],
                "actions": [t.text for t in e.turns if t.is_action],
            }
            for e in evaluation.last_episodes
        ],
        "summaries": [vars(summary) for _, summary in evaluation.results],
    }))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
