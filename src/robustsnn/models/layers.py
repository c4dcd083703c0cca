"""Small building blocks shared by the zoo models."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std``: the first layer of every model, so attacks see pixels."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError("mean and std need one value per channel")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {list(std)}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def extra_repr(self) -> str:
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}"


class ConvexCombination(nn.Module):
    """Learnable two-weight residual merge ``w0·shortcut + w1·residual`` (init 0.5, 0.5).

    If one input has not been expanded over time yet (direct coding, before the first
    neuron), it is repeated to match the other's folded ``[T·B, ...]`` batch.
    """

    def __init__(self, init: float = 0.5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((2,), float(init)))

    def forward(self, shortcut: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        shortcut, residual = match_time(shortcut, residual)
        return self.weight[0] * shortcut + self.weight[1] * residual


def match_time(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat the smaller of two batches (one not yet time-expanded) to the other's size."""
    if a.shape[0] == b.shape[0]:
        return a, b
    small, large = (a, b) if a.shape[0] < b.shape[0] else (b, a)
    if large.shape[0] % small.shape[0]:
        raise ValueError(f"cannot match batch sizes {a.shape[0]} and {b.shape[0]}")
    reps = large.shape[0] // small.shape[0]
    small = small.unsqueeze(0).expand(reps, *small.shape).reshape(large.shape[0], *small.shape[1:])
    return (small, large) if a.shape[0] < b.shape[0] else (large, small)
