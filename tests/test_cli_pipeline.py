"""The pipeline commands in-process: run, energy, report, and one-line config mistakes."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from robustsnn.cli import app
from tests.test_pipeline import TINY

runner = CliRunner()


def test_run_energy_report_commands(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(dict(TINY, finetune=dict(TINY["finetune"], enabled=False))))
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "worst-case robust" in result.output and "report:" in result.output

    result = runner.invoke(app, ["energy", str(out), "--T", "2,4", "--samples", "8"])
    assert result.exit_code == 0, result.output
    assert "SNN/ANN" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["energy"]["snn"]) == {"2", "4"}

    (out / "report.md").unlink()
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0 and (out / "report.md").exists()


def test_config_mistake_is_one_line_without_traceback(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"ann": {"eps": -1}}))
    result = runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "ann.eps" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["run", "demo", "--set", "conversion.time_steps=0"])
    assert result.exit_code == 2 and "T >= 1" in result.output
    result = runner.invoke(app, ["energy", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "not found" in result.output
