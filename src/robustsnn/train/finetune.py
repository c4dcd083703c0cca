"""Robust finetuning of a converted SNN (primary paper §4): weights and thresholds, BPTT.

The loss is CE(clean) + β·KL(clean ‖ adversarial) (TRADES-style) or MART; the adversarial
example is crafted on the SNN itself, by default with single-step random-start FGSM on the KL
through BPTT with the training surrogate (triangle, γ = 1), the model in eval mode.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from robustsnn.data.dataset import ImageDataset
from robustsnn.snn.network import get_time_steps, named_neurons, set_gradient_path
from robustsnn.train.loop import TrainCallbacks, TrainResult, fit
from robustsnn.train.objectives import make_objective


def robust_finetune(
    snn: nn.Module,
    train_set: ImageDataset,
    *,
    epochs: int = 60,
    lr: float = 1e-3,
    weight_decay: float = 1e-3,
    momentum: float = 0.9,
    beta: float = 2.0,
    eps: float = 2 / 255,
    step_size: float | None = None,
    steps: int = 10,
    inner: str = "rfgsm",
    surrogate: str = "triangle:1.0",
    loss: str = "trades",
    batch_size: int = 64,
    augment=None,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    eval_set: ImageDataset | None = None,
    callbacks: TrainCallbacks | None = None,
) -> TrainResult:
    """Adversarially finetune every parameter of ``snn`` (thresholds included) in place."""
    if get_time_steps(snn) < 1:
        raise ValueError("robust finetuning needs an SNN: set its time steps to T >= 1 first")
    if loss not in ("trades", "mart"):
        raise ValueError(f"finetuning loss must be trades or mart; got {loss!r}")
    set_gradient_path(snn, surrogate)
    for _, neuron in named_neurons(snn):
        neuron.threshold.requires_grad_(True)
    if inner == "rfgsm" and step_size is None:
        step_size = eps / 2
    objective = make_objective(
        loss,
        eps=eps,
        steps=steps,
        step_size=step_size,
        beta=beta,
        inner=inner,
        gradient_path=surrogate,
    )
    return fit(
        snn,
        train_set,
        objective=objective,
        epochs=epochs,
        batch_size=batch_size,
        optimizer="sgd",
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        schedule="cosine",
        augment=augment,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        eval_set=eval_set,
        callbacks=callbacks,
    )
