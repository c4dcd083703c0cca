"""The main job: robust ANN → conversion → robust finetuning → evaluation, in a run directory.

``run(config, run_dir)`` executes every stage of a :class:`~robustsnn.config.RunConfig` and
writes ``config.yaml``, ``ann``/``snn_converted``/``snn`` checkpoints, ``log.jsonl``,
``summary.json`` and ``report.md``. A stage whose checkpoint exists is loaded instead of
recomputed unless ``force``; ``resume`` continues an interrupted training stage from its last
epoch checkpoint.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from robustsnn.config import RunConfig
from robustsnn.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    NotFoundError,
    RunError,
    UserError,
)
from robustsnn.io import (
    RunDir,
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    read_metadata,
    remove_stale_temporaries,
    save_checkpoint,
    to_json,
    trace,
)

STAGES = ("ann", "snn_converted", "snn_finetuned")
_CHECKPOINT_NAMES = {"ann": "ann", "snn_converted": "snn_converted", "snn_finetuned": "snn"}


@dataclass
class Callbacks:
    """Hooks the command line uses to draw progress; every one is optional."""

    on_stage: Callable[[str, str], None] | None = None
    train: Any = None
    evaluation: Callable[..., None] | None = None
    on_note: Callable[[str], None] | None = None

    def stage(self, name: str, status: str) -> None:
        """Report what happens to a stage (``running``, ``reused (...)``, ``resuming``)."""
        if self.on_stage is not None:
            self.on_stage(name, status)

    def note(self, message: str) -> None:
        """Report something the run discarded, repaired or took over (one line)."""
        if self.on_note is not None:
            self.on_note(message)


def _load_data(config: RunConfig):
    from robustsnn.data import load_dataset

    options = {"size": config.data.size, "time_steps": config.data.time_steps}
    options = {k: v for k, v in options.items() if v is not None}
    train = load_dataset(config.data.dataset, split="train", root=config.data.root, **options)
    test = load_dataset(config.data.dataset, split="test", root=config.data.root, **options)
    if config.data.train_samples is not None:
        train = train.take(config.data.train_samples)
    if config.data.test_samples is not None:
        test = test.take(config.data.test_samples)
    return train, test


def build_model(config: RunConfig, info) -> torch.nn.Module:
    """The configured zoo model, shaped and normalised for the dataset ``info``."""
    from robustsnn.models import create_model

    kwargs = dict(config.model.kwargs)
    kwargs.setdefault("input_shape", tuple(info.input_shape))
    kwargs.setdefault("num_classes", info.num_classes)
    kwargs.setdefault("mean", list(info.mean))
    kwargs.setdefault("std", list(info.std))
    if config.model.neuron:
        kwargs["neuron"] = dict(config.model.neuron)
    return create_model(config.model.name, **kwargs)


def _augment(config: RunConfig, info):
    from robustsnn.data import build_augmentation

    return build_augmentation(config.data.augment, info) if config.data.augment else None


def _train_ann(config: RunConfig, model, train, test, rd: RunDir, resume: bool, cb: Callbacks):
    from robustsnn.train import fit, make_objective

    c = config.ann
    objective = make_objective(
        c.objective, eps=c.eps, steps=c.steps, step_size=c.step_size, beta=c.beta
    )
    return fit(
        model,
        train,
        objective=objective,
        epochs=c.epochs,
        batch_size=c.batch_size,
        optimizer=c.optimizer,
        lr=c.lr,
        momentum=c.momentum,
        weight_decay=c.weight_decay,
        schedule=c.schedule,
        augment=_augment(config, train.info),
        seed=config.seed,
        checkpoint_dir=rd.path / "train" / "ann",
        resume=resume,
        eval_set=test,
        callbacks=cb.train,
    )


def _convert(config: RunConfig, ann, train):
    from robustsnn.convert import convert

    snn = copy.deepcopy(ann)
    torch.manual_seed(config.seed)
    options = dict(config.conversion.options)
    options.setdefault("time_steps", config.conversion.time_steps)
    return convert(snn, config.conversion.recipe, train, **options)


def _finetune(config: RunConfig, snn, train, test, rd: RunDir, resume: bool, cb: Callbacks):
    from robustsnn.train import robust_finetune

    c = config.finetune
    return robust_finetune(
        snn,
        train,
        epochs=c.epochs,
        lr=c.lr,
        weight_decay=c.weight_decay,
        beta=c.beta,
        eps=c.eps,
        step_size=c.step_size,
        inner=c.inner,
        surrogate=c.surrogate,
        attack_path=c.attack_path,
        loss=c.loss,
        batch_size=c.batch_size,
        seed=config.seed,
        augment=_augment(config, train.info),
        checkpoint_dir=rd.path / "train" / "finetune",
        resume=resume,
        eval_set=test,
        callbacks=cb.train,
    )


def evaluation_suite(config: RunConfig, *, diagnostics: bool = True):
    """The suite named by ``evaluation.suite`` (built-in or YAML file) with the run's budgets.

    The config's ``eps``, ``samples`` (None: every test sample), ``batch_size``, ``steps``,
    ``paths`` (when given) and ``options`` (any other suite key) replace the suite's; the seed
    is the run's. ``diagnostics=False`` switches the obfuscation checks off (the pipeline runs
    them on the final model only).
    """
    from robustsnn.attacks import Suite, load_suite

    c = config.evaluation
    data = load_suite(c.suite).to_dict()
    data.update(
        eps=list(c.eps), samples=c.samples, batch_size=c.batch_size, steps=c.steps, seed=config.seed
    )
    if c.paths is not None:
        data["paths"] = list(c.paths)
    data.update(c.options)
    if not diagnostics:
        data["diagnostics"] = False
    return Suite.from_dict(data)


def evaluate_stage(
    model,
    test,
    config: RunConfig,
    *,
    is_snn: bool,
    diagnostics: bool = False,
    results_path: str | Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Clean accuracy and the per-sample worst case of the configured suite per ε.

    Returns the evaluator's compact summary (``robust[eps]`` with ``worst_case_accuracy``,
    ``per_member``, ``members``, ``order``, ``work``; ``diagnostics``) plus ``attack``, the
    settings that produced it. Per-sample records go to ``results_path`` (overwritten, or with
    ``resume`` continued: finished attack members are not run again).
    """
    from robustsnn.attacks import evaluate

    suite = evaluation_suite(config, diagnostics=diagnostics)
    result = evaluate(
        model, test.images, test.labels, suite, results_path=results_path, resume=resume,
        progress=progress,
    )  # fmt: skip
    out = result.summary()
    for eps_result in out["robust"].values():
        for member in eps_result["members"]:
            member.pop("seconds")  # timings live in wall_time_s: the summary stays reproducible
    out["attack"] = {
        "suite": suite.name,
        "attacks": list(suite.attacks),
        "steps": suite.steps,
        "apgd_steps": suite.apgd_steps,
        "paths": suite.path_list() if is_snn else ["ann"],
        "norm": suite.norm,
        "samples": result.samples,
        "order": suite.order,
    }
    return out


def _strongest_path(result: dict[str, Any]) -> str:
    """The path of the first gradient member run at the first ε (the adaptive order puts the
    path that screened strongest first)."""
    first = next(iter(result["robust"].values()))
    for name in first.get("order", []):
        attack, _, path = name.partition("/")
        if path and not attack.startswith("transfer:"):
            return path
    return result["attack"]["paths"][0]


def eps_sweep(model, test, config: RunConfig, path: str) -> dict[str, Any]:
    """Worst-case accuracy of the configured attack through ``path`` along ``sweep_eps``."""
    from robustsnn.attacks import worst_case_accuracy

    c = config.evaluation
    n = c.sweep_samples
    accuracy = []
    for eps in c.sweep_eps:
        result = worst_case_accuracy(
            model,
            test.images[:n],
            test.labels[:n],
            eps=eps,
            paths=[path],
            attack=c.attack,
            steps=c.steps,
            batch_size=c.batch_size,
            seed=config.seed,
        )
        accuracy.append(result.robust_accuracy)
    return {"path": path, "eps": list(c.sweep_eps), "accuracy": accuracy, "samples": n}


def accuracy_vs_time_steps(model, test, config: RunConfig) -> dict[str, float]:
    """Clean accuracy of an SNN re-run at each T of ``time_steps_curve``."""
    from robustsnn.attacks import predict
    from robustsnn.snn import using_time_steps

    c = config.evaluation
    images, labels = test.images, test.labels
    if c.samples is not None:
        images, labels = images[: c.samples], labels[: c.samples]
    curve = {}
    for steps in c.time_steps_curve:
        with using_time_steps(model, steps):
            curve[str(steps)] = float(
                (predict(model, images, c.batch_size) == labels).float().mean()
            )
    return curve


def measure_energy(
    target: str | Path,
    *,
    time_steps: list[int] | None = None,
    preset: str = "45nm-fp32",
    samples: int = 200,
    dataset: str | None = None,
    root: str | None = None,
) -> dict[str, Any]:
    """Energy of a run's final SNN or of a checkpoint; nothing is written.

    ``target`` is a run directory or a checkpoint; the images are the first ``samples`` test
    images of ``dataset`` (default: the run's or the checkpoint's own dataset). The run's own
    energy block (from the pipeline's ``energy`` settings) is left as it is: a measurement with
    other T or samples must not replace it.
    """
    from robustsnn.data import load_dataset
    from robustsnn.energy import energy_report
    from robustsnn.io import check_time_steps_memory

    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise UserError(f"--samples: must be an integer >= 1, got {samples}")
    target = Path(target)
    rd = RunDir(target) if target.is_dir() else None
    if rd is not None:
        stem = next(
            (rd.path / n for n in ("snn", "snn_converted") if (rd.path / f"{n}.json").exists()),
            None,
        )
        if stem is None:
            raise NotFoundError(f"{target}: no SNN checkpoint (snn or snn_converted) in it")
    else:
        stem = target
    model, meta = load_checkpoint(stem)
    dataset = dataset or meta.get("dataset")
    if dataset is None:
        raise UserError(f"{target}: the checkpoint does not name its dataset; pass --dataset")
    check_dataset_shape(meta, dataset, stem)
    steps = time_steps or [int(meta.get("time_steps") or 0)]
    if any(t < 1 for t in steps):
        raise UserError(f"--T: energy needs SNN time steps >= 1, got {steps}")
    for t in steps:
        check_time_steps_memory(model, t, 1, "--T")
    test = load_dataset(dataset, split="test", root=root)
    return energy_report(model, test.images[:samples], time_steps=steps, preset=preset)


def check_dataset_shape(meta: dict[str, Any], dataset: str, where: str | Path) -> None:
    """Refuse a dataset whose images do not have the checkpoint's input shape (before loading)."""
    from robustsnn.data import dataset_info, list_datasets
    from robustsnn.data.registry import _VARIABLE_SHAPE

    if dataset not in list_datasets():
        raise DataError(
            f"--dataset: unknown dataset '{dataset}'; known: {', '.join(list_datasets())}"
        )
    if dataset in _VARIABLE_SHAPE:  # the shape is known only once the files are read
        return
    expected = [int(v) for v in meta.get("input_shape") or []]
    found = [int(v) for v in dataset_info(dataset).input_shape]
    if expected and found and expected != found:
        raise DataError(
            f"--dataset {dataset}: its images are {'x'.join(map(str, found))} but {where} "
            f"expects {'x'.join(map(str, expected))}; give a dataset of that shape"
        )


def write_report(run_dir: str | Path) -> Path:
    """Render ``report.md``, ``report.html`` and the plots from the run's JSON; no recompute."""
    import json

    import yaml

    from robustsnn.config import config_from_dict
    from robustsnn.report import markdown_to_html, render_plots, render_report

    rd = RunDir(Path(run_dir))
    if not rd.summary_path.exists():
        raise FileNotFoundError(f"no summary.json in {rd.path}: run the pipeline first")
    summary = json.loads(rd.summary_path.read_text())
    if summary.get("method") == "direct":
        from robustsnn.pipeline_direct import write_direct_report

        return write_direct_report(rd.path)
    config = None
    if rd.config_path.exists():
        config = config_from_dict(yaml.safe_load(rd.config_path.read_text()))
    plots = render_plots(summary, rd.plots_dir)
    relative = {name: str(path.relative_to(rd.path)) for name, path in plots.items()}
    markdown = render_report(summary, config, relative)
    atomic_write_text(rd.report_path, markdown)
    atomic_write_text(
        rd.path / "report.html",
        markdown_to_html(markdown, rd.path, title=f"robustsnn run {summary.get('name', '')}"),
    )
    return rd.report_path


def validate_run(config: RunConfig) -> str:
    """Check what the config alone can tell before a run starts; return the suite's name.

    The suite (built-in or YAML file) and the conversion recipe with its options are checked
    here, so a mistake stops the run before the first stage instead of after ANN training.
    """
    from robustsnn.convert.recipes import check_options

    try:
        suite_name = evaluation_suite(config).name
    except ConfigError:
        raise
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(f"evaluation.suite / evaluation.options: {err}") from None
    _check_model_arguments(config)
    needs_conversion = config.method != "direct" or config.direct.init == "converted"
    if needs_conversion:
        try:
            check_options(config.conversion.recipe, dict(config.conversion.options))
        except ValueError as err:
            raise ConfigError(f"conversion: {err}") from None
    return suite_name


def _check_model_arguments(config: RunConfig) -> None:
    """Build the configured model on the meta device (no memory): wrong ``model.kwargs`` or
    ``model.neuron`` stop the run with the key named, before any data is loaded."""
    from robustsnn.data import dataset_info

    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")  # e.g. zero-element tensors of a placeholder shape
            build_model(config, dataset_info(config.data.dataset))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model.kwargs / model.neuron: {err}") from None


def _stage_plans(config: RunConfig, rd: RunDir, stages: list[str], force, resume: bool, cb):
    """The reuse/run decision of every stage (see :mod:`robustsnn.provenance`), announced."""
    from robustsnn.provenance import force_index, plan_stages, stage_settings

    entries = [(s, rd.path / _CHECKPOINT_NAMES[s], stage_settings(config, s)) for s in stages]
    force_from = force_index(force, stages)
    plans = plan_stages(rd.path, entries, force_from=force_from, note=cb.note)
    for plan in plans:
        if plan.action == "run" and plan.stage in _TRAINING_DIRS:
            plan.resume = _training_resume(
                rd.path / "train" / _TRAINING_DIRS[plan.stage], plan, resume, cb
            )
    return plans


_TRAINING_DIRS = {"ann": "ann", "snn_finetuned": "finetune", "snn_direct": "direct"}


def _training_resume(directory: Path, plan, resume: bool, cb) -> bool:
    """Whether a training stage continues its interrupted epochs; refuses changed settings."""
    from robustsnn.provenance import differences, training_settings_path
    from robustsnn.train.state import STATE_JSON

    state = directory / STATE_JSON
    if not state.exists():
        return resume
    try:
        meta = json.loads(state.read_text(encoding="utf-8"))
        done = int(meta["progress"]["epoch"]) + 1
        tensors = directory / meta["tensors"]
        digest = hashlib.sha256(tensors.read_bytes()).hexdigest()
        intact = digest == meta["sha256"]
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        detail = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        raise CheckpointError(
            f"{state}: unreadable training state ({detail}); pass --no-resume or --force "
            f"{plan.stage} to start the stage over"
        ) from None
    if plan.reason == "forced" or not resume or not intact:
        why = "forced" if plan.reason == "forced" else "--no-resume" if intact else "corrupt"
        cb.note(f"{plan.stage}: discarding its interrupted training ({done} epochs, {why})")
        return False
    path = training_settings_path(directory)
    stored = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    diff = ["no settings recorded"] if stored is None else differences(stored, plan.settings)
    if diff:
        raise RunError(
            f"{directory}: the interrupted training of '{plan.stage}' was made with other "
            f"settings: {'; '.join(diff)}; pass --force {plan.stage} (or --no-resume) to start "
            "it over"
        )
    cb.note(f"{plan.stage}: resuming its interrupted training after epoch {done}")
    return True


def _start_training(directory: Path, plan) -> None:
    """Record the settings of a training stage before its first epoch is written."""
    from robustsnn.provenance import training_settings_path

    atomic_write_json(training_settings_path(directory), plan.settings)


def _evaluate_with_reuse(
    stage: str,
    model,
    test,
    config: RunConfig,
    rd: RunDir,
    *,
    final: bool,
    forced: bool,
    cb: Callbacks,
    stem: str | None = None,
    finish: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[dict[str, Any], float]:
    """Evaluate one stage, reusing or resuming what an earlier (killed) call stored.

    ``eval/STAGE/settings.json`` records the evaluation settings and the checkpoint's SHA-256
    before the attacks start (so the evaluator may resume its per-sample file), and
    ``eval/STAGE/stage.json`` the finished result (reused as it is). Changed settings or
    another checkpoint evaluate again, and say so. ``stem`` names the stage's checkpoint
    (default: the pipeline's name for it); ``finish`` adds entries before the result is stored.
    """
    from robustsnn.provenance import evaluation_settings

    directory = rd.eval_dir / stage
    key = {
        "settings": evaluation_settings(config),
        "diagnostics": final,
        "checkpoint_sha256": read_metadata(rd.path / (stem or _CHECKPOINT_NAMES[stage]))[
            "tensors_sha256"
        ],
    }
    done_path, key_path = directory / "stage.json", directory / "settings.json"
    if not forced:
        stored = _read_json(done_path)
        if stored is not None and stored.get("key") == key:
            cb.stage(f"evaluate {stage}", "reused (finished with the same settings)")
            return stored["result"], float(stored.get("wall_time_s", 0.0))
    resume = not forced and _read_json(key_path) == key
    if not resume and key_path.exists():
        cb.note(f"evaluate {stage}: the model or the evaluation settings changed; evaluating again")
    cb.stage(f"evaluate {stage}", "resuming" if resume else "running")
    atomic_write_json(key_path, key)
    start = time.perf_counter()
    is_snn = stage != "ann"
    suite_name = evaluation_suite(config).name
    result = evaluate_stage(
        model,
        test,
        config,
        is_snn=is_snn,
        diagnostics=final,
        results_path=directory / f"{suite_name}.json",
        progress=_traced(cb.evaluation, stage),
        resume=resume,
    )
    result["time_steps"] = int(getattr(model, "time_steps", 0))
    if config.evaluation.sweep_eps:
        path = _strongest_path(result) if is_snn else "ann"
        result["eps_sweep"] = eps_sweep(model, test, config, path)
    if is_snn and config.evaluation.time_steps_curve:
        result["accuracy_vs_time_steps"] = accuracy_vs_time_steps(model, test, config)
    if finish is not None:
        finish(result)
    elapsed = time.perf_counter() - start
    result = json.loads(to_json(result))  # the values a reused result has
    atomic_write_json(done_path, {"key": key, "result": result, "wall_time_s": elapsed})
    return result, elapsed


def _traced(progress: Callable[[str, int, int], None] | None, stage: str):
    """``progress`` that also reports every call to :func:`robustsnn.io.trace`."""

    def call(label: str, done: int, total: int) -> None:
        trace("attack_progress", stage=stage, label=label, done=done, total=total)
        if progress is not None:
            progress(label, done, total)

    return call


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def run(
    config: RunConfig,
    run_dir: str | Path,
    *,
    force: bool | str | None = None,
    resume: bool = True,
    callbacks: Callbacks | None = None,
) -> dict[str, Any]:
    """Run every stage of ``config`` into ``run_dir``; return the summary (also written).

    The run holds the directory's lock (:mod:`robustsnn.runlock`) throughout. A finished stage
    made with the same settings is reused, an interrupted one continues (``resume``, the
    default; False discards its epochs), and changed settings refuse unless ``force`` names
    that stage or an earlier one (True: every stage), which reruns it and every later stage;
    see :mod:`robustsnn.provenance`. A config with ``method: direct`` trains one SNN directly
    instead (:func:`robustsnn.pipeline_direct.run_direct`).
    """
    from robustsnn.runlock import run_lock

    cb = callbacks or Callbacks()
    validate_run(config)
    with run_lock(run_dir, "robustsnn run", on_message=cb.note) as directory:
        removed = remove_stale_temporaries(directory)
        if removed:
            cb.note(f"removed {len(removed)} temporary file(s) left by an interrupted write")
        if config.method == "direct":
            from robustsnn.pipeline_direct import run_direct

            return run_direct(config, directory, force=force, resume=resume, callbacks=cb)
        return _run_conversion(config, RunDir(directory), force, resume, cb)


def _run_conversion(config: RunConfig, rd: RunDir, force, resume: bool, cb: Callbacks):
    stages = [s for s in STAGES if s != "snn_finetuned" or config.finetune.enabled]
    plans = _stage_plans(config, rd, stages, force, resume, cb)  # may refuse: nothing written
    torch.manual_seed(config.seed)
    train, test = _load_data(config)
    atomic_write_text(rd.config_path, config.to_yaml())
    summary: dict[str, Any] = {
        "name": config.name,
        "dataset": config.data.dataset,
        "model": config.model.name,
        "time_steps": config.conversion.time_steps,
        "stages": {},
        "wall_time_s": {},
    }

    models: dict[str, torch.nn.Module] = {}
    for plan in plans:
        stage, stem = plan.stage, plan.stem
        if plan.action == "reuse":
            cb.stage(stage, f"reused ({plan.reason})")
            models[stage], _ = load_checkpoint(stem)
            summary["wall_time_s"][stage] = _previous_wall_time(rd, stage)
            continue
        cb.stage(stage, f"running ({plan.reason})")
        start = time.perf_counter()
        metadata: dict[str, Any] = {
            "stage": stage,
            "run": config.name,
            "dataset": config.data.dataset,
            "settings": plan.settings,
        }
        if stage == "ann":
            model = build_model(config, train.info)
            _start_training(rd.path / "train" / "ann", plan)
            result = _train_ann(config, model, train, test, rd, plan.resume, cb)
            metadata["recipe"] = {"objective": config.to_dict()["ann"], "seed": config.seed}
        elif stage == "snn_converted":
            model = _convert(config, models["ann"], train)
            metadata["recipe"] = {"conversion": config.to_dict()["conversion"]}
            result = None
        else:
            model = copy.deepcopy(models["snn_converted"])
            _start_training(rd.path / "train" / "finetune", plan)
            result = _finetune(config, model, train, test, rd, plan.resume, cb)
            metadata["recipe"] = {"finetune": config.to_dict()["finetune"]}
        elapsed = time.perf_counter() - start
        if result is not None:
            metadata["metrics"] = {"history": getattr(result, "history", None)}
        metadata["wall_time_s"] = elapsed
        if stage != "ann":
            from robustsnn.convert import conversion_metadata  # COS/SRP hooks, readout delay

            metadata.update(conversion_metadata(model))
        save_checkpoint(model, stem, metadata)  # tensors first, the JSON last: then it is done
        append_jsonl(rd.log_path, {"stage": stage, "event": "done", "wall_time_s": elapsed})
        summary["wall_time_s"][stage] = elapsed
        models[stage] = model

    final = models.get("snn_finetuned", models.get("snn_converted"))
    for stage, model in models.items():
        model.eval()
        result, elapsed = _evaluate_with_reuse(
            stage,
            model,
            test,
            config,
            rd,
            final=model is final,
            forced=force == "evaluate",
            cb=cb,
        )
        summary["stages"][stage] = result
        summary["wall_time_s"][f"evaluate_{stage}"] = elapsed

    if config.energy.enabled and final is not None:
        from robustsnn.energy import energy_report

        steps = config.energy.time_steps or sorted(
            {max(1, config.conversion.time_steps // 2), config.conversion.time_steps}
        )
        summary["energy"] = energy_report(
            final,
            test.images[: config.energy.samples],
            time_steps=steps,
            preset=config.energy.preset,
        )

    atomic_write_json(rd.summary_path, summary)
    write_report(rd.path)
    return summary


def _previous_wall_time(rd: RunDir, stage: str) -> float | None:
    meta_path = rd.path / f"{_CHECKPOINT_NAMES[stage]}.json"
    try:
        import json

        return json.loads(meta_path.read_text()).get("wall_time_s")
    except (OSError, ValueError):
        return None
