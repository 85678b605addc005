"""Episode filters for filtered BC (spec §3.3): successful episodes, or the top fraction by return."""
from __future__ import annotations

from typing import Literal, Sequence

from lmrl_lightning.env import Episode
from lmrl_lightning.errors import LMRLError

FilterMode = Literal["none", "success", "top_fraction"]


def filter_episodes(episodes: Sequence[Episode], mode: FilterMode = "none", fraction: float = 0.1) -> list[Episode]:
    """Keep all episodes, the successful ones (meta.success), or those whose undiscounted return is at least
    the return of the episode at the top `fraction` quantile (ties at the threshold are kept)."""
    if mode == "none":
        return list(episodes)
    if mode == "success":
        kept = [e for e in episodes if e.success]
    elif mode == "top_fraction":
        if not 0 < fraction <= 1:
            raise LMRLError(f"top fraction must be in (0, 1], got {fraction}")
        if not episodes:
            return []
        returns = sorted((e.total_reward for e in episodes), reverse=True)
        threshold = returns[max(0, round(fraction * len(returns)) - 1)]
        kept = [e for e in episodes if e.total_reward >= threshold]
    else:
        raise LMRLError(f"unknown filter {mode!r}; valid: none, success, top_fraction")
    return kept
