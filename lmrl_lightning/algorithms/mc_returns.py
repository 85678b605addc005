"""MC Returns (spec §3.4): regress Q(s_t, a_t) on the discounted reward-to-go of each action token, one step of
policy improvement over the data's behaviour policy; decode with logits_pi_beta + beta * Q.

A truncated episode (`done` false: cut, not ended) is not scored as if it had ended at the cut: the return-to-go of
each of its actions, in every one of its chunks (windowed chunks: one per action), adds gamma^k * V(s_cut), the
module's own value of the state at the cut, k steps after the action (see `MCReturns`; the spec's code counts only
the rewards before the cut). Each chunk says whether its episode was cut and carries that state (`episode_cut`,
`cut_state_ids` of `collate_chunks`).
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
import torch.nn.functional as F

from lmrl_lightning.algorithms.value import DiscountPer, ValueModule, later_returns, reward_to_go, step_discounts
from lmrl_lightning.models.heads import make_q_head
from lmrl_lightning.algorithms.distinct import distinct_row_index, token_row_key


def returns_to_go(
    batch: Mapping[str, torch.Tensor], gamma: float, per: DiscountPer, bootstrap: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Discounted reward-to-go at every action step of a collated batch, [B, T-1] (0 elsewhere), counting action
    steps only and reaching past each chunk to the episode's end through its later actions (spec §3.4): what MC
    Returns regresses Q on, and the return an advantage-weighted method weighs its actions by.

    bootstrap: None (the default): rewards only, so a cut episode's return stops at the cut as if it had ended
        there. Else [B], the value of the state at each row's cut, added to the rows whose episode was cut (`episode_cut`) discounted from
        each action step to the cut (gamma per action token, or per turn): R_t = rewards + gamma^k * bootstrap.
        The other rows' values are ignored.
    """
    lengths = batch["later_action_lengths"]
    after = later_returns(lengths, batch["later_action_rewards"], gamma, per)
    if bootstrap is not None:
        steps = lengths.sum(1) if per == "token" else (lengths > 0).sum(1)  # steps from the later actions to the cut
        cut = batch["episode_cut"]
        tail = gamma ** steps.to(after.dtype) * bootstrap.to(after.dtype)
        after = after + torch.where(cut, tail, torch.zeros_like(tail))
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
        q: [N] Q of the taken action at each action step. returns: [N] its target: the discounted reward-to-go,
            bootstrapped at a truncated episode's cut (`returns_to_go` with `bootstrap`).
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
    """Monte-Carlo return regression on a value trunk initialised from BC (see `ValueModule` for the args).

    A row of a truncated episode (`episode_cut`) bootstraps its targets from V(s_cut) = E_{a ~ pi_beta} Q(s_cut, a),
    the value of the behaviour policy that Q estimates, from the online trunk and head (no target network) without
    gradient. s_cut is the last token of the state the agent would act in after the episode's final action, which
    every chunk of the episode carries (`cut_state_ids`): the windowed context after the final action (the last
    chunk's next state), else the last chunk's own end (a whole episode: the end of its final observation; an
    episode cut right after its action: the state right after the action, ILQL's choice, at a position where Q is
    never regressed). Rows of one episode in a batch share one forward pass.
    """

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
        bootstrap = self.cut_values(batch)
        returns = returns_to_go(batch, self.value.gamma, self.value.discount_per, bootstrap)[mask]
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

    @torch.no_grad()
    def cut_values(self, batch) -> Optional[torch.Tensor]:
        """V(s_cut) of each `episode_cut` row, [B] (0 on the other rows), or None when the batch has no such row.
        Each distinct cut state is evaluated once."""
        cut = batch["episode_cut"]
        if not bool(cut.any()):
            return None
        ids, mask = batch["cut_state_ids"][cut], batch["cut_state_mask"][cut]
        found = distinct_row_index(token_row_key(ids, mask))
        first, inverse = found if found is not None else (torch.arange(len(ids), device=ids.device), None)
        out = torch.zeros(cut.shape, device=cut.device)
        values = self.state_values(ids[first], mask[first])
        out[cut] = values if inverse is None else values[inverse]
        return out

    @torch.no_grad()
    def state_values(self, input_ids, attention_mask) -> torch.Tensor:
        """E_{a ~ pi_beta} Q(s, a) at each row's last real token, [n] (fp32)."""
        hidden = self.last_token_hidden(self.trunk, input_ids, attention_mask)
        policy_hidden = self.last_token_hidden(self.model, input_ids, attention_mask)
        probs = torch.softmax(self.model.get_output_embeddings()(policy_hidden).float(), dim=-1)
        return (probs * self.q_head(hidden).float()).sum(-1)
