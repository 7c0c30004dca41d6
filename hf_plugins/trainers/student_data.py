"""Student-generated data: a replay buffer and the ImitKD / DistiLLM schedules (as in the DistiLLM code, which
the AMiD and CSD reference code reuse).

``StudentDataSchedule.choose(step, total_steps)`` decides, per optimisation step, where the batch comes from:

* ``"imitkd"``: always ``"generate_replay"`` (sample from the student, push into the buffer, train on a batch
  drawn uniformly from the buffer);
* ``"distillm"``: with threshold ``tau`` and ``r ~ U(0, 1)``: ``"generate"`` (train on the fresh samples, also
  pushed) when ``r < tau * (1 - step / total)`` or (``r < tau`` and the buffer is not full); ``"replay"`` when
  ``r < tau``; ``"dataset"`` otherwise. ``update(validation_nll)`` raises ``tau`` by ``threshold_step`` (capped
  at 1) when the validation NLL rose by at least ``loss_eps`` over the reference, which then becomes the new
  reference. The first evaluation sets the reference (the reference code evaluates once before training).
* ``"gkd"``: the schedule is not used; GKD's ``lmbda`` coin decides (inherited behaviour).

Generated batches use the correct labels (completion tokens at their own positions, prompt masked); the
DistiLLM sampler's mask, one position late (it skips the first completion token), is not reproduced.

Buffer and schedule state are saved beside trainer checkpoints (safetensors + JSON) so that a resumed run
continues identically. They record the settings that change the schedule's decisions; resuming with other
settings, or from a truncated or corrupt file, is a ValueError naming what differs or which file is broken.
"""

from __future__ import annotations

import json
import random
from collections import deque
from pathlib import Path

import torch

__all__ = ["ReplayBuffer", "StudentDataSchedule"]

_WRITER = "hf_plugins' student-data state, saved beside a KDTrainer checkpoint"


def _read(path: Path, read):
    """``read(path)``; a missing, truncated or corrupt file is a ValueError naming it and what wrote it."""
    from safetensors import SafetensorError

    try:
        return read(path)
    except (OSError, ValueError, KeyError, SafetensorError) as err:
        raise ValueError(f"{path} is missing, incomplete or corrupt ({err}); it holds {_WRITER}") from err


def _check_settings(saved: dict, current: dict, directory: Path) -> None:
    differing = [f"{k}: {saved.get(k)!r} in the checkpoint vs {v!r} now" for k, v in current.items() if saved.get(k) != v]
    if differing:
        raise ValueError(f"the student-data state in {directory} was written with other settings: {'; '.join(differing)}")


class ReplayBuffer:
    """FIFO buffer of token sequences (prompt + completion) with their labels, sampled uniformly.

    Args:
        capacity: maximum number of sequences kept (oldest dropped first).
        seed: seed of the sampling generator.
    """

    def __init__(self, capacity: int, seed: int = 0):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        self.capacity = capacity
        self._items: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=capacity)
        self._generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        return len(self._items) >= self.capacity

    def push(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch ``[B, T]``; padding (attention 0) is stripped from each row."""
        for ids, att, lab in zip(input_ids.cpu(), attention_mask.cpu(), labels.cpu()):
            keep = att.bool()
            self._items.append((ids[keep].clone(), lab[keep].clone()))

    def sample(self, n: int, pad_token_id: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Draw ``min(n, len)`` sequences uniformly without replacement, right-padded into a batch.

        Returns ``input_ids``, ``attention_mask`` (int64 ``[n, T_max]``) and ``labels`` (-100 on padding).
        """
        if not self._items:
            raise RuntimeError("cannot sample from an empty replay buffer")
        idx = torch.randperm(len(self._items), generator=self._generator)[: min(n, len(self._items))]
        rows = [self._items[i] for i in idx.tolist()]
        width = max(r[0].numel() for r in rows)
        ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
        att = torch.zeros((len(rows), width), dtype=torch.long)
        lab = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, (r_ids, r_lab) in enumerate(rows):
            ids[i, : r_ids.numel()] = r_ids
            att[i, : r_ids.numel()] = 1
            lab[i, : r_lab.numel()] = r_lab
        return {"input_ids": ids.to(device), "attention_mask": att.to(device), "labels": lab.to(device)}

    def save(self, directory: str | Path, prefix: str = "replay_buffer") -> None:
        """Write the buffer to ``prefix.safetensors`` (+ ``prefix.json``) in ``directory``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        lengths = torch.tensor([r[0].numel() for r in self._items], dtype=torch.long)
        tensors = {
            "lengths": lengths,
            "input_ids": torch.cat([r[0] for r in self._items]) if self._items else torch.zeros(0, dtype=torch.long),
            "labels": torch.cat([r[1] for r in self._items]) if self._items else torch.zeros(0, dtype=torch.long),
            "generator_state": self._generator.get_state(),
        }
        save_file(tensors, str(directory / f"{prefix}.safetensors"))
        (directory / f"{prefix}.json").write_text(json.dumps({"capacity": self.capacity}))

    def load(self, directory: str | Path, prefix: str = "replay_buffer") -> None:
        """Restore the buffer saved by ``save`` (capacity must match)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        meta = _read(directory / f"{prefix}.json", lambda p: json.loads(p.read_text()))
        _check_settings(meta, {"capacity": self.capacity}, directory)
        t = _read(directory / f"{prefix}.safetensors", lambda p: load_file(str(p)))
        self._items.clear()
        lengths = t["lengths"].tolist()
        ids, labs = t["input_ids"].split(lengths), t["labels"].split(lengths)
        for a, b in zip(ids, labs):
            self._items.append((a.clone(), b.clone()))
        self._generator.set_state(t["generator_state"])


class StudentDataSchedule:
    """Per-step choice of the training data source for ``"imitkd"`` / ``"distillm"`` (see module docstring).

    Args:
        mode: "imitkd" or "distillm".
        capacity: replay-buffer capacity (sequences).
        init_threshold, threshold_step, loss_eps: DistiLLM's ``--init-threshold`` (0.0), the increment (0.1) and
            ``--loss-eps`` (0.1 nats/token).
        seed: seed of the coin and of the buffer sampling.
    """

    def __init__(
        self,
        mode: str,
        capacity: int = 1000,
        init_threshold: float = 0.0,
        threshold_step: float = 0.1,
        loss_eps: float = 0.1,
        seed: int = 0,
    ):
        if mode not in ("imitkd", "distillm"):
            raise ValueError(f"mode must be 'imitkd' or 'distillm', got {mode!r}")
        self.mode = mode
        self.settings = {"mode": mode, "capacity": capacity, "init_threshold": init_threshold,
                         "threshold_step": threshold_step, "loss_eps": loss_eps, "seed": seed}
        self.threshold = float(init_threshold)
        self.threshold_step = float(threshold_step)
        self.loss_eps = float(loss_eps)
        self.reference: float | None = None
        self.buffer = ReplayBuffer(capacity, seed)
        self._rng = random.Random(seed)

    def choose(self, step: int, total_steps: int) -> str:
        """Return "generate_replay" (imitkd), or "generate" / "replay" / "dataset" (distillm)."""
        if self.mode == "imitkd":
            return "generate_replay"
        r = self._rng.random()
        decreasing = self.threshold * (1.0 - step / max(total_steps, 1))
        if r < decreasing or (r < self.threshold and not self.buffer.full):
            return "generate"
        if r < self.threshold and len(self.buffer) > 0:
            return "replay"
        return "dataset"

    def update(self, validation_nll: float) -> None:
        """DistiLLM threshold update after an evaluation with validation NLL ``validation_nll`` (nats/token)."""
        if self.mode != "distillm":
            return
        if self.reference is None:
            self.reference = float(validation_nll)
        elif validation_nll >= self.reference + self.loss_eps:
            self.threshold = min(1.0, self.threshold + self.threshold_step)
            self.reference = float(validation_nll)

    def save(self, directory: str | Path) -> None:
        """Write the schedule (``student_data.json``) and its buffer into ``directory``."""
        directory = Path(directory)
        self.buffer.save(directory)
        state = {"settings": self.settings, "threshold": self.threshold, "reference": self.reference,
                 "rng_state": list(self._rng.getstate()[1]), "rng_version": self._rng.getstate()[0],
                 "rng_gauss": self._rng.getstate()[2]}
        (directory / "student_data.json").write_text(json.dumps(state))

    def load(self, directory: str | Path) -> None:
        """Restore what ``save`` wrote (refused when it was written with other settings)."""
        directory = Path(directory)
        path = directory / "student_data.json"
        state = _read(path, lambda p: json.loads(p.read_text()))
        _check_settings(state.get("settings", {}), self.settings, directory)
        self.buffer.load(directory)
        try:
            self.threshold, self.reference = state["threshold"], state["reference"]
            self._rng.setstate((state["rng_version"], tuple(state["rng_state"]), state["rng_gauss"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path} is incomplete or corrupt ({err!r}); it holds {_WRITER}") from err
