"""Look-up by name, one mechanism for coreset methods and condensation parameterizations / objectives.

A :class:`Registry` is a module-level table filled by its ``register(name, ...)`` decorator. The options of an
entry are the keyword parameters of the registered callable (after the registry's leading arguments), so each
option is declared once, in that signature. Unknown names are a ``ValueError`` listing the valid names; unknown
options a ``TypeError`` listing the accepted ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Entry", "Registry"]


@dataclass(frozen=True)
class Entry:
    """One registered implementation: ``target`` (a function or class), its options with their ``defaults``,
    and the registry's ``attributes`` (e.g. ``needs_model`` of a coreset method)."""

    name: str
    target: Any
    defaults: dict[str, Any]
    attributes: dict[str, Any]
    what: str

    def resolve(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` completed with the defaults and validated by the entry's ``check`` attribute, if any.

        Raises:
            TypeError: an option the entry does not accept (the message lists the accepted ones).
        """
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise TypeError(f"{self.what} {self.name!r} got unknown option(s) {unknown}; "
                            f"accepted options: {sorted(self.defaults)}")
        resolved = {**self.defaults, **options}
        if self.attributes.get("check") is not None:
            self.attributes["check"](**resolved)
        return resolved


class Registry:
    """Name -> :class:`Entry`.

    Args:
        what: what the entries are, for messages ("coreset method").
        argument: the argument the name is passed as, for messages ("method").
        signature_of: maps a registered target to the callable whose keyword parameters are its options
            (default: the target itself; a class gives its constructor's).
        skip: leading parameters of that callable that are not options (e.g. ``group, k, generator``).
        attributes: the attributes ``register`` accepts, with their defaults.
        name_attribute: if set, ``register`` stores the name on the target under this attribute (``kind``).
    """

    def __init__(self, what: str, argument: str, *, signature_of: Callable[[Any], Callable] = lambda t: t,
                 skip: int = 0, attributes: dict[str, Any] | None = None, name_attribute: str | None = None) -> None:
        self.what, self.argument, self.signature_of, self.skip = what, argument, signature_of, skip
        self.attribute_defaults = dict(attributes or {})
        self.name_attribute = name_attribute
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

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what}: {sorted(self._entries)})"
