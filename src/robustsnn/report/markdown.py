"""Render a run's ``summary.json`` as Markdown: every number with the settings that produced it."""

from __future__ import annotations

from typing import Any

_STAGE_TITLES = {
    "ann": "robust ANN (T = 0)",
    "snn_converted": "converted SNN",
    "snn_finetuned": "finetuned SNN",
}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def summary_table(summary: dict[str, Any]) -> str:
    """One row per stage: T, clean accuracy, worst-case robust accuracy per ε, wall time."""
    stages = summary.get("stages", {})
    eps_keys: list[str] = []
    for result in stages.values():
        for key in result.get("robust", {}):
            if key not in eps_keys:
                eps_keys.append(key)
    head = ["stage", "T", "clean %"] + [f"robust % (ε={k})" for k in eps_keys] + ["train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    times = summary.get("wall_time_s", {})
    for stage, result in stages.items():
        robust = result.get("robust", {})
        cells = [
            _STAGE_TITLES.get(stage, stage),
            str(result.get("time_steps", "")),
            _pct(result.get("clean_accuracy")),
        ]
        cells += [_pct(robust.get(k, {}).get("worst_case_accuracy")) for k in eps_keys]
        wall = times.get(stage)
        cells.append("–" if wall is None else f"{wall:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def member_table(result: dict[str, Any]) -> str:
    """Per-member accuracy of one stage's attack ensemble, per ε."""
    robust = result.get("robust", {})
    if not robust:
        return ""
    eps_keys = list(robust)
    members: list[str] = []
    for r in robust.values():
        members += [m for m in r.get("per_member", {}) if m not in members]
    head = ["member"] + [f"ε={k}" for k in eps_keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in members:
        cells = [m] + [_pct(robust[k].get("per_member", {}).get(m)) for k in eps_keys]
        lines.append("| " + " | ".join(cells) + " |")
    worst = ["**worst case**"] + [_pct(robust[k].get("worst_case_accuracy")) for k in eps_keys]
    lines.append("| " + " | ".join(worst) + " |")
    return "\n".join(lines)


def render_report(summary: dict[str, Any], config: Any = None) -> str:
    """The run's ``report.md``."""
    parts = [f"# Run `{summary.get('name', '')}`", ""]
    parts.append(
        f"Dataset `{summary.get('dataset')}`, model `{summary.get('model')}`, "
        f"SNN time steps T = {summary.get('time_steps')}."
    )
    if config is not None:
        a, f, e = config.ann, config.finetune, config.evaluation
        parts.append(
            f"ANN: `{a.objective}` at ε = {a.eps:.4g} ({a.steps} steps), {a.epochs} epochs. "
            f"Conversion: `{config.conversion.recipe}`. "
            + (
                f"Finetuning: {f.loss.upper()} (β = {f.beta}) with `{f.inner}` at ε = {f.eps:.4g} "
                f"through `{f.surrogate}`, {f.epochs} epochs."
                if f.enabled
                else "No finetuning."
            )
        )
        parts.append(
            f"Evaluation: L∞ `{e.attack}` with {e.steps} steps, random start, per-sample worst "
            f"case over the gradient paths {', '.join(f'`{p}`' for p in e.paths)} (the ANN is "
            f"attacked with its exact gradient); success judged on the true spiking forward; "
            f"{e.samples or 'all'} test samples."
        )
    parts += ["", "## Summary", "", summary_table(summary), ""]
    for stage, result in summary.get("stages", {}).items():
        table = member_table(result)
        if table:
            parts += [f"## Attack members: {_STAGE_TITLES.get(stage, stage)}", "", table, ""]
    return "\n".join(parts)
