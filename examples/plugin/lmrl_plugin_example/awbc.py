"""Advantage-weighted behaviour cloning (AWR, Peng et al. 2019, on tokens): the example of README "Add an algorithm".

BC clones every action of the data alike; AWBC clones each action token with the weight exp(A / temperature)
(clipped at `max_weight`), where the advantage A is the action's return-to-go minus a value estimate V(s). Actions
that did better than usual are cloned more, worse ones less. V is a linear head on the policy's own last hidden
state, trained in the same step to regress the return-to-go (detached in the weight, so that the policy loss does
not move it).

An algorithm is a subclass of `LMRLModule` with a `training_step`: the backbone, tokenizer, optimiser, data,
decoding (`policy()`), evaluation callback and checkpoints come from the base. Keep the loss a pure function of
tensors, tested on its own.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lmrl_lightning.algorithms.base import LMRLModule
from lmrl_lightning.algorithms.mc_returns import returns_to_go
from lmrl_lightning.algorithms.packing import batch_hidden
from lmrl_lightning.validation import check_number


def awbc_loss(
    action_logits: torch.Tensor,
    actions: torch.Tensor,
    returns: torch.Tensor,
    values: torch.Tensor,
    temperature: float = 1.0,
    max_weight: float = 20.0,
    value_coef: float = 0.5,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Advantage-weighted cross-entropy of the data's action tokens plus value regression.

    Args:
        action_logits: [N, V] logits at the N positions whose next token is an action token.
        actions: [N] those tokens. returns: [N] the return-to-go of their action. values: [N] V at those positions.
    Returns the loss and metrics (both parts, the mean weight).
    """
    if actions.numel() == 0:
        raise ValueError("the batch has no action token: nothing to clone")
    advantages = (returns - values).detach()
    weights = torch.exp(advantages / temperature).clamp(max=max_weight)
    policy_loss = (weights * F.cross_entropy(action_logits.float(), actions, reduction="none")).mean()
    value_loss = 0.5 * ((values - returns) ** 2).mean()
    metrics = {"policy_loss": policy_loss.detach(), "value_loss": value_loss.detach(), "mean_weight": weights.mean()}
    return policy_loss + value_coef * value_loss, metrics


class AWBC(LMRLModule):
    """Advantage-weighted BC (arguments beyond `LMRLModule`'s, which pass through `**kwargs`):

    Args:
        advantage_temperature: scale of the advantages in the weights (lower: greedier cloning).
        max_weight: clip of exp(A / advantage_temperature), so that one lucky episode cannot dominate a batch.
        value_coef: weight of the value regression in the loss.
    """

    def __init__(
        self, *, advantage_temperature: float = 1.0, max_weight: float = 20.0, value_coef: float = 0.5, **kwargs
    ):
        check_number("model.advantage_temperature", advantage_temperature, low=0, low_open=True)
        check_number("model.max_weight", max_weight, low=1)
        check_number("model.value_coef", value_coef, low=0)
        super().__init__(**kwargs)
        hidden_size = self.model.get_input_embeddings().weight.shape[1]
        self.value_head = torch.nn.Linear(hidden_size, 1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        mask = batch["action_mask"]
        # The policy's last hidden states, repeated rows run once and the padding skipped (exact; see packing.py).
        hidden = batch_hidden(self.model, batch["input_ids"], batch["attention_mask"])
        hidden = hidden[:, :-1][mask]  # position t predicts token t+1
        logits = self.model.get_output_embeddings()(hidden)
        values = self.value_head(hidden).squeeze(-1).float()
        returns = returns_to_go(batch, gamma=1.0, per="turn")[mask]  # the episode's remaining return
        hp = self.hparams
        loss, metrics = awbc_loss(logits, batch["input_ids"][:, 1:][mask], returns, values,
                                  hp.advantage_temperature, hp.max_weight, hp.value_coef)
        batch_size, sync = batch["input_ids"].shape[0], stage == "val"
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=batch_size, sync_dist=sync)
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, batch_size=batch_size, sync_dist=sync)
        return loss
