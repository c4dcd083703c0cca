"""Spiking core: the neuron, gradient paths, time folding, input encoding and readout."""

from robustsnn.snn.network import (
    ENCODINGS,
    SpikingNetwork,
    get_time_steps,
    named_neurons,
    poisson_encode,
    set_gradient_path,
    set_time_steps,
    using_gradient_path,
    using_time_steps,
)
from robustsnn.snn.neuron import Neuron
from robustsnn.snn.paths import PATH_SETS, GradientPath, expand_paths, parse_path

__all__ = [
    "ENCODINGS",
    "PATH_SETS",
    "GradientPath",
    "Neuron",
    "SpikingNetwork",
    "expand_paths",
    "get_time_steps",
    "named_neurons",
    "parse_path",
    "poisson_encode",
    "set_gradient_path",
    "set_time_steps",
    "using_gradient_path",
    "using_time_steps",
]
