"""Re-ranking decoding: score a task's fixed candidate actions (the maze's four moves) with the model."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from lmrl_lightning.data.tokenize import TurnTokenizer
from lmrl_lightning.env import BatchedTextPolicy, Text, TextHistory
from lmrl_lightning.models.backbone import forward_with_cache
from lmrl_lightning.policies.sampling import (
    encode_histories, eval_mode, left_pad, live_indices, row_uniform, unique_rows,
)


Features = tuple[torch.Tensor, ...]
# Most (prompt, candidate) rows scored at once: bounds the memory of the repeated KV caches.
MAX_CANDIDATE_ROWS = 4096


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


def candidate_scores(
    features: FeatureFn,
    token_scores: Callable[[Features, torch.Tensor], torch.Tensor],
    pad_id: int,
    prompts: Sequence[list[int]],
    candidates: Sequence[list[int]],
    device,
) -> torch.Tensor:
    """Sum over each candidate's tokens of a per-token score, after each prompt: [len(prompts), len(candidates)].

    Each prompt runs once (left-padded); its KV cache is then repeated once per candidate and only the
    candidates' tokens run on top of it, right-padded. Prompts go in groups so that the repeated caches hold at
    most MAX_CANDIDATE_ROWS rows (Wordle: 400 words). Differentiable (PPO's update scores candidates with it);
    decoding callers run it under `torch.inference_mode`. `features(ids, mask, positions, caches, last_only)` gives
    per-position feature tensors and the KV caches after `ids` (a tuple: one per network it runs);
    `token_scores(features, tokens)` scores the token that follows each position: [B, T].
    """
    group = max(1, MAX_CANDIDATE_ROWS // len(candidates))
    return torch.cat([
        _group_scores(features, token_scores, pad_id, prompts[i:i + group], candidates, device)
        for i in range(0, len(prompts), group)
    ])


def _group_scores(features: FeatureFn, token_scores, pad_id: int, prompts, candidates, device) -> torch.Tensor:
    n_prompts, n_candidates = len(prompts), len(candidates)
    ids, mask, positions = left_pad(prompts, pad_id, device)
    last, caches = features(ids, mask, positions, None, True)
    for cache in caches:
        cache.batch_repeat_interleave(n_candidates)
    length = max(len(c) for c in candidates)
    cand = torch.full((n_candidates, length), pad_id, dtype=torch.long, device=device)
    cand_mask = torch.zeros((n_candidates, length), dtype=torch.long, device=device)
    for j, c in enumerate(candidates):
        cand[j, : len(c)] = torch.tensor(c, device=device)
        cand_mask[j, : len(c)] = 1
    cand, cand_mask = cand.repeat(n_prompts, 1), cand_mask.repeat(n_prompts, 1)
    full_mask = torch.cat([mask.repeat_interleave(n_candidates, 0), cand_mask], dim=1)
    cand_positions = positions[:, -1:].repeat_interleave(n_candidates, 0) + 1 + torch.arange(length, device=device)
    after, _ = features(cand, full_mask, cand_positions, caches, False)
    # The prompt's last position scores the first candidate token; candidate position k scores token k + 1.
    first = token_scores(tuple(f[:, -1:].repeat_interleave(n_candidates, 0) for f in last), cand[:, :1])
    rest = token_scores(tuple(f[:, :-1] for f in after), cand[:, 1:]) * cand_mask[:, 1:]
    return (first.sum(-1) + rest.sum(-1)).view(n_prompts, n_candidates)


def candidate_token_logprobs(
    model, pad_id: int, prompts: Sequence[list[int]], candidates: Sequence[list[int]], device
) -> torch.Tensor:
    """Log-probability of each candidate's tokens after each prompt, [len(prompts), len(candidates)], differentiable
    (`device` given: a LoRA `AdapterView` of the base has no parameters to read it from)."""
    return candidate_scores(
        lambda *args: lm_features(model, *args), lambda f, tokens: token_logprobs(f[0], tokens),
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


def prompt_budget(model, candidate_ids: Sequence[list[int]]) -> int:
    """Longest prompt (in tokens) after which every candidate still fits the model's positions."""
    n_positions = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    return n_positions - max(len(c) for c in candidate_ids)


class RerankPolicy(BatchedTextPolicy):
    """Picks one of a fixed set of candidate actions by a score summed over its tokens (here: the model's
    log-probability; value-based modules add their advantage).

    Args:
        model: a Hugging Face causal LM.
        tokenizer: its tokenizer.
        candidates: the action texts (each ending in a newline).
        temperature: 0 takes the best-scoring candidate; otherwise samples from softmax(scores / temperature).
    """

    def __init__(self, model, tokenizer, candidates: Sequence[str], temperature: float = 1.0):
        self.model = model
        self.tokenizer = tokenizer
        self.candidates = list(candidates)
        self.temperature = temperature
        self.tokenize = TurnTokenizer(tokenizer)
        self.candidate_ids = [self.tokenize(c) for c in self.candidates]
        self.max_prompt_tokens = prompt_budget(model, self.candidate_ids)

    def modules(self) -> list:
        """The networks this policy runs (put in eval mode while it scores)."""
        return [self.model]

    def features(self, ids, mask, positions, caches, last_only: bool) -> tuple[Features, tuple]:
        """What the per-token score reads at each position (here the model's logits), and the KV caches."""
        return lm_features(self.model, ids, mask, positions, caches, last_only)

    def token_scores(self, features: Features, tokens: torch.Tensor) -> torch.Tensor:
        """Per-token score whose sum over a candidate ranks it, [B, T]: here the model's log-probability."""
        return token_logprobs(features[0], tokens)

    def scores(self, histories: Sequence[TextHistory]) -> torch.Tensor:
        """Score of each candidate after each history, [len(histories), len(candidates)]."""
        unique, rows = unique_rows(encode_histories(histories, self.tokenize, self.max_prompt_tokens))
        with eval_mode(*self.modules()), torch.inference_mode():
            out = candidate_scores(
                self.features, self.token_scores, self.tokenizer.pad_token_id, unique, self.candidate_ids,
                next(self.model.parameters()).device,
            )
        return out[torch.tensor(rows, device=out.device)]

    def act(self, histories, done=None, seeds=None):
        live = live_indices(histories, done)
        results: list[Optional[TextHistory]] = [None] * len(histories)
        if not live:
            return results
        scores = self.scores([histories[i] for i in live]).cpu()
        if self.temperature > 0:
            seeds = list(seeds) if seeds is not None else list(range(len(histories)))
            u = row_uniform(torch.tensor([seeds[i] for i in live]), 0, len(self.candidates))
            # Gumbel-max: a sample of rerank_log_probs(scores, temperature)'s distribution.
            scores = rerank_log_probs(scores, self.temperature) - torch.log(-torch.log(u)).float()
        for i, choice in zip(live, scores.argmax(dim=-1).tolist()):
            results[i] = histories[i] + (Text(self.candidates[choice], True),)
        return results
