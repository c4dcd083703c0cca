"""Checkpoints (safetensors + JSON), pickle-free weight import, atomic writes, run directories."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "robustsnn-checkpoint"
VERSION = 1


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(
        path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n"
    )


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line (flushed and synced)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, default=_jsonable) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def _stem(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        return path.with_suffix("")
    return path


def _state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        out[key] = value.detach().cpu().contiguous().clone()
    return out


def checkpoint_metadata(model: nn.Module, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON half of a checkpoint: everything needed to rebuild ``model``."""
    from robustsnn import __version__
    from robustsnn.models.layers import Normalize
    from robustsnn.snn.network import named_neurons

    architecture = getattr(model, "_architecture", None)
    if not architecture:
        raise ValueError(
            "the model carries no architecture information: build it with "
            "robustsnn.models.create_model() (or robustsnn.convert.from_torch())"
        )
    normalize = next((m for m in model.modules() if isinstance(m, Normalize)), None)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "architecture": architecture,
        "input_shape": list(getattr(model, "input_shape", ())),
        "num_classes": getattr(model, "num_classes", None),
        "time_steps": int(getattr(model, "time_steps", 0)),
        "encoding": getattr(model, "encoding", "direct"),
        "neurons": {name: n.settings() for name, n in named_neurons(model)},
        "normalisation": None
        if normalize is None
        else {"mean": normalize.mean.tolist(), "std": normalize.std.tolist()},
        "provenance": {
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "robustsnn_version": __version__,
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
        },
    }
    for key, value in (metadata or {}).items():
        if key in ("format", "version", "architecture", "neurons"):
            raise ValueError(f"metadata key '{key}' is reserved")
        if key == "provenance" and isinstance(value, dict):
            meta["provenance"].update(value)
        else:
            meta[key] = value
    return meta


def save_checkpoint(
    model: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``<stem>.safetensors`` (tensors) and ``<stem>.json`` (how to rebuild), atomically."""
    from safetensors.torch import save

    stem = _stem(path)
    meta = checkpoint_metadata(model, metadata)
    atomic_write_bytes(stem.with_suffix(".safetensors"), save(_state_tensors(model)))
    atomic_write_json(stem.with_suffix(".json"), meta)
    return stem.with_suffix(".safetensors")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON half of a checkpoint, validated."""
    stem = _stem(path)
    meta_path = stem.with_suffix(".json")
    if not meta_path.exists():
        raise FileNotFoundError(
            f"checkpoint not found: expected {meta_path} beside {stem.with_suffix('.safetensors')}"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{meta_path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: not a robustsnn checkpoint (no format '{FORMAT}')")
    if meta.get("version", 0) > VERSION:
        raise ValueError(f"{meta_path}: written by a newer robustsnn (version {meta['version']})")
    return meta


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model of a checkpoint exactly (architecture, neuron settings, T, tensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from robustsnn.models import create_model
    from robustsnn.snn.network import named_neurons, set_time_steps

    stem = _stem(path)
    meta = read_metadata(stem)
    tensor_path = stem.with_suffix(".safetensors")
    if not tensor_path.exists():
        raise FileNotFoundError(f"checkpoint tensors not found: expected {tensor_path}")
    arch = meta["architecture"]
    model = create_model(arch["name"], **arch.get("kwargs", {}))
    neurons = dict(named_neurons(model))
    if set(neurons) != set(meta.get("neurons", {})):
        raise ValueError(f"{stem}: the neurons of '{arch['name']}' do not match the checkpoint")
    for name, settings in meta["neurons"].items():
        settings = dict(settings)
        for fixed in ("channels", "per_channel"):
            settings.pop(fixed, None)
        mode = settings.pop("initial_potential")
        neurons[name].configure(**settings)
        neurons[name].initial_potential_mode = mode
    try:
        state = load_file(str(tensor_path))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{tensor_path}: not a safetensors file ({err})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0:2]
        raise ValueError(
            f"{tensor_path}: tensors do not fit the model ({' '.join(first)})"
        ) from None
    set_time_steps(model, int(meta.get("time_steps", 0)))
    model.encoding = meta.get("encoding", "direct")
    return model.to(device), meta


def import_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from ``.safetensors`` or, without unpickling objects, from ``.pt``/``.pth``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix not in (".pt", ".pth"):
        raise ValueError(
            f"{path}: unsupported weights format '{path.suffix}'; give .safetensors, .pt or .pth"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError and others for unsafe content
        raise ValueError(
            f"{path}: refused: the file holds more than tensors and would need full unpickling, "
            f"which robustsnn never does ({type(err).__name__}). Re-save it as a plain state dict."
        ) from None
    for key in ("state_dict", "model", "net"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


@dataclass(frozen=True)
class RunDir:
    """The files of one run (SPEC.md "Runs, files and the command line")."""

    path: Path

    @classmethod
    def create(cls, path: str | Path) -> RunDir:
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        return cls(p)

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def log_path(self) -> Path:
        return self.path / "log.jsonl"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def plots_dir(self) -> Path:
        return self.path / "plots"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def report_path(self) -> Path:
        return self.path / "report.md"

    def checkpoint(self, name: str) -> Path:
        """Stem of checkpoint ``name`` (``ann``, ``snn_converted``, ``snn``)."""
        return self.path / name
