"""The `lmrl` command.

    lmrl data maze --variant fo --out data/maze_fo        generate an offline dataset + tokenizer
    lmrl fit -c examples/configs/maze_fo_bc.yaml           train (LightningCLI: --model, --data, --trainer)
    lmrl eval CKPT [--task maze --variant fo]              roll a checkpoint out with the task's protocol
    lmrl play maze                                         play a task yourself in the terminal
    lmrl quickstart                                        data -> BC, filtered BC -> evaluation -> table
    lmrl report RESULTS... --out DIR                       result files -> Table 2 layout beside the paper, plots

Bad input (a malformed dataset, an unknown name, a missing file) ends with one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Iterator, Optional, Sequence

from lmrl_lightning.errors import LMRLError

# What libraries print on every run that tells an lmrl user nothing they can act on: Lightning's advertisements for
# its cloud products, a seed warning that the next line ("Seed set to 0") repeats, and deprecation notices raised
# inside Lightning, torch and transformers. Silenced while `main` runs only (`quiet_library_noise`).
_NOISY_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero", "transformers.utils.generic",
)
_NOISY_LOG_MESSAGES = ("💡 Tip: For seamless cloud", "`past_key_values`/`cache_params` are deprecated")
_NOISY_WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated", "No seed found")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_NOISY_LOG_MESSAGES)


@contextlib.contextmanager
def quiet_library_noise() -> Iterator[None]:
    """Drop the messages above while the block runs; the warning filters and loggers are restored after it."""
    drop, loggers = _DropNoise(), [logging.getLogger(name) for name in _NOISY_LOGGERS]
    with warnings.catch_warnings():
        for message in _NOISY_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        for logger in loggers:
            logger.addFilter(drop)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(drop)


def _data(args: argparse.Namespace) -> None:
    from lmrl_lightning.data.prepare import prepare_task_data
    from lmrl_lightning.registry import get_task

    if args.from_original:
        from lmrl_lightning.data.prepare import import_original_data
        from lmrl_lightning.scoring import format_dataset_stats

        if args.episodes is not None:
            raise LMRLError("--episodes and --from-original exclude each other: the file decides the episodes")
        stats = import_original_data(args.task, args.variant, args.from_original, args.out, args.vocab_size,
                                     overwrite=args.overwrite)
        print(format_dataset_stats(stats))
    else:
        stats = prepare_task_data(args.task, args.variant, args.out, args.episodes, args.seed, args.vocab_size,
                                  overwrite=args.overwrite)
        format_stats = get_task(args.task).format_stats
        print(format_stats(stats) if format_stats else json.dumps(stats, indent=2))
    print(f"wrote {args.out}/: train.jsonl, tokenizer/, stats.json, manifest.json")


def _resolve_model_args(rest: Sequence[str]) -> list[str]:
    """Accept `--model ilql` (a registered name: built-in, or an installed package's entry point) and refuse an
    unknown algorithm with the list of valid ones, before LightningCLI would print its whole usage text. Config files
    and dotted paths pass through."""
    from lmrl_lightning.registry import algorithm_class, algorithm_names, class_path, import_algorithm_class

    out = list(rest)
    for i, arg in enumerate(out):
        if arg == "--model" and i + 1 < len(out):
            j, value = i + 1, out[i + 1]
        elif arg.startswith("--model="):
            j, value = i, arg.split("=", 1)[1]
        else:
            continue
        if value.startswith(("{", "[")) or value.endswith((".yaml", ".yml", ".json")) or os.path.exists(value):
            continue
        registered = algorithm_class(value)
        if registered is None and import_algorithm_class(value) is None:
            raise LMRLError(
                f"unknown algorithm {value!r}; valid: {', '.join(algorithm_names())} "
                "(or the dotted path of an LMRLModule subclass)"
            )
        resolved = class_path(registered) if registered is not None else value
        out[j] = resolved if j == i + 1 else f"--model={resolved}"
    return out


def _fit(rest: Sequence[str]):
    """`lmrl fit`; returns the LightningCLI (its trainer, model and callbacks) to in-process callers."""
    from lmrl_lightning.fit_cli import run_fit

    cli = run_fit(rest, _resolve_model_args(rest))
    _print_final_evaluations(cli.trainer)
    return cli


def _print_final_evaluations(trainer) -> None:
    """The last result of each `RolloutEvaluation` the run had (the sweeps of `BetaSweep` are not results)."""
    from lmrl_lightning.callbacks.rollout_eval import BetaSweep, RolloutEvaluation

    if trainer is None or not trainer.is_global_zero:
        return
    for callback in trainer.callbacks:
        if isinstance(callback, RolloutEvaluation) and not isinstance(callback, BetaSweep) and callback.results:
            print(callback.summary_line())


def _eval(args: argparse.Namespace) -> None:
    from lmrl_lightning.algorithms.base import load_module
    from lmrl_lightning.atomic import atomic_write_json
    from lmrl_lightning.data.jsonl import write_episodes
    from lmrl_lightning.policies import Decoding
    from lmrl_lightning.registry import get_task
    from lmrl_lightning.evaluation import EvaluationProtocol, evaluate_module, summarise
    from lmrl_lightning.rollout import format_transcript

    _check_eval_flags(args)
    if Path(args.checkpoint).is_dir():
        from lmrl_lightning.export import load_export

        module, meta = load_export(args.checkpoint, args.trust_remote_code, args.algorithm)
    else:
        module, meta = load_module(args.checkpoint, args.trust_remote_code, args.algorithm)
    task = get_task(args.task) if args.task else _recorded_task(args.checkpoint, meta)
    variant = task.check_variant(args.variant or meta.get("variant") or task.variants[0])
    decoding = Decoding(args.decoding or task.default_decoding, args.temperature, args.beta,
                        value_networks=args.value_networks, candidate_value=args.candidate_value)
    if args.beta is not None and module.value_guidance() is None:
        raise LMRLError(
            f"--beta applies to value-guided decoding (MC, ILQL); {args.checkpoint} holds {type(module).__name__}"
        )
    protocol = EvaluationProtocol(task.name, variant, args.episodes, args.batch_size, args.seed, decoding,
                                  _env_options(args.env_options))
    episodes = evaluate_module(module, protocol, progress=True)
    summary = summarise(episodes, task.normalisation[variant])
    print(format_transcript(episodes[0]))
    print(json.dumps({"task": task.name, "variant": variant, **vars(summary)}, indent=2))
    if args.out:
        atomic_write_json(args.out, {
            "task": task.name, "variant": variant, "checkpoint": args.checkpoint, **vars(summary),
            "returns": [e.total_reward for e in episodes],
        })
    if args.episodes_out:
        write_episodes(args.episodes_out, episodes)


def _env_options(text: Optional[str]) -> Optional[dict]:
    """`--env-options`: a JSON object of the task env's keyword arguments."""
    if text is None:
        return None
    try:
        options = json.loads(text)
    except ValueError as e:
        raise LMRLError(f"--env-options must be a JSON object, e.g. '{{\"oracle_model\": \"DIR\"}}' ({e})") from None
    if not isinstance(options, dict):
        raise LMRLError(f"--env-options must be a JSON object of keyword arguments, got {text[:60]!r}")
    return options


def _recorded_task(checkpoint: str, meta: dict):
    """The task a checkpoint records, looked up among registered tasks and installed entry points only; when it is
    not installed, the origin it records (distribution, version, entry point) says what to install."""
    from lmrl_lightning.registry import describe_origin, find_task

    name = meta.get("task") or _missing("--task (the checkpoint does not record its task)")
    task = find_task(name) if isinstance(name, str) else None
    if task is None:
        raise LMRLError(
            f"{checkpoint} was trained on task {str(name)[:100]!r}, which is not installed here; it came from "
            f"{describe_origin(meta.get('task_origin'))}: install that, or name another task with --task"
        )
    return task


def _check_eval_flags(args: argparse.Namespace) -> None:
    """Refuse bad `lmrl eval` flags before loading the checkpoint or rolling anything out."""
    for flag, value in (("--episodes", args.episodes), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise LMRLError(f"{flag} must be at least 1, got {value}")
    if not (math.isfinite(args.temperature) and args.temperature > 0):
        raise LMRLError(
            f"--temperature must be a positive number, got {args.temperature:g} (greedy is --decoding greedy)"
        )
    if args.beta is not None and not math.isfinite(args.beta):
        raise LMRLError(f"--beta must be a finite number, got {args.beta:g}")
    if args.out is not None:
        _check_output_file(args.out, "--out")


def _check_output_file(path: str, flag: str) -> None:
    """An output file is checked before the work that produces it: its directory exists and is writable."""
    if not path:
        raise LMRLError(f"{flag} must name a file, got ''")
    parent = Path(path).parent
    if Path(path).is_dir():
        raise LMRLError(f"{flag} {path!r} is a directory; name a file")
    if not parent.is_dir():
        raise LMRLError(f"{flag} {path!r}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LMRLError(f"{flag} {path!r}: cannot write in {str(parent)!r}")


def _play(args: argparse.Namespace) -> None:
    from lmrl_lightning.env import Text
    from lmrl_lightning.registry import get_task

    task = get_task(args.task)
    variant = task.check_variant(args.variant or task.variants[0])
    env = task.make_env(variant)
    history = env.reset(seed=args.seed)
    total, done = 0.0, False
    actions = task.candidate_actions or ()
    hint = f" (one of: {', '.join(a.strip() for a in actions)})" if 0 < len(actions) <= 8 else ""
    print(f"{task.description}\n{task.name} ({variant}): type your action{hint}; an empty line or Ctrl-D quits.")
    show = task.show_observation or (lambda text: text)
    while not done:
        print(show(history[-1].text), end="")
        try:
            line = input("> ")
        except EOFError:
            line = ""
        if not line.strip():
            print("\nquit.")
            return
        history, reward, done = env.step(history + (Text(line.strip() + "\n", True),))
        total += reward
        print(f"  reward {reward:g}, return so far {total:g}")
    print(show(history[-1].text), end="")
    end_message = env.end_message()
    if end_message:
        print(end_message)
    print(f"episode over: return {total:g}, normalised score {task.normalisation[variant](total):.1f}")


def _export(args: argparse.Namespace) -> None:
    from lmrl_lightning.export import export_module

    out = export_module(args.checkpoint, args.out, args.merge, args.trust_remote_code, args.algorithm)
    print(f"exported to {out}")


def _quickstart(args: argparse.Namespace) -> None:
    from lmrl_lightning.quickstart import run_quickstart

    _check_quickstart_flags(args)
    names = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    unknown = sorted(set(names) - {"BC", "%BC", "MC", "ILQL"})
    if unknown:
        raise LMRLError(f"unknown quickstart algorithm {unknown[0]!r}; valid: BC, %BC, MC, ILQL")
    run_quickstart(args.out, args.variant, args.episodes, args.steps, args.value_steps, args.seed, names, args.decay)


def _check_quickstart_flags(args: argparse.Namespace) -> None:
    if not args.out:
        raise LMRLError("--out must name a directory, got ''")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise LMRLError(f"--out {args.out!r} is a file; name a directory")
    for flag, value in (("--episodes", args.episodes), ("--steps", args.steps), ("--value-steps", args.value_steps)):
        if value is not None and value < 1:
            raise LMRLError(f"{flag} must be at least 1, got {value}")
    if args.episodes % 25:
        raise LMRLError(
            f"--episodes must be a multiple of the maze's 25 start positions (800 = 25 x 32), got {args.episodes}"
        )


def _report(args: argparse.Namespace) -> None:
    from lmrl_lightning.report import run_report

    print(f"wrote {run_report(args.results, args.out)} and its plots")


def _missing(what: str):
    raise LMRLError(f"missing {what}")


def _add_trust_flags(p: argparse.ArgumentParser) -> None:
    # What a checkpoint or export directory may run is the person's decision, never the file's.
    p.add_argument("--algorithm", default=None, metavar="MODULE.CLASS",
                   help="import this algorithm class for a checkpoint written by an unregistered one (trust its code)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let the model directory run its own Python code (auto_map); a file never grants this")


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one `LMRLError` line pointing at --help, not the usage text."""

    def error(self, message: str):
        raise LMRLError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="lmrl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_command(sub)
    sub.add_parser("fit", help="train from a config (LightningCLI; see `lmrl fit --help`)", add_help=False)
    _add_eval_command(sub)
    _add_export_command(sub)
    _add_play_command(sub)
    _add_quickstart_command(sub)
    _add_report_command(sub)
    return parser


def _add_data_command(sub) -> None:
    p = sub.add_parser("data", help="generate a task's offline dataset and tokenizer")
    p.add_argument("task")
    p.add_argument("--variant", default=None)
    p.add_argument("--out", required=True, help="dataset directory, written whole (a temporary sibling, then renamed)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset directory at --out")
    p.add_argument("--episodes", type=int, default=None,
                   help="number of episodes, 1 to 100,000,000 (default: the paper's); episodes are streamed to "
                        "disk, so the bound is time: about 1k maze or 2k Wordle episodes a second")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--from-original", default=None, metavar="FILE",
                   help="convert a data file of the original LMRL-Gym project (JSON lines; a .json file: one JSON array) instead "
                        "of generating episodes; validated like any dataset")
    p.add_argument("--vocab-size", type=int, default=512,
                   help="BPE vocabulary of the task tokenizer, at least 258 (256 bytes and 2 special tokens)")


def _add_eval_command(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint with the task's protocol")
    p.add_argument("checkpoint", help="a .ckpt file or an `lmrl export` directory")
    p.add_argument("--task", default=None, help="default: the task recorded in the checkpoint")
    p.add_argument("--variant", default=None)
    p.add_argument("--episodes", type=int, default=None,
                   help="evaluation episodes in all (default: the task's protocol, e.g. maze 800 = 25 starts x 32)")
    p.add_argument("--decoding", default=None, choices=["sample", "greedy", "rerank", "rerank_greedy"],
                   help="default: the task's (maze: rerank, sampled over the four moves)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--beta", type=float, default=None, help="value-guidance weight of MC/ILQL (default: the trained one)")
    p.add_argument("--value-networks", default="online", choices=["online", "target"],
                   help="ILQL's guidance from its online networks or its Polyak-averaged targets (the original's re-ranker)")
    p.add_argument("--candidate-value", default="sum", choices=["sum", "last"],
                   help="re-ranking with MC/ILQL: add the value summed over a candidate's tokens, or at its last "
                        "token only (the value of the whole action)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="policy sampling seed")
    p.add_argument("--env-options", default=None, metavar="JSON",
                   help="the task env's keyword arguments, e.g. '{\"oracle_model\": \"models/oracle\"}' (a "
                        "language-model oracle or buyer); options that change rewards break the normalised score")
    p.add_argument("--out", default=None, help="write the summary and returns as JSON")
    p.add_argument("--episodes-out", default=None, metavar="FILE",
                   help="write every evaluation episode (texts, rewards) as JSON lines in the dataset format, to read "
                        "what the policy did")
    _add_trust_flags(p)


def _add_export_command(sub) -> None:
    p = sub.add_parser("export", help="write a checkpoint as a directory that transformers/peft and `lmrl eval` load")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="new directory")
    p.add_argument("--merge", action="store_true", help="LoRA: write the policy with its adapter merged in")
    _add_trust_flags(p)


def _add_play_command(sub) -> None:
    p = sub.add_parser("play", help="play a task yourself")
    p.add_argument("task")
    p.add_argument("--variant", default=None)
    p.add_argument("--seed", type=int, default=None)


def _add_quickstart_command(sub) -> None:
    p = sub.add_parser("quickstart", help="maze: data -> BC and filtered BC (optionally MC, ILQL) -> evaluation -> score table")
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument("--variant", default="fo", choices=["fo", "po"])
    p.add_argument("--episodes", type=int, default=800,
                   help="evaluation episodes, a multiple of the 25 start positions (paper: 800 = 25 x 32)")
    p.add_argument("--steps", type=int, default=None, help="BC and %%BC training steps (default: quickstart's)")
    p.add_argument("--value-steps", type=int, default=None, help="MC and ILQL training steps (default: quickstart's)")
    p.add_argument("--algorithms", default="BC,%BC", help="comma-separated, from BC, %%BC, MC, ILQL (MC/ILQL need BC)")
    p.add_argument("--decay", default="cosine", choices=["cosine", "none"],
                   help="learning rate after the 50-step warm-up: cosine to 0 at the last step, or constant")
    p.add_argument("--seed", type=int, default=0)


def _add_report_command(sub) -> None:
    p = sub.add_parser("report", help="result files -> the paper's Table 2 layout beside its numbers, with plots")
    p.add_argument("results", nargs="+", help="result JSON files (benchmarks/table2.py cells and plan, per-task "
                   "benchmark files) or directories of table2 results; later files replace earlier ones' cells")
    p.add_argument("--out", required=True, help="directory for report.md and the PNG plots")


# `lmrl fit` is not here: LightningCLI parses its own arguments (see `main`).
_COMMANDS = {"data": _data, "eval": _eval, "export": _export, "play": _play, "quickstart": _quickstart,
             "report": _report}


@quiet_library_noise()
def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        if argv and argv[0] == "fit":
            _fit(argv[1:])
            return 0
        args = build_parser().parse_args(argv)
        _COMMANDS[args.command](args)
    except LMRLError as e:
        print(f"lmrl: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system said no (permissions, a full disk, a path that vanished)
        where = f"{e.filename}: " if e.filename else ""
        print(f"lmrl: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmrl: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
