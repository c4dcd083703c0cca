"""One training loop for ANNs (T = 0) and SNNs (T > 0): checkpoint every epoch, exact resume.

Every random draw of an epoch (batch order, augmentation, the objectives' noise, dropout) is
derived from (seed, epoch), so a run resumed from its last epoch checkpoint ends with exactly
the weights of an uninterrupted run on CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from robustsnn.data.dataset import ImageDataset, batches, epoch_generator
from robustsnn.io import append_jsonl
from robustsnn.train.objectives import Objective
from robustsnn.train.state import load_training_state, save_training_state

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "step", "none")


class TrainCallbacks(Protocol):
    """What the command line implements to show progress (the library never prints)."""

    def on_batch(self, epoch: int, index: int, total: int, metrics: dict[str, float]) -> None: ...

    def on_epoch(self, epoch: int, metrics: dict[str, Any]) -> None: ...


@dataclass
class TrainResult:
    epochs: int
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None
    wall_time_s: float = 0.0


def learning_rate(base: float, epoch: int, epochs: int, schedule: str, milestones=(), gamma=0.1):
    """The learning rate of ``epoch`` (0-based): cosine annealing, step decay, or constant."""
    if schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    if schedule == "step":
        return base * gamma ** sum(epoch >= m for m in milestones)
    return base


def evaluate_accuracy(model: nn.Module, dataset: ImageDataset, batch_size: int = 256) -> float:
    """Clean accuracy on ``dataset`` in eval mode (the mode is restored afterwards)."""
    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in batches(dataset, batch_size):
            correct += int((model(x).argmax(1) == y).sum())
    model.train(was_training)
    return correct / max(1, len(dataset))


def make_optimizer(model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float):
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}")


def fit(
    model: nn.Module,
    train_set: ImageDataset,
    *,
    objective: Objective,
    epochs: int,
    batch_size: int = 64,
    optimizer: str = "sgd",
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    schedule: str = "cosine",
    milestones: tuple[int, ...] = (),
    gamma: float = 0.1,
    augment=None,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    eval_set: ImageDataset | None = None,
    callbacks: TrainCallbacks | None = None,
) -> TrainResult:
    """Train ``model`` in place with ``objective``; see the module docstring for resume."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    opt = make_optimizer(model, optimizer, lr, momentum, weight_decay)
    directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
    result = TrainResult(epochs=epochs)
    first = 0
    if resume and directory is not None:
        progress = load_training_state(directory, model, opt)
        if progress is not None:
            first = int(progress["epoch"]) + 1
            result.history = list(progress.get("history", []))
            result.resumed_from = first
    start_time = time.perf_counter()
    total = math.ceil(len(train_set) / batch_size)
    for epoch in range(first, epochs):
        epoch_start = time.perf_counter()
        current_lr = learning_rate(lr, epoch, epochs, schedule, milestones, gamma)
        for group in opt.param_groups:
            group["lr"] = current_lr
        torch.manual_seed(seed * 7919 + epoch)
        noise = epoch_generator(seed, epoch, stream=2)
        model.train()
        sums: dict[str, float] = {}
        seen = 0
        for index, (x, y) in enumerate(
            batches(train_set, batch_size, shuffle=True, seed=seed, epoch=epoch, augment=augment)
        ):
            loss, metrics = objective(model, x, y, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value * len(y)
            seen += len(y)
            if callbacks is not None:
                callbacks.on_batch(epoch, index, total, metrics)
        record: dict[str, Any] = {"epoch": epoch, "lr": current_lr}
        record.update({f"train_{k}": v / max(1, seen) for k, v in sums.items()})
        if eval_set is not None:
            record["eval_acc"] = evaluate_accuracy(model, eval_set)
        record["seconds"] = time.perf_counter() - epoch_start
        result.history.append(record)
        if directory is not None:
            save_training_state(directory, model, opt, {"epoch": epoch, "history": result.history})
            append_jsonl(directory / "log.jsonl", record)
        if callbacks is not None:
            callbacks.on_epoch(epoch, record)
    model.eval()
    result.wall_time_s = time.perf_counter() - start_time
    return result
