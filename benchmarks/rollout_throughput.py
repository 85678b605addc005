"""Rollout throughput: our batched `rollout` + `LMPolicy` against a naive one-episode-at-a-time HF `generate` loop.

Both arms play the same maze episodes (FO by default) with the same model (a tiny GPT-2 preset, seeded, briefly
BC-trained on generated maze data so that its turns look like real actions; `--train-steps 0` keeps the random
init, whose turns almost always run to `max_new_tokens`), the same sampling (temperature 1, full vocabulary,
special tokens suppressed), the same `max_new_tokens` and the same cap of agent turns per episode.

  (a) ours:  `lmrl_lightning.rollout.rollout(env, LMPolicy(model, tok, temperature=1), episodes, batch_size)`:
             one batched, KV-cached decoding call per turn for all live episodes.
  (b) naive: for each episode, for each turn: tokenise the history, `model.generate(input_ids, do_sample=True,
             max_new_tokens=..., eos_token_id=<newline>, pad_token_id=<pad>)`, decode, step the env.

The naive arm is sequential, so its per-turn cost does not depend on how many episodes it plays; by default it
plays the first `--naive-episodes` of the same episode list (to stay within a few minutes) and the comparison
uses rates (episodes/s and agent turns/s). Arms are interleaved `--repeats` times and medians are reported, with
the median of the per-repeat (paired) ratios: the machine may be shared, and the ratio is what counts.

  (c) before (only with `--before-ref REV`): arm (a) with `LMPolicy` and `rollout` as they are at git revision REV
             (read with `git show`; the rest of the package as it is now), interleaved with (a) and (b) in every repeat
             and at every batch size of the sweep, so that a change is measured against the code it replaces in the
             same run. The result also says whether (a) and (c) played exactly the same episodes (same seeds).

The project's target is (a) >= 30x (b) in episodes/s at 64 episodes, growing with the batch size up to 256.

Run:  python benchmarks/rollout_throughput.py            (writes benchmarks/results/rollout_throughput.json)
      python benchmarks/rollout_throughput.py --before-ref HEAD   (before/after of uncommitted changes)
"""
from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    RESULTS_DIR,
    command_line,
    lightning_trainer,
    load_average,
    machine_info,
    markdown_table,
    median,
    modules_at_revision,
    resolve_revision,
    quiet_libraries,
    write_json,
)

quiet_libraries()

import torch  # noqa: E402

from lmrl_lightning.env import END_OF_TURN, Text  # noqa: E402
from lmrl_lightning.policies.sampling import LMPolicy  # noqa: E402
from lmrl_lightning.registry import get_task  # noqa: E402
from lmrl_lightning.evaluation import summarise  # noqa: E402
from lmrl_lightning.rollout import rollout  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--variant", default="fo", choices=["fo", "po"], help="maze variant")
    p.add_argument("--preset", default="tiny", help="backbone preset")
    p.add_argument("--episodes", type=int, default=64, help="episodes for our arm (and the main comparison)")
    p.add_argument("--batch-size", type=int, default=64, help="our batch size in the main comparison")
    p.add_argument("--naive-episodes", type=int, default=16,
                   help="episodes the naive arm plays per repeat (the first N of the same list); 0 = all")
    p.add_argument("--max-turns", type=int, default=30, help="agent-turn cap per episode, both arms")
    p.add_argument("--max-new-tokens", type=int, default=16, help="longest action in tokens, both arms")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats of (ours, naive)")
    p.add_argument("--sweep", default="1,16,64,256", help="batch sizes for our arm ('' to skip)")
    p.add_argument("--sweep-min-episodes", type=int, default=32,
                   help="episodes per sweep point: max(batch size, this)")
    p.add_argument("--train-steps", type=int, default=150, help="BC steps before timing (0: random init)")
    p.add_argument("--data-episodes", type=int, default=300, help="generated maze episodes for the BC warm-start")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--before-ref", default=None, type=resolve_revision,
                   help="also time our arm with LMPolicy and rollout as they are at this git revision (e.g. HEAD "
                        "before a change is committed), interleaved with the others, as the 'before' arm")
    p.add_argument("--workdir", default=None, help="where to write the generated data (default: a temp dir)")
    p.add_argument("--out", default=str(RESULTS_DIR / "rollout_throughput.json"))
    return p.parse_args(argv)


def eval_subset(task, variant: str, n: int, n_starts: int = 25):
    """The maze's evaluation protocol with ceil(n / 25) episodes per start, first n: every start is covered."""
    return task.eval_episodes(variant, n_starts * max(1, math.ceil(n / n_starts)))[:n]


def build_model(args, workdir: Path):
    """A seeded tiny BC module; briefly trained on generated maze data unless --train-steps 0."""
    from lmrl_lightning.algorithms.bc import BC
    from lmrl_lightning.data.datamodule import EpisodeDataModule
    from lmrl_lightning.data.prepare import prepare_task_data
    from lmrl_lightning.algorithms.settings import Optimisation
    from lmrl_lightning.models.backbone import BackboneConfig

    import lightning as L

    data_dir = workdir / f"maze_{args.variant}"
    prepare_task_data("maze", args.variant, data_dir, n_episodes=args.data_episodes, seed=args.seed, progress=False)
    L.seed_everything(args.seed, verbose=False)
    module = BC(BackboneConfig(args.preset, tokenizer=str(data_dir / "tokenizer")), optim=Optimisation(lr=1e-3))
    info = {"preset": args.preset, "train_steps": args.train_steps, "data_episodes": args.data_episodes,
            "n_params": sum(p.numel() for p in module.parameters()), "vocab": len(module.tokenizer)}
    if args.train_steps > 0:
        dm = EpisodeDataModule(str(data_dir / "train.jsonl"), task="maze", variant=args.variant, batch_size=32,
                               val_fraction=0.0, seed=args.seed)
        t0 = time.perf_counter()
        lightning_trainer(args.train_steps).fit(module, datamodule=dm)
        info["train_seconds"] = round(time.perf_counter() - t0, 2)
    module.eval()
    return module.model, module.tokenizer, info


def counting(policy_class: type) -> type:
    """`policy_class` (an LMPolicy) counting generated tokens (read after timing; the overhead is a len())."""

    class CountingLMPolicy(policy_class):
        new_tokens = 0

        def generate(self, prompts, seeds):
            rows = super().generate(prompts, seeds)
            self.new_tokens += sum(len(r) for r in rows)
            return rows

    return CountingLMPolicy


CountingLMPolicy = counting(LMPolicy)


def load_revision(ref: str) -> tuple[type, Callable]:
    """`LMPolicy` and `rollout` as they are at git revision `ref` (see `modules_at_revision`)."""
    loaded = modules_at_revision(ref, ["lmrl_lightning/policies/turn_cache.py", "lmrl_lightning/policies/sampling.py",
                                       "lmrl_lightning/rollout.py"])
    return loaded["sampling"].LMPolicy, loaded["rollout"].rollout


def run_ours(env, policy, episodes, batch_size, max_turns, seed, rollout_fn: Callable = rollout):
    policy.new_tokens = 0
    t0 = time.perf_counter()
    eps = rollout_fn(env, policy, episodes, batch_size=batch_size, policy_seed=seed, max_turns=max_turns)
    seconds = time.perf_counter() - t0
    return seconds, eps, policy.new_tokens


def run_naive(env, model, tokenizer, eot: int, episodes, max_turns: int, max_new_tokens: int, max_prompt: int, seed: int):
    """The baseline: one episode at a time, one `model.generate` per turn."""
    env = env.copy()
    suppress = sorted({t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id) if t is not None})
    turns = new_tokens = 0
    returns, lengths = [], []
    t0 = time.perf_counter()
    for e in episodes:
        torch.manual_seed(seed * 1_000_003 + e.index)
        history = env.reset(seed=e.seed, options=e.options)
        total, n = 0.0, 0
        for _ in range(max_turns):
            enc = tokenizer("".join(t.text for t in history), return_tensors="pt", add_special_tokens=False)
            ids, mask = enc["input_ids"][:, -max_prompt:], enc["attention_mask"][:, -max_prompt:]
            with torch.inference_mode():
                out = model.generate(
                    input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                    max_new_tokens=max_new_tokens, eos_token_id=eot, pad_token_id=tokenizer.pad_token_id,
                    suppress_tokens=suppress,
                )
            new = out[0, ids.shape[1]:].tolist()
            new_tokens += len(new)
            text = tokenizer.decode(new, skip_special_tokens=True)
            action = text if text.endswith(END_OF_TURN) else text.split(END_OF_TURN, 1)[0] + END_OF_TURN
            history, reward, done = env.step(history + (Text(action, True),))
            total += reward
            n += 1
            if done:
                break
        turns += n
        returns.append(total)
        lengths.append(n)
    seconds = time.perf_counter() - t0
    return seconds, turns, new_tokens, returns, lengths


def ours_record(seconds: float, eps, new_tokens: int) -> dict:
    summary = summarise(eps)
    turns = sum(e.num_actions for e in eps)
    return {"seconds": seconds, "episodes": len(eps), "turns": turns, "new_tokens": new_tokens,
            "episodes_per_s": len(eps) / seconds, "turns_per_s": turns / seconds, "mean_return": summary.mean_return,
            "mean_length": summary.mean_length, "load_average": load_average()}


def naive_record(n_episodes: int, seconds: float, turns: int, new_tokens: int, returns, lengths) -> dict:
    return {"seconds": seconds, "episodes": n_episodes, "turns": turns, "new_tokens": new_tokens,
            "episodes_per_s": n_episodes / seconds, "turns_per_s": turns / seconds,
            "mean_return": sum(returns) / len(returns), "mean_length": sum(lengths) / len(lengths),
            "load_average": load_average()}


def arm_summary(runs: list[dict]) -> dict:
    def med(key):
        return median([x[key] for x in runs])

    return {"episodes": runs[0]["episodes"], "episodes_per_s": med("episodes_per_s"), "turns_per_s": med("turns_per_s"),
            "new_tokens_per_turn": sum(x["new_tokens"] for x in runs) / sum(x["turns"] for x in runs),
            "mean_length": med("mean_length"), "mean_return": med("mean_return"), "seconds": med("seconds"),
            "runs": runs}


def transcripts(eps) -> list:
    return [[(t.text, t.reward) for t in e.turns] for e in eps]


def main(argv=None) -> dict:
    args = parse_args(argv)
    wall0 = time.perf_counter()
    machine = machine_info()
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    task = get_task("maze")
    env = task.make_env(args.variant)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        model, tokenizer, model_info = build_model(args, workdir)
    model.eval()
    sampling = dict(temperature=1.0, top_k=0, max_new_tokens=args.max_new_tokens)
    # arm name -> (policy, rollout function); "before" is our arm at --before-ref
    batched = {"ours": (CountingLMPolicy(model, tokenizer, **sampling), rollout)}
    if args.before_ref:
        before_policy, before_rollout = load_revision(args.before_ref)
        batched["before"] = (counting(before_policy)(model, tokenizer, **sampling), before_rollout)
    policy = batched["ours"][0]
    episodes = eval_subset(task, args.variant, args.episodes)
    naive_eps = episodes[: args.naive_episodes] if args.naive_episodes > 0 else episodes
    print(f"model: {model_info}")
    print(f"episodes: {len(episodes)} (ours), {len(naive_eps)} (naive, first of the same list); "
          f"max_turns={args.max_turns}, max_new_tokens={args.max_new_tokens}, torch threads={torch.get_num_threads()}")

    # Warm-up every arm (allocator, HF generate's first-call set-up, tokenizer caches).
    for pol, fn in batched.values():
        run_ours(env, pol, episodes[:8], args.batch_size, 3, args.seed, fn)
    run_naive(env, model, tokenizer, policy.eot, naive_eps[:2], 3, args.max_new_tokens, policy.max_prompt_tokens, args.seed)

    runs = {name: [] for name in [*batched, "naive"]}
    same_episodes = []
    for r in range(args.repeats):
        played = {}
        for name, (pol, fn) in batched.items():
            s, eps, toks = run_ours(env, pol, episodes, args.batch_size, args.max_turns, args.seed, fn)
            runs[name].append(ours_record(s, eps, toks))
            played[name] = transcripts(eps)
        if "before" in played:
            same_episodes.append(played["before"] == played["ours"])
        s, turns, toks, returns, lengths = run_naive(env, model, tokenizer, policy.eot, naive_eps, args.max_turns,
                                                     args.max_new_tokens, policy.max_prompt_tokens, args.seed)
        runs["naive"].append(naive_record(len(naive_eps), s, turns, toks, returns, lengths))
        print(f"repeat {r}: " + ", ".join(f"{name} {x[-1]['episodes_per_s']:.3f} ep/s ({x[-1]['turns_per_s']:.1f} turns/s)"
                                          for name, x in runs.items()))

    comparison = {name: arm_summary(x) for name, x in runs.items()}
    for name in batched:
        paired = median([o["turns_per_s"] / n["turns_per_s"] for o, n in zip(runs[name], runs["naive"])])
        comparison[name] |= {"ratio_episodes_per_s": comparison[name]["episodes_per_s"] / comparison["naive"]["episodes_per_s"],
                             "ratio_turns_per_s": comparison[name]["turns_per_s"] / comparison["naive"]["turns_per_s"],
                             "paired_ratio_turns_per_s_median": paired}
    for key in ("ratio_episodes_per_s", "ratio_turns_per_s", "paired_ratio_turns_per_s_median"):
        comparison[key] = comparison["ours"][key]
    if "before" in batched:
        comparison["ours_over_before_paired_median"] = median(
            [o["episodes_per_s"] / b["episodes_per_s"] for o, b in zip(runs["ours"], runs["before"])])
        comparison["same_episodes_as_before"] = all(same_episodes)

    sweep = run_sweep(args, task, env, batched)
    return report(args, machine, model_info, comparison, sweep, wall0)


def run_sweep(args, task, env, batched: dict) -> list[dict]:
    """Every batched arm at each batch size of --sweep (one run each, arms interleaved)."""
    sweep = []
    for b in [int(x) for x in args.sweep.split(",") if x.strip()]:
        n = max(b, args.sweep_min_episodes)
        eps_b = eval_subset(task, args.variant, n)
        for name, (pol, fn) in batched.items():
            run_ours(env, pol, eps_b[: min(b, 8)], b, 2, args.seed, fn)  # warm-up at this shape
            s, eps, toks = run_ours(env, pol, eps_b, b, args.max_turns, args.seed, fn)
            turns = sum(e.num_actions for e in eps)
            sweep.append({"arm": name, "batch_size": b, "episodes": n, "seconds": s, "episodes_per_s": n / s,
                          "turns_per_s": turns / s, "new_tokens_per_s": toks / s, "mean_length": turns / n,
                          "load_average": load_average()})
            print(f"sweep {name} batch {b}: {n} episodes in {s:.1f}s, {n / s:.2f} ep/s, {turns / s:.0f} turns/s")
    return sweep


def report(args, machine: dict, model_info: dict, comparison: dict, sweep: list[dict], wall0: float) -> dict:
    labels = {"ours": f"ours: rollout + LMPolicy, batch {args.batch_size}",
              "before": f"before ({args.before_ref}): rollout + LMPolicy, batch {args.batch_size}"}
    rows = []
    for name in [n for n in ("ours", "before") if n in comparison]:
        a = comparison[name]
        rows.append([labels[name], a["episodes"], f"{a['episodes_per_s']:.2f}", f"{a['turns_per_s']:.1f}",
                     f"{a['new_tokens_per_turn']:.2f}", f"{a['mean_length']:.1f}"])
        rows.append([f"ratio ({name} / naive)", "", f"{a['ratio_episodes_per_s']:.1f}x",
                     f"{a['ratio_turns_per_s']:.1f}x (paired median {a['paired_ratio_turns_per_s_median']:.1f}x)", "", ""])
    nv = comparison["naive"]
    rows.insert(0, ["naive: per-episode HF generate", nv["episodes"], f"{nv['episodes_per_s']:.3f}",
                    f"{nv['turns_per_s']:.1f}", f"{nv['new_tokens_per_turn']:.2f}", f"{nv['mean_length']:.1f}"])
    table1 = markdown_table(["arm", "episodes", "episodes/s", "agent turns/s", "new tokens/turn", "mean turns/episode"], rows)
    table2 = markdown_table(
        ["arm", "batch size", "episodes", "episodes/s", "agent turns/s", "new tokens/s"],
        [[s["arm"], s["batch_size"], s["episodes"], f"{s['episodes_per_s']:.2f}", f"{s['turns_per_s']:.1f}",
          f"{s['new_tokens_per_s']:.0f}"] for s in sweep],
    )
    print()
    print(f"maze {args.variant.upper()}, {args.preset} model ({'BC-trained %d steps' % args.train_steps if args.train_steps else 'random init'}), "
          f"temperature 1, max_new_tokens {args.max_new_tokens}, max_turns {args.max_turns}; medians of {args.repeats} interleaved repeats")
    print(table1)
    if "ours_over_before_paired_median" in comparison:
        print(f"ours / before: {comparison['ours_over_before_paired_median']:.2f}x (paired median); "
              f"same episodes: {comparison['same_episodes_as_before']}")
    print()
    print("batch-size sweep (one run each)")
    print(table2)
    target = 30.0
    print(f"\nproject target: >= {target:.0f}x episodes/s at {args.episodes} episodes -> "
          f"{'MET' if comparison['ratio_episodes_per_s'] >= target else 'NOT MET'} ({comparison['ratio_episodes_per_s']:.1f}x)")

    result = {
        "benchmark": "rollout_throughput",
        "command": command_line(),
        "machine": machine | {"load_average_at_end": load_average()},
        "config": vars(args) | {"model": model_info, "sampling": "temperature 1, top_k 0 (full vocabulary), pad/eos/bos suppressed",
                                "episodes_source": "maze eval protocol with ceil(n/25) rollouts per start, first n",
                                "naive_fairness": "same model, same max_new_tokens, same max_turns; naive plays the first "
                                                  "naive_episodes of the same list, rates compared"},
        "comparison": comparison,
        "sweep": sweep,
        "target_ratio": target,
        "target_met": comparison["ratio_episodes_per_s"] >= target,
        "tables_markdown": {"comparison": table1, "sweep": table2},
        "wall_seconds": round(time.perf_counter() - wall0, 1),
    }
    path = write_json(Path(args.out), result)
    print(f"\nwrote {path} (wall {result['wall_seconds']}s)")
    return result


if __name__ == "__main__":
    main()
