"""Conversion recipes: set an ANN's neurons up to run as an SNN (in place).

* ``threshold-balancing`` (Özdenizci & Legenstein 2024, after Rathi et al.): per-layer
  thresholds from the 99.7th percentile of each layer's input current, calibrated layer by
  layer on spikes of the already-calibrated layers, scaled by 0.3, trainable; hard reset; v0 = 0.
* ``qcfs`` (Bu et al. 2022): θ = λ of the QCFS activation, v0 = θ/2, reset by subtraction,
  spikes of amplitude θ; no data needed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from robustsnn.data.dataset import ImageDataset, batches
from robustsnn.snn.network import named_neurons, set_time_steps
from robustsnn.snn.neuron import Neuron

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the calibrated layer's input is seen."""


@contextlib.contextmanager
def batch_statistics_bn(model: nn.Module) -> Iterator[None]:
    """Make every BN normalise with the current batch's statistics, even in eval mode."""
    saved = []
    for m in model.modules():
        if isinstance(m, _BN):
            saved.append((m, m.track_running_stats, m.running_mean, m.running_var))
            m.track_running_stats = False
            m.running_mean = None
            m.running_var = None
    try:
        yield
    finally:
        for m, track, mean, var in saved:
            m.track_running_stats, m.running_mean, m.running_var = track, mean, var


def reset_bn_statistics(model: nn.Module) -> None:
    """Running mean 0, variance 1, counter 0 (to be re-learned on spikes)."""
    for m in model.modules():
        if isinstance(m, _BN) and m.running_mean is not None:
            m.reset_running_stats()


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: ImageDataset, num_batches: int, batch_size: int) -> None:
    """Re-estimate BN running statistics on the SNN's spiking activity (cumulative average)."""
    saved = [(m, m.momentum) for m in model.modules() if isinstance(m, _BN)]
    reset_bn_statistics(model)
    for m, _ in saved:
        m.momentum = None
    was_training = model.training
    model.train()
    for i, (x, _) in enumerate(batches(data, batch_size, shuffle=True, seed=4242)):
        if i >= num_batches:
            break
        model(x)
    model.train(was_training)
    for m, momentum in saved:
        m.momentum = momentum


class _TopValues:
    """Keeps the largest values seen so far: an exact upper percentile over chunks."""

    def __init__(self, keep: int) -> None:
        self.keep = max(1, keep)
        self.values = torch.empty(0)

    def add(self, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1).float()
        k = min(self.keep, flat.numel())
        self.values = torch.cat([self.values, flat.topk(k).values.cpu()])
        if self.values.numel() > self.keep:
            self.values = self.values.topk(self.keep).values

    def smallest_kept(self) -> float:
        return float(self.values.min())


def layer_input(model: nn.Module, neuron: Neuron, x: torch.Tensor) -> torch.Tensor:
    """The input current of ``neuron`` for the batch ``x`` (the forward stops there)."""
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        captured.append(args[0])
        raise _Stop

    handle = neuron.register_forward_pre_hook(hook)
    try:
        with contextlib.suppress(_Stop):
            model(x)
    finally:
        handle.remove()
    if not captured:
        raise ValueError("the neuron was not reached by the forward pass")
    return captured[0]


def percentile_of_batch(
    run_chunk: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    chunk_size: int,
    percentile: float,
    repeats: int,
) -> float:
    """The ``percentile`` (k-th smallest, k = 1 + round(q·(n−1))) of a layer input over a batch.

    ``run_chunk`` returns the layer input for a chunk of samples; an input that is the same at
    every one of ``repeats`` time steps (direct coding, before the first neuron) counts
    ``repeats`` times, as if it had been expanded.
    """
    first = run_chunk(x[:chunk_size])
    per_sample = first.numel() // min(chunk_size, x.shape[0])
    static = first.shape[0] == min(chunk_size, x.shape[0])
    n = per_sample * x.shape[0] * (repeats if static else 1)
    k = 1 + round(percentile / 100 * (n - 1))
    keep = n - k + 1
    top = _TopValues(-(-keep // repeats) if static else keep)
    top.add(first)
    for start in range(chunk_size, x.shape[0], chunk_size):
        top.add(run_chunk(x[start : start + chunk_size]))
    if static:
        # every value appears ``repeats`` times: the keep-th largest of the expanded list is
        # the ceil(keep / repeats)-th largest of the distinct list
        return float(top.values.topk(-(-keep // repeats)).values.min())
    return top.smallest_kept()


def threshold_balancing(
    model: nn.Module,
    calibration_set: ImageDataset,
    *,
    time_steps: int = 8,
    time_steps_calibration: int = 100,
    percentile: float = 99.7,
    batches_per_layer: int = 10,
    batch_size: int = 64,
    scale: float = 0.3,
    threshold_min: float = 0.03,
    trainable: bool = True,
    reset: str = "zero",
    chunk_size: int = 16,
    bn_recalibration_batches: int = 0,
    augment=None,
    seed: int = 0,
) -> nn.Module:
    """Threshold balancing as in the primary paper's code (research notes §3.3).

    BN normalises with batch statistics during calibration (statistics over chunks of
    ``chunk_size`` samples × T steps, to bound memory) and its running statistics are reset
    afterwards, to be re-learned by finetuning; ``bn_recalibration_batches > 0`` re-estimates
    them on spikes right away so the converted SNN can be evaluated before finetuning.
    """
    if time_steps < 1 or time_steps_calibration < 1:
        raise ValueError("threshold balancing needs T >= 1 and a calibration T >= 1")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    neurons = named_neurons(model)
    if not neurons:
        raise ValueError("the model has no Neuron modules to convert")
    for _, n in neurons:
        n.set_threshold(1.0)
        n.configure(
            reset=reset,
            initial_potential="zero",
            spike_amplitude="unit",
            trainable_threshold=False,
            threshold_min=threshold_min,
        )
    model.eval()
    set_time_steps(model, time_steps_calibration)
    data = list(batches(calibration_set, batch_size, shuffle=True, seed=seed, augment=augment))
    data = [x for x, _ in data[:batches_per_layer]]
    with batch_statistics_bn(model), torch.no_grad():
        for _, neuron in neurons:
            value = max(
                percentile_of_batch(
                    lambda chunk, neuron=neuron: layer_input(model, neuron, chunk),
                    x,
                    chunk_size,
                    percentile,
                    time_steps_calibration,
                )
                for x in data
            )
            neuron.set_threshold(max(value, threshold_min / scale))
    for _, n in neurons:
        n.set_threshold(n.threshold.detach() * scale)
        n.configure(trainable_threshold=trainable)
    reset_bn_statistics(model)
    set_time_steps(model, time_steps)
    if bn_recalibration_batches > 0:
        recalibrate_bn(model, calibration_set, bn_recalibration_batches, batch_size)
    model.eval()
    return model


def qcfs(
    model: nn.Module, calibration_set: ImageDataset | None = None, *, time_steps: int = 8
) -> nn.Module:
    """QCFS conversion: θ = λ, v0 = θ/2, reset by subtraction, spikes of amplitude θ."""
    neurons = named_neurons(model)
    if not neurons:
        raise ValueError("the model has no Neuron modules to convert")
    for name, n in neurons:
        if n.activation not in ("qcfs", "clip") or n.clip_value is None:
            raise ValueError(
                f"qcfs conversion needs neurons with activation 'qcfs' (or 'clip'); "
                f"'{name}' is '{n.activation}'"
            )
        n.set_threshold(n.clip_value.detach().clone())
        n.configure(initial_potential="half", reset="subtract", spike_amplitude="threshold")
    set_time_steps(model, time_steps)
    model.eval()
    return model


_RECIPES: dict[str, Callable[..., nn.Module]] = {
    "threshold-balancing": threshold_balancing,
    "qcfs": qcfs,
}


def list_recipes() -> list[str]:
    """Names of the conversion recipes."""
    return list(_RECIPES)


def convert(
    model: nn.Module, recipe: str, calibration_set: ImageDataset | None = None, **options: Any
) -> nn.Module:
    """Convert ``model`` in place with ``recipe``; ``options`` are the recipe's keywords."""
    if recipe not in _RECIPES:
        raise ValueError(f"unknown conversion recipe '{recipe}'; known: {', '.join(_RECIPES)}")
    fn = _RECIPES[recipe]
    if "batches" in options:
        options["batches_per_layer"] = options.pop("batches")
    try:
        return fn(model, calibration_set, **options)
    except TypeError as err:
        if "unexpected keyword" in str(err):
            raise ValueError(f"recipe '{recipe}': {err}") from None
        raise


def register_recipe(name: str, fn: Callable[..., nn.Module]) -> None:
    """Make ``fn(model, calibration_set, *, time_steps, ...)`` available as recipe ``name``."""
    _RECIPES[name] = fn
