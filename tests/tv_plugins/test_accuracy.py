import torch
from torch import nn

from tv_plugins.accuracy import evaluate_accuracy


def test_accuracy_counts_argmax_hits_across_batches_and_restores_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3), nn.Dropout(0.5))
    inputs, labels = torch.randn(23, 5), torch.randint(0, 3, (23,))
    model.eval()
    with torch.no_grad():
        expected = 100.0 * int((model(inputs).argmax(1) == labels).sum()) / len(labels)
    model.train()
    assert abs(evaluate_accuracy(model, inputs, labels, batch_size=4) - expected) < 1e-9  # dropout off
    assert model.training
    model.eval()
    assert evaluate_accuracy(model, inputs, labels, batch_size=100) == evaluate_accuracy(model, inputs, labels, 7)
    assert not model.training
