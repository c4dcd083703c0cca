"""``robustsnn evaluate`` and ``evaluate_checkpoint``: results files, report section, the
pipeline's suite-driven stage evaluation, and one-line user mistakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from typer.testing import CliRunner

from robustsnn.attacks import autoattack_available, evaluate_checkpoint
from robustsnn.cli import app
from robustsnn.config import config_from_dict
from robustsnn.io import save_checkpoint
from robustsnn.models import create_model
from robustsnn.pipeline import run
from robustsnn.snn import set_time_steps
from tests.test_pipeline import TINY

runner = CliRunner()
WIDE = {"COLUMNS": "200"}
SMALL_SUITE = {
    "base": "quick",
    "paths": ["triangle:1.0", "rect:1.0", "ann"],
    "pairs": [],
    "steps": 3,
    "samples": 24,
    "diagnostics": ["zero_gradients", "random_noise"],
}


def invoke(*args: str):
    return runner.invoke(app, list(args), env=WIDE)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished tiny run (digits, no finetuning) whose stage evaluations use the quick suite
    with one cheap diagnostic."""
    folder = tmp_path_factory.mktemp("evaluate")
    evaluation = dict(TINY["evaluation"], options={"diagnostics": ["zero_gradients"]})
    data = dict(TINY, finetune=dict(TINY["finetune"], enabled=False), evaluation=evaluation)
    summary = run(config_from_dict(data), folder / "run")
    return folder / "run", summary


@pytest.fixture
def suite_file(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(SMALL_SUITE))
    return path


def test_run_evaluates_every_stage_with_the_configured_suite(tiny_run):
    run_dir, summary = tiny_run
    ann, snn = summary["stages"]["ann"], summary["stages"]["snn_converted"]
    assert snn["attack"]["suite"] == "quick" and snn["attack"]["attacks"] == ["fgsm", "pgd"]
    assert snn["attack"]["paths"] == ["triangle:1.0", "ann", "assg:atan:0.425/dr"]
    names = {m["name"] for m in snn["robust"]["0.1"]["members"]}
    assert names == {
        "fgsm/triangle:1.0", "pgd/triangle:1.0", "fgsm/ann", "pgd/ann",
        "sapgd/assg:atan:0.425/dr",
    }  # fmt: skip
    assert set(ann["robust"]["0.1"]["per_member"]) == {"fgsm", "pgd", "sapgd"}
    cumulative = list(snn["robust"]["0.1"]["per_member"].values())
    assert cumulative == sorted(cumulative, reverse=True)
    assert cumulative[-1] == snn["robust"]["0.1"]["worst_case_accuracy"]
    # diagnostics on the final model only; per-sample records kept per stage
    assert "zero_gradients" in snn["diagnostics"] and not ann["diagnostics"]
    assert (run_dir / "eval" / "snn_converted" / "quick.json").exists()
    assert "## Diagnostics: converted SNN" in (run_dir / "report.md").read_text()


def test_evaluate_command_writes_results_and_report_section(tiny_run, suite_file):
    run_dir, _ = tiny_run
    result = invoke(
        "evaluate", str(run_dir), "--suite", str(suite_file), "--eps", "0.1,0.3", "--samples", "16"
    )
    assert result.exit_code == 0, result.output
    assert "worst case" in result.output and "results:" in result.output
    stored = json.loads((run_dir / "eval" / "small.json").read_text())
    assert stored["summary"]["samples"] == 16
    summary = json.loads((run_dir / "summary.json").read_text())
    evaluation = summary["evaluations"]["small"]
    assert set(evaluation["robust"]) == {"0.1", "0.3"}
    assert evaluation["settings"]["paths"] == ["triangle:1.0", "rect:1.0", "ann"]
    assert evaluation["settings"]["time_steps"] == 4 and evaluation["settings"]["steps"] == 3
    report = (run_dir / "report.md").read_text()
    assert "## Evaluation: small" in report
    assert "| `pgd/rect:1.0` |" in report and "random_noise" in report
    # the stage tables of the run are still there
    assert "## Summary" in report

    # the same evaluation as one Python call: resumes from the file, same numbers
    done = evaluate_checkpoint(run_dir, suite_file, eps=[0.1, 0.3], samples=16)
    for key in ("0.1", "0.3"):
        assert done.summary["robust"][key]["worst_case_accuracy"] == pytest.approx(
            evaluation["robust"][key]["worst_case_accuracy"]
        )
    assert done.results_path == run_dir / "eval" / "small.json"


def _loose_checkpoint(folder, dataset: str | None = "digits"):
    torch.manual_seed(0)
    model = create_model("small_cnn", input_shape=(1, 8, 8), channels=(4, 6), hidden=12)
    set_time_steps(model, 2)
    meta = {"dataset": dataset} if dataset else {}
    save_checkpoint(model, folder / "net", meta)
    return folder / "net.safetensors"


def test_checkpoint_outside_a_run_writes_next_to_it_or_to_out(tmp_path, suite_file):
    checkpoint = _loose_checkpoint(tmp_path)
    done = evaluate_checkpoint(checkpoint, suite_file, eps=[0.2], samples=8)
    assert done.run_dir is None
    assert done.results_path == tmp_path / "eval" / "net.small.json"
    section = done.report_path.read_text()
    assert section.startswith("## Evaluation: small") and "ε = 0.2" in section

    out = tmp_path / "elsewhere"
    result = invoke(
        "evaluate", str(checkpoint), "--suite", str(suite_file), "--eps", "8/255",
        "--samples", "8", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    stored = json.loads((out / "eval" / "net.small.json").read_text())
    assert list(stored["summary"]["per_eps"]) == ["0.0313725"]


def _assert_one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0]


def test_user_mistakes_are_one_line_errors(tmp_path, suite_file):
    checkpoint = _loose_checkpoint(tmp_path)
    _assert_one_line_error(invoke("evaluate", str(tmp_path / "missing")), "missing")
    _assert_one_line_error(
        invoke("evaluate", str(checkpoint), "--suite", "strongest"), "no suite 'strongest'"
    )
    _assert_one_line_error(invoke("evaluate", str(checkpoint), "--eps", "0.1,big"), "--eps")
    _assert_one_line_error(invoke("evaluate", str(checkpoint), "--eps", "-0.1"), "0 < ε <= 1")
    _assert_one_line_error(
        invoke("evaluate", str(checkpoint), "--suite", str(suite_file), "--samples", "0"),
        "samples",
    )
    _assert_one_line_error(
        invoke("evaluate", str(checkpoint), "--cross-check", "fab"), "unknown cross-check"
    )
    bare = tmp_path / "bare"
    bare.mkdir()
    no_dataset = _loose_checkpoint(bare, dataset=None)
    _assert_one_line_error(
        invoke("evaluate", str(no_dataset), "--suite", str(suite_file)), "--dataset"
    )


@pytest.mark.skipif(autoattack_available(), reason="pyautoattack is installed")
def test_cross_check_without_pyautoattack_says_how_to_install(tmp_path):
    checkpoint = _loose_checkpoint(tmp_path)
    result = invoke("evaluate", str(checkpoint), "--cross-check", "autoattack")
    _assert_one_line_error(result, "pip install --no-deps pyautoattack")


@pytest.mark.skipif(not autoattack_available(), reason="needs the optional pyautoattack")
def test_cross_check_with_autoattack_is_stored_and_reported(tmp_path, suite_file):
    checkpoint = _loose_checkpoint(tmp_path)
    done = evaluate_checkpoint(
        checkpoint, suite_file, eps=[0.3], samples=4, cross_check="autoattack"
    )
    check = done.summary["cross_check"]["0.3"]
    assert 0.0 <= check["robust_accuracy"] <= done.result.clean_accuracy
    assert "AutoAttack cross-check" in done.report_path.read_text()


def test_the_default_suite_is_strong_in_a_fresh_process(tmp_path):
    """`robustsnn evaluate CHECKPOINT` with no --suite runs `strong` in a new process; with
    tuning on, the sharpness is tuned on samples after the reported ones, recorded, shown,
    and the tuned member runs beside the suite's own."""
    checkpoint = _loose_checkpoint(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    command = [sys.executable, "-m", "robustsnn", "evaluate", str(checkpoint), "--eps", "0.1"]
    done = subprocess.run(
        [*command, "--samples", "6"], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr
    stored = json.loads((tmp_path / "eval" / "net.strong.json").read_text())
    per_eps = stored["summary"]["per_eps"]["0.1"]
    names = [m["name"] for m in per_eps["members"]]
    assert sorted(names) == [
        "apgd-dlr/arctan:8.0/dr", "apgd-dlr/assg:atan:0.425/dr", "pgd/ann",
        "sapgd/assg:atan:0.425/dr",
    ]  # fmt: skip
    assert per_eps["tuning"] == {}

    tuned = tmp_path / "tuned.yaml"
    tuned.write_text(yaml.safe_dump({"base": "strong", "tune_iterations": 1, "tune_samples": 60}))
    done = subprocess.run(
        [*command, "--samples", "6", "--suite", str(tuned)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stored = json.loads((tmp_path / "eval" / "net.tuned.json").read_text())
    per_eps = stored["summary"]["per_eps"]["0.1"]
    tuning = per_eps["tuning"]
    assert set(tuning) == {"assg:atan:0.425/dr", "arctan:8.0/dr"}
    assert all(t["separate"] and 0 < t["samples"] <= 60 for t in tuning.values())
    names = {m["name"] for m in per_eps["members"]}
    assert {"sapgd/assg:atan:0.425/dr", "apgd-dlr/arctan:8.0/dr"} <= names
    for path, t in tuning.items():
        assert any(name.endswith("/" + t["chosen"]) for name in names), (path, t["chosen"])
        assert len(t["trials"]) >= 3  # the suite's value and two points of one search round
    assert "Sharpness tuned at ε = 0.1" in (tmp_path / "eval" / "net.tuned.md").read_text()
