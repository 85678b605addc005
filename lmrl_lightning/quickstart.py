"""`lmrl quickstart`: the maze end to end on 2 CPU cores in a few minutes.

Generates the maze dataset, trains BC and filtered BC (successful episodes only) on the tiny default model,
evaluates both with the paper's protocol (25 start positions x `rollouts` sampled episodes) and prints raw
return, success rate and normalised score beside the paper's numbers.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

from lmrl_lightning.algorithms.bc import BC
from lmrl_lightning.callbacks import RolloutEvaluation
from lmrl_lightning.data.datamodule import EpisodeDataModule
from lmrl_lightning.data.prepare import TOKENIZER_DIR, TRAIN_FILE, prepare_task_data
from lmrl_lightning.models.backbone import BackboneConfig
from lmrl_lightning.registry import get_task

# Paper Table 2 (normalised) and Table 4 (raw return), maze rows.
PAPER = {
    "fo": {"BC": (58.2, -72.1), "%BC": (68.9, -56.4)},
    "po": {"BC": (53.1, -79.5), "%BC": (50.1, -82.9)},
}
DEFAULT_STEPS = 800
# A model trained from scratch takes a larger step than the paper's 1e-4 for fine-tuning pretrained GPT-2.
LEARNING_RATE = 1e-3


def train_and_evaluate(
    name: str, data_dir: Path, out: Path, variant: str, filter: str, steps: int, rollouts: int, seed: int
) -> dict:
    """Train one BC variant and evaluate it; returns its summary as a dict."""
    L.seed_everything(seed, verbose=False)
    slug = name.replace("%", "filtered_").lower()
    module = BC(BackboneConfig("tiny", tokenizer=str(data_dir / TOKENIZER_DIR)), lr=LEARNING_RATE, warmup_steps=50)
    data = EpisodeDataModule(str(data_dir / TRAIN_FILE), task="maze", variant=variant, filter=filter, batch_size=64)
    evaluation = RolloutEvaluation("maze", variant, n_rollouts=rollouts, every_n_epochs=0, batch_size=1024)
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(str(out / "tensorboard"), name=slug),
        callbacks=[
            evaluation,
            ModelCheckpoint(dirpath=str(out / "checkpoints"), filename=slug, enable_version_counter=False),
            TQDMProgressBar(refresh_rate=25),
        ],
        enable_model_summary=False,
        log_every_n_steps=25,
    )
    start = time.time()
    trainer.fit(module, data)
    summary = evaluation.results[-1][1]
    return {"algorithm": name, "filter": filter, "train_chunks": len(data.train_chunks),
            "seconds": time.time() - start, **vars(summary)}


def format_table(rows: list[dict], variant: str) -> str:
    head = f"{'maze ' + variant.upper():<10}{'return':>9}{'success':>9}{'score':>8}   {'paper score':>11}{'paper return':>13}"
    lines = [head, "-" * len(head)]
    for r in rows:
        paper_score, paper_return = PAPER[variant][r["algorithm"]]
        lines.append(
            f"{r['algorithm']:<10}{r['mean_return']:>9.2f}{r['success_rate']:>9.3f}{r['normalised_score']:>8.1f}"
            f"   {paper_score:>11.1f}{paper_return:>13.1f}"
        )
    return "\n".join(lines)


def run_quickstart(
    out: str = "runs/quickstart", variant: str = "fo", rollouts: int = 32, steps: Optional[int] = None, seed: int = 0
) -> list[dict]:
    started = time.time()
    out_dir = Path(out)
    data_dir = out_dir / "data" / f"maze_{variant}"
    task = get_task("maze")
    print(f"[1/3] maze {variant.upper()} dataset -> {data_dir}")
    if (data_dir / TRAIN_FILE).is_file() and (data_dir / TOKENIZER_DIR).is_dir():
        print("      (already there, reused)")
    else:
        print(task.format_stats(prepare_task_data("maze", variant, data_dir, seed=seed)))
    rows = []
    for i, (name, filter) in enumerate([("BC", "none"), ("%BC", "success")], start=2):
        print(f"[{i}/3] {name}: train {steps or DEFAULT_STEPS} steps, then evaluate 25 starts x {rollouts} rollouts")
        rows.append(train_and_evaluate(name, data_dir, out_dir, variant, filter, steps or DEFAULT_STEPS, rollouts, seed))
    table = format_table(rows, variant)
    (out_dir / "results.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print()
    print(table)
    print(f"\nnormalised score: 0 = worst return, 50 = dataset average, 100 = BFS optimum (spec §2.9)")
    print(f"results: {out_dir / 'results.json'}   checkpoints: {out_dir / 'checkpoints'}")
    print(f"TensorBoard logs: tensorboard --logdir {out_dir / 'tensorboard'}")
    print(f"total wall time: {time.time() - started:.0f} s")
    return rows
