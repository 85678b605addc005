"""The DataModule every offline algorithm trains from: JSONL episodes -> filtered -> token chunks -> batches."""
from __future__ import annotations

import random
from functools import partial
from typing import Literal, Optional, Union

import lightning as L
from torch.utils.data import DataLoader

from lmrl_lightning.data.collate import collate_chunks
from lmrl_lightning.data.filters import FilterMode, filter_episodes
from lmrl_lightning.data.jsonl import read_episodes
from lmrl_lightning.data.tokenize import Overflow, TokenChunk, TurnTokenizer, episode_to_chunks
from lmrl_lightning.env import Episode
from lmrl_lightning.errors import LMRLError


class EpisodeDataModule(L.LightningDataModule):
    """Serves padded batches of token chunks from a JSONL episode file.

    The tokenizer is the model's: it is taken from the LightningModule being trained (or set with
    `attach_tokenizer`), so the data always matches the model.

    Args:
        data_path: JSONL episode file (written by ``lmrl data``).
        task: registered task name; gives the history window and, with `variant`, its evaluation.
        variant: task variant (e.g. ``fo`` or ``po`` for the maze).
        window: texts of context per action chunk: ``task`` (the task's environment window), ``all`` (the whole
            episode as one sequence) or a number.
        filter: ``none``; ``success`` (successful episodes only) or ``top_fraction`` (best episodes by return):
            filtered BC.
        top_fraction: fraction kept by ``top_fraction``.
        val_fraction: fraction of episodes held out (before filtering) for the validation loss.
        max_length: longest chunk in tokens.
        overflow: ``error`` stops on a chunk longer than max_length; ``truncate`` keeps its last tokens.
        batch_size: chunks per batch (per device).
        num_workers: DataLoader worker processes.
        seed: seed of the train/validation split.
    """

    def __init__(
        self,
        data_path: str,
        task: Optional[str] = None,
        variant: Optional[str] = None,
        window: Union[int, Literal["task", "all"]] = "task",
        filter: FilterMode = "none",
        top_fraction: float = 0.1,
        val_fraction: float = 0.05,
        max_length: int = 512,
        overflow: Overflow = "error",
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.data_path = data_path
        self.task = task
        self.variant = variant
        self.window = window
        self.filter = filter
        self.top_fraction = top_fraction
        self.val_fraction = val_fraction
        self.max_length = max_length
        self.overflow = overflow
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.tokenizer = None
        self.train_chunks: list[TokenChunk] = []
        self.val_chunks: list[TokenChunk] = []

    def attach_tokenizer(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def history_window(self) -> Optional[int]:
        if self.window == "all":
            return None
        if self.window != "task":
            return int(self.window)
        if self.task is None:
            return None
        from lmrl_lightning.registry import get_task

        spec = get_task(self.task)
        return spec.history_window.get(spec.check_variant(self.variant or spec.variants[0]))

    def split(self, episodes: list[Episode]) -> tuple[list[Episode], list[Episode]]:
        order = list(range(len(episodes)))
        random.Random(self.seed).shuffle(order)
        n_val = int(round(self.val_fraction * len(episodes)))
        val = [episodes[i] for i in order[:n_val]]
        train = [episodes[i] for i in order[n_val:]]
        return train, val

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_chunks:
            return
        if self.tokenizer is None:
            if self.trainer is None or not hasattr(self.trainer.lightning_module, "tokenizer"):
                raise RuntimeError("EpisodeDataModule needs a tokenizer: train it with an lmrl algorithm module")
            self.tokenizer = self.trainer.lightning_module.tokenizer
        train, val = self.split(read_episodes(self.data_path))
        train = filter_episodes(train, self.filter, self.top_fraction)
        if not train:
            raise LMRLError(f"{self.data_path}: filter {self.filter!r} kept no training episode")
        val = filter_episodes(val, self.filter, self.top_fraction)
        self.train_chunks = self.to_chunks(train)
        self.val_chunks = self.to_chunks(val)

    def to_chunks(self, episodes: list[Episode]) -> list[TokenChunk]:
        tokenize = TurnTokenizer(self.tokenizer)
        window = self.history_window()
        return [
            chunk
            for e in episodes
            for chunk in episode_to_chunks(e, tokenize, window, self.max_length, self.overflow)
        ]

    def _loader(self, chunks: list[TokenChunk], shuffle: bool) -> DataLoader:
        return DataLoader(
            chunks,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=partial(collate_chunks, pad_id=self.tokenizer.pad_token_id),
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_chunks, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_chunks, shuffle=False) if self.val_chunks else []
