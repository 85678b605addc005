"""Online RL (spec §3.6, §3.7): GAE, the PPO losses and KL estimator by hand; PPO and online filtered BC learning a
one-turn task with a known best answer; step accounting; resume after round k replays round k + 1 exactly."""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lmrl_lightning.algorithms import PPO, OnlineFilteredBC, Optimisation, PPOSettings, Rollouts, Updates, gae, ppo_loss
from lmrl_lightning.algorithms.online import round_episode_indices
from lmrl_lightning.algorithms.ppo import (
    RoundStats, adapt_kl_coef, episode_kl_sum, episode_targets, kl_k3, kl_shaped_rewards, pack_minibatch, round_stats,
    round_sums, split_by_sizes, whiten,
)
from lmrl_lightning.data.tokenize import TokenChunk
from lmrl_lightning.env import Episode, Turn
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.policies import Decoding
from ddp_helpers import run_ddp_script
from word_choice import BAD, GOOD, PROMPT, bc_checkpoint

pytestmark = [pytest.mark.filterwarnings("ignore:.*IterableDataset.*"), pytest.mark.filterwarnings("ignore:.*ddp.*")]

DDP_SCRIPT = Path(__file__).with_name("online_ddp_script.py")
QUIET = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)


@pytest.fixture(scope="module")
def bc_ckpt(tmp_path_factory):
    return str(bc_checkpoint(tmp_path_factory.mktemp("online")))


ROLLOUTS = Rollouts("word_choice", episodes_per_round=32, batch_size=32, decoding=Decoding("rerank"))


def ppo(bc_ckpt, lr: float = 1e-3, updates: Updates = Updates(16, epochs=2), **settings) -> PPO:
    """PPO on word_choice from the BC checkpoint, with `settings` (PPOSettings fields) changed."""
    return PPO(
        init_from=bc_ckpt, optim=Optimisation(lr), rollouts=ROLLOUTS, updates=updates, ppo=PPOSettings(**settings)
    )


# ---- pure functions ---------------------------------------------------------------------------------------------
def test_gae_by_hand_at_a_true_end_and_with_a_bootstrap():
    rewards, values, gamma, lam = [0.0, 1.0, 0.0], [0.5, 0.2, 0.1], 0.9, 0.8
    # true end: V after the last action is 0
    d2 = 0.0 + 0.9 * 0.0 - 0.1                # -0.1
    d1 = 1.0 + 0.9 * 0.1 - 0.2                # 0.89
    d0 = 0.0 + 0.9 * 0.2 - 0.5                # -0.32
    a2 = d2
    a1 = d1 + 0.72 * a2                       # 0.818
    a0 = d0 + 0.72 * a1                       # 0.26896
    adv, ret = gae(rewards, values, 0.0, gamma, lam)
    assert adv == pytest.approx([a0, a1, a2]) and ret == pytest.approx([a0 + 0.5, a1 + 0.2, a2 + 0.1])
    # cut episode: bootstrap from V = 2 after the last action
    adv, _ = gae(rewards, values, 2.0, gamma, lam)
    b2 = 0.9 * 2.0 - 0.1
    assert adv[2] == pytest.approx(b2) and adv[1] == pytest.approx(d1 + 0.72 * b2)


def test_ppo_loss_by_hand():
    logp = torch.tensor([math.log(1.5), math.log(0.5), 0.0])
    old_logp = torch.zeros(3)
    adv = torch.tensor([1.0, 1.0, -2.0])
    # ratios 1.5, 0.5, 1: first clipped to 1.2 (positive advantage: min objective), second 0.5 kept (pessimistic)
    pg = (-1.0 * 1.2 + -1.0 * 0.5 + 2.0 * 1.0) / 3
    values, old_values, returns = torch.tensor([1.0, 0.0, 0.5]), torch.tensor([0.5, 0.0, 0.5]), torch.tensor([2.0, 1.0, 0.5])
    # V 1.0 clipped to 0.7 from old 0.5: max((1-2)^2, (0.7-2)^2) = 1.69; second max(1, 1) = 1; third 0
    vf = 0.5 * (1.69 + 1.0 + 0.0) / 3
    loss, m = ppo_loss(logp, old_logp, adv, values, old_values, returns, 0.2, 0.2, value_coef=0.5)
    assert m["pg_loss"].item() == pytest.approx(pg) and m["value_loss"].item() == pytest.approx(vf)
    assert loss.item() == pytest.approx(pg + 0.5 * vf)
    assert m["clip_fraction"].item() == pytest.approx(2 / 3)


def test_kl_k3_and_adaptive_coefficient_by_hand():
    logp, ref = torch.tensor([0.0, -1.0]), torch.tensor([-0.5, -1.0])
    assert kl_k3(logp, ref).tolist() == pytest.approx([math.exp(-0.5) - 1 + 0.5, 0.0])
    assert adapt_kl_coef(0.1, kl=0.3, target=0.1, horizon=100, n_steps=10) == pytest.approx(0.1 * (1 + 0.2 * 0.1))
    assert adapt_kl_coef(0.1, kl=0.09, target=0.1, horizon=100, n_steps=10) == pytest.approx(0.1 * (1 - 0.1 * 0.1))


def test_kl_shaped_rewards_and_split_by_sizes_by_hand():
    shaped = kl_shaped_rewards(torch.tensor([0.0, 1.0]), torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0]), 0.5)
    assert shaped.tolist() == pytest.approx([0.0 - 0.5 * 0.5, 1.0 - 0.5 * -1.0])
    assert split_by_sizes("abcde", [2, 0, 3]) == [["a", "b"], [], ["c", "d", "e"]]


def chunk_scores(rewards, logp, logp_ref, values, last_value) -> dict:
    return {"rewards": torch.tensor(rewards), "logp": torch.tensor(logp), "logp_ref": torch.tensor(logp_ref),
            "values": torch.tensor(values), "last_value": last_value}


def test_episode_targets_run_gae_across_chunks_with_kl_shaped_rewards():
    """Two chunks (1 and 2 action tokens): one GAE over the three tokens, split back per chunk; the first chunk's
    last value is never a bootstrap, the last chunk's is when the episode was cut."""
    scores = [chunk_scores([0.0], [0.0], [0.0], [0.5], 9.0),
              chunk_scores([0.0, 1.0], [-1.0, -1.0], [-1.0, -2.0], [0.2, 0.1], 2.0)]
    # shaped rewards with kl_coef 0.5: [0, 0, 1 - 0.5 * 1] = [0, 0, 0.5]; gamma 0.9, lam 0.8 (gamma * lam = 0.72)
    d2, d1, d0 = 0.5 - 0.1, 0.9 * 0.1 - 0.2, 0.9 * 0.2 - 0.5
    a2 = d2
    a1 = d1 + 0.72 * a2                       # 0.178
    a0 = d0 + 0.72 * a1                       # -0.19184
    (adv_first, adv_second), (ret_first, ret_second) = episode_targets(scores, True, 0.5, 0.9, 0.8)
    assert adv_first.tolist() == pytest.approx([a0]) and adv_second.tolist() == pytest.approx([a1, a2])
    assert ret_first.tolist() == pytest.approx([a0 + 0.5])
    assert ret_second.tolist() == pytest.approx([a1 + 0.2, a2 + 0.1])
    (_, cut_second), _ = episode_targets(scores, False, 0.5, 0.9, 0.8)
    b2 = 0.5 + 0.9 * 2.0 - 0.1                # bootstraps from the last chunk's last value, 2.0
    assert cut_second.tolist() == pytest.approx([d1 + 0.72 * b2, b2])
    assert episode_kl_sum(scores) == pytest.approx(0.0 + 0.0 + (math.exp(-1.0) - 1 + 1.0))


def test_round_statistics_from_sums_by_hand_and_summed_over_ranks():
    advantages, returns, values = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 4.0]), torch.tensor([2.0, 3.0])
    sums = round_sums(advantages, returns, values, kl_sum=0.6, kl_count=2)
    assert sums == pytest.approx([4.0, 10.0, 2, 0.6, 1.0, 20.0, 6.0, 2])
    # mean A 2, Var A 5 - 4 = 1, KL 0.3 per token, Var R 10 - 9 = 1, mean (R - V)^2 = 0.5: explained 0.5
    assert round_stats(sums) == RoundStats(2, 2.0, 1.0, 0.3, 0.5)
    # two ranks' sums added (what all_reduce does) give the statistics of the whole round
    rank0 = round_sums(advantages[:1], returns[:1], values[:1], 0.2, 1)
    rank1 = round_sums(advantages[1:], returns[1:], values[1:], 0.4, 1)
    assert asdict(round_stats([a + b for a, b in zip(rank0, rank1)])) == pytest.approx(asdict(round_stats(sums)))
    assert round_stats(round_sums(advantages, torch.ones(2), values, 0.0, 2)).explained_variance == 0.0  # constant R
    # Candidate decoding: the KL is per decision (here one decision over the two action tokens).
    assert round_stats(round_sums(advantages, returns, values, 0.6, 1)).kl == pytest.approx(0.6)
    assert round_stats([0.0] * 8) == RoundStats(0.0, 0.0, 0.0, 0.0, 0.0)  # a rank with no action token
    assert whiten(advantages, 2.0, 1.0).tolist() == pytest.approx([-1.0, 1.0])


def test_pack_minibatch_lays_per_token_values_on_the_action_mask():
    a = TokenChunk([5, 6, 7], [False, True, True], [0.0, 0.0, 1.0], True, None)
    b = TokenChunk([5, 8, 9, 10], [False, True, False, True], [0.0, 0.0, 0.0, 2.0], True, None)
    per_token = {"advantages": [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])]}
    batch = pack_minibatch([a, b], per_token, rows=[1, 0], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 8, 9, 10], [5, 6, 7, 0]]
    assert batch["advantages"].tolist() == [[3.0, 0.0, 4.0], [1.0, 2.0, 0.0]]


# ---- a round's episodes over DDP ranks --------------------------------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("per_round", [3, 7, 10, 128])
def test_round_episodes_are_dealt_disjointly_and_exactly_over_ranks(world, per_round):
    """Each round plays exactly `episodes_per_round` episodes over all ranks (7 on 2 ranks: 4 + 3, not 2 x 4): the
    ranks' shares are disjoint, their union is the round's indices, rank r plays r, r + W, ... of the round (as the
    evaluation deals its episodes), shares differ by at most one, and rounds never reuse an index."""
    seen: set[int] = set()
    for round_index in range(3):
        shares = [list(round_episode_indices(round_index, per_round, rank, world)) for rank in range(world)]
        union = [i for share in shares for i in share]
        assert len(union) == len(set(union)) == per_round  # disjoint, exactly the configured count
        round_indices = list(range(round_index * per_round, (round_index + 1) * per_round))
        assert sorted(union) == round_indices
        assert all(share == round_indices[rank::world] for rank, share in enumerate(shares))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1 and min(map(len, shares)) >= 1
        assert seen.isdisjoint(union)
        seen.update(union)


def test_round_specs_follow_the_rank_and_a_round_needs_an_episode_per_rank(bc_ckpt):
    """The module plays its rank's share with per-index seeds: world size 1 plays the whole round; a world larger
    than the round is refused before any rollout."""
    module = PPO(init_from=bc_ckpt, rollouts=Rollouts("word_choice", episodes_per_round=5))
    module.rounds_done.fill_(2)
    specs = module.round_specs()
    assert [s.index for s in specs] == [10, 11, 12, 13, 14] and len({s.seed for s in specs}) == 5

    class Trainer:  # just what `world` and `setup` read of a trainer
        def __init__(self, rank, world):
            self.global_rank, self.world_size = rank, world
            self.strategy = type("Strategy", (), {"checkpoint_io": None})()

    module._trainer = Trainer(1, 2)
    assert [s.index for s in module.round_specs()] == [11, 13]
    assert [s.seed for s in module.round_specs()] == [specs[1].seed, specs[3].seed]
    module.setup("fit")
    module._trainer = Trainer(0, 6)
    with pytest.raises(LMRLError, match=r"episodes_per_round \(5\) is smaller than the 6 DDP processes"):
        module.setup("fit")


# ---- a round's data -------------------------------------------------------------------------------------------
def test_round_advantages_skip_environment_tokens_and_end_at_zero(bc_ckpt):
    """A two-turn episode: the advantages of its action tokens are GAE over those tokens only (the prompt's tokens
    between them carry nothing), with the KL-shaped rewards and V = 0 after the true end."""
    module = ppo(bc_ckpt, gamma=0.9, lam=0.8, kl_coef=0.5, whiten_advantages=False, updates=Updates(8, epochs=1))
    episode = Episode([Turn(PROMPT, False), Turn(GOOD, True, 1.0), Turn(PROMPT, False), Turn(BAD, True, -1.0)], True)
    (batch,) = module.prepare_round([episode], torch.Generator().manual_seed(0))
    mask = batch["action_mask"][0]
    (chunk,) = module.to_chunks([episode])[0]  # one whole-episode chunk (the task's history window is None)
    scores = module.score_chunks([chunk])[0]
    logp, ref, values = scores["logp"], scores["logp_ref"], scores["values"]
    good, bad = (len(module.tokenizer.encode(t)) for t in (GOOD, BAD))
    task_rewards = [0.0] * (good - 1) + [1.0] + [0.0] * (bad - 1) + [-1.0]
    assert mask.sum().item() == good + bad == len(task_rewards)
    shaped = [r - 0.5 * (a - b) for r, a, b in zip(task_rewards, logp.tolist(), ref.tolist())]
    expected, expected_returns = gae(shaped, values.tolist(), 0.0, 0.9, 0.8)
    assert batch["advantages"][0][mask].tolist() == pytest.approx(expected, abs=1e-5)
    assert batch["returns"][0][mask].tolist() == pytest.approx(expected_returns, abs=1e-5)
    assert batch["advantages"][0][~mask].abs().sum() == 0


@pytest.mark.parametrize("value_trunk_grad", [True, False])
def test_the_value_loss_trains_the_trunk_only_when_asked(bc_ckpt, value_trunk_grad):
    """The value loss of a round's batch reaches the value head either way, and the trunk (the policy's features)
    only with `value_trunk_grad` (the paper's shared trunk). (The head starts with zero weights, which pass no
    gradient back; it is given some, as after a few steps.)"""
    module = ppo(bc_ckpt, value_trunk_grad=value_trunk_grad, updates=Updates(8, epochs=1))
    module.value_head.out.weight.data.copy_(
        0.1 * torch.randn(module.value_head.out.weight.shape, generator=torch.Generator().manual_seed(0)))
    episode = Episode([Turn(PROMPT, False), Turn(GOOD, True, 1.0), Turn(PROMPT, False), Turn(BAD, True, -1.0)], True)
    (batch,) = module.prepare_round([episode], torch.Generator().manual_seed(0))
    _, _, values = module.forward_rows(batch)
    mask = batch["action_mask"]
    ((values[:, :-1][mask] - batch["returns"][mask]) ** 2).mean().backward()
    trunk_grads = [p.grad for p in module.model.parameters() if p.requires_grad]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.value_head.parameters())
    assert any(g is not None and g.abs().sum() > 0 for g in trunk_grads) == value_trunk_grad


def test_bad_configs_are_one_line_errors(bc_ckpt):
    with pytest.raises(LMRLError, match="model.ppo.kl_target and model.ppo.kl_horizon"):
        ppo(bc_ckpt, kl_target=0.1)
    with pytest.raises(LMRLError, match="model.ppo.value_trunk_grad: expected true or false, got 'no'"):
        ppo(bc_ckpt, value_trunk_grad="no")
    with pytest.raises(LMRLError, match="model.bc.data must name a JSONL file"):
        PPO(init_from=bc_ckpt, rollouts=ROLLOUTS, bc={"data": "", "weight": 1.0})
    with pytest.raises(LMRLError, match="model.filter.mode must be one of success, top_fraction, got 'none'"):
        OnlineFilteredBC(init_from=bc_ckpt, rollouts=ROLLOUTS, filter={"mode": "none"})
    with pytest.raises(LMRLError, match="model.rollouts: .*unexpected keyword argument 'n_rollouts'"):
        PPO(init_from=bc_ckpt, rollouts={"task": "word_choice", "n_rollouts": 8})


# ---- learning ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [PPO, OnlineFilteredBC])
def test_online_rounds_learn_the_best_answer(bc_ckpt, cls):
    """From the 50/50 BC policy, six rounds of 32 rollouts bring the mean return near the optimum of 1."""
    L.seed_everything(0)
    module = ppo(bc_ckpt) if cls is PPO else OnlineFilteredBC(
        init_from=bc_ckpt, optim=Optimisation(lr=1e-3), rollouts=ROLLOUTS, updates=Updates(16)
    )
    trainer = L.Trainer(max_epochs=6, enable_checkpointing=False, **QUIET)
    trainer.fit(module)
    returns = [r["mean_return"] for r in module.round_history]
    assert len(returns) == 6 and returns[0] < 0.65
    # Averaged over the last three rounds (96 rollouts): one round of 32 sampled episodes varies by ~0.1.
    assert sum(returns[-3:]) / 3 >= 0.9, returns


def test_ppo_step_accounting_and_frozen_reference(bc_ckpt):
    """One optimiser step per minibatch: 2 rounds x 2 epochs x ceil(32 chunks / 16) = 8 steps; the reference
    policy never changes."""
    module = ppo(bc_ckpt)
    reference = {k: v.clone() for k, v in module.reference.state_dict().items()}
    trainer = L.Trainer(max_epochs=2, enable_checkpointing=False, **QUIET)
    trainer.fit(module)
    assert trainer.global_step == 8
    assert all(torch.equal(v, module.reference.state_dict()[k]) for k, v in reference.items())
    assert not torch.equal(module.model.transformer.wte.weight, module.reference.transformer.wte.weight)


def test_value_lr_trains_the_value_head_at_its_own_rate(bc_ckpt):
    """`ppo.value_lr` puts exactly the value head's parameters in groups of their own at that rate; one round (4 steps) then
    moves the head's bias by several times more than the policy's 1e-3 can (Adam: at most about the rate a step)."""
    moved = {}
    for value_lr in (None, 0.05):
        L.seed_everything(0)
        module = ppo(bc_ckpt, value_lr=value_lr)
        groups = module.configure_optimizers()["optimizer"].param_groups
        head = {id(p) for p in module.value_head.parameters()}
        in_groups = [id(p) for g in groups for p in g["params"]]
        assert sorted(in_groups) == sorted(id(p) for p in module.parameters() if p.requires_grad)
        for g in groups:
            assert all(g["lr"] == ((value_lr or 1e-3) if id(p) in head else 1e-3) for p in g["params"])
        bias = module.value_head.out.bias.detach().clone()
        L.Trainer(max_epochs=1, enable_checkpointing=False, **QUIET).fit(module)
        moved[value_lr] = (module.value_head.out.bias.detach() - bias).abs().item()
    assert moved[None] <= 4 * 1e-3 * 1.01 and moved[0.05] > 5 * moved[None]
    with pytest.raises(LMRLError, match="model.ppo.value_lr"):
        ppo(bc_ckpt, value_lr=0.0)


# ---- resume -----------------------------------------------------------------------------------------------------
def test_resume_after_round_k_replays_round_k_plus_one(bc_ckpt, tmp_path):
    """Stopping after round 2 and resuming from its checkpoint gives the same round-3 statistics and weights as an
    uninterrupted 3-round run (adaptive KL coefficient included)."""
    kwargs = dict(kl_target=0.01, kl_horizon=100.0, kl_coef=0.05, lr=3e-4)
    L.seed_everything(0)
    full = ppo(bc_ckpt, **kwargs)
    L.Trainer(max_epochs=3, enable_checkpointing=False, **QUIET).fit(full)

    L.seed_everything(0)
    first = ppo(bc_ckpt, **kwargs)
    checkpoint = ModelCheckpoint(dirpath=str(tmp_path), filename="round{epoch}", save_top_k=-1, auto_insert_metric_name=False)
    L.Trainer(max_epochs=2, callbacks=[checkpoint], **QUIET).fit(first)
    resumed = ppo(bc_ckpt, **kwargs)
    L.Trainer(max_epochs=3, **QUIET, enable_checkpointing=False).fit(resumed, ckpt_path=str(tmp_path / "round1.ckpt"))
    assert len(resumed.round_history) == 1 and int(resumed.rounds_done) == 3
    assert 0 < full.round_history[2]["mean_return"] < 1  # the statistics below are not those of a solved task
    timing = {"rollout_seconds", "update_seconds", "episodes_per_second"}
    same = {k: v for k, v in full.round_history[2].items() if k not in timing}
    assert {k: v for k, v in resumed.round_history[0].items() if k not in timing} == pytest.approx(same)
    assert float(resumed.kl_coef) == pytest.approx(float(full.kl_coef))
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name


# ---- DDP --------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_process_ddp_rounds_keep_ranks_equal(bc_ckpt, tmp_path):
    """Two CPU processes (gloo) play 17 and 16 of each round's 33 episodes, disjoint ones (different indices and
    seeds, so different sampling), reduce the round statistics, take the same number of optimiser steps and end
    with equal parameters."""
    out = tmp_path / "ddp"
    out.mkdir()
    proc = run_ddp_script(DDP_SCRIPT, [bc_ckpt, out, 2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = (json.loads((out / f"rank{r}.json").read_text()) for r in range(2))
    assert rank0["world_size"] == 2 and rank0["global_step"] == rank1["global_step"] > 0
    assert rank0["rounds"] == rank1["rounds"] and all(r["episodes"] == 33 for r in rank0["rounds"])
    # The ranks played different episodes: both ranks gathered every rank's (index, seed) of the played episodes.
    assert rank0["played"] == rank1["played"] and len(rank0["played"]) == 2  # two rounds
    for round_index, (mine, theirs) in enumerate(rank0["played"]):
        assert (len(mine), len(theirs)) == (17, 16)
        indices = [i for i, _ in mine + theirs]
        assert sorted(indices) == list(range(33 * round_index, 33 * (round_index + 1)))  # disjoint, all played
        assert {s for _, s in mine}.isdisjoint(s for _, s in theirs)
    assert rank0["parameters"].keys() == rank1["parameters"].keys()
    for name, values in rank0["parameters"].items():
        assert values == pytest.approx(rank1["parameters"][name], abs=1e-6), name
    start = torch.load(bc_ckpt, weights_only=True)["state_dict"]["model.transformer.wte.weight"].flatten()
    assert rank0["parameters"]["model.transformer.wte.weight"] != pytest.approx(start.tolist(), abs=1e-6)
