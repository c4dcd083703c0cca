"""One registry of model constructors, timm-style: ``create_model(name, **kwargs)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from robustsnn.snn.network import SpikingNetwork

_REGISTRY: dict[str, Callable[..., SpikingNetwork]] = {}


def register_model(fn: Callable[..., SpikingNetwork]) -> Callable[..., SpikingNetwork]:
    """Decorator: register a constructor under its function name."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model '{fn.__name__}' is registered twice")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of every registered model."""
    return sorted(_REGISTRY)


def model_description(name: str) -> str:
    """First line of the constructor's docstring."""
    doc = inspect.getdoc(_get(name)) or ""
    return doc.splitlines()[0] if doc else ""


def _get(name: str) -> Callable[..., SpikingNetwork]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model '{name}'; known: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name: str, **kwargs: Any) -> SpikingNetwork:
    """Build a registered model; its name and arguments are kept for checkpoints."""
    fn = _get(name)
    params = inspect.signature(fn).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in kwargs if k not in params and not accepts_any]
    if unknown:
        accepted = ", ".join(k for k in params if k != "kwargs")
        raise ValueError(
            f"model '{name}' does not take {', '.join(unknown)}; it accepts: {accepted}"
        )
    try:
        model = fn(**kwargs)
    except TypeError as err:
        if "unexpected keyword" not in str(err):
            raise
        raise ValueError(f"model '{name}': {err}") from None
    model._architecture = {"name": name, "kwargs": dict(kwargs)}
    return model


def count_parameters(model) -> int:
    """Number of parameters (thresholds and clip values included)."""
    return sum(p.numel() for p in model.parameters())
