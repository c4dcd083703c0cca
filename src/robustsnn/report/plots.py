"""PNG plots of a run's summary: robustness vs ε, accuracy vs T, attack members, firing rates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robustsnn.report.markdown import fooled_counts

STAGE_LABELS = {
    "ann": "robust ANN",
    "snn_converted": "converted SNN",
    "snn_finetuned": "finetuned SNN",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    import io

    from robustsnn.io import atomic_write_bytes

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def plot_robust_vs_eps(summary: dict[str, Any], path: Path, extra: dict[str, Any] | None = None):
    """Accuracy under the ε sweep for every stage (and any compared runs)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    runs = {"": summary, **(extra or {})}
    for run_name, run in runs.items():
        for stage, result in run.get("stages", {}).items():
            sweep = result.get("eps_sweep")
            if not sweep:
                continue
            label = STAGE_LABELS.get(stage, stage) + (f" ({run_name})" if run_name else "")
            ax.plot(sweep["eps"], [100 * a for a in sweep["accuracy"]], marker="o", label=label)
    ax.set_xlabel("ε (L∞, pixel scale [0, 1])")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Robust accuracy vs ε (PGD, strongest path per stage)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return path


def plot_accuracy_vs_time_steps(summary: dict[str, Any], path: Path):
    """Clean accuracy of each SNN stage when run at different T."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for stage, result in summary.get("stages", {}).items():
        curve = result.get("accuracy_vs_time_steps")
        if not curve:
            continue
        steps = sorted(int(t) for t in curve)
        ax.plot(
            steps,
            [100 * curve[str(t)] for t in steps],
            marker="o",
            label=STAGE_LABELS.get(stage, stage),
        )
    ann = summary.get("stages", {}).get("ann")
    if ann:
        ax.axhline(100 * ann["clean_accuracy"], color="grey", linestyle="--", label="robust ANN")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("time steps T")
    ax.set_ylabel("clean accuracy (%)")
    ax.set_title("Accuracy vs T")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return path


def plot_members(summary: dict[str, Any], path: Path):
    """The attack ensemble of every SNN stage: worst-case accuracy after each member.

    Bars follow the order the members ran (each only on samples not fooled before), so each
    bar is the running worst case; the label on a bar is how many samples that member fooled.
    The axis starts below the worst case so that small steps stay visible.
    """
    plt = _pyplot()
    stages = [s for s, r in summary.get("stages", {}).items() if s != "ann" and r.get("robust")]
    width = max(1, len(stages))
    fig, axes = plt.subplots(
        1, width, figsize=(6.5 * width, 4.2), squeeze=False, constrained_layout=True
    )
    for ax, stage in zip(axes[0], stages, strict=False):
        result = summary["stages"][stage]
        robust = result["robust"]
        key = next(iter(robust))
        members = robust[key]["per_member"]
        fooled = fooled_counts(robust[key])
        names = [*members, "worst case"]
        values = [100 * v for v in members.values()] + [100 * robust[key]["worst_case_accuracy"]]
        clean = 100 * result["clean_accuracy"]
        colours = ["tab:blue"] * len(members) + ["tab:red"]
        ax.barh(names, values, color=colours)
        low = max(0.0, min(values) - max(5.0, 0.25 * (clean - min(values))))
        ax.set_xlim(low, min(100.0, max(clean, *values) + 1.0))
        ax.axvline(clean, color="grey", linestyle="--", linewidth=1, label="clean accuracy")
        for y, name in enumerate(members):
            if fooled.get(name) is not None:
                ax.annotate(
                    f"−{fooled[name]}", (values[y], y), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=7,
                )  # fmt: skip
        ax.set_xlabel(f"accuracy (%) after each member at ε = {key} (running worst case)")
        ax.set_title(f"{STAGE_LABELS.get(stage, stage)}: attack members in the order run")
        ax.tick_params(axis="y", labelsize=8)
        ax.invert_yaxis()
        ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)
    plt.close(fig)
    return path


def plot_firing_rates(summary: dict[str, Any], path: Path):
    """Firing rate of every neuron layer of the final SNN at its T."""
    plt = _pyplot()
    energy = summary.get("energy", {})
    snn = energy.get("snn", {})
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for steps, counts in snn.items():
        names = [n["name"] for n in counts["neurons"]]
        ax.plot(
            names, [n["firing_rate"] for n in counts["neurons"]], marker="o", label=f"T = {steps}"
        )
    ax.set_ylabel("firing rate (spikes / neuron / step)")
    ax.set_title("Firing rate per layer (final SNN)")
    ax.tick_params(axis="x", rotation=45)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return path


def render_plots(summary: dict[str, Any], directory: Path) -> dict[str, Path]:
    """All four plots into ``directory``; returns their paths by name."""
    directory.mkdir(parents=True, exist_ok=True)
    return {
        "robust_vs_eps": plot_robust_vs_eps(summary, directory / "robust_vs_eps.png"),
        "accuracy_vs_t": plot_accuracy_vs_time_steps(summary, directory / "accuracy_vs_t.png"),
        "members": plot_members(summary, directory / "members.png"),
        "firing_rates": plot_firing_rates(summary, directory / "firing_rates.png"),
    }
