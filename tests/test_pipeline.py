"""The pipeline end to end on tiny real data: run directory, summary, skip, exact resume."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from robustsnn.config import config_from_dict, load_config
from robustsnn.errors import RunError
from robustsnn.pipeline import Callbacks, run

TINY = {
    "name": "tiny",
    "seed": 0,
    "data": {"dataset": "digits", "train_samples": 192, "test_samples": 48},
    "model": {"name": "small_cnn", "kwargs": {"channels": [8, 16], "hidden": 32}},
    "ann": {
        "objective": "pgd_at",
        "eps": 0.1,
        "steps": 2,
        "epochs": 2,
        "batch_size": 64,
        "lr": 0.05,
    },
    "conversion": {
        "time_steps": 4,
        "options": {"time_steps_calibration": 8, "batches": 2, "batch_size": 32},
    },
    "finetune": {"epochs": 1, "batch_size": 64, "eps": 0.1, "lr": 0.01},
    "evaluation": {
        "eps": [0.1],
        "steps": 3,
        "samples": 48,
        "paths": ["triangle:1.0", "ann"],
        "sweep_eps": [0.05, 0.5],
        "sweep_samples": 16,
        "time_steps_curve": [1, 4],
    },
    "energy": {"samples": 8, "time_steps": [2, 4]},
}


def strip_times(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "wall_time_s"}


class Interrupt(Exception):
    pass


class KillAfterFirstEpoch:
    def on_batch(self, epoch, index, total, metrics):
        pass

    def on_epoch(self, epoch, metrics):
        if epoch == 0:
            raise Interrupt


def test_run_writes_the_run_directory_and_resume_is_exact(tmp_path):
    config = config_from_dict(TINY)
    full = run(config, tmp_path / "full")
    for name in (
        "config.yaml",
        "ann.safetensors",
        "ann.json",
        "snn_converted.safetensors",
        "snn.safetensors",
        "snn.json",
        "log.jsonl",
        "summary.json",
        "report.md",
    ):
        assert (tmp_path / "full" / name).exists(), name
    assert set(full["stages"]) == {"ann", "snn_converted", "snn_finetuned"}
    for stage in full["stages"].values():
        robust = stage["robust"]["0.1"]
        assert 0 <= robust["worst_case_accuracy"] <= stage["clean_accuracy"] <= 1
        assert robust["worst_case_accuracy"] <= min(robust["per_member"].values())
    assert set(full["wall_time_s"]) >= {"ann", "snn_converted", "snn_finetuned"}
    report = (tmp_path / "full" / "report.md").read_text()
    assert "finetuned SNN" in report and "## Energy" in report
    for plot in ("robust_vs_eps", "accuracy_vs_t", "members", "firing_rates"):
        assert (tmp_path / "full" / "plots" / f"{plot}.png").exists()
        assert f"plots/{plot}.png" in report
    assert "data:image/png;base64" in (tmp_path / "full" / "report.html").read_text()
    assert set(full["energy"]["snn"]) == {"2", "4"}
    assert full["stages"]["snn_finetuned"]["eps_sweep"]["eps"] == [0.05, 0.5]
    assert set(full["stages"]["snn_finetuned"]["accuracy_vs_time_steps"]) == {"1", "4"}

    with pytest.raises(Interrupt):
        run(config, tmp_path / "killed", callbacks=Callbacks(train=KillAfterFirstEpoch()))
    assert not (tmp_path / "killed" / "ann.safetensors").exists()
    resumed = run(config, tmp_path / "killed", resume=True)
    assert strip_times(resumed) == strip_times(full)
    on_disk = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert strip_times(on_disk) == strip_times(json.loads(json.dumps(full)))


def test_existing_stages_are_skipped_unless_forced(tmp_path):
    data = dict(TINY, finetune=dict(TINY["finetune"], enabled=False))
    config = config_from_dict(data)
    run(config, tmp_path)
    stamp = (tmp_path / "ann.safetensors").stat().st_mtime_ns
    stages = []
    run(config, tmp_path, callbacks=Callbacks(on_stage=lambda s, status: stages.append(status)))
    assert stages[0] == "reused (finished with the same settings)"
    assert (tmp_path / "ann.safetensors").stat().st_mtime_ns == stamp
    converted = (tmp_path / "snn_converted.safetensors").stat().st_mtime_ns
    run(config, tmp_path, force="snn_converted")
    assert (tmp_path / "ann.safetensors").stat().st_mtime_ns == stamp
    assert (tmp_path / "snn_converted.safetensors").stat().st_mtime_ns != converted
    run(config, tmp_path, force=True)
    assert (tmp_path / "ann.safetensors").stat().st_mtime_ns != stamp


def test_changed_settings_refuse_naming_every_key_and_force_reruns(tmp_path):
    data = dict(TINY, finetune=dict(TINY["finetune"], enabled=False))
    run(config_from_dict(data), tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    changed = dict(data, ann=dict(data["ann"], lr=0.02, epochs=1))
    with pytest.raises(RunError) as err:
        run(config_from_dict(changed), tmp_path)
    message = str(err.value)
    assert "'ann'" in message and "ann.lr 0.05 → 0.02" in message and "ann.epochs 2 → 1" in message
    assert "--force ann" in message
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    summary = run(config_from_dict(changed), tmp_path, force="ann")
    assert json.loads((tmp_path / "ann.json").read_text())["settings"]["ann.lr"] == 0.02
    assert summary["stages"]["ann"]["time_steps"] == 0


def write_tiny_cifar10(root, n: int = 8):
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": [int(v) for v in rng.integers(0, 10, n)]}, f)


def test_paper_preset_runs_one_step_on_cifar_format_files(tmp_path):
    write_tiny_cifar10(tmp_path / "data")
    overrides = {
        "data.root": str(tmp_path / "data"),
        "data.train_samples": 8,
        "data.test_samples": 4,
        "ann.epochs": 1,
        "ann.batch_size": 8,
        "ann.steps": 1,
        "conversion.options": {"time_steps_calibration": 2, "batches": 1, "batch_size": 8},
        "conversion.time_steps": 2,
        "finetune.epochs": 1,
        "finetune.batch_size": 8,
        "evaluation.samples": 4,
        "evaluation.steps": 1,
        "evaluation.paths": ["triangle:1.0"],
    }
    config = load_config("cifar10_resnet20_trades", overrides)
    summary = run(config, tmp_path / "run")
    assert summary["stages"]["snn_finetuned"]["time_steps"] == 2
    assert (tmp_path / "run" / "snn.safetensors").exists()
