"""Operation counting and the energy model: spikes, synaptic operations, energy against the ANN.

Counted with forward hooks on one pass over real inputs:

* a Conv/Linear layer fed by **spikes** costs one accumulate (AC) per synaptic event: every
  non-zero input spike (a spike scaled by θ still counts once) times the number of outputs it
  reaches; average pooling between the neurons and the layer is folded into its synapses (a
  spike entering the pool reaches what its pooled position reaches);
* a layer fed by **analog** values (the first layer under direct coding, analog residual
  streams) costs dense multiply-accumulates (MAC), as computed (the first layer of a
  direct-coded SNN runs once, not T times);
* at T = 0 (the ANN) every layer costs dense MACs.

Energy = MAC·E_MAC + AC·E_AC with the 45 nm presets of Horowitz (ISSCC 2014). Memory traffic
and neuron-state updates are ignored, which favours the SNN: reports say so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustsnn.errors import UserError
from robustsnn.snn.network import get_time_steps, named_neurons, using_time_steps
from robustsnn.snn.neuron import Neuron

# (E_MAC, E_AC) in picojoules, 45 nm (Horowitz 2014)
ENERGY_PRESETS: dict[str, tuple[float, float]] = {
    "45nm-fp32": (4.6, 0.9),
    "45nm-int32": (3.2, 0.1),
    "45nm-fp16": (1.5, 0.4),
    "45nm-int8": (0.23, 0.03),
}
CAVEAT = (
    "Compute only: memory access, data movement and membrane updates are not counted, which "
    "favours the SNN; compare with a quantised ANN for a fair hardware picture."
)


@dataclass
class LayerOps:
    """Operations of one Conv/Linear layer per image."""

    name: str
    kind: str
    fed_by: str
    mac: float = 0.0
    ac: float = 0.0
    dense_mac: float = 0.0


@dataclass
class NeuronActivity:
    """Spiking activity of one neuron layer per image."""

    name: str
    neurons: int
    spikes_per_image: float
    firing_rate: float


@dataclass
class OperationCounts:
    """Everything :func:`count_operations` measured, per image."""

    time_steps: int
    samples: int
    layers: list[LayerOps] = field(default_factory=list)
    neurons: list[NeuronActivity] = field(default_factory=list)

    @property
    def mac(self) -> float:
        return sum(layer.mac for layer in self.layers)

    @property
    def ac(self) -> float:
        return sum(layer.ac for layer in self.layers)

    @property
    def spikes_per_image(self) -> float:
        return sum(n.spikes_per_image for n in self.neurons)

    def energy_pj(self, preset: str | tuple[float, float] = "45nm-fp32") -> float:
        e_mac, e_ac = energy_costs(preset)
        return self.mac * e_mac + self.ac * e_ac

    def to_dict(self) -> dict[str, Any]:
        return {
            "time_steps": self.time_steps,
            "samples": self.samples,
            "mac": self.mac,
            "ac": self.ac,
            "spikes_per_image": self.spikes_per_image,
            "layers": [asdict(layer) for layer in self.layers],
            "neurons": [asdict(n) for n in self.neurons],
        }


def energy_costs(preset: str | tuple[float, float]) -> tuple[float, float]:
    """(E_MAC, E_AC) in pJ from a preset name or a user pair."""
    if isinstance(preset, str):
        if preset not in ENERGY_PRESETS:
            raise UserError(
                f"unknown energy preset '{preset}'; known: {', '.join(ENERGY_PRESETS)} "
                "or a pair (E_MAC, E_AC) in pJ"
            )
        return ENERGY_PRESETS[preset]
    e_mac, e_ac = preset
    if e_mac < 0 or e_ac < 0:
        raise UserError("energy costs must be >= 0")
    return float(e_mac), float(e_ac)


def dense_macs(layer: nn.Module, x: torch.Tensor, out: torch.Tensor) -> int:
    """Multiply-accumulates of ``layer`` computing ``out`` from ``x`` densely."""
    if isinstance(layer, nn.Conv2d):
        per_output = layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
        return out.numel() * per_output
    return out.numel() * layer.in_features


def synaptic_events(layer: nn.Module, events: torch.Tensor) -> float:
    """Exact accumulate count: every input event times the outputs its synapses reach.

    ``events`` holds the number of spikes at each input position (0/1, or counts after
    pooling). For a conv this is the sum of the conv of the event map with an all-ones kernel.
    """
    if isinstance(layer, nn.Conv2d):
        ones = torch.ones(
            layer.out_channels,
            layer.in_channels // layer.groups,
            *layer.kernel_size,
            dtype=events.dtype,
            device=events.device,
        )
        reached = F.conv2d(
            events,
            ones,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
        )
        return float(reached.sum())
    return float(events.sum()) * layer.out_features


class _Counter:
    """Hooks that follow spike tensors from neurons through average pooling to synapses."""

    def __init__(self, model: nn.Module) -> None:
        self.event_maps: dict[int, torch.Tensor] = {}
        self.layers: dict[str, LayerOps] = {}
        self.spikes: dict[str, float] = {}
        self.sizes: dict[str, int] = {}
        self.handles = []
        for name, module in model.named_modules():
            if isinstance(module, Neuron):
                self.handles.append(module.register_forward_hook(self._neuron_hook(name)))
            elif isinstance(module, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
                self.handles.append(module.register_forward_hook(self._pool_hook))
            elif isinstance(module, (nn.Conv2d, nn.Linear)):
                self.handles.append(module.register_forward_hook(self._layer_hook(name)))

    def _neuron_hook(self, name: str):
        def hook(module: nn.Module, args, out: torch.Tensor) -> None:
            if module.time_steps == 0:
                return
            fired = (out != 0).to(out.dtype)
            self.event_maps[out.data_ptr()] = fired
            self.spikes[name] = self.spikes.get(name, 0.0) + float(fired.sum())
            self.sizes[name] = out[0].numel()

        return hook

    def _pool_hook(self, module: nn.Module, args, out: torch.Tensor) -> None:
        x = args[0]
        events = self.event_maps.get(x.data_ptr())
        if events is None or events.shape != x.shape:
            return
        if isinstance(module, nn.AvgPool2d):
            area = _pair(module.kernel_size)
            counts = F.avg_pool2d(
                events,
                module.kernel_size,
                module.stride,
                module.padding,
                module.ceil_mode,
                count_include_pad=True,
            ) * (area[0] * area[1])
        else:
            pooled = F.adaptive_avg_pool2d(events, module.output_size)
            counts = pooled * (x.shape[-2] * x.shape[-1] / (pooled.shape[-2] * pooled.shape[-1]))
        self.event_maps[out.data_ptr()] = counts

    def _layer_hook(self, name: str):
        def hook(module: nn.Module, args, out: torch.Tensor) -> None:
            x = args[0]
            ops = self.layers.setdefault(
                name, LayerOps(name, "conv" if isinstance(module, nn.Conv2d) else "linear", "")
            )
            dense = dense_macs(module, x, out)
            ops.dense_mac += dense
            events = self.event_maps.get(x.data_ptr())
            if events is not None and events.numel() == x.numel():
                ops.fed_by = "spikes"
                ops.ac += synaptic_events(module, events.reshape(x.shape))
            else:
                ops.fed_by = ops.fed_by or "analog"
                ops.mac += dense

        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


@torch.no_grad()
def count_operations(
    model: nn.Module,
    images: torch.Tensor,
    *,
    time_steps: int | None = None,
    batch_size: int = 100,
) -> OperationCounts:
    """Count MACs, ACs and spikes per image over ``images`` at ``time_steps`` (default: the
    model's own T; 0 gives the ANN's dense MACs)."""
    steps = get_time_steps(model) if time_steps is None else time_steps
    counter = _Counter(model)
    was_training = model.training
    model.eval()
    try:
        with using_time_steps(model, steps):
            for start in range(0, images.shape[0], batch_size):
                counter.event_maps.clear()
                model(images[start : start + batch_size])
    finally:
        counter.close()
        model.train(was_training)
    n = images.shape[0]
    counts = OperationCounts(time_steps=steps, samples=n)
    for ops in counter.layers.values():
        counts.layers.append(
            LayerOps(ops.name, ops.kind, ops.fed_by, ops.mac / n, ops.ac / n, ops.dense_mac / n)
        )
    for name, _ in named_neurons(model):
        if name in counter.spikes:
            size = counter.sizes[name]
            per_image = counter.spikes[name] / n
            counts.neurons.append(
                NeuronActivity(name, size, per_image, per_image / (size * max(steps, 1)))
            )
    return counts


def energy_report(
    model: nn.Module,
    images: torch.Tensor,
    *,
    time_steps: list[int] | None = None,
    preset: str | tuple[float, float] = "45nm-fp32",
    batch_size: int = 100,
) -> dict[str, Any]:
    """The ANN's dense cost and the SNN's cost at each T, with the SNN/ANN energy ratio."""
    e_mac, e_ac = energy_costs(preset)
    ann = count_operations(model, images, time_steps=0, batch_size=batch_size)
    ann_energy = ann.energy_pj((e_mac, e_ac))
    steps_list = time_steps or [get_time_steps(model)]
    snn: dict[str, Any] = {}
    for steps in steps_list:
        if steps < 1:
            raise UserError(f"SNN time steps must be >= 1, got {steps}")
        counts = count_operations(model, images, time_steps=steps, batch_size=batch_size)
        energy = counts.energy_pj((e_mac, e_ac))
        snn[str(steps)] = {
            **counts.to_dict(),
            "energy_pj": energy,
            "energy_ratio_to_ann": energy / ann_energy if ann_energy else None,
        }
    return {
        "preset": preset if isinstance(preset, str) else "custom",
        "e_mac_pj": e_mac,
        "e_ac_pj": e_ac,
        "samples": int(images.shape[0]),
        "ann": {"mac": ann.mac, "energy_pj": ann_energy},
        "snn": snn,
        "caveat": CAVEAT,
    }
