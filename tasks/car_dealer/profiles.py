"""Buyer profiles: spec §2.8's episode randomisation.

A profile is what the original's `buyer_info` holds: a personality among ten, a preferred brand among thirteen
(with its article, "a Toyota"), a body type among six, one to four wanted features among eight, and a budget among
10k, 30k, 50k, 70k and 90k. `draw_profile` draws them in the original's order from one `random.Random`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Mapping

from lmrl_lightning.errors import LMRLError

PERSONALITIES: tuple[str, ...] = (
    "abusive", "angry", "insulting", "polite", "respectful", "rude", "sarcastic", "talkative", "toxic",
    "uncommunicative",
)
BRANDS: tuple[str, ...] = (
    "a Volkswagen", "a Lexus", "a Ford", "a Mazda", "a Hyundai", "a Toyota", "a Mercedes-Benz", "a BMW", "an Audi",
    "a Subaru", "a Honda", "a Porsche", "a Tesla",
)
BODY_TYPES: tuple[str, ...] = ("luxury", "sedan", "convertible", "truck", "electric", "SUV")
FEATURES: tuple[str, ...] = (
    "backup camera", "navigation system", "heated seats", "leather seats", "third-row seating",
    "blind spot monitoring", "sunroof", "Apple CarPlay",
)
BUDGETS: tuple[int, ...] = (10_000, 30_000, 50_000, 70_000, 90_000)
MAX_FEATURES = 4

BRAND_NAMES: tuple[str, ...] = tuple(brand.split(" ", 1)[1] for brand in BRANDS)


def brand_name(brand: str) -> str:
    """"a Toyota" -> "Toyota" (the profile keeps the original's article)."""
    return brand.split(" ", 1)[1] if brand.startswith(("a ", "an ")) else brand


def with_article(name: str) -> str:
    return f"an {name}" if name[0] in "AEIOU" else f"a {name}"


@dataclass(frozen=True)
class BuyerProfile:
    """What the buyer wants and can pay (hidden from the seller; the LM buyer's prompt states it)."""

    personality: str
    brand: str  # with its article, as the original: "a Toyota"
    body_type: str
    features: tuple[str, ...]
    budget: int

    @property
    def car(self) -> str:
        """"Toyota SUV": the preferred model."""
        return f"{brand_name(self.brand)} {self.body_type}"

    def info_line(self) -> str:
        """The buyer-info line of the LM buyer's prompt (the original's `create_buyer_info_str`)."""
        return (f"Personality: {self.personality}. Prefers {self.brand} {self.body_type} with "
                f"{', '.join(self.features)}. Budget: ${self.budget:,}\n")

    def as_buyer_info(self) -> dict[str, Any]:
        """The original's `buyer_info` mapping (its data files and episode meta)."""
        return {"personality": self.personality, "preferred_brands": self.brand, "preferred_type": self.body_type,
                "preferred_features": list(self.features), "budget": self.budget}

    @classmethod
    def from_buyer_info(cls, info: Any, where: str = "buyer_info") -> "BuyerProfile":
        """A profile from a `buyer_info` mapping; a missing or out-of-range field is one `LMRLError` naming it."""
        if not isinstance(info, Mapping):
            raise LMRLError(f"{where}: expected a mapping with personality, preferred_brands, preferred_type, "
                            f"preferred_features and budget, got {type(info).__name__}")
        for key in ("personality", "preferred_brands", "preferred_type", "preferred_features", "budget"):
            if key not in info:
                raise LMRLError(f"{where}: missing field '{key}'")
        checks = (("personality", PERSONALITIES), ("preferred_brands", BRANDS), ("preferred_type", BODY_TYPES))
        for key, valid in checks:
            if info[key] not in valid:
                raise LMRLError(f"{where}.{key}: {str(info[key])[:40]!r} is not one of {', '.join(valid)}")
        features = info["preferred_features"]
        if (not isinstance(features, (list, tuple)) or not 1 <= len(features) <= len(FEATURES)
                or any(f not in FEATURES for f in features) or len(set(features)) != len(features)):
            raise LMRLError(f"{where}.preferred_features: expected 1 to {len(FEATURES)} distinct features from "
                            f"{', '.join(FEATURES)}, got {str(features)[:80]}")
        budget = info["budget"]
        if isinstance(budget, bool) or not isinstance(budget, int) or not 0 < budget <= 10_000_000:
            raise LMRLError(f"{where}.budget: expected a whole number of dollars in 1..10,000,000, got {budget!r}")
        return cls(info["personality"], info["preferred_brands"], info["preferred_type"], tuple(features), budget)


def draw_profile(rng: random.Random) -> BuyerProfile:
    """A random profile, drawn in the original's order (personality, brand, type, 1-4 features, budget)."""
    personality = rng.choice(PERSONALITIES)
    brand = rng.choice(BRANDS)
    body_type = rng.choice(BODY_TYPES)
    features = tuple(rng.sample(FEATURES, k=rng.randint(1, MAX_FEATURES)))
    return BuyerProfile(personality, brand, body_type, features, rng.choice(BUDGETS))
