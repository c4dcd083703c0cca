"""Checkpoints round-trip exactly, writes are atomic, and nothing is ever unpickled unsafely."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import load_file

from robustsnn import io
from robustsnn.io import (
    RunDir,
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    checkpoint_files,
    import_state_dict,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from robustsnn.models import create_model
from robustsnn.models.small import SmallCNN
from robustsnn.snn import named_neurons, set_time_steps


def _tiny(**kwargs):
    """An 8x8 small_cnn with random BN statistics (so the buffers matter), in eval mode."""
    torch.manual_seed(0)
    model = create_model(
        "small_cnn",
        input_shape=(1, 8, 8),
        channels=(4, 6),
        hidden=12,
        mean=[0.3],
        std=[0.4],
        bias=True,
        **kwargs,
    )
    with torch.no_grad():
        for bn in (model.bn1, model.bn2):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.uniform_(0.5, 1.5)
            bn.num_batches_tracked.fill_(7)
    return model.eval()


def _spiking(model):
    """Every neuron feature a checkpoint must carry, set away from its default."""
    set_time_steps(model, 5)
    model.act1.set_threshold(torch.tensor([0.3, 0.7, 1.1, 0.45]))
    model.act1.configure(trainable_threshold=True, threshold_min=0.05)
    model.act2.set_threshold(0.6)
    model.act2.set_initial_potential(torch.rand(6, 8, 8) * 0.3)
    model.act3.configure(
        reset="zero",
        initial_potential="half",
        strict_firing=True,
        spike_amplitude="threshold",
        leak=0.875,
        gradient_path="exp:0.3:2.0",
    )
    return model


def _assert_same_model(a, b, x):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key
    assert [n for n, _ in named_neurons(a)] == [n for n, _ in named_neurons(b)]
    for (_, na), (_, nb) in zip(named_neurons(a), named_neurons(b), strict=True):
        assert na.settings() == nb.settings()
        assert na.time_steps == nb.time_steps
        assert na.threshold.requires_grad == nb.threshold.requires_grad
    assert a.time_steps == b.time_steps and a.encoding == b.encoding
    assert not b.training
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_round_trip_ann_is_exact(tmp_path):
    model = _tiny(neuron={"activation": "qcfs", "levels": 4, "clip_value": 2.5})
    with torch.no_grad():
        model.act2.clip_value.fill_(1.75)
    x = torch.rand(3, 1, 8, 8)
    written = save_checkpoint(model, tmp_path / "ann")
    assert written == tmp_path / "ann.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ann.json", "ann.safetensors"]

    loaded, meta = load_checkpoint(tmp_path / "ann")
    _assert_same_model(model, loaded, x)
    assert loaded.act2.clip_value.item() == 1.75
    assert meta["time_steps"] == 0
    assert meta["architecture"]["name"] == "small_cnn"
    assert meta["normalisation"]["mean"] == pytest.approx([0.3])
    assert meta["normalisation"]["std"] == pytest.approx([0.4])


def test_round_trip_snn_is_exact_for_every_neuron_setting(tmp_path):
    model = _spiking(_tiny())
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert model(x).abs().sum() > 0  # the network actually spikes
    save_checkpoint(model, tmp_path / "snn.safetensors", {"stage": "snn", "metrics": {"acc": 0.5}})

    loaded, meta = load_checkpoint(tmp_path / "snn.json")
    _assert_same_model(model, loaded, x)
    assert loaded.act1.per_channel and loaded.act1.threshold.shape == (4,)
    assert torch.equal(loaded.act2.initial_potential, model.act2.initial_potential)
    assert loaded.act3.settings()["gradient_path"] == "exp:0.3:2.0"
    assert meta["stage"] == "snn" and meta["metrics"] == {"acc": 0.5}
    # Gradients through the loaded SNN (trainable per-channel θ) match the original too.
    for m in (model, loaded):
        m(x).sum().backward()
    assert torch.equal(model.act1.threshold.grad, loaded.act1.threshold.grad)


def test_round_trip_poisson_encoding_with_seed(tmp_path):
    model = _tiny(encoding="poisson")
    set_time_steps(model, 6)
    model.reseed(123)
    save_checkpoint(model, tmp_path / "rate")
    loaded, meta = load_checkpoint(tmp_path / "rate")
    assert meta["encoding"] == "poisson" and meta["poisson_seed"] == 123
    model.reseed(123)
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize("recipe", ["cos", "srp"])
def test_load_checkpoint_restores_cos_and_srp_calibration(tmp_path, recipe):
    """The calibration hooks are not tensors: load_checkpoint re-installs them from the
    conversion metadata, so the loaded SNN gives the saved one's outputs exactly."""
    from robustsnn.convert import conversion_metadata, convert, remove_presimulation
    from robustsnn.convert.low_latency import presimulation

    model = _tiny(neuron={"activation": "qcfs", "levels": 4, "clip_value": 1.5})
    snn = convert(model, recipe, time_steps=4, presim_steps=3)
    save_checkpoint(snn, tmp_path / "snn", conversion_metadata(snn))
    loaded, meta = load_checkpoint(tmp_path / "snn")
    assert meta["presimulation"]["method"] == recipe
    assert presimulation(loaded).settings() == presimulation(snn).settings()
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        expected = snn(x)
        assert torch.equal(loaded(x), expected)
        plain, _ = load_checkpoint(tmp_path / "snn")
        remove_presimulation(plain)
        assert not torch.equal(plain(x), expected)  # the hooks matter for this input


def test_load_checkpoint_restores_a_zoo_models_readout_delay(tmp_path):
    from robustsnn.convert import conversion_metadata, set_readout_delay

    model = _tiny()
    set_time_steps(model, 8)
    set_readout_delay(model, 5)
    save_checkpoint(model, tmp_path / "delayed", conversion_metadata(model))
    loaded, meta = load_checkpoint(tmp_path / "delayed")
    assert meta["readout_delay"] == 5 and loaded.readout_delay == 5
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_bad_conversion_metadata_is_a_value_error(tmp_path):
    model = _tiny(neuron={"activation": "qcfs"})
    set_time_steps(model, 4)
    save_checkpoint(model, tmp_path / "bad", {"presimulation": {"method": "nope"}})
    with pytest.raises(ValueError, match="conversion settings.*method"):
        load_checkpoint(tmp_path / "bad")


def test_metadata_contents(tmp_path):
    model = _spiking(_tiny())
    recipe = {"objective": "trades", "eps": 8 / 255, "paths": ["triangle:1.0", "ste"]}
    save_checkpoint(
        model,
        tmp_path / "m",
        {"recipe": recipe, "provenance": {"seed": 7}, "wall_time_s": 1.5},
    )
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["format"] == "robustsnn-checkpoint" and meta["version"] == 1
    assert meta["architecture"]["kwargs"]["channels"] == [4, 6]
    assert meta["input_shape"] == [1, 8, 8] and meta["num_classes"] == 10
    assert meta["time_steps"] == 5 and meta["encoding"] == "direct"
    assert set(meta["neurons"]) == {"act1", "act2", "act3"}
    assert meta["neurons"]["act1"]["per_channel"] is True
    assert meta["neurons"]["act3"]["reset"] == "zero"
    assert meta["recipe"] == recipe and meta["wall_time_s"] == 1.5
    prov = meta["provenance"]
    assert prov["seed"] == 7 and prov["torch_version"] == torch.__version__
    assert {"created_utc", "robustsnn_version", "python_version"} <= set(prov)


def test_reserved_metadata_and_unserialisable_metadata_are_refused(tmp_path):
    model = _tiny()
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(model, tmp_path / "a", {"time_steps": 4})
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(model, tmp_path / "a", {"metrics": {"bad": object()}})
    assert list(tmp_path.iterdir()) == []


def test_bad_metadata_leaves_an_existing_checkpoint_intact(tmp_path):
    model = _tiny()
    save_checkpoint(model, tmp_path / "a", {"stage": "old"})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with torch.no_grad():
        model.fc2.weight.add_(1.0)
    with pytest.raises(ValueError):
        save_checkpoint(model, tmp_path / "a", {"stage": object()})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_model_without_architecture_is_refused(tmp_path):
    model = SmallCNN(input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="create_model"):
        save_checkpoint(model, tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


def test_shared_and_non_contiguous_tensors_are_saved(tmp_path):
    model = _tiny()
    model.register_buffer("tied", model.fc2.weight.detach().t())  # shares storage, strided
    save_checkpoint(model, tmp_path / "tied")
    tensors = load_file(str(tmp_path / "tied.safetensors"))
    assert torch.equal(tensors["tied"], model.fc2.weight.detach().t())
    assert torch.equal(tensors["fc2.weight"], model.fc2.weight.detach())
    assert torch.equal(tensors["bn1.running_var"], model.bn1.running_var)  # buffers included


def test_checkpoint_files_accepts_any_of_the_three_names(tmp_path):
    expected = (tmp_path / "snn.v2.safetensors", tmp_path / "snn.v2.json")
    for given in ("snn.v2", "snn.v2.safetensors", "snn.v2.json"):
        assert checkpoint_files(tmp_path / given) == expected


def test_missing_checkpoint_names_the_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_checkpoint(tmp_path / "gone")
    assert "gone.safetensors" in str(err.value) and "gone.json" in str(err.value)
    save_checkpoint(_tiny(), tmp_path / "half")
    (tmp_path / "half.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="half.safetensors"):
        load_checkpoint(tmp_path / "half")


def _edit_json(path, edit):
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _one_line_value_error(fn, match):
    with pytest.raises(ValueError, match=match) as err:
        fn()
    assert "\n" not in str(err.value)


def test_corrupted_and_foreign_json_give_one_line_value_errors(tmp_path):
    save_checkpoint(_tiny(), tmp_path / "c")
    meta_path = tmp_path / "c.json"
    meta_path.write_text('{"format": "robustsnn-checkpoint", "vers')
    _one_line_value_error(lambda: load_checkpoint(tmp_path / "c"), "not valid JSON")
    meta_path.write_text(json.dumps({"some": "other file"}))
    _one_line_value_error(lambda: read_metadata(meta_path), "not a robustsnn checkpoint")
    meta_path.write_text(json.dumps([1, 2]))
    _one_line_value_error(lambda: read_metadata(meta_path), "not a robustsnn checkpoint")


def test_unknown_architecture_and_shape_mismatch_give_value_errors(tmp_path):
    save_checkpoint(_tiny(), tmp_path / "c")
    original = (tmp_path / "c.json").read_text()
    _edit_json(tmp_path / "c.json", lambda m: m["architecture"].update(name="no_such_model"))
    _one_line_value_error(lambda: load_checkpoint(tmp_path / "c"), "no_such_model")

    (tmp_path / "c.json").write_text(original)
    _edit_json(tmp_path / "c.json", lambda m: m["architecture"]["kwargs"].update(hidden=20))
    meta = json.loads((tmp_path / "c.json").read_text())
    meta.pop("tensors_sha256")  # a consistent pair whose shapes disagree
    (tmp_path / "c.json").write_text(json.dumps(meta))
    _one_line_value_error(lambda: load_checkpoint(tmp_path / "c"), "do not fit the model")

    (tmp_path / "c.json").write_text(original)
    _edit_json(tmp_path / "c.json", lambda m: m.update(version=99))
    _one_line_value_error(lambda: load_checkpoint(tmp_path / "c"), "newer robustsnn")


def test_tensors_from_another_save_are_detected(tmp_path):
    save_checkpoint(_tiny(), tmp_path / "a")
    other = _tiny()
    with torch.no_grad():
        other.fc2.weight.add_(1.0)
    save_checkpoint(other, tmp_path / "b")
    os.replace(tmp_path / "b.safetensors", tmp_path / "a.safetensors")
    _one_line_value_error(lambda: load_checkpoint(tmp_path / "a"), "do not belong")


def test_corrupted_tensor_file_gives_value_error(tmp_path):
    save_checkpoint(_tiny(), tmp_path / "a")
    (tmp_path / "a.safetensors").write_bytes(b"\x00" * 40)
    _edit_json(tmp_path / "a.json", lambda m: m.pop("tensors_sha256"))
    _one_line_value_error(lambda: load_checkpoint(tmp_path / "a"), "safetensors")


def test_load_checkpoint_never_unpickles(tmp_path, monkeypatch):
    save_checkpoint(_spiking(_tiny()), tmp_path / "a")

    def forbidden(*args, **kwargs):
        raise AssertionError("load_checkpoint must not unpickle")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    model, _ = load_checkpoint(tmp_path / "a")
    assert model.time_steps == 5


# ---- foreign weights -------------------------------------------------------------------------
class _Payload:
    """Unpickling this object creates a directory: the stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_malicious_pt_file_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pt"
    state = {"w": torch.ones(2)}
    torch.save({"state_dict": state, "extra": _Payload(marker)}, path)
    with pytest.raises(ValueError, match="refused.*posix.mkdir") as err:
        import_state_dict(path)
    assert "\n" not in str(err.value)
    assert not marker.exists()
    # The payload is live: an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("suffix", [".pkl", ".npy", ".bin", ""])
def test_other_extensions_are_refused_without_reading(tmp_path, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"weights{suffix}"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ValueError, match="refused"):
        import_state_dict(path)
    assert not marker.exists()


def test_import_plain_and_nested_state_dicts(tmp_path):
    model = _tiny()
    state = model.state_dict()
    torch.save(state, tmp_path / "plain.pt")
    torch.save({"epoch": 3, "model": state}, tmp_path / "nested.pth")
    ddp = {f"module.{k}": v for k, v in state.items()}
    torch.save({"state_dict": ddp, "optimizer": {"lr": 0.1}}, tmp_path / "ddp.pt")
    save_checkpoint(model, tmp_path / "ck")
    for name in ("plain.pt", "nested.pth", "ddp.pt", "ck.safetensors"):
        imported = import_state_dict(tmp_path / name)
        assert imported.keys() == state.keys(), name
        assert all(torch.equal(imported[k], state[k]) for k in state), name


def test_import_refuses_non_tensor_content_and_garbage(tmp_path):
    torch.save({"a": 1, "b": "text"}, tmp_path / "numbers.pt")
    with pytest.raises(ValueError, match="tensors"):
        import_state_dict(tmp_path / "numbers.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="garbage.pt: refused"):
        import_state_dict(tmp_path / "garbage.pt")
    with pytest.raises(FileNotFoundError):
        import_state_dict(tmp_path / "missing.pt")


# ---- atomic files ----------------------------------------------------------------------------
def test_atomic_writes_replace_content_and_leave_no_temporary_files(tmp_path):
    path = tmp_path / "sub" / "f.txt"
    atomic_write_text(path, "one")
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    atomic_write_json(tmp_path / "sub" / "f.json", {"t": torch.tensor([1.5]), "p": tmp_path})
    assert json.loads((tmp_path / "sub" / "f.json").read_text()) == {
        "t": [1.5],
        "p": str(tmp_path),
    }
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["f.json", "f.txt"]


def test_new_files_get_normal_permissions(tmp_path):
    path = atomic_write_text(tmp_path / "f.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failed_write_keeps_the_old_file_whole(tmp_path, monkeypatch, failing):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"epoch": 1})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, failing, boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(path, {"epoch": 2, "padding": "x" * 100_000})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_append_jsonl_adds_one_line_per_record(tmp_path):
    path = tmp_path / "runs" / "log.jsonl"
    append_jsonl(path, {"epoch": 0, "loss": 1.25})
    append_jsonl(path, {"epoch": 1, "loss": torch.tensor(0.5)})
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"epoch": 0, "loss": 1.25},
        {"epoch": 1, "loss": 0.5},
    ]


def test_run_dir_layout(tmp_path):
    run = RunDir.create(tmp_path / "runs" / "demo")
    assert run.path.is_dir()
    assert run.config_path == run.path / "config.yaml"
    assert run.ann_checkpoint == run.path / "ann"
    assert run.snn_checkpoint == run.path / "snn"
    assert run.log_path.name == "log.jsonl" and run.summary_path.name == "summary.json"
    assert run.eval_dir == run.path / "eval" and run.plots_dir == run.path / "plots"
    assert run.report_path == run.path / "report.md"
    assert RunDir(str(run.path)) == run
    save_checkpoint(_tiny(), run.ann_checkpoint)
    assert checkpoint_files(run.ann_checkpoint)[0].exists()
