"""Option checks shared by every loss: each raises a ValueError/TypeError naming the option and what it accepts.

They run when a loss is configured (``get``, ``chunked``) or called, before any tensor work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["check_choice", "check_finite_real", "check_positive", "check_unit_interval"]


def check_finite_real(name: str, value: object) -> float:
    """Return ``value`` as a float; reject bools, non-numbers, NaN and infinities."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def check_unit_interval(name: str, value: object) -> float:
    """Return ``value`` as a float in [0, 1]; anything else is a ValueError (never clamped)."""
    value = check_finite_real(name, value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return value


def check_positive(name: str, value: object) -> float:
    """Return ``value`` as a float > 0."""
    value = check_finite_real(name, value)
    if value <= 0.0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value
