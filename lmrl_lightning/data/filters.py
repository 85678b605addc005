"""Episode filters for filtered BC (spec §3.3): successful episodes, or the top fraction by return."""
from __future__ import annotations

from typing import Literal, Sequence

from lmrl_lightning.env import Episode
from lmrl_lightning.errors import LMRLError

FilterMode = Literal["none", "success", "top_fraction"]
FILTER_MODES: tuple[str, ...] = ("none", "success", "top_fraction")


def check_filter(mode: str, fraction: float) -> None:
    if mode not in FILTER_MODES:
        raise LMRLError(f"unknown filter {mode!r}; valid: {', '.join(FILTER_MODES)}")
    if mode == "top_fraction" and not 0 < fraction <= 1:  # NaN fails too
        raise LMRLError(f"top fraction must be in (0, 1], got {fraction}")


def top_fraction_threshold(returns: Sequence[float], fraction: float) -> float:
    """The return of the episode at the top `fraction` quantile (at least the best episode); episodes whose
    return is at least this are kept, ties included. Needs only the returns, so a streaming reader can compute
    it in a first pass."""
    if not returns:
        return float("inf")
    ranked = sorted(returns, reverse=True)
    return ranked[max(0, round(fraction * len(ranked)) - 1)]


def filter_episodes(episodes: Sequence[Episode], mode: FilterMode = "none", fraction: float = 0.1) -> list[Episode]:
    """Keep all episodes, the successful ones (meta.success), or those whose undiscounted return is at least
    the return of the episode at the top `fraction` quantile (ties at the threshold are kept)."""
    check_filter(mode, fraction)
    if mode == "none":
        return list(episodes)
    if mode == "success":
        return [e for e in episodes if e.success]
    threshold = top_fraction_threshold([e.total_reward for e in episodes], fraction)
    return [e for e in episodes if e.total_reward >= threshold]
