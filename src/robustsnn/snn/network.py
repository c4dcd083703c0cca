"""One network, two modes: the base class of every model, time switching and path switching.

A :class:`SpikingNetwork` is an ordinary ``nn.Module`` whose activations are
:class:`~robustsnn.snn.neuron.Neuron` modules. With ``time_steps == 0`` it is an ANN; with
``time_steps = T > 0`` the same parameters run as an SNN. Stateless layers see time folded into
the batch (``[T·B, ...]``); each neuron unfolds time internally. Static images are fed by
direct coding (everything before the first neuron is computed once and broadcast over T) or by
Poisson rate coding; event data arrives as ``[T, B, ...]``. The readout is the mean over T of
the last layer's outputs. A forward at T > 0 that records a graph keeps spike maps in one
byte for the backward pass (:mod:`robustsnn.snn.compact`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from robustsnn.snn.compact import compact_activations
from robustsnn.snn.neuron import Neuron
from robustsnn.snn.paths import GradientPath, parse_path

ENCODINGS = ("direct", "poisson")


def poisson_encode(
    x: torch.Tensor, steps: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Bernoulli spikes with rate ``x`` (in [0, 1]) at each of ``steps`` steps: ``[T·B, ...]``.

    The backward pass is straight-through (d spikes / d x = 1), so attacks and EOT get
    gradients with respect to the image.
    """
    rates = x.clamp(0, 1).unsqueeze(0).expand(steps, *x.shape)
    noise = torch.rand(rates.shape, generator=generator, device=x.device, dtype=x.dtype)
    spikes = (noise < rates).to(x.dtype)
    spikes = rates + (spikes - rates).detach()
    return spikes.reshape(-1, *x.shape[1:])


class SpikingNetwork(nn.Module):
    """Base class: subclasses build their layers and implement :meth:`forward_body`.

    Args:
        input_shape: shape of one static sample, e.g. ``(1, 28, 28)``.
        num_classes: number of outputs.
        time_steps: 0 for the ANN, T > 0 for the SNN.
        encoding: ``direct`` (analog image at every step) or ``poisson`` (rate coding).
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        time_steps: int = 0,
        encoding: str = "direct",
    ) -> None:
        super().__init__()
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}; got {encoding!r}")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)
        self.time_steps = int(time_steps)
        self.encoding = encoding
        self.poisson_seed: int | None = None
        self._generators: dict[str, torch.Generator] = {}

    def forward_body(self, x: torch.Tensor) -> torch.Tensor:
        """The network's layers on a (possibly time-folded) batch."""
        raise NotImplementedError

    def reseed(self, seed: int | None) -> None:
        """Fix the Poisson-coding random stream (None: use torch's global generator)."""
        self.poisson_seed = seed
        self._generators.clear()

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.poisson_seed is None:
            return None
        key = str(device)
        if key not in self._generators:
            gen = torch.Generator(device=device)
            gen.manual_seed(self.poisson_seed)
            self._generators[key] = gen
        return self._generators[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = self.time_steps
        static_dim = 1 + len(self.input_shape)
        if x.dim() not in (static_dim, static_dim + 1):
            raise ValueError(
                f"expected input [B, {', '.join(map(str, self.input_shape))}] or "
                f"[T, B, ...], got shape {tuple(x.shape)}"
            )
        events = x.dim() == static_dim + 1
        if steps == 0:
            return self.forward_body(x.mean(0) if events else x)
        neurons = [m for m in self.modules() if isinstance(m, Neuron)]
        if events:
            if x.shape[0] != steps:
                raise ValueError(
                    f"event input has {x.shape[0]} time steps but the model runs at T = {steps}; "
                    "call set_time_steps(model, T) to match"
                )
            batch, static_batch, x = x.shape[1], None, x.reshape(-1, *x.shape[2:])
        elif self.encoding == "poisson":
            batch, static_batch = x.shape[0], None
            x = poisson_encode(x, steps, self._generator(x.device))
        else:
            batch = static_batch = x.shape[0]
        for n in neurons:
            n._static_batch = static_batch
        compact = compact_activations(self) if torch.is_grad_enabled() else nullcontext()
        try:
            with compact:
                out = self.forward_body(x)
        finally:
            for n in neurons:
                n._static_batch = None
        if out.shape[0] == batch and static_batch is not None:
            return out
        return out.reshape(steps, batch, *out.shape[1:]).mean(0)

    def neurons(self) -> list[tuple[str, Neuron]]:
        """All neurons in forward order, with their qualified names."""
        return named_neurons(self)

    def architecture(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this model (set by the model registry)."""
        return dict(getattr(self, "_architecture", {}))


def named_neurons(model: nn.Module) -> list[tuple[str, Neuron]]:
    """Every :class:`Neuron` of ``model`` with its qualified name, in registration order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, Neuron)]


def _timed_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (Neuron, SpikingNetwork))]


def set_time_steps(model: nn.Module, steps: int) -> nn.Module:
    """Switch a whole model to the ANN (``steps == 0``) or to an SNN with T = ``steps``."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"time steps must be an integer >= 0, got {steps!r}")
    modules = _timed_modules(model)
    if not modules:
        raise ValueError("the model has no Neuron modules; build it from robustsnn layers")
    for m in modules:
        m.time_steps = steps
    return model


def get_time_steps(model: nn.Module) -> int:
    """The model's T (0 for the ANN)."""
    if isinstance(model, SpikingNetwork):
        return model.time_steps
    for m in _timed_modules(model):
        return m.time_steps
    raise ValueError("the model has no Neuron modules")


@contextlib.contextmanager
def using_time_steps(model: nn.Module, steps: int) -> Iterator[nn.Module]:
    """Temporarily run ``model`` at T = ``steps`` (0 = ANN), restoring every module after."""
    saved = [(m, m.time_steps) for m in _timed_modules(model)]
    set_time_steps(model, steps)
    try:
        yield model
    finally:
        for m, t in saved:
            m.time_steps = t


def set_gradient_path(model: nn.Module, path: str | GradientPath) -> GradientPath:
    """Give every neuron the backward approximation ``path`` (not ``ann``: use the context)."""
    path = parse_path(path)
    if path.kind == "ann":
        raise ValueError("the 'ann' path changes the forward pass; use using_gradient_path()")
    neurons = named_neurons(model)
    if not neurons:
        raise ValueError("the model has no Neuron modules")
    for _, n in neurons:
        n.gradient_path = path
    return path


@contextlib.contextmanager
def using_gradient_path(model: nn.Module, path: str | GradientPath) -> Iterator[GradientPath]:
    """Compute gradients of ``model`` through ``path`` inside the block, then restore.

    For ``ann`` the model runs at T = 0 inside the block (the ANN proxy with the SNN's
    weights); success of an attack must then be judged outside the block.
    """
    path = parse_path(path)
    neurons = named_neurons(model)
    if not neurons:
        raise ValueError("the model has no Neuron modules")
    saved = [(n, n.gradient_path) for _, n in neurons]
    try:
        if path.kind == "ann":
            with using_time_steps(model, 0):
                yield path
        else:
            for _, n in neurons:
                n.gradient_path = path
            yield path
    finally:
        for n, p in saved:
            n.gradient_path = p
