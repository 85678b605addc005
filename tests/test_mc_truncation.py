"""MC Returns on truncated episodes (issue 14, item 2): a cut episode's targets bootstrap gamma^k * V(s_cut) from the
module's own value at the cut, in every chunk of the episode (windowed: one per action); a done episode's are its
rewards only. The chunks carry the cut through `ChunkStore` too."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmrl_lightning.algorithms import MCReturns, ValueLearning
from lmrl_lightning.algorithms.mc_returns import returns_to_go
from lmrl_lightning.data.collate import collate_chunks
from lmrl_lightning.data.datamodule import ChunkStore
from lmrl_lightning.data.tokenize import TurnTokenizer, episode_to_chunks
from lmrl_lightning.env import Episode, Turn
from lmrl_lightning.models.backbone import BackboneConfig
from lmrl_lightning.models.tokenizer import save_tokenizer, train_bpe_tokenizer
from worked_example import CHAIN

# Three agent turns, rewards 0.5, -1, 2, and an observation after the last one (as in the maze data's cut episodes).
TURNS = CHAIN
V_CUT = 4.0

pytestmark = pytest.mark.filterwarnings("ignore:.*self.log.*")  # training_step called without a Trainer


def episode(done: bool) -> Episode:
    return Episode([Turn(t, a, r) for t, a, r in TURNS], done, {})


@pytest.fixture(scope="module")
def module(tmp_path_factory):
    root = tmp_path_factory.mktemp("mc_cut")
    save_tokenizer(train_bpe_tokenizer([t for t, _, _ in TURNS] * 8, 300), root / "tok")
    torch.manual_seed(0)
    backbone = BackboneConfig("tiny", tokenizer=str(root / "tok"))
    mc = MCReturns(backbone=backbone, value=ValueLearning(gamma=0.5, discount_per="turn"))
    with torch.no_grad():  # a non-constant Q head, so that V(s_cut) depends on the state and on pi_beta
        for p in mc.q_head.parameters():
            p.add_(torch.randn(p.shape) * 0.3)
    return mc.eval()


@pytest.fixture(scope="module")
def enc(module):
    return TurnTokenizer(module.tokenizer)


def batch_of(enc, window, pad=0):
    """The done episode's chunks, then the cut one's, in one batch; and the done episode's chunk count."""
    done = episode_to_chunks(episode(True), enc, window=window)
    cut = episode_to_chunks(episode(False), enc, window=window)
    return collate_chunks(done + cut, pad), len(done)


def per_row(batch, returns):
    return [returns[i][batch["action_mask"][i]].tolist() for i in range(returns.shape[0])]


@pytest.mark.parametrize("per", ["turn", "token"])
def test_whole_episode_targets_differ_by_gamma_k_v_cut(enc, per):
    batch, _ = batch_of(enc, None)
    assert batch["episode_cut"].tolist() == [False, True]
    plain = per_row(batch, returns_to_go(batch, 0.5, per))
    boot = per_row(batch, returns_to_go(batch, 0.5, per, torch.full((2,), V_CUT)))
    assert boot[0] == plain[0]  # done: unchanged, whatever value is passed for it
    assert plain[1] == plain[0]  # without a bootstrap the cut episode reads as the done one
    n = [len(enc(t)) for t, a, _ in TURNS if a]
    if per == "turn":
        # rewards-only returns 0.5, 0, 2 (turn 3: 2; turn 2: -1 + 0.5 * 2; turn 1: 0.5 + 0.5 * 0); bootstrapped:
        # turn 3: 2 + 0.5 * 4 = 4; turn 2: -1 + 0.5 * 4 = 1; turn 1: 0.5 + 0.5 * 1 = 1, i.e. + 0.5^k * 4, k = 3, 2, 1
        assert boot[1] == pytest.approx([1.0] * n[0] + [1.0] * n[1] + [4.0] * n[2])
        k = [3] * n[0] + [2] * n[1] + [1] * n[2]
    else:
        k = list(range(sum(n), 0, -1))  # action tokens from each one to the cut, itself included
        assert boot[1][-1] == pytest.approx(2.0 + 0.5 * V_CUT)
    assert [b - p for b, p in zip(boot[1], plain[1])] == pytest.approx([0.5**j * V_CUT for j in k])


def test_windowed_chunks_carry_the_cut_state(enc):
    chunks = episode_to_chunks(episode(False), enc, window=1)
    assert len(chunks) == 3 and not any(c.done for c in chunks)
    state = enc(TURNS[-1][0])  # window 1: the final observation, the agent's context after the final action
    assert chunks[-1].next_state_ids == state
    assert [c.cut_state_ids for c in chunks] == [state] * 3 and all(c.episode_cut for c in chunks)
    assert all(c.cut_state_ids is chunks[0].cut_state_ids for c in chunks)  # one list, shared
    done = episode_to_chunks(episode(True), enc, window=1)
    assert [c.cut_state_ids for c in done] == [None] * 3 and not any(c.episode_cut for c in done)
    batch = collate_chunks(done + chunks, 0)
    assert batch["episode_cut"].tolist() == [False] * 3 + [True] * 3
    assert batch["cut_state_mask"].sum(1).tolist() == [0] * 3 + [len(state)] * 3
    assert batch["cut_state_ids"][3:, : len(state)].tolist() == [state] * 3


@pytest.mark.parametrize("per", ["turn", "token"])
def test_windowed_chunks_bootstrap_every_chunk_of_the_cut_episode(enc, per):
    batch, n_done = batch_of(enc, 1)
    assert n_done == 3
    assert batch["episode_cut"].tolist() == [False] * 3 + [True] * 3
    plain = per_row(batch, returns_to_go(batch, 0.5, per))
    boot = per_row(batch, returns_to_go(batch, 0.5, per, torch.full((6,), V_CUT)))
    assert boot[:3] == plain[:3] == plain[3:]  # the done episode; without a bootstrap the cut one reads the same
    n = [len(enc(t)) for t, a, _ in TURNS if a]
    if per == "turn":
        # chunk 3: 2 + 0.5 * 4 = 4; chunk 2: -1 + 0.5 * 4 = 1; chunk 1: 0.5 + 0.5 * 1 = 1: 0.5^k * 4 is added to the
        # rewards-only 2, 0, 0.5 with k = 1, 2, 3 moves to the cut, through the later chunks' actions
        assert boot[3:] == [pytest.approx([1.0] * n[0]), pytest.approx([1.0] * n[1]), pytest.approx([4.0] * n[2])]
        k = [[3] * n[0], [2] * n[1], [1] * n[2]]
    else:
        k = [list(range(sum(n[i:]), sum(n[i + 1:]), -1)) for i in range(3)]  # action tokens to the cut
    for row in range(3):
        diff = [b - p for b, p in zip(boot[3 + row], plain[3 + row])]
        assert diff == pytest.approx([0.5**j * V_CUT for j in k[row]])
    whole, _ = batch_of(enc, None)  # the same targets as the whole episode's, chunk by chunk
    whole_boot = per_row(whole, returns_to_go(whole, 0.5, per, torch.full((2,), V_CUT)))
    assert sum(boot[3:], []) == pytest.approx(whole_boot[1])


@pytest.mark.parametrize("window", [None, 1, 2])
@pytest.mark.parametrize("cut_after", [len(TURNS), len(TURNS) - 1, 5])
def test_chunk_store_gives_back_the_cut(enc, window, cut_after):
    """The packed store rebuilds each chunk's cut state from its episode's last chunk (nothing stored per chunk):
    cut after an observation, right after an action (the last chunk's own tokens), or earlier."""
    turns = [Turn(t, a, r) for t, a, r in TURNS[:cut_after]]
    episodes = [Episode(turns, False, {}), Episode([Turn(t, a, r) for t, a, r in TURNS], True, {})]
    store, expected = ChunkStore("x.jsonl"), []
    for i, ep in enumerate(episodes * 2):
        chunks = episode_to_chunks(ep, enc, window=window)
        store.add_episode(chunks, i + 1, i)
        expected += [(c.input_ids, c.next_state_ids, c.later_actions, c.done, c.cut_state_ids) for c in chunks]
    got = [(c.input_ids, c.next_state_ids, list(c.later_actions), c.done, c.cut_state_ids) for c in store]
    assert got == [(a, b, list(c), d, e) for a, b, c, d, e in expected]
    last = episode_to_chunks(episodes[0], enc, window=window)[-1]
    own = window is None or cut_after == len(TURNS) - 1
    assert store[0].cut_state_ids == (last.input_ids if own else last.next_state_ids)


def test_chunk_store_refuses_chunks_it_could_not_give_back(enc):
    chunks = episode_to_chunks(episode(False), enc, window=1)
    with pytest.raises(ValueError, match="chunk 0 of 2"):
        ChunkStore("x.jsonl").add_episode(chunks[:2], 1, 0)  # chunk 0 has 2 later actions


def hand_state_value(module, ids):
    """E_{a ~ pi_beta} Q(s, a) at the last token of `ids`, one unpadded sequence at a time."""
    ids = torch.tensor([ids])
    h = module.hidden(module.trunk, ids, torch.ones_like(ids))[0, -1]
    logits = module.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1]
    return (torch.softmax(logits.float(), -1) * module.q_head(h)).sum().item()


@pytest.mark.parametrize("window", [None, 1])
def test_training_step_bootstraps_from_the_modules_value_at_the_cut(module, enc, window, monkeypatch):
    done_chunks = episode_to_chunks(episode(True), enc, window=window)
    cut_chunks = episode_to_chunks(episode(False), enc, window=window)
    early = Episode([Turn(t, a, r) for t, a, r in TURNS[:5]], False, {})  # cut after "a small vault": 2 actions
    early_chunks = episode_to_chunks(early, enc, window=window)
    batch = collate_chunks(done_chunks + cut_chunks + early_chunks, module.tokenizer.pad_token_id)
    # the state at the cut: the final observation, carried as the next state (windowed) or ending the chunk (whole)
    states = [c[-1].next_state_ids if window else c[-1].input_ids for c in (cut_chunks, early_chunks)]
    for state, obs in zip(states, (TURNS[6][0], TURNS[4][0])):
        assert state[-len(enc(obs)):] == enc(obs)
    v, w = (hand_state_value(module, state) for state in states)
    assert min(abs(v), abs(w), abs(v - w)) > 1e-3  # zero or equal values would not tell a wrong bootstrap apart
    evaluated = []
    state_values = module.state_values
    monkeypatch.setattr(module, "state_values", lambda ids, mask: evaluated.append(len(ids)) or state_values(ids, mask))
    hand = torch.tensor([0.0] * len(done_chunks) + [v] * len(cut_chunks) + [w] * len(early_chunks))
    with torch.no_grad():
        assert module.cut_values(batch).tolist() == pytest.approx(hand.tolist(), abs=1e-5)
        assert evaluated == [2]  # one forward pass per distinct cut state, whatever the number of chunks
        loss = module.training_step(batch, 0)
        mask = batch["action_mask"]
        h = module.hidden(module.trunk, batch["input_ids"], batch["attention_mask"])[:, :-1][mask]
        q = module.q_head.at(h, batch["input_ids"][:, 1:][mask])
        targets = returns_to_go(batch, 0.5, "turn", hand)[mask]
    assert loss.item() == pytest.approx(0.5 * F.mse_loss(q, targets).item(), rel=1e-5)
    n = [len(enc(t)) for t, a, _ in TURNS if a]
    # gamma 0.5 per turn, rewards 0.5, -1, 2: done: 0.5, 0, 2; cut after move 3: R3 = 2 + 0.5 v, R2 = -1 + 0.5 R3
    # = 0.25 v, R1 = 0.5 + 0.5 R2 = 0.5 + 0.125 v; cut after move 2: R2 = -1 + 0.5 w, R1 = 0.5 + 0.5 R2 = 0.25 w
    assert targets.tolist() == pytest.approx(
        [0.5] * n[0] + [0.0] * n[1] + [2.0] * n[2]
        + [0.5 + 0.125 * v] * n[0] + [0.25 * v] * n[1] + [2.0 + 0.5 * v] * n[2]
        + [0.25 * w] * n[0] + [-1.0 + 0.5 * w] * n[1], abs=1e-5
    )


def test_no_cut_row_no_value_forward(module, enc):
    batch = collate_chunks(episode_to_chunks(episode(True), enc, window=1), module.tokenizer.pad_token_id)
    assert module.cut_values(batch) is None
