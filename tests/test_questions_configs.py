"""The Twenty Questions (and, when present, Guess My City) example configs run as written through `lmrl fit`, a few
steps each on a handful of generated conversations, with data and checkpoint paths pointed at a temporary directory
and the evaluation callbacks left out: BC from scratch, then %BC, MC, ILQL, PPO and online %BC from the BC
checkpoint. Online rounds play 4 games of at most 2 questions against the knowledge-base oracle."""
from __future__ import annotations

from pathlib import Path

import pytest

from lmrl_lightning.cli import _fit, main

CONFIGS = Path(__file__).resolve().parent.parent / "examples" / "configs"
QUIET = ["--trainer.callbacks=[]", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.accelerator", "cpu"]
TASKS = [task for task in ("twenty_questions", "guess_city") if (CONFIGS / f"{task}_bc.yaml").is_file()]


def fit(tmp_path: Path, config: str, *overrides: str):
    """Run `config` with `overrides`; its checkpoints (none when no step was taken) and the trained module."""
    root = tmp_path / config
    cli = _fit(["-c", str(CONFIGS / f"{config}.yaml"), *overrides, *QUIET, "--trainer.default_root_dir", str(root)])
    return sorted((root / "checkpoints").glob("*.ckpt")), cli.model


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_every_config_trains(tmp_path, task):
    data = tmp_path / "data"
    assert main(["data", task, "--out", str(data), "--episodes", "16"]) == 0
    offline = ["--data.data_path", str(data / "train.jsonl"), "--trainer.max_steps", "2"]
    (bc,), _ = fit(tmp_path, f"{task}_bc", *offline, "--model.backbone.tokenizer", str(data / "tokenizer"))
    for algorithm in ("filtered_bc", "mc_returns", "ilql"):
        checkpoints, _ = fit(tmp_path, f"{task}_{algorithm}", *offline, "--model.init_from", str(bc))
        assert len(checkpoints) == 1
    online = ["--model.init_from", str(bc), "--model.rollouts.episodes_per_round", "4",
              "--model.rollouts.batch_size", "4", "--model.rollouts.env_options", '{"max_questions": 2}',
              "--trainer.max_epochs", "1"]
    for algorithm in ("ppo", "online_filtered_bc"):
        checkpoints, module = fit(tmp_path, f"{task}_{algorithm}", *online)
        (round_stats,) = module.round_history
        assert round_stats["episodes"] == 4 and round_stats["mean_length"] <= 2
        # Online %BC keeps the successful games only; an untrained model rarely guesses right in 2 questions, and a
        # round that keeps nothing takes no step (so writes no checkpoint).
        assert len(checkpoints) == 1 or algorithm == "online_filtered_bc"
