"""Training-state checkpoints (model, optimizer, schedule, progress) without pickle.

After every epoch the loop writes two files into its checkpoint directory:

* ``state-EEEE.safetensors``: every tensor (``model.<key>``, ``optim.<index>.<key>``);
* ``state.json``: everything else (epoch, metrics history, optimizer hyperparameters and
  scalar state, schedule, seed, the training settings) plus the name and SHA-256 of the tensor
  file it belongs to.

The tensor file is written first under a new name, then the JSON replaces the old one
atomically, then older tensor files are removed. A kill at any moment therefore leaves either
the previous complete state or the new one, never a mix.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustsnn.io import atomic_write_bytes, atomic_write_json

STATE_JSON = "state.json"
STATE_FORMAT = 1


def _tensor_file(epoch: int) -> str:
    return f"state-{epoch:04d}.safetensors"


def _tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Split model and optimizer state into tensors (safetensors) and JSON scalars."""
    tensors: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        tensors[f"model.{key}"] = value.detach().cpu().contiguous().clone()
    optim = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in optim["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": optim["param_groups"], "scalars": scalars}


def save_training_state(
    directory: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: dict[str, Any],
) -> Path:
    """Write the state after a finished epoch; ``progress`` must hold ``epoch`` (JSON-able).

    Returns the path of ``state.json``.
    """
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    epoch = int(progress["epoch"])
    tensors, optim_meta = _tensors(model, optimizer)
    payload = save(tensors)
    name = _tensor_file(epoch)
    atomic_write_bytes(directory / name, payload)
    meta = {
        "format": STATE_FORMAT,
        "tensors": name,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "progress": progress,
        "optimizer": optim_meta,
    }
    path = atomic_write_json(directory / STATE_JSON, meta)
    for old in directory.glob("state-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return path


def read_progress(directory: str | Path) -> dict[str, Any] | None:
    """The ``progress`` of the last complete state in ``directory``, or None if there is none."""
    meta = _read_meta(Path(directory))
    return None if meta is None else meta["progress"]


def _read_meta(directory: Path) -> dict[str, Any] | None:
    path = directory / STATE_JSON
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text())
    except (ValueError, OSError) as err:
        raise ValueError(
            f"{path}: unreadable training state ({err}); delete the directory to start over"
        ) from None
    if meta.get("format") != STATE_FORMAT:
        raise ValueError(
            f"{path}: training state format {meta.get('format')!r} is not {STATE_FORMAT}; "
            "delete the directory to start over"
        )
    return meta


def load_training_state(
    directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any] | None:
    """Restore ``model`` and ``optimizer`` from ``directory``; return the progress.

    Returns None (and changes nothing) when the directory holds no state.
    """
    from safetensors.torch import load

    directory = Path(directory)
    meta = _read_meta(directory)
    if meta is None:
        return None
    tensor_path = directory / meta["tensors"]
    try:
        payload = tensor_path.read_bytes()
    except OSError as err:
        raise ValueError(
            f"{tensor_path}: missing or unreadable ({err}); delete {directory} to start over"
        ) from None
    if hashlib.sha256(payload).hexdigest() != meta["sha256"]:
        raise ValueError(f"{tensor_path}: checksum mismatch; delete {directory} to start over")
    tensors = load(payload)
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(model_state, strict=True)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, entry in meta["optimizer"]["scalars"].items():
        state.setdefault(int(index), {}).update(entry)
    groups = meta["optimizer"]["param_groups"]
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return meta["progress"]


def clear_training_state(directory: str | Path) -> None:
    """Remove the state files this module writes (not the rest of the directory)."""
    directory = Path(directory)
    (directory / STATE_JSON).unlink(missing_ok=True)
    for old in directory.glob("state-*.safetensors"):
        old.unlink(missing_ok=True)
