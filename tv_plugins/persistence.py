"""Saved and resumable artifacts: reading their files with errors that name the file and its writer, and the
settings fingerprint that refuses to resume or reload state written under different settings."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

__all__ = ["check_settings", "describe", "digest", "read_json", "read_safetensors"]


def _corrupt(path: Path, writer: str, detail: str) -> ValueError:
    return ValueError(f"{path} is incomplete or corrupt ({detail}); it is written by {writer}: save it again")


def read_json(path: str | os.PathLike, writer: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON object in ``path``; a ``ValueError`` naming the file and its ``writer`` if it is truncated, not a
    JSON object or lacks a ``required`` key."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _corrupt(path, writer, f"not valid JSON: {err}") from err
    if not isinstance(value, dict) or any(key not in value for key in required):
        raise _corrupt(path, writer, f"expected a JSON object with the keys {list(required)}")
    return value


def read_safetensors(path: str | os.PathLike, writer: str, required: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The tensors in ``path``; a ``ValueError`` naming the file and its ``writer`` if it is truncated, not a
    safetensors file or lacks a ``required`` tensor."""
    path = Path(path)
    try:
        tensors = load_file(str(path))
    except SafetensorError as err:
        raise _corrupt(path, writer, str(err)) from err
    if any(key not in tensors for key in required):
        raise _corrupt(path, writer, f"expected the tensors {list(required)}, found {sorted(tensors)}")
    return tensors


def digest(*tensors: torch.Tensor) -> str:
    """A short SHA-256 of the tensors' dtypes, shapes and bytes (equal exactly when the tensors are)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:20]


def _moments(t: torch.Tensor) -> dict[str, Any]:
    """Shape, ``sum |x|``, ``sum x^2`` and position-weighted sums of the absolute row / column sums (rows: the first
    axis) of a float tensor, in float64: stable under another CPU's last-bit rounding, changed by any real edit,
    permutation or flip."""
    flat = t.reshape(len(t), -1) if t.ndim > 1 else t.reshape(-1, 1)
    weights = [torch.arange(n, dtype=torch.float64) * 0.6180339887498949 % 1 for n in flat.shape]
    rows, columns = flat.sum(1, dtype=torch.float64).abs(), flat.sum(0, dtype=torch.float64).abs()
    return {"shape": list(t.shape), "sum_abs": float(flat.abs().sum(dtype=torch.float64)),
            "sum_sq": float(flat.square().sum(dtype=torch.float64)), "rows": float(rows @ weights[0]),
            "columns": float(columns @ weights[1])}


def describe(value: Any) -> Any:
    """A JSON-like description of a setting for :func:`check_settings`: scalars as they are, integer tensors by
    :func:`digest`, float tensors by :func:`_moments`, modules by their state, optimisers by their
    hyper-parameters, other objects by their type and public attributes."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return _moments(value.detach().cpu())
    if isinstance(value, torch.Tensor):
        return digest(value)
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    if isinstance(value, nn.Module):
        return describe(value.state_dict())
    if isinstance(value, torch.optim.Optimizer):
        return {"type": type(value).__name__, **describe(value.defaults)}
    if hasattr(value, "__dict__"):
        return {"type": type(value).__name__,
                **describe({k: v for k, v in vars(value).items() if not k.startswith("_")})}
    return str(value)


def _same(a: Any, b: Any) -> bool:
    """Equal, with floats (settings, tensor moments) equal to 1e-6 relative: fp32 kernels of another CPU change
    results by ~1e-7 relative, any real change of a setting by far more."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-30)
    return a == b


def check_settings(saved: dict[str, Any], current: dict[str, Any], path: str | os.PathLike, what: str) -> None:
    """Raise ``ValueError`` naming every setting that differs between ``saved`` (read from ``path``) and
    ``current`` (old value vs new value; see :func:`_same`)."""
    keys = sorted(set(saved) | set(current))
    differing = [f"{k}: {saved.get(k, '<absent>')!r} (saved) vs {current.get(k, '<absent>')!r} (now)"
                 for k in keys if not _same(saved.get(k, "<absent>"), current.get(k, "<absent>"))]
    if differing:
        raise ValueError(f"{path} holds a {what} written with different settings, so it is not resumed: "
                         + "; ".join(differing) + ". Use a new directory (or delete this one) to start afresh.")
