"""Per-sample worst case of one base attack run through several gradient paths.

A sample counts as robust only if every member (attack × path) fails on it; success is always
judged on the model's true forward pass. Random starts are drawn per member over the whole
sample range from a generator fixed by (seed, member), so a sample's start does not depend on
batching or on the order of members.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from robustsnn.attacks.core import check_budget, eval_mode, perturbation_norm, predict
from robustsnn.attacks.pgd import fgsm, pgd, random_start, rfgsm
from robustsnn.snn.paths import expand_paths

BASE_ATTACKS = ("fgsm", "rfgsm", "pgd")


@dataclass
class WorstCaseResult:
    """Accuracies of one ε: clean, per member (each alone), and the per-sample worst case."""

    eps: float
    clean_accuracy: float
    robust_accuracy: float
    per_member: dict[str, float]
    fooled_by: list[str | None] = field(repr=False)
    perturbation: list[float] = field(repr=False)
    samples: int = 0


def member_generator(seed: int, member: str) -> torch.Generator:
    """The random stream of one member: fixed by the seed and the member's name."""
    gen = torch.Generator()
    gen.manual_seed((int(seed) * 2_654_435_761 + zlib.crc32(member.encode())) % (2**63))
    return gen


def _run_member(
    model: nn.Module,
    attack: str,
    path: str,
    x: torch.Tensor,
    y: torch.Tensor,
    starts: torch.Tensor | None,
    eps: float,
    steps: int,
    step_size: float | None,
    norm: str,
    restarts: int,
    generator: torch.Generator,
) -> torch.Tensor:
    if attack == "fgsm":
        return fgsm(model, x, y, eps, norm=norm, path=path)
    if attack == "rfgsm":
        return rfgsm(model, x, y, eps, norm=norm, path=path, generator=generator)
    return pgd(
        model,
        x,
        y,
        eps,
        steps=steps,
        step_size=step_size,
        norm=norm,
        path=path,
        restarts=restarts,
        generator=generator,
        start=starts,
    )


def worst_case_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    paths: list[str] | str,
    attack: str = "pgd",
    steps: int = 10,
    step_size: float | None = None,
    restarts: int = 1,
    norm: str = "linf",
    batch_size: int = 256,
    seed: int = 0,
    standalone: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
) -> WorstCaseResult:
    """Run ``attack`` through every path in ``paths`` and take the per-sample worst case.

    With ``standalone`` every member runs on every clean-correct sample, so ``per_member``
    is each member's own robust accuracy; otherwise members only see samples no earlier member
    fooled (cheaper; ``per_member`` is then the accuracy after that member in sequence).
    """
    if attack not in BASE_ATTACKS:
        raise ValueError(f"attack must be one of {', '.join(BASE_ATTACKS)}; got {attack!r}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    members = [str(p) for p in expand_paths(paths)]
    n = labels.shape[0]
    with eval_mode(model):
        correct = predict(model, images, batch_size) == labels
    robust = correct.clone()
    fooled_by: list[str | None] = [None] * n
    size = torch.zeros(n)
    per_member: dict[str, float] = {}
    for m_index, path in enumerate(members):
        name = f"{attack}/{path}"
        gen = member_generator(seed, name)
        starts = random_start(images, eps, norm, gen) if attack == "pgd" else None
        candidates = correct if standalone else robust
        todo = candidates.nonzero().flatten()
        member_robust = correct.clone()
        for start in range(0, todo.numel(), batch_size):
            idx = todo[start : start + batch_size]
            x, y = images[idx], labels[idx]
            x_adv = _run_member(
                model,
                attack,
                path,
                x,
                y,
                None if starts is None else starts[idx],
                eps,
                steps,
                step_size,
                norm,
                restarts,
                gen,
            )
            check_budget(x_adv, x, eps, norm)
            with eval_mode(model):
                hit = predict(model, x_adv, batch_size) != y
            member_robust[idx[hit]] = False
            newly = idx[hit & robust[idx]]
            for i in newly.tolist():
                fooled_by[i] = name
            size[idx[hit]] = torch.where(
                robust[idx[hit]], perturbation_norm(x_adv[hit], x[hit], norm), size[idx[hit]]
            )
            robust[idx[hit]] = False
            if progress is not None:
                progress(name, m_index, len(members))
        per_member[name] = float((member_robust if standalone else robust).float().mean())
    return WorstCaseResult(
        eps=float(eps),
        clean_accuracy=float(correct.float().mean()),
        robust_accuracy=float(robust.float().mean()),
        per_member=per_member,
        fooled_by=fooled_by,
        perturbation=size.tolist(),
        samples=n,
    )
