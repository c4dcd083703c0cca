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


def fooled_counts(robust_at_eps: dict[str, Any]) -> dict[str, int | None]:
    """How many samples each member fooled at one ε (from the summary's member rows)."""
    return {row["name"]: row.get("fooled") for row in robust_at_eps.get("members", [])}


def member_table(result: dict[str, Any]) -> str:
    """The attack ensemble of one stage, per ε: accuracy after each member, in the order run.

    Members run only on the samples no earlier member fooled, so a row is the worst case over
    that member and every member above it; ``fooled`` is how many samples it fooled there.
    """
    robust = result.get("robust", {})
    if not robust:
        return ""
    eps_keys = list(robust)
    members: list[str] = []
    for r in robust.values():
        members += [m for m in r.get("per_member", {}) if m not in members]
    fooled = {k: fooled_counts(robust[k]) for k in eps_keys}
    head = ["member (in the order run)"]
    for k in eps_keys:
        head += [f"ε={k}: accuracy after it %", "fooled"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in members:
        cells = [m]
        for k in eps_keys:
            count = fooled[k].get(m)
            cells += [
                _pct(robust[k].get("per_member", {}).get(m)),
                "–" if count is None else str(count),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    worst = ["**worst case**"]
    for k in eps_keys:
        worst += [_pct(robust[k].get("worst_case_accuracy")), ""]
    lines.append("| " + " | ".join(worst) + " |")
    return "\n".join(lines)


def energy_table(energy: dict[str, Any]) -> str:
    """Operations and energy per image of the ANN and of the SNN at each T."""
    lines = [
        "| network | T | MAC | AC (synaptic ops) | spikes / image | energy (µJ) | SNN / ANN |",
        "|---|---|---|---|---|---|---|",
        f"| ANN | 0 | {energy['ann']['mac']:.3g} | 0 | – | "
        f"{energy['ann']['energy_pj'] / 1e6:.3g} | – |",
    ]
    for steps, snn in energy.get("snn", {}).items():
        ratio = snn.get("energy_ratio_to_ann")
        lines.append(
            f"| SNN | {steps} | {snn['mac']:.3g} | {snn['ac']:.3g} | "
            f"{snn['spikes_per_image']:.4g} | {snn['energy_pj'] / 1e6:.3g} | "
            f"{'–' if ratio is None else f'{ratio:.3f}'} |"
        )
    return "\n".join(lines)


def sweep_table(summary: dict[str, Any]) -> str:
    """Accuracy of every stage along the ε sweep."""
    rows = []
    eps: list[float] = []
    for stage, result in summary.get("stages", {}).items():
        sweep = result.get("eps_sweep")
        if sweep:
            eps = sweep["eps"]
            path = sweep.get("path", "")
            cells = [f"{_STAGE_TITLES.get(stage, stage)} (`{path}`)"]
            rows.append(cells + [_pct(a) for a in sweep["accuracy"]])
    if not rows:
        return ""
    head = ["stage (path)"] + [f"ε={e:.3g}" for e in eps]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def time_steps_table(summary: dict[str, Any]) -> str:
    """Clean accuracy of each SNN stage at several T."""
    rows, steps = [], []
    for stage, result in summary.get("stages", {}).items():
        curve = result.get("accuracy_vs_time_steps")
        if curve:
            steps = sorted(curve, key=int)
            rows.append([_STAGE_TITLES.get(stage, stage)] + [_pct(curve[t]) for t in steps])
    if not rows:
        return ""
    head = ["stage"] + [f"T={t}" for t in steps]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_report(summary: dict[str, Any], config: Any = None, plots: dict | None = None) -> str:
    """The run's ``report.md`` (``plots`` maps plot names to paths relative to the report)."""
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
        parts.append(_evaluation_sentence(summary, e))
    parts += ["", "## Summary", "", summary_table(summary), ""]
    for stage, result in summary.get("stages", {}).items():
        table = member_table(result)
        if table:
            parts += [f"## Attack members: {_STAGE_TITLES.get(stage, stage)}", "", table, ""]
        if result.get("diagnostics"):
            parts += [
                f"## Diagnostics: {_STAGE_TITLES.get(stage, stage)}",
                "",
                diagnostics_table(result["diagnostics"]),
                "",
            ]
    plots = plots or {}
    sweep = sweep_table(summary)
    if sweep:
        parts += [
            "## Robust accuracy vs ε",
            "",
            "PGD with the evaluation's steps through each stage's strongest path at the first "
            "evaluation ε, on the first "
            f"{_first_sweep(summary).get('samples', '?')} test samples. Accuracy must reach 0 at "
            "large ε; if it does not, suspect gradient masking.",
            "",
            sweep,
            "",
        ]
        if "robust_vs_eps" in plots:
            parts += [f"![robust accuracy vs eps]({plots['robust_vs_eps']})", ""]
    steps_table = time_steps_table(summary)
    if steps_table:
        parts += [
            "## Accuracy vs T",
            "",
            "Clean accuracy when the SNN runs at other T.",
            "",
            steps_table,
            "",
        ]
        if "accuracy_vs_t" in plots:
            parts += [f"![accuracy vs T]({plots['accuracy_vs_t']})", ""]
    if "members" in plots:
        parts += ["## Attack members", "", f"![attack members]({plots['members']})", ""]
    energy = summary.get("energy")
    if energy:
        parts += [
            "## Energy",
            "",
            f"Per image, averaged over {energy['samples']} test images; E_MAC = "
            f"{energy['e_mac_pj']} pJ, E_AC = {energy['e_ac_pj']} pJ ({energy['preset']}). "
            "A layer fed by spikes costs one accumulate per synaptic event (average pooling "
            "folded into the next layer's synapses); a layer fed by analog values costs dense "
            f"MACs. {energy['caveat']}",
            "",
            energy_table(energy),
            "",
        ]
        if "firing_rates" in plots:
            parts += [f"![firing rates]({plots['firing_rates']})", ""]
    for name, evaluation in summary.get("evaluations", {}).items():
        parts += [evaluation_section(name, evaluation), ""]
    return "\n".join(parts)


def _evaluation_sentence(summary: dict[str, Any], e: Any) -> str:
    """What the stage evaluations ran: the suite, its attacks, steps, paths and samples."""
    attack = next(
        (r["attack"] for r in reversed(summary.get("stages", {}).values()) if "attack" in r), {}
    )
    paths = attack.get("paths") or e.paths or []
    attacks = ", ".join(attack.get("attacks", [e.attack]))
    return (
        f"Evaluation: suite `{attack.get('suite', e.suite)}` ({attacks}; PGD "
        f"{attack.get('steps', e.steps)} steps, random start; {attack.get('norm', 'linf')}), "
        f"per-sample worst case over the gradient paths {', '.join(f'`{p}`' for p in paths)} "
        "(the ANN is attacked with its exact gradient); success judged on the true spiking "
        f"forward; {attack.get('samples', e.samples or 'all')} test samples. Obfuscation "
        "diagnostics run on the final SNN."
    )


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)


def diagnostics_table(diagnostics: dict[str, Any]) -> str:
    """One row per obfuscation check: passed / FLAGGED / not run, and the numbers behind it."""
    lines = ["| check | result | numbers |", "|---|---|---|"]
    for name, d in diagnostics.items():
        passed = d.get("passed")
        verdict = "passed" if passed else ("not run" if passed is None else "**FLAGGED**")
        numbers = "; ".join(
            f"{k} {_short(v)}"
            for k, v in d.items()
            if k not in ("passed", "note") and not isinstance(v, dict)
        )
        lines.append(f"| {name} | {verdict} | {numbers} |")
    return "\n".join(lines)


def evaluation_section(name: str, evaluation: dict[str, Any]) -> str:
    """The "Evaluation: SUITE" section of ``robustsnn evaluate``: settings, worst case per ε,
    every member's row per ε, diagnostics (flags first) and the AutoAttack cross-check."""
    s = evaluation.get("settings", {})
    robust = evaluation.get("robust", {})
    parts = [f"## Evaluation: {name}", ""]
    parts.append(
        f"Checkpoint `{s.get('checkpoint', '?')}` (T = {s.get('time_steps', '?')}) on "
        f"{evaluation.get('samples')} `{s.get('dataset', '?')}` test samples; "
        f"{s.get('norm', 'linf')} ε = {', '.join(f'{e:.4g}' for e in s.get('eps', []))}; "
        f"attacks {', '.join(s.get('attacks', []))} (PGD {s.get('steps')} steps, APGD "
        f"{s.get('apgd_steps')} iterations, {s.get('restarts')} restart(s), APGD-T "
        f"{s.get('targets')} targets); {len(s.get('paths', []))} gradient paths "
        f"({', '.join(f'`{p}`' for p in s.get('paths', []))}); {s.get('order')} order. "
        f"Per-sample results: `{s.get('results_file', '?')}`."
    )
    if s.get("pairs"):
        parts[-1] += f" Single members: {', '.join(f'`{p}`' for p in s['pairs'])}."
    for key, r in robust.items():
        tuned = r.get("tuning") or {}
        if tuned:
            where = "separate" if all(t.get("separate") for t in tuned.values()) else "reported"
            choices = ", ".join(f"`{k}` → `{t['chosen']}`" for k, t in tuned.items())
            parts += ["", f"Sharpness tuned at ε = {key} (on {where} samples): {choices}."]
    failed = evaluation.get("failed_diagnostics", [])
    if failed:
        parts += ["", f"**Diagnostics flagged: {', '.join(failed)}** (see below)."]
    head = "| ε | clean % | worst case % | members | member × sample runs (of naive) |"
    parts += ["", head, "|---|---|---|---|---|"]
    for key, r in robust.items():
        work = r.get("work", {})
        parts.append(
            f"| {key} | {_pct(evaluation.get('clean_accuracy'))} | "
            f"{_pct(r.get('worst_case_accuracy'))} | {len(r.get('members', []))} | "
            f"{work.get('member_samples', '–')} ({100 * work.get('fraction_of_naive', 0):.0f} %) |"
        )
    for key, r in robust.items():
        parts += [
            "",
            f"Members at ε = {key}, in the order run (ran: samples still robust at its turn; "
            "marginal: accuracy it removed; alone: exact only where it ran on every sample):",
            "",
            "| member | ran | fooled | marginal (pts) | cumulative % | alone % |",
            "|---|---|---|---|---|---|",
        ]
        for m in r.get("members", []):
            parts.append(
                f"| `{m['name']}` | {m['ran']} | {m['fooled']} | {100 * m['marginal']:.1f} | "
                f"{_pct(m['cumulative'])} | {_pct(m.get('alone'))} |"
            )
    if evaluation.get("diagnostics"):
        parts += ["", "Diagnostics:", "", diagnostics_table(evaluation["diagnostics"])]
    cross = evaluation.get("cross_check")
    if cross:
        parts += ["", "AutoAttack cross-check (pyautoattack, judged on the true forward):", ""]
        parts += ["| ε | path | attacks | robust % |", "|---|---|---|---|"]
        for key, c in cross.items():
            parts.append(
                f"| {key} | `{c.get('path')}` | {', '.join(c.get('attacks', []))} | "
                f"{_pct(c.get('robust_accuracy'))} |"
            )
    return "\n".join(parts)


def _first_sweep(summary: dict[str, Any]) -> dict[str, Any]:
    for result in summary.get("stages", {}).values():
        if result.get("eps_sweep"):
            return result["eps_sweep"]
    return {}
