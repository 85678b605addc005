"""BC step time in fp32 against bf16 autocast (`bf16-mixed`) on CPU, through the library's own path.

For each preset, the same Wordle batches (batch 64, the configs' `max_length` 128) train `BC` in a Lightning
`Trainer` with `precision=32-true` and `precision=bf16-mixed`; arms alternate `--repeats` times and the median
seconds per optimiser step (forward, backward, AdamW; data loading excluded) after `--warmup` steps is reported,
with the bf16/fp32 ratio per repeat. Data: `lmrl data wordle` games generated into `--workdir` (default: a temp dir).

Run:  python benchmarks/bc_precision.py            (writes benchmarks/results/bc_precision.json)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, command_line, machine_info, quiet_libraries, write_json  # noqa: E402

quiet_libraries()

import lightning as L  # noqa: E402
import torch  # noqa: E402

from lmrl_lightning.algorithms import BC  # noqa: E402
from lmrl_lightning.algorithms.settings import Optimisation  # noqa: E402
from lmrl_lightning.data.datamodule import EpisodeDataModule  # noqa: E402
from lmrl_lightning.data.prepare import prepare_task_data  # noqa: E402
from lmrl_lightning.models.backbone import BackboneConfig  # noqa: E402


class StepTimer(L.Callback):
    """Wall time of each training step after the first `warmup`."""

    def __init__(self, warmup: int):
        self.warmup, self.seconds, self.started = warmup, [], 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            self.seconds.append(time.perf_counter() - self.started)


def seconds_per_step(preset: str, precision: str, data: Path, args) -> float:
    L.seed_everything(args.seed, verbose=False)
    module = BC(backbone=BackboneConfig(preset, tokenizer=str(data / "tokenizer"), max_positions=128),
                optim=Optimisation(lr=1e-3, warmup_steps=100))
    datamodule = EpisodeDataModule(str(data / "train.jsonl"), task="wordle", batch_size=64, max_length=128,
                                   val_fraction=0.0, seed=args.seed)
    timer = StepTimer(args.warmup)
    trainer = L.Trainer(max_steps=args.warmup + args.steps, precision=precision, callbacks=[timer], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, accelerator="cpu", devices=1)
    trainer.fit(module, datamodule)
    return statistics.median(timer.seconds)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="tiny-rope,small-rope")
    p.add_argument("--episodes", type=int, default=2000, help="Wordle games to train on")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="timed steps per run")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None)
    p.add_argument("--out", default=str(RESULTS_DIR / "bc_precision.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(args.workdir or tempfile.mkdtemp()) / "wordle"
    if not (data / "train.jsonl").is_file():
        prepare_task_data("wordle", None, data, args.episodes, seed=args.seed, progress=False)
    rows = []
    for preset in args.presets.split(","):
        runs = [{precision: seconds_per_step(preset, precision, data, args) for precision in ("32-true", "bf16-mixed")}
                for _ in range(args.repeats)]
        row = {"preset": preset, "repeats": runs,
               "fp32_s_per_step": statistics.median(r["32-true"] for r in runs),
               "bf16_s_per_step": statistics.median(r["bf16-mixed"] for r in runs),
               "bf16_over_fp32": statistics.median(r["bf16-mixed"] / r["32-true"] for r in runs)}
        rows.append(row)
        print(f"{preset}: fp32 {row['fp32_s_per_step']:.3f} s/step, bf16-mixed {row['bf16_s_per_step']:.3f} s/step, "
              f"ratio {row['bf16_over_fp32']:.2f}", flush=True)
    write_json(Path(args.out), {"benchmark": "bc_precision", "command": command_line(), "machine": machine_info(),
                                "config": vars(args), "threads": torch.get_num_threads(), "rows": rows})


if __name__ == "__main__":
    main()
