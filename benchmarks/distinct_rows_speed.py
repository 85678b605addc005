"""Training steps with repeated rows run once (`lmrl_lightning/algorithms/distinct.py`) against every row run, on the
quickstart's FO-Maze data and batches (64 single-turn chunks, the %BC arm on the successful episodes only).

Arms: BC, %BC, MC Returns and ILQL, each a real LightningModule stepped by a Trainer (forward, backward, AdamW step)
on the same fixed batches twice: with the row matching of the library ("distinct") and with it turned off ("every
row", the code before the change: the matcher replaced by one that finds no repeats). The two arms alternate
`--repeats` times; the ratio is the median of per-repeat ratios. The first step's loss of both arms is recorded
(the same function: they must agree). Also: distinct rows per batch.

Run:  python benchmarks/distinct_rows_speed.py      (writes benchmarks/results/distinct_rows_speed.json)
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    RESULTS_DIR, command_line, lightning_trainer, load_average, machine_info, markdown_table, paired_steps,
    quiet_libraries, write_json,
)

quiet_libraries()

import lightning as L  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from bc_throughput import StepTimer  # noqa: E402
from lmrl_lightning.algorithms import BC, ILQL, MCReturns, distinct  # noqa: E402
from lmrl_lightning.algorithms.settings import ILQLValueLearning, Optimisation, ValueLearning  # noqa: E402
from lmrl_lightning.data.collate import collate_chunks  # noqa: E402
from lmrl_lightning.data.datamodule import EpisodeDataModule  # noqa: E402
from lmrl_lightning.data.prepare import prepare_task_data  # noqa: E402
from lmrl_lightning.models.backbone import BackboneConfig  # noqa: E402

ARMS = {"BC": "none", "%BC": "success", "MC": "none", "ILQL": "none"}


def build(arm: str, tokenizer_dir: Path, seed: int):
    L.seed_everything(seed, verbose=False)
    backbone = BackboneConfig("tiny", tokenizer=str(tokenizer_dir))
    if arm in ("BC", "%BC"):
        return BC(backbone, optim=Optimisation(lr=1e-3))
    if arm == "MC":
        return MCReturns(backbone=backbone, optim=Optimisation(lr=3e-4), value=ValueLearning())
    return ILQL(backbone=backbone, optim=Optimisation(lr=3e-4), value=ILQLValueLearning(polyak=0.01))


def batches(data_dir: Path, tokenizer, filter: str, batch_size: int, n: int, seed: int) -> list[dict]:
    """The quickstart's batches: single-turn chunks of the (filtered) dataset, shuffled; `n` of them."""
    dm = EpisodeDataModule(str(data_dir / "train.jsonl"), task="maze", variant="fo", filter=filter,
                           batch_size=batch_size, val_fraction=0.0, seed=seed)
    dm.attach_tokenizer(tokenizer)
    dm.setup()
    chunks = list(dm.train_chunks)
    random.Random(seed).shuffle(chunks)
    chunks *= -(-n * batch_size // len(chunks))  # a small filtered set is cycled, as epochs would
    return [collate_chunks(chunks[i * batch_size:(i + 1) * batch_size], tokenizer.pad_token_id) for i in range(n)]


def distinct_per_batch(batch: dict) -> int:
    found = distinct.distinct_row_index(distinct.token_row_key(batch["input_ids"], batch["attention_mask"]))
    return len(batch["input_ids"]) if found is None else len(found[0])


class FirstLoss(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 0:
            self.loss = float(outputs["loss"])


def run(arm: str, matching: bool, tokenizer_dir: Path, data: list[dict], warmup: int, seed: int) -> dict:
    module = build(arm, tokenizer_dir, seed)
    timer, first = StepTimer(), FirstLoss()
    matcher = distinct.distinct_row_index
    if not matching:
        distinct.distinct_row_index = lambda key: None
    try:
        lightning_trainer(len(data), [timer, first]).fit(module, train_dataloaders=DataLoader(data, batch_size=None))
    finally:
        distinct.distinct_row_index = matcher
    timed = timer.steps[warmup:]
    return {"s_per_step": sum(s["seconds"] for s in timed) / len(timed), "first_loss": first.loss,
            "load_average": load_average()}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--batch-size", type=int, default=64, help="the quickstart's")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=30, help="timed steps per arm and repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS_DIR / "distinct_rows_speed.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="distinct_rows_") as tmp:
        data_dir = Path(tmp) / "maze_fo"
        prepare_task_data("maze", "fo", data_dir, None, seed=0, progress=False)  # the quickstart's dataset
        tokenizer = build("BC", data_dir / "tokenizer", args.seed).tokenizer
        for arm in args.arms.split(","):
            data = batches(data_dir, tokenizer, ARMS[arm], args.batch_size, args.warmup + args.steps, args.seed)
            per_batch = [distinct_per_batch(b) for b in data]
            repeats = []
            for _ in range(args.repeats):
                repeats.append({name: run(arm, matching, data_dir / "tokenizer", data, args.warmup, args.seed)
                                for name, matching in (("every_row", False), ("distinct", True))})
            row = {
                "arm": arm, "batch_size": args.batch_size,
                "mean_distinct_rows": sum(per_batch) / len(per_batch),
                **paired_steps(repeats, "every_row", "distinct"),
            }
            rows.append(row)
            print(f"{arm}: {row['mean_distinct_rows']:.1f} distinct of {args.batch_size} rows; every row "
                  f"{row['every_row_s_per_step'] * 1000:.0f} ms/step, distinct {row['distinct_s_per_step'] * 1000:.0f} "
                  f"ms/step: {row['speedup']:.2f}x; first loss {row['first_loss']['every_row']:.6f} / "
                  f"{row['first_loss']['distinct']:.6f}", flush=True)
    table = markdown_table(
        ["arm", "distinct rows / batch", "every row ms/step", "distinct ms/step", "speedup (paired median)"],
        [[r["arm"], f"{r['mean_distinct_rows']:.1f} / {r['batch_size']}", f"{r['every_row_s_per_step'] * 1000:.0f}",
          f"{r['distinct_s_per_step'] * 1000:.0f}", f"{r['speedup']:.2f}x"] for r in rows],
    )
    print(table)
    payload = {"benchmark": "distinct_rows_speed", "command": command_line(), "machine": machine_info(),
               "config": vars(args), "rows": rows, "table": table}
    write_json(Path(args.out), payload)
    return payload


if __name__ == "__main__":
    main()
