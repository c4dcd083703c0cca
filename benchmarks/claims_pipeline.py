"""Checks the primary paper's claims with the demo pipeline on mnist5k; writes JSON.

Runs the demo config twice: from a robust (PGD-AT) ANN and from a CE-trained ANN, each
followed by the same conversion and robust finetuning, and evaluates every stage with the
per-sample worst case of PGD through the configured gradient paths at the training ε.

    .venv/bin/python benchmarks/claims_pipeline.py [--samples 1000] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from robustsnn.config import load_config
from robustsnn.io import atomic_write_json
from robustsnn.pipeline import run

ROOT = Path(__file__).resolve().parent


def worst(summary: dict, stage: str, eps_key: str) -> float:
    return summary["stages"][stage]["robust"][eps_key]["worst_case_accuracy"]


def finished_or_run(config, run_dir: Path, force: bool) -> dict:
    """The run's summary.json if the run finished (and ``force`` is off), else run it."""
    summary = run_dir / "summary.json"
    if summary.exists() and not force:
        return json.loads(summary.read_text())
    return run(config, run_dir, force=force)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000, help="test samples to attack")
    parser.add_argument("--runs", type=Path, default=Path("runs/claims"))
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "claims_pipeline.json")
    parser.add_argument("--force", action="store_true", help="recompute existing runs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--only",
        choices=("robust", "ce"),
        help="run one of the two pipelines and stop (two processes in parallel; a last call "
        "without it finds both runs finished and writes the JSON)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    overrides = {"evaluation.samples": args.samples}
    robust_cfg = load_config("demo", {**overrides, "name": "claims-robust"})
    ce_cfg = load_config("demo", {**overrides, "name": "claims-ce", "ann.objective": "ce"})
    start = time.perf_counter()
    if args.only is not None:
        config = robust_cfg if args.only == "robust" else ce_cfg
        finished_or_run(config, args.runs / args.only, args.force)
        return 0
    robust = finished_or_run(robust_cfg, args.runs / "robust", args.force)
    ce = finished_or_run(ce_cfg, args.runs / "ce", args.force)
    eps = robust_cfg.ann.eps
    key = f"{eps:.6g}"
    if key not in robust["stages"]["ann"]["robust"]:
        raise SystemExit(f"the demo evaluation does not include the training eps {eps}")

    ann_robust = worst(robust, "ann", key)
    converted = worst(robust, "snn_converted", key)
    finetuned = worst(robust, "snn_finetuned", key)
    ce_finetuned = worst(ce, "snn_finetuned", key)
    ann_clean = robust["stages"]["ann"]["clean_accuracy"]
    snn_clean = robust["stages"]["snn_finetuned"]["clean_accuracy"]
    claims = {
        "finetuned_snn_within_3_points_of_robust_ann": {
            "finetuned_snn": finetuned,
            "robust_ann": ann_robust,
            "pass": finetuned >= ann_robust - 0.03,
        },
        "finetuning_raises_snn_robustness": {
            "converted_snn": converted,
            "finetuned_snn": finetuned,
            "pass": finetuned > converted,
        },
        "ce_pretrained_pipeline_20_points_less_robust": {
            "robust_pipeline": finetuned,
            "ce_pipeline": ce_finetuned,
            "gap": finetuned - ce_finetuned,
            "pass": finetuned - ce_finetuned >= 0.20,
        },
        "finetuned_snn_clean_within_2_points_of_robust_ann": {
            "finetuned_snn": snn_clean,
            "robust_ann": ann_clean,
            "pass": abs(snn_clean - ann_clean) <= 0.02,
        },
    }
    result = {
        "benchmark": "claims_pipeline",
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
        },
        "dataset": "mnist5k",
        "eps": eps,
        "evaluation": {
            "attack": robust_cfg.evaluation.attack,
            "steps": robust_cfg.evaluation.steps,
            "paths": robust_cfg.evaluation.paths,
            "samples": args.samples,
        },
        "time_steps": robust_cfg.conversion.time_steps,
        "finetune": robust_cfg.to_dict()["finetune"],
        "robust_pipeline": robust,
        "ce_pipeline": ce,
        "claims": claims,
        "all_pass": all(c["pass"] for c in claims.values()),
        "wall_time_s": time.perf_counter() - start,
    }
    atomic_write_json(args.out, result)
    for name, claim in claims.items():
        shown = {k: (f"{100 * v:.1f}" if isinstance(v, float) else v) for k, v in claim.items()}
        print(f"{'PASS' if claim['pass'] else 'FAIL'}  {name}: {shown}")
    print(f"wrote {args.out}")
    return 0 if result["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
