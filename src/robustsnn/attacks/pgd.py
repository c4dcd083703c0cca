"""FGSM, R-FGSM and PGD (L∞ and L2), each a few lines of the textbook algorithm.

All take ``(model, x, y, eps)`` with ``x`` in [0, 1] and return ``x_adv`` inside the ε-ball
and [0, 1] (asserted). Gradients go through ``path`` (see :class:`~robustsnn.attacks.victim.
Victim`); random numbers are drawn per sample from ``(seed, ids)``, so a sample's result does
not depend on the rest of its batch. ``ids`` are the samples' indices in the evaluated set
(default ``0..B-1``).
"""

from __future__ import annotations

import torch
from torch import nn

from robustsnn.attacks.core import (
    LossFn,
    check_eps,
    check_norm,
    eval_mode,
    finalize,
    get_loss,
    project,
    sign_step,
)
from robustsnn.attacks.seeding import SampleRandom, sample_ids
from robustsnn.attacks.victim import Victim
from robustsnn.snn.paths import GradientPath


def random_start(
    x: torch.Tensor, eps: float, norm: str, random: SampleRandom, ids: torch.Tensor, stream: str
) -> torch.Tensor:
    """A uniform point of the L∞ ball, or a uniform direction at a uniform radius (L2)."""
    if norm == "linf":
        noise = random.uniform(ids, x.shape[1:], stream, x.device, x.dtype) * 2 - 1
        return (x + eps * noise).clamp(0, 1)
    direction = sign_step(random.normal(ids, x.shape[1:], stream, x.device, x.dtype), "l2")
    radius = random.uniform(ids, (), stream + ":radius", x.device, x.dtype)
    return (x + eps * radius.view(-1, *([1] * (x.dim() - 1))) * direction).clamp(0, 1)


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    norm: str = "linf",
    loss: str | LossFn = "ce",
    path: str | GradientPath | None = None,
    eot: int = 1,
    seed: int = 0,
    ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """One step of size ε along the gradient sign (Goodfellow et al. 2015); no random start."""
    check_norm(norm)
    check_eps(eps)
    ids = sample_ids(ids, x.shape[0])
    victim = Victim(model, path, eot=eot, seed=seed, key="fgsm")
    with eval_mode(model):
        grad, _, _ = victim.gradient(x, y, ids, get_loss(loss), "step")
    return finalize(x + eps * sign_step(grad, norm), x, eps, norm)


def rfgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    alpha: float | None = None,
    norm: str = "linf",
    loss: str | LossFn = "ce",
    path: str | GradientPath | None = None,
    eot: int = 1,
    seed: int = 0,
    ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """R-FGSM (Tramèr et al. 2018): a random step of size α (default ε/2), then ε − α along
    the gradient."""
    check_norm(norm)
    check_eps(eps)
    alpha = eps / 2 if alpha is None else float(alpha)
    if not 0 <= alpha <= eps:
        raise ValueError(f"R-FGSM needs 0 <= alpha <= eps, got alpha={alpha}, eps={eps}")
    ids = sample_ids(ids, x.shape[0])
    victim = Victim(model, path, eot=eot, seed=seed, key="rfgsm")
    noise = victim.random.normal(ids, x.shape[1:], "random-step", x.device, x.dtype)
    start = (x + alpha * sign_step(noise, norm)).clamp(0, 1)
    with eval_mode(model):
        grad, _, _ = victim.gradient(start, y, ids, get_loss(loss), "step")
    return finalize(start + (eps - alpha) * sign_step(grad, norm), x, eps, norm)


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    restarts: int = 1,
    random_init: bool = True,
    norm: str = "linf",
    loss: str | LossFn = "ce",
    path: str | GradientPath | None = None,
    eot: int = 1,
    draws: int = 1,
    seed: int = 0,
    ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Projected gradient ascent (Madry et al. 2018) with random start and restarts.

    The step defaults to 2.5·ε/steps. Every iterate is judged on the true forward pass
    (deterministic models; for the ``ann`` path this costs one true forward per step) and a
    sample stops at its first fooling iterate; for stochastic models every restart runs all
    steps and its last iterate is judged over ``draws`` draws. Restarts run only on samples no
    earlier restart fooled. A never-fooled sample returns the last iterate of the last restart.
    """
    check_norm(norm)
    check_eps(eps)
    if steps < 1 or restarts < 1:
        raise ValueError(f"PGD needs steps >= 1 and restarts >= 1, got {steps}, {restarts}")
    step_size = 2.5 * eps / steps if step_size is None else float(step_size)
    loss_fn = get_loss(loss)
    ids = sample_ids(ids, x.shape[0])
    victim = Victim(model, path, eot=eot, draws=draws, seed=seed, key="pgd")
    best = x.clone()
    todo = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    with eval_mode(model):
        for r in range(restarts):
            rows = todo.nonzero().flatten()
            if rows.numel() == 0:
                break
            cur = x[rows].clone()
            victim.new_run()
            if random_init:
                cur = random_start(cur, eps, norm, victim.random, ids[rows.cpu()], f"start{r}")
            for i in range(steps):
                grad, _, logits = victim.gradient(
                    cur, y[rows], ids[rows.cpu()], loss_fn, f"r{r}:i{i}"
                )
                hit = victim.step_verdict(cur, y[rows], ids[rows.cpu()], logits)
                if hit is not None:
                    best[rows[hit]] = cur[hit]
                    todo[rows[hit]] = False
                    rows, cur, grad = rows[~hit], cur[~hit], grad[~hit]
                    if rows.numel() == 0:
                        break
                cur = project(cur + step_size * sign_step(grad, norm), x[rows], eps, norm)
            if rows.numel():
                best[rows] = cur
                todo[rows[victim.fooled(cur, y[rows], ids[rows.cpu()])]] = False
    return finalize(best, x, eps, norm)
