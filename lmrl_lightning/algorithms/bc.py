"""Behaviour cloning (spec §3.2): next-token cross-entropy on the agent's tokens only.

Filtered BC (spec §3.3) is this module trained on filtered data (the DataModule's `filter`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lmrl_lightning.algorithms.base import LMRLModule


def bc_loss(action_logits: torch.Tensor, action_targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean cross-entropy over action tokens.

    Args:
        action_logits: [N, V] logits at the N positions whose next token is an action token.
        action_targets: [N] those next tokens.
    Returns the loss and metrics (token accuracy, number of action tokens).
    """
    if action_targets.numel() == 0:
        raise ValueError("the batch has no action token: nothing to clone")
    loss = F.cross_entropy(action_logits.float(), action_targets)
    accuracy = (action_logits.argmax(-1) == action_targets).float().mean()
    return loss, {"accuracy": accuracy, "action_tokens": torch.tensor(float(action_targets.numel()))}


class BC(LMRLModule):
    """Behaviour cloning of the dataset's actions (filtered BC: the same on filtered data)."""

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        mask = batch["action_mask"]
        logits = self.action_logits(batch["input_ids"], batch["attention_mask"], mask)
        loss, metrics = bc_loss(logits, batch["input_ids"][:, 1:][mask])
        batch_size = batch["input_ids"].shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=batch_size, sync_dist=stage == "val")
        self.log(f"{stage}/accuracy", metrics["accuracy"], batch_size=batch_size, sync_dist=stage == "val")
        if stage == "train":
            self.log("train/action_tokens", metrics["action_tokens"], reduce_fx="sum", batch_size=batch_size)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")
