"""Checkpoints (safetensors + JSON), pickle-free weight import, atomic writes, run directories.

A checkpoint is a pair of files with one stem: ``<stem>.safetensors`` holds every tensor of the
model's state dict (parameters and buffers: per-channel thresholds, initial potentials, BN
statistics, normalisation) and ``<stem>.json`` holds everything else needed to rebuild the model
exactly: the registry name and arguments, each neuron's settings, T, the input encoding,
provenance and whatever the caller adds (recipe, metrics, stage). Nothing is ever unpickled
when a checkpoint is loaded.
"""

from __future__ import annotations

import hashlib
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

from robustsnn.errors import CheckpointError, NotFoundError, storage

FORMAT = "robustsnn-checkpoint"
VERSION = 1
RESERVED_KEYS = (
    "format",
    "version",
    "architecture",
    "input_shape",
    "num_classes",
    "time_steps",
    "encoding",
    "poisson_seed",
    "neurons",
    "normalisation",
    "tensors_sha256",
)
_TENSOR_SUFFIX = ".safetensors"
_META_SUFFIX = ".json"


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_NEW_FILE_MODE = 0o666 & ~_read_umask()


# ---- atomic files ----------------------------------------------------------------------------
KILL_AT_REPLACE_ENV = "ROBUSTSNN_KILL_AT_REPLACE"
"""Fault injection for the crash tests: with ``N`` set, the process kills itself with SIGKILL
just before its N-th atomic replace (the temporary file is written, the target is not)."""
_replaces = 0


def _crash_hook() -> None:
    """SIGKILL this process at the N-th atomic replace when :data:`KILL_AT_REPLACE_ENV` says so."""
    global _replaces
    target = os.environ.get(KILL_AT_REPLACE_ENV)
    if not target:
        return
    _replaces += 1
    if _replaces == int(target):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


TRACE_ENV = "ROBUSTSNN_TRACE"
"""With a file path set, :func:`trace` appends one JSON line per event to it (the crash tests
count attack batches this way)."""


def trace(event: str, **fields: Any) -> None:
    """Append ``{"event": event, **fields}`` to the file named by :data:`TRACE_ENV`, if set."""
    target = os.environ.get(TRACE_ENV)
    if target:
        with open(target, "a", encoding="utf-8") as f:
            f.write(json.dumps({"event": event, "pid": os.getpid(), **fields}) + "\n")


TEMPORARY_GLOB = ".*.tmp"
"""The names :func:`atomic_write_bytes` gives its temporary files (``.<name>.<random>.tmp``)."""


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    The bytes go to a temporary file in the same directory, are flushed and fsynced, and the
    temporary file then replaces ``path`` in one ``os.replace``. On any failure the temporary
    file is removed and an existing ``path`` is left untouched; an OS failure (full disk,
    read-only file system, a file where a directory should be) becomes a
    :class:`~robustsnn.errors.StorageError` naming ``path`` and the cause.
    """
    path = Path(path)
    with storage(path.parent, "create the directory"):
        path.parent.mkdir(parents=True, exist_ok=True)
    with storage(path, "write", exact=True):
        mode = path.stat().st_mode & 0o777 if path.exists() else _NEW_FILE_MODE
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            _crash_hook()
            os.replace(tmp, path)
            trace("replace", path=str(path))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    _fsync_directory(path.parent)
    return path


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files a killed :func:`atomic_write_bytes` left under ``directory``.

    Only call this while holding the directory's lock (:mod:`robustsnn.runlock`): then no
    other writer can own them. Returns the removed paths.
    """
    removed = []
    for tmp in sorted(Path(directory).rglob(TEMPORARY_GLOB)):
        if tmp.is_file():
            with storage(tmp, "remove"):
                tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_json(obj: Any) -> str:
    """Indented JSON; tensors, numpy scalars/arrays, tuples and paths become plain values."""
    return json.dumps(obj, indent=2, default=_jsonable) + "\n"


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """:func:`atomic_write_bytes` for a JSON document (see :func:`to_json`)."""
    return atomic_write_text(path, to_json(obj))


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line, flushed and fsynced (a log survives a crash)."""
    line = json.dumps(record, default=_jsonable) + "\n"
    path = Path(path)
    with storage(path, "append to"):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


# ---- checkpoints -----------------------------------------------------------------------------
def checkpoint_files(path: str | Path) -> tuple[Path, Path]:
    """``(tensors, metadata)`` paths of a checkpoint named by either file or by its stem."""
    path = Path(path)
    if path.suffix in (_TENSOR_SUFFIX, _META_SUFFIX):
        path = path.with_suffix("")
    return path.with_name(path.name + _TENSOR_SUFFIX), path.with_name(path.name + _META_SUFFIX)


def _state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as independent, contiguous CPU tensors (safetensors refuses shared ones)."""
    return {
        key: value.detach().to("cpu", copy=True).contiguous()
        for key, value in model.state_dict().items()
    }


def _architecture(model: nn.Module) -> dict[str, Any]:
    arch = model.architecture() if hasattr(model, "architecture") else None
    arch = arch or getattr(model, "_architecture", None)
    if not arch or "name" not in arch:
        raise ValueError(
            f"{type(model).__name__} carries no architecture information, so a checkpoint could "
            "not rebuild it: build the model with robustsnn.models.create_model(name, ...)"
        )
    arch = {"name": arch["name"], "kwargs": dict(arch.get("kwargs") or {})}
    try:
        json.dumps(arch)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"the arguments of model '{arch['name']}' cannot be written to JSON ({err}); "
            "pass plain numbers, strings, lists and dicts to create_model()"
        ) from None
    return arch


def checkpoint_metadata(model: nn.Module, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON half of a checkpoint: everything needed to rebuild ``model``, plus ``metadata``.

    ``metadata`` keys are stored at the top level (e.g. ``recipe``, ``metrics``, ``stage``); a
    ``provenance`` dict is merged into the automatic provenance. Keys that describe the model
    itself (:data:`RESERVED_KEYS`) cannot be overridden.
    """
    from robustsnn import __version__
    from robustsnn.models.layers import Normalize
    from robustsnn.snn.network import get_time_steps, named_neurons

    normalize = next((m for m in model.modules() if isinstance(m, Normalize)), None)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "architecture": _architecture(model),
        "input_shape": list(getattr(model, "input_shape", ())),
        "num_classes": getattr(model, "num_classes", None),
        "time_steps": get_time_steps(model),
        "encoding": getattr(model, "encoding", "direct"),
        "poisson_seed": getattr(model, "poisson_seed", None),
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
        if key in RESERVED_KEYS:
            raise ValueError(f"metadata key '{key}' is reserved: it is taken from the model")
        if key == "provenance":
            if not isinstance(value, dict):
                raise ValueError("metadata 'provenance' must be a dict")
            meta["provenance"].update(value)
        else:
            meta[key] = value
    return meta


def save_checkpoint(
    model: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``<stem>.safetensors`` and ``<stem>.json`` atomically; return the tensor file.

    ``path`` may end in ``.safetensors`` (or ``.json``) or be the bare stem. Everything is
    serialised before the first byte is written, so bad metadata leaves an existing
    checkpoint untouched; the JSON records a SHA-256 of the tensor file, so a pair torn by a
    crash between the two writes is detected on load.
    """
    from safetensors.torch import save

    tensor_path, meta_path = checkpoint_files(path)
    meta = checkpoint_metadata(model, metadata)
    blob = save(_state_tensors(model))
    meta["tensors_sha256"] = hashlib.sha256(blob).hexdigest()
    try:
        text = to_json(meta)
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint metadata cannot be written to JSON ({err})") from None
    atomic_write_bytes(tensor_path, blob)
    atomic_write_text(meta_path, text)
    return tensor_path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON half of a checkpoint, checked to be a robustsnn checkpoint this version reads."""
    tensor_path, meta_path = checkpoint_files(path)
    if not meta_path.exists():
        raise NotFoundError(
            f"checkpoint not found: expected {tensor_path} and {meta_path}"
            + (
                ""
                if not tensor_path.exists()
                else f" ({meta_path.name} is missing: its save was interrupted; rerun the stage,"
                " e.g. robustsnn run CONFIG -o RUN_DIR, which discards the torn pair)"
            )
        )
    with storage(meta_path, "read"):
        raw = meta_path.read_bytes()
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{meta_path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f'{meta_path}: not a robustsnn checkpoint (no "format": "{FORMAT}")')
    version = meta.get("version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{meta_path}: invalid checkpoint version {version!r}")
    if version > VERSION:
        raise CheckpointError(
            f"{meta_path}: written by a newer robustsnn (checkpoint version {version}, "
            f"this one reads up to {VERSION}); upgrade robustsnn"
        )
    arch = meta.get("architecture")
    if (
        not isinstance(arch, dict)
        or not isinstance(arch.get("name"), str)
        or not isinstance(arch.get("kwargs", {}), dict)
    ):
        raise CheckpointError(
            f'{meta_path}: \'architecture\' must be {{"name": ..., "kwargs": {{}}}}'
        )
    if not isinstance(meta.get("neurons"), dict):
        raise CheckpointError(f"{meta_path}: 'neurons' must map neuron names to their settings")
    steps = meta.get("time_steps", 0)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise CheckpointError(f"{meta_path}: 'time_steps' must be an integer >= 0, got {steps!r}")
    return meta


def _read_tensors(tensor_path: Path, expected_sha256: str | None) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    if not tensor_path.exists():
        raise NotFoundError(f"checkpoint tensors not found: expected {tensor_path}")
    with storage(tensor_path, "read"):
        blob = tensor_path.read_bytes()
    if expected_sha256 is not None and hashlib.sha256(blob).hexdigest() != expected_sha256:
        raise CheckpointError(
            f"{tensor_path}: the tensors do not belong to {tensor_path.stem}.json "
            "(the file was replaced or a save was interrupted); save the checkpoint again"
        )
    try:
        return load(blob)
    except (SafetensorError, ValueError, OSError) as err:
        raise CheckpointError(f"{tensor_path}: not a readable safetensors file ({err})") from None


def _configure_neurons(model: nn.Module, settings: dict[str, Any], where: Path) -> None:
    from robustsnn.snn.network import named_neurons
    from robustsnn.snn.neuron import INITIAL_POTENTIALS

    neurons = dict(named_neurons(model))
    if set(neurons) != set(settings):
        missing = sorted(set(neurons) - set(settings))
        extra = sorted(set(settings) - set(neurons))
        raise CheckpointError(
            f"{where}: the neurons do not match the model (missing {missing}, unexpected {extra})"
        )
    for name, values in settings.items():
        if not isinstance(values, dict):
            raise CheckpointError(f"{where}: the settings of neuron '{name}' must be a dict")
        values = dict(values)
        for fixed in ("channels", "per_channel"):  # structural: set by the model and the tensors
            values.pop(fixed, None)
        mode = values.pop("initial_potential", "zero")
        if mode not in INITIAL_POTENTIALS:
            raise CheckpointError(f"{where}: neuron '{name}': unknown initial potential {mode!r}")
        try:
            neurons[name].configure(**values)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{where}: neuron '{name}': {err}") from None
        # The tensor of a "tensor" initial potential arrives with the state dict.
        neurons[name].initial_potential_mode = mode


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        problems = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
        shown = "; ".join(problems[:2]) + (
            f"; and {len(problems) - 2} more" if len(problems) > 2 else ""
        )
        raise CheckpointError(f"{where}: the tensors do not fit the model: {shown}") from None


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a saved model exactly; return it (in eval mode, on ``device``) and its metadata.

    ``path`` is the ``.safetensors`` file, the ``.json`` file or their common stem. The model is
    built with ``create_model(name, **kwargs)``, each neuron gets its saved settings, the
    tensors are loaded strictly, and T, the encoding and the Poisson seed are restored, as are
    the conversion settings kept in the metadata (:data:`CONVERSION_KEYS`: COS/SRP calibration
    hooks, delayed readout), so a converted SNN behaves exactly as when it was saved.
    """
    from robustsnn.models import create_model
    from robustsnn.snn.network import ENCODINGS, named_neurons, set_time_steps

    tensor_path, meta_path = checkpoint_files(path)
    meta = read_metadata(meta_path)
    state = _read_tensors(tensor_path, meta.get("tensors_sha256"))
    _check_finite(state, tensor_path)
    arch = meta["architecture"]
    _check_model_size(arch, tensor_path, meta_path)
    try:
        model = create_model(arch["name"], **arch.get("kwargs", {}))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{meta_path}: cannot build model '{arch['name']}': {err}") from None
    _configure_neurons(model, meta["neurons"], meta_path)
    _load_state(model, state, tensor_path)
    check_time_steps_memory(model, meta.get("time_steps", 0), 1, f"{meta_path}: time_steps")
    for name, neuron in named_neurons(model):
        if neuron.initial_potential_mode == "tensor" and neuron.initial_potential is None:
            raise CheckpointError(
                f"{tensor_path}: neuron '{name}' needs an initial-potential tensor"
            )
    encoding = meta.get("encoding", "direct")
    if encoding not in ENCODINGS:
        raise CheckpointError(f"{meta_path}: unknown encoding {encoding!r}")
    set_time_steps(model, meta.get("time_steps", 0))
    model.encoding = encoding
    if hasattr(model, "reseed"):
        model.reseed(meta.get("poisson_seed"))
    _restore_conversion(model, meta, meta_path)
    return model.to(device).eval(), meta


def _check_finite(state: dict[str, torch.Tensor], where: Path) -> None:
    """Refuse NaN or inf weights: such a model would still produce (meaningless) predictions."""
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{where}: tensor '{key}' holds NaN or inf values; this is not a usable model "
                "(train or convert it again)"
            )


def _check_model_size(arch: dict[str, Any], tensor_path: Path, meta_path: Path) -> None:
    """Build the architecture on the meta device (no memory) and refuse it when its weights
    are far larger than the tensor file: crafted model arguments must not exhaust memory."""
    from robustsnn.models import create_model

    try:
        with torch.device("meta"):
            probe = create_model(arch["name"], **arch.get("kwargs", {}))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{meta_path}: cannot build model '{arch['name']}': {err}") from None
    except Exception:  # noqa: BLE001 - a model that cannot be probed is built for real below
        return
    need = sum(t.numel() * t.element_size() for t in probe.state_dict().values())
    have = tensor_path.stat().st_size
    if need > 2 * have + (1 << 20):
        raise CheckpointError(
            f"{meta_path}: model '{arch['name']}' with these arguments needs "
            f"{_mebibytes(need)} of weights but {tensor_path.name} holds {_mebibytes(have)}; "
            "the JSON's model arguments do not belong to these tensors"
        )


def _mebibytes(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None


def estimate_snn_memory(model: nn.Module, time_steps: int, batch_size: int) -> int:
    """Bytes of activations an SNN forward pass at ``time_steps`` needs for ``batch_size`` images.

    Every neuron's output is measured with one ANN (T = 0) forward pass of a zero image; with
    time folded into the batch, every one of them is held ``time_steps`` times, and twice over
    (the membrane input and the spikes), in float32.
    """
    from robustsnn.snn.network import get_time_steps, named_neurons, set_time_steps

    shape = tuple(getattr(model, "input_shape", ()) or ())
    if not shape or time_steps < 1:
        return 0
    sizes: list[int] = []
    hooks = [
        n.register_forward_hook(lambda m, i, o: sizes.append(o.numel()))
        for _, n in named_neurons(model)
    ]
    previous = get_time_steps(model)
    try:
        set_time_steps(model, 0)
        with torch.no_grad():
            model.eval()(torch.zeros((1, *shape)))
    finally:
        set_time_steps(model, previous)
        for hook in hooks:
            hook.remove()
    per_image = sum(sizes) + int(torch.Size(shape).numel())
    return 2 * 4 * per_image * int(time_steps) * int(batch_size)


def check_time_steps_memory(model: nn.Module, time_steps: int, batch_size: int, what: str) -> None:
    """Refuse ``time_steps`` when even the estimate of its activations exceeds the machine's
    memory: a huge T (from a command line or a checkpoint JSON) must fail before allocating."""
    total = _physical_memory()
    if total is None or time_steps < 1:
        return
    need = estimate_snn_memory(model, time_steps, batch_size)
    if need > total:
        raise CheckpointError(
            f"{what}: T = {time_steps} needs about {_mebibytes(need)} for {batch_size} image(s), "
            f"more than this machine's {_mebibytes(total)}; use a smaller T"
        )


# ---- torn checkpoint pairs -------------------------------------------------------------------
def checkpoint_problem(path: str | Path) -> str | None:
    """Why the checkpoint pair at ``path`` is not complete, or None when it is (or is absent).

    A pair is complete when its JSON exists (it is written last) and the SHA-256 it records
    matches the tensor file. A kill between the two writes leaves tensors without their JSON,
    or (when a checkpoint is overwritten) new tensors beside the old JSON.
    """
    tensor_path, meta_path = checkpoint_files(path)
    if not meta_path.exists():
        return f"{tensor_path.name} has no {meta_path.name}" if tensor_path.exists() else None
    if not tensor_path.exists():
        return f"{meta_path.name} has no {tensor_path.name}"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        expected = meta.get("tensors_sha256") if isinstance(meta, dict) else None
    except (ValueError, UnicodeDecodeError):
        return f"{meta_path.name} is not valid JSON"
    if expected is not None and hashlib.sha256(tensor_path.read_bytes()).hexdigest() != expected:
        return f"{tensor_path.name} does not match the SHA-256 in {meta_path.name}"
    return None


def discard_torn_checkpoint(path: str | Path) -> str | None:
    """Remove both files of a torn pair (see :func:`checkpoint_problem`); return what was done.

    A torn pair cannot be repaired: the half that is missing or stale is the one that was
    being written. Returns None (and removes nothing) for a complete or absent pair.
    """
    problem = checkpoint_problem(path)
    if problem is None:
        return None
    for file in checkpoint_files(path):
        with storage(file, "remove"):
            file.unlink(missing_ok=True)
    return f"discarded a torn checkpoint ({problem}: a save was interrupted)"


CONVERSION_KEYS = ("presimulation", "readout_delay")
"""Metadata keys written by ``robustsnn.convert.conversion_metadata``: settings that live in
forward hooks (COS/SRP pre-simulation, a zoo model's delayed readout), not in the tensors."""


def _restore_conversion(model: nn.Module, meta: dict[str, Any], where: Path) -> None:
    """Re-install the conversion settings a checkpoint records, so the SNN runs as saved."""
    if not any(meta.get(key) for key in CONVERSION_KEYS):
        return
    from robustsnn.convert.low_latency import apply_conversion_metadata  # convert imports io

    try:
        apply_conversion_metadata(model, meta)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: cannot restore the conversion settings: {err}") from None


# ---- foreign weights -------------------------------------------------------------------------
_NESTED_KEYS = ("state_dict", "model", "net")


def import_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file without ever unpickling an arbitrary object.

    ``.safetensors`` is read with safetensors; ``.pt``/``.pth`` only with
    ``torch.load(weights_only=True)``, which refuses anything but tensors and plain
    containers. A dict that holds the weights under ``state_dict``/``model``/``net`` is
    unwrapped, and a DistributedDataParallel ``module.`` prefix is removed. Other extensions
    (``.pkl``, ``.npy``, ...) are refused.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", ".pt", ".pth"):
        raise CheckpointError(
            f"{path}: refused: '{suffix or path.name}' files are not read (they may hold "
            "pickled code); give .safetensors, or a .pt/.pth state dict"
        )
    if not path.exists():
        raise NotFoundError(f"weights file not found: {path}")
    if suffix == ".safetensors":
        return _read_tensors(path, None)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure is a refusal; never retry without weights_only
        raise CheckpointError(
            f"{path}: refused: torch.load(weights_only=True) cannot read it "
            f"({_load_failure_reason(err)}); robustsnn never unpickles arbitrary objects: "
            "re-save it with torch.save(model.state_dict(), path) or as .safetensors"
        ) from None
    if isinstance(obj, dict):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: expected a state dict (names -> tensors)")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(f"{path}: expected a state dict of tensors; not tensors: {bad[:3]}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _load_failure_reason(err: Exception) -> str:
    """The informative line of a torch.load error (its boilerplate dropped)."""
    boilerplate = ("weights only load failed", "please file", "check the documentation")
    for line in str(err).splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if line and not line.lower().startswith(boilerplate):
            return line.rstrip(".")
    return type(err).__name__


# ---- run directories -------------------------------------------------------------------------
@dataclass(frozen=True)
class RunDir:
    """The files of one run (SPEC.md "Runs, files and the command line")."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def create(cls, path: str | Path) -> RunDir:
        """The run directory at ``path``, created (with parents) if needed."""
        run = cls(Path(path))
        run.path.mkdir(parents=True, exist_ok=True)
        return run

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def ann_checkpoint(self) -> Path:
        """Stem of the robust ANN checkpoint (``ann.safetensors`` + ``ann.json``)."""
        return self.checkpoint("ann")

    @property
    def snn_checkpoint(self) -> Path:
        """Stem of the final SNN checkpoint (``snn.safetensors`` + ``snn.json``)."""
        return self.checkpoint("snn")

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
