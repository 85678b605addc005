"""The chess example configs run as written through `lmrl fit`, a few steps each on a handful of generated games,
with data and checkpoint paths pointed at a temporary directory and the evaluation callbacks left out: chess BC,
and the six Endgames algorithms (BC and %BC from scratch / BC, MC, ILQL, PPO and online %BC from the BC
checkpoint). Online rounds play 4 games capped at 3 moves (an untrained model mostly writes illegal moves)."""
from __future__ import annotations

from pathlib import Path

import pytest

from lmrl_lightning.cli import _fit, main

CONFIGS = Path(__file__).resolve().parent.parent / "examples" / "configs"
QUIET = ["--trainer.callbacks=[]", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.accelerator", "cpu"]


def fit(tmp_path: Path, config: str, *overrides: str):
    """Run `config` with `overrides`; its checkpoints (none when no step was taken) and the trained module."""
    root = tmp_path / config
    cli = _fit(["-c", str(CONFIGS / f"{config}.yaml"), *overrides, *QUIET, "--trainer.default_root_dir", str(root)])
    return sorted((root / "checkpoints").glob("*.ckpt")), cli.model


def generated(tmp_path: Path, task: str, games: int) -> Path:
    out = tmp_path / f"data_{task}"
    assert main(["data", task, "--out", str(out), "--episodes", str(games), "--vocab-size", "300"]) == 0
    return out


@pytest.mark.slow
def test_chess_bc_config_trains(tmp_path):
    data = generated(tmp_path, "chess", 2)
    checkpoints, _ = fit(tmp_path, "chess_bc", "--data.data_path", str(data / "train.jsonl"),
                         "--model.backbone.tokenizer", str(data / "tokenizer"), "--trainer.max_steps", "2")
    assert len(checkpoints) == 1


@pytest.mark.slow
def test_every_endgames_config_trains(tmp_path):
    data = generated(tmp_path, "endgames", 8)
    offline = ["--data.data_path", str(data / "train.jsonl"), "--trainer.max_steps", "2"]
    (bc,), _ = fit(tmp_path, "endgames_bc", *offline, "--model.backbone.tokenizer", str(data / "tokenizer"))
    for config in ("endgames_filtered_bc", "endgames_mc_returns", "endgames_ilql"):
        checkpoints, _ = fit(tmp_path, config, *offline, "--model.init_from", str(bc))
        assert len(checkpoints) == 1
    online = ["--model.init_from", str(bc), "--model.rollouts.episodes_per_round", "4",
              "--model.rollouts.batch_size", "4", "--model.rollouts.env_options", '{"max_moves": 2}',
              "--trainer.max_epochs", "1"]
    for config in ("endgames_ppo", "endgames_online_filtered_bc"):
        checkpoints, module = fit(tmp_path, config, *online)
        (round_stats,) = module.round_history
        assert round_stats["episodes"] == 4 and round_stats["mean_length"] <= 3
        # Online %BC keeps the won games only: a 2-move game of an untrained model is rarely won, and a round that
        # keeps nothing takes no step (so writes no checkpoint).
        assert len(checkpoints) == 1 or config == "endgames_online_filtered_bc"
