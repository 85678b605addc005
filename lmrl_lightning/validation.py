"""Checks of configuration values: one `LMRLError` line naming the field, the allowed range and the value given.

Constructors call these first, so that a bad value stops `lmrl fit` before any model is built, rather than
training quietly with a negative learning rate or a NaN temperature.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, TypeVar

from lmrl_lightning.errors import LMRLError


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_number(
    field: str,
    value,
    low: Optional[float] = None,
    high: Optional[float] = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """`value` is a finite number within [low, high] (an end is excluded when its `*_open` flag is set)."""
    ok = _is_real(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if ok:
        return
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high:g}")
    raise LMRLError(f"{field} must be a finite number{' ' + ' and '.join(bounds) if bounds else ''}, got {value!r}")


def check_int(field: str, value, low: int = 1) -> None:
    """`value` is an integer of at least `low`."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise LMRLError(f"{field} must be an integer >= {low}, got {value!r}")


def check_bool(field: str, value) -> None:
    """`value` is true or false (not a string or a number that reads as one)."""
    if not isinstance(value, bool):
        raise LMRLError(f"{field}: expected true or false, got {value!r}")


def check_choice(field: str, value, choices) -> None:
    if value not in choices:
        raise LMRLError(f"{field} must be one of {', '.join(map(str, choices))}, got {value!r}")


S = TypeVar("S")


def as_settings(value: Any, cls: type[S], field: str) -> S:
    """A settings group from a constructor argument: the group itself, or its fields as a mapping (as checkpoints
    store it; a missing field takes its default). `field` is the argument as the CLI spells it (``model.optim``)."""
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        try:
            return cls(**value)
        except TypeError as e:  # an unknown or missing field
            raise LMRLError(f"{field}: {e}") from None
    raise LMRLError(f"{field} must be {cls.__name__} settings (a mapping of its fields), got {value!r}")
