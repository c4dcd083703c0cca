"""Low-latency conversion recipes: OPI, COS, SRP, training-free LTB, max-norm and percentile.

Every recipe converts a model of this toolkit in place and leaves it at ``time_steps``; all
neurons are integrate-and-fire with reset by subtraction and spikes of amplitude θ, so a
layer's spike rate times θ approximates its ANN activation.

* ``opi`` (Bu et al., AAAI 2022): a clipped (or QCFS) ANN, θ = λ and the optimal initial
  potential v0 = θ/2.
* ``cos`` (Hao et al., ICLR 2023): QCFS conversion plus offset-spike calibration: per test
  sample, each layer in turn runs ρ pre-simulation steps; a neuron that ended with a negative
  residual after firing (one spike too many) starts lower, one that ended at or above θ (one
  spike too few) starts higher, then the real run takes T steps. Latency ρ + T.
* ``srp`` (Hao et al., AAAI 2023): QCFS conversion plus residual-potential silencing: the whole
  network runs τ steps per test sample; neurons whose residual potential is ≤ 0 are silenced
  in the real run of T steps, which restarts from v0 = θ/2. Latency τ + T.
* ``tfc`` (Bu, Li & Yu, CVPR 2025): training-free conversion of a ReLU ANN by local threshold
  balancing: per-channel thresholds start at 0 and grow by ``2·mean((z − θ)⁺)`` per
  calibration batch while the clipped activations are fed forward (no backprop); v0 = θ/2;
  delayed readout. Max-pooling must sit before the neuron (:func:`from_torch` does that).
* ``max-norm`` / ``percentile`` (Diehl 2015; Rueckauer 2017): per-layer θ = the maximum (or the
  p-th percentile) of the layer's ANN activations on calibration data; v0 = 0.

COS and SRP calibrate per input at inference time, under ``no_grad``, through forward hooks
on the model (:class:`Presimulation`): gradients of the real run treat the calibrated
potentials as constants (a BPDA-style attack surface; evaluate them with that in mind).
COS and SRP settings and a zoo model's readout delay live in hooks, not in the state dict:
save them with ``save_checkpoint(model, path, conversion_metadata(model))`` and restore them
with :func:`robustsnn.convert.from_torch.load_converted`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from robustsnn.convert.from_torch import GraphNetwork, delay_weighted, readout_start
from robustsnn.convert.recipes import batch_statistics_bn, layer_input, qcfs, register_recipe
from robustsnn.data.dataset import ImageDataset
from robustsnn.data.dataset import batches as iterate_batches
from robustsnn.errors import UserError
from robustsnn.snn.network import SpikingNetwork, named_neurons, set_time_steps, using_time_steps
from robustsnn.snn.neuron import Neuron

PRESIMULATIONS = ("cos", "srp")
COS_SHIFTS = ("margin", "unit")
SILENT_POTENTIAL = -1.0e6
"""Initial potential of a neuron SRP silences: it cannot reach θ within any practical T."""


def _neurons(model: nn.Module) -> list[tuple[str, Neuron]]:
    neurons = named_neurons(model)
    if not neurons:
        raise UserError("the model has no Neuron modules to convert")
    return neurons


def _spiking_setup(neuron: Neuron, initial_potential: str) -> None:
    neuron.configure(
        initial_potential=initial_potential,
        reset="subtract",
        spike_amplitude="threshold",
        trainable_threshold=False,
    )


# ---- OPI ---------------------------------------------------------------------------------------
def opi(
    model: nn.Module, calibration_set: ImageDataset | None = None, *, time_steps: int = 8
) -> nn.Module:
    """OPI: θ = λ of a clip (or QCFS) ANN, v0 = θ/2, reset by subtraction; no data needed."""
    for name, n in _neurons(model):
        if n.activation not in ("clip", "qcfs") or n.clip_value is None:
            raise UserError(
                f"opi needs an ANN trained with clipped activations ('clip' or 'qcfs'); "
                f"neuron '{name}' is '{n.activation}'"
            )
        n.set_threshold(n.clip_value.detach().clone())
        _spiking_setup(n, "half")
    set_time_steps(model, time_steps)
    return model.eval()


# ---- data-based normalisation --------------------------------------------------------------------
def _calibration_batches(
    calibration_set: ImageDataset | None, count: int, batch_size: int, seed: int, recipe: str
) -> list[torch.Tensor]:
    if calibration_set is None or len(calibration_set) == 0:
        raise UserError(f"recipe '{recipe}' needs calibration data (a few training images)")
    if count < 1:
        raise UserError(f"the number of calibration batches must be >= 1, got {count}")
    data = []
    epoch = 0
    while len(data) < count:
        for x, _ in iterate_batches(
            calibration_set, batch_size, shuffle=True, seed=seed, epoch=epoch
        ):
            data.append(x)
            if len(data) == count:
                break
        epoch += 1
    return data


@torch.no_grad()
def _ann_activations(model: nn.Module, data: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every neuron's ANN output over ``data`` (flattened, concatenated)."""
    outputs: dict[str, list[torch.Tensor]] = {}
    handles = [
        n.register_forward_hook(
            lambda _m, _a, out, name=name: outputs.setdefault(name, []).append(out.reshape(-1))
        )
        for name, n in _neurons(model)
    ]
    try:
        with using_time_steps(model, 0):
            model.eval()
            for x in data:
                model(x)
    finally:
        for h in handles:
            h.remove()
    return {name: torch.cat(values) for name, values in outputs.items()}


def _upper_percentile(values: torch.Tensor, percentile: float) -> float:
    """The ``percentile`` of ``values`` (k-th smallest with k = ⌈q·n⌉, at least 1)."""
    k = max(1, min(values.numel(), math.ceil(percentile / 100 * values.numel())))
    return float(values.float().kthvalue(k).values)


def _data_normalisation(
    model: nn.Module,
    calibration_set: ImageDataset | None,
    percentile: float,
    time_steps: int,
    batches: int,
    batch_size: int,
    threshold_min: float,
    seed: int,
    recipe: str,
) -> nn.Module:
    if not 0 < percentile <= 100:
        raise UserError(f"percentile must be in (0, 100], got {percentile}")
    data = _calibration_batches(calibration_set, batches, batch_size, seed, recipe)
    activations = _ann_activations(model, data)
    for name, n in _neurons(model):
        if name not in activations:
            raise UserError(f"neuron '{name}' was not reached by the forward pass")
        value = _upper_percentile(activations[name], percentile)
        n.set_threshold(max(value, threshold_min))
        _spiking_setup(n, "zero")
    set_time_steps(model, time_steps)
    return model.eval()


def max_norm(
    model: nn.Module,
    calibration_set: ImageDataset | None = None,
    *,
    time_steps: int = 32,
    batches: int = 4,
    batch_size: int = 64,
    threshold_min: float = 1e-3,
    seed: int = 0,
) -> nn.Module:
    """Layer-wise data normalisation: θ = the largest ANN activation of each layer; v0 = 0."""
    return _data_normalisation(
        model,
        calibration_set,
        100.0,
        time_steps,
        batches,
        batch_size,
        threshold_min,
        seed,
        "max-norm",
    )


def percentile_norm(
    model: nn.Module,
    calibration_set: ImageDataset | None = None,
    *,
    time_steps: int = 32,
    percentile: float = 99.9,
    batches: int = 4,
    batch_size: int = 64,
    threshold_min: float = 1e-3,
    seed: int = 0,
) -> nn.Module:
    """Robust normalisation: θ = the p-th percentile of each layer's ANN activations; v0 = 0."""
    return _data_normalisation(
        model,
        calibration_set,
        percentile,
        time_steps,
        batches,
        batch_size,
        threshold_min,
        seed,
        "percentile",
    )


# ---- training-free conversion (local threshold balancing) ---------------------------------------
def _channel_dims(z: torch.Tensor) -> tuple[int, ...]:
    """All dims but the channel dim 1."""
    return (0,) + tuple(range(2, z.dim()))


def _channel_view(theta: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return theta.view(1, -1, *([1] * (z.dim() - 2)))


@torch.no_grad()
def local_threshold_balancing(
    model: nn.Module, data: list[torch.Tensor], eps: float = 1e-6
) -> dict[str, torch.Tensor]:
    """Per-channel thresholds by LTB: θ ← θ + 2·mean((z − θ)⁺) per batch, clipped z fed on.

    θ starts at 0; every neuron is replaced by ``clamp(z, 0, θ)`` during the passes, so each
    layer is balanced against the clipped activity of the layers before it. No gradients.
    """
    neurons = _neurons(model)
    thresholds: dict[str, torch.Tensor] = {}

    def balance(name: str):
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...], _out: torch.Tensor):
            z = args[0]
            theta = thresholds.get(name)
            if theta is None:
                theta = torch.zeros(z.shape[1], dtype=z.dtype, device=z.device)
            excess = (z - _channel_view(theta, z)).clamp_min(0).mean(_channel_dims(z))
            theta = (theta + 2 * excess).clamp_min(eps)
            thresholds[name] = theta
            return torch.minimum(z.clamp_min(0), _channel_view(theta, z))

        return hook

    handles = [n.register_forward_hook(balance(name)) for name, n in neurons]
    try:
        with using_time_steps(model, 0):
            model.eval()
            for x in data:
                model(x)
    finally:
        for h in handles:
            h.remove()
    return thresholds


@torch.no_grad()
def estimate_readout_delay(
    model: nn.Module, x: torch.Tensor, thresholds: dict[str, torch.Tensor]
) -> int:
    """Steps until the first output spike: ``Σ_l min_i (θ_i − v0_i) / E[ReLU(z_i)]`` (v0 = θ/2).

    ``E`` is the mean over the batch ``x`` of each neuron's input current with the clipped
    activations of the earlier layers fed forward.
    """
    total = 0.0

    def measure(name: str):
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...], _out: torch.Tensor):
            nonlocal total
            z = args[0]
            theta = _channel_view(thresholds[name], z)[0]
            rate = z.clamp_min(0).mean(0)
            charge = (theta / 2).expand_as(rate)
            ratio = torch.where(rate > 0, charge / rate.clamp_min(1e-12), torch.inf)
            fastest = float(ratio.min())
            total += fastest if math.isfinite(fastest) else 0.0
            return torch.minimum(z.clamp_min(0), _channel_view(thresholds[name], z))

        return hook

    handles = [n.register_forward_hook(measure(name)) for name, n in _neurons(model)]
    try:
        with using_time_steps(model, 0):
            model(x)
    finally:
        for h in handles:
            h.remove()
    return int(round(total))


def tfc(
    model: nn.Module,
    calibration_set: ImageDataset | None = None,
    *,
    time_steps: int = 32,
    batches: int = 256,
    batch_size: int = 64,
    delay: bool | int = True,
    seed: int = 0,
) -> nn.Module:
    """Training-free conversion: per-channel LTB thresholds, v0 = θ/2, delayed readout.

    ``batches`` calibration batches balance the thresholds (one ANN forward pass
    each, cycling over ``calibration_set``; the paper uses 1000 batches of 100 on ImageNet,
    fewer leave the thresholds low and the clipping error high);
    one more estimates the readout delay (``delay=True``), or ``delay`` gives it in steps
    (``False``/0: plain mean over all T).
    """
    neurons = _neurons(model)
    for name, n in neurons:
        if not n.channels:
            raise UserError(f"tfc needs per-channel thresholds; neuron '{name}' has no channels")
    data = _calibration_batches(calibration_set, batches + 1, batch_size, seed, "tfc")
    thresholds = local_threshold_balancing(model, data[:-1])
    for name, n in neurons:
        if thresholds[name].numel() != n.channels:
            raise UserError(
                f"neuron '{name}' has {n.channels} channels but sees inputs with "
                f"{thresholds[name].numel()}"
            )
    steps = estimate_readout_delay(model, data[-1], thresholds) if delay is True else int(delay)
    for name, n in neurons:
        n.set_threshold(thresholds[name])
        _spiking_setup(n, "half")
    set_readout_delay(model, steps)
    set_time_steps(model, time_steps)
    return model.eval()


class DelayedReadout:
    """Hooks that make a model's mean-over-T readout a mean over ``t ≥ delay``.

    A forward pre-hook on the model records T; a forward hook on the readout layer weights
    its time-folded output (0 before the window, ``T / window`` inside), so the model's own
    mean over T becomes the mean over the window. Both hooks belong to this one object, so
    ``copy.deepcopy`` of the model keeps them consistent.
    """

    def __init__(self, delay: int) -> None:
        self.delay = int(delay)
        self.steps = 0

    def record(self, model: nn.Module, _args: Any) -> None:
        self.steps = model.time_steps

    def apply(self, _module: nn.Module, _args: Any, out: torch.Tensor) -> torch.Tensor:
        return delay_weighted(out, self.steps, self.delay)


def _remove_delay_hooks(model: nn.Module) -> None:
    for module in model.modules():
        for hooks in (module._forward_pre_hooks, module._forward_hooks):
            for key in [
                k
                for k, fn in hooks.items()
                if isinstance(getattr(fn, "__self__", None), DelayedReadout)
            ]:
                del hooks[key]


def set_readout_delay(model: nn.Module, delay: int) -> None:
    """Average the output over steps ``t ≥ delay`` only (the last 4 if ``T < delay + 4``).

    :class:`GraphNetwork` stores the delay in its architecture (so checkpoints keep it); other
    models get :class:`DelayedReadout` hooks (the last ``nn.Linear`` is the readout), which
    checkpoints keep through :func:`conversion_metadata`.
    """
    if isinstance(delay, bool) or int(delay) != delay or delay < 0:
        raise UserError(f"the readout delay must be an integer >= 0, got {delay!r}")
    model.readout_delay = int(delay)
    if isinstance(model, GraphNetwork):
        arch = getattr(model, "_architecture", None)
        if arch is not None:
            arch["kwargs"]["readout_delay"] = int(delay)
        return
    _remove_delay_hooks(model)
    if delay == 0:
        return
    readout = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not readout:
        raise UserError("a readout delay needs a final nn.Linear layer")
    hooks = DelayedReadout(delay)
    model.register_forward_pre_hook(hooks.record)
    readout[-1].register_forward_hook(hooks.apply)


def readout_delay(model: nn.Module) -> int:
    """The model's readout delay in steps (0 when it reads out every step)."""
    return int(getattr(model, "readout_delay", 0) or 0)


@contextlib.contextmanager
def _no_readout_delay(model: nn.Module) -> Iterator[None]:
    delay = readout_delay(model)
    if delay:
        set_readout_delay(model, 0)
    try:
        yield
    finally:
        if delay:
            set_readout_delay(model, delay)


# ---- COS and SRP: per-sample pre-simulation ------------------------------------------------------
def _input_sequence(x: torch.Tensor, steps: int, batch: int) -> torch.Tensor:
    """A neuron input as ``[T, B, ...]`` (direct-coded input arrives once, unexpanded)."""
    if x.shape[0] == batch and steps != 1:
        return x.unsqueeze(0).expand(steps, *x.shape)
    return x.reshape(steps, -1, *x.shape[1:])


def offset_spike_potential(
    current: torch.Tensor,
    threshold: torch.Tensor,
    shift: str = "margin",
    strict: bool = False,
) -> torch.Tensor:
    """COS: the calibrated initial potential of every neuron from its pre-simulation input.

    ``current`` is ``[ρ, B, ...]``; ``threshold`` broadcasts against one step. In units of θ,
    the neuron starts at ½ and runs ρ IF steps (reset by subtraction). If it ends below 0
    having fired (one spike too many) it restarts at ``½ − d``; if it ends at or above 1 (one
    spike too few) at ``½ + d``; otherwise at ½. With ``shift="unit"`` d = 1 (one threshold,
    the paper's optimal shift); with ``"margin"`` (the authors' code) d is at least 1 and
    large enough to remove the earliest extra spike (``min m_fired − 0.999``) or add the
    missing one (``1.001 − max v_silent``).
    """
    if shift not in COS_SHIFTS:
        raise UserError(f"shift must be one of {', '.join(COS_SHIFTS)}; got {shift!r}")
    u = current / threshold
    v = torch.full_like(u[0], 0.5)
    fired_any = torch.zeros_like(v, dtype=torch.bool)
    lowest_fired = torch.full_like(v, torch.inf)
    highest_silent = torch.full_like(v, -torch.inf)
    for t in range(u.shape[0]):
        m = v + u[t]
        fired = m > 1 if strict else m >= 1
        fired_any |= fired
        lowest_fired = torch.where(fired, torch.minimum(lowest_fired, m), lowest_fired)
        highest_silent = torch.where(fired, highest_silent, torch.maximum(highest_silent, m))
        v = m - fired.to(m.dtype)
    too_many = (v < 0) & fired_any
    too_few = v >= 1
    if shift == "unit":
        down = up = torch.ones_like(v)
    else:
        down = (lowest_fired - 0.999).clamp_min(1.0)
        up = torch.where(highest_silent.isfinite(), 1.001 - highest_silent, 1.0).clamp_min(1.0)
    half = torch.full_like(v, 0.5)
    v0 = torch.where(too_many, half - down, torch.where(too_few, half + up, half))
    return v0 * threshold


def residual_potential_mask(final: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """SRP: True where a neuron keeps firing (residual potential ``v(τ)/θ > 10⁻³``)."""
    return final / threshold > 1e-3


def _threshold_like(neuron: Neuron, sample: torch.Tensor) -> torch.Tensor:
    theta = neuron.effective_threshold().detach()
    if theta.dim() == 1:
        theta = theta.view(-1, *([1] * (sample.dim() - 2)))
    return theta


class Presimulation:
    """COS or SRP calibration of a network's neurons on every input, as forward hooks.

    Installed on a :class:`SpikingNetwork` by :func:`presimulate`: before each forward at
    T > 0 it pre-simulates the input (under ``no_grad``) and gives every neuron a per-sample
    initial potential; after the forward it restores each neuron's own setting. The model,
    its parameters and its neuron names are unchanged, so it trains, attacks and saves as
    before (the settings go into the checkpoint metadata: :func:`conversion_metadata`).

    Args:
        method: ``cos`` (offset-spike initial potentials, layer by layer on the already
            calibrated layers) or ``srp`` (one τ-step run of the whole network, then neurons
            whose residual potential is ≤ 0 are silenced).
        presim_steps: ρ (COS) or τ (SRP); the total latency is this + T.
        shift: COS shift rule (``margin`` as in the authors' code, or ``unit``).
    """

    def __init__(self, method: str = "cos", presim_steps: int = 4, shift: str = "margin") -> None:
        if method not in PRESIMULATIONS:
            raise UserError(f"method must be one of {', '.join(PRESIMULATIONS)}; got {method!r}")
        if isinstance(presim_steps, bool) or int(presim_steps) != presim_steps or presim_steps < 1:
            raise UserError(f"presim_steps must be an integer >= 1, got {presim_steps!r}")
        if shift not in COS_SHIFTS:
            raise UserError(f"shift must be one of {', '.join(COS_SHIFTS)}; got {shift!r}")
        self.method = method
        self.presim_steps = int(presim_steps)
        self.shift = shift
        self._active = False
        self._saved: list[tuple[Neuron, str, torch.Tensor | None]] = []

    def settings(self) -> dict[str, Any]:
        return {"method": self.method, "presim_steps": self.presim_steps, "shift": self.shift}

    def before(self, model: SpikingNetwork, args: tuple[torch.Tensor, ...]) -> None:
        if model.time_steps == 0 or self._active:
            return
        x = args[0]
        neurons = [n for _, n in named_neurons(model)]
        self._saved = [(n, n.initial_potential_mode, n.initial_potential) for n in neurons]
        self._active = True
        try:
            events = x.dim() == len(model.input_shape) + 2
            presim = x[: self.presim_steps] if events else x
            keep_statistics = batch_statistics_bn(model) if model.training else nullcontext()
            with torch.no_grad(), keep_statistics:
                if self.method == "cos":
                    self._offset_spikes(model, presim, neurons, x.shape[1] if events else len(x))
                else:
                    self._residual_mask(model, presim, neurons)
        except BaseException:
            self._restore()
            raise
        finally:
            self._active = False

    def after(self, model: SpikingNetwork, args: Any, output: Any) -> None:
        if not self._active:
            self._restore()

    def _restore(self) -> None:
        for n, mode, value in self._saved:
            n.initial_potential = value
            n.initial_potential_mode = mode
        self._saved = []

    def _offset_spikes(
        self, model: SpikingNetwork, x: torch.Tensor, neurons: list[Neuron], batch: int
    ) -> None:
        """Calibrate neuron by neuron, each on the already calibrated layers before it."""
        with using_time_steps(model, self.presim_steps):
            for neuron in neurons:
                neuron.configure(initial_potential="half")
                current = layer_input(model, neuron, x)
                seq = _input_sequence(current, self.presim_steps, batch)
                theta = _threshold_like(neuron, seq[0])
                v0 = offset_spike_potential(seq, theta, self.shift, neuron.strict_firing)
                neuron.set_initial_potential(v0)

    def _residual_mask(self, model: SpikingNetwork, x: torch.Tensor, neurons: list[Neuron]) -> None:
        """One τ-step run of the whole network; silence neurons with residual ≤ 0."""
        for n in neurons:
            n.configure(initial_potential="half")
            n.record_potential = True
        try:
            with using_time_steps(model, self.presim_steps):
                model(x)
            finals = [n.final_potential for n in neurons]
        finally:
            for n in neurons:
                n.record_potential = False
                n.final_potential = None
        for n, final in zip(neurons, finals, strict=True):
            theta = _threshold_like(n, final)
            keep = residual_potential_mask(final, theta)
            v0 = torch.where(keep, (theta / 2).expand_as(final), SILENT_POTENTIAL)
            n.set_initial_potential(v0)


def _hooks_of(model: nn.Module) -> list[tuple[dict, int, Presimulation]]:
    found = []
    for hooks in (model._forward_pre_hooks, model._forward_hooks):
        for key, fn in hooks.items():
            owner = getattr(fn, "__self__", None)
            if isinstance(owner, Presimulation):
                found.append((hooks, key, owner))
    return found


def presimulation(model: nn.Module) -> Presimulation | None:
    """The COS/SRP calibration installed on ``model`` (None if there is none)."""
    found = _hooks_of(model)
    return found[0][2] if found else None


def remove_presimulation(model: nn.Module) -> None:
    """Take COS/SRP calibration off ``model``."""
    for hooks, key, _ in _hooks_of(model):
        hooks.pop(key, None)
        getattr(model, "_forward_hooks_always_called", {}).pop(key, None)


def presimulate(
    model: nn.Module, method: str = "cos", presim_steps: int = 4, shift: str = "margin"
) -> nn.Module:
    """Install COS or SRP calibration on ``model`` (replacing any installed before)."""
    if not isinstance(model, SpikingNetwork):
        raise UserError(f"{method} needs a SpikingNetwork (a zoo model or from_torch's result)")
    calibration = Presimulation(method, presim_steps, shift)
    remove_presimulation(model)
    model.register_forward_pre_hook(calibration.before)
    model.register_forward_hook(calibration.after, always_call=True)
    return model


def _qcfs_or_keep(model: nn.Module, base: str | None, time_steps: int) -> nn.Module:
    if base == "qcfs":
        return qcfs(model, None, time_steps=time_steps)
    if base is None:
        for name, n in _neurons(model):
            if n.initial_potential_mode != "half" or n.reset != "subtract":
                raise UserError(
                    f"neuron '{name}' is not converted for pre-simulation (needs v0 = θ/2 and "
                    "reset by subtraction): convert with qcfs, opi or tfc first, or base='qcfs'"
                )
        set_time_steps(model, time_steps)
        return model
    raise UserError(f"base must be 'qcfs' or None (keep the current conversion), got {base!r}")


def cos(
    model: nn.Module,
    calibration_set: ImageDataset | None = None,
    *,
    time_steps: int = 8,
    presim_steps: int = 4,
    shift: str = "margin",
    base: str | None = "qcfs",
) -> nn.Module:
    """COS: QCFS conversion (``base``) + per-sample offset-spike calibration with ρ steps."""
    Presimulation("cos", presim_steps, shift)  # validate before changing the model
    model = _qcfs_or_keep(model, base, time_steps)
    return presimulate(model, "cos", presim_steps, shift).eval()


def srp(
    model: nn.Module,
    calibration_set: ImageDataset | None = None,
    *,
    time_steps: int = 8,
    presim_steps: int = 4,
    base: str | None = "qcfs",
) -> nn.Module:
    """SRP: QCFS conversion (``base``) + per-sample silencing after τ pre-simulation steps."""
    Presimulation("srp", presim_steps)
    model = _qcfs_or_keep(model, base, time_steps)
    return presimulate(model, "srp", presim_steps).eval()


def latency_offset(model: nn.Module) -> int:
    """Extra steps a model spends before its T steps (ρ or τ for COS/SRP, else 0)."""
    calibration = presimulation(model)
    return calibration.presim_steps if calibration is not None else 0


def conversion_metadata(model: nn.Module) -> dict[str, Any]:
    """What a checkpoint must record besides the weights: COS/SRP settings, readout delay.

    Save it with ``save_checkpoint(model, path, conversion_metadata(model))`` and re-apply it
    after ``load_checkpoint`` with :func:`apply_conversion_metadata`.
    """
    meta: dict[str, Any] = {}
    calibration = presimulation(model)
    if calibration is not None:
        meta["presimulation"] = calibration.settings()
    delay = readout_delay(model)
    if delay:
        meta["readout_delay"] = delay
    return meta


def apply_conversion_metadata(model: nn.Module, metadata: dict[str, Any]) -> nn.Module:
    """Re-install what :func:`conversion_metadata` recorded (on a freshly loaded model)."""
    settings = metadata.get("presimulation")
    if settings is not None:
        if not isinstance(settings, dict):
            raise UserError("'presimulation' metadata must be a dict of method/presim_steps")
        presimulate(model, **settings)
    delay = metadata.get("readout_delay")
    if delay:
        set_readout_delay(model, int(delay))
    return model


# ---- evaluation ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _capture_body_output(model: nn.Module, sink: list[torch.Tensor]) -> Iterator[None]:
    original = model.forward_body

    def capture(x: torch.Tensor) -> torch.Tensor:
        out = original(x)
        sink.append(out)
        return out

    model.forward_body = capture
    try:
        yield
    finally:
        del model.forward_body


@torch.no_grad()
def accuracy_vs_time(
    model: nn.Module,
    dataset: ImageDataset,
    time_steps: Sequence[int],
    batch_size: int = 256,
) -> dict[int, float]:
    """Accuracy after each T of ``time_steps`` from one run at the largest T.

    The network is causal (and COS/SRP calibration does not depend on T), so the mean of the
    first t step outputs is what a run at T = t reads out; a readout delay is applied per t.
    """
    steps = sorted({int(t) for t in time_steps})
    if not steps or steps[0] < 1:
        raise UserError(f"time steps must be integers >= 1, got {list(time_steps)}")
    if not isinstance(model, SpikingNetwork):
        raise UserError("accuracy_vs_time needs a SpikingNetwork")
    horizon = steps[-1]
    delay = readout_delay(model)
    correct = dict.fromkeys(steps, 0)
    was_training = model.training
    model.eval()
    sink: list[torch.Tensor] = []
    try:
        with _no_readout_delay(model), using_time_steps(model, horizon):
            for x, y in iterate_batches(dataset, batch_size):
                sink.clear()
                with _capture_body_output(model, sink):
                    model(x)
                out = sink[-1]
                if out.shape[0] == x.shape[0]:
                    out = out.unsqueeze(0).expand(horizon, *out.shape)
                out = out.reshape(horizon, x.shape[0], -1)
                for t in steps:
                    start = readout_start(t, delay)
                    predicted = out[start:t].mean(0).argmax(1)
                    correct[t] += int((predicted == y).sum())
    finally:
        model.train(was_training)
    return {t: correct[t] / max(1, len(dataset)) for t in steps}


for _name, _fn in (
    ("opi", opi),
    ("cos", cos),
    ("srp", srp),
    ("tfc", tfc),
    ("max-norm", max_norm),
    ("percentile", percentile_norm),
):
    register_recipe(_name, _fn)
