"""Last-layer quantities of a classifier: head inputs ``z``, logits, and the closed-form per-sample
cross-entropy gradient and Hessian diagonal w.r.t. the final ``nn.Linear`` (no BackPACK, no backward).

Parameter layout of the head ``psi = (b, vec(W))`` (``P = C (D + 1)``), as in the official LCMat code:
first the ``C`` bias entries, then ``W`` row-major, i.e. coordinate ``C + k D + j`` is ``W[k, j]``.
With ``p = softmax(o)``, ``r = p - onehot(y)`` and ``q = p (1 - p)``:

* gradient      ``g = (r, r ⊗ z)``        (``g[C + kD + j] = r_k z_j``)
* Hessian diag  ``h = (q, q ⊗ z²)``       (``h[C + kD + j] = q_k z_j²``)
* Gram identity ``<g_i, g_j> = (r_i · r_j)(1 + z_i · z_j)``.

Internally the quantities are kept factorised as ``[C, D + 1]`` outer products (column 0 = bias), so
nothing of size ``N x P`` is materialised unless :func:`per_sample_gradients` is called explicitly. The closed
forms are plain differentiable tensor expressions in the dtype of their inputs (selection uses float64).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..data import image_batches

__all__ = ["LastLayerOutputs", "extract_last_layer", "find_last_layer", "gradient_distances", "gradient_gram",
           "hessian_diagonal", "per_sample_gradients"]


def find_last_layer(model: nn.Module, last_layer: nn.Module | str | None = None) -> nn.Linear:
    """The final ``nn.Linear`` of ``model``: ``last_layer`` (a submodule or its dotted name) or, by default,
    the last ``nn.Linear`` in ``model.modules()``.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or ``last_layer`` is neither a module nor a name.
        ValueError: the model has no ``nn.Linear``, the named module does not exist, is not part of the
            model or is not an ``nn.Linear``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if last_layer is None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(f"model ({type(model).__name__}) has no nn.Linear layer; coreset selection needs a final "
                             "linear classifier. Pass last_layer=<the nn.Linear producing the logits> (a module or its name).")
        return linears[-1]
    if not isinstance(last_layer, (str, nn.Module)):
        raise TypeError(f"last_layer must be an nn.Linear, its dotted name or None, got {type(last_layer).__name__}")
    try:
        module = model.get_submodule(last_layer) if isinstance(last_layer, str) else last_layer
    except AttributeError as err:
        raise ValueError(f"last_layer={last_layer!r} is not a submodule of the model") from err
    if not any(m is module for m in model.modules()):
        raise ValueError("last_layer is not a submodule of the model")
    if not isinstance(module, nn.Linear):
        raise ValueError(f"last_layer must be an nn.Linear, got {type(module).__name__}")
    return module


@dataclass(eq=False)
class LastLayerOutputs:
    """Head inputs and logits of a set of samples: ``features [N, D]`` (the input ``z`` of the final linear
    layer), ``logits [N, C]``, ``labels [N]`` int64, a copy of the head's ``weight [C, D]`` and ``bias [C]`` (zeros
    if it has none); float64 when extracted by :func:`extract_last_layer`."""

    features: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    @property
    def probs(self) -> torch.Tensor:
        """``softmax(logits)`` ``[N, C]``."""
        return torch.softmax(self.logits, dim=1)

    @property
    def residuals(self) -> torch.Tensor:
        """``r = p - onehot(y)`` ``[N, C]`` (the gradient of CE w.r.t. the logits)."""
        r = self.probs.clone()
        r[torch.arange(len(r)), self.labels] -= 1.0
        return r

    @property
    def curvatures(self) -> torch.Tensor:
        """``q = p (1 - p)`` ``[N, C]`` (diagonal of the CE Hessian w.r.t. the logits)."""
        p = self.probs
        return p * (1.0 - p)

    @property
    def augmented_features(self) -> torch.Tensor:
        """``z~ = (1, z)`` ``[N, D + 1]`` (the leading 1 multiplies the bias)."""
        return torch.cat([torch.ones(len(self.features), 1, dtype=self.features.dtype), self.features], dim=1)

    def subset(self, rows: torch.Tensor) -> LastLayerOutputs:
        """The same quantities restricted to ``rows`` (positions into this object)."""
        return LastLayerOutputs(self.features[rows], self.logits[rows], self.labels[rows], self.weight, self.bias)


def _flatten_head(per_class: torch.Tensor, per_feature: torch.Tensor) -> torch.Tensor:
    """``[N, C] x [N, D+1] -> [N, P]`` in the bias-first / row-major layout of the module docstring."""
    bias = per_class * per_feature[:, :1]
    weight = per_class[:, :, None] * per_feature[:, None, 1:]
    return torch.cat([bias, weight.flatten(1)], dim=1)


def per_sample_gradients(features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample CE gradients w.r.t. the head ``(b, W)``, ``[N, C (D + 1)]`` (materialised; small N only)."""
    out = LastLayerOutputs(features, logits, labels, torch.empty(0), torch.empty(0))
    return _flatten_head(out.residuals, out.augmented_features)


def hessian_diagonal(features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per-sample diagonal of the CE Hessian w.r.t. ``(b, W)``, ``[N, C (D + 1)]``; independent of the label."""
    out = LastLayerOutputs(features, logits, torch.zeros(len(logits), dtype=torch.long), torch.empty(0), torch.empty(0))
    return _flatten_head(out.curvatures, out.augmented_features**2)


def gradient_gram(outputs: LastLayerOutputs) -> torch.Tensor:
    """``G G^T`` of the per-sample head gradients, ``[N, N]`` float64, via ``(r_i·r_j)(1 + z_i·z_j)``."""
    r, zt = outputs.residuals, outputs.augmented_features
    return (r @ r.T) * (zt @ zt.T)


def gradient_distances(outputs: LastLayerOutputs, gram: torch.Tensor | None = None) -> torch.Tensor:
    """Pairwise Euclidean distances ``||g_i - g_j||_2`` ``[N, N]`` float64 (clamped at 0 before the root)."""
    gram = gradient_gram(outputs) if gram is None else gram
    sq = gram.diagonal()
    d2 = (sq[:, None] + sq[None, :] - 2.0 * gram).clamp_min_(0.0)
    d2.fill_diagonal_(0.0)
    return d2.sqrt_()


def _distributed_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _captured(captured: dict[str, torch.Tensor], out: Any, head: nn.Linear, positions: torch.Tensor):
    """The head's input and output of one batch, checked against what the model returned."""
    if "z" not in captured:
        raise ValueError(f"the layer used as final linear layer ({head}) is not called by model.forward; pass "
                         "last_layer=<the final nn.Linear> (a module or its dotted name)")
    z, o = captured["z"], captured["o"]
    finite = torch.isfinite(z).flatten(1).all(1) & torch.isfinite(o).flatten(1).all(1)
    if not finite.all():
        raise FloatingPointError(
            f"the selection model produced non-finite features or logits for dataset items "
            f"{positions[~finite][:5].tolist()} although their inputs are finite: its weights diverged "
            "(lower warmup_lr) or it overflows on these inputs")
    final = out if isinstance(out, torch.Tensor) else getattr(out, "logits", None)
    if final is None and isinstance(out, dict):
        final = out.get("logits")
    if final is not None and (final.shape != o.shape or not torch.equal(final, o)):
        raise ValueError(f"the last nn.Linear found ({head}) does not produce the model's output; pass "
                         "last_layer=<the final nn.Linear> (a module or its dotted name)")
    if z.ndim != 2:
        raise ValueError(f"the final linear layer must receive [B, D] features, got {tuple(z.shape)}")
    return z.detach().double().cpu(), o.detach().double().cpu()


def _sum_across_ranks(features: torch.Tensor | None, logits: torch.Tensor | None, n: int):
    """Every entry is non-zero on at most one rank, so the all-reduced sum is exact."""
    dims = torch.tensor([0, 0] if features is None else [features.shape[1], logits.shape[1]])
    dist.all_reduce(dims, op=dist.ReduceOp.MAX)
    if features is None:
        features = torch.zeros(n, int(dims[0]), dtype=torch.float64)
        logits = torch.zeros(n, int(dims[1]), dtype=torch.float64)
    dist.all_reduce(features)
    dist.all_reduce(logits)
    return features, logits


@torch.no_grad()
def extract_last_layer(model: nn.Module, dataset: Dataset, labels: torch.Tensor, *,
                       last_layer: nn.Module | str | None = None, batch_size: int = 128,
                       device: torch.device | str | None = None, progress: bool = True) -> LastLayerOutputs:
    """One forward pass over ``dataset`` (a ``DataLoader``; model in eval mode, modes restored afterwards)
    capturing the input and output of the final linear layer with a hook (no model surgery).

    When ``torch.distributed`` is initialised with several processes, batch ``b`` (fixed composition
    ``[b * batch_size, (b + 1) * batch_size)``) is computed by rank ``b % world_size`` and the results are
    summed across ranks, so every rank ends with the same tensors as a single process would compute.

    Args:
        dataset: map-style, items ``(image, label, ...)`` (images as in :mod:`tv_plugins.data`); ``labels``: its
            ``[N]`` labels.
    Raises:
        ValueError: a non-finite input image, the head is not the layer producing the model's output, or
            shapes disagree.  FloatingPointError: the model's features or logits are not finite.
    """
    head = find_last_layer(model, last_layer)
    param = next(model.parameters(), None)
    device = torch.device(device if device is not None else (param.device if param is not None else "cpu"))
    if param is not None and param.device.type != device.type:
        raise ValueError(f"device={device} but the model's parameters are on {param.device}; move the model first")
    n = len(dataset)
    rank, world = _distributed_world()
    batches = [range(s, min(n, s + batch_size)) for b, s in enumerate(range(0, n, batch_size)) if b % world == rank]
    captured: dict[str, torch.Tensor] = {}
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    handle = head.register_forward_hook(lambda module, inputs, output: captured.update(z=inputs[0], o=output))
    features = logits = None
    try:
        for positions, x, _ in tqdm(image_batches(dataset, batches), total=len(batches), desc="last-layer features",
                                    disable=not progress, leave=False):
            captured.clear()
            z, o = _captured(captured, model(x.to(device)), head, positions)
            if features is None:
                features = torch.zeros(n, z.shape[1], dtype=torch.float64)
                logits = torch.zeros(n, o.shape[1], dtype=torch.float64)
            features[positions], logits[positions] = z, o
    finally:
        handle.remove()
        for module, training in modes:
            module.training = training
    if world > 1:
        features, logits = _sum_across_ranks(features, logits, n)
    weight = head.weight.detach().double().cpu()
    bias = head.bias.detach().double().cpu() if head.bias is not None else torch.zeros(weight.shape[0], dtype=torch.float64)
    if logits.shape[1] != weight.shape[0]:
        raise ValueError("captured logits do not match the head's out_features")
    return LastLayerOutputs(features, logits, labels.clone(), weight, bias)
