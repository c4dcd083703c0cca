"""Work saved by the worst-case evaluator's adaptive member order; writes JSON.

PGD-10 through the 19 ``paper19`` gradient paths against the demo SNN (T = 8) on mnist5k test
images, once in the suite's fixed order and once in the adaptive order (FGSM screening ranks
the paths, strongest first). Both orders run each member only on the samples no earlier member
fooled, so both save work; the naive cost is every member on every sample. Reported per ε:

* ``member_samples`` / ``fraction_of_naive``: member × sample runs of each order, over
  19 × samples (the screening's FGSM runs are counted separately in ``screening_samples``);
* ``gradient_fraction_of_naive``: the same in gradient evaluations, screening included;
* wall time of each order, and the worst-case accuracy.

Work can only be saved on samples that get fooled, so the saving depends on ε: ε = 0.3 (the
standard MNIST budget, low worst case) is the headline, the demo's ε = 0.1 (high worst case)
is recorded as well. The two orders must give identical per-sample results (asserted).

    .venv/bin/python benchmarks/eval_speed.py [--checkpoint runs/demo/snn]
        [--eps 0.3:1000,0.1:50] [--threads 2] [--out PATH]

Target (issue "adaptive attack suite"): adaptive order ≤ 30 % of the naive work at ε = 0.3.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from robustsnn.attacks import EvaluationResult, Suite, eps_key, evaluate
from robustsnn.data import load_dataset
from robustsnn.io import atomic_write_json, load_checkpoint

ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "results" / "eval_speed.json"
DEMO_SNN = Path("runs/demo/snn")
FALLBACK_SNN = Path("runs/claims/robust/snn")
TARGET_FRACTION = 0.30
ORDERS = ("fixed", "adaptive")


def default_checkpoint() -> tuple[Path, str]:
    """The demo's finetuned SNN, or the claims run's SNN of the same config when it is absent."""
    if DEMO_SNN.with_suffix(".safetensors").exists():
        return DEMO_SNN, "the demo's finetuned SNN (runs/demo)"
    return FALLBACK_SNN, (
        "runs/demo absent: the claims benchmark's robust run, the demo config end to end "
        "(runs/claims/robust)"
    )


def parse_budgets(text: str) -> list[tuple[float, int]]:
    """``0.3:1000,0.1:50`` -> [(0.3, 1000), (0.1, 50)] (ε and number of test samples)."""
    out = []
    for item in text.split(","):
        eps, _, samples = item.partition(":")
        out.append((float(eps), int(samples or 1000)))
    return out


def pgd_suite(eps: float, samples: int, order: str) -> Suite:
    """PGD-10 over paper19, no diagnostics: only the ensemble's own cost is measured."""
    return Suite(
        name=f"eval_speed_{order}",
        attacks=["pgd"],
        paths="paper19",
        eps=[eps],
        steps=10,
        samples=samples,
        batch_size=250,
        order=order,
        diagnostics=False,
    )


def per_sample(result: EvaluationResult, eps: float) -> list[bool]:
    return list(result.per_eps[eps_key(eps)].robust)


def measure(model, images, labels, eps: float, samples: int) -> dict[str, Any]:
    """Both orders at one ε; asserts identical per-sample worst cases."""
    row: dict[str, Any] = {"eps": eps, "samples": samples}
    robust: dict[str, list[bool]] = {}
    for order in ORDERS:
        start = time.perf_counter()
        result = evaluate(model, images, labels, pgd_suite(eps, samples, order))
        seconds = time.perf_counter() - start
        r = result.per_eps[eps_key(eps)]
        robust[order] = per_sample(result, eps)
        row["clean_accuracy"] = result.clean_accuracy
        row[order] = {
            "wall_time_s": round(seconds, 1),
            "worst_case_accuracy": r.robust_accuracy,
            "first_members": r.order[:3],
            **r.work,
        }
        print(f"ε={eps} {order}: {row[order]}", file=sys.stderr, flush=True)
    assert robust["fixed"] == robust["adaptive"], "the two orders disagree on some sample"
    row["identical_per_sample"] = True
    row["adaptive_meets_target"] = row["adaptive"]["fraction_of_naive"] <= TARGET_FRACTION
    return row


def main() -> int:
    default_ckpt, default_note = default_checkpoint()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="an SNN checkpoint stem")
    parser.add_argument("--eps", default="0.3:1000,0.1:50", help="EPS:SAMPLES,...")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or default_ckpt
    note = default_note if args.checkpoint is None else "given on the command line"
    model, meta = load_checkpoint(checkpoint)
    model.eval()
    dataset = meta.get("dataset") or "mnist5k"
    test = load_dataset(dataset, split="test")
    rows: list[dict[str, Any]] = []
    for eps, samples in parse_budgets(args.eps):
        rows.append(measure(model, test.images, test.labels, eps, samples))
        write(args, checkpoint, note, dataset, meta, rows)  # after every ε: partial runs count
    return 0


def write(args, checkpoint, note, dataset, meta, rows) -> None:
    """The JSON so far."""
    result = {
        "benchmark": "eval_speed",
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": str(checkpoint),
        "checkpoint_note": note,
        "dataset": dataset,
        "time_steps": int(meta.get("time_steps") or 0),
        "attack": "pgd-10 (step 2.5·ε/10, random start), L∞, paper19 paths",
        "threads": args.threads,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0],
            "torch": torch.__version__,
        },
        "target_fraction_of_naive": TARGET_FRACTION,
        "results": rows,
    }
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
