"""The loss declaration: one frozen dataclass per loss declares its options, checks them and computes it.

Each option is a field made by ``option(default, check, help)``. The check runs whenever the loss is built
(the class itself, ``get``, the functional form, a trainer config), before any tensor work; the help text
documents the option in the functional form and in the trainer configs. An instance is the configured loss,
``loss(student_logits, teacher_logits, mask=None) -> 0-dim tensor``, and also its per-token kernel:

* ``value(b, a)``: per-token values ``[N]`` (nats) from the valid rows ``b, a: [N, V]`` of student and
  teacher logits (already gathered and upcast to fp32/fp64), differentiable in ``b``;
* ``value_and_grad(b, a)``: the values and ``d value_n / d b_n`` ``[N, V]``, both detached; the full-logit
  backward and the chunked path use it. Every shipped loss has a closed form; the default here
  differentiates ``value`` with autograd (the tests compare the two).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from .kernel import LogPair, log_pair, restrict, softmax_backward
from .reduction import apply_kernel

__all__ = ["LogSpaceLoss", "Loss", "functional", "option", "register", "registered"]

_REGISTRY: dict[str, type[Loss]] = {}
L = TypeVar("L", bound="type[Loss]")


def option(default: Any, check: Callable[[str, object], Any], help: str) -> Any:
    """A loss option: a dataclass field with its default, its check ``(name, value) -> value`` and its help."""
    return field(default=default, metadata={"check": check, "help": help})


def register(name: str) -> Callable[[L], L]:
    """Class decorator: file a ``Loss`` subclass under ``name`` (what ``get`` and the trainer configs take)."""

    def decorate(cls: L) -> L:
        if name in _REGISTRY:
            raise ValueError(f"a loss named {name!r} is already registered ({_REGISTRY[name].__name__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def registered() -> dict[str, type[Loss]]:
    """Every registered loss class by name, in registration order."""
    return dict(_REGISTRY)


@dataclass(frozen=True)
class Loss:
    """A distillation loss with its options fixed; subclasses declare the options and implement ``value``."""

    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, f.metadata["check"](f.name, getattr(self, f.name)))

    @classmethod
    def from_options(cls, options: Mapping[str, object], labels: Mapping[str, str] | None = None) -> Loss:
        """The loss built from keyword ``options``.

        An unknown option is a TypeError listing the valid ones; a bad value is a ValueError (or TypeError for
        a wrong type) naming the option as ``labels`` calls it (e.g. a trainer config's field name).
        """
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise TypeError(
                f"unknown option(s) {unknown} for loss {cls.name!r}; valid options: {', '.join(valid) or 'none'}"
            )
        labels = labels or {}
        checks = {f.name: f.metadata["check"] for f in fields(cls)}
        return cls(**{k: checks[k](labels.get(k, k), v) for k, v in options.items()})

    @property
    def options(self) -> dict[str, object]:
        """The option values by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __call__(self, student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None) -> Tensor:
        """Token-level mean over the valid positions of the whole batch (0 when none is valid)."""
        return apply_kernel(self, student_logits, teacher_logits, mask)

    def value(self, b: Tensor, a: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def value_and_grad(self, b: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        """Per-token values ``[N]`` and their gradient with respect to ``b`` (``[N, V]``), both detached."""
        with torch.enable_grad():
            b = b.detach().requires_grad_(True)
            values = self.value(b, a)
            (grad,) = torch.autograd.grad(values.sum(), b)
        return values.detach(), grad

    def sparse_value_and_grad(self, b: Tensor, ids: Tensor, lp: Tensor, tail: Tensor) -> tuple[Tensor, Tensor]:
        """Per-token values ``[N]`` and gradient ``[N, V]`` against a sparse teacher (top-k ``ids``/``lp`` ``[N, k]``,
        log tail mass ``tail`` ``[N]``): by default the loss on the k+1-bucket coarsening (``losses.sparse``)."""
        from .sparse import bucket_value_and_grad

        return bucket_value_and_grad(self, b, ids, lp, tail)


@dataclass(frozen=True)
class LogSpaceLoss(Loss):
    """A loss given by ``_evaluate(pair, with_grad)``: per-token values and, on request, ``d value / d log q``.

    The gradient with respect to the logits then follows through the log-softmax Jacobian, in closed form.
    """

    def _evaluate(self, pair: LogPair, with_grad: bool) -> tuple[Tensor, Tensor | None]:  # pragma: no cover
        raise NotImplementedError

    def value(self, b: Tensor, a: Tensor) -> Tensor:
        return self._evaluate(log_pair(b, a), False)[0]

    @torch.no_grad()
    def value_and_grad(self, b: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        pair = log_pair(b, a)
        values, grad_lq = self._evaluate(pair, True)
        return values, softmax_backward(restrict(grad_lq, pair.support), pair.q_all)


_LOGIT_ARGS = """    student_logits: ``[..., V]`` student logits (any float dtype; computed in fp32, fp64 for fp64 input).
    teacher_logits: ``[..., V]`` teacher logits (constants: they receive no gradient).
    mask: bool ``[...]``, True where the position counts; None = every position."""


def functional(cls: type[Loss]) -> Callable[..., Tensor]:
    """``fn(student_logits, teacher_logits, mask=None, *, <options>) -> 0-dim tensor``: ``cls`` as a function.

    Its signature and docstring are built from the option fields, so the options stay declared once.
    """

    def fn(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None, **options: Any) -> Tensor:
        return cls.from_options(options)(student_logits, teacher_logits, mask)

    keyword = inspect.Parameter.KEYWORD_ONLY
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter(n, positional) for n in ("student_logits", "teacher_logits")]
    params.append(inspect.Parameter("mask", positional, default=None))
    params += [inspect.Parameter(f.name, keyword, default=f.default) for f in fields(cls) if f.default is not MISSING]
    option_docs = "".join(f"\n    {f.name}: {f.metadata['help']} Default {f.default!r}." for f in fields(cls))
    summary = (cls.__doc__ or "").split("\n\n")[0].strip()
    fn.__signature__ = inspect.Signature(params, return_annotation=Tensor)
    fn.__name__ = fn.__qualname__ = cls.name
    fn.__module__ = cls.__module__
    fn.__doc__ = (
        f"{summary}\n\nThe functional form of ``{cls.__name__}``.\n\nArgs:\n{_LOGIT_ARGS}{option_docs}\n\n"
        "Returns:\n    0-dim tensor: the token-level mean over the valid positions of the whole batch."
    )
    return fn
