"""Car Dealer scores and simulator speed.

Scores: BC, %BC, MC Returns, ILQL, PPO and online %BC trained from the example configs
(`examples/configs/car_dealer_*.yaml`), each evaluated on the task's protocol (64 fixed buyer profiles x 4
negotiations against the rule-based buyer, free sampling), beside the paper's Table 2 score (the paper gives no raw
Car Dealer returns) and, for reference, the scripted sellers on the same protocol: the dataset's mixed seller (the
data average), its three styles, the expert (the normalisation's maximum) and the idle seller (its minimum). Each row
gives the raw return, the normalised score, the purchase rate and the mean price ratio of the sales (the fancy reward
of a sale: price / ((budget + msrp) / 2)). MC, ILQL, PPO and online %BC start from the BC row's checkpoint, %BC
fine-tunes it on the best 10% of conversations.

Speed (`--speed`): rule-buyer replies per second (`CarDealerEnv.step_many` over 256 negotiations), language-model
buyer replies per second (a tiny GPT-2 built here, or `--buyer-model DIR`: one oracle call per turn for all live
episodes), and the data generation rate (`lmrl data car_dealer`'s generator, conversations per second).

Run:  python benchmarks/car_dealer_scores.py --speed --sellers                 (a minute)
      python benchmarks/car_dealer_scores.py --algorithms BC                    (then the others; rows merge)
      python benchmarks/car_dealer_scores.py --smoke                            (every algorithm, a few steps each)
      python benchmarks/car_dealer_scores.py --table
(writes benchmarks/results/car_dealer_scores.json after every row; --smoke writes car_dealer_smoke.json)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, machine_info, quiet_libraries  # noqa: E402

quiet_libraries()

from _scores import (  # noqa: E402
    add_row, add_setting_argument, continued_bc, final_episodes, fit_row, rewritten_config, seed_replacements,
)
from lmrl_lightning.data.prepare import prepare_task_data  # noqa: E402
from lmrl_lightning.env import Text  # noqa: E402
from lmrl_lightning.evaluation import EvaluationProtocol, evaluate_task, summarise  # noqa: E402
from lmrl_lightning.registry import get_task  # noqa: E402
from lmrl_lightning.tasks.car_dealer import (  # noqa: E402
    DATASET_AVERAGE_RETURN,
    EXPERT_RETURN,
    SELLERS,
    CarDealerEnv,
    LanguageModelBuyer,
    generate_dataset,
)

# name -> (config, paper Table 2 normalised score; the paper gives no raw Car Dealer returns)
ALGORITHMS = {
    "BC": ("car_dealer_bc", 44.5),
    "%BC": ("car_dealer_filtered_bc", 54.8),
    "MC": ("car_dealer_mc_returns", 57.2),
    "ILQL": ("car_dealer_ilql", 46.3),
    "PPO": ("car_dealer_ppo", 50.5),
    "online %BC": ("car_dealer_online_filtered_bc", 40.4),
}
SELLER_ROWS = ("expert", "mixed", "discount", "feature", "concise", "idle")
SPEED_LINES = ("Hello! What kind of car are you looking for?", "What's your budget?", "It has a backup camera.",
               "The price is $41,000.", "I can give you $1,000 off.", "That's my final price. Do we have a deal?")


def outcome_metrics(episodes) -> dict:
    """Purchase rate and the mean price ratio of the sales (a sale's fancy reward)."""
    sales = [e.total_reward for e in episodes if e.success]
    return {"purchase_rate": len(sales) / len(episodes),
            "mean_price_ratio": statistics.mean(sales) if sales else None}


def seller_rows(episodes: int) -> list[dict]:
    """The scripted sellers on the evaluation protocol."""
    normalise = get_task("car_dealer").normalisation["default"]
    rows = []
    for name in SELLER_ROWS:
        start = time.time()
        played = evaluate_task(SELLERS[name](), EvaluationProtocol("car_dealer", episodes=episodes))
        summary = summarise(played, normalise)
        rows.append({"seller": name, "mean_return": summary.mean_return, "normalised_score": summary.normalised_score,
                     "mean_length": summary.mean_length, **outcome_metrics(played),
                     "seconds": round(time.time() - start, 2)})
        print(f"seller {name}: return {summary.mean_return:.3f}, score {summary.normalised_score:.1f}, purchases "
              f"{rows[-1]['purchase_rate']:.3f}, length {summary.mean_length:.1f}", flush=True)
    return rows


def buyer_replies_per_second(envs: list[CarDealerEnv], rounds: int) -> dict:
    """Replies per second of `envs`' buyers, stepping all live negotiations together with SPEED_LINES as seller."""
    replies, start = 0, time.perf_counter()
    for r in range(rounds):
        histories = [env.reset(seed=r * len(envs) + i) for i, env in enumerate(envs)]
        live = list(range(len(envs)))
        for line in SPEED_LINES:
            if not live:
                break
            results = CarDealerEnv.step_many([envs[i] for i in live],
                                              [histories[i] + (Text(line + "\n", True),) for i in live])
            replies += len(live)
            for i, (history, _, _) in zip(live, results):
                histories[i] = history
            live = [i for i, result in zip(live, results) if not result[2]]
    seconds = time.perf_counter() - start
    return {"replies": replies, "seconds": round(seconds, 3), "replies_per_second": round(replies / seconds, 1)}


def tiny_buyer_model(directory: Path) -> Path:
    """A 2-layer GPT-2 over a BPE tokenizer trained on a few buyer lines: plumbing speed, not a trained buyer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from lmrl_lightning.models.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer([*SPEED_LINES, "Start\n", "I want a Toyota SUV with heated seats.",
                                     "Output: Decision=Accept MSRP=$40,000 Buy Price=$38,000"] * 8, 400)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=128, n_head=4, n_positions=1024, vocab_size=len(tokenizer),
                                       eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                                       pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


def speed(args) -> dict:
    rule = buyer_replies_per_second([CarDealerEnv() for _ in range(256)], rounds=4)
    print(f"rule buyer: {rule['replies_per_second']:.0f} replies/s ({rule['replies']} replies)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.buyer_model or tiny_buyer_model(Path(tmp) / "buyer")
        buyer = LanguageModelBuyer(model_dir, device=args.device, batch_size=args.lm_batch_size,
                                   max_new_tokens=args.lm_new_tokens)
        lm = buyer_replies_per_second([CarDealerEnv(buyer=buyer) for _ in range(args.lm_episodes)], rounds=1)
        lm.update(model=str(args.buyer_model or "tiny GPT-2 (2 layers, 128 wide)"), device=args.device,
                  max_new_tokens=args.lm_new_tokens, oracle_calls=buyer.calls, episodes=args.lm_episodes)
        print(f"LM buyer ({lm['model']}, {args.device}): {lm['replies_per_second']:.1f} replies/s, "
              f"{lm['replies']} replies in {buyer.calls} oracle calls", flush=True)
        start = time.perf_counter()
        generate_dataset(Path(tmp) / "data", n_episodes=args.gen_episodes, progress=False)
        seconds = time.perf_counter() - start
    generation = {"conversations": args.gen_episodes, "seconds": round(seconds, 2),
                  "conversations_per_second": round(args.gen_episodes / seconds, 1)}
    print(f"data generation: {generation['conversations_per_second']:.0f} conversations/s", flush=True)
    return {"rule_buyer": rule, "lm_buyer": lm, "data_generation": generation}


def benchmark_config(name: str, out: Path, data: Path, args) -> Path:
    """The example config with this benchmark's paths, lengths and evaluation size."""
    replacements = [("runs/car_dealer_", f"{out}/car_dealer_"), ("save_dir: runs", f"save_dir: {out}"),
                    ("data/car_dealer", str(data)), ("episodes: 256 ", f"episodes: {args.eval_episodes} "),
                    *seed_replacements(args.seed, online=name in ("PPO", "online %BC"))]
    if name in ("PPO", "online %BC"):
        replacements += [("max_epochs: 20 ", f"max_epochs: {args.rounds} "),
                         ("episodes_per_round: 64 ", f"episodes_per_round: {args.round_episodes} ")]
    elif name == "BC":
        replacements.append(("max_steps: 3000", f"max_steps: {args.steps}"))
    else:
        replacements.append(("max_steps: 1000" if name == "%BC" else "max_steps: 2000", f"max_steps: {args.value_steps}"))
    return rewritten_config(ALGORITHMS[name][0], out, replacements)


def run_row(name: str, config: Path, seed: int = 0, resume_from: Optional[Path] = None,
            settings: Sequence[str] = ()) -> dict:
    cli, row = fit_row(name, config, seed, resume_from=resume_from, settings=settings)
    row.update(outcome_metrics(final_episodes(cli)), paper_normalised=ALGORITHMS[name][1],
               data_average_return=DATASET_AVERAGE_RETURN, expert_return=EXPERT_RETURN)
    print(f"{name}: score {row['normalised_score']:.1f} (paper {row['paper_normalised']}), return "
          f"{row['mean_return']:.3f} (data {DATASET_AVERAGE_RETURN}, expert {EXPERT_RETURN}), purchases "
          f"{row['purchase_rate']:.3f}, {row['seconds']:.0f} s", flush=True)
    return row


def markdown_table(payload: dict) -> str:
    lines = ["| policy | normalised | return | purchase rate | price ratio of sales | paper normalised | steps | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    ratio = lambda r: "-" if r.get("mean_price_ratio") is None else f"{r['mean_price_ratio']:.3f}"  # noqa: E731
    for r in payload.get("rows", []):
        lines.append(f"| {r['algorithm']} | {r['normalised_score']:.1f} | {r['mean_return']:.3f} | "
                     f"{r['purchase_rate']:.3f} | {ratio(r)} | {r['paper_normalised']} | {r['optimizer_steps']} | "
                     f"{r['seconds']:.0f} |")
    for r in payload.get("sellers", []):
        lines.append(f"| scripted: {r['seller']} | {r['normalised_score']:.1f} | {r['mean_return']:.3f} | "
                     f"{r['purchase_rate']:.3f} | {ratio(r)} | - | - | {r['seconds']:.0f} |")
    return "\n".join(lines)


def update_results(path: Path, **parts) -> None:
    payload = json.loads(path.read_text()) if path.is_file() else {"benchmark": "car_dealer_scores"}
    payload.update(parts, machine=machine_info())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algorithms", default=None, help="comma-separated from " + ", ".join(ALGORITHMS).replace("%", "%%"))
    p.add_argument("--speed", action="store_true", help="buyer replies/s and the data generation rate")
    p.add_argument("--sellers", action="store_true", help="the scripted sellers on the evaluation protocol")
    p.add_argument("--smoke", action="store_true",
                   help="every algorithm end to end in minutes: 200 conversations, 5 steps, 1 round of 8, 16 episodes")
    p.add_argument("--episodes", type=int, default=19_000, help="dataset size (the paper's)")
    p.add_argument("--data", default=None, help="an existing `lmrl data car_dealer` directory (default: OUT/data)")
    p.add_argument("--steps", type=int, default=3000, help="BC steps")
    p.add_argument("--continue-bc", action="store_true",
                   help="BC continues its last checkpoint under OUT (exact training state) up to --steps")
    p.add_argument("--value-steps", type=int, default=2000, help="%%BC, MC and ILQL steps (from BC)")
    p.add_argument("--rounds", type=int, default=20, help="PPO and online %%BC rounds")
    p.add_argument("--round-episodes", type=int, default=64, help="negotiations per online round")
    p.add_argument("--eval-episodes", type=int, default=256, help="evaluation negotiations (64 profiles x 4)")
    p.add_argument("--buyer-model", default=None, help="a local model directory for the LM buyer speed (default: tiny)")
    p.add_argument("--device", default="cpu", help="the LM buyer's device")
    p.add_argument("--lm-episodes", type=int, default=64)
    p.add_argument("--lm-batch-size", type=int, default=64)
    p.add_argument("--lm-new-tokens", type=int, default=32, help="LM buyer max new tokens (the original: 127)")
    p.add_argument("--gen-episodes", type=int, default=2000, help="conversations for the generation rate")
    p.add_argument("--seed", type=int, default=0,
                   help="seed_everything, and PPO's / online %%BC's rollouts.seed; both start from the BC checkpoint in --out")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default="runs/car_dealer_scores")
    p.add_argument("--results", default=None, help="default: benchmarks/results/car_dealer_scores.json "
                                                   "(car_dealer_smoke.json with --smoke)")
    p.add_argument("--table", action="store_true", help="print the results file as a Markdown table and stop")
    add_setting_argument(p)
    args = p.parse_args(argv)
    if args.smoke:
        args.episodes, args.steps, args.value_steps, args.rounds = 200, 5, 5, 1
        args.round_episodes, args.eval_episodes, args.algorithms = 8, 16, args.algorithms or ",".join(ALGORITHMS)
        args.out = args.out if args.out != "runs/car_dealer_scores" else "runs/car_dealer_smoke"
    results = Path(args.results or RESULTS_DIR / ("car_dealer_smoke.json" if args.smoke else "car_dealer_scores.json"))
    if args.table:
        print(markdown_table(json.loads(results.read_text())))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.speed:
        update_results(results, speed=speed(args), command=" ".join(sys.argv))
    if args.sellers:
        update_results(results, sellers=seller_rows(args.eval_episodes))
    if not args.algorithms:
        print(f"results: {results}")
        return
    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    if not (data / "train.jsonl").is_file():
        stats = prepare_task_data("car_dealer", None, data, args.episodes, seed=0, progress=False)
        print(f"dataset: {args.episodes} conversations, success {stats['success_rate']['ours']:.3f}, "
              f"mean return {stats['mean_return']['ours']:.3f}", flush=True)
    for name in args.algorithms.split(","):
        resume = continued_bc(out / "car_dealer_bc" / "checkpoints" / "last.ckpt", args.continue_bc, name)
        row = run_row(name, benchmark_config(name, out, data, args), args.seed, resume, args.settings)
        payload = {"benchmark": "car_dealer_scores", "machine": machine_info(), "config": vars(args)}
        if results.is_file():
            payload.update({k: v for k, v in json.loads(results.read_text()).items() if k in ("speed", "sellers")})
        add_row(results, row, payload, order={"algorithm": list(ALGORITHMS)})
    print(f"results: {results}")


if __name__ == "__main__":
    main()
