"""Shared machinery of the online algorithms (PPO, online filtered BC; spec §3.6, §3.7).

One training epoch is one round. The module's train dataloader iterates a `RoundDataset`: starting the
iteration makes the module roll its current policy out against the task's simulator (the same batched rollout
engine as evaluation), turn the episodes into the round's training data, and yield that round's minibatches.
A round plays exactly `rollouts.episodes_per_round` episodes over all DDP ranks: round r's episodes have the global
indices r * n ... r * n + n - 1 (n episodes a round), and rank k of W plays every W-th of them from the k-th (as the
evaluation deals its episodes), so the ranks' shares are disjoint and differ by at most one episode. An episode's
start state and sampling seeds derive from its index alone. The round's statistics are reduced across ranks as
sums and counts (unequal shares weigh each episode once), and every rank yields the same number of minibatches
(shorter shards wrap around), so the ranks' optimiser steps stay in lockstep. Round r's episodes depend only on
(seed, r, n) and the weights, so a run resumed from the checkpoint of round r replays round r + 1 exactly.
"""
from __future__ import annotations

import math
import time
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, IterableDataset

from lmrl_lightning.algorithms.base import LMRLModule
from lmrl_lightning.validation import as_settings
from lmrl_lightning.algorithms.settings import Rollouts, Updates
from lmrl_lightning.data.tokenize import TokenChunk, TurnTokenizer, episode_to_chunks
from lmrl_lightning.distributed import all_reduce
from lmrl_lightning.env import Episode
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.policies import as_decoding
from lmrl_lightning.registry import EvalEpisode, TaskSpec, get_task, task_origin
from lmrl_lightning.rollout import rollout, turn_seed


def minibatch_plan(n_items: int, batch_size: int, n_batches: int, epochs: int, generator: torch.Generator):
    """Index lists of `epochs` shuffled passes over `n_items` items in `n_batches` batches of `batch_size` each;
    when `n_batches * batch_size` exceeds the items, a pass wraps around its permutation."""
    plan = []
    for _ in range(epochs):
        order = torch.randperm(n_items, generator=generator)
        need = n_batches * batch_size
        order = order.repeat(math.ceil(need / max(1, n_items)))[:need]
        plan += [order[i * batch_size:(i + 1) * batch_size].tolist() for i in range(n_batches)]
    return plan


def round_episode_indices(round_index: int, episodes_per_round: int, rank: int = 0, world_size: int = 1) -> range:
    """Global indices of `rank`'s episodes of round `round_index`: of the round's `episodes_per_round` indices
    (`round_index * episodes_per_round` onwards), every `world_size`-th from the `rank`-th. Over the ranks they are
    the round's indices exactly once each, whatever the world size."""
    first = round_index * episodes_per_round
    return range(first, first + episodes_per_round)[rank::world_size]


class RoundDataset(IterableDataset):
    """Iterating collects one round with the module's current policy and yields the round's minibatches."""

    def __init__(self, module: "OnlineModule"):
        self.module = module

    def __iter__(self) -> Iterator[Any]:
        yield from self.module.start_round()


class OnlineModule(LMRLModule):
    """Base of the online algorithms: rollouts inside the training loop, one round per epoch.

    Args (beyond `LMRLModule`'s):
        rollouts: what each round plays (task, episodes per round, batching, seed, decoding; see `Rollouts`).
        updates: how the module trains on a round (minibatch size, passes, chunk length; see `Updates`).
    """

    def __init__(self, *, rollouts: Rollouts = Rollouts(), updates: Updates = Updates(), **kwargs):
        rollouts = as_settings(rollouts, Rollouts, "model.rollouts")
        updates = as_settings(updates, Updates, "model.updates")
        super().__init__(**kwargs)
        self.rollouts, self.updates = rollouts, updates
        self.task_spec: TaskSpec = get_task(rollouts.task)
        self.variant = self.task_spec.check_variant(rollouts.variant or self.task_spec.variants[0])
        self.rollout_decoding = as_decoding(rollouts.decoding, self.task_spec.default_decoding)
        # Rounds finished, in the state dict: a resumed run continues with the next round's seeds whatever
        # Lightning's epoch counter says while it restarts.
        self.register_buffer("rounds_done", torch.zeros((), dtype=torch.long))
        self.round_history: list[dict[str, float]] = []
        self._round: dict[str, float] = {}
        self._round_started = 0.0

    # ---- data -------------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        return DataLoader(RoundDataset(self), batch_size=None)

    @property
    def world(self) -> tuple[int, int]:
        trainer = self._trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    @property
    def round_index(self) -> int:
        return int(self.rounds_done)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        world = self.world[1]
        if self.rollouts.episodes_per_round < world:  # the same test on every rank: all stop together
            raise LMRLError(
                f"model.rollouts.episodes_per_round ({self.rollouts.episodes_per_round}) is smaller than the "
                f"{world} DDP processes: every process must play at least one episode a round"
            )

    def round_specs(self) -> list[EvalEpisode]:
        """This rank's episodes of the current round (`round_episode_indices`): indices unique over rounds and
        ranks, seeds derived from them (reset options None: the task draws the start state from the seed)."""
        rank, world = self.world
        indices = round_episode_indices(self.round_index, self.rollouts.episodes_per_round, rank, world)
        return [EvalEpisode(i, turn_seed(self.rollouts.seed + 1, i, 0)) for i in indices]

    def collect(self) -> list[Episode]:
        """Roll this rank's episodes of the round out with the current policy."""
        policy = self.policy(self.rollout_decoding, self.task_spec.rerank_candidates())
        env = self.task_spec.make_env(self.variant, **(self.rollouts.env_options or {}))
        return rollout(env, policy, self.round_specs(), self.rollouts.batch_size, policy_seed=self.rollouts.seed)

    def to_chunks(self, episodes: Sequence[Episode]) -> list[list[TokenChunk]]:
        """Each episode's training chunks, in the task's history window (long chunks keep their last tokens)."""
        tokenize = TurnTokenizer(self.tokenizer)
        window = self.task_spec.history_window.get(self.variant)
        return [episode_to_chunks(e, tokenize, window, self.updates.max_length, "truncate") for e in episodes]

    def round_statistics(self, episodes: Sequence[Episode]) -> dict[str, float]:
        """Mean return, success rate, episode length and normalised score of the round over all ranks (no
        normalised score when `env_options` set the rewards: it would not be on the task's scale)."""
        successes = [e.success for e in episodes]
        total_return, n, n_success, total_length = all_reduce(
            [sum(e.total_reward for e in episodes), len(episodes), sum(successes), sum(e.num_actions for e in episodes)]
        )
        mean_return = total_return / n
        stats = {"episodes": n, "mean_return": mean_return, "mean_length": total_length / n}
        if all("success" in e.meta for e in episodes):
            stats["success_rate"] = n_success / n
        normalisation = self.task_spec.normalisation.get(self.variant)
        # Normalised only on the task's own reward scale: env_options may change it (Wordle's -10 bad words).
        if normalisation is not None and not self.rollouts.env_options:
            stats["normalised_score"] = normalisation(mean_return)
        return stats

    def start_round(self) -> list[Any]:
        """Collect the round and return its minibatches (the same number on every rank)."""
        self._round_started = time.perf_counter()
        episodes = self.collect()
        rollout_seconds = time.perf_counter() - self._round_started
        self._round = self.round_statistics(episodes)
        self._round["rollout_seconds"] = all_reduce([rollout_seconds], "max")[0]
        self._round["episodes_per_second"] = self._round["episodes"] / max(self._round["rollout_seconds"], 1e-9)
        generator = torch.Generator().manual_seed(turn_seed(self.rollouts.seed + 2, self.round_index, self.world[0]))
        return self.prepare_round(episodes, generator)

    def prepare_round(self, episodes: list[Episode], generator: torch.Generator) -> list[Any]:
        """The subclass's minibatches of this round (called on every rank with its own episodes)."""
        raise NotImplementedError

    def on_train_epoch_end(self) -> None:
        if not self._round:
            return
        self._round["update_seconds"] = time.perf_counter() - self._round_started - self._round["rollout_seconds"]
        self.round_history.append(dict(self._round))
        self.rounds_done += 1
        # Already reduced over ranks: every rank logs the same numbers.
        self.log_dict({f"round/{k}": float(v) for k, v in self._round.items()}, on_epoch=True, sync_dist=False)
        self._round = {}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        name = self.task_spec.name
        checkpoint["lmrl"].update(task=name, variant=self.variant, task_origin=task_origin(name))
