"""The ensemble evaluator: per-sample worst case over every member of a suite, per ε.

Members run one after another, each only on the clean-correct samples that no earlier member
fooled; every adversarial example is checked against its budget and judged on the model's true
forward pass; a sample is robust only if every member fails on it. A member's result on a
sample does not depend on the other samples or on the order (see :mod:`~robustsnn.attacks.
members`), so any order gives the same worst case. The *adaptive* order makes it cheap: FGSM
through every path on a small screening subset ranks the paths, then the members run strongest
path first (within a path, cheapest attack first), then transfer, then Square.

Per member the report gives (think of a member as one row of the table):

* ``ran``: samples it was run on (those still robust when its turn came);
* ``fooled``: how many of those it fooled;
* ``marginal``: the accuracy drop it adds at its position in this order (samples it fooled
  that no earlier member had); order dependent;
* ``cumulative``: the worst-case accuracy after it;
* ``alone``: its accuracy as the only attack, exact when it ran on every clean-correct sample
  (the first member, PDSG members, ``Suite.standalone``), else None with the bounds
  ``alone_bounds = (worst case, accuracy if it fooled only what it fooled here)``.

Results are written incrementally (after every batch, atomically) to ``results_path``; a
killed evaluation resumes where it stopped (finished members are not redone) and gives the
same result as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustsnn.attacks.core import eval_mode, margin_loss
from robustsnn.attacks.members import Member, Outcome, clean_correct, model_device, run_member
from robustsnn.attacks.pgd import fgsm
from robustsnn.attacks.suite import Suite
from robustsnn.attacks.tuning import tunable, tune_sharpness
from robustsnn.attacks.victim import is_stochastic, time_steps, true_logits
from robustsnn.io import atomic_write_json
from robustsnn.snn.network import named_neurons

FORMAT = "robustsnn-evaluation"
VERSION = 1
# Suite keys that do not change any member's result (a resumed run may change them).
_RESUME_FREE = ("name", "eps", "diagnostics", "diagnostic_samples", "diagnostic_queries")

Progress = Callable[[str, int, int], None]


def eps_key(eps: float) -> str:
    """The key of one ε in results (``0.1``, ``0.0313725``)."""
    return f"{eps:.6g}"


# ---- results -------------------------------------------------------------------------------
@dataclass
class MemberReport:
    """One member's row of the table at one ε (see the module docstring)."""

    name: str
    ran: int
    fooled: int
    marginal: float
    cumulative: float
    alone: float | None
    alone_bounds: tuple[float, float]
    seconds: float


@dataclass
class EpsResult:
    """Everything measured at one ε."""

    eps: float
    robust_accuracy: float
    robust_accuracy_mean: float | None
    members: list[MemberReport]
    order: list[str]
    fooled_by: list[str | None] = field(repr=False)
    perturbation: list[float | None] = field(repr=False)
    robust: list[bool] = field(repr=False)
    screening: dict[str, float] = field(default_factory=dict)
    work: dict[str, float] = field(default_factory=dict)
    tuning: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def per_member(self) -> dict[str, MemberReport]:
        """The member rows by name."""
        return {m.name: m for m in self.members}


@dataclass
class EvaluationResult:
    """The suite's results: clean accuracy, one :class:`EpsResult` per ε, diagnostics."""

    suite: Suite
    samples: int
    stochastic: bool
    clean_accuracy: float
    clean_accuracy_mean: float | None
    clean_correct: list[bool] = field(repr=False)
    per_eps: dict[str, EpsResult] = field(default_factory=dict)
    diagnostics: dict[str, dict[str, Any]] = field(default_factory=dict)
    results_path: str | None = None

    def robust_accuracy(self, eps: float) -> float:
        return self.per_eps[eps_key(eps)].robust_accuracy

    def failed_diagnostics(self) -> list[str]:
        """Names of diagnostics that failed (to flag in the report)."""
        return [k for k, d in self.diagnostics.items() if d.get("passed") is False]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (per-sample lists included)."""
        out = asdict(self)
        out["suite"] = self.suite.to_dict()
        return out

    def summary(self) -> dict[str, Any]:
        """Compact JSON-ready summary for reports (no per-sample lists).

        ``robust[eps]`` holds ``worst_case_accuracy``, ``per_member`` (the cumulative
        accuracy after each member, in the order run), ``members`` (every column of the
        member table) and ``work``; ``diagnostics`` maps each check to its result.
        """
        robust = {}
        for key, r in self.per_eps.items():
            robust[key] = {
                "eps": r.eps,
                "worst_case_accuracy": r.robust_accuracy,
                "worst_case_accuracy_mean": r.robust_accuracy_mean,
                "per_member": {m.name: m.cumulative for m in r.members},
                "members": [asdict(m) for m in r.members],
                "order": list(r.order),
                "work": dict(r.work),
                "tuning": {
                    k: {"chosen": v["chosen"], "separate": v.get("separate")}
                    for k, v in r.tuning.items()
                },
            }
        return {
            "suite": self.suite.name,
            "samples": self.samples,
            "stochastic": self.stochastic,
            "clean_accuracy": self.clean_accuracy,
            "clean_accuracy_mean": self.clean_accuracy_mean,
            "robust": robust,
            "diagnostics": dict(self.diagnostics),
            "failed_diagnostics": self.failed_diagnostics(),
        }


# ---- the results file ----------------------------------------------------------------------
def _fingerprint(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of the model's state and mode (T, encoding, Poisson seed, own paths)."""
    state = [t.float() for t in model.state_dict().values() if torch.is_tensor(t)]
    paths = sorted({str(n.gradient_path) for _, n in named_neurons(model)})
    mode = ":".join(
        [
            str(time_steps(model)),
            str(getattr(model, "encoding", "")),
            str(getattr(model, "poisson_seed", "")),
            ",".join(paths),
        ]
    )
    return f"{_fingerprint(*state)}:{hashlib.sha256(mode.encode()).hexdigest()[:8]}"


class ResultStore:
    """Per-sample records, written atomically after every change when given a path."""

    def __init__(self, path: str | Path | None, header: dict[str, Any], resume: bool) -> None:
        self.path = Path(path) if path is not None else None
        self.data: dict[str, Any] = {"header": header, "clean": None, "eps": {}, "diagnostics": {}}
        if self.path is not None and self.path.exists() and resume:
            try:
                stored = json.loads(self.path.read_text())
            except json.JSONDecodeError:
                raise ValueError(
                    f"results file {self.path} is not valid JSON; remove it or pass resume=False"
                ) from None
            if stored.get("header") != header:
                raise ValueError(
                    f"results file {self.path} was written for another model, data or suite; "
                    "pass resume=False (--no-resume) to overwrite it"
                )
            self.data = stored

    def save(self) -> None:
        if self.path is not None:
            atomic_write_json(self.path, self.data)

    def eps_state(self, eps: float) -> dict[str, Any]:
        return self.data["eps"].setdefault(
            eps_key(eps), {"eps": eps, "order": None, "screening": {}, "members": {}}
        )


def _new_record(run_all: bool) -> dict[str, Any]:
    return {
        "done": False,
        "all": run_all,
        "ran": [],
        "fooled": [],
        "norm": [],
        "correct": [],
        "seconds": 0.0,
    }


def _add(record: dict[str, Any], part: Outcome, seconds: float) -> None:
    record["ran"].extend(part.rows.tolist())
    record["fooled"].extend(part.rows[part.fooled].tolist())
    record["norm"].extend(part.norms[part.fooled].tolist())
    record["correct"].extend(part.correct[part.fooled].tolist())
    record["seconds"] += seconds


# ---- screening and order -------------------------------------------------------------------
def screen_paths(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    rows: torch.Tensor,
    paths: list[str],
    *,
    eps: float,
    norm: str,
    seed: int,
) -> dict[str, float]:
    """FGSM through each path on ``rows``; score = mean true-forward margin (higher: stronger).

    The margin ``max_{j≠y} z_j − z_y`` is continuous, so it ranks paths even on a subset
    where few samples flip.
    """
    scores: dict[str, float] = {}
    if rows.numel() == 0:
        return {p: 0.0 for p in paths}
    x, y = images[rows], labels[rows]
    for p in paths:
        x_adv = fgsm(model, x, y, eps, norm=norm, path=p, seed=seed, ids=rows)
        with eval_mode(model):
            scores[p] = float(margin_loss(true_logits(model, x_adv, rows), y).mean())
    return scores


def adaptive_order(members: list[Member], scores: dict[str, float]) -> list[Member]:
    """Strongest path first (by screening score), cheapest attack first within a path, then
    transfer members, then Square; ties keep the suite's order."""
    position = {m.name: i for i, m in enumerate(members)}

    def key(m: Member):
        if m.attack == "square":
            return (2, 0.0, 0, position[m.name])
        if m.source is not None:
            return (1, 0.0, m.cost, position[m.name])
        return (0, -scores.get(str(m.path), 0.0), m.cost, position[m.name])

    return sorted(members, key=key)


# ---- the evaluation ------------------------------------------------------------------------
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    suite: Suite,
    *,
    sources: dict[str, nn.Module] | None = None,
    results_path: str | Path | None = None,
    resume: bool = True,
    progress: Progress | None = None,
) -> EvaluationResult:
    """Run ``suite`` against ``model`` on ``images`` (in [0, 1]) and ``labels``.

    Args:
        sources: models named by ``suite.transfer`` (ANN or SNN objects) for transfer members;
            when the suite names none, every source given becomes a transfer member.
        results_path: JSON file for incremental per-sample results (``eval/SUITE.json``).
        resume: continue from ``results_path`` if it holds a compatible unfinished run.
        progress: called as ``progress(label, done, total)`` after every batch.

    Returns the :class:`EvaluationResult`; it is also written to ``results_path``
    under ``summary``.
    """
    from robustsnn.attacks.diagnostics import run_diagnostics

    sources = dict(sources or {})
    if sources and not suite.transfer:
        suite = suite.with_overrides(transfer=sorted(sources))
    missing = [s for s in suite.transfer if s not in sources]
    if missing:
        raise ValueError(
            f"transfer source(s) {', '.join(missing)} not given; pass sources={{name: model}}"
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    n = labels.shape[0] if suite.samples is None else min(suite.samples, labels.shape[0])
    tuning = _tuning_set(images, labels, n, suite)
    images, labels = images[:n].detach(), labels[:n].detach()
    spiking = time_steps(model) > 0
    members = suite.members(spiking)
    _check_classes(model, images, suite)
    stochastic = is_stochastic(model)
    draws = suite.draws if stochastic else 1
    header = {
        "format": FORMAT,
        "version": VERSION,
        "samples": n,
        "data": _fingerprint(images.float(), labels.long()),
        "model": model_fingerprint(model),
        "sources": {k: model_fingerprint(v) for k, v in sorted(sources.items())},
        "suite": {k: v for k, v in suite.to_dict().items() if k not in _RESUME_FREE},
    }
    if tuning is not None:
        header["tuning_data"] = _fingerprint(tuning[0].float(), tuning[1].long())
    store = ResultStore(results_path, header, resume)
    if store.data["clean"] is None:
        p = clean_correct(model, images, labels, batch_size=suite.batch_size, draws=draws)
        store.data["clean"] = p.tolist()
        store.save()
    clean_p = torch.tensor(store.data["clean"], dtype=torch.float32)
    correct = clean_p == 1
    result = EvaluationResult(
        suite=suite,
        samples=n,
        stochastic=stochastic,
        clean_accuracy=float(correct.float().mean()) if n else 0.0,
        clean_accuracy_mean=float(clean_p.mean()) if stochastic and n else None,
        clean_correct=correct.tolist(),
        results_path=str(results_path) if results_path is not None else None,
    )
    for eps in suite.eps:
        tuned = _tuned_members(model, members, suite, eps, tuning, store, progress)
        result.per_eps[eps_key(eps)] = _evaluate_eps(
            model, images, labels, suite, tuned, eps, correct, clean_p, store, sources,
            draws, stochastic, progress,
        )  # fmt: skip
    names = suite.diagnostic_names()
    if names:
        result.diagnostics = run_diagnostics(
            model, images, labels, suite, result, store, names, draws=draws, progress=progress
        )
    store.data["summary"] = result.to_dict()
    store.save()
    return result


def _tuning_set(images: torch.Tensor, labels: torch.Tensor, n: int, suite: Suite):
    """The samples of the sharpness search: those after the reported ``n`` where the data has
    them (``separate``), else the last ones of the reported set (and the results say so)."""
    if suite.tune_iterations == 0:
        return None
    total = labels.shape[0]
    start = n if total - n >= suite.tune_samples else max(total - suite.tune_samples, 0)
    rows = torch.arange(start, min(start + suite.tune_samples, total))
    return images[rows].detach(), labels[rows].detach(), rows, start >= n


def _tuned_members(
    model: nn.Module,
    members: list[Member],
    suite: Suite,
    eps: float,
    tuning,
    store: ResultStore,
    progress: Progress | None,
) -> list[Member]:
    """``members``, followed by a copy of each member with a tunable path through its tuned
    sharpness at this ε where that differs from the suite's (the choice is stored and reused
    on resume). The suite's own member is kept: a short search on a few samples can pick a
    worse sharpness (it did on the demo SNN), and adding never weakens the worst case."""
    paths = sorted({m.path for m in members if m.source is None and tunable(m.path)})
    if tuning is None or not paths or time_steps(model) == 0:
        return members
    state = store.eps_state(eps)
    chosen = state.setdefault("tuning", {})
    x, y, rows, separate = tuning
    device = model_device(model)
    correct = clean_correct(model, x, y, batch_size=suite.batch_size) == 1
    for i, path in enumerate(paths):
        if path in chosen:
            continue
        if progress is not None:
            progress(f"ε={eps:g} tuning {path}", i, len(paths))
        found = tune_sharpness(
            model, x[correct].to(device), y[correct].to(device), path, eps=eps, norm=suite.norm,
            iterations=suite.tune_iterations, steps=suite.tune_steps, seed=suite.seed,
            ids=rows[correct],
        )  # fmt: skip
        chosen[path] = {**found.to_dict(), "separate": bool(separate)}
        store.save()
    names = {m.name for m in members}
    out = list(members)
    for m in members:
        if m.source is None and m.path in chosen and chosen[m.path]["chosen"] != m.path:
            tuned = replace(m, path=chosen[m.path]["chosen"])
            if tuned.name not in names:
                out.append(tuned)
                names.add(tuned.name)
    return out


def _check_classes(model: nn.Module, images: torch.Tensor, suite: Suite) -> None:
    """Refuse DLR losses on too few classes before any work is done."""
    if images.shape[0] == 0:
        return
    with eval_mode(model):
        classes = true_logits(model, images[:1].to(model_device(model))).shape[1]
    for attack, need in (("apgd-dlr", 3), ("apgd-t", 4)):
        if attack in suite.attacks and classes < need:
            raise ValueError(
                f"{attack} needs at least {need} classes but the model has {classes}; "
                "remove it from the suite's attacks"
            )


def _evaluate_eps(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    suite: Suite,
    members: list[Member],
    eps: float,
    correct: torch.Tensor,
    clean_p: torch.Tensor,
    store: ResultStore,
    sources: dict[str, nn.Module],
    draws: int,
    stochastic: bool,
    progress: Progress | None,
) -> EpsResult:
    n = correct.numel()
    state = store.eps_state(eps)
    by_name = {m.name: m for m in members}
    if state["order"] is None:
        order = members
        if suite.order == "adaptive":
            rows = correct.nonzero().flatten()[: suite.screening_samples]
            paths = sorted({m.path for m in members if m.path is not None and m.source is None})
            scores = screen_paths(
                model, images, labels, rows, paths, eps=eps, norm=suite.norm, seed=suite.seed
            )
            state["screening"] = {"samples": int(rows.numel()), "scores": scores}
            order = adaptive_order(members, scores)
        state["order"] = [m.name for m in order]
        store.save()
    standalone = suite.standalone_names(members)
    robust = correct.clone()
    fooled_by: list[str | None] = [None] * n
    perturbation: list[float | None] = [None] * n
    kept_p = clean_p.clone()
    reports: list[MemberReport] = []
    for name in state["order"]:
        member = by_name[name]
        run_all = name in standalone or member.batch_dependent or bool((robust == correct).all())
        record = state["members"].setdefault(name, _new_record(run_all))
        if not record["done"]:
            done = torch.zeros(n, dtype=torch.bool)
            done[torch.tensor(record["ran"], dtype=torch.long)] = True
            pending = (correct if record["all"] else robust) & ~done
            rows = pending.nonzero().flatten()
            total, finished = int(rows.numel()) + len(record["ran"]), len(record["ran"])
            label = f"ε={eps:g} {name}"
            clock = [time.perf_counter()]

            def on_batch(part: Outcome, record=record, label=label, total=total, clock=clock):
                now = time.perf_counter()
                _add(record, part, now - clock[0])
                clock[0] = now
                store.save()
                if progress is not None:
                    progress(label, len(record["ran"]), total)

            if progress is not None:
                progress(label, finished, total)
            run_member(
                model,
                member,
                images,
                labels,
                rows,
                eps=eps,
                norm=suite.norm,
                seed=suite.seed,
                batch_size=suite.batch_size,
                draws=draws,
                source=sources.get(member.source) if member.source else None,
                on_batch=on_batch,
            )
            record["done"] = True
            store.save()
        hit = torch.tensor(record["fooled"], dtype=torch.long)
        first = 0
        for i, size, p in zip(hit.tolist(), record["norm"], record["correct"], strict=True):
            if robust[i]:
                fooled_by[i], perturbation[i], kept_p[i] = name, size, p
                robust[i] = False
                first += 1
        upper = float((correct.sum() - hit.numel()) / max(n, 1))
        reports.append(
            MemberReport(
                name=name,
                ran=len(record["ran"]),
                fooled=int(hit.numel()),
                marginal=first / max(n, 1),
                cumulative=float(robust.float().mean()) if n else 0.0,
                alone=upper if record["all"] else None,
                alone_bounds=(0.0, upper),
                seconds=round(record["seconds"], 3),
            )
        )
    worst = float(robust.float().mean()) if n else 0.0
    for r in reports:
        r.alone_bounds = (worst, r.alone_bounds[1])
    ran = sum(r.ran for r in reports)
    screened = state["screening"].get("samples", 0) * len(state["screening"].get("scores", {}))
    naive = len(members) * n
    cost = {m.name: m.cost_on(stochastic) for m in members}
    gradients = sum(cost[r.name] * r.ran for r in reports)
    naive_gradients = sum(cost.values()) * n
    tuning = dict(state.get("tuning", {}))
    tuned = sum(len(t["trials"]) * t["samples"] * (suite.tune_steps + 1) for t in tuning.values())
    return EpsResult(
        eps=eps,
        robust_accuracy=worst,
        robust_accuracy_mean=float(kept_p.mean()) if stochastic and n else None,
        members=reports,
        order=list(state["order"]),
        fooled_by=fooled_by,
        perturbation=perturbation,
        robust=robust.tolist(),
        screening=dict(state["screening"].get("scores", {})),
        work={
            "member_samples": ran,
            "naive_member_samples": naive,
            "fraction_of_naive": ran / naive if naive else 0.0,
            "screening_samples": screened,
            "tuning_gradients": tuned,
            "gradient_budget": gradients + screened + tuned,
            "naive_gradient_budget": naive_gradients,
            "gradient_fraction_of_naive": (gradients + screened + tuned) / naive_gradients
            if naive_gradients
            else 0.0,
        },
        tuning=tuning,
    )
