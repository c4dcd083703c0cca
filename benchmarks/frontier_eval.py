"""How close is each suite to the strongest attacks we know? Per-sample worst cases; writes JSON.

Against one checkpoint of a run (default: the demo's finetuned SNN, ``runs/demo/snn``) on the
first ``--samples`` mnist5k test images, per ε, the worst-case robust accuracy of:

* ``quick_old``: the demo's suite before this benchmark (FGSM and PGD-10 through five paths,
  every reset differentiated);
* ``quick``: today's ``quick`` suite (one sharp ATan path with the reset detached added);
* ``paper``: the primary paper's 95 members, on the first ``--paper-samples`` images and with
  ``--paper-apgd-steps`` / ``--paper-targets`` (the full budget is out of reach on 2 cores);
* ``strong``: the ``strong`` suite run by the evaluator as a user runs it (sharpness tuned on
  the images after the reported ones), with its wall time and gradient evaluations;
* ``sapgd_assg``: SA-PGD through ASSG (A = 0.425, reset detached) alone, 100 iterations;
* ``autoattack``: pyautoattack's APGD-CE and APGD-DLR, 100 iterations each, through
  ``--aa-path`` (the sharpest fixed path with the reset detached), independent code;
* ``extra``: more members the toolkit has (SA-PGD through other frontier and sharp paths,
  APGD-CE and APGD-DLR through ASSG, ATan 8 and the plain triangle), run on the samples of the
  first ``--extra-samples`` that everything else left robust;
* ``union``: the per-sample union of everything above.

Every member's result on a sample is fixed by the sample and the seed (see
:mod:`robustsnn.attacks.members`), so per-member, per-sample results are cached under
``--work-dir`` and shared between the suites: a suite's worst case is computed by running its
members on its own still-robust samples, reusing what other suites already ran. Time per suite
(except ``strong``, timed directly) is estimated from each member's measured seconds per
sample. ``strong`` must be within 1 point of ``union`` (at least 99 % of samples agree).

    .venv/bin/python benchmarks/frontier_eval.py [--run runs/demo] [--stage snn]
        [--eps 0.1,0.15,0.2] [--samples 500] [--paper-samples 100] [--threads 2] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from robustsnn.attacks import Member, evaluate, get_suite, run_member
from robustsnn.attacks.members import clean_correct
from robustsnn.attacks.reference import autoattack_available, reference_apgd
from robustsnn.attacks.victim import correct_fraction, time_steps
from robustsnn.data import load_dataset
from robustsnn.io import atomic_write_json, load_checkpoint

ROOT = Path(__file__).resolve().parent
OLD_QUICK_PATHS = ["triangle:1.0", "rect:1.0", "exp:1.0:1.0", "bptr", "ann"]
EXTRA_SAPGD = [
    "assg:rect/dr",
    "arctan:4.0/dr",
    "arctan:16.0/dr",
    "sigmoid:8.0/dr",
    "triangle:1.0/dr",
    "pdsg/dr",
    "hart:1.0",
    "rga",
]
EXTRA_APGD = ["assg:atan:0.425/dr", "arctan:8.0/dr", "triangle:1.0"]


def cache_key(member: Member) -> str:
    """A member's name and iterations: the same name with other steps is another member."""
    return f"{member.name}@{member.steps}x{member.restarts}"


class Cache:
    """Per member, the samples it ran on, those it fooled and its seconds, kept in a file."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {"header": header, "members": {}}
        if path.exists():
            stored = json.loads(path.read_text())
            if stored.get("header") == header:
                self.data = stored

    def record(self, name: str) -> dict[str, Any]:
        return self.data["members"].setdefault(
            name, {"ran": [], "fooled": [], "seconds": 0.0, "cost": 0}
        )

    def save(self) -> None:
        atomic_write_json(self.path, self.data)


class Bench:
    """One checkpoint at one ε: runs members on demand, through the cache."""

    def __init__(self, model, images, labels, correct, eps, cache: Cache, batch: int) -> None:
        self.model, self.images, self.labels = model, images, labels
        self.correct, self.eps, self.cache, self.batch = correct, eps, cache, batch

    def fooled(self, member: Member, rows: torch.Tensor) -> set[int]:
        """Which of ``rows`` the member fools (running it where not cached)."""
        record = self.cache.record(cache_key(member))
        done = set(record["ran"])
        todo = torch.tensor([int(r) for r in rows.tolist() if int(r) not in done], dtype=torch.long)
        if todo.numel():
            start = time.perf_counter()
            out = run_member(self.model, member, self.images, self.labels, todo, eps=self.eps,
                             batch_size=self.batch)  # fmt: skip
            record["seconds"] += time.perf_counter() - start
            record["ran"] += out.rows.tolist()
            record["fooled"] += out.rows[out.fooled].tolist()
            record["cost"] = member.cost
            self.cache.save()
        wanted = {int(r) for r in rows.tolist()}
        return wanted & set(record["fooled"])

    def worst_case(self, members: list[Member], rows: torch.Tensor) -> dict[str, Any]:
        """Worst case of ``members`` on ``rows`` (clean-correct ones are attacked)."""
        robust = {int(r) for r in rows.tolist() if self.correct[r]}
        seconds = gradients = 0.0
        for m in members:
            if not robust:
                break
            ran = torch.tensor(sorted(robust))
            record = self.cache.record(cache_key(m))
            fooled = self.fooled(m, ran)
            per_sample = record["seconds"] / max(len(record["ran"]), 1)
            seconds += per_sample * ran.numel()
            gradients += m.cost * ran.numel()
            robust -= fooled
        return {
            "robust_accuracy": len(robust) / rows.numel(),
            "robust": sorted(robust),
            "seconds_estimated": round(seconds, 1),
            "gradient_evaluations": int(gradients),
        }

    def reference(self, loss: str, path: str, rows: torch.Tensor, steps: int) -> set[int]:
        """pyautoattack's APGD on every clean-correct sample of ``rows`` (cached)."""
        name = f"pyautoattack:apgd-{loss}/{path}"
        record = self.cache.record(name)
        attacked = torch.tensor([int(r) for r in rows.tolist() if self.correct[r]])
        todo = [int(r) for r in attacked.tolist() if int(r) not in set(record["ran"])]
        for i in range(0, len(todo), self.batch):
            idx = torch.tensor(todo[i : i + self.batch])
            x, y = self.images[idx], self.labels[idx]
            start = time.perf_counter()
            x_adv = reference_apgd(self.model, x, y, self.eps, loss=loss, steps=steps, path=path)
            fooled = correct_fraction(self.model, x_adv, y, idx) < 1
            record["seconds"] += time.perf_counter() - start
            record["ran"] += idx.tolist()
            record["fooled"] += idx[fooled].tolist()
            record["cost"] = steps
            self.cache.save()
        return {int(r) for r in attacked.tolist()} & set(record["fooled"])


def pools(spiking: bool, args) -> dict[str, list[Member]]:
    """The member lists of every suite except ``strong`` (run by the evaluator)."""
    old = get_suite("quick", paths=OLD_QUICK_PATHS, pairs=[]).members(spiking)
    quick = get_suite("quick").members(spiking)
    paper = get_suite("paper", apgd_steps=args.paper_apgd_steps, targets=args.paper_targets)
    alone = [Member("sapgd", "assg:atan:0.425/dr" if spiking else None, steps=100)]
    extra: list[Member] = []
    if spiking:
        extra += [Member("sapgd", path, steps=100) for path in EXTRA_SAPGD]
        extra += [Member("apgd-ce", path, steps=100) for path in EXTRA_APGD]
        extra += [Member("apgd-dlr", "assg:atan:0.425/dr", steps=100)]
    else:
        extra = [Member("apgd-t", None, steps=100), Member("sapgd", None, steps=100)]
    return {
        "quick_old": old,
        "quick": quick,
        "paper": paper.members(spiking),
        "sapgd_assg": alone,
        "extra": extra,
    }


def run_strong(model, test, n: int, eps: float, work: Path, threads: int) -> dict[str, Any]:
    """The strong suite as a user runs it; its own timing and work counts."""
    suite = get_suite("strong", eps=[eps], samples=n, diagnostics=False)
    start = time.perf_counter()
    result = evaluate(model, test.images, test.labels, suite,
                      results_path=work / f"strong_{eps:g}.json")  # fmt: skip
    r = next(iter(result.per_eps.values()))
    return {
        "robust_accuracy": r.robust_accuracy,
        "robust": [i for i, ok in enumerate(r.robust) if ok],
        "seconds": round(time.perf_counter() - start, 1),
        "seconds_stored": round(sum(m.seconds for m in r.members), 1),
        "gradient_evaluations": int(r.work["gradient_budget"]),
        "members": [{"name": m.name, "ran": m.ran, "fooled": m.fooled} for m in r.members],
        "tuning": {k: v["chosen"] for k, v in r.tuning.items()},
        "threads": threads,
    }


def time_strong(model, test, args) -> dict[str, Any]:
    """``strong`` from scratch on ``--time-strong`` images at the first ε: wall time and work,
    with the machine's load (a shared machine slows it)."""
    eps = float(args.eps.split(",")[0])
    suite = get_suite("strong", eps=[eps], samples=args.time_strong, diagnostics=False)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    result = evaluate(model, test.images, test.labels, suite)
    seconds = time.perf_counter() - start
    r = next(iter(result.per_eps.values()))
    return {
        "eps": eps,
        "samples": args.time_strong,
        "threads": args.threads,
        "seconds": round(seconds, 1),
        "robust_accuracy": r.robust_accuracy,
        "gradient_evaluations": int(r.work["gradient_budget"]),
        "members": [{"name": m.name, "ran": m.ran, "fooled": m.fooled, "seconds": m.seconds}
                    for m in r.members],
        "tuning": {k: v["chosen"] for k, v in r.tuning.items()},
        "load_average_before": round(load, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def evaluate_eps(model, test, args, eps: float, work: Path) -> dict[str, Any]:
    n = args.samples
    images, labels = test.images[:n], test.labels[:n]
    spiking = time_steps(model) > 0
    correct = clean_correct(model, images, labels) == 1
    header = {"checkpoint": str(args.checkpoint), "eps": eps, "samples": n, "seed": 0}
    cache = Cache(work / f"cache_{eps:g}.json", header)
    bench = Bench(model, images, labels, correct, eps, cache, args.batch)
    rows = torch.arange(n)
    paper_rows = torch.arange(min(args.paper_samples, n))
    out: dict[str, Any] = {"eps": eps, "clean_accuracy": float(correct.float().mean())}
    print(f"ε={eps:g}: strong", file=sys.stderr, flush=True)
    out["strong"] = run_strong(model, test, n, eps, work, args.threads)
    suites = pools(spiking, args)
    for name in ("sapgd_assg", "quick_old", "quick"):
        print(f"ε={eps:g}: {name}", file=sys.stderr, flush=True)
        out[name] = bench.worst_case(suites[name], rows)
    if args.paper_samples:
        print(f"ε={eps:g}: paper on {paper_rows.numel()}", file=sys.stderr, flush=True)
        out["paper"] = bench.worst_case(suites["paper"], paper_rows)
        out["paper"]["samples"] = int(paper_rows.numel())
    union = {int(r) for r in rows.tolist() if correct[r]} & set(out["strong"]["robust"])
    for name in ("sapgd_assg", "quick_old", "quick"):
        union &= set(out[name]["robust"])
    if "paper" in out:
        union -= set(paper_rows.tolist()) - set(out["paper"]["robust"])
    if autoattack_available() and not args.no_autoattack:
        print(f"ε={eps:g}: pyautoattack", file=sys.stderr, flush=True)
        path = args.aa_path if spiking else None
        robust = {int(r) for r in rows.tolist() if correct[r]}
        for loss in ("ce", "dlr"):
            robust -= bench.reference(loss, path, rows, 100)
        out["autoattack"] = {
            "robust_accuracy": len(robust) / n,
            "robust": sorted(robust),
            "path": path,
            "seconds_measured": round(
                sum(
                    cache.record(f"pyautoattack:apgd-{loss}/{path}")["seconds"]
                    for loss in ("ce", "dlr")
                ),
                1,
            ),
        }
        union &= robust
    probe = {r for r in union if r < args.extra_samples}
    print(f"ε={eps:g}: extra members on {len(probe)} samples", file=sys.stderr, flush=True)
    extra_found: dict[str, int] = {}
    for m in suites["extra"]:
        if not probe:
            break
        hit = bench.fooled(m, torch.tensor(sorted(probe)))
        probe -= hit
        if hit:
            extra_found[m.name] = len(hit)
        union -= hit
    out["extra_members_fooled"] = extra_found
    out["union"] = {"robust_accuracy": len(union) / n, "robust": sorted(union)}
    strong = set(out["strong"]["robust"])
    out["strong_agrees_with_union"] = 1 - len(strong ^ union) / n
    for name in ("quick_old", "quick", "sapgd_assg", "autoattack"):
        if name in out:
            out[name]["only_it_fooled_vs_strong"] = len(strong - set(out[name]["robust"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"))
    parser.add_argument(
        "--stage", default="snn", help="checkpoint in the run: snn, snn_converted, ann"
    )
    parser.add_argument("--eps", default="0.1,0.15,0.2")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--paper-samples", type=int, default=100)
    parser.add_argument("--paper-apgd-steps", type=int, default=10)
    parser.add_argument("--paper-targets", type=int, default=3)
    parser.add_argument(
        "--extra-samples",
        type=int,
        default=100,
        help="the extra members run on the still-robust ones of the first N",
    )
    parser.add_argument("--aa-path", default="arctan:8.0/dr")
    parser.add_argument("--no-autoattack", action="store_true")
    parser.add_argument(
        "--time-strong",
        type=int,
        default=0,
        help="only time strong from scratch on N images at the first ε",
    )
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.checkpoint = args.run / args.stage
    if not args.checkpoint.with_suffix(".safetensors").exists():
        sys.exit(f"no checkpoint {args.checkpoint}.safetensors: run `make demo` first (or --run)")
    out = args.out or ROOT / "results" / f"frontier_eval_{args.stage}.json"
    work = args.work_dir or Path("runs") / "frontier_eval" / args.stage
    work.mkdir(parents=True, exist_ok=True)
    model, meta = load_checkpoint(args.checkpoint)
    model.eval()
    test = load_dataset("mnist5k", split="test")
    results = json.loads(out.read_text()) if out.exists() else {}
    per_eps = results.get("per_eps", {})
    if args.time_strong:
        timing = time_strong(model, test, args)
        results.setdefault("strong_timing", {})[f"{args.time_strong}@{timing['eps']:g}"] = timing
        atomic_write_json(out, results)
        print(json.dumps(timing, indent=1))
        return
    for eps in [float(e) for e in args.eps.split(",")]:
        per_eps[f"{eps:g}"] = evaluate_eps(model, test, args, eps, work)
        results = {
            "benchmark": "frontier_eval",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                        "threads": args.threads, "torch": torch.__version__},
            "checkpoint": str(args.checkpoint),
            "time_steps": time_steps(model),
            "samples": args.samples,
            "paper": {"samples": args.paper_samples, "apgd_steps": args.paper_apgd_steps,
                      "targets": args.paper_targets},
            "per_eps": per_eps,
            "strong_timing": results.get("strong_timing", {}),
        }  # fmt: skip
        atomic_write_json(out, results)
        table(results)


def table(results: dict[str, Any]) -> None:
    rows = ["quick_old", "quick", "paper", "strong", "sapgd_assg", "autoattack", "union"]
    print(f"{'ε':>6} " + " ".join(f"{r:>11}" for r in rows))
    for key, r in results["per_eps"].items():
        cells = [
            f"{100 * r[k]['robust_accuracy']:10.1f}%" if k in r else f"{'-':>11}" for k in rows
        ]
        print(f"{key:>6} " + " ".join(cells))


if __name__ == "__main__":
    main()
