"""The element-wise transform some causal LMs apply to their LM-head output before returning ``logits``.

``logits = f(hidden @ W.T + b)`` with ``f(z) = c * tanh(s * z / c)`` (final-logit soft-capping at ``c``,
Gemma-2/3) or ``f(z) = s * z`` (a constant scale: Cohere's ``logit_scale``, Granite's ``1 / logits_scaling``,
HyperCLOVAX's ``logits_scaling``, Falcon-H1's ``lm_head_multiplier``). The chunked losses apply ``f`` to each
chunk and chain its derivative ``f'(z)`` into the analytic backward, so they equal the loss on the model's own
``model(...).logits``. ``head_transform(model)`` reads the transform from the config, in this one place; a
config field that changes the logits in a way not listed here is a ValueError, never a silently different loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["HeadTransform", "head_transform"]

# (model_type, config field) -> how the field enters f: "softcap", "multiply" or "divide"
_KNOWN = {
    ("cohere", "logit_scale"): "multiply",
    ("cohere2", "logit_scale"): "multiply",
    ("granite", "logits_scaling"): "divide",
    ("granitemoe", "logits_scaling"): "divide",
    ("granitemoeshared", "logits_scaling"): "divide",
    ("granitemoehybrid", "logits_scaling"): "divide",
    ("hyperclovax", "logits_scaling"): "multiply",
    ("falcon_h1", "lm_head_multiplier"): "multiply",
}
# fields that, when set on a config, change the logits after the LM head
_FIELDS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "lm_head_multiplier", "output_multiplier")


@dataclass(frozen=True)
class HeadTransform:
    """``f(z) = softcap * tanh(scale * z / softcap)`` when ``softcap`` is set, else ``scale * z``."""

    scale: float = 1.0
    softcap: float | None = None

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.softcap is None

    def __call__(self, z: Tensor) -> Tensor:
        """``f(z)`` (a new tensor; ``z`` is left unchanged)."""
        if self.softcap is None:
            return z if self.scale == 1.0 else z * self.scale
        return torch.tanh(z * (self.scale / self.softcap)) * self.softcap

    def chain(self, grad_out: Tensor, out: Tensor) -> Tensor:
        """``grad_out * f'(z)`` written in terms of ``out = f(z)`` (in place on ``grad_out``)."""
        if self.softcap is None:
            return grad_out if self.scale == 1.0 else grad_out.mul_(self.scale)
        # d/dz c tanh(s z / c) = s (1 - tanh^2) = s (1 - (out / c)^2)
        return grad_out.mul_(1.0 - (out / self.softcap).square()).mul_(self.scale)


def head_transform(model_or_config) -> HeadTransform:
    """The ``HeadTransform`` a causal LM (or its config) applies to its LM-head output.

    Raises:
        ValueError: when the config sets a logit-changing field (``final_logit_softcapping``, ``logit_scale``,
            ``logits_scaling``, ``lm_head_multiplier``, ``output_multiplier``) in a way not supported here.
    """
    cfg = getattr(model_or_config, "config", model_or_config)
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    model_type = getattr(cfg, "model_type", None)
    scale, softcap = 1.0, None
    for name in _FIELDS:
        value = getattr(cfg, name, None)
        if value is None or (name != "final_logit_softcapping" and value == 1.0):
            continue
        how = "softcap" if name == "final_logit_softcapping" else _KNOWN.get((model_type, name))
        if how is None or isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(
                f"the {model_type!r} config sets {name}={value!r}, a transform of the LM-head output that "
                "hf_plugins.losses.head_transform does not know; the chunked losses would optimise a different "
                "objective than the model's own logits. Use the full-logit path (loss_chunk_size=None) or add the "
                "transform to hf_plugins.losses.head_transform"
            )
        if how == "softcap":
            softcap = float(value)
        else:
            scale *= float(value) if how == "multiply" else 1.0 / float(value)
    return HeadTransform(scale, softcap)
