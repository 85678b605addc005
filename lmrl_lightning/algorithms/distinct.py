"""Rows that repeat within a batch run once.

Chunked datasets repeat whole rows: a FO-Maze batch of 64 (state, action) chunks holds about 46 distinct ones (the
dataset's 23k transitions are 100 distinct pairs), a chess batch repeats opening positions. A forward pass over the
distinct rows, indexed back to every row, gives the same outputs and, since each copy's loss flows back through the
shared output, the same gradient, for less compute. Not with active dropout: copies would then share one mask.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch


def distinct_row_index(key: torch.Tensor) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """For the rows of `key` [B, K]: the first row of each distinct one [U] and each row's index among them [B];
    None when no two rows are the same."""
    unique, inverse = torch.unique(key, dim=0, return_inverse=True)
    rows = key.shape[0]
    if len(unique) == rows:
        return None
    first = torch.full((len(unique),), rows, dtype=torch.long, device=key.device).scatter_reduce(
        0, inverse, torch.arange(rows, device=key.device), "amin"
    )
    return first, inverse


def token_row_key(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """What a transformer sees of each row: its tokens where attended, and which positions are (pads ignored)."""
    return torch.cat([input_ids.masked_fill(attention_mask == 0, -1), attention_mask.long()], dim=1)


def dropout_active(module: torch.nn.Module) -> bool:
    """Whether a forward pass of `module` is random (a dropout layer or Llama's attention dropout, in train mode)."""
    for m in module.modules():
        if m.training and (
            (isinstance(m, torch.nn.Dropout) and m.p > 0) or float(getattr(m, "attention_dropout", 0) or 0) > 0
        ):
            return True
    return False


def run_distinct(
    run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], module: torch.nn.Module,
    input_ids: torch.Tensor, attention_mask: torch.Tensor,
) -> torch.Tensor:
    """`run(input_ids, attention_mask)` (row-wise outputs of `module`) with each distinct row run once."""
    found = None if dropout_active(module) else distinct_row_index(token_row_key(input_ids, attention_mask))
    if found is None:
        return run(input_ids, attention_mask)
    first, inverse = found
    return run(input_ids[first], attention_mask[first])[inverse]
