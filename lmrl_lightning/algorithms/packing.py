"""A training batch's padding skipped: short rows packed side by side, or the padding mask dropped.

A right-padded batch of conversations whose lengths vary pads every row to the longest: a Car Dealer batch of 16 is
about half real tokens. Two exact ways to spend less on it, both giving every real token the hidden state the padded
batch gives it, put back in the batch's [B, T, d] layout (zeros at padding), so losses, masks and indices are unchanged:

- **Packing** (`packed_hidden`): rows that fit together in the longest row's width share one row, each at its own
  positions (0, 1, ... as if alone) and attending causally to its own tokens only (a 4D boolean mask): fewer rows
  through the transformer.
- **No padding mask** (`unmasked_hidden`): in a right-padded row every real token's causal past is real, so causal
  attention alone gives the real tokens the masked batch's result, and PyTorch's SDPA runs its causal kernel instead
  of reading a [B, T, T] mask.

A batch is packed when that leaves at most `PACK_AT_MOST` of its rows (a mask costs more per row than the causal
kernel, so saving a few rows does not pay: Text-Nav's batches of 16 pack into 15), else it runs unmasked.

Only for the model families whose positions come from `position_ids` alone and whose attention is PyTorch's SDPA,
which reads a custom 4D boolean mask as given (`takes_tree_mask`): GPT-2 and Llama blocks (every preset), not a
sliding-window or ALiBi model, whose own masks a custom one would replace. Other models, and batches that are not
right-padded, run as they are.
"""
from __future__ import annotations

from typing import Optional

import torch

from lmrl_lightning.algorithms.distinct import run_distinct
from lmrl_lightning.policies.rerank import takes_tree_mask

PACKED_MODEL_TYPES = ("gpt2", "llama")
# Pack a batch when its rows go into at most this fraction of rows (benchmarks/results/packing_speed.json: Car Dealer's
# 0.58 and PO Maze's 0.73 ran 1.3-1.5x faster packed than unmasked; Text-Nav's 0.95 1.1-1.5x faster unmasked).
PACK_AT_MOST = 0.85


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


def right_padded_lengths(attention_mask: torch.Tensor) -> Optional[list[int]]:
    """Each row's length when every row's real tokens come first (right padding), else None."""
    lengths = attention_mask.long().sum(1)
    columns = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    if not torch.equal(attention_mask.bool(), columns[None, :] < lengths[:, None]):
        return None
    return lengths.tolist()


def packed_hidden(model, input_ids: torch.Tensor, lengths: list[int], bins: list[list[int]]) -> torch.Tensor:
    """`model.base_model`'s last hidden state of a right-padded batch [B, T, d] (zeros at padding), computed with the
    rows of each of `bins` side by side in one row."""
    batch, width = input_ids.shape
    device = input_ids.device
    # Where each row starts in its packed row.
    bin_of = torch.empty(batch, dtype=torch.long)
    start = torch.empty(batch, dtype=torch.long)
    for k, rows in enumerate(bins):
        offset = 0
        for row in rows:
            bin_of[row], start[row] = k, offset
            offset += lengths[row]
    bin_of, start = bin_of.to(device), start.to(device)
    columns = torch.arange(width, device=device)
    src_row, src_col = (columns[None, :] < torch.tensor(lengths, device=device)[:, None]).nonzero(as_tuple=True)
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
    mask = (same & causal) | torch.eye(width, dtype=torch.bool, device=device)
    out = model.base_model(input_ids=packed, attention_mask=mask[:, None], position_ids=positions,
                           use_cache=False).last_hidden_state
    hidden = out.new_zeros(batch, width, out.shape[-1])
    hidden[src_row, src_col] = out[dst_row, dst_col]
    return hidden


def unmasked_hidden(model, input_ids: torch.Tensor) -> torch.Tensor:
    """`model.base_model`'s last hidden state of a right-padded batch without its padding mask: causal attention
    alone (the padding's own outputs differ and are not read). The mask passed is all ones, which transformers turns
    into SDPA's causal kernel as it does no mask, without warning that the batch may be padded."""
    return model.base_model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).last_hidden_state


def padding_skipped_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Optional[torch.Tensor]:
    """The batch's last hidden state packed or unmasked (see the module docstring), or None where neither applies."""
    lengths = right_padded_lengths(attention_mask) if packs(model) else None
    if lengths is None:
        return None
    bins = first_fit_decreasing(lengths, input_ids.shape[1])
    if len(bins) <= PACK_AT_MOST * len(lengths):
        return packed_hidden(model, input_ids, lengths, bins)
    return unmasked_hidden(model, input_ids)


def packs(model) -> bool:
    """Whether `model`'s training batches may run packed or unmasked (see the module docstring)."""
    return getattr(getattr(model, "config", None), "model_type", None) in PACKED_MODEL_TYPES and takes_tree_mask(model)


def rows_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """`model.base_model`'s last hidden state at every position of a training batch [B, T, d], every row run, the
    padding skipped where the model allows (`padding_skipped_hidden`): for callers that match repeated rows
    themselves (PPO's update)."""
    hidden = padding_skipped_hidden(model, input_ids, attention_mask)
    if hidden is None:
        hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return hidden


def batch_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """`rows_hidden` with repeated rows run once (`run_distinct`)."""
    return run_distinct(lambda ids, mask: rows_hidden(model, ids, mask), model, input_ids, attention_mask)
