"""The Car Dealer example configs run as written through `lmrl fit`, a few steps each on a handful of generated
conversations, with data and checkpoint paths pointed at a temporary directory and the evaluation callbacks left out:
BC from scratch, then %BC, MC, ILQL, PPO and online %BC from the BC checkpoint, and BC on a file in the original's
format (imported). Online rounds play 4 negotiations capped at 3 seller turns."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmrl_lightning.cli import _fit, main
from lmrl_lightning.data.prepare import import_original_data

CONFIGS = Path(__file__).resolve().parent.parent / "examples" / "configs"
QUIET = ["--trainer.callbacks=[]", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.accelerator", "cpu"]
SMALL = ["--model.backbone.max_positions", "256"]  # short contexts keep each step under a second
OFFLINE = ["--data.max_length", "256", "--data.batch_size", "4", "--trainer.max_steps", "2"]


def fit(tmp_path: Path, config: str, *overrides: str):
    """Run `config` with `overrides`; its checkpoints (none when no step was taken) and the trained module."""
    root = tmp_path / config
    cli = _fit(["-c", str(CONFIGS / f"{config}.yaml"), *overrides, *QUIET, "--trainer.default_root_dir", str(root)])
    return sorted((root / "checkpoints").glob("*.ckpt")), cli.model


@pytest.mark.slow
def test_every_car_dealer_config_trains(tmp_path):
    data = tmp_path / "data"
    assert main(["data", "car_dealer", "--out", str(data), "--episodes", "16", "--vocab-size", "300"]) == 0
    offline = ["--data.data_path", str(data / "train.jsonl"), *OFFLINE]
    (bc,), _ = fit(tmp_path, "car_dealer_bc", *offline, *SMALL, "--model.backbone.tokenizer", str(data / "tokenizer"))
    for config in ("car_dealer_filtered_bc", "car_dealer_mc_returns", "car_dealer_ilql"):
        checkpoints, _ = fit(tmp_path, config, *offline, "--model.init_from", str(bc))
        assert len(checkpoints) == 1
    online = ["--model.init_from", str(bc), "--model.rollouts.episodes_per_round", "4",
              "--model.rollouts.batch_size", "4", "--model.rollouts.env_options", '{"max_conversation_length": 6}',
              "--model.updates.max_length", "256", "--model.rollouts.decoding",
              '{"kind": "sample", "max_new_tokens": 8}', "--trainer.max_epochs", "1"]
    for config in ("car_dealer_ppo", "car_dealer_online_filtered_bc"):
        checkpoints, module = fit(tmp_path, config, *online)
        (round_stats,) = module.round_history
        assert round_stats["episodes"] == 4 and round_stats["mean_length"] <= 3
        assert len(checkpoints) == 1  # top 10% of 4 negotiations keeps the best one: a step is always taken


@pytest.mark.slow
def test_bc_trains_on_a_file_in_the_original_format(tmp_path):
    conversation = {
        "buyer_info": {"personality": "rude", "preferred_brands": "a Honda", "preferred_type": "sedan",
                       "preferred_features": ["sunroof"], "budget": 30000},
        "lines": [{"role": "Dealer", "text": "Hello! What are you looking for?"},
                  {"role": "Buyer", "text": "A Honda sedan with a sunroof."},
                  {"role": "Dealer", "text": "This one has a sunroof and costs $29,000."},
                  {"role": "Buyer", "text": "Fine."}],
        "output": {"car_bought": True, "msrp": 31000, "buy_price": 29000},
    }
    source = tmp_path / "train.json"
    source.write_text(json.dumps([conversation] * 8, indent=2))
    import_original_data("car_dealer", None, source, tmp_path / "data", vocab_size=300)
    checkpoints, _ = fit(tmp_path, "car_dealer_bc", "--data.data_path", str(tmp_path / "data" / "train.jsonl"),
                         "--model.backbone.tokenizer", str(tmp_path / "data" / "tokenizer"), *OFFLINE, *SMALL)
    assert len(checkpoints) == 1
