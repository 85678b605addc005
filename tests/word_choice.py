"""A one-turn text task with a known best action, for the online-RL tests: the env asks for a word; answering
"good" earns 1 and anything else 0. Registered as task "word_choice"; `bc_checkpoint` trains a tiny BC policy on
50/50 good/bad answers (mean return about 0.5), the start policy of PPO and online filtered BC."""
from __future__ import annotations

from pathlib import Path

import lightning as L

from lmrl_lightning.algorithms import BC, Optimisation
from lmrl_lightning.data.datamodule import EpisodeDataModule
from lmrl_lightning.data.jsonl import write_episodes
from lmrl_lightning.env import Episode, EpisodeOverError, Text, TextEnv, Turn
from lmrl_lightning.models.backbone import BackboneConfig
from lmrl_lightning.models.tokenizer import save_tokenizer, train_bpe_tokenizer
from lmrl_lightning.registry import EvalEpisode, TaskSpec, register_task
from lmrl_lightning.scoring import Normalisation

PROMPT = "say a word\n"
GOOD, BAD = "good\n", "bad\n"
END = "thanks\n"


class WordEnv(TextEnv):
    """Keeps TextEnv's contract like every registered task (tests/test_env_fuzz.py fuzzes it too)."""

    def reset(self, seed=None, options=None):
        self.reward = None
        return (Text(PROMPT, False),)

    def step(self, history):
        if getattr(self, "reward", 0.0) is not None:
            raise EpisodeOverError("the word_choice episode is over; call reset() first")
        if not history or not history[-1].is_action:
            raise ValueError("step() needs a history whose last text is the agent's action")
        self.reward = 1.0 if history[-1].text == GOOD else 0.0
        return history + (Text(END, False),), self.reward, True

    def success(self) -> bool:
        return self.reward == 1.0


TASK = register_task(TaskSpec(
    name="word_choice",
    variants=("default",),
    make_env=lambda variant: WordEnv(),
    normalisation={"default": Normalisation(0.0, 0.5, 1.0)},
    eval_episodes=lambda variant, n: [EvalEpisode(i, i) for i in range(n)],
    default_eval_episodes=64,
    history_window={"default": None},
    candidate_actions=(GOOD, BAD),
))


def bc_checkpoint(root: Path) -> Path:
    """Train the 50/50 BC start policy under `root` and return its checkpoint."""
    episodes = [Episode([Turn(PROMPT, False), Turn(w, True, float(w == GOOD))], True) for w in [GOOD, BAD] * 32]
    write_episodes(root / "words.jsonl", episodes)
    save_tokenizer(train_bpe_tokenizer([PROMPT, GOOD, BAD] * 8, 300), root / "tok")
    L.seed_everything(0)
    bc = BC(BackboneConfig("tiny", tokenizer=str(root / "tok")), optim=Optimisation(lr=1e-3))
    data = EpisodeDataModule(str(root / "words.jsonl"), window="all", batch_size=16, val_fraction=0.0)
    trainer = L.Trainer(max_steps=40, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(bc, data)
    trainer.save_checkpoint(root / "bc.ckpt")
    return root / "bc.ckpt"
