"""Twenty Questions and Guess My City: the six algorithms from their example configs beside the paper's Table 2
(normalised) and Table 4 (raw return), and the throughput of the simulators: oracle answers per second (the knowledge
base, and the language-model oracle with a tiny seq2seq and a tiny causal model built here from config) and the rate
of dataset generation.

Each algorithm runs `examples/configs/<task>_<algorithm>.yaml` through the same LightningCLI as `lmrl fit`, with the
data, run directory, step counts and evaluation size rewritten for this benchmark; all but BC start from the BC row's
checkpoint. Scores are normalised with the task's own constants (our data's mean return, our expert's mean), and
with the paper's constants beside (`paper_constants_score`), so both readings are there.

Run:  python benchmarks/questions_scores.py --throughput            (about a minute: oracle and generation rates)
      python benchmarks/questions_scores.py --smoke                 (every algorithm a few steps, end to end)
      python benchmarks/questions_scores.py --task twenty_questions  (the full rows: hours on 2 cores; a GPU helps)
      python benchmarks/questions_scores.py --task twenty_questions --algorithms BC --steps 3500 --continue-bc
                                                                    (BC trained further from where it stopped)
(writes benchmarks/results/questions_throughput.json / questions_scores.json; --table prints the scores file)
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, machine_info, quiet_libraries, write_json  # noqa: E402

quiet_libraries()

from _scores import add_row, add_setting_argument, continued_bc, fit_row, rewritten_config, seed_replacements  # noqa: E402
from lmrl_lightning.data.prepare import prepare_task_data  # noqa: E402
from lmrl_lightning.env import Text  # noqa: E402
from lmrl_lightning.registry import get_task  # noqa: E402
from lmrl_lightning.tasks import questions  # noqa: E402
from lmrl_lightning.tasks.questions.askers import AnswerTable  # noqa: E402
from lmrl_lightning.tasks.questions.game import step_many  # noqa: E402

# name -> (config suffix, {task: (paper Table 2 normalised, paper Table 4 raw return)})
ALGORITHMS = {
    "BC": ("bc", {"twenty_questions": (57.1, -16.0), "guess_city": (30.0, -17.0)}),
    "%BC": ("filtered_bc", {"twenty_questions": (77.1, -14.6), "guess_city": (48.0, -15.2)}),
    "MC": ("mc_returns", {"twenty_questions": (87.1, -13.9), "guess_city": (88.0, -11.2)}),
    "ILQL": ("ilql", {"twenty_questions": (82.9, -14.2), "guess_city": (75.0, -12.5)}),
    "PPO": ("ppo", {"twenty_questions": (72.9, -14.9), "guess_city": (49.9, -15.1)}),
    "online %BC": ("online_filtered_bc", {"twenty_questions": (55.2, -16.8), "guess_city": (31.6, -19.2)}),
}
# The step / round counts written in the example configs, replaced by this benchmark's.
CONFIG_STEPS = {"BC": "max_steps: 3000", "%BC": "max_steps: 1000", "MC": "max_steps: 2000", "ILQL": "max_steps: 2000",
                "PPO": "max_epochs: 20 ", "online %BC": "max_epochs: 20 "}
SMOKE = {"episodes": 64, "steps": 3, "value_steps": 2, "rounds": 1, "eval_episodes": 8}


def available_tasks() -> list[str]:
    return [t.name for t in questions.TASKS]


# ---- throughput --------------------------------------------------------------------------------------------------


def knowledge_base_rate(task: str, batch: int = 256, rounds: int = 40) -> dict:
    """Answers per second of the knowledge base through `step_many` (parse + answer + episode bookkeeping), on
    random questions of the grammar and guesses."""
    spec = get_task(task)
    envs = [spec.make_env("default") for _ in range(batch)]
    table = AnswerTable(envs[0].game)
    rng = random.Random(0)
    texts = [t for _, phrasings in table.questions for t in phrasings]
    texts += [t for i in range(table.n) for t in table.game.guess_texts(i)]
    answered, start = 0, time.perf_counter()
    for r in range(rounds):
        histories = [env.reset(seed=r * batch + k) for k, env in enumerate(envs)]
        for _ in range(5):  # five questions an episode (a correct guess ends one early)
            live = [k for k, env in enumerate(envs) if not env.done]
            actions = [histories[k] + (Text(rng.choice(texts) + "\n", True),) for k in live]
            for k, (history, _, _) in zip(live, step_many([envs[k] for k in live], actions)):
                histories[k] = history
            answered += len(live)
    seconds = time.perf_counter() - start
    return {"answers": answered, "seconds": round(seconds, 3), "answers_per_s": round(answered / seconds)}


def tiny_model_dirs(root: Path, prompts: list[str]) -> dict[str, Path]:
    """A tiny random T5 (seq2seq) and GPT-2 (causal), saved with a tokenizer trained on `prompts`."""
    from transformers import GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

    from lmrl_lightning.models.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(prompts + ["Yes. No. yes no"], 512)
    ids = dict(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    models = {
        "t5-tiny (seq2seq, 2x2 layers, d=64)": T5ForConditionalGeneration(T5Config(
            d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, decoder_start_token_id=tokenizer.pad_token_id,
            **ids)),
        "gpt2-tiny (causal, 2 layers, d=64)": GPT2LMHeadModel(GPT2Config(
            n_layer=2, n_embd=64, n_head=4, n_positions=512, bos_token_id=tokenizer.eos_token_id, **ids)),
    }
    dirs = {}
    for k, (name, model) in enumerate(models.items()):
        model.save_pretrained(root / str(k))
        tokenizer.save_pretrained(root / str(k))
        dirs[name] = root / str(k)
    return dirs


def language_model_rate(task: str, device: str, batch: int = 64, rounds: int = 4) -> dict:
    """Answers per second of the language-model oracle with tiny models (one generate call per batch of `batch`
    episodes' questions, through `step_many`); the task's own max_new_tokens."""
    spec = get_task(task)
    game = spec.make_env("default").game
    table = AnswerTable(game)
    texts = [t for _, phrasings in table.questions for t in phrasings]
    rng = random.Random(0)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        prompts = [game.lm_prompt(i % table.n, rng.choice(texts)) for i in range(400)]
        for name, directory in tiny_model_dirs(Path(tmp), prompts).items():
            envs = [spec.make_env("default", oracle_model=str(directory), oracle_device=device,
                                  oracle_batch_size=batch) for _ in range(batch)]
            histories = [env.reset(seed=k) for k, env in enumerate(envs)]
            step_many(envs, [h + (Text("Is it alive?\n", True),) for h in histories])  # warm-up
            answered, start = 0, time.perf_counter()
            for r in range(rounds):
                histories = [env.reset(seed=r * batch + k) for k, env in enumerate(envs)]
                actions = [h + (Text(rng.choice(texts) + "\n", True),) for h in histories]
                answered += len(step_many(envs, actions))
            seconds = time.perf_counter() - start
            results[name] = {"answers": answered, "seconds": round(seconds, 3),
                             "answers_per_s": round(answered / seconds, 1), "batch": batch,
                             "max_new_tokens": envs[0].oracle.model.max_new_tokens, "device": device}
    return results


def generation_rate(task: str, episodes: int) -> dict:
    """Conversations per second of the task's dataset generator (scripted askers against the knowledge base)."""
    generate = get_task(task).generate_dataset
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        stats = generate(Path(tmp), n_episodes=episodes, seed=0, progress=False)
        seconds = time.perf_counter() - start
    return {"episodes": episodes, "seconds": round(seconds, 1), "episodes_per_s": round(episodes / seconds, 1),
            "success_rate": round(stats["success_rate"]["ours"], 3), "mean_return": round(stats["mean_return"]["ours"], 2),
            "mean_length": round(stats["mean_length"]["ours"], 2)}


def throughput(args) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = Path(args.throughput_results)
    # One task's run keeps the other task's rows of an earlier run.
    earlier = json.loads(path.read_text())["tasks"] if path.is_file() else {}
    report = {"benchmark": "questions_throughput", "machine": machine_info(), "config": vars(args),
              "tasks": {t: row for t, row in earlier.items() if t not in args.tasks}}
    for task in args.tasks:
        row = {"knowledge_base": knowledge_base_rate(task), "language_model": language_model_rate(task, device),
               "generation": generation_rate(task, args.generation_episodes)}
        report["tasks"][task] = row
        print(f"{task}: knowledge base {row['knowledge_base']['answers_per_s']} answers/s; " + "; ".join(
            f"{name} {r['answers_per_s']} answers/s" for name, r in row["language_model"].items())
            + f"; generation {row['generation']['episodes_per_s']} conversations/s", flush=True)
    write_json(path, report)
    print(f"results: {args.throughput_results}")


# ---- scores ------------------------------------------------------------------------------------------------------


def benchmark_config(task: str, name: str, out: Path, data: Path, args) -> Path:
    """The example config with this benchmark's paths, lengths and evaluation size."""
    suffix = ALGORITHMS[name][0]
    default_episodes = get_task(task).default_eval_episodes
    steps = args.rounds if name in ("PPO", "online %BC") else args.steps if name == "BC" else args.value_steps
    key = CONFIG_STEPS[name].split(":")[0]
    replacements = [(f"runs/{task}_", f"{out}/{task}_"), ("save_dir: runs", f"save_dir: {out}"),
                    (f"data/{task}", str(data)), (CONFIG_STEPS[name], f"{key}: {steps} "),
                    (f"episodes: {default_episodes} ", f"episodes: {args.eval_episodes or default_episodes} "),
                    *seed_replacements(args.seed, online=name in ("PPO", "online %BC"))]
    return rewritten_config(f"{task}_{suffix}", out, replacements)


def scores(args) -> None:
    for task in args.tasks:
        out = Path(args.out) / task
        data = Path(args.data) if args.data else out / "data"
        if not (data / "train.jsonl").is_file():
            stats = prepare_task_data(task, None, data, args.episodes, seed=0, progress=False)
            print(f"{task} dataset: {args.episodes} conversations, success {stats['success_rate']['ours']:.3f}, "
                  f"mean return {stats['mean_return']['ours']:.2f}", flush=True)
        paper = questions.PAPER_NORMALISATION[task]
        for name in args.algorithms.split(","):
            resume = continued_bc(out / f"{task}_bc" / "checkpoints" / "last.ckpt", args.continue_bc, name)
            _, row = fit_row(name, benchmark_config(task, name, out, data, args), args.seed, resume_from=resume,
                             settings=args.settings)
            paper_score, paper_return = ALGORITHMS[name][1][task]
            row.update(task=task, paper_normalised=paper_score, paper_return=paper_return,
                       paper_constants_score=round(paper(row["mean_return"]), 1))
            print(f"{task} {name}: score {row['normalised_score']:.1f} (paper constants {row['paper_constants_score']}; "
                  f"paper {paper_score}), return {row['mean_return']:.2f} (paper {paper_return}), success "
                  f"{row['success_rate']:.3f}, {row['seconds']:.0f} s", flush=True)
            payload = {"benchmark": "questions_scores", "machine": machine_info(), "config": vars(args)}
            add_row(Path(args.results), row, payload, order={"task": available_tasks(), "algorithm": list(ALGORITHMS)})
    print(f"results: {args.results}")


def markdown_table(rows: list[dict]) -> str:
    lines = ["| task | algorithm | normalised (ours) | normalised (paper constants) | return | success | paper normalised "
             "| paper return | steps | wall s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['algorithm']} | {r['normalised_score']:.1f} | {r['paper_constants_score']} "
                     f"| {r['mean_return']:.2f} | {r['success_rate']:.3f} | {r['paper_normalised']} | {r['paper_return']} "
                     f"| {r['optimizer_steps']} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default=None, help=f"one of {', '.join(available_tasks())} (default: all)")
    p.add_argument("--algorithms", default=",".join(ALGORITHMS), help="comma-separated, in order; all but BC need BC")
    p.add_argument("--episodes", type=int, default=100_000, help="dataset size (the paper: 100k)")
    p.add_argument("--data", default=None, help="an existing `lmrl data` directory of the task (default: OUT/TASK/data)")
    p.add_argument("--steps", type=int, default=3000, help="BC steps")
    p.add_argument("--continue-bc", action="store_true",
                   help="BC continues its last checkpoint under OUT (exact training state) up to --steps")
    p.add_argument("--value-steps", type=int, default=2000, help="%%BC, MC and ILQL steps (from BC)")
    p.add_argument("--rounds", type=int, default=20, help="PPO and online %%BC rounds")
    p.add_argument("--eval-episodes", type=int, default=None, help="evaluation games (default: the task's protocol)")
    p.add_argument("--smoke", action="store_true", help="every algorithm a few steps on a small dataset, end to end")
    p.add_argument("--throughput", action="store_true", help="measure oracle and generation rates only")
    p.add_argument("--generation-episodes", type=int, default=5000, help="conversations timed for the generation rate")
    p.add_argument("--seed", type=int, default=0,
                   help="seed_everything, and PPO's / online %%BC's rollouts.seed; both start from the BC checkpoint in --out")
    add_setting_argument(p)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default="runs/questions_scores")
    p.add_argument("--results", default=str(RESULTS_DIR / "questions_scores.json"))
    p.add_argument("--throughput-results", default=str(RESULTS_DIR / "questions_throughput.json"))
    p.add_argument("--table", action="store_true", help="print the scores file's rows as a Markdown table and stop")
    args = p.parse_args(argv)
    if args.table:
        print(markdown_table(json.loads(Path(args.results).read_text())["rows"]))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    args.tasks = [args.task] if args.task else available_tasks()
    if args.throughput:
        throughput(args)
        return
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
        args.results = str(Path(args.out) / "smoke_scores.json")
    for task in args.tasks:
        get_task(task)  # an unknown task fails before any training
    scores(args)


if __name__ == "__main__":
    main()
