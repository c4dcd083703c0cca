"""What every attack shares: eval mode, input gradients through a gradient path, budgets."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from robustsnn.snn.network import using_gradient_path
from robustsnn.snn.paths import GradientPath

NORMS = ("linf", "l2")
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run attacks with BN running statistics and no dropout; restore the mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample ``max_{j≠y} z_j − z_y`` (> 0 means misclassified)."""
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return other - true


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy."""
    return F.cross_entropy(logits, y, reduction="none")


def input_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn = ce_loss,
    path: str | GradientPath | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the summed per-sample loss w.r.t. ``x`` through ``path``; also the logits.

    The logits are those of the forward used for the gradient: the true model's for surrogate
    and rate paths, the ANN proxy's for ``ann``.
    """
    x = x.detach().requires_grad_(True)
    ctx = using_gradient_path(model, path) if path is not None else contextlib.nullcontext()
    with ctx, torch.enable_grad():
        logits = model(x)
        loss = loss_fn(logits, y).sum()
        (grad,) = torch.autograd.grad(loss, x)
    return grad.detach(), logits.detach()


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """Project onto the ε-ball around ``x`` intersected with [0, 1]."""
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        factor = (eps / norms).clamp(max=1.0)
        delta = delta * factor.view(-1, *([1] * (x.dim() - 1)))
    return (x + delta).clamp(0, 1)


def perturbation_norm(x_adv: torch.Tensor, x: torch.Tensor, norm: str = "linf") -> torch.Tensor:
    """Per-sample size of the perturbation in ``norm``."""
    delta = (x_adv - x).flatten(1)
    return delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)


def check_budget(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str = "linf") -> None:
    """Refuse adversarial examples outside their budget or outside [0, 1] (a bug if it fires)."""
    tol = 1e-5 * max(1.0, eps)
    if x_adv.min() < -1e-6 or x_adv.max() > 1 + 1e-6:
        raise RuntimeError("an adversarial example left [0, 1]")
    size = perturbation_norm(x_adv, x, norm)
    if (size > eps + tol).any():
        raise RuntimeError(f"an adversarial example left its {norm} budget {eps}: {size.max():.6g}")


def sign_step(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent direction of unit size in ``norm``."""
    if norm == "linf":
        return grad.sign()
    norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    return grad / norms.view(-1, *([1] * (grad.dim() - 1)))


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Class predictions of the true forward pass (no gradient)."""
    outs = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            outs.append(model(x[start : start + batch_size]).argmax(1))
    return torch.cat(outs) if outs else torch.empty(0, dtype=torch.long)


def check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")
