"""The twelve Text-Nav example configs run as written through `lmrl fit`, a few steps each on a handful of generated
episodes, with data and checkpoint paths pointed at a temporary directory, a short context and the evaluation
callbacks left out: per variant, BC from scratch (whose re-ranking decoding is checked to play admissible commands),
then %BC, MC, ILQL, PPO and online %BC from the BC checkpoint. Online rounds play 4 episodes capped at 2 commands."""
from __future__ import annotations

from pathlib import Path

import pytest

from lmrl_lightning.cli import _fit, main
from lmrl_lightning.env import Text
from lmrl_lightning.policies import Decoding
from lmrl_lightning.registry import get_task
from lmrl_lightning.rollout import rollout
from lmrl_lightning.tasks.textnav import TextNavEnv, admissible_actions_for_history

CONFIGS = Path(__file__).resolve().parent.parent / "examples" / "configs"
QUIET = ["--trainer.callbacks=[]", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.accelerator", "cpu"]
# Keep the smoke run cheap: a shorter context than the configs' 1536 tokens (episodes are left-truncated).
SHORT = ["--data.max_length", "256"]


def fit(tmp_path: Path, config: str, *overrides: str):
    """Run `config` with `overrides`; its checkpoints (none when no step was taken) and the trained module."""
    root = tmp_path / config
    cli = _fit(["-c", str(CONFIGS / f"{config}.yaml"), *overrides, *QUIET, "--trainer.default_root_dir", str(root)])
    return sorted((root / "checkpoints").glob("*.ckpt")), cli.model


def check_rerank_plays_admissible_commands(module, variant: str) -> None:
    """Re-ranking decoding (the task's per-state candidates) plays, at every turn, one of the commands the
    observation before it lists, even from an almost untrained model."""
    task = get_task("textnav")
    policy = module.policy(Decoding("rerank"), task.rerank_candidates())
    specs = task.eval_episodes(variant, 3)
    for episode in rollout(TextNavEnv(variant, max_steps=4), policy, specs, batch_size=3):
        texts = episode.turns
        for k, turn in enumerate(texts):
            if turn.is_action:
                assert turn.text in admissible_actions_for_history([Text(texts[k - 1].text, False)])


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["fo", "po"])
def test_every_textnav_config_trains(tmp_path, variant):
    data = tmp_path / f"data_{variant}"
    assert main(["data", "textnav", "--variant", variant, "--out", str(data), "--episodes", "6",
                 "--vocab-size", "300"]) == 0
    offline = ["--data.data_path", str(data / "train.jsonl"), "--trainer.max_steps", "2", *SHORT]
    (bc,), bc_module = fit(tmp_path, f"textnav_{variant}_bc", *offline, "--model.backbone.tokenizer",
                           str(data / "tokenizer"), "--model.backbone.max_positions", "256")
    check_rerank_plays_admissible_commands(bc_module, variant)
    for algo in ("filtered_bc", "mc_returns", "ilql"):
        checkpoints, _ = fit(tmp_path, f"textnav_{variant}_{algo}", *offline, "--model.init_from", str(bc))
        assert len(checkpoints) == 1  # %BC too: episodes 4 and 5 of seed 0 are won
    online = ["--model.init_from", str(bc), "--model.rollouts.episodes_per_round", "4",
              "--model.rollouts.batch_size", "4", "--model.rollouts.env_options", '{"max_steps": 2}',
              "--model.updates.max_length", "256", "--trainer.max_epochs", "1"]
    for algo in ("ppo", "online_filtered_bc"):
        checkpoints, module = fit(tmp_path, f"textnav_{variant}_{algo}", *online)
        (round_stats,) = module.round_history
        assert round_stats["episodes"] == 4 and round_stats["mean_length"] <= 2
        # Online %BC keeps the won episodes: two commands never win, so the round takes no step.
        assert len(checkpoints) == (1 if algo == "ppo" else 0)
