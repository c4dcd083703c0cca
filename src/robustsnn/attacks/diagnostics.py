"""Gradient-obfuscation diagnostics (Athalye et al. 2018, §3.1; Carlini et al. 2019).

Each check runs on the first ``suite.diagnostic_samples`` samples at the largest ε of the
suite, through the strongest path of the screening (or the first path), and returns a dict
with ``passed`` (True / False; None when it could not run), the numbers behind it and a note.
A failure is a warning sign that the robustness comes from masked gradients:

* ``eps_sweep``: the worst case over PGD through the strongest path and the ANN proxy must
  not increase with ε and must reach 0 at the largest possible ε (1 for L∞, √d for L2);
* ``steps_sweep``: PGD with 1×, 2×, 5× the suite's steps must not do worse with more steps;
* ``white_vs_black_box``: the white-box worst case must not be above Square's accuracy, and
  Square should fool no sample every gradient member missed;
* ``iterative_vs_single_step``: PGD must not be weaker than FGSM;
* ``zero_gradients``: per path, the fraction of exactly-zero input-gradient entries and of
  samples whose whole gradient is zero; fails when some sample has no gradient on any path;
* ``random_noise``: accuracy under uniform and Gaussian noise of size ε (5 draws each, worst
  case); fails when noise fools a sample that every attack missed;
* ``sharper_or_detached``: PGD through sharper versions of the suite's surrogates and through
  their detached-reset versions, and SA-PGD through ASSG, on the samples the suite left
  robust; fails when any of them fools one. That is the signature of a loose worst case: the
  suite's gradients were misled by the reset term or too smooth (Wang et al. 2025).

Comparisons between two attacks allow :data:`SLACK` (2 points) plus one sample for the noise
of small subsets; the ``eps_sweep`` end point and the noise check allow none.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from robustsnn.attacks.core import eval_mode, finalize, get_loss, sign_step
from robustsnn.attacks.members import Member, model_device, run_member
from robustsnn.attacks.seeding import SampleRandom
from robustsnn.attacks.victim import Victim, correct_fraction, time_steps
from robustsnn.snn.paths import RESET_KINDS, GradientPath, parse_path

if TYPE_CHECKING:
    from robustsnn.attacks.evaluator import EvaluationResult, ResultStore
    from robustsnn.attacks.suite import Suite

SLACK = 0.02
NOISE_DRAWS = 5


class _Context:
    """What every diagnostic needs: the subset, the reference ε and path, a member runner."""

    def __init__(self, model, images, labels, suite, result, draws, progress) -> None:
        self.model, self.suite, self.draws, self.progress = model, suite, draws, progress
        count = min(suite.diagnostic_samples, labels.shape[0])
        self.rows = torch.arange(count)
        self.images, self.labels = images, labels
        self.correct = torch.tensor(result.clean_correct[:count], dtype=torch.bool)
        self.eps = max(suite.eps)
        key = next(k for k, r in result.per_eps.items() if r.eps == self.eps)
        self.main = result.per_eps[key]
        self.spiking = time_steps(model) > 0
        paths = suite.path_list() if self.spiking else []
        scores = self.main.screening
        self.paths: list[str | None] = list(paths) if paths else [None]
        self.best = max(paths, key=lambda p: scores.get(p, -math.inf)) if paths else None
        if self.best is not None and not scores:
            self.best = paths[0]

    def robust_accuracy(self, members: list[Member], eps: float) -> tuple[float, torch.Tensor]:
        """Worst case of ``members`` (each run alone on every clean-correct subset sample)."""
        robust = self.correct.clone()
        for m in members:
            out = run_member(
                self.model,
                m,
                self.images,
                self.labels,
                self.rows[self.correct],
                eps=eps,
                norm=self.suite.norm,
                seed=self.suite.seed,
                batch_size=self.suite.batch_size,
                draws=self.draws,
            )
            robust[out.rows[out.fooled]] = False
        return float(robust.float().mean()) if robust.numel() else 0.0, robust

    def main_robust(self, gradient_only: bool = False) -> torch.Tensor:
        """The main evaluation's per-sample robustness on the subset."""
        robust = torch.tensor(self.main.robust[: self.rows.numel()], dtype=torch.bool)
        if gradient_only:
            for i, name in enumerate(self.main.fooled_by[: self.rows.numel()]):
                if name is not None and (name == "square" or name.startswith("transfer:")):
                    robust[i] = True
        return robust

    @property
    def slack(self) -> float:
        """Allowed accuracy difference between two attacks: 2 points plus one sample."""
        return SLACK + 1 / max(int(self.rows.numel()), 1)

    def pgd(self, path: str | None, steps: int | None = None) -> Member:
        return Member("pgd", path, steps=steps or self.suite.steps, eot=self.suite.eot)


def _ok(condition: bool) -> bool:
    return bool(condition)


def eps_sweep(ctx: _Context) -> dict[str, Any]:
    dim = ctx.images[0].numel()
    largest = 1.0 if ctx.suite.norm == "linf" else math.sqrt(dim)
    grid = sorted({*ctx.suite.eps, min(2 * ctx.eps, largest), min(4 * ctx.eps, largest), largest})
    paths = [ctx.best] + (["ann"] if ctx.spiking and ctx.best != "ann" else [])
    steps = max(20, ctx.suite.steps)
    accuracy = [ctx.robust_accuracy([ctx.pgd(p, steps) for p in paths], e)[0] for e in grid]
    monotone = all(b <= a + ctx.slack for a, b in zip(accuracy, accuracy[1:], strict=False))
    return {
        "passed": _ok(monotone and accuracy[-1] == 0),
        "eps": grid,
        "accuracy": accuracy,
        "paths": [str(p) for p in paths],
        "steps": steps,
        "note": "worst case of PGD over the listed paths; must fall to 0 at the largest ε",
    }


def steps_sweep(ctx: _Context) -> dict[str, Any]:
    steps = [ctx.suite.steps, 2 * ctx.suite.steps, 5 * ctx.suite.steps]
    accuracy = [ctx.robust_accuracy([ctx.pgd(ctx.best, s)], ctx.eps)[0] for s in steps]
    return {
        "passed": _ok(
            all(b <= a + ctx.slack for a, b in zip(accuracy, accuracy[1:], strict=False))
        ),
        "eps": ctx.eps,
        "path": str(ctx.best),
        "steps": steps,
        "accuracy": accuracy,
        "note": "PGD accuracy must not increase with more steps",
    }


def white_vs_black_box(ctx: _Context) -> dict[str, Any]:
    if ctx.suite.norm != "linf":
        return {"passed": None, "note": "Square is L∞ only"}
    member = Member("square", queries=ctx.suite.diagnostic_queries, eot=ctx.suite.eot)
    square_acc, square_robust = ctx.robust_accuracy([member], ctx.eps)
    white = ctx.main_robust(gradient_only=True)
    white_acc = float(white.float().mean()) if white.numel() else 0.0
    square_only = int((white & ~square_robust).sum())
    return {
        "passed": _ok(white_acc <= square_acc + ctx.slack and square_only == 0),
        "eps": ctx.eps,
        "white_box_accuracy": white_acc,
        "square_accuracy": square_acc,
        "square_queries": member.queries,
        "fooled_only_by_square": square_only,
        "note": "white-box worst case must not be above Square's accuracy",
    }


def iterative_vs_single_step(ctx: _Context) -> dict[str, Any]:
    fgsm_acc = ctx.robust_accuracy([Member("fgsm", ctx.best, eot=ctx.suite.eot)], ctx.eps)[0]
    pgd_acc = ctx.robust_accuracy([ctx.pgd(ctx.best)], ctx.eps)[0]
    return {
        "passed": _ok(pgd_acc <= fgsm_acc + ctx.slack),
        "eps": ctx.eps,
        "path": str(ctx.best),
        "fgsm_accuracy": fgsm_acc,
        "pgd_accuracy": pgd_acc,
        "note": "PGD must not be weaker than FGSM",
    }


def zero_gradients(ctx: _Context) -> dict[str, Any]:
    x = ctx.images[ctx.rows]
    y = ctx.labels[ctx.rows]
    device = model_device(ctx.model)
    x, y = x.to(device), y.to(device)
    per_path: dict[str, dict[str, float]] = {}
    any_gradient = torch.zeros(x.shape[0], dtype=torch.bool)
    loss = get_loss("ce")
    with eval_mode(ctx.model):
        for p in ctx.paths:
            victim = Victim(ctx.model, p, eot=1, seed=ctx.suite.seed, key="zero-gradients")
            grad, _, _ = victim.gradient(x, y, ctx.rows, loss, "clean")
            zero = (grad == 0).flatten(1).cpu()
            all_zero = zero.all(1)
            any_gradient |= ~all_zero
            per_path[str(p)] = {
                "zero_entries": float(zero.float().mean()),
                "zero_samples": float(all_zero.float().mean()),
            }
    dead = [p for p, v in per_path.items() if v["zero_samples"] > 0.5]
    return {
        "passed": _ok(bool(any_gradient.all())),
        "per_path": per_path,
        "samples_without_any_gradient": int((~any_gradient).sum()),
        "mostly_dead_paths": dead,
        "note": "fraction of exactly-zero input gradients (CE, clean inputs) per path",
    }


def _noise(kind: str, x: torch.Tensor, eps: float, norm: str, rng, ids, stream) -> torch.Tensor:
    if kind == "uniform":
        if norm == "linf":
            delta = (rng.uniform(ids, x.shape[1:], stream, x.device, x.dtype) * 2 - 1) * eps
        else:
            direction = sign_step(rng.normal(ids, x.shape[1:], stream, x.device, x.dtype), "l2")
            delta = direction * eps
    else:
        scale = eps if norm == "linf" else eps / math.sqrt(x[0].numel())
        delta = rng.normal(ids, x.shape[1:], stream, x.device, x.dtype) * scale
    return finalize(x + delta, x, eps, norm)


def random_noise(ctx: _Context) -> dict[str, Any]:
    rng = SampleRandom(ctx.suite.seed, "random-noise")
    rows = ctx.rows
    device = model_device(ctx.model)
    x, y = ctx.images[rows].to(device), ctx.labels[rows].to(device)
    out: dict[str, Any] = {"eps": ctx.eps, "draws": NOISE_DRAWS}
    noise_robust = ctx.correct.clone()
    with eval_mode(ctx.model):
        for kind in ("uniform", "gaussian"):
            robust = ctx.correct.clone()
            for d in range(NOISE_DRAWS):
                noisy = _noise(kind, x, ctx.eps, ctx.suite.norm, rng, rows, f"{kind}{d}")
                robust &= (correct_fraction(ctx.model, noisy, y, rows, ctx.draws) == 1).cpu()
            out[f"{kind}_accuracy"] = float(robust.float().mean()) if robust.numel() else 0.0
            noise_robust &= robust
    attacked = ctx.main_robust()
    noise_only = int((attacked & ~noise_robust).sum())
    out.update(
        passed=_ok(noise_only == 0),
        attack_accuracy=float(attacked.float().mean()) if attacked.numel() else 0.0,
        fooled_only_by_noise=noise_only,
        note="random noise must not fool a sample every attack missed",
    )
    return out


SHARPER = 4.0
MAX_PROBES = 6


def sharper_path(path: str) -> str | None:
    """The surrogate ``path`` made :data:`SHARPER` times sharper (None: no sharpness)."""
    p = parse_path(path)
    if p.kind in ("triangle", "rect", "gaussian", "hart"):
        params = (p.params[0] / SHARPER,)
    elif p.kind in ("sigmoid", "arctan"):
        params = (p.params[0] * SHARPER,)
    elif p.kind == "exp":
        params = (p.params[0] * SHARPER, p.params[1] * SHARPER)
    else:
        return None
    return str(GradientPath(p.kind, params, detach_reset=p.detach_reset, shape=p.shape))


def probe_members(paths: list[str], steps: int, eot: int) -> list[Member]:
    """Members the suite does not have: the detached-reset and the sharper versions of its
    surrogate paths (strongest screened first), and SA-PGD through ASSG."""
    have = set(paths)
    probes: list[str] = []
    for path in paths:
        p = parse_path(path)
        if not p.is_surrogate or p.kind == "assg":
            continue
        detached = str(GradientPath(p.kind, p.params, detach_reset=True, shape=p.shape))
        sharp = sharper_path(detached if p.kind in RESET_KINDS else path)
        for candidate in (detached if p.kind in RESET_KINDS else None, sharp):
            if candidate and candidate not in have and candidate not in probes:
                probes.append(candidate)
    members = [Member("pgd", p, steps=steps, eot=eot) for p in probes[: MAX_PROBES - 1]]
    if not any(parse_path(p).kind == "assg" for p in paths):
        members.append(Member("sapgd", "assg:atan:0.425/dr", steps=max(steps, 20), eot=eot))
    return members


def sharper_or_detached(ctx: _Context) -> dict[str, Any]:
    if not ctx.spiking:
        return {"passed": None, "note": "no spiking neurons: nothing to detach or sharpen"}
    scores = ctx.main.screening
    paths = sorted(ctx.suite.path_list(), key=lambda p: -scores.get(p, -math.inf))
    robust = ctx.main_robust()
    found: dict[str, int] = {}
    probes = probe_members(paths, ctx.suite.steps, ctx.suite.eot)
    for member in probes:
        rows = ctx.rows[robust]
        if rows.numel() == 0:
            break
        out = run_member(
            ctx.model, member, ctx.images, ctx.labels, rows, eps=ctx.eps, norm=ctx.suite.norm,
            seed=ctx.suite.seed, batch_size=ctx.suite.batch_size, draws=ctx.draws,
        )  # fmt: skip
        hit = out.rows[out.fooled]
        if hit.numel():
            found[member.name] = int(hit.numel())
            robust[hit] = False
    missed = sum(found.values())
    return {
        "passed": _ok(missed == 0),
        "eps": ctx.eps,
        "probes": [m.name for m in probes],
        "fooled_only_by_probes": missed,
        "by_probe": found,
        "note": "sharper or detached-reset gradients must not fool a sample the suite missed; "
        "if they do, the worst case is loose: add them to the suite (or use 'strong')",
    }


CHECKS: dict[str, Callable[[_Context], dict[str, Any]]] = {
    "eps_sweep": eps_sweep,
    "steps_sweep": steps_sweep,
    "white_vs_black_box": white_vs_black_box,
    "iterative_vs_single_step": iterative_vs_single_step,
    "zero_gradients": zero_gradients,
    "random_noise": random_noise,
    "sharper_or_detached": sharper_or_detached,
}


def run_diagnostics(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    suite: Suite,
    result: EvaluationResult,
    store: ResultStore,
    names: list[str],
    *,
    draws: int = 1,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run the named diagnostics; each result is stored (and reused on resume) as it ends."""
    ctx = _Context(model, images, labels, suite, result, draws, progress)
    config = {
        "eps": ctx.eps,
        "samples": int(ctx.rows.numel()),
        "queries": suite.diagnostic_queries,
    }
    saved = store.data.setdefault("diagnostics", {})
    out: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        if progress is not None:
            progress(f"diagnostic {name}", i, len(names))
        entry = saved.get(name)
        if entry is None or entry.get("config") != config:
            entry = {"config": config, "result": CHECKS[name](ctx)}
            saved[name] = entry
            store.save()
        out[name] = entry["result"]
    if progress is not None:
        progress("diagnostics", len(names), len(names))
    return out
