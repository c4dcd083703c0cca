"""SA-PGD, Stable Adaptive PGD (Wang et al., "Towards reliable evaluation of adversarial
robustness for SNNs", arXiv 2512.22522), L∞ and L2.

Surrogate gradients of spiking networks are badly scaled and noisy: their size varies over
orders of magnitude between samples and between steps, so a fixed step (PGD) or APGD's
momentum on the raw gradient either stalls or jumps. SA-PGD normalises the gradient *per
sample* before it enters Adam-like moments,

    m ← 0.5·m + g / mean|g|,        v ← 0.8·v + g² / mean(g²)

(means over the sample's own entries; the first m and v are the first normalised terms), so
the update ``m/√v`` does not depend on the gradient's scale, and steps along it:

* L∞: Δ = clamp(η·m/(√v + 1e-12), −η, η), as in the paper;
* L2 (our extension, not in the paper): Δ = η·m/‖m‖₂, the normalised momentum at length η.
  The per-entry √v is left out: m/√v is sign-like (sign(g) for a constant gradient), the L∞
  direction, which stops short of the L2 optimum ε·g/‖g‖ (measured on the digits: robust
  accuracy 0.514 with m/√v against 0.359 with m at ε = 0.5, APGD-L2 0.370);

then projects onto the ε-ball ∩ [0, 1]. A sample whose gradient is all zero contributes a
zero normalised term (no NaN).

The step size η starts at ε and is halved on a fixed schedule (:func:`halving_iterations`):
checkpoints every k iterations, k starting at ⌊0.22N⌋ and shrinking by ⌊0.03N⌋ after each
checkpoint down to ⌊0.06N⌋ (each at least 1); for N = 100, η is halved after iterations 22,
41, 57, 70, 80, 87, 93 and 99. Unlike APGD there is no oscillation test and no restart from
the best point: the normalised moments keep the steps stable, so every checkpoint halves η and
the iterate carries on from where it is. The schedule is the same for every sample, so each
sample's η is the same sequence (:func:`step_sizes`).

The start is APGD's (:func:`~robustsnn.attacks.apgd.apgd_start`). As in APGD and PGD, for
deterministic models every iterate is judged on the true forward (also through the ``ann``
proxy) and a sample stops at its first fooling iterate, which it returns. A sample never
fooled returns the iterate with the highest loss seen (the reference returns the last
iterate; the best one is never weaker). Stochastic models run every step and their candidates
are judged over ``draws`` draws at the end. Restarts run only on samples not yet fooled.
"""

from __future__ import annotations

import torch
from torch import nn

from robustsnn.attacks.apgd import check_classes, run_restarts
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
from robustsnn.attacks.seeding import sample_ids
from robustsnn.attacks.victim import Victim
from robustsnn.snn.paths import GradientPath

FIRST_MOMENT = 0.5
SECOND_MOMENT = 0.8
TINY = 1e-12


def halving_iterations(steps: int) -> list[int]:
    """The iterations (counted from 1) after which η is halved, for ``steps`` iterations."""
    period = max(int(0.22 * steps), 1)
    decrement, minimum = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    out: list[int] = []
    at = period
    while at <= steps:
        out.append(at)
        period = max(period - decrement, minimum)
        at += period
    return out


def step_sizes(eps: float, steps: int) -> list[float]:
    """η of each iteration 0..steps−1: ε, halved after each of :func:`halving_iterations`."""
    halve = set(halving_iterations(steps))
    eta, out = float(eps), []
    for i in range(steps):
        out.append(eta)
        if i + 1 in halve:
            eta /= 2
    return out


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (like.dim() - 1)))


def _normalised(t: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``t`` divided by the per-sample mean of ``scale`` (≥ 0); 0 where that mean is 0."""
    mean = scale.flatten(1).mean(1)
    return t / _per_sample(torch.where(mean > 0, mean, torch.ones_like(mean)), t)


def _step(m: torch.Tensor, v: torch.Tensor, eta: float, norm: str) -> torch.Tensor:
    """The SA-PGD update from the moments: the clamped ratio m/√v (L∞), or the momentum's
    direction at length η (L2: the per-entry √v would turn it towards sign(g), which is the
    L∞ direction, not the L2 one)."""
    if norm == "linf":
        return (eta * m / (v.sqrt() + TINY)).clamp(-eta, eta)
    return eta * sign_step(m, "l2")


def _sapgd_run(
    victim: Victim,
    x: torch.Tensor,
    y: torch.Tensor,
    ids: torch.Tensor,
    start: torch.Tensor,
    *,
    eps: float,
    norm: str,
    steps: int,
    loss_fn: LossFn,
    stream: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SA-PGD run from ``start``; per sample the first fooling iterate if the gradient
    forward was fooled, else the highest-loss iterate; and that 'fooled' flag."""
    victim.new_run()
    x_adv = start.clone()
    grad, loss_best, logits = victim.gradient(x_adv, y, ids, loss_fn, f"{stream}:i0")
    fooled = victim.verdict(x_adv, y, ids, logits)
    x_best, x_fool = x_adv.clone(), x_adv.clone()
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    alive = ~fooled if victim.judges_every_step else torch.ones_like(fooled)
    for i, eta in enumerate(step_sizes(eps, steps)):
        a = alive.nonzero().flatten()
        if a.numel() == 0:
            break
        g = grad[a]
        m[a] = FIRST_MOMENT * m[a] + _normalised(g, g.abs())
        v[a] = SECOND_MOMENT * v[a] + _normalised(g * g, g * g)
        new = project(x_adv[a] + _step(m[a], v[a], eta, norm), x[a], eps, norm)
        x_adv[a] = new
        ga, loss_a, logits_a = victim.gradient(
            new, y[a], ids[a.cpu()], loss_fn, f"{stream}:i{i + 1}"
        )
        grad[a] = ga
        hit = victim.verdict(new, y[a], ids[a.cpu()], logits_a) & ~fooled[a]
        x_fool[a[hit]] = new[hit]
        fooled[a[hit]] = True
        better = loss_a > loss_best[a]
        x_best[a[better]], loss_best[a[better]] = new[better], loss_a[better]
        if victim.judges_every_step:
            alive[a[hit]] = False
    return torch.where(_per_sample(fooled, x), x_fool, x_best), fooled


def sapgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 100,
    restarts: int = 1,
    loss: str | LossFn = "ce",
    norm: str = "linf",
    path: str | GradientPath | None = None,
    eot: int = 1,
    draws: int = 1,
    seed: int = 0,
    ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Untargeted SA-PGD with the ``ce``, ``dlr`` or ``margin`` loss (see the module notes).

    Restarts run only on samples no earlier restart fooled (judged on the true forward).
    """
    check_norm(norm)
    check_eps(eps)
    if steps < 1 or restarts < 1:
        raise ValueError(f"SA-PGD needs steps >= 1 and restarts >= 1, got {steps}, {restarts}")
    loss_fn = get_loss(loss)
    ids = sample_ids(ids, x.shape[0])
    victim = Victim(model, path, eot=eot, draws=draws, seed=seed, key="sapgd")
    best = x.clone()
    todo = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    if x.shape[0] == 0:
        return best
    with eval_mode(model):
        if isinstance(loss, str):
            check_classes(victim, x, ids, loss, "SA-PGD")

        def run(xr, yr, rid, start, rows, stream):
            return _sapgd_run(victim, xr, yr, rid, start, eps=eps, norm=norm, steps=steps,
                              loss_fn=loss_fn, stream=stream)  # fmt: skip

        run_restarts(victim, x, y, ids, best, todo, eps=eps, norm=norm, restarts=restarts, run=run)
    return finalize(best, x, eps, norm)
