"""Several runs side by side: clean and worst-case robust accuracy, training time, T, spikes.

:func:`compare_runs` reads each run directory's ``summary.json`` (and ``config.yaml`` for the
method), takes the run's final SNN stage (``snn_direct`` of a direct run; ``snn_finetuned``,
else ``snn_converted``, else ``ann`` of a conversion run) and returns one row per run.
Nothing is recomputed; a value a run did not record is None. The worst-case accuracies are
comparable only when the runs used the same suite (``suite``, ``samples`` and the paths are in
each row; :func:`same_suite` says whether they agree).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from robustsnn.errors import NotFoundError, UserError, storage

FINAL_STAGES = ("snn_direct", "snn_finetuned", "snn_converted", "ann")
TRAINING_STAGES = ("ann", "snn_converted", "snn_finetuned", "snn_direct")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.parent.is_dir():
        what = "not a directory" if path.parent.exists() else "no such directory"
        raise NotFoundError(f"{path.parent}: {what}; give run directories (with summary.json)")
    if not path.is_file():
        raise NotFoundError(f"{path.parent}: no summary.json (not a finished run)")
    with storage(path, "read"):
        raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a run summary (a JSON object), found a {type(data).__name__}")
    return data


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a JSON object, found {type(value).__name__}")
    return value


def _method(summary: dict[str, Any], run_dir: Path) -> str:
    """A short label: ``direct:hire``, ``direct:ce (poisson)``, ``conversion+finetune``..."""
    if summary.get("method") == "direct":
        label = f"direct:{summary.get('objective', '?')}"
        if summary.get("init") == "converted":
            label += " (hybrid)"
        if summary.get("encoding", "direct") != "direct":
            label += f" ({summary['encoding']})"
        return label
    config_path = run_dir / "config.yaml"
    finetuned = "snn_finetuned" in summary.get("stages", {})
    label = "conversion+finetune" if finetuned else "conversion"
    if config_path.is_file():
        try:
            config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            config = None  # the label only loses its ANN objective
        ann = config.get("ann") if isinstance(config, dict) else None
        objective = ann.get("objective") if isinstance(ann, dict) else None
        if objective:
            label += f" (ANN {objective})"
    return label


def _training_time(summary: dict[str, Any]) -> float | None:
    if summary.get("training_wall_time_s") is not None:
        return float(summary["training_wall_time_s"])
    wall = summary.get("wall_time_s", {})
    times = [wall.get(stage) for stage in TRAINING_STAGES if stage in wall]
    if not times or any(t is None for t in times):
        return None
    return float(sum(times))


def _spikes(summary: dict[str, Any], stage: dict[str, Any], steps: int | None) -> float | None:
    if summary.get("spikes_per_image") is not None:
        return float(summary["spikes_per_image"])
    if stage.get("spikes_per_image") is not None:
        return float(stage["spikes_per_image"])
    snn = (summary.get("energy") or {}).get("snn", {})
    entry = snn.get(str(steps)) if steps is not None else None
    return float(entry["spikes_per_image"]) if entry else None


def run_row(run_dir: str | Path) -> dict[str, Any]:
    """One run's row (see the module docstring)."""
    run_dir = Path(run_dir)
    summary = _read_json(run_dir / "summary.json")
    stages = _mapping(summary.get("stages", {}), f"{run_dir}/summary.json: 'stages'")
    name = next((s for s in FINAL_STAGES if s in stages), None)
    if name is None:
        raise UserError(f"{run_dir}: summary.json has no evaluated stage")
    stage = _mapping(stages[name], f"{run_dir}/summary.json: stage '{name}'")
    _mapping(stage.get("robust", {}), f"{run_dir}/summary.json: stage '{name}' 'robust'")
    steps = stage.get("time_steps", summary.get("time_steps"))
    attack = stage.get("attack", {})
    return {
        "run": str(run_dir),
        "name": summary.get("name", run_dir.name),
        "method": _method(summary, run_dir),
        "stage": name,
        "clean_accuracy": stage.get("clean_accuracy"),
        "robust": {
            key: value.get("worst_case_accuracy") for key, value in stage.get("robust", {}).items()
        },
        "training_wall_time_s": _training_time(summary),
        "time_steps": steps,
        "spikes_per_image": _spikes(summary, stage, steps),
        "suite": stage.get("suite", attack.get("suite", attack.get("name"))),
        "samples": stage.get("samples", attack.get("samples")),
        "paths": attack.get("paths"),
    }


def same_suite(rows: list[dict[str, Any]]) -> bool:
    """Whether every row was evaluated with the same suite, samples and paths."""
    keys = {(r["suite"], r["samples"], json.dumps(r["paths"])) for r in rows}
    return len(keys) <= 1


def compare_runs(paths: list[str | Path]) -> dict[str, Any]:
    """Rows for every run, the union of their ε keys (sorted) and whether the suites agree."""
    if not paths:
        raise UserError("give at least one run directory")
    rows = [run_row(p) for p in paths]
    eps = sorted({k for r in rows for k in r["robust"]}, key=float)
    return {"rows": rows, "eps": eps, "same_suite": same_suite(rows)}


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def markdown_table(comparison: dict[str, Any]) -> str:
    """The comparison as a Markdown table (accuracies in %)."""
    eps = comparison["eps"]
    header = ["run", "method", "clean %"] + [f"robust % ε={e}" for e in eps]
    header += ["train s", "T", "spikes/img"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in comparison["rows"]:
        cells = [r["name"], r["method"], _pct(r["clean_accuracy"])]
        cells += [_pct(r["robust"].get(e)) for e in eps]
        time_s = r["training_wall_time_s"]
        spikes = r["spikes_per_image"]
        cells += [
            "–" if time_s is None else f"{time_s:.0f}",
            "–" if r["time_steps"] is None else str(r["time_steps"]),
            "–" if spikes is None else f"{spikes:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if not comparison["same_suite"]:
        lines += ["", "Note: the runs were evaluated with different suites, samples or paths."]
    return "\n".join(lines)
