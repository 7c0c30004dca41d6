"""Top-1 test accuracy of a classifier on in-memory tensors (shared by coreset and condensation evaluation)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["evaluate_accuracy"]


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy in percent of ``model`` on ``(inputs [N, ...], labels [N])``, in batches of ``batch_size``.

    The model runs in eval mode; its previous train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    correct = sum(int((model(inputs[s : s + batch_size]).argmax(1) == labels[s : s + batch_size]).sum())
                  for s in range(0, len(labels), batch_size))
    model.train(was_training)
    return 100.0 * correct / len(labels)
