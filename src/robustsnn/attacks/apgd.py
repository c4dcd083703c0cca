"""APGD (Croce & Hein, ICML 2020) with CE or DLR loss, and targeted APGD-T; L∞ and L2.

The standard algorithm: initial step 2ε, momentum 0.75, checkpoints at
w_j = ⌈p_j N⌉ with p_0 = 0, p_1 = 0.22 and p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06);
at a checkpoint a sample's step is halved and it restarts from its best point if fewer than
ρ = 0.75 of the steps since the last checkpoint increased its loss, or if its step was not
halved last time and its best loss did not improve. Everything is per sample (step sizes,
best points, checkpoint tests), so a sample's run does not depend on its batch. For
deterministic models every iterate is judged on the true forward (also through the ``ann``
proxy) and a sample stops at its first fooling iterate.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from robustsnn.attacks.core import (
    LossFn,
    check_eps,
    check_norm,
    dlr_targeted_loss,
    eval_mode,
    finalize,
    get_loss,
    project,
    sign_step,
)
from robustsnn.attacks.seeding import SampleRandom, sample_ids
from robustsnn.attacks.victim import Victim, true_logits
from robustsnn.snn.paths import GradientPath

MOMENTUM = 0.75
INITIAL_STEP = 2.0  # × ε
MIN_CLASSES = {"dlr": 3, "dlr-targeted": 4}


def apgd_start(
    x: torch.Tensor, eps: float, norm: str, random: SampleRandom, ids: torch.Tensor, stream: str
) -> torch.Tensor:
    """APGD's random start: ε·t/‖t‖ with t uniform in [−1, 1] (L∞) or Gaussian (L2)."""
    if norm == "linf":
        t = random.uniform(ids, x.shape[1:], stream, x.device, x.dtype) * 2 - 1
        t = t / t.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
    else:
        t = sign_step(random.normal(ids, x.shape[1:], stream, x.device, x.dtype), "l2")
    return (x + eps * t).clamp(0, 1)


def _schedule(steps: int) -> tuple[int, int, int]:
    """First checkpoint length, its minimum and its decrement (the reference's rounding)."""
    return max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)


def _apgd_run(
    victim: Victim,
    x: torch.Tensor,
    y: torch.Tensor,
    ids: torch.Tensor,
    start: torch.Tensor,
    *,
    eps: float,
    norm: str,
    steps: int,
    rho: float,
    loss_for: Callable[[torch.Tensor], LossFn],
    stream: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One APGD run from ``start``; per sample the first fooling iterate if the gradient
    forward was fooled, else the highest-loss iterate; and that 'fooled' flag."""
    batch = x.shape[0]
    rows = torch.arange(batch, device=x.device)
    x_adv = start.clone()
    victim.new_run()
    grad, loss, logits = victim.gradient(x_adv, y, ids, loss_for(rows), f"{stream}:i0")
    fooled = victim.verdict(x_adv, y, ids, logits)
    x_best, x_best_adv, grad_best = x_adv.clone(), x_adv.clone(), grad.clone()
    loss_best = loss.clone()
    history = [loss.clone()]
    step = torch.full((batch,), INITIAL_STEP * eps, device=x.device, dtype=x.dtype)
    x_old = x_adv.clone()
    period, period_min, period_decr = _schedule(steps)
    since_check = 0
    loss_best_at_check = loss_best.clone()
    halved_at_check = torch.ones(batch, dtype=torch.bool, device=x.device)
    alive = ~fooled if victim.judges_every_step else torch.ones_like(fooled)
    shape = (-1, *([1] * (x.dim() - 1)))
    for i in range(steps):
        a = alive.nonzero().flatten()
        if a.numel() == 0:
            break
        xa, x0 = x_adv[a], x[a]
        momentum = MOMENTUM if i > 0 else 1.0
        z = project(xa + step[a].view(shape) * sign_step(grad[a], norm), x0, eps, norm)
        new = project(xa + momentum * (z - xa) + (1 - momentum) * (xa - x_old[a]), x0, eps, norm)
        x_old[a], x_adv[a] = xa, new
        g, loss_a, logits_a = victim.gradient(
            new, y[a], ids[a.cpu()], loss_for(a), f"{stream}:i{i + 1}"
        )
        grad[a] = g
        hit = victim.verdict(new, y[a], ids[a.cpu()], logits_a)
        x_best_adv[a[hit]] = new[hit]
        fooled[a[hit]] = True
        better = loss_a > loss_best[a]
        x_best[a[better]], grad_best[a[better]] = new[better], g[better]
        loss_best[a[better]] = loss_a[better]
        current = history[-1].clone()
        current[a] = loss_a
        history.append(current)
        since_check += 1
        if since_check == period:
            recent = torch.stack(history[-(period + 1) :])
            increases = (recent[1:] > recent[:-1]).sum(0)
            oscillating = increases <= period * rho
            stalled = ~halved_at_check & (loss_best_at_check >= loss_best)
            halve = (oscillating | stalled) & alive
            halved_at_check, loss_best_at_check = halve, loss_best.clone()
            step[halve] /= 2
            x_adv[halve], grad[halve] = x_best[halve], grad_best[halve]
            period, since_check = max(period - period_decr, period_min), 0
        if victim.judges_every_step:
            alive[a[hit]] = False
    out = torch.where(fooled.view(shape), x_best_adv, x_best)
    return out, fooled


def check_classes(
    victim: Victim, x: torch.Tensor, ids: torch.Tensor, loss: str, attack: str = "APGD"
) -> int:
    """The number of classes, after refusing a loss that needs more (DLR: 3, targeted: 4)."""
    classes = true_logits(victim.model, x[:1], ids[:1]).shape[1]
    need = MIN_CLASSES.get(loss, 2)
    if classes < need:
        raise ValueError(
            f"{attack} with the {loss} loss needs at least {need} classes, got {classes}"
        )
    return classes


Run = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str], tuple]


def run_restarts(
    victim: Victim,
    x: torch.Tensor,
    y: torch.Tensor,
    ids: torch.Tensor,
    best: torch.Tensor,
    todo: torch.Tensor,
    *,
    eps: float,
    norm: str,
    restarts: int,
    run: Run,
    prefix: str = "",
) -> None:
    """``restarts`` runs from APGD's random start on the samples still in ``todo``; update
    ``best``/``todo``. ``run(x, y, ids, start, rows, stream)`` is one run of the attack and
    returns its examples and whether each fooled the gradient forward."""
    for r in range(restarts):
        rows = todo.nonzero().flatten()
        if rows.numel() == 0:
            return
        rid = ids[rows.cpu()]
        start = apgd_start(x[rows], eps, norm, victim.random, rid, f"{prefix}start{r}")
        out, fooled = run(x[rows], y[rows], rid, start, rows, f"{prefix}r{r}")
        if not victim.judges_every_step:
            fooled = victim.fooled(out, y[rows], rid)
        best[rows] = out
        todo[rows[fooled]] = False


def _apgd_restarts(
    victim: Victim,
    x: torch.Tensor,
    y: torch.Tensor,
    ids: torch.Tensor,
    best: torch.Tensor,
    todo: torch.Tensor,
    *,
    eps: float,
    norm: str,
    steps: int,
    restarts: int,
    rho: float,
    loss_for: Callable[[torch.Tensor], Callable[[torch.Tensor], LossFn]],
    stream: str,
) -> None:
    """APGD's runs through :func:`run_restarts` (streams ``{stream}:start{r}``/``:r{r}``)."""

    def run(xr, yr, rid, start, rows, run_stream):
        return _apgd_run(victim, xr, yr, rid, start, eps=eps, norm=norm, steps=steps, rho=rho,
                         loss_for=loss_for(rows), stream=run_stream)  # fmt: skip

    run_restarts(victim, x, y, ids, best, todo, eps=eps, norm=norm, restarts=restarts, run=run,
                 prefix=f"{stream}:")  # fmt: skip


def apgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 100,
    restarts: int = 1,
    loss: str = "ce",
    rho: float = 0.75,
    norm: str = "linf",
    path: str | GradientPath | None = None,
    eot: int = 1,
    draws: int = 1,
    seed: int = 0,
    ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Untargeted APGD with the ``ce`` or ``dlr`` loss (APGD-CE, APGD-DLR).

    Restarts run only on samples no earlier restart fooled (judged on the true forward).
    """
    check_norm(norm)
    check_eps(eps)
    if steps < 1 or restarts < 1:
        raise ValueError(f"APGD needs steps >= 1 and restarts >= 1, got {steps}, {restarts}")
    loss_fn = get_loss(loss)
    ids = sample_ids(ids, x.shape[0])
    victim = Victim(model, path, eot=eot, draws=draws, seed=seed, key=f"apgd-{loss}")
    best = x.clone()
    todo = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    if x.shape[0] == 0:
        return best
    with eval_mode(model):
        if isinstance(loss, str):
            check_classes(victim, x, ids, loss)
        _apgd_restarts(
            victim,
            x,
            y,
            ids,
            best,
            todo,
            eps=eps,
            norm=norm,
            steps=steps,
            restarts=restarts,
            rho=rho,
            loss_for=lambda rows: lambda sub: loss_fn,
            stream="untargeted",
        )
    return finalize(best, x, eps, norm)


def apgd_t(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 100,
    restarts: int = 1,
    targets: int = 9,
    rho: float = 0.75,
    norm: str = "linf",
    path: str | GradientPath | None = None,
    eot: int = 1,
    draws: int = 1,
    seed: int = 0,
    ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """APGD-T: targeted DLR towards each of the ``targets`` classes ranked 2nd, 3rd, ... by the
    clean logits of the true forward (at most classes − 1), each on the samples still robust."""
    check_norm(norm)
    check_eps(eps)
    if steps < 1 or restarts < 1 or targets < 1:
        raise ValueError(
            f"APGD-T needs steps, restarts and targets >= 1, got {steps}, {restarts}, {targets}"
        )
    ids = sample_ids(ids, x.shape[0])
    victim = Victim(model, path, eot=eot, draws=draws, seed=seed, key="apgd-t")
    best = x.clone()
    todo = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    if x.shape[0] == 0:
        return best
    with eval_mode(model):
        classes = check_classes(victim, x, ids, "dlr-targeted")
        ranking = true_logits(model, x, ids).argsort(1, descending=True)
        for rank in range(1, min(targets, classes - 1) + 1):
            target = ranking[:, rank]

            def loss_for(rows: torch.Tensor, target: torch.Tensor = target):
                return lambda sub: lambda z, t: dlr_targeted_loss(z, t, target[rows[sub]])

            _apgd_restarts(
                victim,
                x,
                y,
                ids,
                best,
                todo,
                eps=eps,
                norm=norm,
                steps=steps,
                restarts=restarts,
                rho=rho,
                loss_for=loss_for,
                stream=f"target{rank}",
            )
    return finalize(best, x, eps, norm)
