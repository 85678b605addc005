"""Normalised scores (spec §2.9): 0 = minimum possible return, 50 = dataset average, 100 = expert."""
from __future__ import annotations

from dataclasses import dataclass


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
