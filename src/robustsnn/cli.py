"""The ``robustsnn`` command: a thin layer that parses, calls the library and renders.

Every sub-command is one function registered on :data:`app`; it imports what it needs from the
library inside its body (so ``robustsnn --help`` stays fast) and renders with rich. A user
mistake (:class:`~robustsnn.errors.UserError`, and an OS failure at a named path) ends as one
red ``error: ...`` line on stderr and exit code 2, never a traceback. Anything else is a bug and
keeps its traceback; set ``ROBUSTSNN_DEBUG=1`` to see the traceback of a user mistake too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from robustsnn.errors import UserError, describe_os_error
from robustsnn.runtime import keep_freed_memory

USER_ERROR_EXIT_CODE = 2

console = Console()
err_console = Console(stderr=True)


def fail(err: BaseException) -> NoReturn:
    """Print ``error: <first line of err>`` in red on stderr and exit with code 2."""
    text = str(err).strip()
    message = text.splitlines()[0] if text else type(err).__name__
    err_console.print(f"[bold red]error:[/bold red] {escape(message)}", soft_wrap=True)
    sys.exit(USER_ERROR_EXIT_CODE)


def _is_user_error(err: BaseException) -> bool:
    """A :class:`UserError`, or an OS failure that names its path (full disk, read-only, ...)."""
    if isinstance(err, UserError):
        return True
    return isinstance(err, OSError) and err.filename is not None


class _RobustSNNGroup(TyperGroup):
    """The root command; turns user mistakes into one line (also under typer's CliRunner)."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, **kwargs)
        except (UserError, OSError) as err:
            if os.environ.get("ROBUSTSNN_DEBUG") or not _is_user_error(err):
                raise
            if isinstance(err, UserError):
                fail(err)
            fail(UserError(describe_os_error(err)))


app = typer.Typer(
    name="robustsnn",
    cls=_RobustSNNGroup,
    help="Adversarially robust, low-latency SNNs from PyTorch ANNs, evaluated honestly.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from robustsnn import __version__

        console.print(f"robustsnn {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Adversarially robust, low-latency SNNs from PyTorch ANNs, evaluated honestly."""


# ---- rendering helpers -----------------------------------------------------------------------
def _shape(shape: Any) -> str:
    return "x".join(str(s) for s in shape)


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _flat_list(values: list[Any]) -> str:
    return "[" + ", ".join(_number(v) for v in values) + "]"


def _flatten(value: Any, key: str) -> Iterator[tuple[str, str]]:
    """``(dotted key, short text)`` rows for nested metadata; long lists are summarised."""
    if isinstance(value, dict):
        if not value:
            yield key, "{}"
        for k, v in value.items():
            yield from _flatten(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list) and value and isinstance(value[-1], dict):
        yield key, f"{len(value)} entries; the last:"
        yield from _flatten(value[-1], f"{key}[{len(value) - 1}]")
    elif isinstance(value, list):
        text = _flat_list(value)
        yield key, text if len(text) <= 80 else f"{len(value)} values: {text[:70]}...]"
    else:
        yield key, _number(value)


def _key_value_table(rows: list[tuple[str, str]], title: str | None = None) -> Table:
    table = Table.grid(padding=(0, 2)) if title is None else Table(title=title, show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(escape(key), escape(value))
    return table


# ---- commands --------------------------------------------------------------------------------
@app.command()
def models() -> None:
    """List the model zoo: parameters (default arguments), input shape, description."""
    from robustsnn.models import count_parameters, create_model, list_models, model_description

    table = Table(title="robustsnn models")
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("parameters", justify="right", no_wrap=True)
    table.add_column("input", no_wrap=True)
    table.add_column("description")
    for name in list_models():
        try:
            model = create_model(name)
            params, shape = f"{count_parameters(model):,}", _shape(model.input_shape)
            del model
        except (TypeError, ValueError):
            params, shape = "needs arguments", "-"
        table.add_row(name, params, shape, escape(model_description(name)))
    console.print(table)


@app.command()
def datasets() -> None:
    """List the datasets: embedded ones, and readers for copies on disk."""
    from robustsnn.data import dataset_info, list_datasets

    table = Table(title="robustsnn datasets")
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("input", no_wrap=True)
    table.add_column("classes", justify="right", no_wrap=True)
    table.add_column("source", no_wrap=True)
    table.add_column("description")
    for name in list_datasets():
        info = dataset_info(name)
        embedded = getattr(info, "embedded", name in ("mnist5k", "digits"))
        steps = getattr(info, "time_steps", None)
        table.add_row(
            name,
            _shape(info.input_shape) + (f", T={steps}" if steps else ""),
            str(info.num_classes) if info.num_classes else "from data",
            "embedded" if embedded else "on disk",
            escape(info.description),
        )
    console.print(table)
    console.print(
        "On-disk datasets are read from --root, $ROBUSTSNN_DATA or ./data; nothing is downloaded.",
        highlight=False,
    )


def _threshold_text(neuron: Any) -> str:
    theta = neuron.threshold.detach().float()
    if theta.dim() == 0:
        return f"{float(theta):.4g}"
    return (
        f"{theta.numel()} channels: min {float(theta.min()):.3g}, "
        f"mean {float(theta.mean()):.3g}, max {float(theta.max()):.3g}"
    )


def _initial_potential_text(neuron: Any) -> str:
    mode = neuron.initial_potential_mode
    if mode == "half":
        return "θ/2"
    if mode == "tensor" and neuron.initial_potential is not None:
        v0 = neuron.initial_potential.detach().float()
        return f"tensor {_shape(v0.shape)}, mean {float(v0.mean()):.3g}"
    return mode


def _neuron_table(model: Any) -> Table:
    from robustsnn.snn import named_neurons

    table = Table(title="neurons")
    table.add_column("name", no_wrap=True)
    table.add_column("activation", no_wrap=True)
    table.add_column("threshold θ")
    table.add_column("trainable θ", no_wrap=True)
    table.add_column("reset", no_wrap=True)
    table.add_column("v0")
    table.add_column("leak", justify="right", no_wrap=True)
    for name, n in named_neurons(model):
        activation = n.activation if n.activation == "relu" else f"{n.activation} L={n.levels}"
        table.add_row(
            escape(name),
            activation,
            _threshold_text(n),
            "yes" if n.threshold.requires_grad else "no",
            n.reset,
            _initial_potential_text(n),
            f"{n.leak:g}",
        )
    return table


@app.command()
def info(
    checkpoint: Path = typer.Argument(
        ..., help="A checkpoint: its .safetensors or .json file, or their common stem."
    ),
) -> None:
    """Show what a checkpoint holds: architecture, T, encoding, neurons, metrics and recipe."""
    from robustsnn.io import RESERVED_KEYS, checkpoint_files, load_checkpoint
    from robustsnn.models import count_parameters

    model, meta = load_checkpoint(checkpoint)
    arch = meta["architecture"]
    steps = meta.get("time_steps", 0)
    norm = meta.get("normalisation")
    provenance = meta.get("provenance") or {}
    rows = [
        ("checkpoint", str(checkpoint_files(checkpoint)[0])),
        ("architecture", arch["name"]),
        ("arguments", ", ".join(f"{k}={v}" for k, v in arch.get("kwargs", {}).items()) or "-"),
        ("parameters", f"{count_parameters(model):,}"),
        ("input", f"{_shape(meta.get('input_shape', []))}, {meta.get('num_classes')} classes"),
        ("time steps", f"{steps} ({'ANN' if steps == 0 else 'SNN'})"),
        ("encoding", meta.get("encoding", "direct")),
        (
            "normalisation",
            f"mean {_flat_list(norm['mean'])}, std {_flat_list(norm['std'])}" if norm else "none",
        ),
        (
            "created",
            f"{provenance.get('created_utc', '?')} (robustsnn "
            f"{provenance.get('robustsnn_version', '?')}, "
            f"torch {provenance.get('torch_version', '?')})",
        ),
    ]
    if meta.get("poisson_seed") is not None:
        rows.insert(7, ("poisson seed", str(meta["poisson_seed"])))
    console.print(_key_value_table(rows), highlight=False)
    console.print(_neuron_table(model))
    order = ["stage", "metrics", "recipe"]
    extra = order + sorted(k for k in meta if k not in (*RESERVED_KEYS, "provenance", *order))
    details = [row for key in extra if key in meta for row in _flatten(meta[key], key)]
    if details:
        console.print(_key_value_table(details, title="metadata"), highlight=False)


# ---- pipeline --------------------------------------------------------------------------------
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

    def close(self) -> None:
        """Remove an open progress bar (the training ended, or failed)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        self.close()
        shown = ", ".join(
            f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float) and k != "lr"
        )
        err_console.print(f"[dim]{self.label} epoch {epoch + 1}: {shown}[/dim]")


def _print_summary(summary: dict[str, Any], report_path: Path) -> None:
    stages = summary.get("stages", {})
    eps_keys: list[str] = []
    for result in stages.values():
        eps_keys += [k for k in result.get("robust", {}) if k not in eps_keys]
    table = Table(title=escape(f"run '{summary.get('name')}' ({summary.get('dataset')})"))
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
    console.print(f"report: {escape(str(report_path))}", highlight=False)


def _parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items to ``{key: value}``; values are YAML (numbers, lists, 8/255)."""
    import yaml

    from robustsnn.errors import ConfigError

    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got '{item}'")
        try:
            parsed[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            first = str(err).splitlines()[0]
            raise ConfigError(
                f"--set {key.strip()}: '{value}' is not a YAML value ({first}); quote text, "
                "e.g. --set 'evaluation.paths=[\"triangle:1.0\"]'"
            ) from None
    return parsed


def _run(
    config_source: str, out: Path | None, force: str | None, resume: bool, overrides: list[str]
):
    from robustsnn.config import load_config
    from robustsnn.pipeline import Callbacks, run

    config = load_config(config_source, _parse_overrides(overrides))
    run_dir = out or Path("runs") / config.name
    callbacks = Callbacks(
        on_stage=lambda name, status: err_console.print(
            f"[bold]{name}[/bold]: {escape(status)}", soft_wrap=True
        ),
        train=_Progress("train"),
        on_note=lambda message: err_console.print(
            f"[yellow]note:[/yellow] {escape(message)}", soft_wrap=True
        ),
    )
    try:
        summary = run(config, run_dir, force=force, resume=resume, callbacks=callbacks)
    finally:
        callbacks.train.close()  # an error line must not share the line of a progress bar
    _print_summary(summary, run_dir / "report.md")


_FORCE_HELP = (
    "Rerun STAGE and every later stage although their checkpoints exist (needed when the "
    "settings changed): ann, snn_converted, snn_finetuned (snn_direct), evaluate, or all."
)
_RESUME_HELP = (
    "Continue interrupted training and evaluation (the default); --no-resume discards "
    "interrupted epochs. Finished stages with the same settings are always reused."
)


@app.command("run")
def run_command(
    config: str = typer.Argument(..., help="A YAML config file or the name of a preset."),
    out: Path = typer.Option(None, "--out", "-o", help="Run directory (default runs/NAME)."),
    force: str = typer.Option(None, "--force", metavar="STAGE", help=_FORCE_HELP),
    resume: bool = typer.Option(True, "--resume/--no-resume", help=_RESUME_HELP),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: KEY=VALUE."),
) -> None:
    """Run the pipeline: robust ANN → conversion → robust finetuning → evaluation.

    Rerunning in the same directory reuses every stage made with the same settings, continues
    interrupted ones, and refuses changed settings (naming them) unless --force STAGE.
    """
    _run(config, out, force, resume, set_)


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run directory."),
    force: str = typer.Option(None, "--force", metavar="STAGE", help=_FORCE_HELP),
    resume: bool = typer.Option(True, "--resume/--no-resume", help=_RESUME_HELP),
) -> None:
    """The embedded demo: the whole pipeline on MNIST digits shipped with the install."""
    _run("demo", out, force, resume, [])


@app.command()
def energy(
    target: Path = typer.Argument(..., help="A run directory or an SNN checkpoint."),
    time_steps: str = typer.Option(
        None, "--T", help="Comma-separated T values (default: the SNN's own T)."
    ),
    preset: str = typer.Option("45nm-fp32", help="45nm-fp32, 45nm-int32, 45nm-fp16, 45nm-int8."),
    samples: int = typer.Option(200, help="Test images to average over."),
    dataset: str = typer.Option(None, help="Dataset (default: the run's)."),
) -> None:
    """Spikes, synaptic operations and energy of the SNN against its ANN (prints; the run's
    stored energy block is left as the pipeline wrote it)."""
    from robustsnn.pipeline import measure_energy

    steps = _parse_time_steps(time_steps) if time_steps else None
    report = measure_energy(
        target, time_steps=steps, preset=preset, samples=samples, dataset=dataset
    )
    table = Table(
        title=escape(f"energy per image ({report['preset']}, {report['samples']} images)")
    )
    for column in ("network", "T", "MAC", "AC", "spikes/image", "energy µJ", "SNN/ANN"):
        table.add_column(column)
    table.add_row(
        "ANN",
        "0",
        f"{report['ann']['mac']:.3g}",
        "0",
        "–",
        f"{report['ann']['energy_pj'] / 1e6:.3g}",
        "–",
    )
    for steps_key, snn in report["snn"].items():
        table.add_row(
            "SNN",
            steps_key,
            f"{snn['mac']:.3g}",
            f"{snn['ac']:.3g}",
            f"{snn['spikes_per_image']:.4g}",
            f"{snn['energy_pj'] / 1e6:.3g}",
            f"{snn['energy_ratio_to_ann']:.3f}",
        )
    console.print(table)
    console.print(escape(report["caveat"]), style="dim")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run directory.")) -> None:
    """Re-render report.md, report.html and the plots from the run's JSON (no recompute)."""
    from robustsnn.pipeline import write_report
    from robustsnn.runlock import run_lock

    if not run_dir.is_dir():
        from robustsnn.errors import NotFoundError

        raise NotFoundError(f"{run_dir}: not a run directory")
    with run_lock(run_dir, "robustsnn report"):
        path = write_report(run_dir)
    console.print(f"report: {escape(str(path))}", highlight=False)


@app.command()
def compare(
    runs: list[Path] = typer.Argument(..., help="Run directories (each with summary.json)."),
    markdown: bool = typer.Option(False, "--markdown", help="Print a Markdown table."),
) -> None:
    """Put runs side by side: clean and worst-case robust accuracy, training time, T, spikes."""
    from robustsnn.compare import compare_runs, markdown_table

    comparison = compare_runs(list(runs))
    if markdown:
        console.print(markdown_table(comparison), highlight=False, markup=False)
        return
    table = Table(title="runs side by side")
    columns = ["run", "method", "clean %"] + [f"robust % ε={e}" for e in comparison["eps"]]
    for column in columns + ["train s", "T", "spikes/img"]:
        table.add_column(escape(column))
    for row in comparison["rows"]:
        cells = [row["name"], row["method"], _percent(row["clean_accuracy"])]
        cells += [_percent(row["robust"].get(e)) for e in comparison["eps"]]
        cells += [_whole(row["training_wall_time_s"]), _number(row["time_steps"])]
        cells.append(_whole(row["spikes_per_image"]))
        table.add_row(*(escape(c) for c in cells))
    console.print(table)
    if not comparison["same_suite"]:
        console.print("the runs were evaluated with different suites, samples or paths.")


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _whole(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


# ---- conversion ------------------------------------------------------------------------------
def _parse_time_steps(text: str) -> list[int]:
    try:
        steps = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--T expects integers >= 1 like 1,2,4,8; got '{text}'") from None
    if not steps or min(steps) < 1:
        raise UserError(f"--T expects integers >= 1 like 1,2,4,8; got '{text}'")
    return steps


def _parse_options(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings to a dict; values are read as YAML scalars (4, 0.5, true, cos)."""
    import yaml

    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--option expects KEY=VALUE, got '{item}'")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            options[key.strip()] = value
    return options


def _accuracy_markdown(result: dict[str, Any], source: Path) -> str:
    offset = result["latency_offset"]
    lines = [
        f"Accuracy vs T of `{source}` converted with `{result['recipe']}` "
        f"({result['dataset']} test split)",
        "",
        "| T | total steps | accuracy % |",
        "|---|---|---|",
    ]
    for steps, accuracy in sorted(result["accuracy"].items()):
        lines.append(f"| {steps} | {offset + steps} | {100 * accuracy:.2f} |")
    return "\n".join(lines) + "\n"


def _check_convert_arguments(
    source: Path,
    recipe: str,
    options: dict[str, Any],
    steps: list[int],
    dataset: str | None,
    samples: int | None,
    calibration: int,
) -> None:
    """Everything ``convert`` can check before calibrating: the recipe and its options, the
    counts, the dataset's image shape and the memory the largest T needs."""
    from robustsnn.convert.recipes import check_options
    from robustsnn.io import check_time_steps_memory, load_checkpoint
    from robustsnn.pipeline import check_dataset_shape

    try:
        check_options(recipe, options)
    except UserError:
        raise
    except ValueError as err:
        raise UserError(f"--recipe {recipe}: {err}") from None
    for name, value in (("--samples", samples), ("--calibration", calibration)):
        if value is not None and value < 1:
            raise UserError(f"{name}: must be >= 1, got {value}")
    model, meta = load_checkpoint(source)
    if dataset is not None:
        check_dataset_shape(meta, dataset, source)
    check_time_steps_memory(model, max(steps), 1, "--T")


@app.command("convert")
def convert_command(
    checkpoint: Path = typer.Argument(
        ..., help="An ANN checkpoint: its .safetensors or .json file, or their common stem."
    ),
    recipe: str = typer.Option(
        ..., "--recipe", help="qcfs, cos, srp, opi, tfc, max-norm, percentile, ..."
    ),
    time_steps: str = typer.Option(
        "1,2,4,8", "--T", help="Comma-separated T to evaluate; the SNN is saved at the largest."
    ),
    option: list[str] = typer.Option(
        [], "--option", help="A recipe option KEY=VALUE, e.g. presim_steps=4 (repeatable)."
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="Stem of the SNN checkpoint (default: CHECKPOINT_RECIPE)."
    ),
    dataset: str = typer.Option(None, help="Dataset (default: the checkpoint's)."),
    samples: int = typer.Option(None, help="Evaluate on the first N test images (default: all)."),
    calibration: int = typer.Option(512, help="Training images used for calibration."),
) -> None:
    """Convert an ANN checkpoint to an SNN with a recipe; save it and its accuracy vs T."""
    from contextlib import nullcontext

    from robustsnn.convert import convert_checkpoint
    from robustsnn.io import atomic_write_text, checkpoint_files
    from robustsnn.runlock import run_lock

    steps = _parse_time_steps(time_steps)
    options = _parse_options(option)
    source = checkpoint_files(checkpoint)[0].with_suffix("")
    target = checkpoint_files(out)[0].with_suffix("") if out else None
    target = target or source.with_name(f"{source.name}_{recipe}")
    if target.resolve() == source.resolve():
        raise UserError(f"--out {out} would overwrite the ANN checkpoint")
    _check_convert_arguments(source, recipe, options, steps, dataset, samples, calibration)
    in_run = (target.parent / "config.yaml").is_file()  # writing into a run: hold its lock
    with run_lock(target.parent, "robustsnn convert") if in_run else nullcontext():
        result = convert_checkpoint(
            source,
            recipe,
            steps,
            target,
            dataset=dataset,
            eval_size=samples,
            calibration_size=calibration,
            options=options,
        )
    offset = result["latency_offset"]
    table = Table(title=escape(f"{recipe} on {result['dataset']}: accuracy vs T"))
    for column in ("T", "total steps", "accuracy %"):
        table.add_column(column, justify="right")
    for t, accuracy in sorted(result["accuracy"].items()):
        table.add_row(str(t), str(offset + t), f"{100 * accuracy:.2f}")
    console.print(table)
    markdown = atomic_write_text(
        target.with_name(target.name + ".md"), _accuracy_markdown(result, source)
    )
    console.print(f"checkpoint: {escape(result['checkpoint'])}", highlight=False)
    console.print(f"table: {escape(str(markdown))}", highlight=False)


class _EvaluationProgress:
    """One tqdm bar per attack member (the evaluator calls back with label, done, total)."""

    def __init__(self) -> None:
        self.label: str | None = None
        self.bar = None

    def __call__(self, label: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if label != self.label:
            self.close()
            self.label = label
            self.bar = tqdm(total=total, desc=label, leave=False, file=sys.stderr)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _parse_eps_list(text: str) -> list[float]:
    from robustsnn.config import parse_eps

    values = [parse_eps(item, "--eps", upper=None) for item in text.split(",") if item.strip()]
    if not values:
        raise UserError(f"--eps expects budgets like 0.1,0.3 or 8/255; got '{text}'")
    return values


def _check_evaluate_arguments(
    target: Path, suite: str, budgets: list[float] | None, samples: int | None, dataset: str | None
) -> None:
    """What ``evaluate`` can check before loading data: the suite, L∞ budgets in (0, 1],
    the sample count and the dataset's image shape."""
    from robustsnn.attacks import load_suite
    from robustsnn.config import parse_eps
    from robustsnn.io import checkpoint_files, read_metadata
    from robustsnn.pipeline import check_dataset_shape

    try:
        norm = load_suite(suite).norm
    except UserError:
        raise
    except (ValueError, FileNotFoundError) as err:
        raise UserError(f"--suite {suite}: {err}") from None
    if norm != "l2":
        for value in budgets or []:
            parse_eps(value, "--eps")
    if samples is not None and samples < 1:
        raise UserError(f"--samples: must be >= 1, got {samples}")
    if dataset is not None:
        stem = target
        if target.is_dir():
            stem = next(
                (target / n for n in ("snn", "snn_converted") if (target / f"{n}.json").exists()),
                target / "snn",
            )
        check_dataset_shape(read_metadata(checkpoint_files(stem)[1]), dataset, stem)


@app.command()
def evaluate(
    target: Path = typer.Argument(..., help="A run directory (its final SNN) or a checkpoint."),
    suite: str = typer.Option(
        "strong", help="strong (default), quick, paper, full or a suite YAML file."
    ),
    eps: str = typer.Option(
        None, help="Comma-separated budgets, e.g. 0.1,0.3 or 8/255 (default: the run's)."
    ),
    samples: int = typer.Option(None, help="Attack the first N test samples."),
    cross_check: str = typer.Option(
        None, "--cross-check", help="autoattack: also run pyautoattack's AutoAttack."
    ),
    out: Path = typer.Option(None, "--out", "-o", help="Directory for eval/ (default: the run)."),
    dataset: str = typer.Option(None, help="Dataset (default: the checkpoint's)."),
    resume: bool = typer.Option(
        True, "--resume/--no-resume", help="Continue an unfinished eval/SUITE.json."
    ),
) -> None:
    """Attack a run's final SNN (or a checkpoint) with a suite; per-sample worst case."""
    from contextlib import nullcontext

    from robustsnn.attacks import evaluate_checkpoint
    from robustsnn.runlock import run_lock

    budgets = _parse_eps_list(eps) if eps is not None else None
    _check_evaluate_arguments(target, suite, budgets, samples, dataset)
    progress = _EvaluationProgress()
    writes_run = target.is_dir() and out is None
    lock = run_lock(target, "robustsnn evaluate") if writes_run else nullcontext()
    try:
        with lock:
            done = evaluate_checkpoint(
                target,
                suite,
                eps=budgets,
                samples=samples,
                out=out,
                dataset=dataset,
                resume=resume,
                cross_check=cross_check,
                progress=progress,
            )
    finally:
        progress.close()
    summary = done.summary
    table = Table(title=escape(f"suite '{summary['suite']}' on {summary['samples']} samples"))
    for column in ("ε", "clean %", "worst case %", "members", "runs / naive", "strongest first"):
        table.add_column(column)
    for key, r in summary["robust"].items():
        table.add_row(
            key,
            f"{100 * summary['clean_accuracy']:.1f}",
            f"{100 * r['worst_case_accuracy']:.1f}",
            str(len(r["members"])),
            f"{100 * r['work'].get('fraction_of_naive', 0):.0f} %",
            escape(r["order"][0] if r["order"] else "–"),
        )
    console.print(table)
    for key, c in summary.get("cross_check", {}).items():
        console.print(
            f"AutoAttack ε={key} through {c['path']}: {100 * c['robust_accuracy']:.1f} %",
            highlight=False,
        )
    failed = summary.get("failed_diagnostics", [])
    if failed:
        err_console.print(f"[bold yellow]diagnostics flagged:[/bold yellow] {', '.join(failed)}")
    console.print(f"results: {escape(str(done.results_path))}", highlight=False)
    if done.report_path is not None:
        console.print(f"report: {escape(str(done.report_path))}", highlight=False)


def main() -> None:
    """Entry point of the ``robustsnn`` command (user mistakes are handled by the root group)."""
    keep_freed_memory()
    app(prog_name="robustsnn")


if __name__ == "__main__":
    main()
