"""The DataModule every offline algorithm trains from: JSONL episodes -> filtered -> token chunks -> batches.

`setup` streams the file twice and never holds the list of episodes: a first pass validates every line and
keeps each episode's return and success (a few bytes each: the split and the filter's threshold need them);
the second tokenises the selected episodes one at a time into a `ChunkStore`, flat arrays of token ids.
"""
from __future__ import annotations

import math
import random
from array import array
from functools import partial
from typing import Any, Callable, Iterator, Literal, Optional, Sequence, Union

import lightning as L
from torch.utils.data import DataLoader

from lmrl_lightning.data.collate import collate_chunks
from lmrl_lightning.data.filters import FilterMode, check_filter, top_fraction_threshold
from lmrl_lightning.data.jsonl import MAX_LINE_BYTES, DatasetError, iter_episodes
from lmrl_lightning.data.prepare import check_dataset_manifest
from lmrl_lightning.data.tokenize import Overflow, TokenChunk, TurnTokenizer, episode_to_chunks
from lmrl_lightning.env import Episode
from lmrl_lightning.errors import LMRLError

OVERFLOW_MODES = ("error", "truncate")


class ChunkStore(Sequence[TokenChunk]):
    """Token chunks packed into flat arrays: about 15 bytes a token on maze data, next-state contexts included
    (benchmarks/dataset_memory.py), several times less than Python lists of ints, bools and floats.

    Indexing rebuilds one `TokenChunk`, so the DataLoader and `collate_chunks` see the chunks unchanged. Each
    episode's later-action summaries are stored once: a chunk's are a suffix of its episode's (the way
    `episode_to_chunks` builds them), so windowed episodes do not store them once per action. So is a truncated
    episode's state at the cut, at no cost: a chunk with n later actions is followed by its episode's n other
    chunks, so it reaches its episode's last chunk, whose `done` says whether the episode was cut and whose next
    state (else its own tokens) is the state at the cut. Rewards are kept as float32, the precision of the batches.
    """

    def __init__(self, path: str):
        self.path = path
        self.tokens, self.is_action, self.rewards = array("i"), array("b"), array("f")
        self.bounds = array("q", [0])  # chunk k's tokens are [bounds[k], bounds[k + 1])
        self.next_state = array("i")
        self.next_lo, self.next_hi = array("q"), array("q")  # next_lo[k] == -1: no next state
        self.later_lengths, self.later_rewards = array("i"), array("f")
        self.later_lo, self.later_hi = array("q"), array("q")
        self.dones, self.lines = array("b"), array("q")
        self.episode_chunks: dict[int, range] = {}  # episode index -> its chunks (stored in file order)

    def add_episode(self, chunks: Sequence[TokenChunk], line: int, episode: int) -> None:
        _check_episode_chunks(chunks)
        self.episode_chunks[episode] = range(len(self), len(self) + len(chunks))
        longest = max((c.later_actions for c in chunks), key=len, default=())
        self.later_lengths.extend(n for n, _ in longest)
        self.later_rewards.extend(r for _, r in longest)
        end = len(self.later_lengths)
        for c in chunks:
            self.tokens.extend(c.input_ids)
            self.is_action.extend(c.is_action)
            self.rewards.extend(c.rewards)
            self.bounds.append(len(self.tokens))
            self.next_lo.append(-1 if c.next_state_ids is None else len(self.next_state))
            self.next_state.extend(c.next_state_ids or ())
            self.next_hi.append(len(self.next_state))
            self.later_lo.append(end - len(c.later_actions))
            self.later_hi.append(end)
            self.dones.append(c.done)
            self.lines.append(line)

    def __len__(self) -> int:
        return len(self.dones)

    def in_episode_order(self, episodes: Sequence[int]) -> "ChunkView":
        """The chunks of `episodes` (those stored), episode by episode in that order."""
        chunks = array("q")
        for episode in episodes:
            chunks.extend(self.episode_chunks.get(episode, ()))
        return ChunkView(self, chunks)

    def __getitem__(self, k: int) -> TokenChunk:  # type: ignore[override]
        if not -len(self) <= k < len(self):
            raise IndexError(k)
        k %= len(self)
        lo, hi = self.bounds[k], self.bounds[k + 1]
        later = slice(self.later_lo[k], self.later_hi[k])
        input_ids = self.tokens[lo:hi].tolist()
        return TokenChunk(
            input_ids=input_ids,
            is_action=[bool(a) for a in self.is_action[lo:hi]],
            rewards=self.rewards[lo:hi].tolist(),
            done=bool(self.dones[k]),
            next_state_ids=self.next_state_of(k),
            source=f"{self.path}:{self.lines[k]}",
            later_actions=list(zip(self.later_lengths[later], self.later_rewards[later])),
            cut_state_ids=self.cut_state_of(k, input_ids),
        )

    def next_state_of(self, k: int) -> Optional[list[int]]:
        return None if self.next_lo[k] < 0 else self.next_state[self.next_lo[k]:self.next_hi[k]].tolist()

    def cut_state_of(self, k: int, input_ids: list[int]) -> Optional[list[int]]:
        """The state at the cut of chunk k's episode (`input_ids`: chunk k's), or None when the episode ended."""
        last = k + self.later_hi[k] - self.later_lo[k]  # its episode's last chunk (see the class docstring)
        if self.dones[last]:
            return None
        if self.next_lo[last] >= 0:
            return self.next_state_of(last)
        return input_ids if last == k else self.tokens[self.bounds[last]:self.bounds[last + 1]].tolist()


def _check_episode_chunks(chunks: Sequence[TokenChunk]) -> None:
    """Refuse chunks the store could not give back: it finds an episode's last chunk, and so whether the episode
    was cut and the state at the cut, from each chunk's count of later actions (one chunk per later action)."""
    cut = bool(chunks) and not chunks[-1].done
    for j, chunk in enumerate(chunks):
        last = j == len(chunks) - 1
        if len(chunk.later_actions) != len(chunks) - 1 - j or chunk.episode_cut != cut or (chunk.done and not last):
            raise ValueError(
                f"{chunk.source or '<episode>'}: chunk {j} of {len(chunks)} does not follow `episode_to_chunks`: "
                f"{len(chunk.later_actions)} later actions, done {chunk.done}, episode cut {chunk.episode_cut}"
            )


class ChunkView(Sequence[TokenChunk]):
    """Some of a `ChunkStore`'s chunks, in a given order (8 bytes a chunk)."""

    def __init__(self, store: ChunkStore, indices: array):
        self.store, self.indices = store, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> TokenChunk:  # type: ignore[override]
        return self.store[self.indices[k]]


class EpisodeDataModule(L.LightningDataModule):
    """Serves padded batches of token chunks from a JSONL episode file.

    The tokenizer is the model's: it is taken from the LightningModule being trained (or set with
    `attach_tokenizer`), so the data always matches the model. When the file sits in a directory written by
    ``lmrl data``, its manifest is checked first (`prepare.check_dataset_manifest`): the task and variant, the
    data file, and the tokenizer when the model uses the dataset's.

    Args:
        data_path: JSONL episode file (written by ``lmrl data``).
        task: registered task name; gives the history window and, with `variant`, its evaluation.
        variant: task variant (e.g. ``fo`` or ``po`` for the maze).
        window: texts of context per action chunk: ``task`` (the task's environment window), ``all`` (the whole
            episode as one sequence) or a number (at least 1).
        filter: ``none``; ``success`` (successful episodes only) or ``top_fraction`` (best episodes by return):
            filtered BC.
        top_fraction: fraction kept by ``top_fraction``, in (0, 1].
        val_fraction: fraction of episodes held out (before filtering) for the validation loss, in [0, 1): the
            nearest whole number of episodes, drawn by `seed`.
        max_length: longest chunk in tokens (at least 2).
        overflow: ``error`` stops on a chunk longer than max_length; ``truncate`` keeps its last tokens.
        batch_size: chunks per batch (per device).
        num_workers: DataLoader worker processes.
        seed: seed of the train/validation split.
        max_line_bytes: longest episode line accepted, in bytes (`jsonl.MAX_LINE_BYTES`, 1 MiB).
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
        max_line_bytes: int = MAX_LINE_BYTES,
    ):
        super().__init__()
        self.save_hyperparameters()
        for name, value in self.hparams.items():  # each argument as an attribute of the same name
            setattr(self, name, value)
        self.check_arguments()
        self.tokenizer = None
        self.train_chunks: Sequence[TokenChunk] = []
        self.val_chunks: Sequence[TokenChunk] = []

    def check_arguments(self) -> None:
        """One line naming the field, for each argument out of its range (before any data is read)."""
        _require(isinstance(self.data_path, str) and self.data_path.strip() != "", "data_path", "a file path",
                 self.data_path)
        if self.window not in ("task", "all"):
            _require(_is_int(self.window), "window", "'task', 'all' or a number of texts", self.window)
            _require(self.window >= 1, "window", "at least 1", self.window)
        _require(self.filter in ("none", "success", "top_fraction"), "filter", "none, success or top_fraction",
                 self.filter)
        _require(_is_real(self.top_fraction) and 0 < self.top_fraction <= 1, "top_fraction", "in (0, 1]",
                 self.top_fraction)
        _require(_is_real(self.val_fraction) and 0 <= self.val_fraction < 1, "val_fraction", "in [0, 1)",
                 self.val_fraction)
        _require(self.overflow in OVERFLOW_MODES, "overflow", "error or truncate", self.overflow)
        for field, least in (("max_length", 2), ("batch_size", 1), ("num_workers", 0), ("max_line_bytes", 1)):
            value = getattr(self, field)
            _require(_is_int(value), field, "an integer", value)
            _require(value >= least, field, f"at least {least}", value)
        _require(_is_int(self.seed), "seed", "an integer", self.seed)
        check_filter(self.filter, self.top_fraction)
        self.task_variant()  # an unknown task or variant

    def attach_tokenizer(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def task_variant(self) -> Optional[str]:
        """The variant in use: `variant`, or the task's first; None without a task."""
        if self.task is None:
            return None
        from lmrl_lightning.registry import get_task

        spec = get_task(self.task)
        return spec.check_variant(self.variant or spec.variants[0])

    def history_window(self) -> Optional[int]:
        if self.window == "all":
            return None
        if self.window != "task":
            return int(self.window)
        if self.task is None:
            return None
        from lmrl_lightning.registry import get_task

        return get_task(self.task).history_window.get(self.task_variant())

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_chunks:
            return
        module = self.trainer.lightning_module if self.trainer is not None else None
        if self.tokenizer is None:
            if not hasattr(module, "tokenizer"):
                raise RuntimeError("EpisodeDataModule needs a tokenizer: train it with an lmrl algorithm module")
            self.tokenizer = module.tokenizer
        model_tokenizer = getattr(getattr(module, "backbone_config", None), "tokenizer", None)
        check_dataset_manifest(self.data_path, self.task, self.task_variant(), model_tokenizer)
        returns, successes = self.scan_returns()
        # A seeded shuffle: the held-out episodes come first, the training chunks follow the shuffled order (the
        # order of the earlier in-memory split, so that a seed trains exactly as it did before streaming).
        order = list(range(len(returns)))
        random.Random(self.seed).shuffle(order)
        in_val = set(order[:round(self.val_fraction * len(returns))])
        keep = self.selection(returns, successes, in_val)
        train, val = self.tokenise(keep, in_val, len(returns))
        self.train_chunks = train.in_episode_order([i for i in order if i not in in_val])
        self.val_chunks = val.in_episode_order([i for i in order if i in in_val])
        if not self.train_chunks:
            raise LMRLError(f"{self.data_path}: filter {self.filter!r} kept no training episode")

    def episodes(self) -> Iterator[Episode]:
        return iter_episodes(self.data_path, self.max_line_bytes)

    def scan_returns(self) -> tuple[array, bytearray]:
        """First pass: validate every line (before anything is tokenised); each episode's return and success."""
        returns, successes = array("d"), bytearray()
        for episode in self.episodes():
            returns.append(episode.total_reward)
            successes.append(episode.success)
        return returns, successes

    def selection(self, returns: array, successes: bytearray, in_val: set[int]) -> Callable[[int], bool]:
        """Whether the filter keeps episode i; `top_fraction`'s threshold is computed per split."""
        if self.filter == "success":
            return lambda i: bool(successes[i])
        if self.filter == "top_fraction":
            val = [r for i, r in enumerate(returns) if i in in_val]
            train = [r for i, r in enumerate(returns) if i not in in_val]
            thresholds = (top_fraction_threshold(train, self.top_fraction),
                          top_fraction_threshold(val, self.top_fraction))
            return lambda i: returns[i] >= thresholds[i in in_val]
        return lambda i: True

    def tokenise(self, keep: Callable[[int], bool], in_val: set[int], n_episodes: int) -> tuple[ChunkStore, ChunkStore]:
        """Second pass: the kept episodes' chunks, one episode at a time."""
        tokenize, window = TurnTokenizer(self.tokenizer), self.history_window()
        stores = ChunkStore(self.data_path), ChunkStore(self.data_path)
        for i, episode in enumerate(self.episodes()):
            if i >= n_episodes:
                raise DatasetError(f"{episode.source}: the file grew while it was read; read it again")
            if keep(i):
                chunks = episode_to_chunks(episode, tokenize, window, self.max_length, self.overflow)
                stores[i in in_val].add_episode(chunks, int(episode.source.rsplit(":", 1)[1]), i)
        return stores

    def _loader(self, chunks: Sequence[TokenChunk], shuffle: bool) -> DataLoader:
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(ok: bool, field: str, what: str, value: Any) -> None:
    if not ok:
        raise LMRLError(f"data.{field} must be {what}, got {value!r}")
