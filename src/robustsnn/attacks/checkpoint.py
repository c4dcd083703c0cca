"""Evaluate a saved model with a suite: what ``robustsnn evaluate`` does, as one call.

:func:`evaluate_checkpoint` takes a run directory (its final SNN: ``snn``, else
``snn_converted``) or a checkpoint, loads the test split of the dataset recorded with it, runs a
suite and writes

* the per-sample results (resumable) to ``eval/SUITE.json`` of the run directory, or for a
  checkpoint outside a run to ``eval/STEM.SUITE.json`` next to it (or under ``out``);
* the compact summary, with the settings that produced it, into the run's ``summary.json``
  under ``evaluations.SUITE``, and re-renders the run's report (an "Evaluation: SUITE"
  section); outside a run, a Markdown file with that section next to the results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from robustsnn.attacks.evaluator import EvaluationResult, Progress, evaluate
from robustsnn.attacks.reference import autoattack_available, autoattack_cross_check
from robustsnn.attacks.suite import Suite, load_suite
from robustsnn.errors import NotFoundError, UserError
from robustsnn.io import (
    RunDir,
    atomic_write_json,
    atomic_write_text,
    checkpoint_files,
    load_checkpoint,
)

CROSS_CHECKS = ("autoattack",)
_RUN_MODELS = ("snn", "snn_converted")


@dataclass
class CheckpointEvaluation:
    """What :func:`evaluate_checkpoint` produced and where it wrote it."""

    result: EvaluationResult
    summary: dict[str, Any]
    results_path: Path
    report_path: Path | None
    run_dir: Path | None


def _resolve(target: Path) -> tuple[Path, RunDir | None]:
    """(checkpoint stem, run directory or None) for a run directory or a checkpoint."""
    if target.is_dir():
        rd = RunDir(target)
        for name in _RUN_MODELS:
            if checkpoint_files(rd.checkpoint(name))[1].exists():
                return rd.checkpoint(name), rd
        raise NotFoundError(f"{target}: no SNN checkpoint (snn or snn_converted) in it")
    tensors, meta = checkpoint_files(target)
    if not tensors.exists() or not meta.exists():
        raise NotFoundError(f"no checkpoint at {target} (need {tensors.name} and {meta.name})")
    stem = tensors.with_suffix("")
    parent = RunDir(stem.parent)
    final = stem.name in _RUN_MODELS and _resolve(parent.path)[0] == stem
    if final and parent.summary_path.exists():
        return stem, parent  # the run's final SNN: the same as naming the run
    return stem, None


def _run_config(rd: RunDir | None):
    if rd is None or not rd.config_path.exists():
        return None
    from robustsnn.config import config_from_dict

    return config_from_dict(yaml.safe_load(rd.config_path.read_text()))


def _suite(
    suite: str | Path | Suite, eps: list[float] | None, samples: int | None, config
) -> Suite:
    base = suite if isinstance(suite, Suite) else load_suite(suite)
    if eps is None and config is not None:
        eps = list(config.evaluation.eps)
    return base.with_overrides(eps=eps, samples=samples)


def _test_split(meta: dict[str, Any], config, dataset: str | None, root: str | None):
    from robustsnn.data import load_dataset

    options: dict[str, Any] = {}
    if config is not None:
        dataset = dataset or meta.get("dataset") or config.data.dataset
        root = root or config.data.root
        options = {"size": config.data.size, "time_steps": config.data.time_steps}
    dataset = dataset or meta.get("dataset")
    if dataset is None:
        raise UserError("the checkpoint does not record its dataset; pass dataset= (--dataset)")
    options = {k: v for k, v in options.items() if v is not None}
    return dataset, load_dataset(dataset, split="test", root=root, **options)


def _settings(suite: Suite, stem: Path, dataset: str, meta: dict[str, Any], results: str):
    return {
        "checkpoint": str(stem),
        "dataset": dataset,
        "time_steps": int(meta.get("time_steps") or 0),
        "eps": list(suite.eps),
        "norm": suite.norm,
        "attacks": list(suite.attacks),
        "pairs": list(suite.pairs),
        "steps": suite.steps,
        "apgd_steps": suite.apgd_steps,
        "restarts": suite.restarts,
        "targets": suite.targets,
        "paths": suite.path_list(),
        "order": suite.order,
        "samples": suite.samples,
        "seed": suite.seed,
        "results_file": results,
    }


def _cross_check(model, images, labels, result: EvaluationResult) -> dict[str, Any]:
    """pyautoattack's standard AutoAttack at every ε, through the path that screened
    strongest (the model's own gradient for an ANN)."""
    out = {}
    for key, r in result.per_eps.items():
        path = max(r.screening, key=r.screening.get) if r.screening else None
        check = autoattack_cross_check(
            model,
            images[: result.samples],
            labels[: result.samples],
            eps=r.eps,
            norm=result.suite.norm,
            path=path,
            batch_size=result.suite.batch_size,
            seed=result.suite.seed,
        )
        out[key] = {
            "path": check.path,
            "attacks": check.attacks,
            "robust_accuracy": check.robust_accuracy,
            "suite_worst_case": r.robust_accuracy,
        }
    return out


def evaluate_checkpoint(
    target: str | Path,
    suite: str | Path | Suite = "strong",
    *,
    eps: list[float] | None = None,
    samples: int | None = None,
    out: str | Path | None = None,
    dataset: str | None = None,
    root: str | None = None,
    resume: bool = True,
    cross_check: str | None = None,
    progress: Progress | None = None,
) -> CheckpointEvaluation:
    """Run ``suite`` (a built-in name, a YAML file or a :class:`Suite`) against a run's final
    SNN or a checkpoint, write the results and the report section; see the module docstring.

    Args:
        eps: budgets replacing the suite's (default: the run config's ``evaluation.eps`` for a
            run, else the suite's).
        samples: evaluate the first N test samples (default: the suite's).
        out: directory for ``eval/`` (and the Markdown of a checkpoint outside a run).
        dataset, root: override the dataset recorded with the checkpoint and its location.
        resume: continue a compatible unfinished ``eval/SUITE.json``.
        cross_check: ``"autoattack"`` also runs pyautoattack's standard AutoAttack.
    """
    if cross_check is not None and cross_check not in CROSS_CHECKS:
        raise UserError(f"unknown cross-check '{cross_check}'; accepted: {', '.join(CROSS_CHECKS)}")
    if cross_check == "autoattack" and not autoattack_available():
        raise UserError(
            "--cross-check autoattack needs the optional package pyautoattack: "
            "pip install --no-deps pyautoattack"
        )
    stem, rd = _resolve(Path(target))
    config = _run_config(rd)
    resolved = _suite(suite, eps, samples, config)
    model, meta = load_checkpoint(stem)
    model.eval()
    dataset_name, test = _test_split(meta, config, dataset, root)
    base = Path(out) if out is not None else (rd.path if rd is not None else stem.parent)
    if rd is not None and out is None:
        results_path = rd.eval_dir / f"{resolved.name}.json"
    else:
        results_path = base / "eval" / f"{stem.name}.{resolved.name}.json"
    result = evaluate(
        model, test.images, test.labels, resolved, results_path=results_path, resume=resume,
        progress=progress,
    )  # fmt: skip
    summary = result.summary()
    summary["settings"] = _settings(resolved, stem, dataset_name, meta, str(results_path))
    if cross_check == "autoattack":
        summary["cross_check"] = _cross_check(model, test.images, test.labels, result)
    # -o elsewhere: the run itself is left untouched (its summary and report too)
    report_path = _write_report(summary, resolved.name, rd if out is None else None, results_path)
    return CheckpointEvaluation(result, summary, results_path, report_path, rd.path if rd else None)


def _write_report(
    summary: dict[str, Any], name: str, rd: RunDir | None, results_path: Path
) -> Path | None:
    """Store the summary in the run's ``summary.json`` and re-render its report; outside a
    run (or for a run without a summary) write the section as Markdown next to the results."""
    from robustsnn.report import evaluation_section

    if rd is not None and rd.summary_path.exists():
        from robustsnn.pipeline import write_report

        run_summary = json.loads(rd.summary_path.read_text())
        run_summary.setdefault("evaluations", {})[name] = summary
        atomic_write_json(rd.summary_path, run_summary)
        return write_report(rd.path)
    path = results_path.with_suffix(".md")
    atomic_write_text(path, evaluation_section(name, summary) + "\n")
    return path
