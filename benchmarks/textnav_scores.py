"""Text-Nav scores and environment speed.

Scores: BC, %BC, MC Returns, ILQL, PPO and online %BC on FO and PO Text-Nav, each trained from its example config
(`examples/configs/textnav_<variant>_<algorithm>.yaml`) through the same LightningCLI as `lmrl fit`, with this
benchmark's data, run directory, step counts and evaluation size; %BC, MC, ILQL, PPO and online %BC start from the
variant's BC checkpoint. Each row is evaluated with the task's protocol (sampled free text; `--eval-episodes`, default
1800: 225 from each start room) and printed beside the paper's Table 2 (normalised) and Table 4 (raw return).
Rows are merged into the results file as they finish, so rows can run in separate processes on the same `--out`.

Speed (`--throughput`): environment steps per second with uniformly random admissible commands, one env stepped
alone, and a batch of envs stepped by the rollout engine (pooled interpreters, as evaluation and online rounds use
them); also the cost of compiling a game, of loading an interpreter and of a reset.

Run:  python benchmarks/textnav_scores.py --throughput                         (about a minute)
      python benchmarks/textnav_scores.py --smoke                              (the training path end to end, minutes)
      python benchmarks/textnav_scores.py --variants po --algorithms BC,ILQL    (full rows: hours on a CPU)
      python benchmarks/textnav_scores.py --variants fo --algorithms BC --steps 705 --continue-bc
                                                                      (BC trained on from its last checkpoint)
      python benchmarks/textnav_scores.py --table
(writes benchmarks/results/textnav_throughput.json and textnav_scores.json; --smoke writes textnav_scores_smoke.json)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, command_line, machine_info, quiet_libraries, write_json  # noqa: E402

quiet_libraries()

from _scores import (CONFIGS, add_row, add_setting_argument, continued_bc, fit_row, rewritten_config,  # noqa: E402
                     seed_replacements)
from lmrl_lightning.data.prepare import prepare_task_data  # noqa: E402
from lmrl_lightning.env import PerEpisodePolicy, Text  # noqa: E402
from lmrl_lightning.registry import EvalEpisode  # noqa: E402
from lmrl_lightning.rollout import rollout  # noqa: E402
from lmrl_lightning.tasks.textnav import ROOMS, RandomCommandPlayer, TextNavEnv, house  # noqa: E402
from lmrl_lightning.tasks.textnav.env import POOL  # noqa: E402

# name -> (config suffix, {variant: (paper Table 2 normalised, paper Table 4 raw return)})
ALGORITHMS = {
    "BC": ("bc", {"fo": (53.7, 0.39), "po": (49.7, 0.25)}),
    "%BC": ("filtered_bc", {"fo": (65.1, 0.54), "po": (60.5, 0.49)}),
    "MC": ("mc_returns", {"fo": (71.9, 0.63), "po": (71.6, 0.58)}),
    "ILQL": ("ilql", {"fo": (91.8, 0.88), "po": (83.7, 0.76)}),
    "PPO": ("ppo", {"fo": (87.1, 0.81), "po": (85.5, 0.80)}),
    "online %BC": ("online_filtered_bc", {"fo": (74.5, 0.62), "po": (68.4, 0.53)}),
}
VARIANTS = ("fo", "po")
CONFIG_STEPS = {"BC": 3000, "%BC": 1000, "MC": 2000, "ILQL": 2000}
SMOKE = {"episodes": 16, "steps": 2, "value_steps": 2, "rounds": 1, "episodes_per_round": 8, "eval_episodes": 8,
         "max_length": 256}


# ---- speed ----------------------------------------------------------------------------------------------------------
def single_env_steps(variant: str, steps: int, seed: int) -> dict:
    """One env, random admissible commands, resets included: steps/s and the mean reset time."""
    env, rng = TextNavEnv(variant), random.Random(seed)
    resets, reset_seconds, done = 0, 0.0, True
    start = time.perf_counter()
    for _ in range(steps):
        if done:
            t = time.perf_counter()
            history = env.reset(seed=rng.randrange(1 << 30))
            reset_seconds += time.perf_counter() - t
            resets += 1
        command = rng.choice(env.admissible_commands)
        history, _, done = env.step(history + (Text(command + "\n", True),))
    seconds = time.perf_counter() - start
    env.close()
    return {"steps": steps, "seconds": round(seconds, 3), "steps_per_s": round(steps / seconds, 1),
            "episodes": resets, "mean_reset_ms": round(1000 * reset_seconds / resets, 2)}


def batched_env_steps(variant: str, episodes: int, batch_size: int, seed: int) -> dict:
    """`episodes` random-command episodes stepped `batch_size` at a time by the rollout engine, twice: the first
    pass loads the pool's interpreters, the second finds them loaded (as every later evaluation does)."""
    env, policy = TextNavEnv(variant), PerEpisodePolicy(RandomCommandPlayer())
    specs = [EvalEpisode(i, i, {"start_room": ROOMS[i % len(ROOMS)]}) for i in range(episodes)]
    passes = []
    for _ in range(2):
        created = POOL.created
        start = time.perf_counter()
        done = rollout(env, policy, specs, batch_size=batch_size, policy_seed=seed)
        seconds = time.perf_counter() - start
        steps = sum(e.num_actions for e in done)
        passes.append({"episodes": episodes, "steps": steps, "seconds": round(seconds, 3),
                       "steps_per_s": round(steps / seconds, 1), "episodes_per_s": round(episodes / seconds, 1),
                       "interpreters_loaded": POOL.created - created})
    return {"batch_size": batch_size, "first_pass": passes[0], "warm": passes[1]}


def throughput(args) -> None:
    cache = Path(tempfile.mkdtemp(prefix="textnav_compile_"))
    try:
        start = time.perf_counter()
        house.compiled_game("po", "garden", cache_dir=cache)
        compile_seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    start = time.perf_counter()
    house.compile_all()  # the user cache: compiles only what is missing
    cached_seconds = time.perf_counter() - start
    import textworld

    load_seconds = []
    for _ in range(2):  # the first load in a process also parses TextWorld's knowledge base
        start = time.perf_counter()
        interpreter = textworld.start(house.compiled_game("po", "garden"), textworld.EnvInfos(admissible_commands=True))
        load_seconds.append(time.perf_counter() - start)
        interpreter.close()
    first_load_ms, load_ms = (round(1000 * s, 1) for s in load_seconds)
    results = {"compile_one_game_s": round(compile_seconds, 2), "find_all_16_cached_s": round(cached_seconds, 3),
               "first_interpreter_in_process_ms": first_load_ms, "load_interpreter_ms": load_ms, "variants": {}}
    for variant in args.variants.split(","):
        single = single_env_steps(variant, args.single_steps, args.seed)
        batched = batched_env_steps(variant, args.batch_episodes, args.batch_size, args.seed)
        results["variants"][variant] = {"single": single, "batched": batched}
        print(f"{variant}: single env {single['steps_per_s']} steps/s (reset {single['mean_reset_ms']} ms); batch of "
              f"{args.batch_size}: {batched['warm']['steps_per_s']} steps/s, {batched['warm']['episodes_per_s']} "
              f"episodes/s warm ({batched['first_pass']['steps_per_s']} steps/s while loading "
              f"{batched['first_pass']['interpreters_loaded']} interpreters)", flush=True)
    print(f"compile one game {compile_seconds:.1f} s; load an interpreter {load_ms:.0f} ms")
    payload = {"benchmark": "textnav_throughput", "command": command_line(), "machine": machine_info(),
               "config": vars(args), "results": results}
    write_json(Path(args.results).with_name("textnav_throughput.json"), payload)


# ---- scores ---------------------------------------------------------------------------------------------------------
def benchmark_config(name: str, variant: str, out: Path, data: Path, args) -> Path:
    """The example config with this benchmark's paths, steps and evaluation size."""
    suffix = ALGORITHMS[name][0]
    online = name in ("PPO", "online %BC")
    replacements = [("runs/textnav_", f"{out}/textnav_"), ("save_dir: runs", f"save_dir: {out}"),
                    (f"data/textnav_{variant}", str(data)),
                    ("episodes: 1800 ", f"episodes: {args.eval_episodes} "),
                    *seed_replacements(args.seed, online=online)]
    if name == "ILQL":  # its beta sweep plays no more episodes than the evaluation
        replacements.append(("episodes: 200 ", f"episodes: {min(200, args.eval_episodes)} "))
    if online:
        replacements += [("max_epochs: 20 ", f"max_epochs: {args.rounds} "),
                         ("episodes_per_round: 64 ", f"episodes_per_round: {args.episodes_per_round} ")]
    else:
        steps = args.steps if name == "BC" else args.value_steps
        replacements.append((f"max_steps: {CONFIG_STEPS[name]}", f"max_steps: {steps}"))
    if args.decay is not None:
        stated = re.search(r"^      decay: \w+", (CONFIGS / f"textnav_{variant}_{suffix}.yaml").read_text(), re.M)
        replacements.append((stated.group(0), f"      decay: {args.decay}") if stated else
                            ("      warmup_steps:", f"      decay: {args.decay}\n      warmup_steps:"))
    if args.max_length != 1536:
        replacements.append(("max_length: 1536", f"max_length: {args.max_length}"))
        if name == "BC":
            replacements.append(("max_positions: 1536", f"max_positions: {args.max_length}"))
    return rewritten_config(f"textnav_{variant}_{suffix}", out, replacements)


def run_row(name: str, variant: str, config: Path, seed: int, resume_from: Optional[Path] = None,
            settings: Sequence[str] = ()) -> dict:
    _, row = fit_row(name, config, seed, resume_from=resume_from, settings=settings)
    paper_score, paper_return = ALGORITHMS[name][1][variant]
    row.update(variant=variant, paper_normalised=paper_score, paper_return=paper_return)
    print(f"{variant.upper()} {name}: score {row['normalised_score']:.1f} (paper {paper_score}), return "
          f"{row['mean_return']:.3f} (paper {paper_return}), {row['optimizer_steps']} steps, {row['seconds']:.0f} s",
          flush=True)
    return row


def markdown_table(rows: list[dict]) -> str:
    lines = ["| variant | algorithm | normalised | return | paper normalised | paper return | steps | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant'].upper()} | {r['algorithm']} | {r['normalised_score']:.1f} | "
                     f"{r['mean_return']:.3f} | {r['paper_normalised']} | {r['paper_return']} | "
                     f"{r['optimizer_steps']} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def scores(args) -> None:
    out = Path(args.out)
    results = Path(args.results)
    for variant in args.variants.split(","):
        data = Path(args.data.format(variant=variant)) if args.data else out / f"data_{variant}"
        if not (data / "train.jsonl").is_file():
            stats = prepare_task_data("textnav", variant, data, args.episodes, seed=0, progress=False)
            print(f"{variant} dataset: {args.episodes} episodes, success {stats['success_rate']['ours']:.3f}, "
                  f"{stats['mean_length']['ours']:.1f} commands", flush=True)
        for name in args.algorithms.split(","):
            resume = continued_bc(out / f"textnav_{variant}_bc" / "checkpoints" / "last.ckpt", args.continue_bc, name)
            row = run_row(name, variant, benchmark_config(name, variant, out, data, args), args.seed, resume,
                          args.settings)
            payload = {"benchmark": "textnav_scores", "machine": machine_info(), "config": vars(args)}
            add_row(results, row, payload, order={"variant": list(VARIANTS), "algorithm": list(ALGORITHMS)})
    print(markdown_table(json.loads(results.read_text())["rows"]))
    print(f"results: {results}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="fo,po")
    p.add_argument("--algorithms", default=",".join(ALGORITHMS), help="comma-separated, in order; all but BC need BC")
    p.add_argument("--episodes", type=int, default=2500, help="dataset size (paper: 2.5k)")
    p.add_argument("--data", default=None, help="existing dataset directories, e.g. data/textnav_{variant}")
    p.add_argument("--steps", type=int, default=3000, help="BC steps")
    p.add_argument("--continue-bc", action="store_true",
                   help="BC continues its last checkpoint under OUT (exact training state) up to --steps")
    p.add_argument("--value-steps", type=int, default=2000, help="%%BC, MC and ILQL steps (from BC)")
    p.add_argument("--rounds", type=int, default=20, help="PPO and online %%BC rounds")
    p.add_argument("--episodes-per-round", type=int, default=64, help="PPO and online %%BC episodes per round")
    p.add_argument("--eval-episodes", type=int, default=1800, help="evaluation episodes (the task's protocol)")
    p.add_argument("--max-length", type=int, default=1536, help="context in tokens (the configs' 1536)")
    p.add_argument("--smoke", action="store_true",
                   help=f"the whole training path at toy size ({SMOKE}), into a temporary directory")
    p.add_argument("--throughput", action="store_true", help="measure the environment's steps/s and stop")
    p.add_argument("--single-steps", type=int, default=1000, help="throughput: steps of the single env")
    p.add_argument("--batch-episodes", type=int, default=256, help="throughput: episodes of the batched rollout")
    p.add_argument("--batch-size", type=int, default=64, help="throughput: envs stepped together")
    p.add_argument("--decay", default=None, choices=["none", "cosine"],
                   help="learning rate after the warm-up: constant (none) or to 0 at the last step (cosine); default: "
                        "the config's (PO BC cosine, the others constant)")
    add_setting_argument(p)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0,
                   help="training seed (the config's seed_everything; PPO/online %%BC rounds) and the throughput's "
                        "games; the dataset is always drawn with seed 0")
    p.add_argument("--out", default="runs/textnav_scores")
    p.add_argument("--results", default=str(RESULTS_DIR / "textnav_scores.json"))
    p.add_argument("--table", action="store_true", help="print the results file's rows as a Markdown table and stop")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.table:
        print(markdown_table(json.loads(Path(args.results).read_text())["rows"]))
    elif args.throughput:
        throughput(args)
    elif args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
        args.results = str(Path(args.results).with_name("textnav_scores_smoke.json"))
        with tempfile.TemporaryDirectory(prefix="textnav_smoke_") as tmp:
            args.out = tmp
            scores(args)
    else:
        scores(args)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
