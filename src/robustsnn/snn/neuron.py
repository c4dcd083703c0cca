"""The one neuron of the toolkit: an analog activation at T = 0, integrate-and-fire at T > 0.

At ``time_steps == 0`` the neuron is ReLU, a trainable clip ``min(max(x, 0), λ)`` or QCFS
(clip-floor-shift with L levels and trainable λ). At ``time_steps > 0`` it is an
integrate-and-fire neuron on time-folded input ``[T·B, ...]``:

    v_t = leak · v_{t-1} + x_t
    s_t = H(v_t - θ)              (v ≥ θ, or v > θ with ``strict_firing``)
    v_t ← v_t - s_t·θ             (reset "subtract")   or   v_t·(1 - s_t)   (reset "zero")
    out_t = s_t · amplitude       (amplitude 1 or θ)

The whole time loop is one autograd function (:mod:`robustsnn.snn.bptt`) that runs the chosen
gradient path by hand and keeps little for the backward pass; inside a spiking network's
forward, spike maps are saved in one byte and a batch norm's output is recomputed rather
than stored (:mod:`robustsnn.snn.compact`). Membrane state lives in local variables of each
call, so two identical calls give identical outputs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustsnn.snn.adaptive import SharpnessState, active_sharpness_state
from robustsnn.snn.bptt import Dynamics, IFFunction, simulate
from robustsnn.snn.compact import active_store
from robustsnn.snn.paths import GradientPath, parse_path

ACTIVATIONS = ("relu", "clip", "qcfs")
RESETS = ("subtract", "zero")
INITIAL_POTENTIALS = ("zero", "half", "tensor")
AMPLITUDES = ("unit", "threshold")


class _StraightThroughFloor(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class Neuron(nn.Module):
    """An activation that is ReLU / clip / QCFS at T = 0 and an IF neuron at T > 0.

    Args:
        channels: number of channels (dim 1 of the input); needed for per-channel thresholds.
        activation: analog activation at T = 0: ``relu``, ``clip`` (trainable λ) or ``qcfs``.
        levels: QCFS quantisation levels L.
        clip_value: initial λ of ``clip``/``qcfs``.
        threshold: initial firing threshold θ.
        per_channel: one threshold per channel instead of one per layer.
        trainable_threshold: make θ a trained parameter (clamped below at ``threshold_min``).
        leak: membrane decay per step (1.0 = integrate-and-fire).
        initial_potential: ``zero``, ``half`` (θ/2) or ``tensor`` (set with
            :meth:`set_initial_potential`).
        reset: ``subtract`` (v - θ) or ``zero``.
        strict_firing: fire on v > θ instead of v ≥ θ.
        spike_amplitude: ``unit`` (spikes are 1) or ``threshold`` (spikes are θ).
        gradient_path: backward approximation, e.g. ``triangle:1.0``.
    """

    def __init__(
        self,
        channels: int | None = None,
        *,
        activation: str = "relu",
        levels: int = 8,
        clip_value: float = 8.0,
        threshold: float = 1.0,
        per_channel: bool = False,
        trainable_threshold: bool = False,
        threshold_min: float = 0.03,
        leak: float = 1.0,
        initial_potential: str = "zero",
        reset: str = "subtract",
        strict_firing: bool = False,
        spike_amplitude: str = "unit",
        gradient_path: str | GradientPath = "triangle:1.0",
    ) -> None:
        super().__init__()
        _check_choice("activation", activation, ACTIVATIONS)
        _check_choice("reset", reset, RESETS)
        _check_choice("initial_potential", initial_potential, INITIAL_POTENTIALS)
        _check_choice("spike_amplitude", spike_amplitude, AMPLITUDES)
        if per_channel and not channels:
            raise ValueError("per-channel thresholds need the number of channels")
        if not 0.0 < leak <= 1.0:
            raise ValueError(f"leak must be in (0, 1], got {leak}")
        if levels < 1:
            raise ValueError(f"QCFS levels must be >= 1, got {levels}")
        self.channels = channels
        self.activation = activation
        self.levels = int(levels)
        self.leak = float(leak)
        self.threshold_min = float(threshold_min)
        self.initial_potential_mode = initial_potential
        self.reset = reset
        self.strict_firing = bool(strict_firing)
        self.spike_amplitude = spike_amplitude
        self.gradient_path = parse_path(gradient_path)
        self.time_steps = 0
        self.record_potential = False
        self.final_potential: torch.Tensor | None = None
        self._static_batch: int | None = None
        shape = (channels,) if per_channel else ()
        self.threshold = nn.Parameter(
            torch.full(shape, float(threshold)), requires_grad=trainable_threshold
        )
        self.clip_value = (
            nn.Parameter(torch.tensor(float(clip_value))) if activation != "relu" else None
        )
        self.register_buffer("initial_potential", None)

    # ---- settings -------------------------------------------------------------------------
    @property
    def per_channel(self) -> bool:
        return self.threshold.dim() == 1

    def settings(self) -> dict[str, Any]:
        """Everything needed to rebuild this neuron (tensors excluded), JSON-serialisable."""
        return {
            "channels": self.channels,
            "activation": self.activation,
            "levels": self.levels,
            "per_channel": self.per_channel,
            "trainable_threshold": self.threshold.requires_grad,
            "threshold_min": self.threshold_min,
            "leak": self.leak,
            "initial_potential": self.initial_potential_mode,
            "reset": self.reset,
            "strict_firing": self.strict_firing,
            "spike_amplitude": self.spike_amplitude,
            "gradient_path": str(self.gradient_path),
        }

    def configure(self, **settings: Any) -> Neuron:
        """Change settings in place (e.g. after conversion); unknown keys are refused."""
        for key, value in settings.items():
            if key == "reset":
                _check_choice("reset", value, RESETS)
                self.reset = value
            elif key == "initial_potential":
                _check_choice("initial_potential", value, INITIAL_POTENTIALS)
                if value == "tensor" and self.initial_potential is None:
                    raise ValueError("set a tensor with set_initial_potential() first")
                self.initial_potential_mode = value
            elif key == "spike_amplitude":
                _check_choice("spike_amplitude", value, AMPLITUDES)
                self.spike_amplitude = value
            elif key == "strict_firing":
                self.strict_firing = bool(value)
            elif key == "leak":
                if not 0.0 < float(value) <= 1.0:
                    raise ValueError(f"leak must be in (0, 1], got {value}")
                self.leak = float(value)
            elif key == "trainable_threshold":
                self.threshold.requires_grad_(bool(value))
            elif key == "threshold_min":
                self.threshold_min = float(value)
            elif key == "gradient_path":
                self.gradient_path = parse_path(value)
            elif key == "activation":
                _check_choice("activation", value, ACTIVATIONS)
                if value != "relu" and self.clip_value is None:
                    self.clip_value = nn.Parameter(torch.tensor(8.0))
                self.activation = value
            elif key == "levels":
                self.levels = int(value)
            else:
                raise ValueError(f"unknown neuron setting '{key}'")
        return self

    @torch.no_grad()
    def set_threshold(self, value: float | torch.Tensor) -> None:
        """Set θ: a number (per layer) or a 1-D tensor of length ``channels`` (per channel)."""
        value = torch.as_tensor(value, dtype=self.threshold.dtype, device=self.threshold.device)
        if value.dim() > 1 or (value.dim() == 1 and value.numel() != self.channels):
            raise ValueError(
                f"threshold must be a scalar or have {self.channels} entries, "
                f"got shape {tuple(value.shape)}"
            )
        trainable = self.threshold.requires_grad
        self.threshold = nn.Parameter(value.clone(), requires_grad=trainable)

    @torch.no_grad()
    def set_initial_potential(self, value: torch.Tensor | None) -> None:
        """Use a tensor v0 (one value per neuron of a sample, or per channel); None clears it."""
        if value is None:
            self.initial_potential = None
            if self.initial_potential_mode == "tensor":
                self.initial_potential_mode = "zero"
            return
        self.initial_potential = value.detach().clone().to(self.threshold.device)
        self.initial_potential_mode = "tensor"

    def effective_threshold(self) -> torch.Tensor:
        """θ as used in the forward pass (clamped below when trainable)."""
        if self.threshold.requires_grad:
            return self.threshold.clamp(min=self.threshold_min)
        return self.threshold

    # ---- forward -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_steps == 0:
            return self._analog(x)
        return self._spiking(x)

    def _analog(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation == "relu":
            return torch.relu(x)
        lam = self.clip_value
        y = (x / lam).clamp(0, 1)
        if self.activation == "qcfs":
            y = _StraightThroughFloor.apply(y * self.levels + 0.5) / self.levels
        return y * lam

    def _spiking(self, x: torch.Tensor) -> torch.Tensor:
        steps = self.time_steps
        static = self._static_batch is not None and x.shape[0] == self._static_batch
        if static:
            seq = x
        else:
            if x.shape[0] % steps:
                raise ValueError(
                    f"neuron input has leading size {x.shape[0]}, not a multiple of T = {steps}"
                )
            seq = x.reshape(steps, x.shape[0] // steps, *x.shape[1:])
        per_sample = seq.dim() - 1 if static else seq.dim() - 2
        theta = self.effective_threshold()
        if theta.dim() == 1:
            theta = theta.view(-1, *([1] * (per_sample - 1)))
        v0 = self._initial_potential(theta, per_sample).to(x.dtype)
        amp = self.spike_amplitude == "threshold"
        dyn = Dynamics(
            steps, static, self.leak, self.reset == "subtract", self.strict_firing, amp,
            self.gradient_path,
        )  # fmt: skip
        if torch.is_grad_enabled() and (
            seq.requires_grad or theta.requires_grad or v0.requires_grad
        ):
            store = active_store()
            source = store.norm_source(x) if store is not None else None
            source, recipe = source or (None, None)
            pattern = None
            if store is not None:
                pattern = torch.empty(
                    (steps, *dyn.step_shape(seq)), dtype=torch.bool, device=x.device
                )
            sharpness = self._sharpness if self.gradient_path.kind == "assg" else None
            out, final = IFFunction.apply(seq, theta, v0, source, pattern, dyn, recipe, sharpness)
            if store is not None:
                store.add_spikes(out, pattern, theta if amp else None)
        else:
            out, final = simulate(seq, dyn, theta, v0)
        self.final_potential = final.detach() if self.record_potential else None
        return out.reshape(-1, *out.shape[2:])

    def _sharpness(self, distance: torch.Tensor) -> torch.Tensor:
        """ASSG's sharpness α for this neuron's |u − θ| ``[T, B, ...]`` (see
        :mod:`robustsnn.snn.adaptive`): the attack's state if one is bound, else fresh."""
        state = active_sharpness_state() or SharpnessState()
        return state.sharpness(self, distance, self.gradient_path.sharpness_scale)

    def _initial_potential(self, theta: torch.Tensor, per_sample: int) -> torch.Tensor:
        mode = self.initial_potential_mode
        if mode == "zero":
            return torch.zeros((), device=theta.device)
        if mode == "half":
            return theta / 2
        v0 = self.initial_potential
        if v0 is None:
            raise ValueError("initial_potential='tensor' needs set_initial_potential() first")
        if v0.dim() == 1 and per_sample > 1:
            v0 = v0.view(-1, *([1] * (per_sample - 1)))
        return v0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "threshold"
        if key in state_dict and state_dict[key].shape != self.threshold.shape:
            if self.channels is None and state_dict[key].dim() == 1:
                self.channels = state_dict[key].numel()
            self.set_threshold(torch.zeros_like(state_dict[key]))
        key = prefix + "initial_potential"
        if key in state_dict:
            self.initial_potential = torch.zeros_like(state_dict[key])
        key = prefix + "clip_value"
        if key in state_dict and self.clip_value is None:
            self.clip_value = nn.Parameter(torch.zeros_like(state_dict[key]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        theta = "per-channel" if self.per_channel else f"{float(self.threshold):.4g}"
        return (
            f"activation={self.activation}, T={self.time_steps}, threshold={theta}, "
            f"reset={self.reset}, v0={self.initial_potential_mode}, path={self.gradient_path}"
        )


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
