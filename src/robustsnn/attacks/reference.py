"""Cross-check with the reference AutoAttack implementation (``pyautoattack``, optional).

The reference attacks see the model through a chosen gradient path (a module whose forward
runs inside ``using_gradient_path``); their adversarial examples are then checked against the
budget and judged on the model's true forward pass, like every member of ours. Install the
optional extra with ``pip install --no-deps pyautoattack`` (it has no dependencies).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch
from torch import nn

from robustsnn.attacks.core import check_budget, check_eps, check_norm, eval_mode, path_context
from robustsnn.attacks.members import clean_correct, model_device
from robustsnn.attacks.victim import correct_fraction, is_stochastic
from robustsnn.snn.paths import GradientPath, parse_path

REFERENCE_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
_NORMS = {"linf": "Linf", "l2": "L2"}


def autoattack_available() -> bool:
    """True when the optional ``pyautoattack`` package is installed."""
    return importlib.util.find_spec("pyautoattack") is not None


def _require() -> None:
    if not autoattack_available():
        raise ValueError(
            "the AutoAttack cross-check needs the optional package pyautoattack: "
            "pip install --no-deps pyautoattack"
        )


class ThroughPath(nn.Module):
    """``model`` whose forward (and so its gradient) runs through ``path``."""

    def __init__(self, model: nn.Module, path: str | GradientPath | None) -> None:
        super().__init__()
        self.model = model
        self.path = parse_path(path) if path is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with path_context(self.model, self.path):
            return self.model(x)


@dataclass
class CrossCheckResult:
    """Accuracies under the reference attacks, judged on the true forward pass."""

    eps: float
    path: str | None
    attacks: list[str]
    clean_accuracy: float
    robust_accuracy: float
    samples: int


def reference_apgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    loss: str = "ce",
    steps: int = 100,
    restarts: int = 1,
    norm: str = "linf",
    path: str | GradientPath | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """pyautoattack's APGD (CE or DLR) through ``path``; returns budget-checked examples."""
    _require()
    check_norm(norm)
    check_eps(eps)
    from pyautoattack.autopgd_base import APGDAttack

    device = model_device(model)
    attack = APGDAttack(
        ThroughPath(model, path),
        n_iter=steps,
        norm=_NORMS[norm],
        n_restarts=restarts,
        eps=eps,
        seed=seed,
        loss=loss,
        device=device,
    )
    with eval_mode(model):
        x_adv = attack.perturb(x.to(device), y.to(device)).detach()
    x_adv = x_adv.clamp(0, 1)
    check_budget(x_adv, x.to(device), eps, norm)
    return x_adv


def autoattack_cross_check(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    path: str | GradientPath | None = None,
    attacks: list[str] | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> CrossCheckResult:
    """Run pyautoattack's standard AutoAttack (or ``attacks``) through ``path``.

    ``attacks`` picks reference attacks from :data:`REFERENCE_ATTACKS` (None: the standard
    version, APGD-CE, APGD-T, FAB-T and Square). Returns accuracies judged on the true forward.
    """
    _require()
    check_norm(norm)
    check_eps(eps)
    if is_stochastic(model):
        raise ValueError("the AutoAttack cross-check needs a deterministic model (direct coding)")
    for a in attacks or []:
        if a not in REFERENCE_ATTACKS:
            raise ValueError(f"reference attack must be one of {', '.join(REFERENCE_ATTACKS)}")
    from pyautoattack import AutoAttack

    device = model_device(model)
    if attacks:
        runner = AutoAttack(
            ThroughPath(model, path),
            attacks=list(attacks),
            version="custom",
            eps=eps,
            norm=_NORMS[norm],
            seed=seed,
            device=device,
        )
    else:
        runner = AutoAttack(
            ThroughPath(model, path), eps=eps, norm=_NORMS[norm], seed=seed, device=device
        )
    correct = clean_correct(model, images, labels, batch_size=batch_size) == 1
    robust = correct.clone()
    with eval_mode(model):
        for start in range(0, labels.shape[0], batch_size):
            idx = torch.arange(start, min(start + batch_size, labels.shape[0]))
            x, y = images[idx].to(device), labels[idx].to(device)
            x_adv, _ = runner.run_standard_evaluation(x, y, batch_size=batch_size)
            x_adv = x_adv.detach()
            x_adv = x_adv.clamp(0, 1)
            check_budget(x_adv, x, eps, norm)
            robust[idx] &= (correct_fraction(model, x_adv, y, idx) == 1).cpu()
    n = max(labels.shape[0], 1)
    return CrossCheckResult(
        eps=float(eps),
        path=None if path is None else str(parse_path(path)),
        attacks=list(attacks) if attacks else ["apgd-ce", "apgd-t", "fab-t", "square"],
        clean_accuracy=float(correct.sum()) / n,
        robust_accuracy=float(robust.sum()) / n,
        samples=labels.shape[0],
    )
