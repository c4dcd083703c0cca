"""Conversion recipes: set an ANN's neurons up to run as an SNN, selected by name.

``convert(model, recipe, calibration_set, **options)`` converts **in place** and returns the
same module (the ANN and SNN are one module in two modes): deep-copy the ANN first to keep it.

* ``threshold-balancing`` (primary paper §3.3, after Sengupta et al. 2019 / Rathi et al. 2020):
  per-layer thresholds from the 99.7th percentile of each layer's input current at T_c = 100,
  calibrated layer by layer in forward order on the spikes of the already calibrated layers,
  BN normalising with batch statistics meanwhile; then scaled by 0.3 and trainable; hard reset;
  v0 = 0; unit spikes; BN running statistics reset, to be re-learned by finetuning.
* ``qcfs`` (Bu et al. 2022): θ = λ of the QCFS activation, v0 = θ/2, reset by subtraction,
  spikes of amplitude θ; no data needed.

Other modules add recipes with :func:`register_recipe`.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from robustsnn.data.dataset import Augmentation, ImageDataset
from robustsnn.data.dataset import batches as batch_iterator
from robustsnn.errors import UserError
from robustsnn.models.layers import ConvexCombination
from robustsnn.snn.network import named_neurons, set_time_steps, using_time_steps
from robustsnn.snn.neuron import Neuron

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
CALIBRATION_STREAM = 1_000_003
"""Offset of the calibration batches' ``epoch`` in :func:`batches` (one draw per layer)."""


# ---- batch normalisation ----------------------------------------------------------------------
@contextlib.contextmanager
def batch_statistics_bn(model: nn.Module) -> Iterator[None]:
    """Make every BN normalise with the current batch's statistics, even in eval mode.

    The running statistics are detached from the modules inside the block (so nothing updates
    them) and put back afterwards.
    """
    saved = []
    for m in model.modules():
        if isinstance(m, _BN):
            saved.append((m, m.track_running_stats, m.running_mean, m.running_var))
            m.track_running_stats = False
            m.running_mean = None
            m.running_var = None
    try:
        yield
    finally:
        for m, track, mean, var in saved:
            m.track_running_stats, m.running_mean, m.running_var = track, mean, var


def reset_bn_statistics(model: nn.Module) -> None:
    """Running mean 0, variance 1, batch counter 0 in every BN (to be re-learned on spikes)."""
    for m in model.modules():
        if isinstance(m, _BN) and m.running_mean is not None:
            m.reset_running_stats()


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    data: ImageDataset,
    num_batches: int,
    batch_size: int = 64,
    *,
    seed: int = 0,
) -> None:
    """Re-estimate BN running statistics from the model's own activity (spikes, for an SNN).

    Runs ``num_batches`` shuffled batches of ``data`` (no augmentation: the statistics are for
    evaluation on clean images) forward without gradients, with the BN layers in train mode and
    every other module in eval mode (no dropout). The statistics are the exact average over the
    batches (cumulative moving average), not an exponential one. Modes and momenta are restored.
    """
    if num_batches < 1:
        raise UserError(f"num_batches must be >= 1, got {num_batches}")
    norms = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    if not norms:
        return
    modes = [(m, m.training) for m in model.modules()]
    momenta = [(m, m.momentum) for m in norms]
    reset_bn_statistics(model)
    model.eval()
    for m in norms:
        m.momentum = None
        m.train()
    device = _device(model)
    try:
        loader = batch_iterator(data, batch_size, shuffle=True, seed=seed, epoch=0, device=device)
        for index, (x, _) in enumerate(loader):
            if index >= num_batches:
                break
            model(_time_major(x))
    finally:
        for m, training in modes:
            m.training = training
        for m, momentum in momenta:
            m.momentum = momentum


# ---- helpers ------------------------------------------------------------------------------------
def _device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _time_major(x: torch.Tensor) -> torch.Tensor:
    """Event batches ``[B, T, C, H, W]`` become ``[T, B, C, H, W]`` (the model's layout)."""
    return x.transpose(0, 1) if x.dim() == 5 else x


def _neurons(model: nn.Module) -> list[tuple[str, Neuron]]:
    neurons = named_neurons(model)
    if not neurons:
        raise UserError("the model has no Neuron modules to convert")
    return neurons


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the wanted layer input is seen."""


def _capture(model: nn.Module, neuron: Neuron, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The input current of ``neuron`` for ``x`` and whether it is static (not yet over time).

    A static input (direct coding, before the first neuron) has one row per sample and is the
    same at every time step; otherwise rows are time-folded ``[T·B, ...]``.
    """
    captured: list[tuple[torch.Tensor, bool]] = []

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        current = args[0]
        static = module._static_batch is not None and current.shape[0] == module._static_batch
        captured.append((current, static or module.time_steps == 0))
        raise _Stop

    handle = neuron.register_forward_pre_hook(hook)
    try:
        with contextlib.suppress(_Stop):
            model(x)
    finally:
        handle.remove()
    if not captured:
        raise UserError("the neuron was not reached by the forward pass")
    return captured[0]


def layer_input(model: nn.Module, neuron: Neuron, x: torch.Tensor) -> torch.Tensor:
    """The input current of ``neuron`` for the batch ``x`` (the forward stops there)."""
    return _capture(model, neuron, x)[0]


def forward_order(model: nn.Module, x: torch.Tensor) -> list[tuple[str, Neuron]]:
    """The model's neurons in the order the forward pass of ``x`` first calls them.

    Raises ValueError if a neuron is never called (it could not be calibrated).
    """
    neurons = _neurons(model)
    names = {id(n): name for name, n in neurons}
    order: list[tuple[str, Neuron]] = []
    seen: set[int] = set()

    def hook(module: nn.Module, _args: Any) -> None:
        if id(module) not in seen:
            seen.add(id(module))
            order.append((names[id(module)], module))

    handles = [n.register_forward_pre_hook(hook) for _, n in neurons]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    missing = [name for name, n in neurons if id(n) not in seen]
    if missing:
        raise UserError(f"neurons never called by the forward pass: {', '.join(missing)}")
    return order


def percentile_rank(count: int, percentile: float) -> int:
    """The 1-based rank k = 1 + round(q·(count − 1)), q = percentile/100, of the paper's code."""
    return 1 + round(percentile / 100 * (count - 1))


class _LargestValues:
    """The ``keep`` largest values seen so far, over chunks (an exact upper order statistic)."""

    def __init__(self, keep: int) -> None:
        self.keep = max(1, int(keep))
        self.values: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1).float()
        flat = flat.topk(min(self.keep, flat.numel())).values
        merged = flat if self.values is None else torch.cat([self.values, flat])
        if merged.numel() > self.keep:
            merged = merged.topk(self.keep).values
        self.values = merged

    def smallest(self) -> float:
        """The ``keep``-th largest value seen (all of them if fewer were seen)."""
        assert self.values is not None
        return float(self.values.min())


def layer_percentile(
    model: nn.Module,
    neuron: Neuron,
    x: torch.Tensor,
    *,
    percentile: float = 99.7,
    chunk_size: int | None = None,
) -> float:
    """The ``percentile`` of all elements of ``neuron``'s input over the batch ``x`` and T.

    The value is the k-th smallest of the n = T·B·(elements per step) input values, with
    k = :func:`percentile_rank`\\ (n, percentile), negatives included: a static input (direct
    coding, before the first neuron) counts T times, as if tiled over time like the reference
    does. ``chunk_size`` samples are run at a time to bound memory (None: the whole batch); BN
    layers in batch-statistics mode then normalise each chunk with its own statistics.
    """
    batch = x.shape[1] if x.dim() == 5 else x.shape[0]
    size = batch if chunk_size is None else int(chunk_size)

    def chunk(start: int) -> torch.Tensor:
        part = x[:, start : start + size] if x.dim() == 5 else x[start : start + size]
        return part

    first, static = _capture(model, neuron, chunk(0))
    steps = max(1, neuron.time_steps)
    first_samples = min(size, batch)
    per_step = first.numel() // (first_samples * (1 if static else steps))
    count = per_step * batch * steps
    keep = count - percentile_rank(count, percentile) + 1
    if static:
        # each value stands for ``steps`` equal values: the keep-th largest of the tiled list is
        # the ceil(keep / steps)-th largest of the distinct ones
        keep = math.ceil(keep / steps)
    top = _LargestValues(keep)
    top.add(first)
    del first
    for start in range(size, batch, size):
        current, _ = _capture(model, neuron, chunk(start))
        top.add(current)
    return top.smallest()


def _residual_partners(order: list[tuple[str, Neuron]], model: nn.Module) -> dict[int, Neuron]:
    """For each later neuron of a residual block, the block's first neuron (§3.3 quirk)."""
    position = {id(n): i for i, (_, n) in enumerate(order)}
    partners: dict[int, Neuron] = {}
    for block in model.modules():
        children = list(block.children())
        if not any(isinstance(c, ConvexCombination) for c in children):
            continue
        members = sorted(
            (c for c in children if isinstance(c, Neuron) and id(c) in position),
            key=lambda n: position[id(n)],
        )
        for later in members[1:]:
            partners[id(later)] = members[0]
    return partners


# ---- threshold balancing ----------------------------------------------------------------------
def threshold_balancing(
    model: nn.Module,
    calibration_set: ImageDataset | None,
    *,
    time_steps: int = 8,
    time_steps_calibration: int = 100,
    percentile: float = 99.7,
    batches: int = 10,
    batch_size: int = 64,
    scale: float = 0.3,
    threshold_min: float = 0.03,
    trainable: bool = True,
    reset: str = "zero",
    chunk_size: int | None = None,
    augment: Augmentation | None = None,
    seed: int = 0,
    bn_recalibration_batches: int = 0,
    residual_quirk: bool = False,
) -> nn.Module:
    """Threshold balancing as in the primary paper's code (research notes §3.3), in place.

    1. Every BN normalises with the current batch's statistics (running statistics dropped).
    2. At T = ``time_steps_calibration`` with the model's input encoding (direct coding in the
       paper), in eval mode and without gradients, each neuron in forward order gets θ = the
       maximum over ``batches`` shuffled batches of ``batch_size`` training images (with
       ``augment``, fresh batches per layer, like re-iterating the reference's loader) of the
       ``percentile`` of its input (:func:`layer_percentile`), set before the next neuron is
       calibrated, so deeper layers see the spikes of calibrated shallower ones. A θ below
       ``threshold_min / scale`` (a silent layer) is raised to it, so the final θ is never
       below ``threshold_min``.
    3. All θ are multiplied by ``scale`` and made trainable (clamped at ``threshold_min`` in the
       forward pass); neurons: IF, ``reset`` (hard, ``zero``), v0 = 0, unit spikes. A
       per-channel neuron gets the layer's value in every channel.
    4. BN running statistics are reset to mean 0 / variance 1 / counter 0, as in the paper, to
       be re-learned during finetuning; the model ends at T = ``time_steps`` in eval mode.

    With BN reset, the converted SNN's accuracy before finetuning means nothing (the paper logs
    it anyway, research notes §3.3 step 6). ``bn_recalibration_batches > 0`` re-estimates the BN
    statistics on the SNN's spikes right after conversion (:func:`recalibrate_bn`, unaugmented
    calibration images, T = ``time_steps``), which makes that accuracy meaningful and gives
    finetuning's eval-mode attacks sensible statistics from the first batch; finetuning keeps
    updating them with momentum 0.1. Use it whenever the converted SNN is evaluated.

    ``residual_quirk=True`` reproduces the reference's §3.3 quirk (the later thresholds of a
    residual block also absorb the percentile of the block's first neuron input); off by
    default. The reference used 11 batches; CPAL25 and the default here use 10.
    """
    if calibration_set is None or len(calibration_set) == 0:
        raise UserError("threshold balancing needs calibration images (the training set)")
    if time_steps < 1 or time_steps_calibration < 1:
        raise UserError(
            f"threshold balancing needs time_steps >= 1 and time_steps_calibration >= 1; got "
            f"{time_steps} and {time_steps_calibration}"
        )
    if not 0 < percentile <= 100:
        raise UserError(f"percentile must be in (0, 100], got {percentile}")
    if batches < 1 or batch_size < 1:
        raise UserError(f"batches and batch_size must be >= 1, got {batches} and {batch_size}")
    if not scale > 0:
        raise UserError(f"scale must be > 0, got {scale}")
    if not threshold_min > 0:
        raise UserError(f"threshold_min must be > 0, got {threshold_min}")
    if chunk_size is not None and chunk_size < 2:
        raise UserError(f"chunk_size must be None or >= 2 (for BN statistics), got {chunk_size}")
    if bn_recalibration_batches < 0:
        raise UserError(f"bn_recalibration_batches must be >= 0, got {bn_recalibration_batches}")
    neurons = _neurons(model)
    for _, n in neurons:
        n.configure(
            reset=reset,
            initial_potential="zero",
            spike_amplitude="unit",
            trainable_threshold=False,
            threshold_min=threshold_min,
        )
        n.set_initial_potential(None)
    device = _device(model)
    floor = threshold_min / scale
    model.eval()
    set_time_steps(model, time_steps_calibration)
    with batch_statistics_bn(model), torch.no_grad():
        probe = _time_major(next(batch_iterator(calibration_set, batch_size, device=device))[0])
        with using_time_steps(model, 1):
            order = forward_order(model, probe)
        partners = _residual_partners(order, model) if residual_quirk else {}
        for layer, (_, neuron) in enumerate(order):
            measured = [neuron]
            if id(neuron) in partners:
                measured.append(partners[id(neuron)])
            value = -math.inf
            for x in _take(calibration_set, batch_size, batches, seed, layer, augment, device):
                for target in measured:
                    found = layer_percentile(
                        model, target, x, percentile=percentile, chunk_size=chunk_size
                    )
                    value = max(value, found)
            neuron.set_threshold(torch.full_like(neuron.threshold, max(value, floor)))
    for _, n in neurons:
        n.set_threshold(n.threshold.detach() * scale)
        n.configure(trainable_threshold=trainable)
    reset_bn_statistics(model)
    set_time_steps(model, time_steps)
    if bn_recalibration_batches > 0:
        recalibrate_bn(model, calibration_set, bn_recalibration_batches, batch_size, seed=seed)
    model.eval()
    return model


def _take(
    data: ImageDataset,
    batch_size: int,
    count: int,
    seed: int,
    layer: int,
    augment: Augmentation | None,
    device: torch.device,
) -> Iterator[torch.Tensor]:
    """Up to ``count`` shuffled (augmented) calibration batches, drawn afresh for ``layer``."""
    loader = batch_iterator(
        data,
        batch_size,
        shuffle=True,
        seed=seed,
        epoch=CALIBRATION_STREAM + layer,
        augment=augment,
        device=device,
    )
    for index, (x, _) in enumerate(loader):
        if index >= count:
            return
        yield _time_major(x)


# ---- QCFS ---------------------------------------------------------------------------------------
def qcfs(
    model: nn.Module,
    calibration_set: ImageDataset | None = None,
    *,
    time_steps: int | None = 8,
) -> nn.Module:
    """QCFS conversion (Bu et al. 2022), in place: θ = λ, v0 = θ/2, reset by subtraction.

    Spikes have amplitude θ, so a neuron's mean output over T steps approximates the QCFS
    activation; at T = L it equals it exactly for a constant input current. Needs neurons
    trained with ``activation='qcfs'`` (or ``'clip'``); ``time_steps=None`` runs at T = L (all
    neurons must share L). No calibration data is used.
    """
    neurons = _neurons(model)
    for name, n in neurons:
        if n.activation not in ("qcfs", "clip") or n.clip_value is None:
            raise UserError(
                f"qcfs conversion needs neurons with activation 'qcfs' (or 'clip'); "
                f"'{name}' is '{n.activation}'"
            )
    if time_steps is None:
        levels = {n.levels for _, n in neurons}
        if len(levels) != 1:
            raise UserError(f"time_steps=None (T = L) needs one L for all neurons, got {levels}")
        time_steps = levels.pop()
    if time_steps < 1:
        raise UserError(f"time_steps must be >= 1, got {time_steps}")
    for _, n in neurons:
        n.set_threshold(torch.full_like(n.threshold, float(n.clip_value.detach())))
        n.set_initial_potential(None)
        n.configure(initial_potential="half", reset="subtract", spike_amplitude="threshold")
    set_time_steps(model, time_steps)
    model.eval()
    return model


# ---- registry ----------------------------------------------------------------------------------
_RECIPES: dict[str, Callable[..., nn.Module]] = {
    "threshold-balancing": threshold_balancing,
    "qcfs": qcfs,
}


def register_recipe(name: str, fn: Callable[..., nn.Module]) -> None:
    """Make ``fn(model, calibration_set, *, time_steps, ...)`` available as recipe ``name``."""
    _RECIPES[name] = fn


def list_recipes() -> list[str]:
    """Names of the registered conversion recipes."""
    return list(_RECIPES)


def recipe_options(recipe: str) -> dict[str, Any]:
    """The keyword options of ``recipe`` with their defaults (what ``convert`` accepts)."""
    fn = _recipe(recipe)
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def check_options(recipe: str, options: dict[str, Any]) -> None:
    """Refuse an unknown ``recipe``, unknown options and values of the wrong type.

    Values are checked against the recipe's annotations (an int is a valid float, a bool is
    not an int), so a mistake typed on the command line is one clear ValueError before any
    data is loaded. ``time_steps`` is refused: the caller sets it.
    """
    fn = _recipe(recipe)
    accepted = recipe_options(recipe)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        listed = ", ".join(sorted(k for k in accepted if k != "time_steps"))
        raise UserError(
            f"recipe '{recipe}' has no option {', '.join(unknown)}; "
            + (f"options: {listed}" if listed else "it takes no options")
        )
    if "time_steps" in options:
        raise UserError("time_steps is not a recipe option here: give the time steps as T")
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError):
        hints = {}
    for key, value in options.items():
        if key in hints and not _matches_hint(value, hints[key]):
            raise UserError(
                f"recipe '{recipe}': option {key} expects {_hint_text(hints[key])}, got {value!r}"
            )


def _hint_members(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _matches_hint(value: Any, hint: Any) -> bool:
    members = _hint_members(hint)
    for member in members:
        if member is type(None):
            if value is None:
                return True
        elif not isinstance(member, type):
            return True  # a generic or callable annotation: not checked
        elif member is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        elif member is int and isinstance(value, bool):
            continue
        elif isinstance(value, member):
            return True
    return False


def _hint_text(hint: Any) -> str:
    names = [
        "None" if m is type(None) else getattr(m, "__name__", str(m)) for m in _hint_members(hint)
    ]
    return " or ".join(names)


def _recipe(recipe: str) -> Callable[..., nn.Module]:
    if recipe not in _RECIPES:
        raise UserError(f"unknown conversion recipe '{recipe}'; known: {', '.join(list_recipes())}")
    return _RECIPES[recipe]


def convert(
    model: nn.Module,
    recipe: str,
    calibration_set: ImageDataset | None = None,
    **options: Any,
) -> nn.Module:
    """Convert ``model`` with ``recipe``, in place; returns the converted module.

    The recipe's own result is returned (COS/SRP wrap the model). ``options`` are the recipe's
    keywords (see :func:`recipe_options`); an unknown one raises ValueError.
    """
    fn = _recipe(recipe)
    parameters = inspect.signature(fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        accepted = {k for k, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise UserError(
                f"recipe '{recipe}' has no option {', '.join(unknown)}; "
                f"options: {', '.join(sorted(accepted))}"
            )
    return fn(model, calibration_set, **options)
