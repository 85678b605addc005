"""Does BC learn what its data shows? Learning curves of BC on a task's offline dataset, one arm per recipe.

Every `--eval-every` optimiser steps each arm records, on held-out games of the same data policy (another seed):
- the action loss per action, split into the first action and the later ones (nats per action): a policy
  that ignores the feedback has equal first- and later-action losses up to the data's own difference (Wordle's
  data: 1.05 nats less on later guesses), so this gap says whether the model uses what it observes;
- an evaluation of `--eval-episodes` episodes with the arm's evaluation decoding: normalised score, success rate
  and (Wordle) the legal- and consistent-guess rates of `guess_quality`.

Arms vary one thing at a time against `baseline` (see ARMS); training is the library's own path (`BC`,
`EpisodeDataModule`, a Lightning `Trainer`). Results: benchmarks/results/learning_capacity_<task>[_<variant>].json.

Run:  python benchmarks/learning_capacity.py --task wordle --arms baseline,small --steps 6000
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, command_line, machine_info, quiet_libraries, write_json  # noqa: E402

quiet_libraries()

import lightning as L  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lmrl_lightning.algorithms import BC  # noqa: E402
from lmrl_lightning.algorithms.settings import Optimisation  # noqa: E402
from lmrl_lightning.data.collate import collate_chunks  # noqa: E402
from lmrl_lightning.data.datamodule import EpisodeDataModule  # noqa: E402
from lmrl_lightning.data.jsonl import iter_episodes  # noqa: E402
from lmrl_lightning.data.prepare import prepare_task_data  # noqa: E402
from lmrl_lightning.data.tokenize import TurnTokenizer, episode_to_chunks  # noqa: E402
from lmrl_lightning.evaluation import EvaluationProtocol, evaluate_module, summarise  # noqa: E402
from lmrl_lightning.models.backbone import BackboneConfig  # noqa: E402
from lmrl_lightning.policies import Decoding  # noqa: E402
from lmrl_lightning.registry import get_task  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Arm:
    """One training recipe."""

    preset: str = "tiny"
    lr: float = 1e-3
    warmup_steps: int = 100
    batch_size: int = 64
    dropout: float = 0.0
    precision: str = "32-true"
    decoding: Optional[str] = None  # None: --decoding


ARMS: dict[str, Arm] = {
    "baseline": Arm(),
    "lr3e-3": Arm(lr=3e-3),
    "lr3e-4": Arm(lr=3e-4),
    "batch256": Arm(batch_size=256),
    "small": Arm(preset="small"),
    "small_bf16": Arm(preset="small", precision="bf16-mixed"),
    "bf16": Arm(precision="bf16-mixed"),
    "sample": Arm(decoding="sample"),
    "rerank_greedy": Arm(decoding="rerank_greedy"),
    "llama": Arm(preset="tiny-rope"),  # Llama blocks, rotary positions, the tiny preset's size
    "llama_lr3e-3": Arm(preset="tiny-rope", lr=3e-3),
    "llama_small": Arm(preset="small-rope"),
}


def per_action_losses(module: BC, chunks, batch_size: int = 128) -> dict[str, float]:
    """Mean action loss (nats per action: the sum over its tokens) of the first action and of the later ones."""
    first, later = [], []
    model = module.model.eval()
    with torch.no_grad():
        for i in range(0, len(chunks), batch_size):
            batch = collate_chunks(chunks[i:i + batch_size], module.tokenizer.pad_token_id)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
            nll = F.cross_entropy(logits.float().transpose(1, 2), batch["input_ids"][:, 1:], reduction="none")
            mask = batch["action_mask"]
            starts = mask & ~torch.nn.functional.pad(mask, (1, 0))[:, :-1]  # first token of each action
            action_index = starts.long().cumsum(1) * mask  # 1 for the first action, 2, ... ; 0 elsewhere
            for row in range(mask.shape[0]):
                sums = torch.zeros(int(action_index[row].max()) + 1)
                sums.index_add_(0, action_index[row], nll[row] * mask[row])
                first.append(float(sums[1]))
                later.extend(float(x) for x in sums[2:])
    model.train()
    return {"first_action_loss": sum(first) / len(first), "later_action_loss": sum(later) / max(len(later), 1)}


class Curve(L.Callback):
    """Records the held-out losses and an evaluation every `every` optimiser steps (and at the end)."""

    def __init__(self, every: int, val_chunks, protocol: EvaluationProtocol, quality, on_point=None,
                 final_episodes: Optional[int] = None):
        self.every, self.val_chunks, self.protocol, self.quality = every, val_chunks, protocol, quality
        self.final_episodes = final_episodes  # the last point's evaluation size (None: as the others)
        self.on_point = on_point  # called after each point (writes the results so far)
        self.points: list[dict[str, Any]] = []
        self.started, self.train_seconds = 0.0, 0.0

    def on_train_start(self, trainer, module) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == trainer.max_steps and self.final_episodes:
            self.record(module, step, dataclasses.replace(self.protocol, episodes=self.final_episodes))
        elif step % self.every == 0 or step == trainer.max_steps:
            self.record(module, step, self.protocol)

    def record(self, module, step: int, protocol: EvaluationProtocol) -> None:
        paused = time.perf_counter()
        self.train_seconds += paused - self.started
        point = {"step": step, "train_seconds": round(self.train_seconds, 1),
                 **per_action_losses(module, self.val_chunks)}
        episodes = evaluate_module(module, protocol)
        summary = summarise(episodes, get_task(protocol.task).normalisation[protocol.variant])
        point.update(eval_episodes=len(episodes), normalised_score=summary.normalised_score,
                     success_rate=summary.success_rate, mean_return=summary.mean_return,
                     std_return=summary.std_return, **(self.quality(episodes) if self.quality else {}))
        self.points.append(point)
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in point.items()}, flush=True)
        if self.on_point:
            self.on_point(self.points)
        module.train()
        self.started = time.perf_counter()


def run_arm(name: str, arm: Arm, args, data_dir: Path, val_chunks, quality, on_point) -> dict[str, Any]:
    L.seed_everything(args.seed, verbose=False)
    backbone = BackboneConfig(arm.preset, tokenizer=str(data_dir / "tokenizer"), dropout=arm.dropout,
                              max_positions=args.max_length)
    module = BC(backbone=backbone, optim=Optimisation(lr=arm.lr, warmup_steps=arm.warmup_steps))
    data = EpisodeDataModule(str(data_dir / "train.jsonl"), task=args.task, variant=args.variant,
                             batch_size=arm.batch_size, max_length=args.max_length, val_fraction=0.0, seed=args.seed)
    decoding = Decoding(arm.decoding or args.decoding or get_task(args.task).default_decoding)
    protocol = EvaluationProtocol(args.task, args.variant, args.eval_episodes, 256, 0, decoding)
    curve = Curve(args.eval_every, val_chunks, protocol, quality, on_point, args.final_eval_episodes)
    trainer = L.Trainer(max_steps=args.steps, precision=arm.precision, callbacks=[curve], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, accelerator="cpu", devices=1)
    trainer.fit(module, data)
    checkpoint = Path(args.work) / f"{args.task}_{name}_seed{args.seed}.ckpt"  # for other decodings: lmrl eval
    trainer.save_checkpoint(checkpoint)
    return {"arm": name, **dataclasses.asdict(arm), "evaluation_decoding": decoding.kind, "steps": args.steps,
            "seed": args.seed, "checkpoint": str(checkpoint),
            "n_parameters": sum(p.numel() for p in module.model.parameters()), "curve": curve.points,
            "final": curve.points[-1] if curve.points else None}


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="wordle")
    p.add_argument("--variant", default=None)
    p.add_argument("--arms", default="baseline", help=f"comma-separated, of {', '.join(ARMS)}")
    p.add_argument("--episodes", type=int, default=200_000, help="training games (the data policy's, seed 0)")
    p.add_argument("--val-episodes", type=int, default=500, help="held-out games of the data policy (seed 1)")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--eval-episodes", type=int, default=400)
    p.add_argument("--final-eval-episodes", type=int, default=None, help="the last point's (default: --eval-episodes)")
    p.add_argument("--decoding", default=None, help="evaluation decoding kind (default: the task's)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--work", default="runs/learning_capacity")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = get_task(args.task)
    args.variant = spec.check_variant(args.variant or spec.variants[0])
    tag = args.task if args.variant == spec.variants[0] else f"{args.task}_{args.variant}"
    out = Path(args.out or RESULTS_DIR / f"learning_capacity_{tag}.json")
    work = Path(args.work) / tag
    data_dir, val_dir = work / f"data_{args.episodes}", work / f"val_{args.val_episodes}"
    for directory, n, seed in ((data_dir, args.episodes, 0), (val_dir, args.val_episodes, 1)):
        if not (directory / "train.jsonl").is_file():
            prepare_task_data(args.task, args.variant, directory, n_episodes=n, seed=seed, progress=False)
    from transformers import AutoTokenizer

    tokenize = TurnTokenizer(AutoTokenizer.from_pretrained(str(data_dir / "tokenizer")))
    window = spec.history_window.get(args.variant)
    val_chunks = [c for e in iter_episodes(val_dir / "train.jsonl")
                  for c in episode_to_chunks(e, tokenize, window, args.max_length)]
    quality = None
    if args.task == "wordle":
        from lmrl_lightning.tasks.wordle.env import guess_quality as quality
    rows: list[dict[str, Any]] = []

    def write(partial: Optional[dict[str, Any]] = None) -> None:
        write_json(out, {"benchmark": "learning_capacity", "command": command_line(), "machine": machine_info(),
                         "config": vars(args), "rows": rows + ([partial] if partial else [])})

    for name in args.arms.split(","):
        started = time.perf_counter()
        on_point = lambda points, name=name: write({"arm": name, "unfinished": True, "curve": points})  # noqa: E731
        rows.append({**run_arm(name, ARMS[name], args, data_dir, val_chunks, quality, on_point),
                     "wall_seconds": round(time.perf_counter() - started, 1)})
        write()

if __name__ == "__main__":
    main()
