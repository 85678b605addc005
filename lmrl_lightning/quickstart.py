"""`lmrl quickstart`: the maze end to end on 2 CPU cores in a few minutes.

Generates the maze dataset, trains BC and filtered BC (successful episodes only) on the tiny default model (and,
when asked, MC Returns and ILQL starting from the BC checkpoint), evaluates each with the paper's protocol
(`episodes` sampled episodes, start-major over the 25 start positions: 800 = 25 x 32) and prints raw return,
success rate and normalised score beside the paper's numbers. The learning rate falls along a cosine after the
warm-up (`decay`; `benchmarks/maze_scores.py`, which runs the same `run_algorithms`, keeps it constant unless told).

ILQL and MC are not in the default list: their values need thousands of steps to propagate back from the goal
(ILQL FO: normalised 81.1 after 4000 steps, 100.0 after 16000; benchmarks/results/maze_scores_fo*.json), more
than the quickstart's 10-minute budget on 2 CPU cores.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

from lmrl_lightning.algorithms import BC, ILQL, ILQLValueLearning, MCReturns, Optimisation
from lmrl_lightning.atomic import atomic_write_json
from lmrl_lightning.callbacks import BetaSweep, RolloutEvaluation
from lmrl_lightning.data.datamodule import EpisodeDataModule
from lmrl_lightning.data.prepare import TOKENIZER_DIR, TRAIN_FILE, prepare_task_data
from lmrl_lightning.evaluation import EvaluationProtocol
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.models.backbone import BackboneConfig
from lmrl_lightning.registry import get_task

# Paper Table 2 (normalised) and Table 4 (raw return), maze rows.
PAPER = {
    "fo": {"BC": (58.2, -72.1), "%BC": (68.9, -56.4), "MC": (75.0, -48.1), "ILQL": (99.9, -6.97)},
    "po": {"BC": (53.1, -79.5), "%BC": (50.1, -82.9), "MC": (52.4, -80.3), "ILQL": (76.3, -52.9)},
}
DEFAULT_STEPS = 800
DEFAULT_VALUE_STEPS = 600
# A model trained from scratch takes a larger step than the paper's 1e-4 for fine-tuning pretrained GPT-2.
LEARNING_RATE = 1e-3
VALUE_LEARNING_RATE = 3e-4
# Targets track the online networks faster than the paper's 0.005 (thousands of steps here, not 50-100 epochs);
# 0.05 with lr 1e-3 was unstable (measured: every episode failed after 600 steps).
VALUE_POLYAK = 0.01
DEFAULT_BETA = 8.0  # maze scripts
# The quickstart's learning rate falls to 0 along a cosine after the warm-up: over three seeds its BC scored
# 47.8 +- 2.1 against 43.7 +- 12.6 at a constant rate (benchmarks/results/maze_scores_fo*seed*.json).
QUICKSTART_DECAY = "cosine"


def make_module(algorithm: str, tokenizer_dir: Path, init_from: Optional[Path], beta: Optional[float] = None,
                polyak: float = VALUE_POLYAK, forced_targets: str = "target", decay: str = "none",
                preset: str = "tiny"):
    """The module of one quickstart row: BC/%BC from scratch on the `preset` model, MC/ILQL from the BC checkpoint (maze script
    settings: gamma 0.99 per token, tau 0.95, no CQL term, beta 8 unless given, head bias 0; ILQL's targets move
    `polyak` of the way each step, V's targets at forced tokens are `forced_targets`' Q); the learning rate warms up
    for 50 steps, then follows `decay`."""
    beta = DEFAULT_BETA if beta is None else beta
    if algorithm in ("BC", "%BC"):
        optim = Optimisation(LEARNING_RATE, warmup_steps=50, decay=decay)
        return BC(BackboneConfig(preset, tokenizer=str(tokenizer_dir)), optim=optim)
    if init_from is None:
        raise ValueError(f"{algorithm} starts from a BC checkpoint")
    value_optim = Optimisation(VALUE_LEARNING_RATE, warmup_steps=50, decay=decay)
    if algorithm == "MC":
        return MCReturns(init_from=str(init_from), optim=value_optim, beta=beta)
    if algorithm == "ILQL":
        value = ILQLValueLearning(tau=0.95, polyak=polyak, forced_targets=forced_targets)
        return ILQL(init_from=str(init_from), optim=value_optim, value=value, beta=beta)
    raise ValueError(f"unknown quickstart algorithm {algorithm!r}")


def train_and_evaluate(
    name: str, data_dir: Path, out: Path, variant: str, filter: str, steps: int, episodes: int, seed: int,
    init_from: Optional[Path] = None, beta: Optional[float] = None, beta_sweep: Sequence[float] = (),
    accelerator: str = "cpu", polyak: float = VALUE_POLYAK, decay: str = "none", preset: str = "tiny",
) -> dict:
    """Train one algorithm (BC, %BC, MC, ILQL) and evaluate it; returns its summary and checkpoint as a dict.
    For MC/ILQL with `beta_sweep`, the decoding beta is first chosen by a sweep of 100 episodes (4 per start) on
    policy seed `seed + 1`."""
    L.seed_everything(seed, verbose=False)
    slug = name.replace("%", "filtered_").lower()
    module = make_module(name, data_dir / TOKENIZER_DIR, init_from, beta, polyak, decay=decay, preset=preset)
    data = EpisodeDataModule(str(data_dir / TRAIN_FILE), task="maze", variant=variant, filter=filter, batch_size=64)
    protocol = EvaluationProtocol("maze", variant, episodes, batch_size=1024)
    evaluation = RolloutEvaluation(protocol, every_n_epochs=0)
    sweep = (
        [BetaSweep(dataclasses.replace(protocol, episodes=100, policy_seed=seed + 1), beta_sweep)]
        if beta_sweep and name in ("MC", "ILQL") else []
    )
    trainer = make_trainer(out, slug, steps, accelerator, [*sweep, evaluation])
    start = time.time()
    trainer.fit(module, data)
    summary = evaluation.results[-1][1]
    row = {"algorithm": name, "filter": filter, "steps": steps, "train_chunks": len(data.train_chunks),
           "seconds": time.time() - start, "checkpoint": str(out / "checkpoints" / f"{slug}.ckpt"), **vars(summary)}
    if name in ("MC", "ILQL"):
        row["beta"] = float(module.decoding_beta)
    if sweep:
        row["beta_sweep"] = {f"{b:g}": s.normalised_score for b, s in sweep[0].results}
    return row


def make_trainer(out: Path, slug: str, steps: int, accelerator: str, callbacks: list) -> L.Trainer:
    """One device, TensorBoard logs under `out/tensorboard/<slug>`, the checkpoint at `out/checkpoints/<slug>.ckpt`;
    `callbacks` come before the checkpoint callback, so their hooks run first, as they always did."""
    return L.Trainer(
        max_steps=steps,
        accelerator=accelerator,
        devices=1,
        logger=TensorBoardLogger(str(out / "tensorboard"), name=slug),
        callbacks=[
            *callbacks,
            ModelCheckpoint(dirpath=str(out / "checkpoints"), filename=slug, enable_version_counter=False),
            TQDMProgressBar(refresh_rate=25),
        ],
        enable_model_summary=False,
        log_every_n_steps=25,
    )


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


def prepare_maze_data(data_dir: Path, variant: str, seed: int) -> None:
    if (data_dir / TRAIN_FILE).is_file() and (data_dir / TOKENIZER_DIR).is_dir():
        print("      (already there, reused)")
    else:
        print(get_task("maze").format_stats(prepare_task_data("maze", variant, data_dir, seed=seed)))


def run_algorithms(
    algorithms: list[str], out_dir: Path, variant: str, episodes: int, steps: int, value_steps: int, seed: int,
    first_stage: int = 2, n_stages: Optional[int] = None, betas: Optional[dict[str, float]] = None,
    beta_sweep: Sequence[float] = (), accelerator: str = "cpu", on_row: Optional[Callable[[list[dict]], None]] = None,
    bc_checkpoint: Optional[Path] = None, decay: str = "none", preset: str = "tiny",
) -> list[dict]:
    """Train and evaluate each algorithm in order (BC and %BC on the `preset` model); MC and ILQL start from the BC
    row's checkpoint (or `bc_checkpoint`, when given, from an earlier run) and decode with `betas[name]` (default
    `DEFAULT_BETA`).
    `on_row(rows)` runs after each row, so a long run keeps what it has."""
    data_dir = out_dir / "data" / f"maze_{variant}"
    n_stages = n_stages or first_stage + len(algorithms) - 1
    rows: list[dict] = []
    for i, name in enumerate(algorithms, start=first_stage):
        value = name in ("MC", "ILQL")
        bc_rows = [r for r in rows if r["algorithm"] == "BC"]
        if value and not bc_rows and bc_checkpoint is None:
            raise LMRLError(f"{name} starts from the BC checkpoint: put BC before it in the list")
        init_from = Path(bc_rows[0]["checkpoint"]) if bc_rows else bc_checkpoint
        n = value_steps if value else steps
        origin = " from the BC checkpoint" if value else ""
        print(f"[{i}/{n_stages}] {name}: train {n} steps{origin}, then evaluate {episodes} episodes (25 starts)")
        rows.append(train_and_evaluate(
            name, data_dir, out_dir, variant, "success" if name == "%BC" else "none", n, episodes, seed,
            init_from if value else None, (betas or {}).get(name), beta_sweep, accelerator, decay=decay, preset=preset,
        ))
        if on_row is not None:
            on_row(rows)
    return rows


DEFAULT_ALGORITHMS = ("BC", "%BC")


def run_quickstart(
    out: str = "runs/quickstart", variant: str = "fo", episodes: int = 800, steps: Optional[int] = None,
    value_steps: Optional[int] = None, seed: int = 0, algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
    decay: str = QUICKSTART_DECAY,
) -> list[dict]:
    started = time.time()
    out_dir = Path(out)
    data_dir = out_dir / "data" / f"maze_{variant}"
    print(f"[1/{1 + len(algorithms)}] maze {variant.upper()} dataset -> {data_dir}")
    prepare_maze_data(data_dir, variant, seed)
    rows = run_algorithms(
        list(algorithms), out_dir, variant, episodes, steps or DEFAULT_STEPS, value_steps or DEFAULT_VALUE_STEPS, seed,
        decay=decay,
    )
    table = format_table(rows, variant)
    atomic_write_json(out_dir / "results.json", rows)
    print()
    print(table)
    print("\nnormalised score: 0 = worst return, 50 = dataset average, 100 = BFS optimum (spec §2.9)")
    print(f"results: {out_dir / 'results.json'}   checkpoints: {out_dir / 'checkpoints'}")
    print(f"TensorBoard logs: tensorboard --logdir {out_dir / 'tensorboard'}")
    print(f"total wall time: {time.time() - started:.0f} s")
    return rows
