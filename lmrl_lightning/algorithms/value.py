"""Shared machinery of the value-based algorithms (MC Returns, ILQL; spec §3.1, §3.4, §3.5).

A value module holds three things:
  `model`: the frozen BC policy pi_beta (loaded from `init_from`), used only to decode;
  `trunk`: a trainable copy of it that the value losses train (no LM loss); heads read its last hidden state;
  heads: defined by the subclass.
It decodes with `logits_pi_beta + beta * guidance(h)` at every token, where `guidance` is the subclass's value
of each next token (MC: Q; ILQL: min(Q1, Q2) - V), and re-ranks fixed candidates by
`sum over the action's tokens of (log pi_beta + beta * guidance)`, the sequence-level form of the same policy
(the decoders are in `lmrl_lightning.policies.value_guided`; `value_guidance` hands them the trunk and values).

Index convention (spec §1.6): arrays of length T-1, index t is the prediction at position t of token t+1; the
"action steps" are the indices where token t+1 is an action token.
"""
from __future__ import annotations

from typing import Optional

import torch

from lmrl_lightning.algorithms.base import LMRLModule
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.validation import as_settings
from lmrl_lightning.algorithms.settings import DiscountPer, ValueLearning
from lmrl_lightning.policies import ValueGuidance
from lmrl_lightning.validation import check_number
from lmrl_lightning.algorithms.packing import batch_hidden


# ---- targets ------------------------------------------------------------------------------------------------------
def step_discounts(next_action_index: torch.Tensor, gamma: float, per: DiscountPer) -> torch.Tensor:
    """Discount between each action step and the next one, [B, T-1].

    per="token" (the paper's code): gamma at every action token. per="turn": gamma only where the action ends
    (the next action step is not the very next index, or there is none in the chunk), 1 inside an action.
    """
    if per == "token":
        return torch.full(next_action_index.shape, gamma, device=next_action_index.device)
    if per != "turn":
        raise ValueError(f"discount per {per!r}: valid: token, turn")
    idx = torch.arange(next_action_index.shape[1], device=next_action_index.device)
    turn_end = next_action_index != idx + 1
    gammas = torch.full(turn_end.shape, gamma, device=turn_end.device)
    return torch.where(turn_end, gammas, torch.ones_like(gammas))


def later_returns(lengths: torch.Tensor, rewards: torch.Tensor, gamma: float, per: DiscountPer) -> torch.Tensor:
    """Discounted return from the first token of the next chunk's action to the episode's end, [B].

    lengths, rewards: [B, F] token count and reward of each later action (zero-padded: a zero-length action adds
    nothing). Rewards sit on an action's last token, so per token an action of n tokens contributes
    gamma^(n-1) * r and passes on gamma^n; per turn it contributes r and passes on gamma.
    """
    ret = torch.zeros(lengths.shape[0], device=rewards.device)
    present = lengths > 0
    for i in reversed(range(lengths.shape[1])):
        n = lengths[:, i].float()
        if per == "token":
            update = gamma ** (n - 1) * rewards[:, i] + gamma**n * ret
        else:
            update = rewards[:, i] + gamma * ret
        ret = torch.where(present[:, i], update, ret)
    return ret


def reward_to_go(
    rewards: torch.Tensor, action_mask: torch.Tensor, discounts: torch.Tensor, after: torch.Tensor
) -> torch.Tensor:
    """Discounted reward-to-go at each action step, counting action steps only (spec §3.4), [B, T-1].

    R_t = r_t + d_t * R_next(t), where next(t) is the next action step; after the chunk's last one, `after` [B]
    (the return of the rest of the episode). Zero at non-action steps.
    """
    out = torch.zeros_like(rewards)
    carry = after.to(rewards.dtype)
    for t in reversed(range(rewards.shape[1])):
        value = rewards[:, t] + discounts[:, t] * carry
        carry = torch.where(action_mask[:, t], value, carry)
        out[:, t] = torch.where(action_mask[:, t], value, torch.zeros_like(value))
    return out


def next_state_values(
    values: torch.Tensor, batch: dict[str, torch.Tensor], next_chunk_values: Optional[torch.Tensor]
) -> torch.Tensor:
    """V(s') for each action step, [B, T-1] (spec §3.5): the value at the next action step's index, skipping
    environment tokens; after the chunk's last action, V of the next chunk's state (`next_chunk_values` [B]),
    0 at a true episode end, or, for an episode cut without a next state, V right after the action.

    values: [B, T] V at every position of the chunk. Call under no_grad: targets are not differentiated.
    """
    nxt = batch["next_action_index"]
    b, t1 = nxt.shape
    within = values.gather(1, nxt.clamp(min=0))
    after_action = values[:, 1:]  # position t+1: the state right after token t+1
    last = after_action
    if next_chunk_values is not None:
        last = torch.where(batch["has_next_state"][:, None], next_chunk_values[:, None].expand(b, t1), after_action)
    last = torch.where(batch["dones"][:, None], torch.zeros_like(last), last)
    return torch.where(nxt >= 0, within, last)


# ---- the module ---------------------------------------------------------------------------------------------------
class ValueModule(LMRLModule):
    """Base of the value-based algorithms: frozen pi_beta, trainable value trunk, value-guided decoding.

    Args (beyond `LMRLModule`'s):
        value: how the values are learnt (discount, heads, CQL term; see `ValueLearning`).
        beta: weight of the value guidance when decoding (paper: 16 maze/dialogue; maze scripts 8): the initial
            value of the `decoding_beta` buffer, which decoding reads and a `BetaSweep` replaces after training (a
            buffer, so every checkpoint and export carries the beta in use; `Decoding.beta` overrides it per call).
    """

    exported_submodels = ("trunk",)

    def __init__(self, *, value: ValueLearning = ValueLearning(), beta: float = 8.0, **kwargs):
        value = as_settings(value, ValueLearning, "model.value")  # a subclass's own kind passes as it is
        check_number("model.beta", beta, low=0)
        super().__init__(**kwargs)
        self.value = value
        # pi_beta never trains; the trunk starts as a copy of it: a second adapter on the same base with LoRA.
        self.model.requires_grad_(False)
        self.trunk = self.copy_of_policy("value", trainable=True)
        self.hidden_size = self.trunk.get_input_embeddings().weight.shape[1]
        self.vocab_size = self.trunk.get_output_embeddings().weight.shape[0]
        self.build_heads()
        # float64: the swept value exactly, whatever dtype the networks run in.
        self.register_buffer("decoding_beta", torch.tensor(float(beta), dtype=torch.float64))

    def build_heads(self) -> None:
        """Create the subclass's heads (their settings are in `self.value`)."""
        raise NotImplementedError

    def trunk_embedding(self) -> torch.Tensor:
        return self.trunk.get_output_embeddings().weight

    def hidden(self, trunk, input_ids, attention_mask) -> torch.Tensor:
        """Last hidden state of `trunk` at every position, [B, T, d]; repeated rows run once, the padding skipped
        (`batch_hidden`)."""
        return batch_hidden(trunk, input_ids, attention_mask)

    def next_state_hidden(self, trunk, batch) -> torch.Tensor:
        """`trunk`'s last hidden state at the last real token of each next-chunk state, [B, d]."""
        return self.last_token_hidden(trunk, batch["next_state_ids"], batch["next_state_mask"])

    def last_token_hidden(self, trunk, input_ids, attention_mask) -> torch.Tensor:
        """`trunk`'s last hidden state at each row's last real token, [B, d]."""
        hidden = self.hidden(trunk, input_ids, attention_mask)
        last = (attention_mask.long().sum(1) - 1).clamp(min=0)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def discounts(self, batch) -> torch.Tensor:
        return step_discounts(batch["next_action_index"], self.value.gamma, self.value.discount_per)

    def guidance(self, hidden: torch.Tensor) -> torch.Tensor:
        """Value of each next token from trunk hidden states, [..., V]; decoding adds beta times it."""
        raise NotImplementedError

    def guidance_at(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """`guidance(hidden)` at the given next tokens only, [...] (no vocabulary-sized output)."""
        raise NotImplementedError

    def action_value_at(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Q(s, a) of the given next tokens, [...]: what re-ranking adds at a candidate's last token
        (`Decoding.candidate_value: last`). Here the guidance itself (MC's guidance is Q); a module whose guidance
        subtracts a baseline V(s) returns Q without it (V at the last token would be that of the action's prefix)."""
        return self.guidance_at(hidden, tokens)

    def value_guidance(self, beta: Optional[float] = None, networks: str = "online") -> ValueGuidance:
        """The trunk and its values that decoding adds, weighted by `beta` (None: `decoding_beta`), from the
        `networks` that `guidance_networks` gives."""
        beta = float(self.decoding_beta) if beta is None else beta
        return ValueGuidance(*self.guidance_networks(networks), beta)

    def guidance_networks(self, networks: str) -> tuple:
        """(trunk, values, values_at, action_values_at) of decoding: the online trunk, `guidance`, `guidance_at` and
        `action_value_at`; ``target``: only ILQL has them."""
        if networks == "target":
            raise LMRLError(f"decoding.value_networks: target decodes with ILQL's target networks; "
                            f"{type(self).__name__} has none (use online)")
        return self.trunk, self.guidance, self.guidance_at, self.action_value_at

    def log_stats(self, name: str, x: torch.Tensor, batch_size: int) -> None:
        """Mean, min and max of a per-action-step quantity."""
        x = x.detach().float()
        if x.numel() == 0:
            return
        self.log(f"train/{name}_mean", x.mean(), batch_size=batch_size)
        self.log(f"train/{name}_min", x.min(), batch_size=batch_size)
        self.log(f"train/{name}_max", x.max(), batch_size=batch_size)

