"""The one place that reduces or gathers across DDP ranks (every function is the identity without DDP).

Two kinds of cross-rank work exist, and both are plain `torch.distributed` collectives:
  - evaluation and online filtered BC need every episode record on every rank (order, transcripts, std/min/max,
    the top fraction): `all_gather_objects`;
  - PPO's round needs a few float64 sums before its first update (advantage whitening, KL, explained variance):
    `all_reduce` fuses them into one collective.
torchmetrics is not used: it cannot gather Python objects, its metrics default to float32 and sync one collective
per metric state, and the summaries are computed from the gathered episodes anyway.
"""
from __future__ import annotations

from typing import Literal, Optional, Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def distributed() -> bool:
    """Whether more than one DDP rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce(values: Sequence[float], op: Literal["sum", "max"] = "sum") -> list[float]:
    """Sum (or max) of each value over the DDP ranks, in float64 and one collective."""
    t = torch.tensor(list(values), dtype=torch.float64)
    if distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.tolist()


def all_gather_objects(items: list[T]) -> list[T]:
    """Every rank's list, concatenated in rank order."""
    if not distributed():
        return list(items)
    parts: list[Optional[list[T]]] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]
