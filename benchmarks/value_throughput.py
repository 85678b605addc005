"""Training throughput of the value methods against BC: tokens/s of ILQL (and MC Returns) as a ratio of BC's on the
same model and the same batches, measured in one run, and the memory their heads and copies add.

Arms (each a real LightningModule stepped by a Trainer, forward + backward + AdamW step, see bc_throughput.py):
  bc:         BC (action-only LM-head projection).
  mc:         MCReturns, mlp Q head.
  ilql:       ILQL, mlp Q heads (the paper's): trunk forward/backward, target-trunk forward, next-state forward.
  ilql_tied:  ILQL with Q heads sharing the trunk's output embedding.
Value modules are built without a BC checkpoint (random pi_beta): weights do not change the cost.
Arms are interleaved `--repeats` times; the ratio is the median of per-repeat ratios to BC.

Memory: parameters (fp32 bytes) of each part, and the extra bytes of an arm over BC counting AdamW's two states
for trainable parameters. `--large-vocab` adds the head sizes at a GPT-2 vocabulary (50257 rows, d = 768).

Run:  python benchmarks/value_throughput.py      (writes benchmarks/results/value_throughput.json)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    RESULTS_DIR, command_line, lightning_trainer, load_average, machine_info, markdown_table, median,
    quiet_libraries, write_json,
)

quiet_libraries()

import lightning as L  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from bc_throughput import StepTimer, make_batches  # noqa: E402
from lmrl_lightning.algorithms import BC, ILQL, MCReturns  # noqa: E402
from lmrl_lightning.data.prepare import prepare_task_data  # noqa: E402
from lmrl_lightning.algorithms.settings import ILQLValueLearning, Optimisation  # noqa: E402
from lmrl_lightning.models.backbone import BackboneConfig  # noqa: E402
from lmrl_lightning.models.heads import count_parameters, make_q_head  # noqa: E402


def build(arm: str, preset: str, tokenizer_dir: Path, seed: int):
    L.seed_everything(seed, verbose=False)
    backbone = BackboneConfig(preset, tokenizer=str(tokenizer_dir))
    if arm == "bc":
        return BC(backbone, optim=Optimisation(lr=1e-4))
    if arm == "mc":
        return MCReturns(backbone=backbone, optim=Optimisation(lr=1e-4))
    if arm in ("ilql", "ilql_tied"):
        head = "tied" if arm == "ilql_tied" else "mlp"
        return ILQL(backbone=backbone, optim=Optimisation(lr=1e-4), value=ILQLValueLearning(head=head))
    raise ValueError(arm)


def memory(module) -> dict:
    """Parameter counts per part, and fp32 bytes of parameters + AdamW states of trainable ones."""
    parts = {name: count_parameters(child) for name, child in module.named_children() if count_parameters(child)}
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.parameters())
    return {"parameters": parts, "total": total, "trainable": trainable, "bytes_with_adamw": 4 * (total + 2 * trainable)}


def run_arm(arm, preset, tokenizer_dir, batches, warmup, steps, seed) -> dict:
    module = build(arm, preset, tokenizer_dir, seed)
    timer = StepTimer()
    lightning_trainer(warmup + steps, [timer]).fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    timed = timer.steps[warmup:]
    seconds = sum(s["seconds"] for s in timed)
    return {"tokens_per_s": sum(s["tokens"] for s in timed) / seconds, "seconds": seconds,
            "memory": memory(module), "load_average": load_average()}


def head_sizes(vocab: int, dim: int) -> dict:
    embedding = torch.zeros(vocab, dim)
    return {kind: count_parameters(make_q_head(kind, dim, vocab, 0.0, lambda: embedding)) for kind in ("linear", "mlp", "tied")}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="tiny:fo,small:po", help="preset:variant pairs")
    p.add_argument("--arms", default="bc,mc,ilql,ilql_tied")
    p.add_argument("--po-window", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--data-episodes", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS_DIR / "value_throughput.json"))
    args = p.parse_args(argv)
    wall0 = time.perf_counter()
    arms = args.arms.split(",")
    results, rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs.split(","):
            preset, variant = config.split(":")
            data = Path(tmp) / f"maze_{variant}"
            if not data.exists():
                prepare_task_data("maze", variant, data, n_episodes=args.data_episodes, seed=args.seed, progress=False)
            tokenizer = build("bc", preset, data / "tokenizer", args.seed).tokenizer
            window = 1 if variant == "fo" else args.po_window
            batches = make_batches(data / "train.jsonl", tokenizer, variant, window, args.batch_size,
                                   args.warmup + args.steps, args.seed)
            runs = {a: [] for a in arms}
            for r in range(args.repeats):
                for arm in (arms if r % 2 == 0 else arms[::-1]):
                    runs[arm].append(run_arm(arm, preset, data / "tokenizer", batches, args.warmup, args.steps, args.seed))
            entry = {"preset": preset, "variant": variant, "window": window, "batch_size": args.batch_size, "arms": {}}
            bc_bytes = runs["bc"][0]["memory"]["bytes_with_adamw"] if "bc" in runs else None
            for arm, rs in runs.items():
                a = {"tokens_per_s": median([x["tokens_per_s"] for x in rs]), "memory": rs[0]["memory"], "runs": rs}
                if "bc" in runs:
                    a["ratio_to_bc"] = median([x["tokens_per_s"] / b["tokens_per_s"] for x, b in zip(rs, runs["bc"])])
                    a["extra_bytes_over_bc"] = a["memory"]["bytes_with_adamw"] - bc_bytes
                entry["arms"][arm] = a
                rows.append([preset, variant.upper(), arm, f"{a['tokens_per_s']:.0f}", f"{a.get('ratio_to_bc', 1):.2f}",
                             f"{a['memory']['total'] / 1e6:.2f}M", f"{a.get('extra_bytes_over_bc', 0) / 2**20:.1f}"])
            results.append(entry)
    table = markdown_table(["model", "maze", "arm", "tokens/s", "ratio to BC", "parameters", "extra MiB (AdamW)"], rows)
    large = head_sizes(50257, 768)
    print(table)
    print(f"Q-head parameters at V=50257, d=768: {large}")
    out = {
        "benchmark": "value_throughput", "command": command_line(), "machine": machine_info() | {"load_average_at_end": load_average()},
        "config": vars(args), "results": results, "q_head_parameters_gpt2_vocab": large, "table_markdown": table,
        "wall_seconds": round(time.perf_counter() - wall0, 1),
    }
    path = write_json(Path(args.out), out)
    print(f"wrote {path} (wall {out['wall_seconds']}s)")
    return out


if __name__ == "__main__":
    main()
