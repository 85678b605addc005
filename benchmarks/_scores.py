"""Shared steps of the per-task score benchmarks (wordle_scores.py, chess_scores.py): run an example config through
the same LightningCLI as `lmrl fit` with this benchmark's paths, read its evaluation, and merge its row into a
results file that several processes may write in turn."""
from __future__ import annotations

import argparse
import fcntl
import json
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from _common import command_line, write_json

from lmrl_lightning.callbacks import BetaSweep, RolloutEvaluation
from lmrl_lightning.cli import _fit

CONFIGS = Path(__file__).resolve().parent.parent / "examples" / "configs"


def rewritten_config(name: str, out: Path, replacements: Sequence[tuple[str, str]]) -> Path:
    """`examples/configs/<name>.yaml` with each (old, new) replaced, written under `out/configs/`. An `old` the
    config does not hold is an error: the benchmark would otherwise silently run the example's settings."""
    text = (CONFIGS / f"{name}.yaml").read_text()
    for old, new in replacements:
        if old not in text:
            raise ValueError(f"{name}.yaml has no {old!r} to replace: update the benchmark with the config")
        text = text.replace(old, new)
    path = out / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def seed_replacements(seed: int, online: bool) -> list[tuple[str, str]]:
    """`rewritten_config` replacements that give a config the benchmark's `--seed`: `seed_everything` and, for an
    online method (PPO, online %BC), its rounds' own seed (their games, sampling and minibatch order)."""
    replacements = [("seed_everything: 0", f"seed_everything: {seed}")]
    if online:
        replacements.append(("      episodes_per_round:", f"      seed: {seed}\n      episodes_per_round:"))
    return replacements


def add_setting_argument(parser: argparse.ArgumentParser) -> None:
    """`--set KEY=VALUE` (repeatable): one of the config's settings changed for every run of this invocation, as
    `lmrl fit -c CONFIG --KEY=VALUE` would, e.g. `--set model.ppo.value_trunk_grad=false`; the rows record
    it, so a trial setting needs no edited example config."""
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE", type=_setting,
                        help="a config setting for every run, e.g. model.ppo.value_trunk_grad=false")


def _setting(text: str) -> str:
    key, sep, _ = text.partition("=")
    if not sep or not key or key.startswith("-") or " " in key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE with a dotted config key, "
                                         "e.g. model.ppo.value_trunk_grad=false")
    return text


def fit_row(name: str, config: Path, seed: int = 0, resume_from: Optional[Path] = None,
            settings: Sequence[str] = ()) -> tuple[Any, dict[str, Any]]:
    """Fit `config` with `settings` (`KEY=VALUE`, see `add_setting_argument`) over it, continuing `resume_from`'s
    exact training state when given (`--ckpt_path`); the CLI (trainer, model, callbacks) and the row's common
    fields: the final evaluation's summary, the settings, the beta sweep (MC, ILQL) and the online rounds' mean
    returns. `seconds` is this process's time only."""
    start = time.time()
    cli = _fit(["-c", str(config), *(f"--{s}" for s in settings)]
               + (["--ckpt_path", str(resume_from)] if resume_from else []))
    seconds = time.time() - start
    callbacks = cli.trainer.callbacks
    evaluation = next(c for c in callbacks if type(c) is RolloutEvaluation)
    if not evaluation.results:  # Lightning skips training and its end hooks for a run already at max_steps
        raise SystemExit(f"{config}: no step was trained, so nothing was evaluated; a continued run needs more steps")
    summary = evaluation.results[-1][1]
    row: dict[str, Any] = {"algorithm": name, "config": str(config), "command": command_line(), "seed": seed,
                           "optimizer_steps": cli.trainer.global_step, "seconds": round(seconds, 1), **vars(summary)}
    if resume_from:
        row["continued_from"] = str(resume_from)
    if settings:
        row["settings"] = list(settings)
    sweep = next((c for c in callbacks if isinstance(c, BetaSweep)), None)
    if sweep is not None:
        row["beta"] = sweep.chosen
        row["beta_sweep"] = {f"{b:g}": round(s.normalised_score, 2) for b, s in sweep.results}
    if hasattr(cli.model, "round_history"):
        row["round_mean_returns"] = [round(r["mean_return"], 3) for r in cli.model.round_history]
    return cli, row


def continued_bc(last: Path, continue_bc: bool, name: str) -> Optional[Path]:
    """The BC checkpoint to continue (`--continue-bc`: BC resumes its exact training state up to the new step
    count) or None; a missing checkpoint stops the benchmark before any work."""
    if name != "BC" or not continue_bc:
        return None
    if not last.is_file():
        raise SystemExit(f"--continue-bc: {last} does not exist; train BC first")
    return last


def final_episodes(cli) -> list:
    """The episodes of the config's final evaluation."""
    return next(c for c in cli.trainer.callbacks if type(c) is RolloutEvaluation).last_episodes


def add_row(results: Path, row: dict, payload: dict, order: dict[str, Sequence[Any]]) -> None:
    """Write `payload` with `row` replacing the row that has the same values of `order`'s fields (other processes'
    rows kept); rows are sorted by each field's value's place in `order[field]`, e.g. {"algorithm": ["BC", ...]}."""
    results.parent.mkdir(parents=True, exist_ok=True)
    # Processes finishing together take turns: each reads the rows the other just wrote.
    with open(results.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = json.loads(results.read_text()).get("rows", []) if results.is_file() else []
        rows = [r for r in rows if any(r.get(k) != row.get(k) for k in order)] + [row]
        rows.sort(key=lambda r: [list(values).index(r[k]) for k, values in order.items()])
        write_json(results, {**payload, "rows": rows})
