"""Gradient paths: how the backward pass through the spike function is approximated.

A path is chosen at run time for a whole network, independently of how the network was
trained. It is written as a short string so that configs, reports and the command line all
name it the same way: ``triangle:1.0``, ``rect:0.5``, ``exp:0.3:2.0`` (amplitude, rate),
``sigmoid:4``, ``arctan:2``, ``gaussian:0.5``, ``ste``, ``bptr``, ``rga`` (or ``rga:0.2:2``),
``pdsg`` and ``ann`` (the T = 0 proxy with the SNN's weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# name -> (number of parameters, default parameters, meaning of each parameter)
_KINDS: dict[str, tuple[tuple[float, ...], tuple[str, ...]]] = {
    "triangle": ((1.0,), ("width",)),
    "rect": ((1.0,), ("width",)),
    "exp": ((1.0, 1.0), ("amplitude", "rate")),
    "sigmoid": ((4.0,), ("sharpness",)),
    "arctan": ((2.0,), ("sharpness",)),
    "gaussian": ((0.5,), ("std",)),
    "ste": ((), ()),
    "bptr": ((), ()),
    "rga": ((0.2, 2.0), ("low_slope", "saturation")),
    "pdsg": ((), ()),
    "ann": ((), ()),
}

_ALIASES = {
    "pcw": "triangle",
    "tri": "triangle",
    "rectangular": "rect",
    "exponential": "exp",
    "atan": "arctan",
    "sig": "sigmoid",
    "gauss": "gaussian",
    "straight-through": "ste",
    "proxy": "ann",
}

SURROGATE_KINDS = ("triangle", "rect", "exp", "sigmoid", "arctan", "gaussian", "ste", "pdsg")
RATE_KINDS = ("bptr", "rga")


@dataclass(frozen=True)
class GradientPath:
    """One way of getting gradients through spiking neurons.

    ``kind`` is one of the names above and ``params`` its numeric parameters. Surrogate kinds
    replace the Heaviside derivative inside BPTT; ``bptr`` and ``rga`` differentiate the
    firing rate instead; ``ann`` runs the gradient computation on the T = 0 network.
    """

    kind: str
    params: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown gradient path '{self.kind}'; known: {', '.join(_KINDS)}")
        defaults, names = _KINDS[self.kind]
        if len(self.params) != len(defaults):
            raise ValueError(
                f"gradient path '{self.kind}' takes {len(defaults)} parameter(s) "
                f"({', '.join(names) or 'none'}), got {len(self.params)}"
            )
        for name, value in zip(names, self.params, strict=True):
            if not math.isfinite(value) or (value <= 0 and name != "low_slope") or value < 0:
                raise ValueError(
                    f"gradient path '{self.kind}': {name} must be positive, got {value}"
                )

    def __str__(self) -> str:
        return ":".join([self.kind, *(_format_number(p) for p in self.params)])

    @property
    def is_surrogate(self) -> bool:
        """True for paths that backpropagate through time with a surrogate derivative."""
        return self.kind in SURROGATE_KINDS

    @property
    def is_rate(self) -> bool:
        """True for paths that differentiate the firing rate (BPTR, RGA)."""
        return self.kind in RATE_KINDS

    def surrogate(self, u: torch.Tensor, std: torch.Tensor | None = None) -> torch.Tensor:
        """The approximate derivative dS/du at u = v - threshold.

        ``std`` is the membrane-potential spread PDSG needs (broadcastable to ``u``).
        """
        k = self.kind
        if k == "triangle":
            (g,) = self.params
            return (g - u.abs()).clamp_min(0) / (g * g)
        if k == "rect":
            (g,) = self.params
            return (u.abs() < g / 2).to(u.dtype) / g
        if k == "exp":
            a, g = self.params
            return a * torch.exp(-g * u.abs())
        if k == "sigmoid":
            (g,) = self.params
            s = torch.sigmoid(g * u)
            return g * s * (1 - s)
        if k == "arctan":
            (g,) = self.params
            return (g / 2) / (1 + (math.pi / 2 * g * u) ** 2)
        if k == "gaussian":
            (s,) = self.params
            return torch.exp(-(u * u) / (2 * s * s)) / (math.sqrt(2 * math.pi) * s)
        if k == "pdsg":
            if std is None:
                raise ValueError("the pdsg surrogate needs the membrane-potential std")
            return torch.exp(-((u - std / 2) ** 2) / (2 * std * std)) / (
                math.sqrt(2 * math.pi) * std
            )
        if k == "ste":
            return torch.ones_like(u)
        raise ValueError(f"gradient path '{k}' has no surrogate derivative")

    def rate_slope(self, mean_input: torch.Tensor, threshold: torch.Tensor, leak: float):
        """Slope of the firing-rate curve used by RGA (Bu et al. 2023), per neuron."""
        low, beta = self.params
        onset = (1 - leak) * threshold
        slope = (1 - low * (1 - leak) * threshold) / ((leak + beta - 1) * threshold)
        out = torch.where(mean_input < onset, low * torch.ones_like(mean_input), slope)
        out = torch.where(mean_input < 0, torch.zeros_like(out), out)
        return torch.where(mean_input > beta * threshold, torch.zeros_like(out), out)


def _format_number(x: float) -> str:
    return repr(float(x)) if float(x) != int(x) else f"{int(x)}.0"


def parse_path(spec: str | GradientPath) -> GradientPath:
    """Parse ``'triangle:1.0'``-style strings into a :class:`GradientPath`."""
    if isinstance(spec, GradientPath):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a gradient path must be a non-empty string, got {spec!r}")
    parts = [p.strip() for p in spec.strip().lower().split(":")]
    kind = _ALIASES.get(parts[0], parts[0])
    if kind not in _KINDS:
        raise ValueError(f"unknown gradient path '{parts[0]}'; known: {', '.join(_KINDS)}")
    try:
        values = tuple(float(p) for p in parts[1:])
    except ValueError:
        raise ValueError(f"gradient path '{spec}': parameters must be numbers") from None
    defaults, _ = _KINDS[kind]
    if not values:
        values = defaults
    elif kind == "exp" and len(values) == 1:
        values = (1.0, values[0])
    return GradientPath(kind, values)


PAPER19: tuple[str, ...] = (
    "triangle:1.0",
    "triangle:2.0",
    "triangle:3.0",
    "triangle:0.5",
    "triangle:0.25",
    "exp:0.3:0.5",
    "exp:0.3:1.0",
    "exp:0.3:2.0",
    "exp:1.0:0.5",
    "exp:1.0:1.0",
    "exp:1.0:2.0",
    "rect:0.25",
    "rect:0.5",
    "rect:1.0",
    "rect:2.0",
    "rect:4.0",
    "ste",
    "bptr",
    "ann",
)

PATH_SETS: dict[str, tuple[str, ...]] = {
    "paper19": PAPER19,
    "extended": PAPER19 + ("sigmoid:4.0", "arctan:2.0", "rga", "pdsg"),
    "quick": ("triangle:1.0", "rect:1.0", "exp:1.0:1.0", "bptr", "ann"),
}


def expand_paths(spec: str | GradientPath | list | tuple) -> list[GradientPath]:
    """Turn a set name, a comma-separated string or a list into a list of distinct paths."""
    if isinstance(spec, GradientPath):
        return [spec]
    if isinstance(spec, str):
        items: list = [s for s in spec.split(",") if s.strip()]
    else:
        items = list(spec)
    out: list[GradientPath] = []
    for item in items:
        key = item.strip().lower() if isinstance(item, str) else None
        members = PATH_SETS.get(key, (item,)) if key is not None else (item,)
        for m in members:
            path = parse_path(m)
            if path not in out:
                out.append(path)
    if not out:
        raise ValueError("no gradient path given")
    return out
