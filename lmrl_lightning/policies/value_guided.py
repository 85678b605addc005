"""Value-guided decoding (spec §3.4, §3.5): pi(a|s) proportional to pi_beta(a|s) exp(beta * guidance).

Token by token the decoder samples from `logits_pi_beta + beta * guidance(h)`, where h is a value trunk's last hidden
state; re-ranking scores each candidate by the sum over its tokens of `log pi_beta + beta * guidance`, the
sequence-level form of the same policy, or (`Decoding.candidate_value` ``last``) by its log pi_beta plus beta times
the guidance at its last token, the value of the action as a whole. The module supplies the trunk and its guidance (MC: Q; ILQL:
min(Q1, Q2) - V) as a `ValueGuidance`, so that decoders know nothing about algorithms.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from lmrl_lightning.models.backbone import forward_with_cache
from lmrl_lightning.policies.rerank import Candidates, RerankPolicy, lm_features, token_logprobs
from lmrl_lightning.policies.sampling import LMPolicy


@dataclasses.dataclass(frozen=True)
class ValueGuidance:
    """What a value-based module adds to its policy's scores when decoding.

    Args:
        trunk: the causal LM whose last hidden state the values read (run beside the policy, with its own KV cache).
        values: hidden states [..., d] -> the value of every next token, [..., V].
        values_at: (hidden [..., d], tokens [...]) -> the value of the given next tokens only, [...].
        action_values_at: (hidden, tokens) -> Q of the given next tokens, without any baseline V(s) that `values`
            subtracts (ILQL): re-ranking's value of a whole candidate at its last token (`candidate_value: last`).
        beta: weight of the values against the policy's log-probabilities.
    """

    trunk: torch.nn.Module
    values: Callable[[torch.Tensor], torch.Tensor]
    values_at: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    action_values_at: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    beta: float


def trunk_forward(trunk, ids, mask, positions, cache):
    """The value trunk's last hidden states after `ids`, continuing from `cache`, and its new KV cache."""
    out, cache = forward_with_cache(trunk.base_model, cache, input_ids=ids, attention_mask=mask, position_ids=positions)
    return out.last_hidden_state, cache


class ValueGuidedPolicy(LMPolicy):
    """Token-by-token sampling from logits_pi_beta + beta * values(h_trunk), with a KV cache on both networks."""

    def __init__(
        self, model, tokenizer, temperature=1.0, top_k=0, max_new_tokens=16, carry_cache=True, *,
        guidance: ValueGuidance,
    ):
        super().__init__(model, tokenizer, temperature, top_k, max_new_tokens, carry_cache)
        self.guidance = guidance

    def modules(self) -> list:
        return [self.model, self.guidance.trunk]

    def next_token_logits(self, ids, mask, positions, state):
        policy_state, trunk_state = state if state is not None else (None, None)
        logits, policy_state = super().next_token_logits(ids, mask, positions, policy_state)
        hidden, trunk_state = trunk_forward(self.guidance.trunk, ids, mask, positions, trunk_state)
        guided = logits.float() + self.guidance.beta * self.guidance.values(hidden[:, -1])
        return guided, (policy_state, trunk_state)

    def reorder(self, state, rows):
        return tuple(super(ValueGuidedPolicy, self).reorder(s, rows) for s in state)

    def caches(self, state) -> tuple:
        return state

    def state_of(self, caches):
        return tuple(caches)


class ValueRerankPolicy(RerankPolicy):
    """Re-ranks candidates (fixed, or per state) by the sum over their tokens of log pi_beta, plus beta times the
    value of the candidate: `candidate_value` ``sum``: the sum over its tokens of values_at(h_trunk) (the
    sequence-level form of token-by-token guidance); ``last``: Q at its last token only (`action_values_at`), the value
    of the whole action once it is written: log pi_beta(a|s) + beta * Q(s, a), the spec's policy with the action as
    one step (for ILQL the same ranking and softmax as beta * (Q(s, a) - V(s)): V(s) is shared by every candidate of
    a state)."""

    def __init__(
        self, model, tokenizer, candidates: Candidates, temperature=1.0, carry_cache=True, *, guidance: ValueGuidance,
        candidate_value: str = "sum",
    ):
        super().__init__(model, tokenizer, candidates, temperature, carry_cache)
        self.guidance = guidance
        self.candidate_value = candidate_value

    def modules(self) -> list:
        return [self.model, self.guidance.trunk]

    def features(self, ids, mask, positions, caches, last_only):
        policy_caches, trunk_cache = (caches[:1], caches[1]) if caches else (None, None)
        (logits,), policy_caches = lm_features(self.model, ids, mask, positions, policy_caches, last_only)
        hidden, trunk_cache = trunk_forward(self.guidance.trunk, ids, mask, positions, trunk_cache)
        return (logits, hidden[:, -1:] if last_only else hidden), (*policy_caches, trunk_cache)

    def token_scores(self, features, tokens, ends):
        logits, hidden = features
        if self.candidate_value == "last":
            values = self.guidance.action_values_at(hidden, tokens) * ends
        else:
            values = self.guidance.values_at(hidden, tokens)
        return token_logprobs(logits, tokens) + self.guidance.beta * values
