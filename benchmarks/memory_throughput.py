"""Peak memory and training tokens/s of BC and ILQL on a GPT-2-small-sized model (12 layers, d 768, vocabulary
50257, 124M parameters) in fp32, LoRA, LoRA + 8-bit and LoRA + 4-bit, side by side in one run.

Each configuration runs in its own process (peak resident memory is per process: CPU RSS, plus the CUDA peak
allocation with `--device cuda`, the default where a GPU is present, which also adds a LoRA + bf16 row), on the same random batch: `--warmup` optimiser steps, then `--steps` timed ones through
the module's `training_step` and a plain AdamW step. ILQL uses the tied Q head (the MLP heads alone would add
312M parameters at this vocabulary: see value_throughput.json); LoRA rank 8 on c_attn, c_proj and c_fc.

Run:  python benchmarks/memory_throughput.py            (writes benchmarks/results/memory_throughput.json)
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, command_line, machine_info, markdown_table, quiet_libraries, write_json  # noqa: E402

# (name, LoRA, quantization, dtype); the bf16 row runs on CUDA only.
CONFIGS = [
    ("fp32", False, None, "float32"), ("LoRA", True, None, "float32"), ("LoRA + 8-bit", True, "8bit", "float32"),
    ("LoRA + 4-bit", True, "4bit", "float32"), ("LoRA + bf16", True, None, "bfloat16"),
]


def make_model_dir(root: Path) -> Path:
    """A randomly initialised GPT-2-small-sized model with a small task tokenizer (ids stay below its vocab)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from lmrl_lightning.models.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer([f"move {d}\n" for d in ("up", "down", "left", "right")] * 20, 300)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50257, n_positions=256, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(str(root))
    tokenizer.save_pretrained(str(root))
    return root


def run_one(model_dir: str, algorithm: str, lora: bool, quantization, dtype: str, device: str, batch: int,
            length: int, warmup: int, steps: int) -> dict:
    import torch

    from lmrl_lightning.algorithms import BC, ILQL
    from lmrl_lightning.models.backbone import BackboneConfig
    from lmrl_lightning.models.lora import LoraSettings

    torch.manual_seed(0)
    backbone = BackboneConfig(model_dir, lora=LoraSettings(r=8) if lora else None, quantization=quantization,
                              dtype=dtype)
    module = BC(backbone) if algorithm == "BC" else ILQL(backbone=backbone, head="tied")
    if quantization:  # the quantized base is already where bitsandbytes put it; move the rest
        for name, child in module.named_children():
            if name != "model":
                child.to(device)
    else:
        module.to(device)
    module.train()
    ids = torch.randint(3, 290, (batch, length))
    is_action = torch.zeros(batch, length - 1, dtype=torch.bool)
    is_action[:, length // 2:] = True  # the second half of every sequence is the agent's
    rewards = torch.zeros(batch, length - 1)
    rewards[:, -1] = -1.0
    nxt = torch.arange(1, length, dtype=torch.long).expand(batch, -1).clone()
    nxt[:, -1] = -1
    data = {
        "input_ids": ids, "attention_mask": torch.ones_like(ids, dtype=torch.bool), "action_mask": is_action,
        "rewards": rewards, "next_action_index": torch.where(is_action, nxt, torch.full_like(nxt, -1)),
        "dones": torch.ones(batch, dtype=torch.bool), "next_state_ids": torch.zeros(batch, 1, dtype=torch.long),
        "next_state_mask": torch.zeros(batch, 1, dtype=torch.bool), "has_next_state": torch.zeros(batch, dtype=torch.bool),
        "later_action_lengths": torch.zeros(batch, 1, dtype=torch.long),
        "later_action_rewards": torch.zeros(batch, 1),
    }
    data = {k: v.to(device) for k, v in data.items()}
    module.log = lambda *a, **k: None  # no Trainer: training_step's logging is a no-op here
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    times = []
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for i in range(warmup + steps):
        start = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            loss = module.training_step(data, i)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if algorithm == "ILQL":
            module.update_targets()
        sync()
        times.append(time.perf_counter() - start)
    timed = times[warmup:]
    total = sum(p.numel() for p in module.parameters())
    return {
        "algorithm": algorithm, "lora": lora, "quantization": quantization, "dtype": dtype, "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "trainable_parameters": sum(p.numel() for p in params), "module_parameters": total,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "step_seconds_median": sorted(timed)[len(timed) // 2],
        "tokens_per_second": batch * length / (sum(timed) / len(timed)),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--algorithms", default="BC,ILQL")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    p.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--results", default=None)
    args = p.parse_args(argv)
    quiet_libraries()
    if args.one:
        algorithm, lora, quantization, dtype = json.loads(args.one)
        print("RESULT " + json.dumps(run_one(args.model_dir, algorithm, lora, quantization, dtype, args.device,
                                              args.batch, args.length, args.warmup, args.steps)))
        return
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"

    started = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_model_dir(Path(tmp) / "gpt2-small")
        for algorithm in args.algorithms.split(","):
            for name, lora, quantization, dtype in CONFIGS:
                if dtype == "bfloat16" and args.device != "cuda":
                    continue
                one = json.dumps([algorithm, lora, quantization, dtype])
                proc = subprocess.run(
                    [sys.executable, __file__, "--one", one, "--model-dir", str(model_dir), "--batch", str(args.batch),
                     "--length", str(args.length), "--warmup", str(args.warmup), "--steps", str(args.steps),
                     "--device", args.device],
                    capture_output=True, text=True,
                )
                lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
                if proc.returncode != 0 or not lines:
                    raise SystemExit(f"{algorithm} {name} failed:\n{proc.stderr[-3000:]}")
                rows.append({"config": name, **json.loads(lines[0][len("RESULT "):])})
                r = rows[-1]
                cuda_peak = f"  CUDA peak {r['cuda_peak_mib']:7.0f} MiB" if r["cuda_peak_mib"] is not None else ""
                print(f"{algorithm:5} {name:13} peak RSS {r['peak_rss_mib']:7.0f} MiB{cuda_peak}  "
                      f"{r['tokens_per_second']:8.0f} tokens/s  trainable {r['trainable_parameters'] / 1e6:7.2f}M",
                      flush=True)
    table = markdown_table(
        ["algorithm", "config", "peak RSS MiB", "CUDA peak MiB", "tokens/s", "trainable params", "vs fp32 tokens/s"],
        [[r["algorithm"], r["config"], f"{r['peak_rss_mib']:.0f}",
          "-" if r["cuda_peak_mib"] is None else f"{r['cuda_peak_mib']:.0f}", f"{r['tokens_per_second']:.0f}",
          f"{r['trainable_parameters'] / 1e6:.2f}M",
          f"{r['tokens_per_second'] / next(x for x in rows if x['algorithm'] == r['algorithm'] and x['config'] == 'fp32')['tokens_per_second']:.2f}x"]
         for r in rows],
    )
    print()
    print(table)
    payload = {"benchmark": "memory_throughput", "command": command_line(), "machine": machine_info(),
               "config": vars(args), "rows": rows, "table": table, "wall_seconds": round(time.time() - started, 1)}
    path = write_json(Path(args.results) if args.results else RESULTS_DIR / "memory_throughput.json", payload)
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
