"""ASSG's adaptive sharpness: per neuron, step and sample statistics kept across attack steps.

Adaptive-sharpness surrogate gradients (Wang et al., arXiv 2512.22522) make the surrogate of
each neuron, time step and sample as sharp as the distance of its potential from the
threshold allows. Over the iterations of one attack run they keep two moving averages of
``|u − θ|`` (detached):

    M ← β1·M + (1 − β1)·|u − θ|            (β1 = 0.9, M starts at 1)
    D ← β2·D + (1 − β2)·||u − θ| − M|      (β2 = 0.9, D starts at 0; the updated M)
    α = a / (M + κ·D + 1e-4)               (κ = 1.5)

A :class:`SharpnessState` holds these for one attack run; the attack binds it to the ids of
the samples in each gradient call (:func:`using_sharpness_state`), so a sample keeps its own
statistics when other samples leave the batch, and a sample's gradients never depend on its
batch. Outside an attack (no state bound) every call starts from M = 1, D = 0, i.e. it is
the first iteration of a run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

BETA_MEAN = 0.9
BETA_SPREAD = 0.9
KAPPA = 1.5
FLOOR = 1e-4


class SharpnessState:
    """ASSG's moving averages ``(M, D)`` for one attack run, per neuron, step and sample.

    ``frozen`` (set for the extra draws of EOT) reads the statistics without updating them.
    """

    def __init__(
        self, beta_mean: float = BETA_MEAN, beta_spread: float = BETA_SPREAD, kappa: float = KAPPA
    ) -> None:
        self.beta_mean, self.beta_spread, self.kappa = beta_mean, beta_spread, kappa
        self.frozen = False
        self._slots: dict[int, int] = {}
        self._rows: torch.Tensor | None = None
        self._stats: dict[object, tuple[torch.Tensor, torch.Tensor]] = {}

    def bind(self, ids: torch.Tensor) -> None:
        """The samples of the coming forward passes, by id (one per row of the batch)."""
        rows = []
        for i in ids.tolist():
            rows.append(self._slots.setdefault(int(i), len(self._slots)))
        self._rows = torch.tensor(rows, dtype=torch.long)

    def sharpness(self, key: object, distance: torch.Tensor, scale: float) -> torch.Tensor:
        """α for ``distance`` = |u − θ| of shape ``[T, B, ...]``, after updating the averages
        of the neuron ``key`` (unless frozen). Unbound batches start from fresh statistics.
        ``distance`` may be overwritten."""
        distance = distance.detach()
        rows = self._rows
        if rows is None or rows.numel() != distance.shape[1]:
            mean, spread = torch.ones_like(distance), torch.zeros_like(distance)
            self._update(mean, spread, distance)
            return self._alpha(mean, spread, scale)
        mean_all, spread_all = self._stats_for(key, distance)
        whole = rows.numel() == mean_all.shape[1] and bool(
            (rows == torch.arange(rows.numel())).all()
        )
        if whole:  # every sample of the run, in order: update in place
            mean, spread = mean_all, spread_all
        else:
            index = rows.to(distance.device)
            mean, spread = mean_all[:, index], spread_all[:, index]
        if self.frozen:
            mean, spread = mean.clone(), spread.clone()
        else:
            self._update(mean, spread, distance)
            if not whole:
                mean_all[:, index], spread_all[:, index] = mean, spread
        return self._alpha(mean, spread, scale)

    def _update(self, mean: torch.Tensor, spread: torch.Tensor, distance: torch.Tensor) -> None:
        """In place: M ← β1·M + (1 − β1)·d, then D ← β2·D + (1 − β2)·|d − M|."""
        mean.mul_(self.beta_mean).add_(distance, alpha=1 - self.beta_mean)
        spread.mul_(self.beta_spread).add_(distance.sub_(mean).abs_(), alpha=1 - self.beta_spread)

    def _alpha(self, mean: torch.Tensor, spread: torch.Tensor, scale: float) -> torch.Tensor:
        alpha = torch.add(mean, spread, alpha=self.kappa).add_(FLOOR)
        return alpha.reciprocal_().mul_(scale)

    def _stats_for(self, key: object, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        slots = len(self._slots)
        stats = self._stats.get(key)
        if stats is not None and stats[0].shape[2:] != like.shape[2:]:
            stats = None
        if stats is None:
            shape = (like.shape[0], slots, *like.shape[2:])
            stats = (like.new_ones(shape), like.new_zeros(shape))
        elif stats[0].shape[1] < slots:
            grow = (like.shape[0], slots - stats[0].shape[1], *like.shape[2:])
            stats = (
                torch.cat([stats[0], like.new_ones(grow)], 1),
                torch.cat([stats[1], like.new_zeros(grow)], 1),
            )
        self._stats[key] = stats
        return stats


_active: list[SharpnessState] = []


def active_sharpness_state() -> SharpnessState | None:
    """The state bound by the innermost :func:`using_sharpness_state`, if any."""
    return _active[-1] if _active else None


@contextlib.contextmanager
def using_sharpness_state(
    state: SharpnessState | None, ids: torch.Tensor, frozen: bool = False
) -> Iterator[None]:
    """Bind ``state`` to the samples ``ids`` for the forward passes inside the block."""
    if state is None:
        yield
        return
    state.bind(ids)
    state.frozen = frozen
    _active.append(state)
    try:
        yield
    finally:
        _active.pop()
        state.frozen = False
