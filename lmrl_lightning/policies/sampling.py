"""Batched turn-by-turn decoding with a KV cache, and per-row randomness that does not depend on batching.

Each row's random numbers are a hash of (its seed, decoding step, vocabulary index), so an episode samples the
same tokens whether it shares its batch with 1 or 500 others, on any DDP rank.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from lmrl_lightning.data.tokenize import TurnTokenizer
from lmrl_lightning.env import END_OF_TURN, BatchedTextPolicy, Text, TextHistory
from lmrl_lightning.models.backbone import forward_with_cache
from lmrl_lightning.models.tokenizer import end_of_turn_id
from lmrl_lightning.policies.turn_cache import TurnCache, carried

_M32 = 0xFFFFFFFF
# Distinct generated turns whose action text an `LMPolicy` keeps (a few MB at most).
ACTION_TEXT_CACHE_SIZE = 65_536


def _mix32_(x: torch.Tensor) -> torch.Tensor:
    """An integer hash (lowbias32) of int64 tensors holding 32-bit values, in place (the decoder hashes a
    [rows, vocabulary] block every step: no temporaries beyond the shifts); overflow wraps, low bits stay exact."""
    x ^= x >> 16
    x.mul_(0x7FEB352D).bitwise_and_(_M32)
    x ^= x >> 15
    x.mul_(0x846CA68B).bitwise_and_(_M32)
    x ^= x >> 16
    return x


@functools.lru_cache(maxsize=8)
def _column_offsets(n: int) -> torch.Tensor:
    """Each vocabulary column's offset in the hash (the same every step, so built once per width)."""
    return torch.arange(n, dtype=torch.long) * 0x9E3779B9


def row_uniform(seeds: torch.Tensor, step: int, n: int) -> torch.Tensor:
    """Uniform numbers in (0, 1), shape [len(seeds), n], a pure function of (seed, step, column)."""
    step_hash = _mix32_(torch.tensor(step + 0x51ED27, dtype=torch.long))
    base = _mix32_((seeds.long() & _M32) ^ step_hash)[:, None]
    x = _column_offsets(n).to(seeds.device) + base
    x.bitwise_and_(_M32).bitwise_xor_(base >> 7)
    return _mix32_(x).double().add_(0.5).div_(2**32)


def sample_from_logits(
    logits: torch.Tensor, seeds: torch.Tensor, step: int, temperature: float = 1.0, top_k: int = 0
) -> torch.Tensor:
    """Greedy (temperature 0) or Gumbel-max sampling with per-row noise; optional top-k."""
    logits = logits.float()
    if temperature <= 0:
        return logits.argmax(dim=-1)
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    gumbel = row_uniform(seeds.cpu(), step, logits.shape[-1]).log_().neg_().log_().neg_().to(logits.device)
    return (logits / temperature + gumbel.float()).argmax(dim=-1)


@contextmanager
def eval_mode(*modules: torch.nn.Module) -> Iterator[None]:
    """Run `modules` in eval mode (no dropout), then restore their training flags."""
    modes = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def encode_histories(
    histories: Sequence[TextHistory], tokenize: TurnTokenizer, max_tokens: int
) -> list[list[int]]:
    """Tokenise each history turn by turn (as in training; an action's sampled tokens where it carries them) and
    keep its last `max_tokens` tokens."""
    out = []
    for h in histories:
        ids = [i for t in h for i in tokenize.segment(t)]
        out.append(ids[-max_tokens:] if max_tokens > 0 else [])
    return out


def unique_rows(rows: Sequence[list[int]]) -> tuple[list[list[int]], list[int]]:
    """The distinct rows, and for each input row the index of its distinct row."""
    index: dict[tuple[int, ...], int] = {}
    inverse = [index.setdefault(tuple(r), len(index)) for r in rows]
    return [list(r) for r in index], inverse


def left_pad(rows: Sequence[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded ids, attention mask and position ids (counting real tokens only)."""
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def live_indices(histories: Sequence[Optional[TextHistory]], done: Optional[Sequence[bool]] = None) -> list[int]:
    """The batch rows still playing: a history that is present and not done (`act`'s contract)."""
    done = list(done) if done is not None else [h is None for h in histories]
    return [i for i, (h, d) in enumerate(zip(histories, done)) if h is not None and not d]


def prefill(run, turn_cache: Optional[TurnCache], prompts: Sequence[list[int]], pad_id: int, device):
    """Run the token rows `prompts` through `run`, each continuing from the longest prefix of it that `turn_cache`
    holds (None: every prompt whole). `run(ids, mask, positions, caches)` runs one left-padded batch on top of
    `caches` (a tuple of KV caches, one per network; None: empty) and returns (outputs: a tuple of tensors with
    one row per batch row, the caches after it). Returns the outputs, the caches, the attention mask of every
    cached column [rows, width] and each row's last position [rows, 1], rows in the order of `prompts`."""
    found = [turn_cache.longest_prefix(p) for p in prompts] if turn_cache is not None else []
    continued = [i for i, (n, _) in enumerate(found) if n > 0]
    # Prompts that continue a cached sequence run their new tokens only; the others run whole, in a pass of their
    # own (one pass for both would pad every row to the longest past plus the longest new part).
    fresh = [i for i in range(len(prompts)) if not found or found[i][0] == 0]
    parts = []
    if fresh:
        ids, mask, positions = left_pad([prompts[i] for i in fresh], pad_id, device)
        parts.append((*run(ids, mask, positions, None), mask, positions[:, -1:]))
    if continued:
        cached = [found[i] for i in continued]
        ids, mask, positions = left_pad([prompts[i][n:] for i, (n, _) in zip(continued, cached)], pad_id, device)
        lengths = torch.tensor([n for n, _ in cached], device=device)[:, None]
        width = int(lengths.max())  # the past is left-padded to the longest cached prefix
        mask = torch.cat([(torch.arange(width, device=device) >= width - lengths).long(), mask], dim=1)
        positions = positions + lengths  # the new tokens follow their prefix
        parts.append((*run(ids, mask, positions, tuple(turn_cache.past(cached, device))), mask, positions[:, -1:]))
    if len(parts) == 1:
        return parts[0]
    outputs, caches, mask, last_position = _merge(parts)
    back = torch.empty(len(prompts), dtype=torch.long, device=device)  # merged row of each prompt
    back[torch.tensor(fresh + continued, device=device)] = torch.arange(len(prompts), device=device)
    for cache in caches:
        cache.reorder_cache(back)
    return tuple(o[back] for o in outputs), caches, mask[back], last_position[back]


def _merge(parts) -> tuple[tuple, tuple, torch.Tensor, torch.Tensor]:
    """One batch of `prefill`'s (outputs, caches, mask, last positions) from several, each part's caches and mask
    left-padded to the widest."""
    width = max(mask.shape[1] for _, _, mask, _ in parts)
    outputs = tuple(torch.cat(same) for same in zip(*[p[0] for p in parts]))
    mask = torch.cat([F.pad(m, (width - m.shape[1], 0)) for _, _, m, _ in parts])
    caches = []
    for same_cache in zip(*[p[1] for p in parts]):
        layers = []
        for same_layer in zip(*[cache.layers for cache in same_cache]):
            keys = torch.cat([F.pad(layer.keys, (0, 0, width - layer.keys.shape[2], 0)) for layer in same_layer])
            values = torch.cat([F.pad(layer.values, (0, 0, width - layer.values.shape[2], 0)) for layer in same_layer])
            layers.append((keys, values))
        caches.append(DynamicCache(ddp_cache_data=layers))
    return outputs, tuple(caches), mask, torch.cat([p[3] for p in parts])


class _LiveRows:
    """The rows of a `generate` call still writing their turn, in the order of the decoding state's batch.

    The attention mask is allocated once for the prompt and every token a turn may add (ones), and `mask` is a view
    of its first columns: no mask is rebuilt per generated token.
    """

    def __init__(
        self, rows: torch.Tensor, seeds: torch.Tensor, full_mask: torch.Tensor, width: int, positions: torch.Tensor
    ):
        self.rows = rows  # each live row's index among the call's prompts
        self.seeds = seeds
        self.full_mask = full_mask
        self.width = width  # columns of `full_mask` in use: the prompt and the tokens fed so far
        self.positions = positions  # [rows, 1]: position of the last token fed

    @classmethod
    def start(
        cls, prompt_mask: torch.Tensor, last_position: torch.Tensor, seeds: torch.Tensor, max_new_tokens: int
    ) -> "_LiveRows":
        """Every row of a call, after its (left-padded) prompt."""
        n, width = prompt_mask.shape
        full_mask = torch.ones((n, width + max_new_tokens), dtype=prompt_mask.dtype, device=prompt_mask.device)
        full_mask[:, :width] = prompt_mask
        return cls(torch.arange(n, device=prompt_mask.device), seeds, full_mask, width, last_position)

    @property
    def mask(self) -> torch.Tensor:
        """The attention mask of every token fed so far."""
        return self.full_mask[:, : self.width]

    def feed_one(self) -> None:
        """One more token per row goes into the cache."""
        self.width += 1
        self.positions = self.positions + 1

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the rows at `keep` (indices into the current live rows)."""
        self.rows, self.full_mask, self.positions = self.rows[keep], self.full_mask[keep], self.positions[keep]
        self.seeds = self.seeds[keep.cpu()]


class LMPolicy(BatchedTextPolicy):
    """Samples one turn per history from a causal LM: prompt = the history, stop at the newline token.

    Args:
        model: a Hugging Face causal LM.
        tokenizer: its tokenizer.
        temperature: 0 for greedy decoding; 1 samples from the model (the paper's evaluation).
        top_k: keep the k most likely tokens before sampling (0: all).
        max_new_tokens: longest action; a turn cut here gets its newline appended.
        carry_cache: start each prompt from the KV cache of the longest sequence the previous call ran that it
            extends (its last prompt and turn), running only the new tokens (see `turn_cache.py`).
    """

    def __init__(
        self, model, tokenizer, temperature: float = 1.0, top_k: int = 0, max_new_tokens: int = 16,
        carry_cache: bool = True,
    ):
        self.model = model
        self.turn_cache = TurnCache() if carry_cache else None
        self.tokenizer = tokenizer
        self.temperature = temperature
        self.top_k = top_k
        self.max_new_tokens = max_new_tokens
        self.tokenize = TurnTokenizer(tokenizer)
        self.eot = end_of_turn_id(tokenizer)
        n_positions = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings")
        self.max_prompt_tokens = n_positions - max_new_tokens
        vocab = model.get_output_embeddings().weight.shape[0]
        banned = {t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id) if t is not None}
        # Special tokens and padded embedding rows are never actions.
        self.logit_bias = torch.zeros(vocab)
        self.logit_bias[sorted(banned)] = float("-inf")
        self.logit_bias[len(tokenizer):] = float("-inf")
        self._action_texts: dict[tuple[int, ...], tuple[str, Optional[tuple[int, ...]]]] = {}

    def modules(self) -> list:
        """The networks this policy runs (put in eval mode while it decodes)."""
        return [self.model]

    def next_token_logits(self, ids, mask, positions, state):
        """Logits for the token after the last column, and the decoding state (the KV cache) after `ids`."""
        out, cache = forward_with_cache(
            self.model, state, input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1
        )
        return out.logits[:, -1], cache

    def reorder(self, state, rows: torch.Tensor):
        """The decoding state with its batch rows gathered by `rows` (one copy per episode of each prompt)."""
        state.reorder_cache(rows)
        return state

    def caches(self, state) -> tuple:
        """The KV caches a decoding state is made of."""
        return (state,)

    def state_of(self, caches: Sequence) -> Any:
        """The decoding state made of `caches` (as `caches` returns them)."""
        return caches[0]

    @torch.inference_mode()
    def generate(self, prompts: Sequence[list[int]], seeds: Sequence[int]) -> list[list[int]]:
        """Generated token ids per row, each ending with the end-of-turn token when it was produced."""
        with eval_mode(*self.modules()), carried(self.turn_cache, self.modules()):
            tokens = self._generate(prompts, seeds)
        rows = []
        for row in tokens:
            cut = row.index(self.eot) + 1 if self.eot in row else len(row)
            rows.append(row[:cut])
        return rows

    def _generate(self, prompts: Sequence[list[int]], seeds: Sequence[int]) -> list[list[int]]:
        device = next(self.model.parameters()).device
        logits, state, live = self._prefill(prompts, seeds, device)
        tokens = torch.full((len(prompts), self.max_new_tokens), self.tokenizer.pad_token_id, device=device)
        bias = self.logit_bias.to(device)
        for step in range(self.max_new_tokens):
            token = sample_from_logits(logits.float() + bias, live.seeds, step, self.temperature, self.top_k)
            tokens[live.rows, step] = token
            writing = token != self.eot
            if step == self.max_new_tokens - 1 or not bool(writing.any()):
                self._keep_rows(prompts, tokens, state, live, torch.arange(len(live.rows), device=device), step)
                break
            if not bool(writing.all()):
                # Rows that ended their turn leave the batch: the forward passes and the noise of the remaining
                # steps are computed for the rows still writing only (most turns are short, a few run long).
                self._keep_rows(prompts, tokens, state, live, (~writing).nonzero().squeeze(1), step)
                keep = writing.nonzero().squeeze(1)
                state, token = self.reorder(state, keep), token[keep]
                live.select(keep)
            live.feed_one()
            logits, state = self.next_token_logits(token[:, None], live.mask, live.positions, state)
        return tokens.tolist()

    def _keep_rows(self, prompts, tokens: torch.Tensor, state, live: _LiveRows, rows: torch.Tensor, step: int) -> None:
        """Hand the decoding state's `rows` (their prompt and the `step` tokens fed after it) to the turn cache."""
        if self.turn_cache is None or len(rows) == 0:
            return
        prompt_rows = live.rows[rows].tolist()
        fed = tokens[live.rows[rows], :step].tolist()
        sequences = [prompts[r] + f for r, f in zip(prompt_rows, fed)]
        self.turn_cache.keep(self.caches(state), rows, live.mask[rows].bool(), sequences)

    def _prefill(
        self, prompts: Sequence[list[int]], seeds: Sequence[int], device: torch.device
    ) -> tuple[torch.Tensor, Any, _LiveRows]:
        """Next-token logits after each prompt, the decoding state and the rows' bookkeeping."""
        # Episodes often share a context (every maze episode at the same cell, every Wordle opening): run each
        # distinct prompt once, then give every row its own copy of the cache to sample from.
        unique, inverse = unique_rows(prompts)

        def run(ids, mask, positions, caches):
            logits, state = self.next_token_logits(ids, mask, positions, self.state_of(caches) if caches else None)
            return (logits,), self.caches(state)

        (logits,), caches, mask, last_position = prefill(run, self.turn_cache, unique, self.tokenizer.pad_token_id,
                                                         device)
        state = self.state_of(caches)
        if len(unique) < len(prompts):
            rows = torch.tensor(inverse, device=device)
            state, logits = self.reorder(state, rows), logits[rows]
            mask, last_position = mask[rows], last_position[rows]
        seed_t = torch.tensor(list(seeds), dtype=torch.long)
        return logits, state, _LiveRows.start(mask, last_position, seed_t, self.max_new_tokens)

    def act(self, histories, done=None, seeds=None):
        live = live_indices(histories, done)
        results: list[Optional[TextHistory]] = [None] * len(histories)
        if not live:
            return results
        seeds = list(seeds) if seeds is not None else list(range(len(histories)))
        prompts = encode_histories([histories[i] for i in live], self.tokenize, self.max_prompt_tokens)
        for i, ids in zip(live, self.generate(prompts, [seeds[i] for i in live])):
            results[i] = histories[i] + (Text(self.action_text(ids), True, self.sampled_tokens(ids)),)
        return results

    def action_text(self, ids: list[int]) -> str:
        """The action a generated turn stands for: its text up to the first newline, which a turn cut at
        `max_new_tokens` gets appended."""
        # Policies repeat their turns ("move left\n" thousands of times a rollout): decode each distinct one once.
        return self._decoded(ids)[0]

    def sampled_tokens(self, ids: list[int]) -> Optional[tuple[int, ...]]:
        """`ids` when they spell exactly their action text but are not its encoding (a non-canonical
        tokenisation), else None: a turn cut at `max_new_tokens` (its newline appended) or at a newline inside it
        keeps its text's encoding."""
        return self._decoded(ids)[1]

    def _decoded(self, ids: list[int]) -> tuple[str, Optional[tuple[int, ...]]]:
        key = tuple(ids)
        decoded = self._action_texts.get(key)
        if decoded is None:
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            action = text if text.endswith(END_OF_TURN) else text.split(END_OF_TURN, 1)[0] + END_OF_TURN
            sampled = key if text == action and list(ids) != self.tokenize(action) else None
            if len(self._action_texts) >= ACTION_TEXT_CACHE_SIZE:  # a random model's turns rarely repeat
                self._action_texts.clear()
            decoded = self._action_texts[key] = (action, sampled)
        return decoded
