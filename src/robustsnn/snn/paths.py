"""Gradient paths: how the backward pass through the spike function is approximated.

A path is chosen at run time for a whole network, independently of how the network was
trained. It is written as a short string so that configs, reports and the command line all
name it the same way: ``triangle:1.0``, ``rect:0.5``, ``exp:0.3:2.0`` (amplitude, rate),
``sigmoid:4``, ``arctan:2``, ``gaussian:0.5``, ``ste``, ``bptr``, ``rga`` (or ``rga:0.2:2``),
``pdsg``, ``assg`` (adaptive sharpness, e.g. ``assg:atan:0.425``), ``hart:1.0`` and ``ann`` (the
T = 0 proxy with the SNN's weights).

By default a path differentiates the reset too (``v·(1 − s)`` or ``v − s·θ``). The suffix
``/dr`` detaches it, as SpikingJelly's ``detach_reset`` and the ASSG code do: the spike that
resets the potential counts as a constant in the backward pass (``triangle:1.0/dr``). With a
sharp surrogate the reset's derivative ``−v·σ'(u − θ)`` compounds over the steps and swamps
the input gradient, so attacks that ignore it are far stronger; every surrogate path takes the
suffix, the rate paths and ``ann`` do not (they never see the reset).
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
    "assg": ((0.425,), ("bound",)),
    "hart": ((1.0,), ("width",)),
    "ann": ((), ()),
}

DETACHED_RESET = "dr"
# ASSG's surrogate shapes and the default bound A of each (a = A, or (2/π)·tan(πA) for atan)
ASSG_SHAPES: dict[str, float] = {
    "atan": 0.425,
    "rect": 0.8,
    "triangle": 0.8,
    "sigmoid": 0.8,
    "gaussian": 0.8,
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

SURROGATE_KINDS = (
    "triangle", "rect", "exp", "sigmoid", "arctan", "gaussian", "ste", "pdsg", "assg", "hart",
)  # fmt: skip
RATE_KINDS = ("bptr", "rga")
# kinds whose backward pass runs through the reset (HART cuts the potential between steps)
RESET_KINDS = tuple(k for k in SURROGATE_KINDS if k != "hart")


@dataclass(frozen=True)
class GradientPath:
    """One way of getting gradients through spiking neurons.

    ``kind`` is one of the names above and ``params`` its numeric parameters. Surrogate kinds
    replace the Heaviside derivative inside BPTT; ``bptr`` and ``rga`` differentiate the
    firing rate instead; ``ann`` runs the gradient computation on the T = 0 network.
    ``detach_reset`` drops the reset from the backward pass (surrogate kinds only);
    ``shape`` is ASSG's surrogate shape (one of :data:`ASSG_SHAPES`).
    """

    kind: str
    params: tuple[float, ...] = ()
    detach_reset: bool = False
    shape: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown gradient path '{self.kind}'; known: {', '.join(_KINDS)}")
        if self.detach_reset and self.kind not in RESET_KINDS:
            raise ValueError(
                f"gradient path '{self.kind}' has no reset to detach; '/{DETACHED_RESET}' "
                f"applies to {', '.join(RESET_KINDS)}"
            )
        if self.kind == "assg":
            if self.shape is None:
                object.__setattr__(self, "shape", "atan")
            if self.shape not in ASSG_SHAPES:
                raise ValueError(
                    f"ASSG shape must be one of {', '.join(ASSG_SHAPES)}; got {self.shape!r}"
                )
        elif self.shape is not None:
            raise ValueError(f"gradient path '{self.kind}' takes no shape")
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
        if self.kind == "assg" and self.shape == "atan" and not self.params[0] < 0.5:
            raise ValueError(f"ASSG atan: the bound A must be in (0, 0.5), got {self.params[0]}")

    def __str__(self) -> str:
        head = [self.kind] if self.shape is None else [self.kind, self.shape]
        text = ":".join([*head, *(_format_number(p) for p in self.params)])
        return f"{text}/{DETACHED_RESET}" if self.detach_reset else text

    @property
    def sharpness_scale(self) -> float:
        """ASSG's numerator a: (2/π)·tan(π·A) for atan, A itself for the other shapes."""
        (bound,) = self.params
        return 2 / math.pi * math.tan(math.pi * bound) if self.shape == "atan" else bound

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

        ``std`` is the membrane-potential spread PDSG needs, or ASSG's per-element sharpness α
        (broadcastable to ``u``).
        """
        k = self.kind
        if k == "assg":
            if std is None:
                raise ValueError("the assg surrogate needs its per-element sharpness")
            return adaptive_surrogate(self.shape, u, std)
        if k == "hart":
            (g,) = self.params
            return (g - u.abs()).clamp_min(0) / (g * g)
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


def adaptive_surrogate(shape: str, u: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """ASSG's surrogate of ``shape`` at ``u`` with per-element sharpness ``alpha``; each has
    unit mass, and a larger α concentrates it nearer the threshold."""
    if shape == "atan":
        return (alpha / 2) / (1 + (math.pi / 2 * alpha * u) ** 2)
    if shape == "rect":
        return (u.abs() < 1 / alpha).to(u.dtype) * (alpha / 2)
    if shape == "triangle":
        return alpha * (1 - alpha * u.abs()).clamp_min(0)
    if shape == "sigmoid":
        s = torch.sigmoid(alpha * u)
        return alpha * s * (1 - s)
    if shape == "gaussian":
        return alpha / math.sqrt(2 * math.pi) * torch.exp(-((alpha * u) ** 2) / 2)
    raise ValueError(f"unknown ASSG shape {shape!r}")


def _format_number(x: float) -> str:
    return repr(float(x)) if float(x) != int(x) else f"{int(x)}.0"


def parse_path(spec: str | GradientPath) -> GradientPath:
    """Parse ``'triangle:1.0'``-style strings into a :class:`GradientPath`."""
    if isinstance(spec, GradientPath):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a gradient path must be a non-empty string, got {spec!r}")
    text, slash, suffix = spec.strip().lower().partition("/")
    if slash and suffix.strip() != DETACHED_RESET:
        raise ValueError(
            f"gradient path '{spec}': the only suffix is '/{DETACHED_RESET}' (detached reset)"
        )
    parts = [p.strip() for p in text.split(":")]
    kind = _ALIASES.get(parts[0], parts[0])
    if kind not in _KINDS:
        raise ValueError(f"unknown gradient path '{parts[0]}'; known: {', '.join(_KINDS)}")
    shape = None
    if kind == "assg":
        shape = "atan"
        if len(parts) > 1 and parts[1] and not _is_number(parts[1]):
            shape = _ALIASES.get(parts[1], parts[1])
            shape = {"arctan": "atan"}.get(shape, shape)
            if shape not in ASSG_SHAPES:
                raise ValueError(
                    f"gradient path '{spec}': ASSG shape must be one of {', '.join(ASSG_SHAPES)}"
                )
            parts = [parts[0], *parts[2:]]
    try:
        values = tuple(float(p) for p in parts[1:])
    except ValueError:
        raise ValueError(f"gradient path '{spec}': parameters must be numbers") from None
    defaults, _ = _KINDS[kind]
    if not values:
        values = (ASSG_SHAPES[shape],) if kind == "assg" else defaults
    elif kind == "exp" and len(values) == 1:
        values = (1.0, values[0])
    return GradientPath(kind, values, detach_reset=bool(slash), shape=shape)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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

SHARPNESS_GRID: tuple[str, ...] = tuple(
    f"{shape}:{alpha}.0/{DETACHED_RESET}"
    for shape in ("arctan", "sigmoid")
    for alpha in range(2, 21, 2)
)
"""ATan and sigmoid surrogates of sharpness 2, 4, ..., 20 with the reset detached (the grid of
fixed surrogates the ASSG paper compares against)."""

FRONTIER: tuple[str, ...] = (
    "assg:atan:0.425/dr",
    "arctan:8.0/dr",
    "triangle:1.0/dr",
    "hart:1.0",
    "pdsg/dr",
    "rga",
)
"""The frontier paths of the last years: ASSG, a sharp fixed ATan and the wide triangle with the
reset detached, HART, PDSG and RGA."""

PATH_SETS: dict[str, tuple[str, ...]] = {
    "paper19": PAPER19,
    "frontier": FRONTIER,
    "sharpness": SHARPNESS_GRID,
    "extended": PAPER19 + ("sigmoid:4.0", "arctan:2.0", "rga", "pdsg"),
    "quick": ("triangle:1.0", "rect:1.0", "exp:1.0:1.0", "bptr", "ann", "arctan:8.0/dr"),
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
