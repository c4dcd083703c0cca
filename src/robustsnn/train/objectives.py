"""Training objectives: CE, PGD-AT, TRADES and MART, for the ANN and the SNN alike.

The inner maximisation always runs with the model in eval mode (BN running statistics, no
dropout) and through the objective's gradient path; the outer loss runs in the model's
training mode. Conventions follow the primary paper's code (research notes §2.4): step size
2.5·ε/steps by default, uniform random start for PGD-AT, 0.001·N(0, I) start for TRADES/MART.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robustsnn.attacks.core import check_budget, eval_mode, input_gradient, project, sign_step
from robustsnn.snn.paths import GradientPath, parse_path

OBJECTIVES = ("ce", "pgd_at", "trades", "mart")
INNER = ("pgd", "rfgsm", "fgsm")


def kl_to_clean(clean_probs: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Per-sample KL(p_clean ‖ p_adv) as an attack loss (the target distribution is fixed)."""

    def loss(logits: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.log_softmax(logits, 1), clean_probs, reduction="none").sum(1)

    return loss


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


@dataclass
class Objective:
    """A training loss ``objective(model, x, y, generator) -> (loss, metrics)``.

    Args:
        name: ``ce``, ``pgd_at``, ``trades`` or ``mart``.
        eps: L∞ budget of the inner attack in [0, 1] pixel units.
        steps: inner attack steps (``pgd``).
        step_size: inner step; default 2.5·ε/steps for PGD, ε/2 for R-FGSM's random step.
        beta: weight of the KL term (TRADES, MART).
        inner: ``pgd``, ``rfgsm`` or ``fgsm``.
        gradient_path: backward approximation for the inner attack (None: the model's own).
    """

    name: str = "ce"
    eps: float = 0.0
    steps: int = 10
    step_size: float | None = None
    beta: float = 6.0
    inner: str = "pgd"
    gradient_path: GradientPath | None = None

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}; got {self.name!r}")
        if self.inner not in INNER:
            raise ValueError(f"inner attack must be one of {', '.join(INNER)}; got {self.inner!r}")
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.gradient_path is not None:
            self.gradient_path = parse_path(self.gradient_path)

    def attack(
        self,
        model: nn.Module,
        x: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        y: torch.Tensor,
        start: torch.Tensor,
    ) -> torch.Tensor:
        """Maximise ``loss_fn`` in the ε-ball from ``start``, with the model in eval mode."""
        eps = self.eps
        with eval_mode(model):
            if self.inner == "pgd":
                step = 2.5 * eps / self.steps if self.step_size is None else self.step_size
                cur = start
                for _ in range(self.steps):
                    grad, _ = input_gradient(model, cur, y, loss_fn, self.gradient_path)
                    cur = project(cur + step * sign_step(grad, "linf"), x, eps)
            else:
                grad, _ = input_gradient(model, start, y, loss_fn, self.gradient_path)
                if self.inner == "fgsm":
                    cur = project(x + eps * grad.sign(), x, eps)
                else:
                    alpha = eps / 2 if self.step_size is None else self.step_size
                    cur = project(start + (eps - alpha) * grad.sign(), x, eps)
        check_budget(cur, x, eps)
        return cur.detach()

    def _start(self, x: torch.Tensor, generator: torch.Generator | None, kind: str) -> torch.Tensor:
        noise_shape, dev = x.shape, x.device
        if self.inner == "fgsm":
            return x.clone()
        if self.inner == "rfgsm":
            alpha = self.eps / 2 if self.step_size is None else self.step_size
            noise = torch.randn(noise_shape, generator=generator).to(dev)
            return (x + alpha * noise.sign()).clamp(0, 1)
        if kind == "uniform":
            noise = torch.rand(noise_shape, generator=generator).to(dev) * 2 - 1
            return project(x + self.eps * noise, x, self.eps)
        noise = torch.randn(noise_shape, generator=generator).to(dev)
        return project(x + 0.001 * noise, x, self.eps)

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if self.name == "ce" or self.eps == 0 and self.name == "pgd_at":
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            return loss, {
                "loss": float(loss.detach()),
                "acc": float((logits.argmax(1) == y).float().mean()),
            }
        if self.name == "pgd_at":
            x_adv = self.attack(model, x, _ce, y, self._start(x, generator, "uniform"))
            logits = model(x_adv)
            loss = F.cross_entropy(logits, y)
            acc = float((logits.argmax(1) == y).float().mean())
            return loss, {"loss": float(loss.detach()), "adv_acc": acc}
        with eval_mode(model), torch.no_grad():
            clean_probs = F.softmax(model(x), 1)
        loss_fn = kl_to_clean(clean_probs) if self.name == "trades" else _ce
        x_adv = self.attack(model, x, loss_fn, y, self._start(x, generator, "normal"))
        logits = model(x)
        logits_adv = model(x_adv)
        if self.name == "trades":
            natural = F.cross_entropy(logits, y)
            robust = F.kl_div(
                F.log_softmax(logits_adv, 1), F.softmax(logits, 1), reduction="batchmean"
            )
            loss = natural + self.beta * robust
        else:
            loss = mart_loss(logits, logits_adv, y, self.beta)
        metrics = {
            "loss": float(loss.detach()),
            "acc": float((logits.argmax(1) == y).float().mean()),
            "adv_acc": float((logits_adv.argmax(1) == y).float().mean()),
        }
        return loss, metrics


def mart_loss(
    logits: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float
) -> torch.Tensor:
    """MART (Wang et al. 2020): boosted CE on x_adv + β·KL weighted by 1 − p_clean(y)."""
    probs_adv = F.softmax(logits_adv, 1)
    top2 = probs_adv.argsort(1)[:, -2:]
    wrong = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    boosted = F.cross_entropy(logits_adv, y) + F.nll_loss(
        torch.log(1.0001 - probs_adv + 1e-12), wrong
    )
    probs = F.softmax(logits, 1)
    true_probs = probs.gather(1, y[:, None])[:, 0]
    kl = (probs * (torch.log(probs + 1e-12) - torch.log(probs_adv + 1e-12))).sum(1)
    return boosted + beta * (kl * (1.0000001 - true_probs)).mean()


def make_objective(
    name: str,
    eps: float = 0.0,
    steps: int = 10,
    step_size: float | None = None,
    beta: float | None = None,
    inner: str = "pgd",
    gradient_path: str | GradientPath | None = None,
) -> Objective:
    """An :class:`Objective` with the paper's default β (TRADES 6, MART 4)."""
    if beta is None:
        beta = {"trades": 6.0, "mart": 4.0}.get(name, 0.0)
    return Objective(name, eps, steps, step_size, beta, inner, gradient_path)
