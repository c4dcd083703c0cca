"""Per-sample worst case of one base attack run through several gradient paths.

Members (the attack through each path) run in order, each only on the samples no earlier
member fooled; success is judged on the model's true forward pass; a sample counts as robust
only if every member fails on it. Because a member's result on a sample never depends on the
other samples or on the order (per-sample seeding), the worst case does not either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from robustsnn.attacks.core import check_eps, check_norm
from robustsnn.attacks.members import GRADIENT_ATTACKS, Member, clean_correct, run_member
from robustsnn.snn.paths import GradientPath, expand_paths


@dataclass
class WorstCaseResult:
    """Accuracies at one ε.

    Attributes:
        eps: the budget.
        clean_accuracy: accuracy without attack.
        robust_accuracy: per-sample worst case over all members.
        per_member: accuracy after each member, in the order run (the worst case over that
            member and every member before it); the first member's value is its accuracy alone.
        alone: each member's own accuracy where it is known (the first member; every member
            with ``standalone=True``).
        fooled_by: per sample, the first member that fooled it (None: robust or misclassified
            clean, see ``clean_correct``).
        perturbation: per sample, the norm of the perturbation that fooled it (0 otherwise).
        samples: number of samples.
    """

    eps: float
    clean_accuracy: float
    robust_accuracy: float
    per_member: dict[str, float]
    fooled_by: list[str | None] = field(repr=False)
    perturbation: list[float] = field(repr=False)
    samples: int = 0
    alone: dict[str, float] = field(default_factory=dict)
    clean_correct: list[bool] = field(default_factory=list, repr=False)

    @property
    def robust(self) -> list[bool]:
        """Per sample: correct without attack and fooled by no member."""
        return [c and f is None for c, f in zip(self.clean_correct, self.fooled_by, strict=True)]


def worst_case_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    paths: list[str] | str | None,
    attack: str = "pgd",
    steps: int = 10,
    step_size: float | None = None,
    restarts: int = 1,
    norm: str = "linf",
    batch_size: int = 256,
    seed: int = 0,
    eot: int = 1,
    draws: int = 1,
    standalone: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> WorstCaseResult:
    """Run ``attack`` through every path in ``paths`` and take the per-sample worst case.

    ``paths`` is a set name (``paper19``, ``extended``), a comma-separated string or a list;
    None uses the model's own gradient (for models without spiking neurons). With
    ``standalone`` every member runs on every clean-correct sample (the naive cost), so
    ``alone`` holds every member's own accuracy; the worst case is the same either way.
    ``eot``/``draws``: gradient draws per step and judging draws for Poisson-coded models.
    """
    if attack not in GRADIENT_ATTACKS:
        raise ValueError(f"attack must be one of {', '.join(GRADIENT_ATTACKS)}; got {attack!r}")
    check_eps(eps)
    check_norm(norm)
    plist: list[GradientPath | None] = [None] if paths is None else list(expand_paths(paths))
    members = [
        Member(
            attack,
            None if p is None else str(p),
            steps=steps,
            restarts=restarts,
            step_size=step_size,
            eot=eot,
        )
        for p in plist
    ]
    n = labels.shape[0]
    correct = clean_correct(model, images, labels, batch_size=batch_size, draws=draws) == 1
    robust = correct.clone()
    fooled_by: list[str | None] = [None] * n
    size = torch.zeros(n)
    per_member: dict[str, float] = {}
    alone: dict[str, float] = {}
    for index, member in enumerate(members):
        run_all = standalone or member.batch_dependent or index == 0
        rows = (correct if run_all else robust).nonzero().flatten()
        out = run_member(
            model,
            member,
            images,
            labels,
            rows,
            eps=eps,
            norm=norm,
            seed=seed,
            batch_size=batch_size,
            draws=draws,
        )
        hit = out.rows[out.fooled]
        if run_all:
            alone[member.name] = float((correct.sum() - hit.numel()) / max(n, 1))
        new = out.fooled & robust[out.rows]
        for i in out.rows[new].tolist():
            fooled_by[i] = member.name
        size[out.rows[new]] = out.norms[new]
        robust[hit] = False
        per_member[member.name] = float(robust.float().mean()) if n else 0.0
        if progress is not None:
            progress(member.name, index + 1, len(members))
    return WorstCaseResult(
        eps=float(eps),
        clean_accuracy=float(correct.float().mean()) if n else 0.0,
        robust_accuracy=float(robust.float().mean()) if n else 0.0,
        per_member=per_member,
        fooled_by=fooled_by,
        perturbation=size.tolist(),
        samples=n,
        alone=alone,
        clean_correct=correct.tolist(),
    )
