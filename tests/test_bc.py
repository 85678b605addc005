"""BC: the loss against hand-computed values, the action-only projection, and learning the maze's moves."""
import math

import lightning as L
import pytest
import torch

from lmrl_lightning.algorithms import BC, Optimisation, bc_loss
from lmrl_lightning.data.datamodule import EpisodeDataModule
from lmrl_lightning.data.jsonl import write_episodes
from lmrl_lightning.data.prepare import TOKENIZER_DIR, TRAIN_FILE
from lmrl_lightning.env import Text
from lmrl_lightning.models.backbone import BackboneConfig
from lmrl_lightning.models.tokenizer import save_tokenizer, train_bpe_tokenizer
from lmrl_lightning.policies import Decoding
from lmrl_lightning.registry import EvalEpisode
from lmrl_lightning.rollout import rollout
from lmrl_lightning.tasks.maze import MOVES, START_POSITIONS, MazeEnv, OptimalMazePolicy
from lmrl_lightning.tasks.maze.env import describe_fo, optimal_moves


def test_bc_loss_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    targets = torch.tensor([0, 1])
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 2))
    ce1 = -math.log(math.exp(1) / (1 + math.exp(1) + math.exp(3)))
    loss, metrics = bc_loss(logits, targets)
    assert loss.item() == pytest.approx((ce0 + ce1) / 2, abs=1e-6)
    assert metrics["accuracy"].item() == pytest.approx(0.5)
    assert metrics["action_tokens"].item() == 2


def test_bc_loss_rejects_a_batch_without_actions():
    with pytest.raises(ValueError, match="no action token"):
        bc_loss(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))


@pytest.fixture(scope="module")
def optimal_maze_data(tmp_path_factory):
    """Five BFS-optimal episodes from each of the 25 starts, and a tokenizer trained on their texts."""
    out = tmp_path_factory.mktemp("optimal_maze")
    specs = [EvalEpisode(i, i, {"init_position": list(s)}) for i, s in enumerate(START_POSITIONS * 5)]
    episodes = rollout(MazeEnv("fo"), OptimalMazePolicy(), specs, batch_size=64)
    write_episodes(out / "train.jsonl", episodes)
    texts = sorted({t.text for e in episodes for t in e.turns} | set(MOVES))
    save_tokenizer(train_bpe_tokenizer(texts, 400), out / TOKENIZER_DIR)
    return out


def test_action_logits_equal_full_logits_at_action_positions(optimal_maze_data):
    torch.manual_seed(0)
    module = BC(BackboneConfig("tiny", tokenizer=str(optimal_maze_data / TOKENIZER_DIR)))
    data = EpisodeDataModule(str(optimal_maze_data / "train.jsonl"), task="maze", variant="fo", batch_size=8)
    data.attach_tokenizer(module.tokenizer)
    data.setup()
    batch = next(iter(data.train_dataloader()))
    full = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    ours = module.action_logits(batch["input_ids"], batch["attention_mask"], batch["action_mask"])
    torch.testing.assert_close(ours, full[batch["action_mask"]], atol=1e-5, rtol=1e-5)


def test_bc_learns_the_optimal_move_on_most_cells(optimal_maze_data):
    L.seed_everything(0)
    module = BC(BackboneConfig("tiny", tokenizer=str(optimal_maze_data / TOKENIZER_DIR)), optim=Optimisation(lr=1e-3, warmup_steps=10))
    data = EpisodeDataModule(str(optimal_maze_data / "train.jsonl"), task="maze", variant="fo", batch_size=32)
    trainer = L.Trainer(
        max_steps=500, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )
    trainer.fit(module, data)
    policy = module.policy(Decoding("rerank_greedy"), MOVES)
    histories = [(Text(describe_fo(p), False),) for p in START_POSITIONS]
    chosen = [h[-1].text for h in policy.act(histories)]
    correct = sum(move in optimal_moves(p) for move, p in zip(chosen, START_POSITIONS))
    # Measured (seed 0): 22/25 cells after 150 steps, 25/25 from 450 on; an untrained model gets about a third.
    assert correct >= 23, f"optimal move on only {correct}/25 cells"


def test_learning_rate_schedules_by_hand():
    """A linear warm-up, then constant or a cosine down to 0 at the last step."""
    constant, cosine = Optimisation(lr=1.0, warmup_steps=4), Optimisation(lr=1.0, warmup_steps=4, decay="cosine")
    assert [constant.lr_factor(s) for s in (0, 1, 3, 10, 1000)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    factors = [cosine.lr_factor(s, 14) for s in range(14)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    # after the warm-up: 0.5 (1 + cos(pi k / 10)) for k = 1..10, the last step at 0
    assert factors[4:] == pytest.approx([0.5 * (1 + math.cos(math.pi * k / 10)) for k in range(1, 11)])
    assert factors[-1] == pytest.approx(0.0, abs=1e-12)


def test_cosine_decay_reaches_the_optimiser(optimal_maze_data):
    """The trainer's scheduler follows the schedule over `max_steps` (logged learning rates)."""
    module = BC(BackboneConfig("tiny", tokenizer=str(optimal_maze_data / TOKENIZER_DIR)),
                optim=Optimisation(lr=1e-3, warmup_steps=2, decay="cosine"))
    rates = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    data = EpisodeDataModule(str(optimal_maze_data / TRAIN_FILE), batch_size=4, val_fraction=0.0)
    L.Trainer(max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, callbacks=[Record()]).fit(module, data)
    assert rates == pytest.approx([1e-3 * module.optim.lr_factor(s, 6) for s in range(6)])
    assert rates[1] == pytest.approx(1e-3) and rates[-1] < 1e-4
