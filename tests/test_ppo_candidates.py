"""PPO under candidate-action decoding (issue 14): the ratio, KL and entropy use the re-ranker's distribution over
the task's candidates, checked by hand on the two-candidate word_choice task; and dropout cannot bias the ratio."""
from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch

from lmrl_lightning.algorithms import PPO, Optimisation, PPOSettings, Rollouts, Updates
from lmrl_lightning.algorithms.ppo import (
    action_choices, action_spans, candidate_sets, choice_batch, chunk_turns, decision_prompts, disable_dropout, spread,
)
from lmrl_lightning.data.tokenize import TokenChunk
from lmrl_lightning.env import Episode, Turn
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.models.backbone import BackboneConfig
from lmrl_lightning.policies import Decoding
from lmrl_lightning.policies.rerank import rerank_log_probs
from lmrl_lightning.policies.sampling import eval_mode
from word_choice import BAD, GOOD, PROMPT, bc_checkpoint

pytestmark = [pytest.mark.filterwarnings("ignore:.*IterableDataset.*")]

QUIET = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)


@pytest.fixture(scope="module")
def bc_ckpt(tmp_path_factory):
    return str(bc_checkpoint(tmp_path_factory.mktemp("ppo_candidates")))


def rollouts(kind: str = "rerank", temperature: float = 1.0) -> Rollouts:
    return Rollouts("word_choice", episodes_per_round=32, batch_size=32, decoding=Decoding(kind, temperature))


# ---- pure functions ---------------------------------------------------------------------------------------------
def test_rerank_log_probs_by_hand():
    scores = torch.tensor([[-1.0, -3.0], [-2.0, -2.0]])
    # temperature 2: softmax([-0.5, -1.5]) = [1, e^-1] / (1 + e^-1)
    z = math.log(1 + math.exp(-1.0))
    assert rerank_log_probs(scores, 2.0)[0].tolist() == pytest.approx([-z, -1.0 - z])
    assert rerank_log_probs(scores, 1.0)[1].tolist() == pytest.approx([math.log(0.5)] * 2)


def test_action_choices_mark_each_candidate_action_at_its_decision_step():
    candidates = [[7, 9], [8]]
    # tokens: obs 1 2 | action 7 9 | obs 3 | action 8 ; steps t predict token t + 1
    ids, is_action = [1, 2, 7, 9, 3, 8], [False, False, True, True, False, True]
    assert action_spans(is_action) == [(2, 4), (5, 6)]
    fixed = lambda start: candidates  # noqa: E731
    assert action_choices(ids, is_action, fixed) == ([-1, 0, -1, -1, 1], [candidates, candidates])
    # an action at the chunk's first token (cut by truncation) is no decision
    assert action_choices([9, 3, 8], [True, False, True], fixed) == ([-1, 1], [candidates])
    with pytest.raises(LMRLError, match=r"action tokens \[7, 7\] are none of the candidates of its state"):
        action_choices([1, 7, 7], [False, True, True], fixed)
    choice = torch.tensor([[-1, 0, -1, -1, 1]])
    assert decision_prompts(torch.tensor([ids]), choice, 10) == [[1, 2], [1, 2, 7, 9, 3]]
    assert decision_prompts(torch.tensor([ids]), choice, 2) == [[1, 2], [9, 3]]  # left-truncated
    action_mask = torch.tensor([[False, True, True, False, True]])
    assert spread(torch.tensor([-0.5, -2.0]), choice >= 0, action_mask).tolist() == [-0.5, 0.0, -2.0]


# ---- the ratio by hand ------------------------------------------------------------------------------------------
def hand_log_probs(model, prompt: list[int], candidates: list[list[int]], temperature: float) -> torch.Tensor:
    """log softmax over the candidates of (sum of log p(token) over each candidate, uncached) / temperature."""
    sums = []
    with torch.no_grad():
        for c in candidates:
            ids = prompt + c
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
            sums.append(sum(logp[t, ids[t + 1]] for t in range(len(prompt) - 1, len(ids) - 1)))
    scores = torch.stack(sums) / temperature
    return scores - torch.logsumexp(scores, 0)


def test_ratio_and_kl_use_the_candidate_normalised_action_log_prob(bc_ckpt):
    """Two candidates, temperature 2: the scored (old) log-prob of each action, the reference's, and the ratio after
    a change of the weights all equal log softmax(summed token log-probs / 2) computed by hand; an action's other
    tokens carry 0."""
    module = PPO(init_from=bc_ckpt, rollouts=rollouts("rerank", 2.0), updates=Updates(2, epochs=1))
    tokenize = module.tokenizer.encode
    prompt, candidates = tokenize(PROMPT), [tokenize(GOOD), tokenize(BAD)]
    assert module.candidate_ids == candidates and len(candidates[0]) > 1
    episodes = [Episode([Turn(PROMPT, False), Turn(w, True, float(w == GOOD))], True) for w in (GOOD, BAD)]
    (batch,) = module.prepare_round(episodes, torch.Generator().manual_seed(0))
    old = hand_log_probs(module.model, prompt, candidates, 2.0)
    decide = module.policy_mask(batch)
    chosen = batch["choice"][decide]
    assert sorted(chosen.tolist()) == [0, 1]
    assert batch["old_logp"][decide].tolist() == pytest.approx(old[chosen].tolist(), abs=1e-5)
    assert batch["old_logp"][batch["action_mask"] & ~decide].abs().sum() == 0  # the actions' later tokens
    with torch.no_grad():  # a new policy: the reference keeps the old weights
        for p in module.model.transformer.h[0].parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    new = hand_log_probs(module.model, prompt, candidates, 2.0)
    assert (new - old).abs().max() > 1e-3
    logp, logits, _ = module.forward_actions(batch)
    ratio = torch.exp(logp - batch["old_logp"][decide])
    assert ratio.tolist() == pytest.approx(torch.exp(new - old)[chosen].tolist(), abs=1e-5)
    assert logits.shape == (2, 2)  # the entropy's distribution: over the two candidates
    scores = module.score_chunks(module.to_chunks(episodes[:1])[0])[0]  # GOOD under the new policy
    first = scores["logp"][0], scores["logp_ref"][0]
    assert [float(x) for x in first] == pytest.approx([new[0].item(), old[0].item()], abs=1e-5)
    assert scores["decisions"] == 1


def test_candidates_on_the_chunk_cache_equal_the_cut_context_path(bc_ckpt, monkeypatch):
    """The update scores the candidates on the KV cache of its pass over the chunks; where a context and a candidate
    would not fit the model's positions it scores them after each context cut to fit, as the re-ranker does. Where
    both apply they give the same distribution and hidden states."""
    from lmrl_lightning.algorithms import ppo as ppo_module

    module = PPO(init_from=bc_ckpt, rollouts=rollouts("rerank", 2.0), updates=Updates(8, epochs=1))
    batch = module.prepare_round(module.collect()[:8], torch.Generator().manual_seed(0))[0]
    with torch.no_grad():
        hidden, on_cache = module.candidate_pass(module.model, batch)
        monkeypatch.setattr(ppo_module, "fits_on_chunk_cache", lambda *args: False)
        cut_hidden, cut = module.candidate_pass(module.model, batch)
    assert on_cache.shape == (int((batch["choice"] >= 0).sum()), 2)
    torch.testing.assert_close(on_cache, cut, atol=1e-5, rtol=0)
    torch.testing.assert_close(hidden, cut_hidden, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["rerank", "sample"])
def test_a_round_scores_each_distinct_chunk_once(bc_ckpt, kind, monkeypatch):
    """The networks see a chunk's tokens only: chunks with the same tokens are scored once, keep their own rewards,
    and get what each chunk scored alone gets."""
    module = PPO(init_from=bc_ckpt, rollouts=rollouts(kind), updates=Updates(8, epochs=1))
    played = [(GOOD, 1.0), (BAD, 0.0), (GOOD, 0.5), (GOOD, 1.0), (BAD, -1.0)]
    episodes = [Episode([Turn(PROMPT, False), Turn(word, True, reward)], True) for word, reward in played]
    chunks = [c for cs in module.to_chunks(episodes) for c in cs]
    rows, score_batch = [], module.score_batch
    monkeypatch.setattr(module, "score_batch", lambda part: rows.append(len(part)) or score_batch(part))
    scores = module.score_chunks(chunks)
    assert sum(rows) == 2
    with torch.no_grad(), eval_mode(module.model, module.reference, module.value_head):
        alone = [score_batch([chunk])[0] for chunk in chunks]
    for got, expected, (_, reward) in zip(scores, alone, played):
        for key in ("rewards", "logp", "logp_ref", "values"):
            torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=0)
        assert got["rewards"].sum().item() == reward
        assert got["last_value"] == pytest.approx(expected["last_value"], abs=1e-5)
        assert got["decisions"] == expected["decisions"]


@pytest.mark.parametrize("kind", ["rerank", "sample"])
def test_a_minibatch_runs_its_distinct_rows_once_with_the_same_gradient(bc_ckpt, kind, monkeypatch):
    """Rows of a minibatch with the same tokens run once: the outputs and the loss's gradient equal running every row."""
    module = PPO(init_from=bc_ckpt, rollouts=rollouts(kind), updates=Updates(16, epochs=1))
    batch = module.prepare_round(module.collect()[:16], torch.Generator().manual_seed(0))[0]
    rows = []
    forward_rows = module.forward_rows
    monkeypatch.setattr(module, "forward_rows", lambda b: rows.append(len(b["input_ids"])) or forward_rows(b))
    results = []
    for forward in (module.forward_actions, forward_rows):
        module.zero_grad()
        logp, logits, values = forward(batch)
        decide = module.policy_mask(batch)
        loss = -(torch.exp(logp - batch["old_logp"][decide]) * torch.linspace(-1, 1, len(logp))).sum()
        (loss + values[:, :-1][batch["action_mask"]].pow(2).sum() + logits.logsumexp(-1).sum()).backward()
        results.append((logp, logits, values, {n: p.grad.clone() for n, p in module.named_parameters()
                                               if p.grad is not None}))
    assert rows[0] < 16  # two actions to choose from: many of the 16 rows are the same
    (logp, logits, values, grads), (all_logp, all_logits, all_values, all_grads) = results
    for got, expected in ((logp, all_logp), (logits, all_logits), (values, all_values)):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert grads.keys() == all_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], all_grads[name], atol=1e-5, rtol=1e-4)


# ---- dropout ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["rerank", "sample"])
def test_dropout_does_not_bias_the_first_ratio(bc_ckpt, kind):
    """A policy built with dropout 0.1: the first minibatch's ratio, computed in train mode as the update does, is
    exactly 1 before any step; with dropout left on, token-level PPO's would not be (the candidate pass runs in
    eval mode for its KV cache anyway)."""
    tokenizer = str(Path(bc_ckpt).parent / "tok")
    L.seed_everything(0)
    module = PPO(backbone=BackboneConfig("tiny", tokenizer=tokenizer, dropout=0.1), rollouts=rollouts(kind),
                 updates=Updates(16, epochs=1))
    assert module.model.config.resid_pdrop == 0.1
    batch = module.prepare_round(module.collect(), torch.Generator().manual_seed(0))[0]
    module.train()
    logp, _, _ = module.forward_actions(batch)
    old_logp = batch["old_logp"][module.policy_mask(batch)]
    assert logp.numel() > 0 and torch.equal(torch.exp(logp - old_logp), torch.ones_like(logp))
    if kind == "sample":
        for m in module.model.modules():  # the bug this guards against: dropout in the update pass
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.1
        assert not torch.equal(module.forward_actions(batch)[0], old_logp)
        disable_dropout(module.model)
        assert torch.equal(module.forward_actions(batch)[0], old_logp)


# ---- a short run ------------------------------------------------------------------------------------------------
def test_candidate_ppo_learns_with_a_small_kl(bc_ckpt):
    """Six rounds of re-ranked PPO on word_choice: the return nears 1 while the logged KL to the BC policy, per
    decision between two candidate distributions, stays below 1 (token-level log-probs reached 20 here)."""
    L.seed_everything(0)
    module = PPO(init_from=bc_ckpt, optim=Optimisation(1e-3), rollouts=rollouts(), updates=Updates(16, epochs=2),
                 ppo=PPOSettings())
    L.Trainer(max_epochs=6, enable_checkpointing=False, **QUIET).fit(module)
    returns = [r["mean_return"] for r in module.round_history]
    kls = [r["kl"] for r in module.round_history]
    assert sum(returns[-3:]) / 3 >= 0.9, returns
    assert max(kls) < 1.0 and kls[-1] > 0, kls


def test_per_state_candidates_travel_with_the_batch():
    """Each decision's own candidates (asked with the chunk's turns before it) are flattened into the batch and read
    back in decision order, the choice indexing into its own set."""
    ids, is_action = [1, 2, 7, 9, 3, 8], [False, False, True, True, False, True]
    assert chunk_turns(ids, is_action, 5) == [([1, 2], False), ([7, 9], True), ([3], False)]
    own = {2: [[5], [7, 9]], 5: [[8], [6, 6, 6]]}  # candidates by the action's start token
    chunk = TokenChunk(ids, is_action, [0.0] * 6, True, None)
    asked = []

    def candidates_at(c, start):
        asked.append(chunk_turns(c.input_ids, c.is_action, start))
        return own[start]

    batch = choice_batch([chunk, chunk], candidates_at, per_state=True)
    assert batch["choice"].tolist() == [[-1, 1, -1, -1, 0]] * 2
    assert candidate_sets(batch) == [own[2], own[5]] * 2
    assert asked[0] == [([1, 2], False)] and asked[1][-1] == ([3], False)
    assert set(choice_batch([chunk], candidates_at, per_state=False)) == {"choice"}
