"""Where a batched rollout spends its time: cProfile of `rollout_throughput.py`'s "ours" arm, top functions.

Builds the same model as `rollout_throughput.py` (tiny GPT-2, briefly BC-trained on generated FO maze data), plays
one rollout of `--batch-sizes` episodes per batch size (after a warm-up at that shape) under cProfile, and writes
the functions with the most own time and the most cumulative time. With `--before-ref REV`, `LMPolicy` and
`rollout` as they are at git revision REV are profiled the same way first, for a before/after summary in one file.
cProfile adds a fixed cost per Python call, so the profiled rates are lower than `rollout_throughput.py`'s.

Run:  python benchmarks/rollout_profile.py --before-ref HEAD   (writes benchmarks/results/rollout_profile.txt)
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    RESULTS_DIR, command_line, load_average, machine_info, quiet_libraries, resolve_revision,
)

quiet_libraries()

import rollout_throughput as bench  # noqa: E402

from lmrl_lightning.atomic import atomic_write_text  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", default="64,256", help="episodes = batch size, one profiled rollout each")
    p.add_argument("--before-ref", default=None, type=resolve_revision,
                   help="also profile LMPolicy and rollout at this git revision")
    p.add_argument("--top", type=int, default=18, help="functions listed per ordering")
    p.add_argument("--out", default=str(RESULTS_DIR / "rollout_profile.txt"))
    known, rest = p.parse_known_args(argv)
    known.bench = bench.parse_args(rest)  # model and episode settings: rollout_throughput.py's options
    return known


def profile_rollout(
    env, policy, rollout_fn, episodes, batch_size: int, max_turns: int, seed: int, top: int
) -> tuple[str, str]:
    """One warmed-up rollout under cProfile: a one-line summary and the profile's two top lists."""
    bench.run_ours(env, policy, episodes[:8], batch_size, 2, seed, rollout_fn)
    profiler = cProfile.Profile()
    profiler.enable()
    seconds, eps, new_tokens = bench.run_ours(env, policy, episodes, batch_size, max_turns, seed, rollout_fn)
    profiler.disable()
    turns = sum(e.num_actions for e in eps)
    summary = (f"{len(eps)} episodes, {turns} agent turns, {new_tokens} new tokens in {seconds:.1f} s under the "
               f"profiler: {len(eps) / seconds:.2f} episodes/s; load average {load_average()}")
    return summary, top_functions(profiler, top)


def top_functions(profiler: cProfile.Profile, top: int) -> str:
    """The `top` functions by own time, then by cumulative time."""
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    # drop pstats' per-list preamble lines that only repeat the totals
    return "\n".join(line for line in out.getvalue().splitlines() if "List reduced" not in line)


def main(argv=None) -> None:
    args = parse_args(argv)
    task = bench.get_task("maze")
    env = task.make_env(args.bench.variant)
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer, model_info = bench.build_model(args.bench, Path(tmp))
    sampling = dict(temperature=1.0, top_k=0, max_new_tokens=args.bench.max_new_tokens)
    arms = []
    if args.before_ref:
        policy_class, rollout_fn = bench.load_revision(args.before_ref)
        arms.append((f"before ({args.before_ref})", bench.counting(policy_class), rollout_fn))
    arms.append(("ours (working tree)", bench.CountingLMPolicy, bench.rollout))
    sections = [f"# {Path(__file__).name}: {command_line()}", f"# machine: {machine_info()}", f"# model: {model_info}"]
    for batch_size in [int(b) for b in args.batch_sizes.split(",") if b.strip()]:
        episodes = bench.eval_subset(task, args.bench.variant, batch_size)
        for name, policy_class, rollout_fn in arms:
            policy = policy_class(model, tokenizer, **sampling)
            summary, lists = profile_rollout(env, policy, rollout_fn, episodes, batch_size, args.bench.max_turns,
                                             args.bench.seed, args.top)
            print(f"{name}, batch {batch_size}: {summary}")
            sections.append(f"\n## {name}, batch {batch_size}: {summary}\n{lists}")
    atomic_write_text(args.out, "\n".join(sections) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"wall {time.perf_counter() - t0:.0f}s")
