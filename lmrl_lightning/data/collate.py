"""Padding and collation of token chunks into the batch every algorithm reads.

Shifted arrays have length T-1: index t is the prediction made at position t of token t+1 (spec §1.6).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from lmrl_lightning.data.tokenize import TokenChunk


def next_action_index(action_mask: torch.Tensor) -> torch.Tensor:
    """For each position, the index of the next action position after it (skipping environment tokens), or -1.

    A value method bootstraps the target of action position t from position next_action_index[t]; -1 marks a
    chunk's last action, which bootstraps from the next chunk (or 0 at a true episode end).
    """
    b, t = action_mask.shape
    idx = torch.arange(t, device=action_mask.device).expand(b, t)
    marked = torch.where(action_mask, idx, torch.full_like(idx, t))
    # suffix minimum of action positions, shifted by one: the first action strictly after t
    suffix_min = torch.flip(torch.cummin(torch.flip(marked, [1]), dim=1).values, [1])
    nxt = torch.cat([suffix_min[:, 1:], torch.full_like(suffix_min[:, :1], t)], dim=1)
    return torch.where(nxt >= t, torch.full_like(nxt, -1), nxt)


def collate_chunks(chunks: Sequence[TokenChunk], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of chunks into a batch.

    Keys: input_ids, attention_mask [B,T]; action_mask, rewards, next_action_index [B,T-1];
    dones [B]; next_state_ids, next_state_mask [B,S] (S >= 1) and has_next_state [B]; later_action_lengths,
    later_action_rewards [B,F] (F >= 1, zero-padded): the token count and reward of each later action of the
    episode, beyond the chunk; episode_cut [B]: the chunk's episode was truncated (`done` false), whichever of its
    chunks this is; cut_state_ids, cut_state_mask [B,C] (C >= 1): the state at that cut (`TokenChunk.cut_state_ids`),
    empty on the other rows.
    """
    t = max(len(c.input_ids) for c in chunks)
    attention = _length_mask([len(c.input_ids) for c in chunks], t)
    is_action = _pad_right([c.is_action for c in chunks], t, False, torch.bool)
    action_mask = is_action[:, 1:] & attention[:, 1:]
    next_ids, next_mask = _pad_states([c.next_state_ids for c in chunks], pad_id)
    cut_ids, cut_mask = _pad_states([c.cut_state_ids for c in chunks], pad_id)
    f = max([len(c.later_actions) for c in chunks] + [1])
    return {
        "input_ids": _pad_right([c.input_ids for c in chunks], t, pad_id, torch.long),
        "attention_mask": attention,
        "action_mask": action_mask,
        "rewards": _pad_right([c.rewards for c in chunks], t, 0.0, torch.float32)[:, 1:],
        "next_action_index": next_action_index(action_mask),
        "dones": torch.tensor([c.done for c in chunks]),
        "next_state_ids": next_ids,
        "next_state_mask": next_mask,
        "has_next_state": next_mask.any(dim=1),
        "later_action_lengths": _pad_right([[n for n, _ in c.later_actions] for c in chunks], f, 0, torch.long),
        "later_action_rewards": _pad_right([[r for _, r in c.later_actions] for c in chunks], f, 0.0, torch.float32),
        "episode_cut": torch.tensor([c.episode_cut for c in chunks], dtype=torch.bool),
        "cut_state_ids": cut_ids,
        "cut_state_mask": cut_mask,
    }


def _pad_states(states: Sequence[Optional[Sequence[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Optional token lists as right-padded ids and their mask, [len(states), S] (S >= 1; None: an empty row)."""
    rows = [ids or [] for ids in states]
    width = max([len(ids) for ids in rows] + [1])
    return _pad_right(rows, width, pad_id, torch.long), _length_mask([len(ids) for ids in rows], width)


def _pad_right(rows: Sequence[Sequence], width: int, fill, dtype: torch.dtype) -> torch.Tensor:
    """The rows left-aligned in a [len(rows), width] tensor, `fill` after each row's end."""
    # One tensor from nested lists: a tensor per row costs more than the rows' tokens here.
    return torch.tensor([[*row, *[fill] * (width - len(row))] for row in rows], dtype=dtype).reshape(len(rows), width)


def _length_mask(lengths: Sequence[int], width: int) -> torch.Tensor:
    """[len(lengths), width] booleans, True on the first `lengths[i]` positions of row i."""
    return torch.arange(width).expand(len(lengths), width) < torch.tensor(lengths).unsqueeze(1)
