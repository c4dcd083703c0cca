"""FGSM, R-FGSM and PGD (L∞ and L2), each a few lines of the textbook algorithm."""

from __future__ import annotations

import torch
from torch import nn

from robustsnn.attacks.core import (
    LossFn,
    ce_loss,
    check_budget,
    check_norm,
    eval_mode,
    input_gradient,
    project,
    sign_step,
)
from robustsnn.snn.paths import GradientPath


def random_start(
    x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None
) -> torch.Tensor:
    """A uniform point of the ε-ball (L∞) or a random direction inside it (L2)."""
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device) * 2 - 1
    if norm == "l2":
        noise = (
            sign_step(noise, "l2")
            * eps
            * torch.rand(x.shape[0], generator=generator, dtype=x.dtype)
            .to(x.device)
            .view(-1, *([1] * (x.dim() - 1)))
        )
    else:
        noise = noise * eps
    return (x + noise).clamp(0, 1)


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    norm: str = "linf",
    path: str | GradientPath | None = None,
    loss_fn: LossFn = ce_loss,
) -> torch.Tensor:
    """One step of size ε along the gradient sign (Goodfellow et al. 2015); no random start."""
    check_norm(norm)
    with eval_mode(model):
        grad, _ = input_gradient(model, x, y, loss_fn, path)
    x_adv = project(x + eps * sign_step(grad, norm), x, eps, norm)
    check_budget(x_adv, x, eps, norm)
    return x_adv


def rfgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    alpha: float | None = None,
    norm: str = "linf",
    path: str | GradientPath | None = None,
    loss_fn: LossFn = ce_loss,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """R-FGSM (Tramèr et al. 2018): a random sign step α, then a gradient step of ε − α."""
    check_norm(norm)
    alpha = eps / 2 if alpha is None else alpha
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    start = (x + alpha * sign_step(noise, norm)).clamp(0, 1)
    with eval_mode(model):
        grad, _ = input_gradient(model, start, y, loss_fn, path)
    x_adv = project(start + (eps - alpha) * sign_step(grad, norm), x, eps, norm)
    check_budget(x_adv, x, eps, norm)
    return x_adv


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    norm: str = "linf",
    random_init: bool = True,
    restarts: int = 1,
    path: str | GradientPath | None = None,
    loss_fn: LossFn = ce_loss,
    generator: torch.Generator | None = None,
    start: torch.Tensor | None = None,
    early_stop: bool = True,
) -> torch.Tensor:
    """Projected gradient ascent (Madry et al. 2018) with random start and restarts.

    The step defaults to 2.5·ε/steps. With ``early_stop`` a sample stops moving once an iterate
    fools the true forward pass (judged on the logits of the gradient forward for surrogate
    paths, which is the true spiking forward) and keeps that iterate. ``start`` overrides the
    random start of the first restart (used for per-sample seeding by the evaluator).
    """
    check_norm(norm)
    if steps < 1:
        raise ValueError(f"PGD needs steps >= 1, got {steps}")
    step_size = 2.5 * eps / steps if step_size is None else step_size
    proxy = path is not None and str(path) == "ann"
    best = x.clone()
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    with eval_mode(model):
        for restart in range(restarts):
            active = (~fooled).nonzero().flatten()
            if active.numel() == 0:
                break
            x0, y0 = x[active], y[active]
            if restart == 0 and start is not None:
                cur = start[active].clone()
            elif random_init:
                cur = random_start(x0, eps, norm, generator)
            else:
                cur = x0.clone()
            idx = active
            for _ in range(steps):
                grad, logits = input_gradient(model, cur, y0, loss_fn, path)
                if early_stop and not proxy:
                    hit = logits.argmax(1) != y0
                    if hit.any():
                        best[idx[hit]] = cur[hit]
                        fooled[idx[hit]] = True
                        keep = ~hit
                        idx, cur, x0, y0, grad = (
                            idx[keep],
                            cur[keep],
                            x0[keep],
                            y0[keep],
                            grad[keep],
                        )
                        if idx.numel() == 0:
                            break
                cur = project(cur + step_size * sign_step(grad, norm), x0, eps, norm)
            if idx.numel():
                with torch.no_grad():
                    hit = model(cur).argmax(1) != y0
                best[idx] = cur
                fooled[idx[hit]] = True
    check_budget(best, x, eps, norm)
    return best
