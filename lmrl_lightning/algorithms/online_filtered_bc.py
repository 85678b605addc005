"""Online filtered BC (spec §3.7): each round, roll the current policy out, keep the successful episodes (or the
top fraction by return) and train BC on that round's kept episodes only (the data is not accumulated).

The kept episodes of all DDP ranks are pooled (the top fraction is taken over the whole round) and dealt out
again, so every rank trains on its share; a round that keeps nothing is skipped (no update).
"""
from __future__ import annotations

import math

import torch

from lmrl_lightning.algorithms.bc import bc_loss
from lmrl_lightning.algorithms.online import OnlineModule, minibatch_plan
from lmrl_lightning.validation import as_settings
from lmrl_lightning.algorithms.settings import RoundFilter, Updates
from lmrl_lightning.data.collate import collate_chunks
from lmrl_lightning.data.filters import filter_episodes
from lmrl_lightning.distributed import all_gather_objects
from lmrl_lightning.env import Episode


class OnlineFilteredBC(OnlineModule):
    """BC on each round's best rollouts.

    Args (beyond `OnlineModule`'s):
        filter: which of each round's episodes are cloned (successful ones, or the top fraction; see `RoundFilter`).
    """

    def __init__(
        self, *, updates: Updates = Updates(batch_size=128), filter: RoundFilter = RoundFilter(), **kwargs
    ):  # the paper's maze scripts: 128 episodes a minibatch
        filter = as_settings(filter, RoundFilter, "model.filter")
        super().__init__(updates=updates, **kwargs)
        self.filter = filter

    def prepare_round(self, episodes: list[Episode], generator: torch.Generator) -> list[dict[str, torch.Tensor]]:
        kept = filter_episodes(all_gather_objects(episodes), self.filter.mode, self.filter.top_fraction)
        rank, world = self.world
        self._round["kept_episodes"] = len(kept)
        if not kept:
            return []
        chunks = [c for cs in self.to_chunks(kept) for c in cs]
        # Every rank sees the same pooled chunks: deal them out so each rank trains on a distinct share.
        mine = chunks[rank::world] or chunks
        bs = self.updates.batch_size
        n_batches = math.ceil(len(chunks) / world / bs)
        plan = minibatch_plan(len(mine), bs, n_batches, self.updates.epochs, generator)
        pad = self.tokenizer.pad_token_id
        return [collate_chunks([mine[i] for i in rows], pad) for rows in plan]

    def training_step(self, batch, batch_idx):
        mask = batch["action_mask"]
        loss, metrics = bc_loss(
            self.action_logits(batch["input_ids"], batch["attention_mask"], mask), batch["input_ids"][:, 1:][mask]
        )
        batch_size = batch["input_ids"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train/accuracy", metrics["accuracy"], batch_size=batch_size)
        return loss
