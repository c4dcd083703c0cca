"""One training loop for ANNs (T = 0) and SNNs (T > 0): checkpoint every epoch, exact resume.

:func:`fit` trains a model in place with an :class:`~robustsnn.train.objectives.Objective`.
Every random draw of an epoch is derived from ``(seed, epoch)``: the batch order and the
augmentation (:func:`robustsnn.data.batches`), the objectives' noise (its own generator) and
torch's global generator (dropout), which is re-seeded for the epoch inside
``torch.random.fork_rng`` so the caller's random state is left untouched. The random state at an
epoch boundary is therefore a function of ``(seed, epoch)`` alone, and a run resumed from its
last epoch checkpoint ends with exactly the weights of an uninterrupted run (on CPU; on a GPU as
far as its kernels are deterministic).

With a ``checkpoint_dir`` the loop writes, after every epoch, the training state (see
:mod:`robustsnn.train.state`) and one line of metrics to ``log.jsonl``: ``epoch``, ``lr``,
``train_loss``, ``train_acc`` (clean), ``train_adv_acc`` (adversarial objectives),
``eval_acc`` (with an ``eval_set``) and ``seconds``. The library never prints: ``callbacks``
receive ``on_batch(epoch, index, total, metrics)`` and ``on_epoch(epoch, record)``.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from robustsnn.data.dataset import Augmentation, ImageDataset, batches, derive_generator
from robustsnn.io import append_jsonl, atomic_write_text
from robustsnn.train.objectives import Objective
from robustsnn.train.state import (
    clear_training_state,
    load_training_state,
    read_progress,
    save_training_state,
)

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "step", "none")
LOG_FILE = "log.jsonl"
NOISE_STREAM = "objective-noise"
DROPOUT_STREAM = "global-rng"


class TrainCallbacks(Protocol):
    """What a front end implements to show progress; either method may be left out."""

    def on_batch(self, epoch: int, index: int, total: int, metrics: dict[str, float]) -> None: ...

    def on_epoch(self, epoch: int, metrics: dict[str, Any]) -> None: ...


@dataclass
class TrainResult:
    """What :func:`fit` did.

    Attributes:
        epochs: the number of epochs the run was configured for.
        history: one metrics record per finished epoch (resumed epochs included).
        resumed_from: the first epoch trained by this call when it resumed, else None.
        wall_time_s: seconds spent in this call.
        checkpoint_dir: where the state and ``log.jsonl`` were written, if anywhere.
    """

    epochs: int
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None
    wall_time_s: float = 0.0
    checkpoint_dir: Path | None = None

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's record (empty if no epoch ran)."""
        return self.history[-1] if self.history else {}


def learning_rate(
    base: float,
    epoch: int,
    epochs: int,
    schedule: str,
    milestones: Iterable[int] = (),
    gamma: float = 0.1,
) -> float:
    """The learning rate of ``epoch`` (0-based), stepped once per epoch.

    ``cosine``: base·(1 + cos(π·epoch/epochs))/2 (PyTorch's CosineAnnealingLR, T_max = epochs,
    η_min = 0); ``step``: base·γ^(number of milestones <= epoch); ``none``: base.
    """
    if schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    if schedule == "step":
        return base * gamma ** sum(epoch >= m for m in milestones)
    if schedule == "none":
        return base
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for an empty model)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def time_major(x: torch.Tensor, static_dims: int = 4) -> torch.Tensor:
    """Event batches ``[B, T, C, H, W]`` (as datasets store them) become ``[T, B, C, H, W]``."""
    return x.transpose(0, 1) if x.dim() == static_dims + 1 else x


def evaluate_accuracy(model: nn.Module, dataset: ImageDataset, batch_size: int = 256) -> float:
    """Clean accuracy on ``dataset`` in eval mode, without gradients (the mode is restored)."""
    if len(dataset) == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    was_training = model.training
    device = model_device(model)
    model.eval()
    correct = 0
    try:
        with torch.no_grad():
            for x, y in batches(dataset, batch_size, device=device):
                correct += int((model(time_major(x)).argmax(1) == y).sum())
    finally:
        model.train(was_training)
    return correct / len(dataset)


def make_optimizer(
    model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """SGD (with momentum) or Adam over every trainable parameter, weight decay on all of them."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}")


def _callbacks(callbacks: Any) -> list[Any]:
    if callbacks is None:
        return []
    if isinstance(callbacks, (list, tuple)):
        return list(callbacks)
    return [callbacks]


def _check_settings(
    epochs: int, batch_size: int, lr: float, schedule: str, optimizer: str, weight_decay: float
) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {optimizer!r}")


@contextlib.contextmanager
def _epoch_random_state(seed: int, epoch: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global generators from (seed, epoch) for one epoch, then restore them."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(derive_generator(DROPOUT_STREAM, int(seed), int(epoch)).initial_seed())
        yield


def _settings_difference(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            return f"{key}: {saved.get(key)!r} in the checkpoint, {current.get(key)!r} now"
    return None


def _restart(directory: Path) -> None:
    clear_training_state(directory)
    (directory / LOG_FILE).unlink(missing_ok=True)


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
    milestones: Iterable[int] = (),
    gamma: float = 0.1,
    augment: Augmentation | None = None,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    eval_set: ImageDataset | None = None,
    eval_batch_size: int = 256,
    callbacks: TrainCallbacks | Iterable[TrainCallbacks] | None = None,
) -> TrainResult:
    """Train ``model`` in place with ``objective`` (ANN or SNN alike); leave it in eval mode.

    Args:
        model: any ``nn.Module`` mapping a batch to logits; it stays on its device.
        train_set: the training images (in [0, 1]) and labels.
        objective: from :func:`~robustsnn.train.objectives.make_objective` (or any callable
            ``(model, x, y, generator) -> (loss, metrics)``). An objective with a
            ``train_step(model, x, y, generator, optimizer) -> (loss, metrics)`` method makes
            its own optimizer steps for a batch (HIRE-SNN makes one per period); the loop
            then only checks the returned (detached) loss.
        epochs: total number of epochs of the run (also the cosine period).
        batch_size: training batch size; the last batch may be smaller.
        optimizer: ``sgd`` (with ``momentum``) or ``adam``; weight decay on every parameter.
        lr: base learning rate, changed once per epoch by ``schedule``.
        schedule: ``cosine``, ``step`` (×``gamma`` at each of ``milestones``) or ``none``.
        augment: a batch augmentation, e.g. from :func:`robustsnn.data.build_augmentation`.
        seed: fixes batch order, augmentation, attack noise and dropout of every epoch.
        checkpoint_dir: where to write the state after every epoch and ``log.jsonl``. Without
            ``resume`` an existing state and log there are removed first.
        resume: continue from the last complete epoch in ``checkpoint_dir`` (a fresh start if
            it holds none). The settings must match the interrupted run's, except ``epochs``.
        eval_set: evaluated (clean accuracy) after every epoch.
        callbacks: objects with ``on_batch`` and/or ``on_epoch`` (one or a list).
    """
    _check_settings(epochs, batch_size, lr, schedule, optimizer, weight_decay)
    if len(train_set) == 0:
        raise ValueError("the training set is empty")
    milestones = sorted(int(m) for m in milestones)
    listeners = _callbacks(callbacks)
    device = model_device(model)
    opt = make_optimizer(model, optimizer, lr, momentum, weight_decay)
    describe = getattr(objective, "describe", None)
    own_steps = getattr(objective, "train_step", None)
    settings = {
        "objective": describe() if callable(describe) else type(objective).__qualname__,
        "optimizer": optimizer,
        "lr": lr,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "schedule": schedule,
        "milestones": milestones,
        "gamma": gamma,
        "batch_size": batch_size,
        "seed": seed,
        "train_size": len(train_set),
    }
    directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
    result = TrainResult(epochs=epochs, checkpoint_dir=directory)
    first = 0
    if directory is not None:
        progress = read_progress(directory) if resume else None
        if progress is None:
            _restart(directory)
        else:
            difference = _settings_difference(progress.get("settings", {}), settings)
            if difference is not None:
                raise ValueError(
                    f"cannot resume from {directory}: settings differ ({difference}); "
                    "resume with the same settings or use a new directory"
                )
            load_training_state(directory, model, opt)
            first = int(progress["epoch"]) + 1
            result.history = list(progress.get("history", []))
            result.resumed_from = first
            lines = "".join(json.dumps(r) + "\n" for r in result.history)
            atomic_write_text(directory / LOG_FILE, lines)
    start_time = time.perf_counter()
    total = math.ceil(len(train_set) / batch_size)
    for epoch in range(first, epochs):
        epoch_start = time.perf_counter()
        current_lr = learning_rate(lr, epoch, epochs, schedule, milestones, gamma)
        for group in opt.param_groups:
            group["lr"] = current_lr
        noise = derive_generator(NOISE_STREAM, int(seed), int(epoch))
        sums: dict[str, float] = {}
        seen = 0
        with _epoch_random_state(seed, epoch, device):
            model.train()
            loader = batches(
                train_set,
                batch_size,
                shuffle=True,
                seed=seed,
                epoch=epoch,
                augment=augment,
                device=device,
            )
            for index, (x, y) in enumerate(loader):
                if own_steps is not None:
                    loss, metrics = own_steps(model, time_major(x), y, noise, opt)
                else:
                    loss, metrics = objective(model, time_major(x), y, noise)
                if not torch.isfinite(loss):
                    raise ValueError(
                        f"training diverged: the loss is {loss.item()} at epoch {epoch + 1}, "
                        f"batch {index + 1}; lower the learning rate"
                    )
                if own_steps is None:
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                for key, value in metrics.items():
                    sums[key] = sums.get(key, 0.0) + float(value) * len(y)
                seen += len(y)
                for listener in listeners:
                    if hasattr(listener, "on_batch"):
                        listener.on_batch(epoch, index, total, metrics)
            record: dict[str, Any] = {"epoch": epoch, "lr": current_lr}
            record.update({f"train_{k}": v / seen for k, v in sums.items()})
            if eval_set is not None:
                record["eval_acc"] = evaluate_accuracy(model, eval_set, eval_batch_size)
        record["seconds"] = time.perf_counter() - epoch_start
        result.history.append(record)
        if directory is not None:
            progress = {
                "epoch": epoch,
                "epochs": epochs,
                "history": result.history,
                "settings": settings,
                "schedule": {
                    "name": schedule,
                    "base_lr": lr,
                    "epochs": epochs,
                    "milestones": milestones,
                    "gamma": gamma,
                    "last_lr": current_lr,
                },
                "random_state": {
                    "seed": seed,
                    "derivation": "per-epoch generators from (seed, epoch): batches(), "
                    f"{NOISE_STREAM!r} and {DROPOUT_STREAM!r} streams",
                },
            }
            save_training_state(directory, model, opt, progress)
            append_jsonl(directory / LOG_FILE, record)
        for listener in listeners:
            if hasattr(listener, "on_epoch"):
                listener.on_epoch(epoch, record)
    model.eval()
    result.wall_time_s = time.perf_counter() - start_time
    return result
