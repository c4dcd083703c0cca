"""Training-state checkpoints (model + optimizer + progress) without pickle.

Tensors go to ``state.safetensors``, everything else to ``state.json``; both are written
atomically, the JSON last, so a state is complete exactly when its JSON names it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustsnn.io import atomic_write_bytes, atomic_write_json

_STATE = "state"


def save_training_state(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, progress: dict[str, Any]
) -> None:
    """Write the state after a finished epoch (``progress`` holds epoch, history, ...)."""
    from safetensors.torch import save

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
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(directory / f"{_STATE}.safetensors", save(tensors))
    atomic_write_json(
        directory / f"{_STATE}.json",
        {"progress": progress, "param_groups": optim["param_groups"], "optim_scalars": scalars},
    )


def load_training_state(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any] | None:
    """Restore model and optimizer from ``directory``; return the progress, or None if absent."""
    from safetensors.torch import load_file

    meta_path = directory / f"{_STATE}.json"
    tensor_path = directory / f"{_STATE}.safetensors"
    if not meta_path.exists() or not tensor_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        tensors = load_file(str(tensor_path))
    except (ValueError, OSError) as err:
        raise ValueError(
            f"{directory}: unreadable training state ({err}); delete it or use --force"
        ) from None
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(model_state, strict=True)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, entry in meta.get("optim_scalars", {}).items():
        state.setdefault(int(index), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta["progress"]
