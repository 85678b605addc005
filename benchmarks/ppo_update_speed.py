"""PPO's round on FO Maze: rollout seconds against update seconds (issue 15, goal 3: the update no slower than the
rollout), for PPO as it is now and, with `--before-ref REV`, as it was at git revision REV, in the same process.

Each arm trains the same rounds from the same BC checkpoint with the same seed (the README's maze settings: 128
episodes a round re-ranked over the four moves, minibatches of 32, one epoch, lr 1e-4), so both arms roll out the
same first round; the update's time covers scoring the round (old log-probs, the reference's, values) and the
minibatch steps. Arms alternate `--repeats` times (the machine may be shared: the paired ratios are what count).
Whether both compute the same update: on one round's first minibatch, the largest difference of the scored
quantities and of the loss, and the largest relative difference of a parameter's gradient (after a whole round
the weights also differ a little more: Adam turns rounding in near-zero gradients into steps of its learning rate).

With `--profile FILE`, each arm's first repeat runs under cProfile and FILE gets its top functions by own time.

Run:  python benchmarks/ppo_update_speed.py --before-ref HEAD --threads 1   (before/after of uncommitted changes)
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    RESULTS_DIR, command_line, machine_info, median, modules_at_revision, quiet_libraries, resolve_revision,
    write_json,
)

quiet_libraries()

import lightning as L  # noqa: E402
import torch  # noqa: E402

from lmrl_lightning.algorithms import PPO, Optimisation, PPOSettings, Rollouts, Updates  # noqa: E402
from lmrl_lightning.algorithms.ppo import ppo_loss  # noqa: E402
from lmrl_lightning.quickstart import prepare_maze_data, run_algorithms  # noqa: E402


def make_ppo(cls, bc: Path, args) -> PPO:
    """maze_online.py's FO PPO: gamma 0.99, value_coef 0.5, KL 0.001, V bias -1, 32 a minibatch."""
    rollouts = Rollouts("maze", "fo", episodes_per_round=args.episodes_per_round, batch_size=args.episodes_per_round,
                        seed=args.seed)
    ppo = PPOSettings(gamma=0.99, value_coef=0.5, kl_coef=0.001, value_bias=-1.0)
    return cls(init_from=str(bc), optim=Optimisation(1e-4), rollouts=rollouts, updates=Updates(32, max_length=64),
               ppo=ppo)


def train_rounds(cls, bc: Path, args) -> tuple[PPO, list[dict]]:
    L.seed_everything(args.seed, verbose=False)
    module = make_ppo(cls, bc, args)
    trainer = L.Trainer(max_epochs=args.rounds, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module)
    return module, module.round_history


def first_minibatch(cls, bc: Path, args, episodes) -> tuple[dict, float, dict]:
    """One arm's first minibatch of a round of `episodes` (scored quantities), its loss and its gradients. The loss is
    written out here, not taken from the module: an arm from an older revision has only its `forward_actions`."""
    L.seed_everything(args.seed, verbose=False)
    module = make_ppo(cls, bc, args)
    batch = module.prepare_round(episodes, torch.Generator().manual_seed(args.seed))[0]
    policy_mask, mask = module.policy_mask(batch), batch["action_mask"]
    logp, _, values = module.forward_actions(batch)
    loss, _ = ppo_loss(logp, batch["old_logp"][policy_mask], batch["advantages"][policy_mask],
                       values[:, :-1][mask], batch["old_values"][mask], batch["returns"][mask], module.ppo.clip,
                       module.ppo.clip_value, module.ppo.value_coef)
    loss.backward()
    grads = {n: p.grad for n, p in module.named_parameters() if p.grad is not None}
    return batch, loss.item(), grads


def agreement(arms: dict, bc: Path, args) -> dict[str, float]:
    """How far apart the arms' first minibatches are (the same episodes, played by the "now" arm)."""
    L.seed_everything(args.seed, verbose=False)
    episodes = make_ppo(PPO, bc, args).collect()
    (batch, loss, grads), (old_batch, old_loss, old_grads) = (first_minibatch(arms[a], bc, args, episodes)
                                                              for a in ("now", "before"))
    return {
        "scored_max_difference": max((batch[k] - old_batch[k]).abs().max().item()
                                     for k in ("old_logp", "old_values", "advantages", "returns")),
        "loss_difference": abs(loss - old_loss),
        "gradient_max_relative_difference": max(
            ((grads[n] - old_grads[n]).norm() / old_grads[n].norm().clamp(min=1e-12)).item() for n in grads),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before-ref", default=None, type=resolve_revision,
                   help="also time PPO as it is at this git revision (e.g. HEAD)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--episodes-per-round", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="runs/maze_scores", help="where the FO BC checkpoint is (trained if missing)")
    p.add_argument("--bc", default=None, help="an FO maze BC checkpoint to start from instead")
    p.add_argument("--results", default=str(RESULTS_DIR / "ppo_update_speed.json"))
    p.add_argument("--profile", default=None, help="write each arm's first-repeat profile (top functions) here")
    p.add_argument("--top", type=int, default=25, help="functions listed per arm in --profile")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    out_dir = Path(args.out) / "fo"
    bc = Path(args.bc) if args.bc else out_dir / "checkpoints" / "bc.ckpt"
    if not bc.is_file():
        prepare_maze_data(out_dir / "data" / "maze_fo", "fo", args.seed)
        run_algorithms(["BC"], out_dir, "fo", 800, 800, 0, args.seed)
    arms = {"now": PPO}
    if args.before_ref:
        arms["before"] = modules_at_revision(
            args.before_ref, ["lmrl_lightning/policies/rerank.py", "lmrl_lightning/algorithms/ppo.py"])["ppo"].PPO
    runs: dict[str, list[dict]] = {name: [] for name in arms}
    weights, profiles = {}, []
    for repeat in range(args.repeats):
        for name, cls in arms.items():
            profiler = cProfile.Profile() if args.profile and repeat == 0 else None
            if profiler:
                profiler.enable()
            module, history = train_rounds(cls, bc, args)
            if profiler:
                profiler.disable()
                text = io.StringIO()
                pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(args.top)
                profiles.append(f"## {name}: one round of {args.episodes_per_round} episodes, rollout and update, "
                                f"under cProfile (slower than unprofiled)\n{text.getvalue()}")
            rollout_s = sum(r["rollout_seconds"] for r in history)
            update_s = sum(r["update_seconds"] for r in history)
            runs[name].append({"repeat": repeat, "rollout_seconds": rollout_s, "update_seconds": update_s,
                               "update_per_rollout": update_s / rollout_s,
                               "round_scores": [r["normalised_score"] for r in history]})
            weights[name] = {k: v.detach().clone() for k, v in module.state_dict().items()}
            print(f"repeat {repeat} {name}: rollout {rollout_s:.1f} s, update {update_s:.1f} s "
                  f"(update/rollout {update_s / rollout_s:.2f})", flush=True)
    summary = {name: {key: median([r[key] for r in rs]) for key in ("rollout_seconds", "update_seconds",
                                                                    "update_per_rollout")}
               for name, rs in runs.items()}
    if "before" in runs:
        paired = [b["update_seconds"] / n["update_seconds"] for n, b in zip(runs["now"], runs["before"])]
        summary["update_speedup_paired_median"] = median(paired)
        summary["first_minibatch"] = agreement(arms, bc, args)
        summary["max_weight_difference_after_the_rounds"] = max(
            (weights["now"][k].float() - weights["before"][k].float()).abs().max().item() for k in weights["now"]
        )
    print(summary)
    if profiles:
        Path(args.profile).write_text(f"# {command_line()}\n# machine: {machine_info()}\n\n" + "\n".join(profiles))
    write_json(Path(args.results), {"benchmark": "ppo_update_speed", "command": command_line(),
                                    "machine": machine_info(), "config": vars(args), "runs": runs,
                                    "summary": summary, "wall_seconds": round(time.time() - started, 1)})


if __name__ == "__main__":
    main()
