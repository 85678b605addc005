"""ILQL (spec §3.5): token-level implicit Q-learning with two Q heads, Polyak-averaged targets, an expectile V and
an optional CQL-style term; decode with logits_pi_beta + beta * (min(Q1, Q2) - V).

Per action step t (token t+1 is an action token):
  Q_i(s_t, a_t)   = Q_i(h_t)[x_{t+1}]                          online trunk and heads
  Qbar(s_t, a_t)  = min(Qbar_1, Qbar_2)(hbar_t)[x_{t+1}]      target trunk and target heads
  y_t             = r_t + d_t * V(s')                          s' = the next action step (skipping the environment's
                                                               tokens), the next chunk's state, or 0 at the end
  L = sum_i mean 1/2 (Q_i - y)^2 + mean |tau - 1[Qbar < V]| 1/2 (V - Qbar)^2 + cql_weight * sum_i CE(Q_i, x_{t+1})
Targets y and Qbar are not differentiated; the trunk and all online heads are. With `value.forced_targets: online`,
V's target at an action step whose token is the only way the data's actions continue (see `forced_steps`) is the
online min(Q_1, Q_2), not differentiated, instead of Qbar.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.nn.functional as F

from lmrl_lightning.errors import LMRLError
from lmrl_lightning.validation import as_settings
from lmrl_lightning.algorithms.settings import ILQLValueLearning
from lmrl_lightning.algorithms.value import ValueModule, next_state_values
from lmrl_lightning.models.heads import make_q_head, make_v_head, polyak_update
from lmrl_lightning.policies.sampling import eval_mode


def expectile_weights(target_q: torch.Tensor, v: torch.Tensor, tau: float) -> torch.Tensor:
    """|tau - 1[Qbar < V]|: tau where the target Q is at least V, 1 - tau below it."""
    return torch.where(target_q < v, torch.full_like(v, 1 - tau), torch.full_like(v, tau))


def ilql_loss(
    q1: torch.Tensor,
    q2: torch.Tensor,
    v: torch.Tensor,
    target_q: torch.Tensor,
    q_target: torch.Tensor,
    tau: float,
    cql_weight: float = 0.0,
    q1_logits: Optional[torch.Tensor] = None,
    q2_logits: Optional[torch.Tensor] = None,
    actions: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The ILQL loss over N action steps (see the module docstring); means over action steps.

    Args:
        q1, q2: [N] online Q of the taken actions. v: [N] online V of their states.
        target_q: [N] min of the two target Q heads (treated as a constant).
        q_target: [N] r + d * V(s') (treated as a constant).
        q1_logits, q2_logits, actions: [N, V], [N, V], [N], needed when cql_weight > 0.
    """
    if q1.numel() == 0:
        raise ValueError("the batch has no action token: nothing to learn from")
    target_q, q_target = target_q.detach(), q_target.detach()
    q_loss = 0.5 * ((q1 - q_target) ** 2).mean() + 0.5 * ((q2 - q_target) ** 2).mean()
    v_loss = (expectile_weights(target_q, v.detach(), tau) * 0.5 * (v - target_q) ** 2).mean()
    loss = q_loss + v_loss
    metrics = {"q_loss": q_loss.detach(), "v_loss": v_loss.detach()}
    if cql_weight > 0:
        cql = F.cross_entropy(q1_logits, actions) + F.cross_entropy(q2_logits, actions)
        metrics["cql_loss"] = cql.detach()
        loss = loss + cql_weight * cql
    return loss, metrics


def single_continuation_prefixes(chunks: Iterable) -> set[tuple[int, ...]]:
    """The action prefixes (an action's first tokens, possibly none) after which every action of `chunks` that
    starts with them continues with the same next token (an action ending there counts as another way on)."""
    continuations: dict[tuple[int, ...], set[Optional[int]]] = {}
    for chunk in chunks:
        ids, is_action = chunk.input_ids, chunk.is_action
        start = None
        for t in range(len(ids) + 1):
            acting = t < len(ids) and is_action[t]
            if acting and start is None:
                start = t
            elif not acting and start is not None:
                if start > 0:  # an action cut at the chunk's start has lost its first tokens
                    action = ids[start:t]
                    for k in range(len(action) + 1):
                        continuations.setdefault(tuple(action[:k]), set()).add(action[k] if k < len(action) else None)
                start = None
    return {prefix for prefix, after in continuations.items() if len(after) == 1 and None not in after}


def forced_steps(input_ids: torch.Tensor, action_mask: torch.Tensor, prefixes: set[tuple[int, ...]]) -> torch.Tensor:
    """For each action step of the batch (`action_mask`'s True entries, row-major): whether its action's tokens so
    far are one of `prefixes`, i.e. the data's actions go on one way only from there [N]. An action whose first
    scored token is the row's second is never forced: the mask cannot tell whether it began at the row's first token
    (cut by the chunk's start, its first tokens lost) or right after a one-token observation."""
    ids, mask = input_ids.tolist(), action_mask.tolist()
    forced = []
    for row_ids, row_mask in zip(ids, mask):
        action: Optional[list[int]] = None
        for t, acting in enumerate(row_mask):
            if not acting:
                action = None
                continue
            if action is None:  # an action starts: its first token is token t + 1
                action, known = [], t > 0
            forced.append(known and tuple(action) in prefixes)
            action.append(row_ids[t + 1])
    return torch.tensor(forced, dtype=torch.bool, device=input_ids.device)


class ILQL(ValueModule):
    """Implicit Language Q-Learning: `ValueModule`'s arguments, with `value` an `ILQLValueLearning` (its expectile
    `tau` and the targets' Polyak rate `polyak` beside the shared value settings)."""

    rebuilt_submodels = {"target_trunk": "trunk"}  # Polyak-averaged copy: starts as the loaded trunk

    def __init__(self, *, value: ILQLValueLearning = ILQLValueLearning(), **kwargs):
        value = as_settings(value, ILQLValueLearning, "model.value")
        super().__init__(value=value, **kwargs)
        # Action prefixes with one continuation in the training data (`forced_targets: online`), found at fit start.
        self.forced_prefixes: Optional[set[tuple[int, ...]]] = None

    def build_heads(self) -> None:
        kind, bias = self.value.head, self.value.head_bias
        self.q1 = make_q_head(kind, self.hidden_size, self.vocab_size, bias, self.trunk_embedding)
        self.q2 = make_q_head(kind, self.hidden_size, self.vocab_size, bias, self.trunk_embedding)
        self.v = make_v_head(kind, self.hidden_size, bias)
        self.target_trunk = self.copy_of_policy("target", trainable=False, source="value")
        self.target_q1 = self._target_head(self.q1)
        self.target_q2 = self._target_head(self.q2)

    def _target_head(self, online):
        head = make_q_head(
            self.value.head, self.hidden_size, self.vocab_size, self.value.head_bias,
            lambda: self.target_trunk.get_output_embeddings().weight,
        )
        head.load_state_dict(online.state_dict())
        return head.requires_grad_(False)

    # ---- decoding -----------------------------------------------------------------------------------------
    @staticmethod
    def _advantages(q1, q2, v, hidden):
        return torch.minimum(q1(hidden), q2(hidden)) - v(hidden)

    @staticmethod
    def _q_at(q1, q2, hidden, tokens):
        return torch.minimum(q1.at(hidden, tokens), q2.at(hidden, tokens))

    @classmethod
    def _advantages_at(cls, q1, q2, v, hidden, tokens):
        return cls._q_at(q1, q2, hidden, tokens) - v(hidden).squeeze(-1)

    def guidance(self, hidden):
        return self._advantages(self.q1, self.q2, self.v, hidden)

    def guidance_at(self, hidden, tokens):
        return self._advantages_at(self.q1, self.q2, self.v, hidden, tokens)

    def action_value_at(self, hidden, tokens):
        return self._q_at(self.q1, self.q2, hidden, tokens)

    def guidance_networks(self, networks: str) -> tuple:
        """`ValueModule.guidance_networks`; ``target``: min(target Q1, target Q2) - V on the target trunk's hidden
        states (V has no target copy: its head reads the target trunk), as the original's re-ranker scores: the
        Polyak average smooths the step-to-step noise of the online values."""
        if networks != "target":
            return super().guidance_networks(networks)
        heads = (self.target_q1, self.target_q2, self.v)
        return (self.target_trunk, lambda hidden: self._advantages(*heads, hidden),
                lambda hidden, tokens: self._advantages_at(*heads, hidden, tokens),
                lambda hidden, tokens: self._q_at(*heads[:2], hidden, tokens))

    # ---- training -----------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if self.value.forced_targets == "online":
            chunks = getattr(self.trainer.datamodule, "train_chunks", None)
            if not chunks:
                raise LMRLError("model.value.forced_targets: online finds the forced tokens in the training data's "
                                "actions, so it needs a data module with train_chunks (EpisodeDataModule)")
            self.forced_prefixes = single_continuation_prefixes(chunks)

    def training_step(self, batch, batch_idx):
        mask = batch["action_mask"]
        ids, attention = batch["input_ids"], batch["attention_mask"]
        actions = ids[:, 1:][mask]
        hidden_all = self.hidden(self.trunk, ids, attention)
        hidden = hidden_all[:, :-1][mask]
        values_all = self.v(hidden_all).squeeze(-1)
        with torch.no_grad():
            with eval_mode(self.target_trunk):
                target_hidden = self.hidden(self.target_trunk, ids, attention)[:, :-1][mask]
            target_q = torch.minimum(self.target_q1.at(target_hidden, actions), self.target_q2.at(target_hidden, actions))
            next_chunk = None
            if bool(batch["has_next_state"].any()):
                next_chunk = self.v(self.next_state_hidden(self.trunk, batch)).squeeze(-1)
            v_next = next_state_values(values_all.detach(), batch, next_chunk)[mask]
            q_target = batch["rewards"][mask] + self.discounts(batch)[mask] * v_next

        cql = self.value.cql_weight > 0
        q1_logits = self.q1(hidden) if cql else None
        q2_logits = self.q2(hidden) if cql else None
        q1 = q1_logits.gather(-1, actions[:, None]).squeeze(-1) if cql else self.q1.at(hidden, actions)
        q2 = q2_logits.gather(-1, actions[:, None]).squeeze(-1) if cql else self.q2.at(hidden, actions)
        v = values_all[:, :-1][mask]
        forced = None
        if self.forced_prefixes is not None:
            forced = forced_steps(ids, mask, self.forced_prefixes)
            target_q = torch.where(forced, torch.minimum(q1, q2).detach(), target_q)
        loss, metrics = ilql_loss(
            q1, q2, v, target_q, q_target, self.value.tau, self.value.cql_weight, q1_logits, q2_logits, actions
        )

        batch_size = ids.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        for name, value in metrics.items():
            self.log(f"train/{name}", value, batch_size=batch_size)
        self.log_stats("q1", q1, batch_size)
        self.log_stats("q2", q2, batch_size)
        self.log_stats("v", v, batch_size)
        self.log_stats("target_q", target_q, batch_size)
        self.log_stats("advantage", torch.minimum(q1, q2) - v, batch_size)
        if forced is not None:
            self.log("train/forced_steps", forced.float().mean(), batch_size=batch_size)
        return loss

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        self.update_targets()

    def update_targets(self) -> None:
        """Move the target trunk and target Q heads a step `polyak` towards the online ones."""
        alpha = self.value.polyak
        polyak_update(self.target_trunk, self.trunk, alpha)
        polyak_update(self.target_q1, self.q1, alpha)
        polyak_update(self.target_q2, self.q2, alpha)
