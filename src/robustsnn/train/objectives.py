"""Training objectives: CE, PGD-AT, TRADES, MART and the finetuning objective RFGSM-KL.

One callable serves the ANN (T = 0) and the SNN (T > 0)::

    objective = make_objective("trades", eps=2 / 255, steps=10)
    loss, metrics = objective(model, x, y, generator)

Conventions (primary paper's code, research notes §2.4), all in [0, 1] pixel space:

* The inner maximisation runs with the model in eval mode (BN running statistics, no dropout)
  and through the objective's gradient path (None: the neurons' own path); the mode and the
  path are restored afterwards. The outer loss runs in the mode the caller left the model in.
* PGD: ``steps`` sign-gradient steps of size ``step_size`` (default 2.5·ε/steps), each projected
  onto the ε-ball ∩ [0, 1]. PGD-AT starts at x + U(−ε, ε); TRADES and MART at x + 0.001·N(0, I).
* R-FGSM: x' = clip(x + α·sign(N(0, I))), then one step of (ε − α)·sign(∇); α defaults to ε/2.
* FGSM: one step of ε·sign(∇) from x (CE) or from x + 0.001·N(0, I) (KL, whose gradient is zero
  at x itself).
* Losses: ``pgd_at`` = CE(f(x_adv)) (Madry, no clean term); ``trades`` = CE(f(x)) + β·KL(p(x) ‖
  p(x_adv)) averaged over the batch, with the gradient through both branches, the inner attack
  ascending KL(p_eval(x) detached ‖ p(x')); ``mart`` = the MART loss of Wang et al. (2020), the
  inner attack ascending CE; ``rfgsm_kl`` = TRADES with the R-FGSM inner attack (β = 2,
  α = ε/2), the robust finetuning objective of primary §4.2.

Every adversarial example is projected onto its ε-ball ∩ [0, 1] and checked before use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robustsnn.attacks.core import check_budget, eval_mode, input_gradient, project
from robustsnn.snn.paths import GradientPath, parse_path

OBJECTIVES = ("ce", "pgd_at", "trades", "mart", "rfgsm_kl")
INNER_ATTACKS = ("pgd", "rfgsm", "fgsm")
DEFAULT_BETA = {"ce": 0.0, "pgd_at": 0.0, "trades": 6.0, "mart": 4.0, "rfgsm_kl": 2.0}
TRADES_START_STD = 0.001
"""Standard deviation of the Gaussian start of the TRADES and MART inner attacks."""

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ---- losses ----------------------------------------------------------------------------------
def ce_per_sample(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy (the inner loss of PGD-AT and MART)."""
    return F.cross_entropy(logits, y, reduction="none")


def kl_to_reference(reference_probs: torch.Tensor) -> LossFn:
    """Per-sample KL(p_ref ‖ softmax(logits)) against a fixed distribution (TRADES inner loss)."""

    def loss(logits: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.log_softmax(logits, 1), reference_probs, reduction="none").sum(1)

    return loss


def trades_kl(logits: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """KL(softmax(logits) ‖ softmax(logits_adv)) summed over classes, averaged over the batch.

    Gradients flow through both arguments (original TRADES, and the primary paper).
    """
    return F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(logits, 1), reduction="batchmean")


def mart_loss(
    logits: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float
) -> torch.Tensor:
    """MART (Wang et al. 2020), with the constants of its reference code.

    CE(f(x_adv), y) − log(1.0001 − p_adv[y′]) + β·mean(KL(p(x) ‖ p(x_adv))·(1.0000001 − p(x)[y])),
    where y′ is the most probable wrong class under p_adv.
    """
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


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())


def _noise(x: torch.Tensor, generator: torch.Generator | None, kind: str) -> torch.Tensor:
    """Noise shaped like ``x``, drawn on the CPU so a seed gives the same draw on any device."""
    draw = torch.randn if kind == "normal" else torch.rand
    return draw(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)


# ---- inner attacks -----------------------------------------------------------------------------
def rfgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    *,
    eps: float,
    alpha: float,
    generator: torch.Generator | None = None,
    gradient_path: str | GradientPath | None = None,
) -> torch.Tensor:
    """Random-start FGSM: x' = clip(x + α·sign(N(0, I))), then (ε − α)·sign(∇ loss), projected.

    Runs in whatever mode the model is in (objectives call it inside eval mode).
    """
    start = (x + alpha * _noise(x, generator, "normal").sign()).clamp(0, 1)
    grad, _ = input_gradient(model, start, y, loss_fn, gradient_path)
    return project(start + (eps - alpha) * grad.sign(), x, eps)


def rfgsm_kl(
    model: nn.Module,
    x: torch.Tensor,
    *,
    eps: float,
    alpha: float | None = None,
    generator: torch.Generator | None = None,
    gradient_path: str | GradientPath | None = None,
) -> torch.Tensor:
    """The finetuning attack of primary §4.2: R-FGSM on KL(p_eval(x) ‖ p(x')), in eval mode.

    ``alpha`` defaults to ε/2 (the paper's ε = 2/255, α = 1/255). The model's train/eval mode
    is restored afterwards.
    """
    alpha = eps / 2 if alpha is None else alpha
    with eval_mode(model):
        with torch.no_grad():
            reference = F.softmax(model(x), 1)
        y = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        x_adv = rfgsm(
            model,
            x,
            y,
            kl_to_reference(reference),
            eps=eps,
            alpha=alpha,
            generator=generator,
            gradient_path=gradient_path,
        )
    check_budget(x_adv, x, eps)
    return x_adv.detach()


@dataclass
class Objective:
    """A training loss ``objective(model, x, y, generator) -> (loss, metrics)``.

    Args:
        name: one of :data:`OBJECTIVES`.
        eps: L∞ budget of the inner attack in [0, 1] pixel units.
        steps: PGD steps of the inner attack.
        step_size: PGD step (default 2.5·ε/steps) or R-FGSM's random step α (default ε/2).
        beta: weight of the robust term (TRADES, MART, RFGSM-KL).
        inner: inner attack, one of :data:`INNER_ATTACKS`.
        gradient_path: backward approximation of the inner attack on an SNN (None: the
            neurons' own path; ``ann`` attacks the T = 0 proxy).

    ``metrics`` holds floats: ``loss``; ``acc`` (clean batch accuracy, when the objective has a
    clean forward); ``adv_acc`` (accuracy on the adversarial batch); ``kl`` (TRADES family).
    """

    name: str = "ce"
    eps: float = 0.0
    steps: int = 10
    step_size: float | None = None
    beta: float = 0.0
    inner: str = "pgd"
    gradient_path: GradientPath | None = None

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}; got {self.name!r}")
        if self.inner not in INNER_ATTACKS:
            raise ValueError(
                f"inner attack must be one of {', '.join(INNER_ATTACKS)}; got {self.inner!r}"
            )
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.step_size is not None and not self.step_size >= 0:
            raise ValueError(f"step_size must be >= 0, got {self.step_size}")
        if self.inner == "rfgsm" and self.step_size is not None and self.step_size > self.eps:
            raise ValueError(
                f"R-FGSM needs its random step α <= ε; got α = {self.step_size}, ε = {self.eps}"
            )
        if not self.beta >= 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.gradient_path is not None:
            self.gradient_path = parse_path(self.gradient_path)

    @property
    def adversarial(self) -> bool:
        """Whether the objective crafts adversarial examples."""
        return self.name != "ce"

    def describe(self) -> dict[str, object]:
        """JSON-serialisable settings (stored with checkpoints, compared on resume)."""
        return {
            "name": self.name,
            "eps": self.eps,
            "steps": self.steps,
            "step_size": self.effective_step_size(),
            "beta": self.beta,
            "inner": self.inner,
            "gradient_path": None if self.gradient_path is None else str(self.gradient_path),
        }

    def effective_step_size(self) -> float | None:
        """The step actually used: PGD step, R-FGSM α, or None for FGSM / CE."""
        if not self.adversarial or self.inner == "fgsm":
            return None
        if self.step_size is not None:
            return self.step_size
        return self.eps / 2 if self.inner == "rfgsm" else 2.5 * self.eps / self.steps

    # ---- the inner maximisation --------------------------------------------------------------
    def _uses_kl(self) -> bool:
        return self.name in ("trades", "rfgsm_kl")

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Adversarial examples for this objective, in eval mode (the mode is restored).

        The result lies in the ε-ball around ``x`` intersected with [0, 1] (checked).
        """
        if not self.adversarial:
            raise ValueError("the 'ce' objective has no adversarial examples")
        eps, step = self.eps, self.effective_step_size()
        with eval_mode(model):
            if self._uses_kl():
                with torch.no_grad():
                    loss_fn = kl_to_reference(F.softmax(model(x), 1))
            else:
                loss_fn = ce_per_sample
            if self.inner == "rfgsm":
                x_adv = rfgsm(
                    model,
                    x,
                    y,
                    loss_fn,
                    eps=eps,
                    alpha=step,
                    generator=generator,
                    gradient_path=self.gradient_path,
                )
            else:
                x_adv = self._start(x, generator)
                for _ in range(self.steps if self.inner == "pgd" else 1):
                    grad, _ = input_gradient(model, x_adv, y, loss_fn, self.gradient_path)
                    size = eps if self.inner == "fgsm" else step
                    x_adv = project(x_adv + size * grad.sign(), x, eps)
        check_budget(x_adv, x, eps)
        return x_adv.detach()

    def _start(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.name == "pgd_at":
            if self.inner == "fgsm":
                return x.clone()
            return project(x + self.eps * (2 * _noise(x, generator, "uniform") - 1), x, self.eps)
        if self.name == "mart" and self.inner == "fgsm":
            return x.clone()
        return project(x + TRADES_START_STD * _noise(x, generator, "normal"), x, self.eps)

    # ---- the outer loss ------------------------------------------------------------------------
    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if self.name == "ce":
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            return loss, {"loss": float(loss.detach()), "acc": _accuracy(logits, y)}
        if self.name == "pgd_at":
            logits_adv = model(self.perturb(model, x, y, generator))
            loss = F.cross_entropy(logits_adv, y)
            return loss, {"loss": float(loss.detach()), "adv_acc": _accuracy(logits_adv, y)}
        # Clean forward first, then the attack, then the adversarial forward (primary §4.2).
        logits = model(x)
        logits_adv = model(self.perturb(model, x, y, generator))
        metrics = {"acc": _accuracy(logits, y), "adv_acc": _accuracy(logits_adv, y)}
        if self.name == "mart":
            loss = mart_loss(logits, logits_adv, y, self.beta)
        else:
            kl = trades_kl(logits, logits_adv)
            loss = F.cross_entropy(logits, y) + self.beta * kl
            metrics["kl"] = float(kl.detach())
        metrics["loss"] = float(loss.detach())
        return loss, metrics


def make_objective(
    name: str,
    eps: float = 0.0,
    steps: int = 10,
    step_size: float | None = None,
    beta: float | None = None,
    inner: str | None = None,
    gradient_path: str | GradientPath | None = None,
) -> Objective:
    """An :class:`Objective` with the paper's defaults.

    β defaults to 6 (TRADES), 4 (MART), 2 (RFGSM-KL); the inner attack to PGD, except for
    ``rfgsm_kl`` (R-FGSM). ``steps`` matters only for PGD.
    """
    if beta is None:
        beta = DEFAULT_BETA.get(name, 0.0)
    if inner is None:
        inner = "rfgsm" if name == "rfgsm_kl" else "pgd"
    if name == "rfgsm_kl" and inner != "rfgsm":
        raise ValueError(f"the rfgsm_kl objective uses the rfgsm inner attack, not {inner!r}")
    return Objective(name, float(eps), int(steps), step_size, float(beta), inner, gradient_path)
