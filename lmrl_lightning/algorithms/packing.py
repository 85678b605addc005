"""Short rows of a training batch packed side by side into fewer rows.

A right-padded batch of conversations whose lengths vary pads every row to the longest: a Car Dealer batch of 16 is
about 55% real tokens. Rows that fit together in the longest row's width share one row instead, each at its own
positions (0, 1, ... as if alone) and attending causally to its own tokens only (a 4D boolean mask), so every real
token's hidden state is the one the padded batch gives, for fewer rows through the transformer. The hidden states
are put back in the batch's [B, T, d] layout (zeros at padding), so losses, masks and indices are unchanged.

Only for the model families whose positions come from `position_ids` alone and whose attention is PyTorch's SDPA,
which reads a custom 4D boolean mask as given (`takes_tree_mask`): GPT-2 and Llama blocks (every preset), not a
sliding-window or ALiBi model, whose own masks a custom one would replace. Only when packing saves a row: otherwise
the batch runs as it is.
"""
from __future__ import annotations

from typing import Optional

import torch

from lmrl_lightning.algorithms.distinct import run_distinct
from lmrl_lightning.policies.rerank import takes_tree_mask

PACKED_MODEL_TYPES = ("gpt2", "llama")


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Row indices grouped into bins whose lengths sum to at most `capacity`, longest rows placed first, each into
    the first bin with room (every length is at most `capacity`)."""
    bins: list[list[int]] = []
    room: list[int] = []
    for row in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for k, left in enumerate(room):
            if lengths[row] <= left:
                bins[k].append(row)
                room[k] -= lengths[row]
                break
        else:
            bins.append([row])
            room.append(capacity - lengths[row])
    return bins


def packed_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Optional[torch.Tensor]:
    """`model.base_model`'s last hidden state of a right-padded batch [B, T, d] (zeros at padding), computed on the
    rows packed side by side; None when packing would not save a row or the mask is not right padding."""
    batch, width = input_ids.shape
    lengths = attention_mask.long().sum(1)
    columns = torch.arange(width, device=input_ids.device)
    if batch < 2 or not torch.equal(attention_mask.bool(), columns[None, :] < lengths[:, None]):
        return None
    bins = first_fit_decreasing(lengths.tolist(), width)
    if len(bins) == batch:
        return None
    # Where each row starts in its packed row.
    bin_of = torch.empty(batch, dtype=torch.long)
    start = torch.empty(batch, dtype=torch.long)
    for k, rows in enumerate(bins):
        offset = 0
        for row in rows:
            bin_of[row], start[row] = k, offset
            offset += int(lengths[row])
    bin_of, start = bin_of.to(input_ids.device), start.to(input_ids.device)
    src_row, src_col = attention_mask.bool().nonzero(as_tuple=True)  # every real token, row-major
    dst_row, dst_col = bin_of[src_row], start[src_row] + src_col
    packed = input_ids.new_zeros(len(bins), width)
    packed[dst_row, dst_col] = input_ids[src_row, src_col]
    positions = torch.zeros_like(packed)
    positions[dst_row, dst_col] = src_col
    segment = torch.full_like(packed, -1)  # which batch row each packed token is; -1: padding
    segment[dst_row, dst_col] = src_row
    same = (segment[:, :, None] == segment[:, None, :]) & (segment[:, None, :] >= 0)
    causal = columns[None, :] <= columns[:, None]
    # A padding query sees itself, so that no query row is empty (SDPA would return NaN there).
    mask = (same & causal) | torch.eye(width, dtype=torch.bool, device=input_ids.device)
    out = model.base_model(input_ids=packed, attention_mask=mask[:, None], position_ids=positions,
                           use_cache=False).last_hidden_state
    hidden = out.new_zeros(batch, width, out.shape[-1])
    hidden[src_row, src_col] = out[dst_row, dst_col]
    return hidden


def packs(model) -> bool:
    """Whether `model`'s training batches run packed (see the module docstring)."""
    return getattr(getattr(model, "config", None), "model_type", None) in PACKED_MODEL_TYPES and takes_tree_mask(model)


def batch_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """`model.base_model`'s last hidden state at every position of a training batch [B, T, d]: repeated rows run once
    (`run_distinct`), short rows packed side by side (`packed_hidden`) where the attention reads a 4D mask."""
    def run(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = packed_hidden(model, ids, mask) if packs(model) else None
        if hidden is None:
            hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
        return hidden

    return run_distinct(run, model, input_ids, attention_mask)
