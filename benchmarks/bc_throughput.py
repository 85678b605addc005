"""BC training throughput through the real `BC` LightningModule (forward + backward + AdamW step in a Trainer).

For each preset (tiny, small) and each maze chunking (FO: one observation + action per chunk; PO: the last 40
texts + action), batches are built once from generated data and fed in the same order to two arms:

  action: our `BC` module: `action_logits` runs the transformer and projects only the action positions through the
          LM head, then cross-entropy on those rows;
  full:   the same module with `action_logits` replaced by `model(input_ids).logits[:, :-1][action_mask]`
          (full-vocabulary logits at every position, then the masked cross-entropy).

Reported: tokens/s (non-padding tokens) and action tokens/s, over `--steps` timed steps after `--warmup` steps
(per-step wall time from `on_train_batch_start` to `on_train_batch_end`, i.e. forward, backward, optimiser step
and Lightning's own per-step work; data loading excluded), and achieved FLOP/s as a fraction of a matmul peak
measured in the same run (best of several 1024x1024 fp32 `torch.matmul`):

  FLOPs per step = 6 * N_body * P + 6 * d * V * H
    N_body: non-embedding parameters (all parameters minus the token and position embeddings; GPT-2 ties the
            LM head to the token embedding, so it is not in N_body),
    P:      positions the transformer processes (batch x padded length: padding costs compute too),
    d * V:  LM-head parameters, H: positions projected through it (action arm: action positions only;
            full arm: every position, batch x padded length).
  Attention-score matmuls (QK^T and AV, 12 * n_layer * T * d per position for forward + backward) are left out
  of the 6N formula and reported separately as `attention_flops_share`.

Arms are interleaved `--repeats` times; medians are reported, and the ratio of the two arms per repeat.
An optional row `tiny-V50257` (on by default, FO only) resizes the tiny model's vocabulary to GPT-2's 50257
rows to show what the action-only projection buys at a real tokenizer's size.

Run:  python benchmarks/bc_throughput.py                  (writes benchmarks/results/bc_throughput.json)
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    RESULTS_DIR,
    command_line,
    lightning_trainer,
    load_average,
    machine_info,
    markdown_table,
    median,
    quiet_libraries,
    write_json,
)

quiet_libraries()

import lightning as L  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from lmrl_lightning.algorithms.bc import BC, bc_loss  # noqa: E402
from lmrl_lightning.data.collate import collate_chunks  # noqa: E402
from lmrl_lightning.data.datamodule import EpisodeDataModule  # noqa: E402
from lmrl_lightning.data.prepare import prepare_task_data  # noqa: E402
from lmrl_lightning.algorithms.settings import Optimisation  # noqa: E402
from lmrl_lightning.models.backbone import BackboneConfig  # noqa: E402


class FullVocabBC(BC):
    """BC with full-vocabulary logits at every position, masked afterwards (the comparison arm)."""

    def action_logits(self, input_ids, attention_mask, action_mask):
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return logits[:, :-1][action_mask]


class StepTimer(L.Callback):
    """Wall time of each training step and the tokens it processed."""

    def __init__(self):
        self.steps: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        seconds = time.perf_counter() - self._t0
        b, t = batch["input_ids"].shape
        self.steps.append({
            "seconds": seconds,
            "tokens": int(batch["attention_mask"].sum()),
            "positions": b * t,
            "action_tokens": int(batch["action_mask"].sum()),
        })


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--presets", default="tiny,small", help="backbone presets")
    p.add_argument("--variants", default="fo,po", help="maze chunkings: fo (window 1), po (window --po-window)")
    p.add_argument("--po-window", type=int, default=40, help="texts of context per PO chunk")
    p.add_argument("--batch-size", type=int, default=32, help="chunks per batch")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps at the start of each run")
    p.add_argument("--steps", type=int, default=8, help="timed steps per run")
    p.add_argument("--repeats", type=int, default=2, help="interleaved repeats of (action, full)")
    p.add_argument("--arms", default="action,full", help="action (ours), full (full-vocabulary logits)")
    p.add_argument("--large-vocab", type=int, default=50257,
                   help="also run tiny FO with the vocabulary resized to this many rows (0: skip)")
    p.add_argument("--data-episodes", type=int, default=300, help="generated maze episodes")
    p.add_argument("--matmul-size", type=int, default=1024)
    p.add_argument("--matmul-reps", type=int, default=20, help="timed matmuls; the best one gives the peak")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="where to write the generated data (default: a temp dir)")
    p.add_argument("--out", default=str(RESULTS_DIR / "bc_throughput.json"))
    return p.parse_args(argv)


def matmul_peak(n: int, reps: int) -> float:
    """Best-of-`reps` FLOP/s of an n x n fp32 matmul with the default thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        torch.matmul(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def make_batches(data_path: Path, tokenizer, variant: str, window: int, batch_size: int, n_batches: int, seed: int):
    dm = EpisodeDataModule(str(data_path), task="maze", variant=variant, window=window, batch_size=batch_size,
                           val_fraction=0.0, max_length=512, overflow="truncate", seed=seed)
    dm.attach_tokenizer(tokenizer)
    dm.setup()
    chunks = list(dm.train_chunks)
    random.Random(seed).shuffle(chunks)
    need = n_batches * batch_size
    while len(chunks) < need:
        chunks += chunks
    return [collate_chunks(chunks[i * batch_size:(i + 1) * batch_size], tokenizer.pad_token_id) for i in range(n_batches)]


def build_module(arm: str, preset: str, tokenizer_dir: Path, seed: int, vocab: int = 0):
    L.seed_everything(seed, verbose=False)
    cls = BC if arm == "action" else FullVocabBC
    module = cls(BackboneConfig(preset, tokenizer=str(tokenizer_dir)), optim=Optimisation(lr=1e-4))
    if vocab:
        module.model.resize_token_embeddings(vocab, mean_resizing=False)
    return module


def flop_counts(module, batch) -> dict:
    cfg = module.model.config
    emb = module.model.get_input_embeddings().weight
    head = module.model.get_output_embeddings().weight
    n_total = sum(p.numel() for p in module.parameters())
    n_pos_emb = module.model.transformer.wpe.weight.numel() if hasattr(module.model, "transformer") else 0
    n_body = n_total - emb.numel() - n_pos_emb - (0 if head is emb else head.numel())
    return {"n_params": n_total, "n_body": n_body, "n_head": head.numel(), "d_model": cfg.n_embd,
            "n_layer": cfg.n_layer, "vocab_rows": head.shape[0], "tied_head": head is emb}


def run_arm(arm, preset, tokenizer_dir, batches, args, vocab=0):
    module = build_module(arm, preset, tokenizer_dir, args.seed, vocab)
    info = flop_counts(module, batches[0])
    timer = StepTimer()
    loader = DataLoader(batches, batch_size=None, shuffle=False)
    lightning_trainer(args.warmup + args.steps, [timer]).fit(module, train_dataloaders=loader)
    timed = timer.steps[args.warmup:]
    seconds = sum(s["seconds"] for s in timed)
    tokens = sum(s["tokens"] for s in timed)
    positions = sum(s["positions"] for s in timed)
    actions = sum(s["action_tokens"] for s in timed)
    head_positions = actions if arm == "action" else positions
    flops = 6 * info["n_body"] * positions + 6 * info["n_head"] * head_positions
    # QK^T and AV over the padded length, forward (4 L T d per position) + backward (x2)
    attn = sum(12 * info["n_layer"] * (s["positions"] // args.batch_size) * info["d_model"] * s["positions"] for s in timed)
    return {
        "seconds": seconds, "steps": len(timed), "tokens": tokens, "positions": positions, "action_tokens": actions,
        "tokens_per_s": tokens / seconds, "action_tokens_per_s": actions / seconds, "positions_per_s": positions / seconds,
        "step_seconds_median": median([s["seconds"] for s in timed]),
        "flops_6n": flops, "flops_per_s": flops / seconds, "attention_flops_share": attn / (flops + attn),
        "model": info, "load_average": load_average(),
    }


def check_same_loss(preset, tokenizer_dir, batch, seed, vocab=0) -> float:
    """Both arms compute the same loss on the same batch (|difference| returned)."""
    losses = []
    for arm in ("action", "full"):
        m = build_module(arm, preset, tokenizer_dir, seed, vocab).eval()
        with torch.no_grad():
            logits = m.action_logits(batch["input_ids"], batch["attention_mask"], batch["action_mask"])
            losses.append(bc_loss(logits, batch["input_ids"][:, 1:][batch["action_mask"]])[0].item())
    return abs(losses[0] - losses[1])


def main(argv=None) -> dict:
    args = parse_args(argv)
    wall0 = time.perf_counter()
    machine = machine_info()
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    peaks = [matmul_peak(args.matmul_size, args.matmul_reps)]
    print(f"matmul peak ({args.matmul_size}x{args.matmul_size} fp32, {torch.get_num_threads()} threads): "
          f"{peaks[0] / 1e9:.1f} GFLOP/s")

    configs = []  # (label, preset, variant, vocab)
    for variant in variants:
        for preset in presets:
            configs.append((preset, preset, variant, 0))
    if args.large_vocab and "fo" in variants:
        configs.append((f"tiny-V{args.large_vocab}", "tiny", "fo", args.large_vocab))

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        data = {}
        for variant in variants:
            d = workdir / f"maze_{variant}"
            prepare_task_data("maze", variant, d, n_episodes=args.data_episodes, seed=args.seed, progress=False)
            data[variant] = d
        for label, preset, variant, vocab in configs:
            tok_dir = data[variant] / "tokenizer"
            tokenizer = build_module("action", preset, tok_dir, args.seed).tokenizer
            window = 1 if variant == "fo" else args.po_window
            batches = make_batches(data[variant] / "train.jsonl", tokenizer, variant, window, args.batch_size,
                                   args.warmup + args.steps, args.seed)
            loss_diff = check_same_loss(preset, tok_dir, batches[0], args.seed, vocab) if len(arms) > 1 else None
            runs = {a: [] for a in arms}
            for r in range(args.repeats):
                for arm in (arms if r % 2 == 0 else arms[::-1]):
                    runs[arm].append(run_arm(arm, preset, tok_dir, batches, args, vocab))
                peaks.append(matmul_peak(args.matmul_size, args.matmul_reps))
            entry = {"label": label, "preset": preset, "variant": variant, "window": window, "vocab_resized_to": vocab or None,
                     "batch_size": args.batch_size, "mean_length": median([b["input_ids"].shape[1] for b in batches]),
                     "loss_difference_between_arms": loss_diff, "arms": {}}
            for arm, rs in runs.items():
                entry["arms"][arm] = {
                    "tokens_per_s": median([x["tokens_per_s"] for x in rs]),
                    "action_tokens_per_s": median([x["action_tokens_per_s"] for x in rs]),
                    "flops_per_s": median([x["flops_per_s"] for x in rs]),
                    "attention_flops_share": rs[0]["attention_flops_share"],
                    "step_seconds_median": median([x["step_seconds_median"] for x in rs]),
                    "model": rs[0]["model"],
                    "runs": rs,
                }
            if "action" in runs and "full" in runs:
                entry["speedup_action_over_full"] = median(
                    [a["tokens_per_s"] / f["tokens_per_s"] for a, f in zip(runs["action"], runs["full"])])
            results.append(entry)
            msg = ", ".join(f"{a} {entry['arms'][a]['tokens_per_s']:.0f} tok/s" for a in arms)
            print(f"{label} {variant.upper()}: {msg}" + (f", speedup {entry['speedup_action_over_full']:.2f}x"
                                                        if "speedup_action_over_full" in entry else ""))

    peak = max(peaks)
    rows = []
    for e in results:
        for arm in arms:
            a = e["arms"][arm]
            a["fraction_of_matmul_peak"] = a["flops_per_s"] / peak
            rows.append([
                e["label"], e["variant"].upper() + (f" (window {e['window']})" if e["variant"] == "po" else ""),
                f"{a['model']['n_params'] / 1e6:.2f}M", arm, f"{e['mean_length']:.0f}",
                f"{a['tokens_per_s']:.0f}", f"{a['action_tokens_per_s']:.0f}", f"{a['flops_per_s'] / 1e9:.1f}",
                f"{100 * a['fraction_of_matmul_peak']:.0f}%",
                f"{e['speedup_action_over_full']:.2f}x" if arm == "action" and "speedup_action_over_full" in e else "",
            ])
    table = markdown_table(["model", "chunks", "params", "arm", "padded len", "tokens/s", "action tokens/s",
                            "GFLOP/s (6N)", "of matmul peak", "action / full"], rows)
    print()
    print(f"BC training step throughput, batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up, "
          f"medians of {args.repeats} interleaved repeats; matmul peak {peak / 1e9:.1f} GFLOP/s (best of the run)")
    print(table)

    result = {
        "benchmark": "bc_throughput",
        "command": command_line(),
        "machine": machine | {"load_average_at_end": load_average()},
        "config": vars(args),
        "flop_formula": "6 * N_body * positions + 6 * d_model * V * head_positions; N_body = params - token and "
                        "position embeddings (LM head tied to the token embedding); positions = batch x padded length; "
                        "head_positions = action positions (action arm) or all positions (full arm); attention "
                        "score matmuls excluded (attention_flops_share gives their size)",
        "matmul_peak_flops": peak,
        "matmul_peaks_measured": peaks,
        "results": results,
        "table_markdown": table,
        "wall_seconds": round(time.perf_counter() - wall0, 1),
    }
    path = write_json(Path(args.out), result)
    print(f"\nwrote {path} (wall {result['wall_seconds']}s)")
    return result


if __name__ == "__main__":
    main()
