"""Option checks: each takes ``(name, value)``, returns the value normalized and raises naming the option.

A loss declares one check per option (``hf_plugins.losses.loss.option``); it runs when the loss is built
(``get``, ``chunked``, the functional form, a trainer config), before any tensor work.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

__all__ = ["finite_real", "one_of", "positive", "unit_interval"]


def finite_real(name: str, value: object) -> float:
    """``value`` as a float; bools and non-numbers are a TypeError, NaN and infinities a ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def unit_interval(name: str, value: object) -> float:
    """``value`` as a float in [0, 1]; anything else is a ValueError (never clamped)."""
    value = finite_real(name, value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return value


def positive(name: str, value: object) -> float:
    """``value`` as a float > 0."""
    value = finite_real(name, value)
    if value <= 0.0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def one_of(choices: Sequence[str]) -> Callable[[str, object], str]:
    """A check accepting exactly the strings in ``choices``."""

    def check(name: str, value: object) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
        return value

    return check
