"""The ``robustsnn`` command: a thin layer that parses, calls the library and renders."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="robustsnn",
    help="Adversarially robust, low-latency SNNs from PyTorch ANNs, evaluated honestly.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


class _Progress:
    """Training progress as one tqdm bar per epoch (the library only calls back)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar = None

    def on_batch(self, epoch: int, index: int, total: int, metrics: dict[str, float]) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=f"{self.label} epoch {epoch + 1}", leave=False)
        self.bar.update(1)
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items()}, refresh=False)

    def on_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        shown = ", ".join(
            f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float) and k != "lr"
        )
        err_console.print(f"[dim]{self.label} epoch {epoch + 1}: {shown}[/dim]")


def _version(value: bool) -> None:
    if value:
        from robustsnn import __version__

        console.print(f"robustsnn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Adversarially robust, low-latency SNNs from PyTorch ANNs, evaluated honestly."""


@app.command()
def models() -> None:
    """List the model zoo with parameter counts (default arguments)."""
    from robustsnn.models import count_parameters, create_model, list_models, model_description

    table = Table(title="robustsnn models")
    for column in ("name", "parameters", "input", "description"):
        table.add_column(column)
    for name in list_models():
        model = create_model(name)
        params = count_parameters(model)
        table.add_row(
            name,
            f"{params:,} ({params / 1e6:.2f} M)",
            "x".join(map(str, model.input_shape)),
            model_description(name),
        )
    console.print(table)


@app.command()
def datasets() -> None:
    """List the datasets: embedded ones and readers for copies on disk."""
    from robustsnn.data import dataset_info, list_datasets

    table = Table(title="robustsnn datasets")
    for column in ("name", "input", "classes", "source", "description"):
        table.add_column(column)
    for name in list_datasets():
        info = dataset_info(name)
        table.add_row(
            name,
            "x".join(map(str, info.input_shape)),
            str(info.num_classes or "any"),
            "embedded" if info.embedded else "on disk ($ROBUSTSNN_DATA or ./data)",
            info.description,
        )
    console.print(table)


@app.command()
def info(
    checkpoint: Path = typer.Argument(..., help="A .safetensors checkpoint or its stem."),
) -> None:
    """Show what a checkpoint holds: architecture, T, neurons and metrics."""
    from robustsnn.io import load_checkpoint
    from robustsnn.models import count_parameters
    from robustsnn.snn import named_neurons

    model, meta = load_checkpoint(checkpoint)
    arch = meta["architecture"]
    console.print(f"[bold]{checkpoint}[/bold]")
    console.print(f"architecture: {arch['name']} {arch.get('kwargs', {})}")
    console.print(f"parameters:   {count_parameters(model):,}")
    console.print(
        f"time steps:   {meta['time_steps']} ({'ANN' if meta['time_steps'] == 0 else 'SNN'})"
    )
    console.print(f"encoding:     {meta.get('encoding')}")
    if meta.get("normalisation"):
        console.print(f"normalisation: {meta['normalisation']}")
    for key in ("stage", "run", "wall_time_s"):
        if key in meta:
            console.print(f"{key}: {meta[key]}")
    table = Table(title="neurons")
    for column in ("name", "activation", "threshold", "reset", "v0", "trainable"):
        table.add_column(column)
    for name, n in named_neurons(model):
        theta = n.threshold.detach()
        shown = (
            f"{float(theta):.4g}"
            if theta.dim() == 0
            else f"per-channel {float(theta.min()):.3g}..{float(theta.max()):.3g}"
        )
        table.add_row(
            name,
            n.activation,
            shown,
            n.reset,
            n.initial_potential_mode,
            "yes" if n.threshold.requires_grad else "no",
        )
    console.print(table)


def _print_summary(summary: dict[str, Any], report_path: Path) -> None:
    stages = summary.get("stages", {})
    eps_keys: list[str] = []
    for result in stages.values():
        eps_keys += [k for k in result.get("robust", {}) if k not in eps_keys]
    table = Table(title=f"run '{summary.get('name')}' ({summary.get('dataset')})")
    for column in ["stage", "T", "clean %"] + [f"worst-case robust % ε={k}" for k in eps_keys]:
        table.add_column(column)
    table.add_column("time s")
    for stage, result in stages.items():
        row = [stage, str(result.get("time_steps")), f"{100 * result['clean_accuracy']:.1f}"]
        for k in eps_keys:
            value = result.get("robust", {}).get(k, {}).get("worst_case_accuracy")
            row.append("–" if value is None else f"{100 * value:.1f}")
        wall = summary.get("wall_time_s", {}).get(stage)
        row.append("–" if wall is None else f"{wall:.0f}")
        table.add_row(*row)
    console.print(table)
    console.print(f"report: {report_path}")


def _run(config_source: str, out: Path | None, force: bool, resume: bool, overrides: list[str]):
    import yaml

    from robustsnn.config import load_config
    from robustsnn.pipeline import Callbacks, run

    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got '{item}'")
        parsed[key.strip()] = yaml.safe_load(value)
    config = load_config(config_source, parsed)
    run_dir = out or Path("runs") / config.name
    callbacks = Callbacks(
        on_stage=lambda name, status: err_console.print(f"[bold]{name}[/bold]: {status}"),
        train=_Progress("train"),
    )
    summary = run(config, run_dir, force=force, resume=resume, callbacks=callbacks)
    _print_summary(summary, run_dir / "report.md")


@app.command("run")
def run_command(
    config: str = typer.Argument(..., help="A YAML config file or the name of a preset."),
    out: Path = typer.Option(None, "--out", "-o", help="Run directory (default runs/NAME)."),
    force: bool = typer.Option(False, "--force", help="Recompute stages whose checkpoint exists."),
    resume: bool = typer.Option(False, "--resume", help="Continue interrupted training."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: KEY=VALUE."),
) -> None:
    """Run the pipeline: robust ANN → conversion → robust finetuning → evaluation."""
    _run(config, out, force, resume, set_)


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run directory."),
    force: bool = typer.Option(False, "--force", help="Recompute stages whose checkpoint exists."),
    resume: bool = typer.Option(
        True, "--resume/--no-resume", help="Continue interrupted training."
    ),
) -> None:
    """The embedded demo: the whole pipeline on MNIST digits shipped with the install."""
    _run("demo", out, force, resume, [])


def main() -> None:
    """Entry point: user mistakes become one red line and exit code 2, never a traceback."""
    try:
        app(standalone_mode=False)
    except (ValueError, FileNotFoundError) as err:
        err_console.print(f"[red]error:[/red] {str(err).splitlines()[0] if str(err) else err}")
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/red] (use --resume to continue)")
        sys.exit(130)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except Exception as err:  # click usage errors carry their own message and code
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
