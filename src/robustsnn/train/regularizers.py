"""Gradient-sparsity regularisation, "SR" (Liu et al., ICML 2024; research notes §3.3).

SR penalises how sensitive the true-class probability is to the input. With ``z`` the
(time-averaged) logits and ``j`` the most likely wrong class of the first pass, the two-class
probability is ``p̃(x) = exp(z_y) / (exp(z_y) + exp(z_j)) = sigmoid(z_y − z_j)``. Its
input-gradient ℓ1 norm is estimated by a finite difference along the gradient's sign::

    v  = sign(∇_x p̃(x))                 (through the training surrogate, treated as a constant)
    FD = (p̃(x + h·v) − p̃(x)) / h  ≈  vᵀ∇_x p̃ = ‖∇_x p̃‖₁          (h = 0.01)

and the loss is ``CE(z(x), y) + λ·mean_b(FD_b²)``, with the gradient flowing through both
forward passes (``j`` is kept from the first pass). The shifted input is not clipped to
[0, 1]: FD estimates a derivative of the network, not an attack. With ``adversarial`` the
whole loss is evaluated at a PGD example (the paper's "SR*" / AT + SR).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robustsnn.train.objectives import Objective

DEFAULT_H = 0.01


def rival_class(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The most likely wrong class per sample (``argmax_{i ≠ y} z_i``), without gradient."""
    masked = logits.detach().clone()
    masked.scatter_(1, y[:, None], float("-inf"))
    return masked.argmax(1)


def two_class_probability(
    logits: torch.Tensor, y: torch.Tensor, rival: torch.Tensor
) -> torch.Tensor:
    """``exp(z_y) / (exp(z_y) + exp(z_j))`` per sample, ``j = rival``."""
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.gather(1, rival[:, None])[:, 0]
    return torch.sigmoid(true - other)


def finite_difference_sensitivity(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, h: float = DEFAULT_H
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample FD estimate of ``‖∇_x p̃(x)‖₁`` and the logits of the first pass.

    Both are differentiable with respect to the model's parameters; the direction ``v`` is
    computed with whatever gradient path the model's neurons have and is detached.
    """
    if not h > 0:
        raise ValueError(f"the finite-difference step h must be > 0, got {h}")
    x = x.detach().requires_grad_(True)
    logits = model(x)
    rival = rival_class(logits, y)
    p = two_class_probability(logits, y, rival)
    (grad,) = torch.autograd.grad(p.sum(), x, retain_graph=True)
    shifted = x.detach() + h * grad.sign()
    p_shifted = two_class_probability(model(shifted), y, rival)
    return (p_shifted - p) / h, logits


@dataclass
class SparsityObjective:
    """CE + λ·mean(FD²), optionally at a PGD adversarial example (a training objective).

    Args:
        weight: λ, the weight of the penalty.
        h: the finite-difference step.
        adversarial: evaluate the whole loss at ``attack.perturb(x)`` instead of ``x``.
        attack: the inner attack (a ``pgd_at`` :class:`Objective`); needed with
            ``adversarial``.
    """

    weight: float = 0.005
    h: float = DEFAULT_H
    adversarial: bool = False
    attack: Objective | None = None

    def __post_init__(self) -> None:
        if not self.weight >= 0:
            raise ValueError(f"the SR weight λ must be >= 0, got {self.weight}")
        if not self.h > 0:
            raise ValueError(f"the finite-difference step h must be > 0, got {self.h}")
        if self.adversarial and (self.attack is None or not self.attack.adversarial):
            raise ValueError("adversarial SR needs an adversarial inner attack (an Objective)")

    def describe(self) -> dict[str, object]:
        """JSON-serialisable settings (compared on resume)."""
        return {
            "name": "sr",
            "weight": self.weight,
            "h": self.h,
            "adversarial": self.adversarial,
            "attack": self.attack.describe() if self.adversarial and self.attack else None,
        }

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        metrics: dict[str, float] = {}
        if self.adversarial:
            assert self.attack is not None
            x = self.attack.perturb(model, x, y, generator)
        fd, logits = finite_difference_sensitivity(model, x, y, self.h)
        ce = F.cross_entropy(logits, y)
        penalty = (fd**2).mean()
        loss = ce + self.weight * penalty
        accuracy = float((logits.argmax(1) == y).float().mean())
        metrics[("adv_acc" if self.adversarial else "acc")] = accuracy
        metrics.update(
            loss=float(loss.detach()), ce=float(ce.detach()), fd2=float(penalty.detach())
        )
        return loss, metrics
