"""Which settings made each stage of a run, and the one rule for reusing, resuming and forcing.

Every stage checkpoint records, under ``settings``, the config keys that determine it: the seed,
the data, the model and every training section up to and including its own (the converted SNN
depends on the ANN's training too). A rerun in the same directory compares them with the
config it is given:

* a finished stage whose settings match is reused, and said so;
* an interrupted training stage whose settings match continues from its last epoch (unless
  ``resume`` is off, which discards the interrupted epochs and says so);
* any difference refuses the whole run before anything is written, naming every key that
  changed, unless ``force`` names that stage or an earlier one: then that stage and every stage
  after it run again (their old files are discarded, and said so);
* a torn checkpoint pair (a kill between its two files) is discarded, and said so;
* once one stage runs, every later stage runs too: it would otherwise be built on another
  model than the one on disk.

Evaluation is not training: changed ``evaluation`` settings re-evaluate (and say so) without
refusing, and unchanged ones reuse or resume the stored results.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustsnn.config import RunConfig
from robustsnn.errors import RunError
from robustsnn.io import checkpoint_files, discard_torn_checkpoint, read_metadata

_IGNORED = {"data.root"}  # where the data lives does not change what a stage computes

STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "ann": ("ann",),
    "snn_converted": ("ann", "conversion"),
    "snn_finetuned": ("ann", "conversion", "finetune"),
    "snn_direct": ("direct",),
}
"""The training sections each stage depends on (beside ``seed``, ``data`` and ``model``)."""


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}.{key}"))
        return out
    return {prefix: value}


def stage_settings(config: RunConfig, stage: str, extra: Sequence[str] = ()) -> dict[str, Any]:
    """The dotted config keys (and values) that determine ``stage``; ``extra`` adds sections."""
    data = json.loads(json.dumps(config.to_dict()))  # plain JSON values, as stored
    sections = ("data", "model", *STAGE_SECTIONS[stage], *extra)
    if stage == "snn_direct" and config.direct.init == "converted":
        sections = (*sections, "ann", "conversion")
    settings: dict[str, Any] = {"seed": data["seed"], "method": data["method"]}
    for section in dict.fromkeys(sections):
        settings.update(_flat(data[section], section))
    return {k: v for k, v in sorted(settings.items()) if k not in _IGNORED}


def evaluation_settings(config: RunConfig) -> dict[str, Any]:
    """The keys that determine a stage's evaluation (the attacks, sweeps and curves)."""
    data = json.loads(json.dumps(config.to_dict()))
    settings: dict[str, Any] = {"seed": data["seed"]}
    settings.update(_flat(data["data"], "data"))
    settings.update(_flat(data["evaluation"], "evaluation"))
    return {k: v for k, v in sorted(settings.items()) if k not in _IGNORED}


def differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: stored → current`` for every key whose value differs (missing keys included)."""
    out = []
    for key in sorted(set(stored) | set(current)):
        if stored.get(key, "<unset>") != current.get(key, "<unset>"):
            out.append(f"{key} {_short(stored.get(key, '<unset>'))} → {_short(current.get(key))}")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class StagePlan:
    """What a run does with one stage: ``reuse`` its checkpoint or ``run`` it."""

    stage: str
    stem: Path
    settings: dict[str, Any]
    action: str = "run"
    reason: str = "not run yet"
    resume: bool = False  # a stage that runs: continue its interrupted training epochs


def force_index(force: bool | str | None, stages: Sequence[str]) -> int | None:
    """The index of the first stage ``force`` reruns (True: all), or None.

    Raises RunError for a stage name the run does not have.
    """
    if force is None or force is False or force == "evaluate":
        return None  # --force evaluate re-evaluates every stage and retrains none
    if force is True or force == "all":
        return 0
    aliases = {"finetune": "snn_finetuned", "convert": "snn_converted", "snn": stages[-1]}
    name = aliases.get(str(force), str(force))
    if name not in stages:
        raise RunError(
            f"--force {force}: not a stage of this run; accepted: {', '.join(stages)}, "
            "evaluate, all"
        )
    return list(stages).index(name)


def plan_stages(
    run_dir: Path,
    stages: Sequence[tuple[str, Path, dict[str, Any]]],
    *,
    force_from: int | None,
    note: Callable[[str], None],
) -> list[StagePlan]:
    """Decide, before any work, which stages are reused and which run (see the module rule).

    ``stages`` lists ``(stage, checkpoint stem, settings)`` in pipeline order. Torn pairs are
    discarded (with a note). Raises :class:`~robustsnn.errors.RunError`, naming every changed
    key, when a finished stage was made with other settings and ``force_from`` does not cover
    it. Checkpoints of stages that will run again are left in place until they are replaced.
    """
    plans = [StagePlan(stage, stem, settings) for stage, stem, settings in stages]
    changed: dict[str, list[str]] = {}
    for plan in plans:
        message = discard_torn_checkpoint(plan.stem)
        if message is not None:
            note(f"{plan.stage}: {message}; it runs again")
        if not checkpoint_files(plan.stem)[1].exists():
            continue
        stored = read_metadata(plan.stem).get("settings")
        if stored is None:
            changed[plan.stage] = ["the checkpoint records no settings (an older robustsnn)"]
            continue
        diff = differences(stored, plan.settings)
        if diff:
            changed[plan.stage] = diff
        else:
            plan.action, plan.reason = "reuse", "finished with the same settings"
    if changed:
        first = next(p.stage for p in plans if p.stage in changed)
        covered = force_from is not None and force_from <= [p.stage for p in plans].index(first)
        if not covered:
            keys = list(dict.fromkeys(d for diff in changed.values() for d in diff))
            raise RunError(
                f"{run_dir}: the settings differ from those that made stage '{first}': "
                f"{'; '.join(keys)}; pass --force {first} to rerun it and every later stage, "
                "or write to another directory with -o"
            )
    for index, plan in enumerate(plans):
        if force_from is not None and index >= force_from:
            plan.action, plan.reason = "run", "forced"
        if index > 0 and plans[index - 1].action == "run" and plan.action == "reuse":
            plan.action, plan.reason = "run", f"'{plans[index - 1].stage}' runs again"
    return plans


def training_settings_path(checkpoint_dir: Path) -> Path:
    """Where a training stage records the settings its interrupted epochs were trained with."""
    return checkpoint_dir / "settings.json"
