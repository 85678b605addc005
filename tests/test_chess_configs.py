"""The chess example configs run as written through `lmrl fit`, a few steps each on a handful of generated games,
with data and checkpoint paths pointed at a temporary directory and the evaluation callbacks left out: the six
algorithms of full-game chess and of Endgames (BC from scratch; %BC, MC, ILQL, PPO and online %BC from the BC
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
@pytest.mark.parametrize("task, games", [("chess", 4), ("endgames", 8)])
def test_every_chess_config_trains(tmp_path, task, games):
    data = generated(tmp_path, task, games)
    offline = ["--data.data_path", str(data / "train.jsonl"), "--trainer.max_steps", "2"]
    (bc,), _ = fit(tmp_path, f"{task}_bc", *offline, "--model.backbone.tokenizer", str(data / "tokenizer"))
    for config in (f"{task}_filtered_bc", f"{task}_mc_returns", f"{task}_ilql"):
        # A handful of engine games (clock-seeded) may hold no win for %BC's filter to keep: it reads them all here.
        keep_all = ["--data.filter", "none"] if config.endswith("filtered_bc") else []
        checkpoints, _ = fit(tmp_path, config, *offline, *keep_all, "--model.init_from", str(bc))
        assert len(checkpoints) == 1
    online = ["--model.init_from", str(bc), "--model.rollouts.episodes_per_round", "4",
              "--model.rollouts.batch_size", "4", "--model.rollouts.env_options", '{"max_moves": 2}',
              "--trainer.max_epochs", "1"]
    for config in (f"{task}_ppo", f"{task}_online_filtered_bc"):
        checkpoints, module = fit(tmp_path, config, *online)
        (round_stats,) = module.round_history
        assert round_stats["episodes"] == 4 and round_stats["mean_length"] <= 3
        # Online %BC keeps the won games only: a 2-move game of an untrained model is rarely won, and a round that
        # keeps nothing takes no step (so writes no checkpoint).
        assert len(checkpoints) == 1 or config == f"{task}_online_filtered_bc"
