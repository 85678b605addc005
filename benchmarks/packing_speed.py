"""Training steps with the padding skipped (`lmrl_lightning/algorithms/packing.py`: short rows packed side by side,
or the padding mask dropped) against the padded, masked batch, on the tasks' own data and batches (Car Dealer, Twenty
Questions and PO Text-Nav by default; Wordle and PO Maze on request).

For each task: the example BC config's data settings (batch size, max length, window) and backbone (preset, max
positions), a dataset made by `lmrl data`'s generator (`--episodes` of it, seed 0), and `--steps` fixed batches in
the data module's order. Arms: BC and ILQL (the ILQL config's value settings; the trunk, its target and the frozen
policy all run the same way), each a LightningModule stepped by a Trainer (forward, backward, AdamW step) on the
same batches four times: padded (the code before the change: every batch with its padding mask), unmasked (every
batch without its mask), packed (every batch whose rows pack into fewer, the rest padded) and the library's choice
(packed when that leaves at most `PACK_AT_MOST` of the rows, else unmasked). The four alternate `--repeats` times;
the library's ratio to padded is the median of per-repeat ratios. The first step's loss of every arm is recorded (the
same function: they must agree). Also: real tokens per padded position, and rows per batch before and after packing.

Run:  python benchmarks/packing_speed.py      (writes benchmarks/results/packing_speed.json)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    RESULTS_DIR, command_line, lightning_trainer, load_average, machine_info, markdown_table, median, paired_steps,
    quiet_libraries, write_json,
)

quiet_libraries()

import lightning as L  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from bc_throughput import StepTimer  # noqa: E402
from distinct_rows_speed import FirstLoss  # noqa: E402
from lmrl_lightning.algorithms import BC, ILQL, packing  # noqa: E402
from lmrl_lightning.algorithms.settings import ILQLValueLearning, Optimisation  # noqa: E402
from lmrl_lightning.data.collate import collate_chunks  # noqa: E402
from lmrl_lightning.data.datamodule import EpisodeDataModule  # noqa: E402
from lmrl_lightning.data.prepare import prepare_task_data  # noqa: E402
from lmrl_lightning.models.backbone import BackboneConfig  # noqa: E402

CONFIGS = Path(__file__).resolve().parent.parent / "examples" / "configs"
# Task -> (example config prefix, variant).
TASKS = {"car_dealer": ("car_dealer", None), "twenty_questions": ("twenty_questions", None),
         "textnav": ("textnav_po", "po"), "wordle": ("wordle", None), "maze": ("maze_po", "po")}


def config(prefix: str, algorithm: str) -> dict:
    return yaml.safe_load((CONFIGS / f"{prefix}_{algorithm}.yaml").read_text())


def build(arm: str, prefix: str, tokenizer_dir: Path, seed: int):
    L.seed_everything(seed, verbose=False)
    backbone = config(prefix, "bc")["model"]["init_args"]["backbone"]
    backbone = BackboneConfig(backbone["name_or_path"], tokenizer=str(tokenizer_dir),
                              max_positions=backbone.get("max_positions", 512), dropout=backbone.get("dropout", 0.0))
    if arm == "BC":
        return BC(backbone, optim=Optimisation(lr=1e-3))
    value = config(prefix, "ilql")["model"]["init_args"]["value"]
    return ILQL(backbone=backbone, optim=Optimisation(lr=3e-4), value=ILQLValueLearning(**value))


def batches(task: str, prefix: str, data_dir: Path, tokenizer, n: int, seed: int) -> list[dict]:
    """The first `n` batches of the example config's data module (shuffled chunks, its batch size)."""
    settings = config(prefix, "bc")["data"]["init_args"]
    dm = EpisodeDataModule(str(data_dir / "train.jsonl"), task=task, variant=settings.get("variant"),
                           window=settings.get("window", "task"), max_length=settings["max_length"],
                           overflow=settings.get("overflow", "error"), batch_size=settings["batch_size"],
                           val_fraction=0.0, seed=seed)
    dm.attach_tokenizer(tokenizer)
    dm.setup()
    torch.manual_seed(seed)
    loader = dm.train_dataloader()
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            return out
    raise SystemExit(f"{task}: {len(out)} batches in the dataset, {n} needed: raise --episodes")


def packed_rows(batch: dict) -> int:
    lengths = batch["attention_mask"].sum(1).tolist()
    return len(packing.first_fit_decreasing(lengths, batch["input_ids"].shape[1]))


def padded(model, ids, mask):
    return None


def unmasked(model, ids, mask):
    return None if packing.right_padded_lengths(mask) is None else packing.unmasked_hidden(model, ids)


def packed(model, ids, mask):
    lengths = packing.right_padded_lengths(mask)
    bins = packing.first_fit_decreasing(lengths, ids.shape[1]) if lengths is not None else None
    return packing.packed_hidden(model, ids, lengths, bins) if bins and len(bins) < len(lengths) else None


SHAPES = {"padded": padded, "unmasked": unmasked, "packed": packed, "library": packing.padding_skipped_hidden}


def run(arm: str, shape: str, prefix: str, tokenizer_dir: Path, data: list[dict], warmup: int, seed: int) -> dict:
    module = build(arm, prefix, tokenizer_dir, seed)
    timer, first = StepTimer(), FirstLoss()
    packing.padding_skipped_hidden = SHAPES[shape]
    try:
        lightning_trainer(len(data), [timer, first]).fit(module, train_dataloaders=DataLoader(data, batch_size=None))
    finally:
        packing.padding_skipped_hidden = SHAPES["library"]
    timed = timer.steps[warmup:]
    return {"s_per_step": sum(s["seconds"] for s in timed) / len(timed), "first_loss": first.loss,
            "load_average": load_average()}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="car_dealer,twenty_questions,textnav", help=f"some of {', '.join(TASKS)}")
    p.add_argument("--arms", default="BC,ILQL")
    p.add_argument("--episodes", type=int, default=1000, help="dataset episodes generated per task")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=10, help="timed steps per arm and repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS_DIR / "packing_speed.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="packing_speed_") as tmp:
        for task in args.tasks.split(","):
            prefix, variant = TASKS[task]
            data_dir = Path(tmp) / task
            prepare_task_data(task, variant, data_dir, args.episodes, seed=0, progress=False)
            tokenizer = build("BC", prefix, data_dir / "tokenizer", args.seed).tokenizer
            data = batches(task, prefix, data_dir, tokenizer, args.warmup + args.steps, args.seed)
            real = sum(int(b["attention_mask"].sum()) for b in data) / sum(b["input_ids"].numel() for b in data)
            rows_before = sum(len(b["input_ids"]) for b in data) / len(data)
            rows_after = sum(packed_rows(b) for b in data) / len(data)
            for arm in args.arms.split(","):
                repeats = []
                for _ in range(args.repeats):
                    repeats.append({shape: run(arm, shape, prefix, data_dir / "tokenizer", data, args.warmup,
                                               args.seed) for shape in SHAPES})
                row = {
                    "task": task, "arm": arm, "batch_size": int(rows_before), "real_token_fraction": real,
                    "mean_packed_rows": rows_after,
                    **{f"{shape}_s_per_step": median(r[shape]["s_per_step"] for r in repeats) for shape in SHAPES},
                    **paired_steps(repeats, "padded", "library"),
                    "first_loss": {shape: repeats[0][shape]["first_loss"] for shape in SHAPES},
                }
                rows.append(row)
                print(f"{task} {arm}: {real:.2f} real tokens per position, {rows_after:.1f} packed rows of "
                      f"{rows_before:.0f}; ms/step " + ", ".join(
                          f"{shape} {row[f'{shape}_s_per_step'] * 1000:.0f}" for shape in SHAPES)
                      + f": {row['speedup']:.2f}x; first losses {sorted(set(row['first_loss'].values()))}", flush=True)
    table = markdown_table(
        ["task", "arm", "real tokens / position", "rows: padded / packed", *(f"{s} ms/step" for s in SHAPES),
         "library's speedup (paired median)"],
        [[r["task"], r["arm"], f"{r['real_token_fraction']:.2f}", f"{r['batch_size']} / {r['mean_packed_rows']:.1f}",
          *(f"{r[f'{shape}_s_per_step'] * 1000:.0f}" for shape in SHAPES), f"{r['speedup']:.2f}x"] for r in rows],
    )
    print(table)
    payload = {"benchmark": "packing_speed", "command": command_line(), "machine": machine_info(),
               "config": vars(args), "rows": rows, "table": table}
    write_json(Path(args.out), payload)
    return payload


if __name__ == "__main__":
    main()
