"""The compiled CPU kernel of the IF recurrence (``if_kernel.c``), loaded through ctypes.

On CPU the recurrence of :mod:`robustsnn.snn.bptt` written as torch operations makes a dozen
passes over memory per time step; the kernel makes one, which is what lets a BPTT step cost
no more than T ANN steps. It is plain C compiled on first use with the system's C compiler
(``$CC`` or ``cc``) into the toolkit's cache (``$ROBUSTSNN_CACHE``, else
``~/.cache/robustsnn``), named by a hash of the source and the compiler, and written
atomically. Without a compiler, on GPU, for other dtypes than
float32, or with ``ROBUSTSNN_KERNEL=off``, the torch implementation runs instead; both give
the same results to float rounding (tested).

It is compiled with OpenMP where the compiler has it: loaded next to torch it then shares
torch's OpenMP runtime, threads and thread count (``torch.set_num_threads``), so it never
competes with torch's own threads. It is built for the machine it runs on (``-march=native``);
the cache name includes the CPU's feature flags.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from robustsnn.cache import cache_dir

if TYPE_CHECKING:
    from robustsnn.snn.bptt import Dynamics

SOURCE = Path(__file__).with_name("if_kernel.c")
FLAGS = ("-O3", "-std=c99", "-fPIC", "-shared", "-ffp-contract=off", "-fno-math-errno")
# tried in order: the first set the compiler accepts is used
OPTIONAL_FLAGS = (("-fopenmp", "-march=native"), ("-fopenmp",), ("-march=native",), ())
SURROGATES = {
    "triangle": 0,
    "rect": 1,
    "exp": 2,
    "sigmoid": 3,
    "arctan": 4,
    "gaussian": 5,
    "ste": 6,
}
ADAPTIVE = {"atan": 16, "rect": 17, "triangle": 18, "sigmoid": 19, "gaussian": 20}

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_failure: str | None = None

_i64, _int, _flt, _ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_float, ctypes.c_void_p
_FORWARD_ARGS = [_i64, _i64, _ptr, _int, _ptr, _int, _ptr, _int, _flt, _int, _int, _int]
_FORWARD_ARGS += [_ptr, _ptr, _ptr, _ptr]
_BACKWARD_ARGS = [_i64, _i64, _ptr, _int, _int, _ptr, _ptr, _int, _ptr, _int, _flt, _int]
_BACKWARD_ARGS += [_int, _int, _int, _int, _flt, _flt, _ptr, _ptr, _ptr, _ptr, _ptr]
_POOL_ARGS = [_i64, _ptr, _i64, _i64, _i64, _i64, _ptr, _i64, _ptr]


def enabled() -> bool:
    """True unless ``ROBUSTSNN_KERNEL`` is set to off (or 0, false, no, torch)."""
    value = os.environ.get("ROBUSTSNN_KERNEL", "on").strip().lower()
    return value not in ("off", "0", "false", "no", "torch")


def _compiler() -> str | None:
    name = os.environ.get("CC", "cc")
    return shutil.which(name)


def _cpu_features() -> str:
    """The CPU's feature flags (Linux), else its name: a -march=native build for one CPU
    must not be loaded on another that shares the cache."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build(compiler: str) -> Path:
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, timeout=30
    ).stdout
    settings = repr((FLAGS, OPTIONAL_FLAGS, version, _cpu_features())).encode()
    key = hashlib.sha256(SOURCE.read_bytes() + settings).hexdigest()[:16]
    target = cache_dir() / f"if_kernel-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        for extra in OPTIONAL_FLAGS:
            command = [compiler, *FLAGS, *extra, str(SOURCE), "-o", tmp, "-lm"]
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
            if done.returncode == 0:
                break
        else:
            raise subprocess.CalledProcessError(done.returncode, command, stderr=done.stderr)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def library() -> ctypes.CDLL | None:
    """The loaded kernel, compiling it on first use; None (with one warning) if impossible."""
    global _library, _failure
    if _library is not None or _failure is not None:
        return _library
    with _lock:
        if _library is not None or _failure is not None:
            return _library
        compiler = _compiler()
        try:
            if compiler is None:
                raise RuntimeError("no C compiler found (set $CC or install cc)")
            lib = ctypes.CDLL(str(_build(compiler)))
            lib.if_forward.argtypes = _FORWARD_ARGS
            lib.if_forward.restype = None
            lib.if_backward.argtypes = _BACKWARD_ARGS
            lib.if_backward.restype = ctypes.c_int
            lib.pool_spikes.argtypes = _POOL_ARGS
            lib.pool_spikes.restype = ctypes.c_int
            _library = lib
        except (OSError, RuntimeError, subprocess.SubprocessError) as error:
            lines = str(getattr(error, "stderr", None) or error).strip().splitlines() or ["?"]
            _failure = next((line for line in lines if "error" in line), lines[0])
            warnings.warn(
                f"robustsnn: the compiled IF kernel is unavailable ({_failure}); using the "
                "slower torch implementation",
                RuntimeWarning,
                stacklevel=3,
            )
    return _library


def supports(path) -> bool:
    """Whether the kernel's backward has the surrogate of this gradient path."""
    return path.kind in SURROGATES or path.kind == "assg"


def usable(*tensors: torch.Tensor | None) -> bool:
    """Whether the kernel can run on these tensors (CPU float32) and is enabled and built."""
    for tensor in tensors:
        if tensor is not None and (tensor.device.type != "cpu" or tensor.dtype != torch.float32):
            return False
    return enabled() and library() is not None


def _per_neuron(value: torch.Tensor, shape: torch.Size) -> tuple[torch.Tensor, int]:
    """``value`` as a contiguous float32 [n] array broadcast to ``shape``, or one scalar."""
    value = value.detach().to(torch.float32)
    if value.numel() == 1:
        return value.reshape(1).contiguous(), 0
    return value.expand(shape).contiguous(), 1


def _address(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _neuron_arrays(step_shape: torch.Size, threshold: torch.Tensor, v0: torch.Tensor) -> tuple:
    """``(θ, θ per neuron?, v0, v0 per neuron?)`` as the kernels take them."""
    theta, theta_full = _per_neuron(threshold, step_shape)
    start, start_full = _per_neuron(v0, step_shape)
    return theta.data_ptr(), theta_full, start.data_ptr(), start_full, (theta, start)


def forward(
    x: torch.Tensor,
    dyn: Dynamics,
    threshold: torch.Tensor,
    v0: torch.Tensor,
    membrane: torch.Tensor | None = None,
    pattern: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spikes·amplitude ``[T, ...]`` and final potential; fills ``membrane``/``pattern``."""
    for name, buffer in (("membrane", membrane), ("pattern", pattern)):
        if buffer is not None and not buffer.is_contiguous():
            raise ValueError(f"the {name} buffer of the IF kernel must be contiguous")
    x = x.detach().contiguous()
    step_shape = dyn.step_shape(x)
    *neurons, _keep = _neuron_arrays(step_shape, threshold, v0)
    out = torch.empty((dyn.steps, *step_shape), dtype=torch.float32)
    final = torch.empty(step_shape, dtype=torch.float32)
    library().if_forward(
        dyn.steps, step_shape.numel(), x.data_ptr(), int(dyn.static), *neurons, dyn.leak,
        int(dyn.soft_reset), int(dyn.strict), int(dyn.amplitude_is_threshold), out.data_ptr(),
        _address(membrane), _address(pattern), final.data_ptr(),
    )  # fmt: skip
    return out, final


def backward(
    source: torch.Tensor,
    source_is_membrane: bool,
    dyn: Dynamics,
    threshold: torch.Tensor,
    v0: torch.Tensor,
    grad_out: torch.Tensor,
    pattern: torch.Tensor | None,
    need_threshold: bool,
    need_v0: bool,
    overwrite_source: bool = False,
    sharpness: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """BPTT through the recurrence: ``(dL/dx, dL/dθ per neuron, dL/dv0 per neuron)``.

    ``source`` is the forward's membrane ``[T, ...]`` or its input (replayed). With
    ``overwrite_source`` (a ``[T, ...]`` input of no further use) dL/dx is written into it.
    ``sharpness`` ``[T, ...]`` is ASSG's per-element sharpness (the ``assg`` path only).
    """
    source = source.detach().contiguous()
    grad_out = grad_out.contiguous()
    static = dyn.static and not source_is_membrane
    step_shape = source.shape if static else source.shape[1:]
    *neurons, _keep = _neuron_arrays(step_shape, threshold, v0)
    if overwrite_source and not dyn.static:
        grad_x = source
    else:
        grad_x = torch.empty(step_shape if dyn.static else (dyn.steps, *step_shape))
    grad_theta = torch.empty(step_shape) if need_threshold else None
    grad_v0 = torch.empty(step_shape) if need_v0 else None
    params = (*dyn.path.params, 0.0, 0.0)[:2]
    if dyn.path.kind == "assg":
        if sharpness is None:
            raise ValueError("the assg path needs its per-element sharpness")
        kind = ADAPTIVE[dyn.path.shape]
        sharpness = sharpness.detach().to(torch.float32).contiguous()
    else:
        kind, sharpness = SURROGATES[dyn.path.kind], None
    status = library().if_backward(
        dyn.steps, step_shape.numel(), source.data_ptr(), 0 if source_is_membrane else 1,
        int(dyn.static), _address(pattern), *neurons, dyn.leak, int(dyn.soft_reset),
        int(dyn.strict), int(dyn.amplitude_is_threshold), int(dyn.path.detach_reset), kind,
        *params, _address(sharpness), grad_out.data_ptr(), grad_x.data_ptr(),
        _address(grad_theta), _address(grad_v0),
    )  # fmt: skip
    if status != 0:
        raise MemoryError("the IF kernel could not allocate its replay buffer")
    return grad_x, grad_theta, grad_v0


def pool_spikes(
    pattern: torch.Tensor, amplitude: torch.Tensor | None, kernel_size: tuple[int, int]
) -> torch.Tensor | None:
    """Average pooling (kernel = stride, no padding) of the spikes ``pattern · amplitude``.

    ``pattern`` is a boolean ``[N, C, H, W]`` map and ``amplitude`` None, a scalar or one
    value per channel. Equals ``avg_pool2d`` of the float spikes bit for bit, without
    materialising them. None when the case is not covered (the caller pools in torch).
    """
    if pattern.dim() != 4 or pattern.dtype != torch.bool or pattern.device.type != "cpu":
        return None
    if not usable():
        return None
    pattern = pattern.contiguous()
    planes, channels, (height, width) = pattern.shape[0] * pattern.shape[1], 0, pattern.shape[2:]
    weights = None
    if amplitude is not None:
        if amplitude.numel() not in (1, pattern.shape[1]):
            return None
        channels = pattern.shape[1]
        weights = amplitude.detach().to(torch.float32).reshape(-1).expand(channels).contiguous()
    kh, kw = kernel_size
    out = torch.empty((*pattern.shape[:2], height // kh, width // kw), dtype=torch.float32)

    status = library().pool_spikes(
        planes, pattern.data_ptr(), height, width, kh, kw, _address(weights), channels,
        out.data_ptr(),
    )  # fmt: skip
    if status != 0:
        raise MemoryError("the spike pooling kernel could not allocate its row buffer")
    return out
