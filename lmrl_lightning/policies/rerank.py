"""Re-ranking decoding: score a task's fixed candidate actions (the maze's four moves) with the model."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from lmrl_lightning.data.tokenize import TurnTokenizer
from lmrl_lightning.env import BatchedTextPolicy, Text, TextHistory
from lmrl_lightning.policies.sampling import encode_histories, eval_mode, left_pad, row_uniform, unique_rows


def next_token_logprobs(model, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """log p(token p+1 | tokens <= p) at each position p of a batch: [B, W-1]."""
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
    return torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)


@torch.inference_mode()
def candidate_scores(
    token_scores: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    pad_id: int,
    prompts: Sequence[list[int]],
    candidates: Sequence[list[int]],
) -> torch.Tensor:
    """Sum over each candidate's tokens of a per-token score, after each prompt: [len(prompts), len(candidates)].

    All prompt x candidate sequences run as one left-padded batch; `token_scores(ids, mask, positions)` gives
    [B, W-1], the score at position p of token p+1.
    """
    rows = [p + c for p in prompts for c in candidates]
    ids, mask, positions = left_pad(rows, pad_id, "cpu")
    scores = token_scores(ids, mask, positions)
    device = scores.device
    lengths = torch.tensor([len(c) for c in candidates] * len(prompts), device=device)
    width = ids.shape[1]
    # every row ends at the last column (left padding)
    in_candidate = torch.arange(width - 1, device=device)[None, :] >= (width - 1 - lengths)[:, None]
    return (scores * in_candidate).sum(-1).view(len(prompts), len(candidates))


def candidate_logprobs(model, pad_id: int, prompts: Sequence[list[int]], candidates: Sequence[list[int]]) -> torch.Tensor:
    """Log-probability of each candidate's tokens after each prompt: [len(prompts), len(candidates)]."""
    device = next(model.parameters()).device
    return candidate_scores(
        lambda ids, mask, pos: next_token_logprobs(model, ids.to(device), mask.to(device), pos.to(device)),
        pad_id, prompts, candidates,
    )


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
        n_positions = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
        self.max_prompt_tokens = n_positions - max(len(c) for c in self.candidate_ids)

    def modules(self) -> list:
        """The networks this policy runs (put in eval mode while it scores)."""
        return [self.model]

    def token_scores(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Per-token score whose sum over a candidate ranks it, [B, W-1]: here the model's log-probability."""
        device = next(self.model.parameters()).device
        return next_token_logprobs(self.model, ids.to(device), mask.to(device), positions.to(device))

    def scores(self, histories: Sequence[TextHistory]) -> torch.Tensor:
        """Score of each candidate after each history, [len(histories), len(candidates)]."""
        unique, rows = unique_rows(encode_histories(histories, self.tokenize, self.max_prompt_tokens))
        with eval_mode(*self.modules()):
            out = candidate_scores(self.token_scores, self.tokenizer.pad_token_id, unique, self.candidate_ids)
        return out[torch.tensor(rows, device=out.device)]

    def act(self, histories, done=None, seeds=None):
        done = list(done) if done is not None else [h is None for h in histories]
        live = [i for i, (h, d) in enumerate(zip(histories, done)) if h is not None and not d]
        results: list[Optional[TextHistory]] = [None] * len(histories)
        if not live:
            return results
        scores = self.scores([histories[i] for i in live]).cpu()
        if self.temperature > 0:
            seeds = list(seeds) if seeds is not None else list(range(len(histories)))
            u = row_uniform(torch.tensor([seeds[i] for i in live]), 0, len(self.candidates))
            scores = scores / self.temperature - torch.log(-torch.log(u)).float()
        for i, choice in zip(live, scores.argmax(dim=-1).tolist()):
            results[i] = histories[i] + (Text(self.candidates[choice], True),)
        return results
