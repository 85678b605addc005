"""MC Returns (spec §3.4): regress Q(s_t, a_t) on the discounted reward-to-go of each action token, one step of
policy improvement over the data's behaviour policy; decode with logits_pi_beta + beta * Q.
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
import torch.nn.functional as F

from lmrl_lightning.algorithms.value import DiscountPer, ValueModule, later_returns, reward_to_go, step_discounts
from lmrl_lightning.models.heads import make_q_head


def returns_to_go(batch: Mapping[str, torch.Tensor], gamma: float, per: DiscountPer) -> torch.Tensor:
    """Discounted reward-to-go at every action step of a collated batch, [B, T-1] (0 elsewhere), counting action
    steps only and reaching past each chunk to the episode's end through its later actions (spec §3.4): what MC
    Returns regresses Q on, and the return an advantage-weighted method weighs its actions by."""
    after = later_returns(batch["later_action_lengths"], batch["later_action_rewards"], gamma, per)
    discounts = step_discounts(batch["next_action_index"], gamma, per)
    return reward_to_go(batch["rewards"], batch["action_mask"], discounts, after)


def mc_loss(
    q: torch.Tensor,
    returns: torch.Tensor,
    cql_weight: float = 0.0,
    q_logits: Optional[torch.Tensor] = None,
    actions: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean of 1/2 (Q - R)^2 over action tokens, plus cql_weight * cross-entropy of the data action under
    softmax(Q) (the "CQL" term of the paper's code).

    Args:
        q: [N] Q of the taken action at each action step. returns: [N] its discounted reward-to-go.
        q_logits, actions: [N, V] all Q values and [N] the taken tokens, needed when cql_weight > 0.
    """
    if q.numel() == 0:
        raise ValueError("the batch has no action token: nothing to regress")
    q_loss = 0.5 * ((q - returns) ** 2).mean()
    metrics = {"q_loss": q_loss.detach()}
    loss = q_loss
    if cql_weight > 0:
        cql = F.cross_entropy(q_logits, actions)
        metrics["cql_loss"] = cql.detach()
        loss = loss + cql_weight * cql
    return loss, metrics


class MCReturns(ValueModule):
    """Monte-Carlo return regression on a value trunk initialised from BC (see `ValueModule` for the args)."""

    def build_heads(self) -> None:
        self.q_head = make_q_head(
            self.value.head, self.hidden_size, self.vocab_size, self.value.head_bias, self.trunk_embedding
        )

    def guidance(self, hidden):
        return self.q_head(hidden)

    def guidance_at(self, hidden, tokens):
        return self.q_head.at(hidden, tokens)

    def training_step(self, batch, batch_idx):
        mask = batch["action_mask"]
        hidden = self.hidden(self.trunk, batch["input_ids"], batch["attention_mask"])[:, :-1][mask]
        actions = batch["input_ids"][:, 1:][mask]
        returns = returns_to_go(batch, self.value.gamma, self.value.discount_per)[mask]
        cql = self.value.cql_weight > 0
        q_all = self.q_head(hidden) if cql else None
        q = q_all.gather(-1, actions[:, None]).squeeze(-1) if cql else self.q_head.at(hidden, actions)
        loss, metrics = mc_loss(q, returns, self.value.cql_weight, q_all, actions)
        batch_size = batch["input_ids"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        for name, value in metrics.items():
            self.log(f"train/{name}", value, batch_size=batch_size)
        self.log_stats("q", q, batch_size)
        self.log_stats("return", returns, batch_size)
        return loss
