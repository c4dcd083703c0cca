"""Ensemble members (one base attack through one gradient path, Square, or a transfer attack)
and running one member on a set of samples.

A member's result on a sample depends only on the sample, the member and the seed: its random
numbers are drawn per sample (:mod:`~robustsnn.attacks.seeding`) and every attack works per
sample. So a sample's worst case over members does not depend on the order of the members or
on which other samples share its batch. The one exception is the PDSG path, whose surrogate
uses membrane statistics over the whole batch: such members always run on the same fixed
batches (every clean-correct sample, in index order), see :attr:`Member.batch_dependent`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from robustsnn.attacks.apgd import apgd, apgd_t
from robustsnn.attacks.core import check_budget, eval_mode, perturbation_norm
from robustsnn.attacks.pgd import fgsm, pgd, rfgsm
from robustsnn.attacks.sapgd import sapgd
from robustsnn.attacks.seeding import derive_seed
from robustsnn.attacks.square import square
from robustsnn.attacks.victim import correct_fraction
from robustsnn.snn.paths import parse_path

GRADIENT_ATTACKS = ("fgsm", "rfgsm", "pgd", "apgd-ce", "apgd-dlr", "apgd-t", "sapgd")
ATTACKS = (*GRADIENT_ATTACKS, "square")

# Relative cost of one member on one sample, in gradient (or query) evaluations.
_COST = {"fgsm": 1, "rfgsm": 1}


@dataclass(frozen=True)
class Member:
    """One member of the ensemble.

    Args:
        attack: one of :data:`ATTACKS`.
        path: gradient path string (None: the attacked model's own; always None for Square).
        source: name of the transfer source model (None: the attacked model itself).
        steps, restarts, step_size: iterative attacks (step_size None: the attack's default).
        targets: APGD-T target classes.
        queries: Square queries.
        eot: gradient draws per step for stochastic models.
    """

    attack: str
    path: str | None = None
    source: str | None = None
    steps: int = 10
    restarts: int = 1
    step_size: float | None = None
    targets: int = 9
    queries: int = 5000
    eot: int = 1

    def __post_init__(self) -> None:
        if self.attack not in ATTACKS:
            raise ValueError(f"attack must be one of {', '.join(ATTACKS)}; got {self.attack!r}")
        if self.attack == "square" and self.path is not None:
            raise ValueError("Square queries the true forward pass; it takes no gradient path")
        if self.path is not None:
            object.__setattr__(self, "path", str(parse_path(self.path)))

    @property
    def name(self) -> str:
        """Stable, unique name: ``pgd/triangle:1.0``, ``square``, ``transfer:ann/pgd``."""
        base = self.attack if self.path is None else f"{self.attack}/{self.path}"
        return base if self.source is None else f"transfer:{self.source}/{base}"

    @property
    def batch_dependent(self) -> bool:
        """True when a sample's result depends on its batch (PDSG's batch statistics)."""
        return self.path is not None and parse_path(self.path).kind == "pdsg"

    @property
    def cost(self) -> int:
        """Gradient evaluations (or queries) per sample, at most, on a deterministic model."""
        if self.attack == "square":
            return self.queries
        steps = _COST.get(self.attack, self.steps * self.restarts)
        return steps * (self.targets if self.attack == "apgd-t" else 1)

    def cost_on(self, stochastic: bool) -> int:
        """:attr:`cost`, times the EOT draws per step on a stochastic model."""
        return self.cost * (self.eot if stochastic else 1)

    def craft(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float,
        *,
        norm: str = "linf",
        seed: int = 0,
        ids: torch.Tensor | None = None,
        draws: int = 1,
    ) -> torch.Tensor:
        """Adversarial examples of this member against ``model`` (the source, for transfer)."""
        seed = derive_seed(seed, self.name)
        common = {"seed": seed, "ids": ids, "eot": self.eot}
        if self.attack == "square":
            if norm != "linf":
                raise ValueError("the Square attack here is L∞ only")
            return square(model, x, y, eps, queries=self.queries, draws=draws, **common)
        common.update(norm=norm, path=self.path)
        if self.attack == "fgsm":
            return fgsm(model, x, y, eps, **common)
        if self.attack == "rfgsm":
            return rfgsm(model, x, y, eps, alpha=self.step_size, **common)
        iterative = {"steps": self.steps, "restarts": self.restarts, "draws": draws, **common}
        if self.attack == "pgd":
            return pgd(model, x, y, eps, step_size=self.step_size, **iterative)
        if self.attack == "sapgd":
            return sapgd(model, x, y, eps, **iterative)
        if self.attack == "apgd-t":
            return apgd_t(model, x, y, eps, targets=self.targets, **iterative)
        return apgd(model, x, y, eps, loss=self.attack.removeprefix("apgd-"), **iterative)


@dataclass
class Outcome:
    """What one member did on the samples it ran on (all tensors indexed like ``rows``)."""

    rows: torch.Tensor
    fooled: torch.Tensor
    norms: torch.Tensor
    correct: torch.Tensor = field(repr=False)

    @classmethod
    def empty(cls) -> Outcome:
        return cls(
            torch.empty(0, dtype=torch.long),
            torch.empty(0, dtype=torch.bool),
            torch.empty(0),
            torch.empty(0),
        )


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def run_member(
    model: nn.Module,
    member: Member,
    images: torch.Tensor,
    labels: torch.Tensor,
    rows: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    seed: int = 0,
    batch_size: int = 256,
    draws: int = 1,
    source: nn.Module | None = None,
    on_batch: Callable[[Outcome], None] | None = None,
) -> Outcome:
    """Run ``member`` on ``images[rows]`` in batches; judge each example on ``model``'s true
    forward (fooled = misclassified in at least one of ``draws`` draws).

    ``rows`` are indices into ``images`` and double as the samples' ids for seeding. Every
    example is checked against its budget before it counts. ``source`` is the model the
    examples are crafted on for transfer members. ``on_batch`` sees each batch's outcome.
    """
    if member.source is not None and source is None:
        raise ValueError(f"member {member.name} needs its source model")
    crafter = source if member.source is not None else model
    device = model_device(model)
    parts: list[Outcome] = []
    rows = rows.cpu().long()
    for start in range(0, rows.numel(), batch_size):
        idx = rows[start : start + batch_size]
        x, y = images[idx].to(device), labels[idx].to(device)
        x_adv = member.craft(crafter, x, y, eps, norm=norm, seed=seed, ids=idx, draws=draws)
        check_budget(x_adv, x, eps, norm)
        with eval_mode(model):
            correct = correct_fraction(model, x_adv, y, idx, draws).cpu()
        part = Outcome(idx, correct < 1, perturbation_norm(x_adv, x, norm).cpu(), correct)
        parts.append(part)
        if on_batch is not None:
            on_batch(part)
    if not parts:
        return Outcome.empty()
    return Outcome(
        torch.cat([p.rows for p in parts]),
        torch.cat([p.fooled for p in parts]),
        torch.cat([p.norms for p in parts]),
        torch.cat([p.correct for p in parts]),
    )


def clean_correct(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 256,
    draws: int = 1,
) -> torch.Tensor:
    """Per sample, the fraction of ``draws`` true forward passes that classify it correctly."""
    device = model_device(model)
    out = []
    with eval_mode(model):
        for start in range(0, labels.shape[0], batch_size):
            idx = torch.arange(start, min(start + batch_size, labels.shape[0]))
            x, y = images[idx].to(device), labels[idx].to(device)
            out.append(correct_fraction(model, x, y, idx, draws).cpu())
    return torch.cat(out) if out else torch.empty(0)
