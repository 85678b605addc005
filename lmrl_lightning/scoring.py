"""Normalised scores (spec §2.9): 0 = minimum possible return, 50 = dataset average, 100 = expert."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Normalisation:
    minimum: float
    dataset_average: float
    maximum: float

    def __call__(self, raw_return: float) -> float:
        """Piecewise-linear map of a raw return onto the paper's 0-50-100 scale."""
        lo, avg, hi = self.minimum, self.dataset_average, self.maximum
        if raw_return < avg:
            return 50.0 * (raw_return - lo) / (avg - lo)
        return 50.0 + 50.0 * (raw_return - avg) / (hi - avg)


def format_dataset_stats(stats: dict[str, Any], turn_unit: str = "turns") -> str:
    """A dataset's Table 1 statistics (`{"key": {"ours": x, "paper": y}}`) as a text table, ours beside the paper's."""
    rows = [
        ("episodes", "n_episodes", "{:.0f}"),
        (f"mean length ({turn_unit})", "mean_length", "{:.2f}"),
        ("std length", "std_length", "{:.2f}"),
        ("success rate", "success_rate", "{:.3f}"),
        ("mean return", "mean_return", "{:.2f}"),
        ("std return", "std_return", "{:.2f}"),
    ]
    lines = [f"{'':<24}{'ours':>10}{'paper':>10}"]
    for label, key, fmt in rows:
        paper = stats[key]["paper"]
        lines.append(f"{label:<24}{fmt.format(stats[key]['ours']):>10}{'—' if paper is None else fmt.format(paper):>10}")
    return "\n".join(lines)
