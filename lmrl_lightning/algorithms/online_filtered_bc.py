"""Online filtered BC (spec §3.7): each round, roll the current policy out, keep the successful episodes (or the
top fraction by return) and train BC on that round's kept episodes only (the data is not accumulated).

The kept episodes of all DDP ranks are pooled (the top fraction is taken over the whole round) and dealt out
again, so every rank trains on its share; a round that keeps nothing is skipped (no update).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch

from lmrl_lightning.algorithms.bc import bc_loss
from lmrl_lightning.algorithms.online import OnlineModule, minibatch_plan
from lmrl_lightning.data.collate import collate_chunks
from lmrl_lightning.data.filters import FilterMode, filter_episodes
from lmrl_lightning.distributed import all_gather_objects
from lmrl_lightning.env import Episode
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.models.backbone import BackboneConfig
from lmrl_lightning.policies import Decoding
from lmrl_lightning.validation import check_number


class OnlineFilteredBC(OnlineModule):
    """BC on each round's best rollouts.

    Args (beyond `OnlineModule`'s):
        filter: ``success`` (maze, chess: successful episodes only) or ``top_fraction`` (Wordle: top 30%).
        top_fraction: fraction kept by ``top_fraction``.
    """

    def __init__(
        self,
        backbone: BackboneConfig = BackboneConfig(),
        init_from: Optional[str] = None,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        betas: tuple[float, float] = (0.9, 0.95),
        task: str = "maze",
        variant: Optional[str] = None,
        env_options: Optional[dict[str, Any]] = None,
        n_rollouts: int = 128,
        rollout_batch_size: int = 32,
        decoding: Optional[Decoding] = None,
        train_batch_size: int = 128,
        epochs: int = 1,
        max_length: int = 512,
        seed: int = 0,
        filter: FilterMode = "success",
        top_fraction: float = 0.3,
    ):
        check_number("model.top_fraction", top_fraction, low=0, high=1, low_open=True)
        super().__init__(
            backbone, init_from, lr, weight_decay, warmup_steps, betas, task, variant, env_options, n_rollouts,
            rollout_batch_size, decoding, train_batch_size, epochs, max_length, seed,
        )
        if filter == "none":
            raise LMRLError("online filtered BC needs a filter: success or top_fraction")

    def prepare_round(self, episodes: list[Episode], generator: torch.Generator) -> list[dict[str, torch.Tensor]]:
        kept = filter_episodes(all_gather_objects(episodes), self.hparams.filter, self.hparams.top_fraction)
        rank, world = self.world
        self._round["kept_episodes"] = len(kept)
        if not kept:
            return []
        chunks = [c for cs in self.to_chunks(kept) for c in cs]
        # Every rank sees the same pooled chunks: deal them out so each rank trains on a distinct share.
        mine = chunks[rank::world] or chunks
        bs = self.hparams.train_batch_size
        n_batches = math.ceil(len(chunks) / world / bs)
        plan = minibatch_plan(len(mine), bs, n_batches, self.hparams.epochs, generator)
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
