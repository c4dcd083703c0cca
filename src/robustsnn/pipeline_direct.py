"""The ``method: direct`` job: train an SNN directly with BPTT, evaluate it, write the run.

``run_direct(config, run_dir)`` is what :func:`robustsnn.pipeline.run` does for a config with
``method: direct``. It trains one SNN (:func:`robustsnn.train.train_direct`) from scratch, or
(``direct.init: converted``, the hybrid variants) from the SNN converted from the config's ANN
stage, then evaluates it with the configured suite like every pipeline stage. The summary has
the pipeline's shape (``stages.snn_direct.clean_accuracy``, ``robust[eps]``) plus ``method``,
``objective``, ``encoding``, ``time_steps``, ``training_wall_time_s`` (every training stage,
conversion included) and ``spikes_per_image``, which is what ``robustsnn compare`` reads.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from robustsnn.config import RunConfig
from robustsnn.io import (
    RunDir,
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)

STAGE = "snn_direct"
CHECKPOINT = "snn"


def _fresh_model(config: RunConfig, info) -> torch.nn.Module:
    from robustsnn.pipeline import build_model

    if config.direct.encoding == "direct":
        return build_model(config, info)
    kwargs = dict(config.model.kwargs)
    kwargs["encoding"] = config.direct.encoding
    return build_model(_with_model_kwargs(config, kwargs), info)


def _with_model_kwargs(config: RunConfig, kwargs: dict[str, Any]) -> RunConfig:
    import copy

    changed = copy.deepcopy(config)
    changed.model.kwargs = kwargs
    return changed


def _converted_model(config: RunConfig, train, test, rd: RunDir, ann_plan, cb, wall: dict):
    """The hybrid start: the config's ANN stage (trained or reused), then its conversion."""
    from robustsnn.pipeline import _convert, _start_training, _train_ann, build_model

    stem = rd.path / "ann"
    start = time.perf_counter()
    if ann_plan.action == "reuse":
        cb.stage("ann", f"reused ({ann_plan.reason})")
        ann, meta = load_checkpoint(stem)
        wall["ann"] = meta.get("wall_time_s")
    else:
        cb.stage("ann", f"running ({ann_plan.reason})")
        ann = build_model(config, train.info)
        _start_training(rd.path / "train" / "ann", ann_plan)
        _train_ann(config, ann, train, test, rd, ann_plan.resume, cb)
        wall["ann"] = time.perf_counter() - start
        metadata = {
            "stage": "ann",
            "run": config.name,
            "wall_time_s": wall["ann"],
            "settings": ann_plan.settings,
        }
        save_checkpoint(ann, stem, metadata)
    cb.stage("snn_converted", "running")
    start = time.perf_counter()
    snn = _convert(config, ann, train)
    wall["snn_converted"] = time.perf_counter() - start
    if config.direct.encoding != "direct":
        snn.encoding = config.direct.encoding
    return snn


def _train(config: RunConfig, model, train, test, rd: RunDir, resume: bool, cb):
    from robustsnn.pipeline import _augment
    from robustsnn.train import HireOptions, SparsityOptions, train_direct

    d = config.direct
    return train_direct(
        model,
        train,
        method=d.objective,
        time_steps=d.time_steps,
        surrogate=d.surrogate,
        attack_path=d.attack_path,
        trainable_threshold=d.trainable_threshold,
        eps=d.eps,
        steps=d.steps,
        step_size=d.step_size,
        beta=d.beta,
        hire=HireOptions(**vars(d.hire)),
        sparsity=SparsityOptions(**vars(d.sr)),
        epochs=d.epochs,
        batch_size=d.batch_size,
        optimizer=d.optimizer,
        lr=d.lr,
        momentum=d.momentum,
        weight_decay=d.weight_decay,
        schedule=d.schedule,
        augment=_augment(config, train.info),
        seed=config.seed,
        checkpoint_dir=rd.path / "train" / "direct",
        resume=resume,
        eval_set=test,
        callbacks=cb.train,
    )


def spikes_per_image(model: torch.nn.Module, images: torch.Tensor) -> float:
    """Spikes of every neuron per image at the model's own T (a forward without gradients)."""
    from robustsnn.energy import count_operations

    return float(count_operations(model, images).spikes_per_image)


def run_direct(
    config: RunConfig,
    run_dir: str | Path,
    *,
    force: bool | str | None = None,
    resume: bool = True,
    callbacks: Any = None,
) -> dict[str, Any]:
    """Train, evaluate and report one directly trained SNN; return the summary (also written).

    Stages are reused, resumed or refused by the rule of :mod:`robustsnn.provenance`; the
    caller (:func:`robustsnn.pipeline.run`) holds the run directory's lock.
    """
    from robustsnn.pipeline import Callbacks, _load_data, _start_training, _training_resume
    from robustsnn.provenance import force_index, plan_stages, stage_settings

    cb = callbacks or Callbacks()
    rd = RunDir.create(Path(run_dir))
    d = config.direct
    names = (["ann"] if d.init == "converted" else []) + [STAGE]
    stems = {"ann": rd.path / "ann", STAGE: rd.path / CHECKPOINT}
    entries = [(n, stems[n], stage_settings(config, n)) for n in names]
    plans = plan_stages(rd.path, entries, force_from=force_index(force, names), note=cb.note)
    for plan in plans:
        if plan.action == "run":
            directory = rd.path / "train" / ("ann" if plan.stage == "ann" else "direct")
            plan.resume = _training_resume(directory, plan, resume, cb)
    torch.manual_seed(config.seed)
    train, test = _load_data(config)
    atomic_write_text(rd.config_path, config.to_yaml())
    wall: dict[str, Any] = {}
    stem = stems[STAGE]
    plan = plans[-1]
    if plan.action == "reuse":
        cb.stage(STAGE, f"reused ({plan.reason})")
        model, meta = load_checkpoint(stem)
        wall.update(meta.get("training_wall_time_s", {}))
    else:
        if d.init == "converted":
            model = _converted_model(config, train, test, rd, plans[0], cb, wall)
        else:
            model = _fresh_model(config, train.info)
        cb.stage(STAGE, f"running ({plan.reason})")
        start = time.perf_counter()
        _start_training(rd.path / "train" / "direct", plan)
        result = _train(config, model, train, test, rd, plan.resume, cb)
        wall[STAGE] = time.perf_counter() - start
        if result.resumed_from is not None:  # count the epochs of the interrupted call too
            wall[STAGE] = max(wall[STAGE], sum(r.get("seconds", 0.0) for r in result.history))
        metadata = {
            "stage": STAGE,
            "run": config.name,
            "dataset": config.data.dataset,
            "settings": plan.settings,
            "recipe": {"direct": config.to_dict()["direct"], "seed": config.seed},
            "metrics": {"history": result.history},
            "wall_time_s": wall[STAGE],
            "training_wall_time_s": dict(wall),
        }
        save_checkpoint(model, stem, metadata)  # tensors first, the JSON last: then it is done
        append_jsonl(rd.log_path, {"stage": STAGE, "event": "done", "wall_time_s": wall[STAGE]})

    model.eval()
    result, evaluation_time = _evaluate_direct(
        model, test, config, rd, forced=force == "evaluate", cb=cb
    )
    spikes = result["spikes_per_image"]
    summary: dict[str, Any] = {
        "name": config.name,
        "dataset": config.data.dataset,
        "model": config.model.name,
        "method": "direct",
        "objective": d.objective,
        "init": d.init,
        "encoding": d.encoding,
        "time_steps": d.time_steps,
        "stages": {STAGE: result},
        "wall_time_s": {**wall, f"evaluate_{STAGE}": evaluation_time},
        "training_wall_time_s": sum(v for v in wall.values() if v is not None),
        "spikes_per_image": spikes,
    }
    if config.energy.enabled:
        from robustsnn.energy import energy_report

        summary["energy"] = energy_report(
            model,
            test.images[: config.energy.samples],
            time_steps=config.energy.time_steps or [d.time_steps],
            preset=config.energy.preset,
        )
    atomic_write_json(rd.summary_path, summary)
    write_direct_report(rd.path)
    return summary


def _evaluate_direct(model, test, config: RunConfig, rd: RunDir, *, forced: bool, cb):
    """The suite, sweeps and spike count of the trained SNN, reused or resumed like a
    pipeline stage's evaluation (``eval/snn_direct/stage.json``)."""
    from robustsnn.pipeline import _evaluate_with_reuse

    def extra(result: dict[str, Any]) -> None:
        result["time_steps"] = config.direct.time_steps
        result["spikes_per_image"] = spikes_per_image(model, test.images[: config.energy.samples])

    return _evaluate_with_reuse(
        STAGE, model, test, config, rd, final=True, forced=forced, cb=cb, stem=CHECKPOINT,
        finish=extra,
    )  # fmt: skip


def describe_method(config: RunConfig) -> str:
    """One sentence on how the SNN was trained (for the report)."""
    d = config.direct
    start = "from the converted SNN of the ANN stage" if d.init == "converted" else "from scratch"
    text = {
        "ce": "cross-entropy",
        "pgd_at": f"end-to-end PGD-AT (ε = {d.eps:.4g}, {d.steps} steps)",
        "trades": f"end-to-end TRADES (β = {d.beta}, ε = {d.eps:.4g}, {d.steps} steps)",
        "hire": (
            f"HIRE-SNN ({d.hire.periods} periods, noise bound "
            f"{d.eps if d.hire.eps is None else d.hire.eps:.4g}, gradient: {d.hire.noise_gradient})"
        ),
        "sr": (
            f"gradient-sparsity regularisation (λ = {d.sr.weight}, h = {d.sr.h}"
            + (f", at PGD examples ε = {d.eps:.4g})" if d.sr.adversarial else ")")
        ),
    }[d.objective]
    return (
        f"Direct SNN training {start} with BPTT through `{d.surrogate}`: {text}; "
        f"{d.epochs} epochs, T = {d.time_steps}, {d.encoding} coding."
    )


def write_direct_report(run_dir: str | Path) -> Path:
    """Render ``report.md``, ``report.html`` and plots of a direct run from its JSON."""
    import yaml

    from robustsnn.config import config_from_dict
    from robustsnn.report import markdown_to_html, render_plots, render_report

    rd = RunDir(Path(run_dir))
    summary = json.loads(rd.summary_path.read_text())
    plots = render_plots(summary, rd.plots_dir)
    relative = {name: str(path.relative_to(rd.path)) for name, path in plots.items()}
    markdown = render_report(summary, None, relative)
    if rd.config_path.exists():
        config = config_from_dict(yaml.safe_load(rd.config_path.read_text()))
        head, _, rest = markdown.partition("\n\n")
        markdown = f"{head}\n\n{describe_method(config)}\n\n{rest}"
    atomic_write_text(rd.report_path, markdown)
    atomic_write_text(
        rd.path / "report.html",
        markdown_to_html(markdown, rd.path, title=f"robustsnn run {summary.get('name', '')}"),
    )
    return rd.report_path
