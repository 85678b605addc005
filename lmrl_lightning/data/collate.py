"""Padding and collation of token chunks into the batch every algorithm reads.

Shifted arrays have length T-1: index t is the prediction made at position t of token t+1 (spec §1.6).
"""
from __future__ import annotations

from typing import Sequence

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
    episode, beyond the chunk.
    """
    b = len(chunks)
    t = max(len(c.input_ids) for c in chunks)
    input_ids = torch.full((b, t), pad_id, dtype=torch.long)
    attention = torch.zeros((b, t), dtype=torch.bool)
    is_action = torch.zeros((b, t), dtype=torch.bool)
    rewards = torch.zeros((b, t), dtype=torch.float32)
    s = max([len(c.next_state_ids) for c in chunks if c.next_state_ids] or [1])
    next_ids = torch.full((b, s), pad_id, dtype=torch.long)
    next_mask = torch.zeros((b, s), dtype=torch.bool)
    f = max([len(c.later_actions) for c in chunks] + [1])
    later_lengths = torch.zeros((b, f), dtype=torch.long)
    later_rewards = torch.zeros((b, f), dtype=torch.float32)
    for i, c in enumerate(chunks):
        n = len(c.input_ids)
        if c.later_actions:
            later_lengths[i, : len(c.later_actions)] = torch.tensor([n_tok for n_tok, _ in c.later_actions])
            later_rewards[i, : len(c.later_actions)] = torch.tensor([r for _, r in c.later_actions])
        input_ids[i, :n] = torch.tensor(c.input_ids)
        attention[i, :n] = True
        is_action[i, :n] = torch.tensor(c.is_action)
        rewards[i, :n] = torch.tensor(c.rewards)
        if c.next_state_ids:
            next_ids[i, : len(c.next_state_ids)] = torch.tensor(c.next_state_ids)
            next_mask[i, : len(c.next_state_ids)] = True
    action_mask = is_action[:, 1:] & attention[:, 1:]
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "action_mask": action_mask,
        "rewards": rewards[:, 1:],
        "next_action_index": next_action_index(action_mask),
        "dones": torch.tensor([c.done for c in chunks]),
        "next_state_ids": next_ids,
        "next_state_mask": next_mask,
        "has_next_state": next_mask.any(dim=1),
        "later_action_lengths": later_lengths,
        "later_action_rewards": later_rewards,
    }
