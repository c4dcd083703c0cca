"""Keep less for the backward pass of a spiking forward: one-byte spikes, recomputed inputs.

Inside :func:`compact_activations` (entered by :class:`~robustsnn.snn.network.SpikingNetwork`
for a forward at T > 0 that records a graph) two kinds of float32 activations are not kept:

* **spike maps** that the next layers (conv, linear, pooling) save for their backward, and
  average-pooled spike maps: they are saved as the boolean firing pattern and the amplitude,
  and rebuilt as the very same float tensor (``pattern · amplitude``, pooled again where it
  was pooled) when the backward pass needs them. An average pooling over spikes keeps only
  their shape: it is linear, its gradient does not depend on its input;
* **the input of a neuron fed by batch norm**: the neuron keeps the norm's input (which the
  norm's own backward keeps anyway) and recomputes the norm's output in its backward instead
  of storing its membrane potentials (see :mod:`robustsnn.snn.bptt`).

Both are recomputations with the forward's own operations, so the backward pass sees the
same values as without them. Saved-tensor hooks already active outside (e.g. a memory probe)
still see every tensor that is kept, the one-byte patterns included.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from robustsnn.snn import kernel

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_POOLS = (
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
)  # fmt: skip


@dataclass(frozen=True)
class _Rebuildable:
    """A float tensor of the forward pass that can be rebuilt from a firing pattern.

    Rebuilt as ``pattern · amplitude`` (the neuron's own operation), followed by ``layers``:
    each a pooling module whose forward is applied to the view ``(size, stride, offset)`` of
    the previous result that it was applied to in the forward pass. One non-overlapping 2-d
    average pooling of the whole map is rebuilt straight from the pattern by the compiled
    kernel (same values, no float spike map in between).
    """

    tensor: weakref.ref
    pattern: torch.Tensor
    amplitude: torch.Tensor | None
    dtype: torch.dtype
    layers: tuple[tuple[Callable, tuple, tuple, int], ...] = ()


@dataclass(frozen=True)
class _Packed:
    """What a layer saves instead of such a tensor: the recipe and the view it saved."""

    source: _Rebuildable
    pattern: object
    view: tuple[tuple, tuple, int]


@dataclass(frozen=True)
class _Shape:
    """What an average pooling over spikes saves: the input's layout, never its values."""

    size: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device


@dataclass(frozen=True)
class _NormOutput:
    tensor: weakref.ref
    norm_input: torch.Tensor
    recipe: partial


def _view(tensor: torch.Tensor) -> tuple[tuple, tuple, int]:
    return tuple(tensor.shape), tuple(tensor.stride()), tensor.storage_offset()


class ActivationStore:
    """Spike maps and batch-norm outputs of one forward pass, and the hooks that use them."""

    def __init__(self) -> None:
        self._rebuildable: dict[int, _Rebuildable] = {}
        self._norm_outputs: dict[int, _NormOutput] = {}
        self._pooling = False
        hooks = torch._C._autograd._top_saved_tensors_default_hooks(False)
        self._outer_pack, self._outer_unpack = hooks or (None, None)

    # ---- registration -----------------------------------------------------------------
    def add_spikes(
        self, spikes: torch.Tensor, pattern: torch.Tensor, amplitude: torch.Tensor | None
    ) -> None:
        """``spikes`` (a fresh tensor) equals ``pattern.to(dtype) * amplitude`` elementwise."""
        amplitude = None if amplitude is None else amplitude.detach()
        entry = _Rebuildable(weakref.ref(spikes), pattern, amplitude, spikes.dtype)
        self._rebuildable[spikes.untyped_storage().data_ptr()] = entry

    def enter_pool(self, module: nn.Module, args: tuple) -> None:
        """Forward pre-hook of an average pooling: is its input a spike map?"""
        self._pooling = isinstance(args[0], torch.Tensor) and self._source_of(args[0]) is not None

    def record_pool(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        """Forward hook of an average pooling: its output on spikes is rebuildable too."""
        self._pooling = False
        source = self._source_of(args[0]) if isinstance(args[0], torch.Tensor) else None
        if source is None or not isinstance(output, torch.Tensor) or output.storage_offset():
            return
        layers = (*source.layers, (module, *_view(args[0])))
        entry = replace(source, tensor=weakref.ref(output), layers=layers)
        self._rebuildable[output.untyped_storage().data_ptr()] = entry

    def record_norm(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        """Forward hook of a batch norm: remember how to recompute ``output`` from its input."""
        if not isinstance(output, torch.Tensor) or not output.requires_grad:
            return
        batch_stats = module.training or (
            module.running_mean is None and module.running_var is None
        )
        stats = (None, None) if batch_stats else (module.running_mean, module.running_var)
        weight = None if module.weight is None else module.weight.detach()
        bias = None if module.bias is None else module.bias.detach()
        recipe = partial(
            _batch_norm, stats=stats, weight=weight, bias=bias, training=batch_stats, eps=module.eps
        )
        entry = _NormOutput(weakref.ref(output), args[0].detach(), recipe)
        self._norm_outputs[id(output)] = entry

    def norm_source(self, x: torch.Tensor) -> tuple[torch.Tensor, partial] | None:
        """``(norm input, recipe)`` if ``x`` is a batch norm's output of this forward pass."""
        entry = self._norm_outputs.get(id(x))
        if entry is None or entry.tensor() is not x:
            return None
        return entry.norm_input, entry.recipe

    # ---- saved-tensor hooks -----------------------------------------------------------
    def _source_of(self, tensor: torch.Tensor) -> _Rebuildable | None:
        if not tensor.numel():
            return None
        entry = self._rebuildable.get(tensor.untyped_storage().data_ptr())
        if entry is None or entry.tensor() is None or tensor.dtype != entry.dtype:
            return None
        return entry

    def pack(self, tensor: torch.Tensor) -> object:
        if self._pooling:  # average pooling is linear: its backward needs the input's shape only
            return _Shape(tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype, tensor.device)
        source = self._source_of(tensor)
        if source is None:
            return self._outer(tensor)
        return _Packed(source, self._outer(source.pattern), _view(tensor))

    def unpack(self, packed: object) -> torch.Tensor:
        if isinstance(packed, _Shape):
            if packed.stride == _contiguous_strides(packed.size):
                # no memory: the backward reads the size and (contiguous) layout only
                return torch.zeros((), dtype=packed.dtype, device=packed.device).expand(packed.size)
            return torch.empty_strided(
                packed.size, packed.stride, dtype=packed.dtype, device=packed.device
            )
        if not isinstance(packed, _Packed):
            return self._outer_unpack(packed) if self._outer_unpack else packed
        pattern = self._outer_unpack(packed.pattern) if self._outer_unpack else packed.pattern
        source = packed.source
        rebuilt = _pooled_by_kernel(pattern, source)
        if rebuilt is None:
            rebuilt = pattern.to(source.dtype)
            if source.amplitude is not None:
                rebuilt.mul_(source.amplitude)
            with torch.no_grad():
                for layer, *view in source.layers:
                    rebuilt = layer.forward(rebuilt.as_strided(*view))
        return rebuilt.as_strided(*packed.view)

    def _outer(self, tensor: torch.Tensor) -> object:
        return self._outer_pack(tensor) if self._outer_pack else tensor

    def close(self) -> None:
        """Forget the forward pass (what the graph saved stays; the rest can be freed)."""
        self._rebuildable.clear()
        self._norm_outputs.clear()


def _pooled_by_kernel(pattern: torch.Tensor, source: _Rebuildable) -> torch.Tensor | None:
    """The one average pooling of ``source``, computed from the pattern, where covered."""
    if len(source.layers) != 1 or source.dtype != torch.float32:
        return None
    module, size, stride, offset = source.layers[0]
    if len(size) != 4 or offset or pattern.numel() != math.prod(size):
        return None
    if stride != _contiguous_strides(size) or not pattern.is_contiguous():
        return None
    kernel_size = _window(module, size[2:])
    if kernel_size is None:
        return None
    amplitude = source.amplitude
    if amplitude is not None and amplitude.numel() > 1 and amplitude.shape[-2:] != (1, 1):
        return None
    return kernel.pool_spikes(pattern.view(size), amplitude, kernel_size)


def _contiguous_strides(size: tuple[int, ...]) -> tuple[int, ...]:
    return torch.empty(size, device="meta").stride()


def _window(module: nn.Module, spatial: tuple[int, int]) -> tuple[int, int] | None:
    """The (kh, kw) of a non-overlapping, unpadded 2-d average pooling; None otherwise."""
    pair = nn.modules.utils._pair
    if type(module) is nn.AvgPool2d:
        if pair(module.kernel_size) != pair(module.stride or module.kernel_size):
            return None
        if pair(module.padding) != (0, 0) or module.divisor_override or module.ceil_mode:
            return None
        return pair(module.kernel_size)
    if type(module) is nn.AdaptiveAvgPool2d:
        out = tuple(
            s if o is None else o for o, s in zip(pair(module.output_size), spatial, strict=True)
        )
        if any(s % o for s, o in zip(spatial, out, strict=True)):
            return None
        return spatial[0] // out[0], spatial[1] // out[1]
    return None


def _batch_norm(z: torch.Tensor, stats, weight, bias, training: bool, eps: float) -> torch.Tensor:
    """The batch norm's forward again (same kernel; momentum 0, so no running-stat update)."""
    return F.batch_norm(z, *stats, weight, bias, training, 0.0, eps)


_active: list[ActivationStore] = []


def active_store() -> ActivationStore | None:
    """The store of the innermost :func:`compact_activations` block, if any."""
    return _active[-1] if _active else None


@contextlib.contextmanager
def compact_activations(model: nn.Module) -> Iterator[ActivationStore]:
    """Within the block, ``model``'s spike maps are saved in one byte and BN inputs reused."""
    store = ActivationStore()
    handles = []
    for module in model.modules():
        if type(module) in _NORMS:
            handles.append(module.register_forward_hook(store.record_norm))
        elif type(module) in _POOLS:
            handles.append(module.register_forward_pre_hook(store.enter_pool))
            handles.append(module.register_forward_hook(store.record_pool))
    _active.append(store)
    try:
        with torch.autograd.graph.saved_tensors_hooks(store.pack, store.unpack):
            yield store
    finally:
        _active.pop()
        store.close()
        for handle in handles:
            handle.remove()
