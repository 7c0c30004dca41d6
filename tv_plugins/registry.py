"""Options, declared once and checked the same way everywhere.

Look-up by name is one mechanism for coreset methods and condensation parameterizations / objectives: a
module-level :class:`Registry` filled by its ``register(name, ...)`` decorator. An entry's options are the keyword
parameters of the registered callable, declared in its signature; an unknown name is a ``ValueError`` listing the
valid names, an unknown option a ``TypeError`` listing the accepted ones. The ``check_*`` functions validate values:
a bad value is a ``ValueError`` naming the argument (nothing is clamped or coerced)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Entry", "Registry", "check_choice", "check_int", "check_number"]


@dataclass(frozen=True)
class Entry:
    """A registered ``target`` (function or class), its options' ``defaults`` and its ``attributes``."""

    name: str
    target: Any
    defaults: dict[str, Any]
    attributes: dict[str, Any]
    what: str

    def resolve(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` completed with the defaults and validated by the ``check`` attribute, if any; a
        ``TypeError`` for an option the entry does not accept."""
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise TypeError(f"{self.what} {self.name!r} got unknown option(s) {unknown}; "
                            f"accepted options: {sorted(self.defaults)}")
        resolved = {**self.defaults, **options}
        if self.attributes.get("check") is not None:
            self.attributes["check"](**resolved)
        return resolved


class Registry:
    """Name -> :class:`Entry`. ``what`` / ``argument`` name the entries and the argument in messages;
    ``signature_of(target)`` is the callable whose keyword parameters after the first ``skip`` are the options;
    ``attributes`` are those ``register`` accepts, with defaults; ``register`` stores the name on the target under
    ``name_attribute`` if given."""

    def __init__(self, what: str, argument: str, *, signature_of: Callable[[Any], Callable] = lambda t: t,
                 skip: int = 0, attributes: dict[str, Any] | None = None, name_attribute: str | None = None) -> None:
        self.what, self.argument, self.signature_of, self.skip = what, argument, signature_of, skip
        self.attribute_defaults, self.name_attribute = dict(attributes or {}), name_attribute
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, **attributes: Any) -> Callable[[Any], Any]:
        """Decorator adding its target under ``name`` (a ``ValueError`` if the name is taken)."""
        unknown = sorted(set(attributes) - set(self.attribute_defaults))
        if unknown:
            raise TypeError(f"register() got unknown attribute(s) {unknown}; accepted: {sorted(self.attribute_defaults)}")

        def decorator(target: Any) -> Any:
            if name in self._entries:
                raise ValueError(f"a {self.what} named {name!r} is already registered")
            params = list(inspect.signature(self.signature_of(target)).parameters.values())[self.skip:]
            defaults = {p.name: p.default for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
            if self.name_attribute:
                setattr(target, self.name_attribute, name)
            self._entries[name] = Entry(name, target, defaults, {**self.attribute_defaults, **attributes}, self.what)
            return target

        return decorator

    def __getitem__(self, name: str) -> Entry:
        if not isinstance(name, str) or name not in self._entries:
            raise ValueError(f"{self.argument} must be one of {sorted(self._entries)}, got {name!r}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))


def check_choice(name: str, value: Any, choices: tuple) -> Any:
    """``value`` if it is one of ``choices``; else ``ValueError`` listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_int(name: str, value: Any, minimum: int = 1, *, optional: bool = False) -> Any:
    """``value`` if it is an int (not a bool) ``>= minimum`` (or None when ``optional``); else ``ValueError``."""
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be {'None or ' if optional else ''}an int >= {minimum}, got {value!r}")
    return value


def check_number(name: str, value: Any, *, minimum: float | None = None, positive: bool = False) -> float:
    """``float(value)`` if it is a finite real number (not a bool), ``> 0`` when ``positive`` and ``>= minimum``
    when given; else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (positive and not value > 0) or (minimum is not None and value < minimum):
        bound = " > 0" if positive else f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return float(value)
