"""What every attack shares: eval mode, losses, input gradients, projections and budget checks.

Attacks work in [0, 1] pixel space (normalisation is the model's first layer), on per-sample
losses, so that one sample's result never depends on the other samples of its batch.
"""

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

# Budget violations below this (relative to max(1, ε)) are float rounding, not bugs.
BUDGET_TOLERANCE = 1e-5


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run attacks with BN running statistics and no dropout; restore the mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def path_context(model: nn.Module, path: str | GradientPath | None):
    """``using_gradient_path(model, path)``, or nothing for ``None`` (the model's own path)."""
    return using_gradient_path(model, path) if path is not None else contextlib.nullcontext()


# ---- losses (all per sample, shape [B]) ---------------------------------------------------
def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy."""
    return F.cross_entropy(logits, y, reduction="none")


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample ``max_{j≠y} z_j − z_y`` (> 0 means misclassified)."""
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return other - true


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020): −(z_y − max_{i≠y} z_i)/(z_π1 − z_π3).

    Invariant to shifting and rescaling the logits; needs at least 3 classes.
    """
    ordered = logits.sort(1).values
    return margin_loss(logits, y) / (ordered[:, -1] - ordered[:, -3] + 1e-12)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR: −(z_y − z_t)/(z_π1 − (z_π3 + z_π4)/2); needs at least 4 classes."""
    ordered = logits.sort(1).values
    true = logits.gather(1, y[:, None])[:, 0]
    wanted = logits.gather(1, target[:, None])[:, 0]
    scale = ordered[:, -1] - 0.5 * (ordered[:, -3] + ordered[:, -4]) + 1e-12
    return -(true - wanted) / scale


LOSSES: dict[str, LossFn] = {"ce": ce_loss, "dlr": dlr_loss, "margin": margin_loss}


def get_loss(name: str | LossFn) -> LossFn:
    """A per-sample loss by name (``ce``, ``dlr``, ``margin``) or the callable itself."""
    if callable(name):
        return name
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {name!r}")
    return LOSSES[name]


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
    with path_context(model, path), torch.enable_grad():
        logits = model(x)
        loss = loss_fn(logits, y).sum()
        (grad,) = torch.autograd.grad(loss, x)
    return grad.detach(), logits.detach()


# ---- geometry ------------------------------------------------------------------------------
def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (like.dim() - 1)))


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """Project onto the ε-ball around ``x`` intersected with [0, 1]."""
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        delta = delta * _per_sample((eps / norms).clamp(max=1.0), x)
    return (x + delta).clamp(0, 1)


def sign_step(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent direction of unit size in ``norm`` (sign for L∞, unit vector for L2)."""
    if norm == "linf":
        return grad.sign()
    norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    return grad / _per_sample(norms, grad)


def perturbation_norm(x_adv: torch.Tensor, x: torch.Tensor, norm: str = "linf") -> torch.Tensor:
    """Per-sample size of the perturbation in ``norm``."""
    delta = (x_adv - x).flatten(1)
    return delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)


def check_budget(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str = "linf") -> None:
    """Refuse adversarial examples outside their budget or outside [0, 1] (a bug if it fires)."""
    tol = BUDGET_TOLERANCE * max(1.0, eps)
    if x_adv.shape != x.shape:
        raise RuntimeError(f"adversarial batch {tuple(x_adv.shape)} != clean {tuple(x.shape)}")
    if not torch.isfinite(x_adv).all():
        raise RuntimeError("an adversarial example is not finite")
    if x_adv.numel() and (x_adv.min() < -tol or x_adv.max() > 1 + tol):
        raise RuntimeError("an adversarial example left [0, 1]")
    size = perturbation_norm(x_adv, x, norm)
    if size.numel() and (size > eps + tol).any():
        raise RuntimeError(f"an adversarial example left its {norm} budget {eps}: {size.max():.6g}")


def finalize(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project onto the threat model, then assert the budget: what every attack returns."""
    x_adv = project(x_adv.detach(), x, eps, norm)
    check_budget(x_adv, x, eps, norm)
    return x_adv


def check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")


def check_eps(eps: float) -> None:
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Class predictions of the true forward pass (no gradient)."""
    outs = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            outs.append(model(x[start : start + batch_size]).argmax(1))
    return torch.cat(outs) if outs else torch.empty(0, dtype=torch.long)
