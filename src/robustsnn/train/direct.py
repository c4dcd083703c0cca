"""Direct SNN training with BPTT and a surrogate gradient: clean, adversarial, HIRE-SNN, SR.

:func:`train_direct` turns a model into an SNN (T time steps, the training surrogate as every
neuron's gradient path, optionally trainable thresholds) and trains it with one call to
:func:`~robustsnn.train.loop.fit` (checkpoint per epoch, exact resume). The method picks the
objective:

* ``ce``: plain cross-entropy through BPTT (from scratch: the clean direct-trained baseline);
* ``pgd_at`` / ``trades``: end-to-end adversarial training, the inner PGD attack crafted on the
  SNN itself through BPTT and the training surrogate;
* ``hire``: HIRE-SNN crafted input noise (:mod:`robustsnn.train.hire`);
* ``sr``: gradient-sparsity regularisation (:mod:`robustsnn.train.regularizers`), optionally
  at PGD examples.

Rate coding is a property of the model (``encoding='poisson'``, e.g. ``create_model(...,
encoding='poisson')``): every forward pass draws fresh Poisson spikes, in training as in
evaluation. Starting from a converted SNN instead of a fresh model gives the hybrid variants.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from robustsnn.data.dataset import Augmentation, ImageDataset
from robustsnn.snn.network import named_neurons, set_gradient_path, set_time_steps
from robustsnn.train.hire import HireObjective
from robustsnn.train.loop import TrainCallbacks, TrainResult, fit
from robustsnn.train.objectives import make_objective
from robustsnn.train.regularizers import DEFAULT_H, SparsityObjective

DIRECT_METHODS = ("ce", "pgd_at", "trades", "hire", "sr")


@dataclass
class HireOptions:
    """HIRE-SNN's open choices (see :mod:`robustsnn.train.hire`); ``eps`` None: the run's."""

    periods: int = 2
    eps: float | None = None
    step_size: float | None = None
    accumulate: bool = True
    noise_gradient: str = "period"


@dataclass
class SparsityOptions:
    """SR's settings: λ (``weight``), the finite-difference step ``h``, and whether the loss is
    evaluated at PGD examples (``adversarial``, with the run's ε and steps)."""

    weight: float = 0.005
    h: float = DEFAULT_H
    adversarial: bool = False


def prepare_snn(
    model: nn.Module,
    time_steps: int,
    surrogate: str = "triangle:1.0",
    trainable_threshold: bool = False,
) -> nn.Module:
    """Set T, the training surrogate (every neuron's own gradient path) and, optionally,
    trainable thresholds; return the model."""
    if isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 1:
        raise ValueError(f"direct SNN training needs time steps T >= 1, got {time_steps!r}")
    set_time_steps(model, time_steps)
    set_gradient_path(model, surrogate)
    if trainable_threshold:
        for _, neuron in named_neurons(model):
            neuron.configure(trainable_threshold=True)
    return model


def direct_objective(
    method: str,
    *,
    eps: float = 2 / 255,
    steps: int = 10,
    step_size: float | None = None,
    beta: float | None = None,
    hire: HireOptions | None = None,
    sparsity: SparsityOptions | None = None,
    attack_path: str | None = None,
) -> Any:
    """The training objective of ``method`` (one of :data:`DIRECT_METHODS`).

    Adversarial examples (PGD-AT, TRADES, adversarial SR) are crafted through ``attack_path``,
    by default the neurons' own gradient path, i.e. the training surrogate set by
    :func:`prepare_snn`.
    """
    if method not in DIRECT_METHODS:
        raise ValueError(f"method must be one of {', '.join(DIRECT_METHODS)}; got {method!r}")
    if method in ("ce", "pgd_at", "trades"):
        return make_objective(
            method, eps=eps, steps=steps, step_size=step_size, beta=beta,
            gradient_path=attack_path,
        )  # fmt: skip
    if method == "hire":
        h = hire or HireOptions()
        return HireObjective(
            periods=h.periods,
            eps=eps if h.eps is None else h.eps,
            step_size=h.step_size,
            accumulate=h.accumulate,
            noise_gradient=h.noise_gradient,
        )
    s = sparsity or SparsityOptions()
    attack = make_objective(
        "pgd_at", eps=eps, steps=steps, step_size=step_size, gradient_path=attack_path
    )
    return SparsityObjective(s.weight, s.h, s.adversarial, attack if s.adversarial else None)


def train_direct(
    model: nn.Module,
    train_set: ImageDataset,
    *,
    method: str = "ce",
    time_steps: int = 8,
    surrogate: str = "triangle:1.0",
    attack_path: str | None = None,
    trainable_threshold: bool = False,
    eps: float = 2 / 255,
    steps: int = 10,
    step_size: float | None = None,
    beta: float | None = None,
    hire: HireOptions | None = None,
    sparsity: SparsityOptions | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    optimizer: str = "sgd",
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    schedule: str = "cosine",
    augment: Augmentation | None = None,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    eval_set: ImageDataset | None = None,
    callbacks: TrainCallbacks | Iterable[TrainCallbacks] | None = None,
) -> TrainResult:
    """Train ``model`` in place as a T-step SNN with BPTT through ``surrogate``.

    Args:
        model: a fresh zoo model (training from scratch) or a converted SNN (hybrid).
        method: ``ce``, ``pgd_at``, ``trades``, ``hire`` or ``sr`` (see the module docstring).
        time_steps: T of training (HIRE-SNN splits it into periods).
        surrogate: the gradient path of the weight update (BPTT).
        attack_path: the gradient path of the training attack (None: ``surrogate``), e.g.
            ``arctan:8.0/dr``: a sharp surrogate with the reset detached, the direction the
            strongest evaluation attacks take.
        eps, steps, step_size, beta: the training attack (PGD-AT, TRADES, adversarial SR) or
            HIRE-SNN's default noise bound.
        hire, sparsity: HIRE-SNN's and SR's options.
        the rest: as in :func:`~robustsnn.train.loop.fit`.
    """
    objective = direct_objective(
        method, eps=eps, steps=steps, step_size=step_size, beta=beta, hire=hire,
        sparsity=sparsity, attack_path=attack_path,
    )  # fmt: skip
    prepare_snn(model, time_steps, surrogate, trainable_threshold)
    if method == "hire":
        objective.period_steps(model)
    return fit(
        model,
        train_set,
        objective=objective,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        schedule=schedule,
        augment=augment,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        eval_set=eval_set,
        callbacks=callbacks,
    )
