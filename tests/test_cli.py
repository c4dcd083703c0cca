"""The command line, in-process: help, listings, checkpoint info and one-line user errors."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from robustsnn import __version__
from robustsnn.cli import app
from robustsnn.io import save_checkpoint
from robustsnn.models import count_parameters, create_model
from robustsnn.snn import set_time_steps

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


def invoke(*args: str):
    return runner.invoke(app, list(args), env=WIDE)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = create_model("small_cnn", input_shape=(1, 8, 8), channels=(4, 6), hidden=12)
    set_time_steps(model, 4)
    model.act1.set_threshold(torch.tensor([0.5, 1.0, 1.5, 2.0]))
    model.act2.configure(reset="zero", initial_potential="half")
    save_checkpoint(
        model,
        tmp_path / "snn",
        {"stage": "snn_finetuned", "metrics": {"clean_accuracy": 0.8125}, "recipe": {"eps": 0.5}},
    )
    return tmp_path / "snn.safetensors", count_parameters(model)


def test_help_lists_the_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("models", "datasets", "info"):
        assert command in result.output


def test_no_arguments_shows_help():
    result = invoke()
    assert "Usage" in result.output and "models" in result.output


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"robustsnn {__version__}"


def test_models_lists_small_cnn_with_its_parameter_count():
    result = invoke("models")
    assert result.exit_code == 0, result.output
    expected = count_parameters(create_model("small_cnn"))
    row = next(line for line in result.output.splitlines() if "small_cnn" in line)
    assert f"{expected:,}" in row and "1x28x28" in row


def test_datasets_lists_embedded_and_on_disk_sets():
    result = invoke("datasets")
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│ ")}
    assert "embedded" in rows["mnist5k"] and "1x28x28" in rows["mnist5k"]
    assert "on disk" in rows["cifar10"] and "3x32x32" in rows["cifar10"]


def test_info_summarises_a_checkpoint(checkpoint):
    path, params = checkpoint
    result = invoke("info", str(path.with_suffix("")))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "small_cnn" in out and f"{params:,}" in out
    assert "4 (SNN)" in out
    assert "min 0.5, mean 1.25, max 2" in out  # per-channel threshold of act1
    act2 = next(line for line in out.splitlines() if "act2" in line)
    assert "zero" in act2 and "θ/2" in act2
    assert "snn_finetuned" in out and "0.8125" in out and "recipe.eps" in out


def _assert_one_line_error(result, fragment):
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert fragment in lines[0]


def test_missing_checkpoint_is_one_line_error(tmp_path):
    result = invoke("info", str(tmp_path / "nothing"))
    _assert_one_line_error(result, "nothing.safetensors")
    assert result.stdout == ""


def test_corrupted_checkpoint_is_one_line_error(checkpoint):
    path, _ = checkpoint
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["architecture"]["name"] = "[bold]no_such_model"  # rich markup must stay literal
    meta_path.write_text(json.dumps(meta))
    result = invoke("info", str(path))
    _assert_one_line_error(result, "[bold]no_such_model")


def test_usage_mistakes_keep_clicks_message():
    result = invoke("no-such-command")
    assert result.exit_code == 2
    assert "No such command" in result.output and "Traceback" not in result.output


# ---- convert ---------------------------------------------------------------------------------
@pytest.fixture
def ann_checkpoint(tmp_path):
    """A small untrained QCFS ANN for 8x8 digits; its metadata names the dataset."""
    torch.manual_seed(0)
    model = create_model(
        "small_cnn",
        input_shape=(1, 8, 8),
        channels=(4, 6),
        hidden=12,
        neuron={"activation": "qcfs", "levels": 4, "clip_value": 1.0},
    )
    save_checkpoint(model.eval(), tmp_path / "ann", {"dataset": "digits", "stage": "ann"})
    return tmp_path / "ann"


def test_convert_writes_the_snn_and_an_accuracy_table(ann_checkpoint, tmp_path):
    from robustsnn.convert.low_latency import presimulation
    from robustsnn.io import load_checkpoint

    out = tmp_path / "snn_cos"
    result = invoke(
        "convert",
        str(ann_checkpoint.with_suffix(".safetensors")),
        "--recipe",
        "cos",
        "--T",
        "1,2,4",
        "--option",
        "presim_steps=2",
        "--option",
        "shift=unit",
        "--samples",
        "24",
        "--calibration",
        "16",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    rows = [line.split("│")[1:3] for line in result.stdout.splitlines() if line.startswith("│")]
    assert [[cell.strip() for cell in row] for row in rows] == [["1", "3"], ["2", "4"], ["4", "6"]]
    snn, meta = load_checkpoint(out)
    assert meta["recipe"] == "cos" and meta["dataset"] == "digits" and meta["time_steps"] == 4
    assert meta["recipe_options"] == {"presim_steps": 2, "shift": "unit"}
    assert presimulation(snn).settings() == {"method": "cos", "presim_steps": 2, "shift": "unit"}
    table = (tmp_path / "snn_cos.md").read_text()
    assert "| 4 | 6 |" in table and set(meta["metrics"]["accuracy_vs_T"]) == {"1", "2", "4"}


def test_convert_default_output_is_next_to_the_checkpoint(ann_checkpoint):
    result = invoke(
        "convert", str(ann_checkpoint), "--recipe", "qcfs", "--T", "2", "--samples", "8"
    )
    assert result.exit_code == 0, result.output
    assert ann_checkpoint.with_name("ann_qcfs.safetensors").exists()
    assert ann_checkpoint.with_name("ann_qcfs.md").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--recipe", "no-such-recipe"], "unknown conversion recipe 'no-such-recipe'"),
        (["--recipe", "cos", "--option", "rho=4"], "has no option rho"),
        (["--recipe", "cos", "--option", "presim_steps=four"], "presim_steps expects int"),
        (["--recipe", "cos", "--option", "presim_steps"], "--option expects KEY=VALUE"),
        (["--recipe", "qcfs", "--option", "time_steps=4"], "give the time steps as T"),
        (["--recipe", "qcfs", "--T", "0,4"], "--T expects integers >= 1"),
        (["--recipe", "qcfs", "--T", "four"], "--T expects integers >= 1"),
        (["--recipe", "percentile", "--option", "percentile=150"], "percentile must be in"),
    ],
)
def test_convert_mistakes_are_one_line_errors(ann_checkpoint, args, fragment):
    result = invoke("convert", str(ann_checkpoint), "--samples", "8", *args)
    _assert_one_line_error(result, fragment)


def test_convert_missing_checkpoint_or_dataset_is_one_line_error(tmp_path):
    result = invoke("convert", str(tmp_path / "nothing"), "--recipe", "qcfs")
    _assert_one_line_error(result, "nothing")
    model = create_model("small_cnn", input_shape=(1, 8, 8), neuron={"activation": "qcfs"})
    save_checkpoint(model, tmp_path / "anon")
    result = invoke("convert", str(tmp_path / "anon"), "--recipe", "qcfs")
    _assert_one_line_error(result, "records no dataset")
    result = invoke(
        "convert", str(tmp_path / "anon"), "--recipe", "qcfs", "--out", str(tmp_path / "anon")
    )
    _assert_one_line_error(result, "would overwrite")
