"""Decoding (spec §3.1): batched KV-cached sampling against uncached step-by-step decoding, per-row randomness
that does not depend on the batch, and re-ranking of fixed candidates against a direct computation."""
from __future__ import annotations

import copy

import pytest
import torch

from lmrl_lightning.algorithms import BC
from lmrl_lightning.env import Text
from lmrl_lightning.models import backbone
from lmrl_lightning.models.backbone import BackboneConfig, forward_with_cache
from lmrl_lightning.models.tokenizer import end_of_turn_id, save_tokenizer, train_bpe_tokenizer
from lmrl_lightning.policies import Decoding
from lmrl_lightning.policies import rerank
from lmrl_lightning.policies.rerank import RerankPolicy, candidate_logprobs
from lmrl_lightning.policies.sampling import (
    LMPolicy, encode_histories, left_pad, row_uniform, sample_from_logits, unique_rows,
)
from lmrl_lightning.policies.turn_cache import common_prefix_length
from lmrl_lightning.tasks.maze import MOVES, START_POSITIONS
from lmrl_lightning.tasks.maze.env import describe_fo, optimal_moves

LEFT, RIGHT, UP, DOWN = MOVES


def observation(position) -> Text:
    return Text(describe_fo(position), False)


def move(text: str) -> Text:
    return Text(text, True)


# Maze histories of 1, 3 and 5 texts (41 to 123 tokens, so a batch of them is left-padded; the longest one is
# left-truncated to fit the 128-position model with 16 new tokens).
N_POSITIONS = 128
HISTORIES = [
    (observation(START_POSITIONS[0]),),
    (observation(START_POSITIONS[4]), move(RIGHT), observation(START_POSITIONS[5])),
    (observation(START_POSITIONS[20]),),
    (observation((5, 6)), move(DOWN), observation((6, 6)), move(UP), observation((5, 6))),
    (observation(START_POSITIONS[11]), move(LEFT), observation(START_POSITIONS[11])),
    (observation(START_POSITIONS[24]),),
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A BPE tokenizer trained on the FO maze observations and moves."""
    texts = [describe_fo(p) for p in START_POSITIONS] + list(MOVES)
    return str(save_tokenizer(train_bpe_tokenizer(texts, 300), tmp_path_factory.mktemp("decoding") / "tok"))


@pytest.fixture(scope="module")
def random_module(tokenizer_dir):
    """An untrained tiny GPT-2: near-uniform over the vocabulary, so its sampled turns are long and varied."""
    torch.manual_seed(0)
    return BC(BackboneConfig("tiny", tokenizer=tokenizer_dir, max_positions=N_POSITIONS))


@pytest.fixture(scope="module")
def taught_module(tokenizer_dir):
    """A tiny GPT-2 taught for a few steps to follow each FO observation with a move and a newline, so that its
    turns end at the newline token rather than at max_new_tokens."""
    torch.manual_seed(1)
    module = BC(BackboneConfig("tiny", tokenizer=tokenizer_dir, max_positions=N_POSITIONS))
    tok = module.tokenizer
    rows = [tok.encode(describe_fo(p) + optimal_moves(p)[0]) for p in START_POSITIONS]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    optimizer = torch.optim.Adam(module.model.parameters(), lr=3e-3)
    for _ in range(30):
        loss = module.model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    module.model.eval()
    return module


def prompt_ids(tokenizer, history, reserve: int) -> list[int]:
    """A history tokenised turn by turn, as the policies and the training data do, cut to its last tokens so
    that `reserve` more fit in the model's positions."""
    ids = [i for t in history for i in tokenizer.encode(t.text, add_special_tokens=False)]
    return ids[-(N_POSITIONS - reserve):]


@torch.no_grad()
def uncached_decode(model, tokenizer, prompt: list[int], choose, max_new_tokens: int) -> list[int]:
    """One prompt decoded alone, recomputing the full forward pass at every step (no cache, no padding);
    special tokens are never chosen and decoding stops after the newline token."""
    eot = end_of_turn_id(tokenizer)
    generated = []
    for step in range(max_new_tokens):
        logits = model(input_ids=torch.tensor([prompt + generated])).logits[0, -1].float()
        logits[tokenizer.all_special_ids] = float("-inf")
        generated.append(choose(logits, step))
        if generated[-1] == eot:
            break
    return generated


def action_text(tokenizer, ids: list[int]) -> str:
    """The turn generated as `ids`: a turn cut at max_new_tokens gets its newline appended."""
    return tokenizer.decode(ids) + ("" if ids[-1] == end_of_turn_id(tokenizer) else "\n")


# --- per-row randomness ------------------------------------------------------------------------------------


class OldCacheApiModel(torch.nn.Module):
    """A causal LM of transformers before 5.2x: the KV cache goes in and comes out as `past_key_values`."""

    def forward(self, input_ids, past_key_values=None, use_cache=False):
        from transformers.modeling_outputs import CausalLMOutputWithPast

        return CausalLMOutputWithPast(logits=input_ids.float(), past_key_values=(past_key_values, input_ids.shape[1]))


def test_forward_with_cache_takes_either_name_of_the_kv_cache(monkeypatch, random_module):
    ids = torch.ones(2, 3, dtype=torch.long)
    monkeypatch.setattr(backbone, "_cache_argument", lambda: "past_key_values")
    out, cache = forward_with_cache(OldCacheApiModel(), "previous", input_ids=ids)
    assert cache == ("previous", 3) and out.logits.shape == (2, 3)
    monkeypatch.undo()
    model = random_module.model
    _, cache = forward_with_cache(model, None, input_ids=ids)
    _, cache = forward_with_cache(model, cache, input_ids=ids[:, :1])
    assert cache.get_seq_length() == 4


def test_row_uniform_depends_only_on_seed_step_and_column():
    """A row's noise is the same in any batch and for any vocabulary width; it changes with the step and seed."""
    seeds = torch.tensor([0, 1, 7, 123456789, 2**31 - 1])
    u = row_uniform(seeds, 3, 50)
    assert u.shape == (5, 50) and bool(((u > 0) & (u < 1)).all())
    for i in range(len(seeds)):
        assert torch.equal(row_uniform(seeds[i:i + 1], 3, 50)[0], u[i])
    assert torch.equal(row_uniform(seeds, 3, 20), u[:, :20])
    assert not torch.equal(row_uniform(seeds, 4, 50), u)
    assert len({tuple(r) for r in u.tolist()}) == len(seeds)


def reference_row_uniform(seed: int, step: int, column: int) -> float:
    """The noise's definition in plain Python integers: lowbias32 of the seed, the step and the column."""
    def mix32(x: int) -> int:
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    base = mix32((seed & 0xFFFFFFFF) ^ mix32(step + 0x51ED27))
    return (mix32(((base + column * 0x9E3779B9) & 0xFFFFFFFF) ^ (base >> 7)) + 0.5) / 2**32


def test_row_uniform_values_are_fixed():
    """The noise is part of every seeded result (evaluation scores, tests): the tensor implementation, however it is
    sped up, gives exactly the numbers of its definition."""
    seeds = [0, 12345, 2**31 - 1, 2**40 + 3]
    for step in (0, 3, 15):
        u = row_uniform(torch.tensor(seeds), step, 7)
        assert u.tolist() == [[reference_row_uniform(s, step, j) for j in range(7)] for s in seeds]


def test_row_uniform_is_uniform():
    u = row_uniform(torch.arange(2000), 0, 100).flatten()
    assert u.mean().item() == pytest.approx(0.5, abs=0.01)
    assert u.var().item() == pytest.approx(1 / 12, abs=0.005)
    assert torch.histc(u.float(), bins=10, min=0, max=1).div(len(u)).sub(0.1).abs().max().item() < 0.01


@pytest.mark.parametrize("temperature, top_k", [(1.0, 0), (0.5, 0), (2.0, 2)])
def test_sampling_frequencies_follow_the_tempered_softmax(temperature, top_k):
    """Gumbel-max over 4000 seeds picks each token about as often as softmax(logits / T) over the top k."""
    logits = torch.tensor([1.0, 0.5, 0.0, -1.0])
    n = 4000
    tokens = sample_from_logits(logits.expand(n, -1), torch.arange(n), 0, temperature, top_k)
    kept = logits if top_k == 0 else logits.masked_fill(logits < logits.topk(top_k).values[-1], float("-inf"))
    expected = torch.softmax(kept / temperature, -1)
    observed = torch.bincount(tokens, minlength=4).double() / n
    assert observed.sub(expected).abs().max().item() < 0.03, (observed, expected)
    if top_k:
        assert int(tokens.max()) < top_k


def test_greedy_sampling_is_the_argmax():
    logits = torch.randn(8, 30, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample_from_logits(logits, torch.arange(8), 5, temperature=0.0), logits.argmax(-1))


# --- batching helpers ----------------------------------------------------------------------------------------


def test_unique_rows_and_inverse():
    rows, inverse = unique_rows([[1, 2], [3], [1, 2], [], [3]])
    assert rows == [[1, 2], [3], []]
    assert inverse == [0, 1, 0, 2, 1]


def test_common_prefix_length_counts_the_shared_first_tokens():
    cases = [((), (1,), 0), ((1, 2, 3), (1, 2, 3), 3), ((1, 2, 3), (1, 2), 2), ((1, 2, 3), (1, 5, 3), 1),
             ((4, 2), (1, 2), 0), ((1, 1, 1, 1, 2), (1, 1, 1, 1, 1, 1), 4)]
    for a, b, n in cases:
        assert common_prefix_length(a, b) == common_prefix_length(b, a) == n


def test_left_pad_positions_count_real_tokens_only():
    ids, mask, positions = left_pad([[5, 6, 7], [8], []], pad_id=0, device="cpu")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    assert positions.tolist() == [[0, 1, 2], [0, 0, 0], [0, 0, 0]]


# --- LMPolicy ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_new_tokens, stops_at_newline", [(16, True), (4, False)])
def test_greedy_cached_decoding_equals_uncached_argmax(taught_module, max_new_tokens, stops_at_newline):
    """Greedy turns from the batched KV-cached decoder equal step-by-step argmax without a cache; each turn
    ends at the first newline (16 tokens: the taught model's "move ...\\n") or is cut at max_new_tokens (4)."""
    tok = taught_module.tokenizer
    policy = taught_module.policy(Decoding("greedy", max_new_tokens=max_new_tokens))
    out = policy.act(HISTORIES)
    for history, result in zip(HISTORIES, out):
        ids = uncached_decode(taught_module.model, tok, prompt_ids(tok, history, max_new_tokens),
                              lambda x, _: int(x.argmax()), max_new_tokens)
        assert (ids[-1] == end_of_turn_id(tok)) == stops_at_newline
        assert result[:-1] == history
        assert result[-1] == Text(action_text(tok, ids), True)
        assert result[-1].text.count("\n") == 1 and result[-1].text.endswith("\n")


@pytest.mark.parametrize(
    "model, temperature, top_k", [("taught", 1.0, 0), ("taught", 0.7, 5), ("random", 1.0, 0)]
)
def test_sampled_cached_decoding_equals_uncached_sampling(request, model, temperature, top_k):
    """With the same per-row noise, the batched KV-cached sampler produces each row's turn exactly as
    decoding that row alone without a cache does (the taught model's turns mostly end at a newline, the random
    one's at max_new_tokens)."""
    module = request.getfixturevalue(f"{model}_module")
    tok = module.tokenizer
    histories = HISTORIES * 2
    seeds = [11 * i + 5 for i in range(len(histories))]
    max_new_tokens = 16
    policy = LMPolicy(module.model, tok, temperature, top_k, max_new_tokens)
    out = policy.act(histories, seeds=seeds)
    for history, seed, result in zip(histories, seeds, out):
        def choose(logits, step):
            return int(sample_from_logits(logits[None], torch.tensor([seed]), step, temperature, top_k)[0])

        ids = uncached_decode(module.model, tok, prompt_ids(tok, history, max_new_tokens), choose, max_new_tokens)
        assert result == history + (Text(action_text(tok, ids), True),)


def test_sampled_turns_keep_their_non_canonical_tokens_for_the_next_prompt(random_module):
    """A turn whose sampled tokens spell its text but are not the text's encoding carries them (`Text.token_ids`),
    and the next turn's prompt is built from them; a turn whose tokens are the encoding (or whose text was cut and
    completed) carries none. The random model writes both kinds."""
    tok = random_module.tokenizer
    policy = LMPolicy(random_module.model, tok, max_new_tokens=16)
    histories = HISTORIES * 4
    out = policy.act(histories, seeds=list(range(len(histories))))
    carried = [h[-1] for h in out if h[-1].token_ids is not None]
    assert carried and len(carried) < len(out)
    for action in carried:
        assert tok.decode(list(action.token_ids), skip_special_tokens=True) == action.text
        assert list(action.token_ids) != tok.encode(action.text, add_special_tokens=False)
    history = next(h for h in out if h[-1].token_ids is not None) + (Text("ok\n", False),)
    (prompt,) = encode_histories([history], policy.tokenize, 10_000)
    ends_with = list(history[-2].token_ids) + tok.encode("ok\n", add_special_tokens=False)
    assert prompt[-len(ends_with):] == ends_with


# Sampled turns of the random model (long, varied) and sampled re-ranking by the taught one (the random one puts
# almost all its mass on one move).
SAMPLED_POLICIES = [("random", "sample"), ("taught", "rerank")]


@pytest.mark.parametrize("model, decoding", SAMPLED_POLICIES)
def test_a_row_acts_the_same_alone_or_in_a_batch(request, model, decoding):
    """A row's action for a given seed does not depend on the other rows (different lengths, repeats of it)."""
    policy = request.getfixturevalue(f"{model}_module").policy(Decoding(decoding), MOVES)
    histories = HISTORIES + HISTORIES[:3]
    seeds = [1000 + 17 * i for i in range(len(histories))]
    batch = policy.act(histories, seeds=seeds)
    for history, seed, result in zip(histories, seeds, batch):
        assert policy.act([history], seeds=[seed]) == [result]


def test_same_seeds_repeat_and_other_seeds_differ(random_module):
    """Sampling is a function of the seeds: the same seeds give the same turns, other seeds other turns."""
    policy = random_module.policy(Decoding("sample", temperature=1.0))
    histories = HISTORIES * 2
    seeds = list(range(len(histories)))
    first = policy.act(histories, seeds=seeds)
    assert policy.act(histories, seeds=seeds) == first
    # rows 6-11 repeat the histories of rows 0-5 with other seeds
    assert sum(a != b for a, b in zip(first[:6], first[6:])) >= 4
    others = policy.act(histories, seeds=[s + 1000 for s in seeds])
    assert sum(a != b for a, b in zip(first, others)) >= len(histories) // 2


def test_top_k_1_equals_greedy(taught_module):
    """Sampling at temperature 1 from the single most likely token is greedy decoding."""
    histories = HISTORIES * 3
    seeds = list(range(len(histories)))
    greedy = taught_module.policy(Decoding("greedy")).act(histories, seeds=seeds)
    top_1 = LMPolicy(taught_module.model, taught_module.tokenizer, temperature=1.0, top_k=1)
    assert top_1.act(histories, seeds=seeds) == greedy
    # without top-k, the same seeds sample other turns on some rows
    assert taught_module.policy(Decoding("sample", temperature=1.0)).act(histories, seeds=seeds) != greedy


def test_rows_that_end_their_turn_leave_the_batch(taught_module, monkeypatch):
    """Once a row has produced its newline, later decoding steps run without it: each forward pass after the prompt's
    has exactly the rows whose turn is longer than the tokens fed so far, and every row's turn is still the one it
    samples alone."""
    tok = taught_module.tokenizer
    policy = LMPolicy(taught_module.model, tok, temperature=2.0, max_new_tokens=16)
    histories, seeds = HISTORIES * 2, list(range(40, 52))
    batch_rows = []
    next_token_logits = policy.next_token_logits

    def recording(ids, mask, positions, state):
        batch_rows.append(ids.shape[0])
        return next_token_logits(ids, mask, positions, state)

    monkeypatch.setattr(policy, "next_token_logits", recording)
    turns = policy.generate([prompt_ids(tok, h, 16) for h in histories], seeds)
    monkeypatch.undo()
    assert len({len(t) for t in turns}) > 1, "the rows' turns should differ in length"
    assert batch_rows[1:] == [sum(len(t) > fed for t in turns) for fed in range(1, len(batch_rows))]
    for history, seed, turn in zip(histories, seeds, policy.act(histories, seeds=seeds)):
        assert policy.act([history], seeds=[seed]) == [turn]


def test_action_texts_are_decoded_once_and_stay_exact(random_module, monkeypatch):
    """Repeated turns are decoded from the policy's cache, cut at the first newline (or given one), and the cache is
    emptied when full rather than growing without bound."""
    tok = random_module.tokenizer
    policy = LMPolicy(random_module.model, tok)
    eot = end_of_turn_id(tok)
    word = tok.encode("move left", add_special_tokens=False)
    turns = [word + [eot], word, word + [eot], [eot], word + [tok.pad_token_id]]
    assert [policy.action_text(ids) for ids in turns] == ["move left\n", "move left\n", "move left\n", "\n", "move left\n"]
    assert len(policy._action_texts) == 4
    monkeypatch.setattr("lmrl_lightning.policies.sampling.ACTION_TEXT_CACHE_SIZE", 2)
    small_cache = LMPolicy(random_module.model, tok)
    assert [small_cache.action_text(ids) for ids in turns] == [policy.action_text(ids) for ids in turns]
    assert len(small_cache._action_texts) <= 2


@pytest.mark.parametrize("model, decoding", SAMPLED_POLICIES)
def test_done_and_none_rows_are_skipped(request, model, decoding):
    """Rows that are None or done come back None; the other rows act as they would without them."""
    policy = request.getfixturevalue(f"{model}_module").policy(Decoding(decoding), MOVES)
    h0, h1, h2, h3 = HISTORIES[:4]
    out = policy.act([h0, None, h2, h3, h1], done=[False, False, True, False, False], seeds=[4, 5, 6, 7, 8])
    assert out[1] is None and out[2] is None
    assert [out[0], out[3], out[4]] == policy.act([h0, h3, h1], seeds=[4, 7, 8])
    assert policy.act([h0, h1], done=[True, True]) == [None, None]
    assert policy.act([None, None]) == [None, None]


# --- KV caches carried across turns ------------------------------------------------------------------------


def play_turns(policy, turns: int, seeds: list[int]) -> list:
    """Act `turns` times on growing histories (each turn's output plus the next observation; a new short history
    joins at the second turn), returning every turn's output."""
    histories = [HISTORIES[0], HISTORIES[2], HISTORIES[5], HISTORIES[1]]
    outputs = []
    for turn in range(turns):
        out = policy.act(histories, seeds=[s + turn for s in seeds[: len(histories)]])
        outputs.append(out)
        histories = [h + (observation(START_POSITIONS[(3 * i + turn) % 25]),) for i, h in enumerate(out)]
        if turn == 0:
            histories.append(HISTORIES[2])
    return outputs


def tokens_run(policy, monkeypatch) -> list[int]:
    """Records the number of token positions each of `policy`'s forward passes runs."""
    counts = []
    name = "features" if isinstance(policy, RerankPolicy) else "next_token_logits"
    forward = getattr(policy, name)

    def counting(ids, *args):
        counts.append(ids.numel())
        return forward(ids, *args)

    monkeypatch.setattr(policy, name, counting)
    return counts


def per_state_moves(history) -> list[str]:
    """Per-state candidates (as chess's legal moves): a number of moves that depends on the history."""
    return list(MOVES[: 1 + len(history) % 4])


@pytest.mark.parametrize(
    "model, decoding",
    [("taught", "sample"), ("random", "sample"), ("taught", "rerank"), ("random", "rerank"), ("taught", "per-state")],
)
def test_histories_continue_from_the_last_turns_cache_and_act_the_same(request, model, decoding, monkeypatch):
    """A history that extends what the previous call ran (its prompt, and the turn it wrote when it wrote one) runs
    only its new tokens, and every row acts as without the carried cache: over three turns in which the rows' turns
    differ in length, a new history joins, and the longest histories outgrow the prompt window (their first
    tokens dropped: nothing to continue, run whole). Sampled turns, re-ranked fixed and per-state candidates."""
    module = request.getfixturevalue(f"{model}_module")
    if decoding == "per-state":
        carried, fresh = (RerankPolicy(module.model, module.tokenizer, per_state_moves, 1.0, carry)
                          for carry in (True, False))
    else:
        carried, fresh = (module.policy(Decoding(decoding, carry_cache=carry), MOVES) for carry in (True, False))
    seeds = [7 * i + 3 for i in range(5)]
    carried_tokens, fresh_tokens = tokens_run(carried, monkeypatch), tokens_run(fresh, monkeypatch)
    assert play_turns(carried, 3, seeds) == play_turns(fresh, 3, seeds)
    assert sum(carried_tokens) < sum(fresh_tokens)



@pytest.mark.parametrize("decoding", ["sample", "rerank", "per-state"])
def test_new_observations_continue_from_the_opening_they_share_with_the_last_call(taught_module, decoding,
                                                                                  monkeypatch):
    """A fully observed task's prompt is a new observation each turn, extending nothing the last call ran; it
    still shares its opening ("The goal is at position 1 0, 1 0. Your current position is at position ...") with
    the last call's sequences, and sometimes all but its last token (another episode's observation a turn
    earlier). Those tokens come from the carried cache, and every row acts as without it."""
    module = taught_module
    if decoding == "per-state":
        carried, fresh = (RerankPolicy(module.model, module.tokenizer, per_state_moves, 1.0, carry)
                          for carry in (True, False))
    else:
        carried, fresh = (module.policy(Decoding(decoding, carry_cache=carry), MOVES) for carry in (True, False))
    first = [(observation(START_POSITIONS[i]),) for i in (0, 5, 9)]
    then = [(observation(START_POSITIONS[i]),) for i in (5, 12, 20, 24)]  # one seen last call, three new
    seeds = [3, 5, 7, 11]
    counted = {}
    for name, policy in (("carried", carried), ("fresh", fresh)):
        policy.act(first, seeds=seeds[:3])
        counted[name] = tokens_run(policy, monkeypatch)
        counted[name + " acts"] = policy.act(then, seeds=seeds)
    opening = common_prefix_length(*(prompt_ids(module.tokenizer, h, 0) for h in first[:2]))
    assert opening >= 10
    shared = [carried.turn_cache.longest_prefix(prompt_ids(module.tokenizer, h, 0))[0] for h in then]
    assert shared[0] == len(prompt_ids(module.tokenizer, then[0], 0)) - 1  # seen whole: all but its last token
    assert all(n >= opening for n in shared)
    assert counted["carried acts"] == counted["fresh acts"]
    assert sum(counted["carried"]) < sum(counted["fresh"])

def test_the_carried_cache_is_dropped_when_the_weights_change(random_module):
    """After an in-place change of the weights (an optimiser step), a history extending the last call's runs whole
    and acts as under a policy that never cached."""
    model = copy.deepcopy(random_module.model)
    tok = random_module.tokenizer
    policy = LMPolicy(model, tok, temperature=1.0, max_new_tokens=4)
    seeds = [1, 2, 3]
    out = policy.act([HISTORIES[0], HISTORIES[2], HISTORIES[5]], seeds=seeds)
    extended = [h + (observation(START_POSITIONS[7]),) for h in out]
    assert all(policy.turn_cache.longest_prefix(prompt_ids(tok, h, 4))[0] > 0 for h in extended)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    expected = LMPolicy(model, tok, temperature=1.0, max_new_tokens=4, carry_cache=False).act(extended, seeds=seeds)
    assert policy.act(extended, seeds=seeds) == expected
    unchanged = LMPolicy(random_module.model, tok, temperature=1.0, max_new_tokens=4, carry_cache=False)
    assert expected != unchanged.act(extended, seeds=seeds)


# --- re-ranking ----------------------------------------------------------------------------------------------


def test_candidate_logprobs_equal_unbatched_sums(taught_module):
    """Each prompt x candidate log-probability equals the sum of log_softmax over the candidate's tokens from
    an unbatched forward pass: left padding of the shorter prompts changes nothing."""
    model, tok = taught_module.model, taught_module.tokenizer
    candidates = [tok.encode(m) for m in MOVES] + [tok.encode("There\n")]
    prompts = [prompt_ids(tok, h, max(len(c) for c in candidates)) for h in HISTORIES]
    assert len({len(p) for p in prompts}) > 2 and len({len(c) for c in candidates}) > 2
    scores = candidate_logprobs(model, tok.pad_token_id, prompts, candidates)
    assert scores.shape == (len(prompts), len(candidates))
    with torch.no_grad():
        for i, prompt in enumerate(prompts):
            for j, candidate in enumerate(candidates):
                ids = prompt + candidate
                logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
                direct = sum(logp[t, ids[t + 1]].item() for t in range(len(prompt) - 1, len(ids) - 1))
                assert scores[i, j].item() == pytest.approx(direct, abs=1e-4)


def decision_chunks(rows: list[list[int]], pad_id: int, decisions: list[tuple[int, int]]):
    """Right-padded chunks of `rows` (ids, mask) and PPO's `choice` with a decision at each (row, step)."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    choice = torch.full((len(rows), width - 1), -1)
    for row, step in decisions:
        choice[row, step] = 0
    return ids, mask, choice


@pytest.mark.parametrize("side_by_side", [True, False], ids=["one-pass", "on-gathered-caches"])
def test_candidates_scored_on_a_chunk_cache_equal_unbatched_sums(taught_module, monkeypatch, side_by_side):
    """PPO's scorer: one pass over right-padded chunks with each decision's candidates side by side after the chunk,
    or each decision's candidates on the chunk's KV cache (the chunk's tokens after the decision masked out), in
    groups of cache rows. Each score equals the unbatched sum after the decision's context, for several decisions in
    one row, per-decision candidate sets and the shorter rows' padding; the hidden states are the chunks' own."""
    model, tok = taught_module.model, taught_module.tokenizer
    moves = [tok.encode(m) for m in MOVES]
    rows = [prompt_ids(tok, h, 0) for h in HISTORIES[:4]]
    decisions = [(0, 10), (1, 5), (1, len(rows[1]) - 2), (3, 30)]  # (row, step t): the context is tokens 0..t
    ids, mask, choice = decision_chunks(rows, tok.pad_token_id, decisions)
    sets = [moves, moves[:2], [tok.encode("There\n"), moves[3]], moves]
    monkeypatch.setattr(rerank, "MAX_CANDIDATE_ROWS", 3)
    assert rerank.takes_tree_mask(model)
    if not side_by_side:
        monkeypatch.setattr(rerank, "MAX_TREE_TOKENS", 0)
    one_pass = rerank._chunk_tree_pass
    calls = []
    monkeypatch.setattr(rerank, "_chunk_tree_pass", lambda *args: calls.append(1) or one_pass(*args))
    with torch.no_grad():
        hidden, scores = rerank.chunk_candidate_logprobs(model, tok.pad_token_id, ids, mask, choice, sets)
        expected_hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert len(calls) == side_by_side
    assert rerank.fits_on_chunk_cache(model, choice, sets)
    torch.testing.assert_close(hidden, expected_hidden)
    pairs = [(rows[r][:t + 1], c) for (r, t), cands in zip(decisions, sets) for c in cands]
    assert scores.shape == (len(pairs),)
    with torch.no_grad():
        for score, (prompt, candidate) in zip(scores.tolist(), pairs):
            x = prompt + candidate
            logp = torch.log_softmax(model(input_ids=torch.tensor([x])).logits[0].float(), -1)
            assert score == pytest.approx(sum(logp[t, x[t + 1]].item() for t in range(len(prompt) - 1, len(x) - 1)),
                                          abs=1e-4)
    late = torch.full((1, N_POSITIONS - 1), -1)
    late[0, N_POSITIONS - 3] = 0  # context of N - 2 tokens: a 2-token candidate fits the model's positions, 3 do not
    assert rerank.fits_on_chunk_cache(model, late, [[[1, 2], [3]]])
    assert not rerank.fits_on_chunk_cache(model, late, [[[1, 2, 3], [3]]])


def test_rerank_greedy_picks_the_best_scoring_candidate(taught_module):
    """The policy's scores are the candidates' log-probabilities after each (left-truncated) history, and
    temperature 0 picks the best of them."""
    model, tok = taught_module.model, taught_module.tokenizer
    policy = taught_module.policy(Decoding("rerank_greedy"), MOVES)
    histories = HISTORIES + [(observation(p),) for p in START_POSITIONS[::2]]
    candidates = [tok.encode(m) for m in MOVES]
    prompts = [prompt_ids(tok, h, max(len(c) for c in candidates)) for h in histories]
    scores = candidate_logprobs(model, tok.pad_token_id, prompts, candidates)
    torch.testing.assert_close(policy.scores(histories), scores)
    chosen = [h[-1] for h in policy.act(histories, seeds=range(len(histories)))]
    assert chosen == [Text(MOVES[j], True) for j in scores.argmax(-1).tolist()]
    assert len(set(chosen)) > 1


def test_rerank_scores_prompts_in_groups_as_at_once(taught_module, monkeypatch):
    """Many candidates (Wordle's 400 words) are scored over groups of prompts, bounding the repeated KV caches:
    the same scores as one pass over all prompts."""
    policy = taught_module.policy(Decoding("rerank_greedy"), MOVES)
    histories = HISTORIES + [(observation(p),) for p in START_POSITIONS[::2]]
    monkeypatch.setattr(rerank, "MAX_TREE_TOKENS", 0)  # one row per (prompt, candidate), the path that groups
    at_once = policy.scores(histories)
    groups = []
    score_group = rerank._group_scores
    monkeypatch.setattr(rerank, "_group_scores", lambda *args: groups.append(len(args[3])) or score_group(*args))
    monkeypatch.setattr(rerank, "MAX_CANDIDATE_ROWS", 2 * len(MOVES) + 1)  # two prompts a group, the last alone
    torch.testing.assert_close(policy.scores(histories), at_once)
    assert len(groups) > 1 and set(groups[:-1]) == {2}  # it did score in groups of two prompts


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_rerank_sampling_frequencies_follow_softmax_of_scores(taught_module, temperature):
    """Over 4000 seeds the sampled candidates are chosen about as often as softmax(scores / T)."""
    history = HISTORIES[1]
    policy = taught_module.policy(Decoding("rerank", temperature=temperature), MOVES)
    expected = torch.softmax(policy.scores([history])[0].double() / temperature, -1)
    assert (expected > 0.1).sum() >= 2, "the scores should leave more than one likely move"
    n = 4000
    out = policy.act([history] * n, seeds=range(n))
    observed = torch.tensor([sum(h[-1].text == m for h in out) / n for m in MOVES], dtype=torch.double)
    assert observed.sub(expected).abs().max().item() < 0.05, (observed, expected)


@pytest.mark.parametrize("preset", ["tiny", "tiny-rope"])
def test_chunk_candidates_in_one_pass_give_the_gathered_caches_gradients(tokenizer_dir, preset, monkeypatch):
    """PPO's update: scoring the candidates side by side in the chunk's pass gives the same hidden states, scores
    and parameter gradients as running them on gathered copies of the chunk's cache, for absolute (GPT-2) and rotary
    (Llama) positions, two decisions in one row, candidates of several lengths and right-padded rows."""
    torch.manual_seed(3)
    module = BC(BackboneConfig(preset, tokenizer=tokenizer_dir, max_positions=N_POSITIONS))
    model, tok = module.model.eval(), module.tokenizer
    moves = [tok.encode(m) for m in MOVES]
    rows = [prompt_ids(tok, h, 0) for h in HISTORIES[:3]]
    ids, mask, choice = decision_chunks(rows, tok.pad_token_id, [(0, 7), (0, len(rows[0]) - 2), (2, 12)])
    sets = [moves, [tok.encode("move up and then down\n"), moves[1]], moves[:3]]

    one_pass, calls = rerank._chunk_tree_pass, []

    def run(tree_tokens: int):
        model.zero_grad()
        with monkeypatch.context() as m:
            m.setattr(rerank, "MAX_TREE_TOKENS", tree_tokens)
            m.setattr(rerank, "_chunk_tree_pass", lambda *args: calls.append(tree_tokens) or one_pass(*args))
            hidden, scores = rerank.chunk_candidate_logprobs(model, tok.pad_token_id, ids, mask, choice, sets)
        weights = torch.linspace(-1, 1, len(scores))
        ((scores * weights).sum() + (hidden * mask[..., None]).pow(2).mean()).backward()
        return hidden.detach(), scores.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    (hidden, scores, grads), (hidden_ref, scores_ref, grads_ref) = run(rerank.MAX_TREE_TOKENS), run(0)
    assert calls == [rerank.MAX_TREE_TOKENS]  # one pass, then the gathered caches
    torch.testing.assert_close(hidden[mask.bool()], hidden_ref[mask.bool()], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(scores, scores_ref, atol=1e-4, rtol=1e-4)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, grads_ref[name], atol=1e-5, rtol=1e-3, msg=name)


def test_gathered_candidate_groups_are_recomputed_in_backward_with_the_same_gradients(tokenizer_dir, monkeypatch):
    """PPO's update on many candidates (Wordle: 400 answers a decision) scores them in groups of MAX_CANDIDATE_ROWS
    gathered caches; under autograd each group is recomputed in backward rather than kept (its forward runs twice),
    and scores and gradients equal those of one group kept whole."""
    torch.manual_seed(5)
    module = BC(BackboneConfig("tiny-rope", tokenizer=tokenizer_dir, max_positions=N_POSITIONS))
    model, tok = module.model.eval(), module.tokenizer
    moves = [tok.encode(m) for m in MOVES]
    rows = [prompt_ids(tok, h, 0) for h in HISTORIES[:3]]
    ids, mask, choice = decision_chunks(rows, tok.pad_token_id, [(0, 7), (0, len(rows[0]) - 2), (2, 12)])
    sets = [moves, moves, moves[:3]]  # 11 pairs
    monkeypatch.setattr(rerank, "MAX_TREE_TOKENS", 0)
    forward, candidate_passes = rerank.forward_with_cache, []

    def counted(network, cache, **inputs):
        candidate_passes.append(cache is not None)
        return forward(network, cache, **inputs)

    monkeypatch.setattr(rerank, "forward_with_cache", counted)

    def run(group_rows: int):
        model.zero_grad()
        candidate_passes.clear()
        monkeypatch.setattr(rerank, "MAX_CANDIDATE_ROWS", group_rows)
        hidden, scores = rerank.chunk_candidate_logprobs(model, tok.pad_token_id, ids, mask, choice, sets)
        (scores * torch.linspace(-1, 1, len(scores))).sum().backward()
        return scores.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, sum(candidate_passes)

    (scores, grads, passes), (scores_whole, grads_whole, passes_whole) = run(4), run(64)
    assert (passes, passes_whole) == (2 * 3, 1)  # three groups of at most 4 pairs, each run again in backward
    torch.testing.assert_close(scores, scores_whole, atol=1e-5, rtol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, grads_whole[name], atol=1e-5, rtol=1e-3, msg=name)


@pytest.mark.parametrize("preset", ["tiny", "tiny-rope"])
def test_per_state_candidates_side_by_side_score_as_one_row_per_candidate(tokenizer_dir, preset, monkeypatch):
    """Per-state candidates (a chess position's legal moves, Text-Nav's admissible commands): prompts whose set fits
    MAX_TREE_TOKENS run it side by side in their own rows, the others one row per (prompt, candidate), in one call;
    every score equals the direct sum of the candidate's token log-probabilities after its history."""
    torch.manual_seed(4)
    module = BC(BackboneConfig(preset, tokenizer=tokenizer_dir, max_positions=N_POSITIONS))
    model, tok = module.model.eval(), module.tokenizer

    def candidates_of(history) -> list[str]:  # sets of 1 to 5 candidates of several lengths
        return [*MOVES, "move up and then down\n"][: 1 + len(history) % 5]

    sizes = {len(candidates_of(h)) for h in HISTORIES}
    assert len(sizes) > 2
    tree_tokens = sum(len(tok.encode(c)) for c in candidates_of((None,) * 2))  # the 3-candidate set fits, 4 do not
    monkeypatch.setattr(rerank, "MAX_TREE_TOKENS", tree_tokens)
    tree_rows = []
    side_by_side = rerank._tree_scores
    monkeypatch.setattr(rerank, "_tree_scores", lambda f, s, pad, prompts, *rest: tree_rows.append(len(prompts))
                        or side_by_side(f, s, pad, prompts, *rest))
    policy = RerankPolicy(model, tok, candidates_of, temperature=0, carry_cache=False)
    texts, scores = policy.state_scores(HISTORIES)
    assert len(tree_rows) == 1 and 0 < tree_rows[0] < len(HISTORIES)  # some prompts side by side, some not
    reserve = max(len(tok.encode(c)) for cands in texts for c in cands)  # the policy's prompt budget
    with torch.no_grad():
        for history, cands, row in zip(HISTORIES, texts, scores):
            prompt = prompt_ids(tok, history, reserve)
            for j, candidate in enumerate(cands):
                ids = prompt + tok.encode(candidate)
                logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
                direct = sum(logp[t, ids[t + 1]].item() for t in range(len(prompt) - 1, len(ids) - 1))
                assert row[j].item() == pytest.approx(direct, abs=1e-4)
            assert torch.isinf(row[len(cands):]).all()


@pytest.mark.parametrize("preset", ["tiny", "tiny-rope"])
def test_candidates_side_by_side_score_as_one_row_per_candidate(tokenizer_dir, preset, monkeypatch):
    """A few candidates run side by side after each prompt under a tree mask (`_tree_scores`): the same scores as
    one row per (prompt, candidate) on a repeated cache, for absolute (GPT-2) and rotary (Llama) positions, with
    candidates of several lengths and prompts continued from the last turn's cache."""
    torch.manual_seed(2)
    model = BC(BackboneConfig(preset, tokenizer=tokenizer_dir, max_positions=N_POSITIONS)).model.eval()
    tok = BC(BackboneConfig(preset, tokenizer=tokenizer_dir, max_positions=N_POSITIONS)).tokenizer
    candidates = list(MOVES) + ["move up and then down\n", "\n"]
    tree_calls = []
    side_by_side = rerank._tree_scores
    monkeypatch.setattr(rerank, "_tree_scores", lambda *args: tree_calls.append(1) or side_by_side(*args))
    tree = RerankPolicy(model, tok, candidates, temperature=0)
    copies = RerankPolicy(model, tok, candidates, temperature=0, carry_cache=False)
    histories = HISTORIES[:3]
    for turn in range(3):  # later turns continue from the kept caches (prompts of mixed cached widths)
        got = tree.scores(histories)
        with monkeypatch.context() as m:
            m.setattr(rerank, "MAX_TREE_TOKENS", 0)
            expected = copies.scores(histories)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
        histories = [h + (move(MOVES[(turn + i) % 4]), observation(START_POSITIONS[turn + i])) for i, h in
                     enumerate(histories)]
    assert len(tree_calls) == 3
