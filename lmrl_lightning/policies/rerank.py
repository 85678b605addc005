"""Re-ranking decoding: score a task's candidate actions with the model: a fixed set (the maze's four moves) or the
candidates of each state (a chess position's legal moves)."""
from __future__ import annotations

from collections import Counter
from typing import Callable, Optional, Sequence, Union

import torch
from torch.utils.checkpoint import checkpoint
from transformers import DynamicCache

from lmrl_lightning.data.tokenize import TurnTokenizer
from lmrl_lightning.env import END_OF_TURN, BatchedTextPolicy, Text, TextHistory
from lmrl_lightning.models.backbone import forward_with_cache
from lmrl_lightning.policies.sampling import (
    encode_histories, eval_mode, live_indices, prefill, row_uniform, unique_rows,
)
from lmrl_lightning.policies.turn_cache import TurnCache, carried


Features = tuple[torch.Tensor, ...]
# Most (prompt, candidate) rows scored at once: bounds the memory of the repeated KV caches.
MAX_CANDIDATE_ROWS = 4096
# Candidate sets of at most this many tokens in all run side by side in one row per prompt (`_tree_scores`; PPO's
# update: all of a chunk's decisions' sets, `_chunk_tree_pass`); each token then also meets every other candidate's
# positions (masked), which somewhere between 800 and 2400 tokens costs more than the copies of the prompt's cache
# that one row per candidate needs (benchmarks/rerank_tree_crossover.py, 80-token prompts: 1.75x at 400 tokens,
# 1.44x at 800, 0.65x at Wordle's 400 words of 6). Chess's legal moves fit; Wordle's answers do not.
MAX_TREE_TOKENS = 512


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(tokens) under `logits` [..., V] (one token per position)."""
    return torch.log_softmax(logits.float(), -1).gather(-1, tokens[..., None]).squeeze(-1)


def lm_features(model, ids, mask, positions, caches, last_only: bool) -> tuple[Features, tuple]:
    """The model's logits at every position (or the last only) and its KV cache after `ids` (a 1-tuple)."""
    out, cache = forward_with_cache(
        model, caches[0] if caches else None,
        input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1 if last_only else 0,
    )
    return (out.logits,), (cache,)


FeatureFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Optional[tuple], bool], tuple[Features, tuple]]
# (features, tokens, ends) -> the score of each token [B, T]; `ends` [B, T] tells the tokens that end their candidate.
TokenScoreFn = Callable[[Features, torch.Tensor, torch.Tensor], torch.Tensor]


def candidate_scores(
    features: FeatureFn,
    token_scores: TokenScoreFn,
    pad_id: int,
    prompts: Sequence[list[int]],
    candidates: Sequence[list[int]],
    device,
    turn_cache: Optional[TurnCache] = None,
    tree: bool = False,
) -> torch.Tensor:
    """Sum over each candidate's tokens of a per-token score, after each prompt: [len(prompts), len(candidates)].

    Each prompt runs once (left-padded); its KV cache is then repeated once per candidate and only the
    candidates' tokens run on top of it, right-padded. Prompts go in groups so that the repeated caches hold at
    most MAX_CANDIDATE_ROWS rows (Wordle: 400 words). With `tree` (networks whose attention reads a 4D boolean
    mask as given, see `takes_tree_mask`) and at most MAX_TREE_TOKENS candidate tokens in all, the candidates run
    side by side in the prompt's own row instead (`_tree_scores`): no copies of the cache, one row per prompt.
    Differentiable (PPO's update scores candidates with it);
    decoding callers run it under `torch.inference_mode`. `features(ids, mask, positions, caches, last_only)` gives
    per-position feature tensors and the KV caches after `ids` (a tuple: one per network it runs);
    `token_scores(features, tokens, ends)` scores the token that follows each position, `ends` telling the tokens
    that end their candidate: [B, T]. With a `turn_cache`
    (decoding only), a prompt continues from the longest prefix of it the cache holds, and the prompts' own caches
    are kept in it (see `turn_cache.py`).
    """
    if tree and sum(len(c) for c in candidates) <= MAX_TREE_TOKENS:
        return _tree_scores(features, token_scores, pad_id, prompts, [candidates] * len(prompts), device, turn_cache)
    group = max(1, MAX_CANDIDATE_ROWS // len(candidates))
    return torch.cat([
        _group_scores(features, token_scores, pad_id, prompts[i:i + group], candidates, device, turn_cache)
        for i in range(0, len(prompts), group)
    ])


def takes_tree_mask(*models) -> bool:
    """Whether every model attends with PyTorch's scaled_dot_product_attention, which reads a custom 4D boolean
    mask as given (eager attention would add it to the scores as numbers)."""
    return all(getattr(getattr(m, "config", None), "_attn_implementation", None) == "sdpa" for m in models)


def _tree_scores(features: FeatureFn, token_scores, pad_id: int, prompts, candidate_sets, device, turn_cache=None):
    """Candidate scores with each prompt's candidates (`candidate_sets[i]`) laid side by side in one row after it:
    [len(prompts), largest set], a smaller set's columns past its end undefined. Token k of a candidate sits at the
    position it would have right after the prompt and attends to the prompt and to its own candidate's earlier tokens
    only (a 4D mask), so the prompt's cache serves all its candidates as it is."""
    last, caches, mask, last_position = _prompt_pass(features, pad_id, prompts, device, turn_cache)
    rows = len(prompts)
    tokens, owner, offset = _slot_table(
        [[(token, c, k) for c, cand in enumerate(cands) for k, token in enumerate(cand)] for cands in candidate_sets],
        (pad_id, -1, 0), device,
    ).unbind(-1)  # [rows, width] each
    width = tokens.shape[1]
    tree_mask = torch.cat([mask.bool()[:, None, :].expand(rows, width, mask.shape[1]) & (owner >= 0)[:, :, None],
                           _own_candidate_mask(owner, offset)], dim=-1)[:, None]
    after, _ = features(tokens, tree_mask, last_position + 1 + offset, caches, False)
    # The prompt's last position scores each candidate's first token, the slots the rest.
    continues = _continues(owner)
    # The token a slot scores ends its candidate when the slot after it no longer continues that candidate.
    ends = continues & ~torch.roll(continues, -1, dims=1)
    rest = token_scores(after, torch.roll(tokens, -1, dims=1), ends) * continues
    n_cands = max(len(c) for c in candidate_sets)
    firsts = torch.tensor([[c[0] for c in cands] + [pad_id] * (n_cands - len(cands)) for cands in candidate_sets],
                          device=device)
    single = torch.tensor([[len(c) == 1 for c in cands] + [False] * (n_cands - len(cands)) for cands in candidate_sets],
                          device=device)
    first = token_scores(tuple(f.expand(rows, n_cands, *f.shape[2:]) for f in last), firsts, single)
    # Padding slots' scores go to an extra column that is dropped.
    summed = torch.zeros(rows, n_cands + 1, dtype=first.dtype, device=device)
    summed.scatter_add_(1, torch.where(owner >= 0, owner, n_cands), rest.to(first.dtype))
    return first + summed[:, :n_cands]


def _slot_table(slots: list[list[tuple]], padding: tuple, device) -> torch.Tensor:
    """Per row, its candidates' tokens laid side by side as slots (token, ..., owner, offset) [rows, width, fields],
    shorter rows filled with `padding`: a slot of no candidate (owner -1)."""
    width = max(len(r) for r in slots)
    return torch.tensor([[*r, *[padding] * (width - len(r))] for r in slots], device=device)


def _own_candidate_mask(owner: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """[rows, query slot, key slot]: a candidate's token sees its own candidate's tokens up to itself; a padding slot
    sees itself (so that no query row is empty)."""
    return ((owner[:, :, None] == owner[:, None, :]) & (offset[:, None, :] <= offset[:, :, None])
            | torch.eye(owner.shape[1], dtype=torch.bool, device=owner.device))


def _continues(owner: torch.Tensor) -> torch.Tensor:
    """[rows, slots]: where the next slot holds the same candidate's next token (which this slot's output scores)."""
    follows = torch.zeros_like(owner, dtype=torch.bool)
    follows[:, :-1] = (owner[:, :-1] >= 0) & (owner[:, 1:] == owner[:, :-1])
    return follows


def _prompt_pass(features: FeatureFn, pad_id: int, prompts, device, turn_cache: Optional[TurnCache]):
    """The prompts' last-position features, caches, mask and last positions (`prefill`), the caches also kept in
    `turn_cache` before the candidates extend them."""
    last, caches, mask, last_position = prefill(
        lambda ids, m, positions, past: features(ids, m, positions, past, True), turn_cache, prompts, pad_id, device
    )
    if turn_cache is not None:
        rows = torch.arange(len(prompts), device=device)
        turn_cache.keep(caches, rows, mask.bool(), prompts)
    return last, caches, mask, last_position


def _group_scores(features: FeatureFn, token_scores, pad_id: int, prompts, candidates, device, turn_cache=None):
    n_prompts, n_candidates = len(prompts), len(candidates)
    last, caches, mask, last_position = _prompt_pass(features, pad_id, prompts, device, turn_cache)
    for cache in caches:
        cache.batch_repeat_interleave(n_candidates)
    cand, cand_mask = right_pad(candidates, pad_id, device)
    cand, cand_mask = cand.repeat(n_prompts, 1), cand_mask.repeat(n_prompts, 1)
    last = tuple(f[:, -1:].repeat_interleave(n_candidates, 0) for f in last)
    scores = _continuation_scores(
        features, token_scores, last, caches, mask.repeat_interleave(n_candidates, 0),
        last_position.repeat_interleave(n_candidates, 0), cand, cand_mask,
    )
    return scores.view(n_prompts, n_candidates)


def right_pad(rows: Sequence[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded token rows and their mask."""
    length = max(len(r) for r in rows)
    ids = torch.tensor([[*r, *[pad_id] * (length - len(r))] for r in rows], dtype=torch.long)
    mask = torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in rows], dtype=torch.long)
    return ids.to(device), mask.to(device)


def _continuation_scores(features: FeatureFn, token_scores, last, caches, prompt_mask, last_position, cand, cand_mask):
    """Summed token scores of candidate rows `cand` [R, L] run on the prompts' caches (already one row per
    candidate row, as are `last`: the prompts' last-position features, `prompt_mask` and `last_position`)."""
    # The prompt's last position scores the first candidate token; candidate position k scores token k + 1, so the
    # last column scores nothing and is not run.
    lengths = cand_mask.sum(1, keepdim=True)
    first = token_scores(last, cand[:, :1], lengths == 1).sum(-1)
    if cand.shape[1] == 1:
        return first
    full_mask = torch.cat([prompt_mask, cand_mask[:, :-1]], dim=1)
    cand_positions = last_position + 1 + torch.arange(cand.shape[1] - 1, device=cand.device)
    after, _ = features(cand[:, :-1], full_mask, cand_positions, caches, False)
    token_index = torch.arange(1, cand.shape[1], device=cand.device)
    rest = token_scores(after, cand[:, 1:], token_index == lengths - 1) * cand_mask[:, 1:]
    return first + rest.sum(-1)


def state_candidate_scores(
    features: FeatureFn,
    token_scores: TokenScoreFn,
    pad_id: int,
    prompts: Sequence[list[int]],
    candidates: Sequence[Sequence[list[int]]],
    device,
    turn_cache: Optional[TurnCache] = None,
    tree: bool = False,
) -> list[torch.Tensor]:
    """`candidate_scores` when each prompt has its own candidates (`candidates[i]` for prompt i, e.g. a chess
    position's legal moves): per prompt, the scores of its candidates [len(candidates[i])].

    Each prompt runs once; its KV cache row is gathered once per (prompt, candidate) pair and the candidates run on
    top, in groups of prompts holding at most MAX_CANDIDATE_ROWS pairs (a prompt with more goes alone). With `tree`
    (see `candidate_scores`), the prompts whose candidates hold at most MAX_TREE_TOKENS tokens in all run them side by
    side in their own rows instead (`_tree_scores`). A `turn_cache` as in `candidate_scores`."""
    side_by_side = [tree and sum(len(c) for c in cands) <= MAX_TREE_TOKENS for cands in candidates]
    scores: list[Optional[torch.Tensor]] = [None] * len(prompts)
    if any(side_by_side):
        rows = [i for i, fits in enumerate(side_by_side) if fits]
        padded = _tree_scores(features, token_scores, pad_id, [prompts[i] for i in rows],
                              [candidates[i] for i in rows], device, turn_cache)
        for row, i in enumerate(rows):
            scores[i] = padded[row, : len(candidates[i])]
    rest = [i for i, fits in enumerate(side_by_side) if not fits]
    if rest:
        paired = _state_pair_scores(features, token_scores, pad_id, [prompts[i] for i in rest],
                                    [candidates[i] for i in rest], device, turn_cache)
        for i, score in zip(rest, paired):
            scores[i] = score
    return scores


def _state_pair_scores(features: FeatureFn, token_scores, pad_id: int, prompts, candidates, device, turn_cache=None):
    """`state_candidate_scores` on gathered cache rows, one per (prompt, candidate) pair, in groups of prompts."""
    groups, group, rows = [], [], 0
    for i, cands in enumerate(candidates):
        if group and rows + len(cands) > MAX_CANDIDATE_ROWS:
            groups.append(group)
            group, rows = [], 0
        group.append(i)
        rows += len(cands)
    groups.append(group)
    scores: list[torch.Tensor] = []
    for group in groups:
        flat = _paired_scores(features, token_scores, pad_id, [prompts[i] for i in group],
                              [candidates[i] for i in group], device, turn_cache)
        scores.extend(flat.split([len(candidates[i]) for i in group]))
    return scores


def _paired_scores(features: FeatureFn, token_scores, pad_id: int, prompts, candidates, device, turn_cache=None):
    last, caches, mask, last_position = _prompt_pass(features, pad_id, prompts, device, turn_cache)
    rows = torch.tensor([i for i, cands in enumerate(candidates) for _ in cands], dtype=torch.long, device=device)
    for cache in caches:
        cache.reorder_cache(rows)
    cand, cand_mask = right_pad([c for cands in candidates for c in cands], pad_id, device)
    last = tuple(f[:, -1:][rows] for f in last)
    return _continuation_scores(
        features, token_scores, last, caches, mask[rows], last_position[rows], cand, cand_mask
    )


def chunk_candidate_logprobs(
    model, pad_id: int, input_ids: torch.Tensor, attention_mask: torch.Tensor, choice: torch.Tensor,
    candidate_sets: Sequence[Sequence[list[int]]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass of `model` over right-padded chunks, and each decision's candidates scored on its KV cache:
    the last hidden states [B, T, d] and, per (decision, candidate) pair in order, the log-probability of the
    candidate's tokens after the decision's context [sum of the set sizes].

    A decision is a step t with `choice[b, t] >= 0`: its context is the row's tokens up to t (causal attention:
    the chunk's hidden states and cache at those positions are the context's own), `candidate_sets[d]` its
    candidates. Each pair gathers its row of the cache, masks the positions after t and runs the candidate's tokens
    at positions t + 1, ...; the first token is scored by the chunk's own state at t. This replaces a second pass
    over every context (what `candidate_scores` runs) with the one the values need anyway. With `takes_tree_mask`
    networks and at most MAX_TREE_TOKENS candidate tokens in a row's decisions, the candidates instead run in the
    same pass as the chunk, side by side after its tokens (`_chunk_tree_pass`): no gathered caches, one pass.
    Differentiable. Every context plus its longest candidate must fit the model's positions (see
    `fits_on_chunk_cache`).
    """
    device, width = input_ids.device, input_ids.shape[1]
    rows, steps = (choice >= 0).nonzero(as_tuple=True)
    # Each (decision, candidate) pair's decision, pairs in decision order.
    pair = torch.repeat_interleave(torch.arange(len(rows), device=device),
                                   torch.tensor([len(c) for c in candidate_sets], dtype=torch.long, device=device))
    row_tokens = Counter()
    for row, candidates in zip(rows.tolist(), candidate_sets):
        row_tokens[row] += sum(len(c) for c in candidates)
    if row_tokens and takes_tree_mask(model) and max(row_tokens.values()) <= MAX_TREE_TOKENS:
        return _chunk_tree_pass(model, pad_id, input_ids, attention_mask, rows, steps, pair, candidate_sets)
    out, cache = forward_with_cache(model.base_model, None, input_ids=input_ids, attention_mask=attention_mask)
    hidden = out.last_hidden_state
    if len(rows) == 0:
        return hidden, hidden.new_zeros(0)
    cand, cand_mask = right_pad([c for cs in candidate_sets for c in cs], pad_id, device)
    first = first_token_logprobs(model, hidden, rows, steps, pair, cand[:, 0])
    context = attention_mask[rows] * (torch.arange(width, device=device) <= steps[:, None])
    layers = [(layer.keys, layer.values) for layer in cache.layers]

    if cand.shape[1] == 1:
        return hidden, first

    def group_logprobs(start: int) -> torch.Tensor:
        part = slice(start, start + MAX_CANDIDATE_ROWS)
        gather, group_steps = rows[pair[part]], steps[pair[part]]
        kept = int(group_steps.max()) + 1  # the cache after the group's latest context is masked out: leave it
        group_cache = DynamicCache(ddp_cache_data=[(k[gather, :, :kept], v[gather, :, :kept]) for k, v in layers])
        # Candidate position k scores token k + 1: the last column scores nothing and is not run.
        positions = group_steps[:, None] + 1 + torch.arange(cand.shape[1] - 1, device=device)
        after, _ = forward_with_cache(
            model, group_cache, input_ids=cand[part, :-1], position_ids=positions,
            attention_mask=torch.cat([context[pair[part], :kept], cand_mask[part, :-1]], dim=1),
        )
        return (token_logprobs(after.logits, cand[part, 1:]) * cand_mask[part, 1:]).sum(-1)

    # Under autograd each group's gathered caches and activations would stay alive until backward (PPO on Wordle's
    # 400 answers: 57k pairs a minibatch, beyond 23 GiB): each group is recomputed in backward instead, so one
    # group's worth is alive at a time, for one more forward pass over the candidates.
    starts = range(0, len(pair), MAX_CANDIDATE_ROWS)
    if torch.is_grad_enabled() and len(starts) > 1:
        rest = [checkpoint(group_logprobs, start, use_reentrant=False) for start in starts]
    else:
        rest = [group_logprobs(start) for start in starts]
    return hidden, first + torch.cat(rest)


def first_token_logprobs(model, hidden, rows, steps, pair_decision, first_tokens) -> torch.Tensor:
    """log p(each pair's first candidate token) from the chunk's state at its decision's step [pairs]. Normalised
    once per decision, then read per pair: a [pairs, vocabulary] copy would be Wordle's 400 x its chunks."""
    first_logp = torch.log_softmax(model.get_output_embeddings()(hidden[rows, steps]).float(), -1)
    return first_logp[pair_decision, first_tokens]


def _chunk_tree_pass(model, pad_id: int, input_ids, attention_mask, rows, steps, pair_decision, candidate_sets):
    """`chunk_candidate_logprobs` in one pass: each row's chunk, then the candidate tokens of its decisions side by
    side after it. A candidate's token k sits at position t + 1 + k (t: its decision's step) and attends to the
    chunk's real tokens up to t and to its own candidate's earlier tokens; the chunk's tokens never see the
    candidates, so their hidden states are the chunk's own (a 4D boolean mask, see `takes_tree_mask`)."""
    device, (batch, width) = input_ids.device, input_ids.shape
    slots: list[list[tuple[int, int, int, int]]] = [[] for _ in range(batch)]  # (token, step, pair, offset)
    pair = 0
    for row, step, candidates in zip(rows.tolist(), steps.tolist(), candidate_sets):
        for candidate in candidates:
            slots[row].extend((token, step, pair, k) for k, token in enumerate(candidate))
            pair += 1
    # Padding slots: no decision (step -1), no pair (-1).
    tokens, step, owner, offset = _slot_table(slots, (pad_id, -1, -1, 0), device).unbind(-1)  # [B, S] each
    keys = torch.arange(width, device=device)
    real = attention_mask.bool()
    chunk_to_chunk = (keys[None, :] <= keys[:, None]) & real[:, None, :]  # [B, T, T]
    extra_to_chunk = (keys[None, None, :] <= step[:, :, None]) & real[:, None, :]  # [B, S, T]
    mask = torch.cat([torch.cat([chunk_to_chunk, chunk_to_chunk.new_zeros(batch, width, tokens.shape[1])], -1),
                      torch.cat([extra_to_chunk, _own_candidate_mask(owner, offset)], -1)], 1)[:, None]
    positions = torch.cat([keys.expand(batch, width), (step + 1 + offset).clamp(min=0)], 1)
    out = model.base_model(input_ids=torch.cat([input_ids, tokens], 1), attention_mask=mask, position_ids=positions,
                           use_cache=False)
    hidden, after = out.last_hidden_state[:, :width], out.last_hidden_state[:, width:]
    # Pairs are numbered in decision order, which is the slots' row-major order: first tokens come out in pair order.
    first = first_token_logprobs(model, hidden, rows, steps, pair_decision, tokens[(owner >= 0) & (offset == 0)])
    b, i = _continues(owner).nonzero(as_tuple=True)
    rest = token_logprobs(model.get_output_embeddings()(after[b, i]), tokens[b, i + 1])
    return hidden, first + torch.zeros_like(first).index_add_(0, owner[b, i], rest)


def fits_on_chunk_cache(model, choice: torch.Tensor, candidate_sets: Sequence[Sequence[list[int]]]) -> bool:
    """Whether every decision's context plus its longest candidate fits the model's positions (else the candidates
    must be scored after left-truncated contexts, as the re-ranker scores them)."""
    steps = (choice >= 0).nonzero(as_tuple=True)[1].tolist()
    positions = model_positions(model)
    return all(t + 1 + max(len(c) for c in cs) <= positions for t, cs in zip(steps, candidate_sets))


def candidate_token_logprobs(
    model, pad_id: int, prompts: Sequence[list[int]], candidates: Sequence[list[int]], device
) -> torch.Tensor:
    """Log-probability of each candidate's tokens after each prompt, [len(prompts), len(candidates)], differentiable
    (`device` given: a LoRA `AdapterView` of the base has no parameters to read it from)."""
    return candidate_scores(
        lambda *args: lm_features(model, *args), lambda f, tokens, ends: token_logprobs(f[0], tokens),
        pad_id, prompts, candidates, device,
    )


@torch.inference_mode()
def candidate_logprobs(model, pad_id: int, prompts: Sequence[list[int]], candidates: Sequence[list[int]]) -> torch.Tensor:
    """Log-probability of each candidate's tokens after each prompt: [len(prompts), len(candidates)]."""
    return candidate_token_logprobs(model, pad_id, prompts, candidates, next(model.parameters()).device)


def rerank_log_probs(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log-probability of each candidate under the re-ranker, log softmax(scores / temperature) over the last axis:
    the distribution `RerankPolicy` samples from, so the one PPO's ratio and KL must use (temperature > 0)."""
    return torch.log_softmax(scores.float() / temperature, -1)


def model_positions(model) -> int:
    """How many positions the model has."""
    return getattr(model.config, "n_positions", None) or model.config.max_position_embeddings


def prompt_budget(model, candidate_ids: Sequence[list[int]]) -> int:
    """Longest prompt (in tokens) after which every candidate still fits the model's positions."""
    return model_positions(model) - max(len(c) for c in candidate_ids)


# A task's candidate actions: one fixed set (the maze's moves), or a function giving those of the state a history
# ends in (a chess position's legal moves).
Candidates = Union[Sequence[str], Callable[[TextHistory], Sequence[str]]]


class RerankPolicy(BatchedTextPolicy):
    """Picks one of the candidate actions by a score summed over its tokens (here: the model's log-probability;
    value-based modules add their advantage).

    Args:
        model: a Hugging Face causal LM.
        tokenizer: its tokenizer.
        candidates: the action texts (each ending in a newline), or a function giving them for a history (per-state
            candidates, e.g. legal moves).
        temperature: 0 takes the best-scoring candidate; otherwise samples from softmax(scores / temperature).
        carry_cache: start each prompt from the KV cache of the longest prompt the previous call scored that it
            extends, running only its new tokens (see `turn_cache.py`).
    """

    def __init__(self, model, tokenizer, candidates: Candidates, temperature: float = 1.0, carry_cache: bool = True):
        self.model = model
        self.turn_cache = TurnCache() if carry_cache else None
        self.tokenizer = tokenizer
        per_state = callable(candidates)
        self.candidates_of: Optional[Callable[[TextHistory], Sequence[str]]] = candidates if per_state else None
        self.candidates = [] if self.candidates_of else list(candidates)
        self.temperature = temperature
        self.tokenize = TurnTokenizer(tokenizer)
        self.candidate_ids = [self.tokenize(c) for c in self.candidates]
        self.max_prompt_tokens = prompt_budget(model, self.candidate_ids) if self.candidate_ids else None

    def modules(self) -> list:
        """The networks this policy runs (put in eval mode while it scores)."""
        return [self.model]

    def features(self, ids, mask, positions, caches, last_only: bool) -> tuple[Features, tuple]:
        """What the per-token score reads at each position (here the model's logits), and the KV caches."""
        return lm_features(self.model, ids, mask, positions, caches, last_only)

    def token_scores(self, features: Features, tokens: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        """Per-token score whose sum over a candidate ranks it, [B, T]: here the model's log-probability (`ends`,
        which tokens end their candidate, is for scores that count only there)."""
        return token_logprobs(features[0], tokens)

    def scores(self, histories: Sequence[TextHistory]) -> torch.Tensor:
        """Score of each fixed candidate after each history, [len(histories), len(candidates)]."""
        unique, rows = unique_rows(encode_histories(histories, self.tokenize, self.max_prompt_tokens))
        with eval_mode(*self.modules()), torch.inference_mode(), carried(self.turn_cache, self.modules()):
            out = candidate_scores(
                self.features, self.token_scores, self.tokenizer.pad_token_id, unique, self.candidate_ids,
                next(self.model.parameters()).device, self.turn_cache, tree=takes_tree_mask(*self.modules()),
            )
        return out[torch.tensor(rows, device=out.device)]

    def state_scores(self, histories: Sequence[TextHistory]) -> tuple[list[list[str]], torch.Tensor]:
        """Per-state candidates: each history's candidate texts, and their scores [len(histories), most candidates],
        padded with -inf (never chosen). Histories with the same prompt and candidates are scored once."""
        texts = [list(self.candidates_of(h)) for h in histories]
        cand_ids = [[self.tokenize(c) for c in cands] for cands in texts]
        out = torch.full((len(histories), max(1, max(map(len, texts)))), float("-inf"))
        scored = [row for row, cands in enumerate(cand_ids) if cands]
        if not scored:
            return texts, out
        budget = prompt_budget(self.model, [c for row in scored for c in cand_ids[row]])
        prompts = encode_histories([histories[row] for row in scored], self.tokenize, budget)
        index: dict[tuple, int] = {}
        inverse = [index.setdefault((tuple(p), tuple(map(tuple, cand_ids[row]))), len(index))
                   for p, row in zip(prompts, scored)]
        with eval_mode(*self.modules()), torch.inference_mode(), carried(self.turn_cache, self.modules()):
            per_state = state_candidate_scores(
                self.features, self.token_scores, self.tokenizer.pad_token_id, [list(p) for p, _ in index],
                [[list(c) for c in cands] for _, cands in index], next(self.model.parameters()).device,
                self.turn_cache, tree=takes_tree_mask(*self.modules()),
            )
        for row, k in zip(scored, inverse):
            out[row, : len(texts[row])] = per_state[k].float().cpu()
        return texts, out

    def act(self, histories, done=None, seeds=None):
        live = live_indices(histories, done)
        results: list[Optional[TextHistory]] = [None] * len(histories)
        if not live:
            return results
        if self.candidates_of is None:
            texts, scores = [self.candidates] * len(live), self.scores([histories[i] for i in live]).cpu()
        else:
            texts, scores = self.state_scores([histories[i] for i in live])
        if self.temperature > 0:
            seeds = list(seeds) if seeds is not None else list(range(len(histories)))
            u = row_uniform(torch.tensor([seeds[i] for i in live]), 0, scores.shape[1])
            # Gumbel-max: a sample of rerank_log_probs(scores, temperature)'s distribution.
            scores = rerank_log_probs(scores, self.temperature) - torch.log(-torch.log(u)).float()
        for row, (i, choice) in enumerate(zip(live, scores.argmax(dim=-1).tolist())):
            # A state without candidates (none of the task's actions applies) gets an empty turn.
            action = texts[row][choice] if texts[row] else END_OF_TURN
            results[i] = histories[i] + (Text(action, True),)
        return results
