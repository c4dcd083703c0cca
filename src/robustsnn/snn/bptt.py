"""The integrate-and-fire recurrence over all time steps, with a hand-written BPTT backward.

:class:`Dynamics` holds the settings of one call; :func:`simulate` runs the recurrence and
:class:`IFFunction` wraps it as one autograd function. The backward pass needs the membrane
potentials of every step. They are kept in one of three ways, whichever costs least memory:

* ``membrane``: the potentials themselves (the general case);
* ``input``: a static, directly coded input (one step's worth instead of T), replayed;
* ``recipe``: a tensor the graph keeps anyway (the input of the batch norm feeding the neuron)
  and a recipe that recomputes the neuron's input from it, then replayed.

Replays use the forward's firing pattern where one is given, so the recomputed potentials
follow exactly the forward's spikes. Each step is a few operations into preallocated buffers:
on CPU a fresh tensor per operation costs page faults that outweigh the arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from robustsnn.snn import kernel
from robustsnn.snn.paths import GradientPath


@dataclass(frozen=True)
class Dynamics:
    """Settings of one IF call: ``steps`` steps over ``[T, B, ...]``, or a static ``[B, ...]``."""

    steps: int
    static: bool
    leak: float
    soft_reset: bool
    strict: bool
    amplitude_is_threshold: bool
    path: GradientPath

    def step_shape(self, x: torch.Tensor) -> torch.Size:
        return x.shape if self.static else x.shape[1:]

    def fire(self, m: torch.Tensor, threshold: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return torch.gt(m, threshold, out=out) if self.strict else torch.ge(m, threshold, out=out)

    def integrate(self, x_t: torch.Tensor, v: torch.Tensor, out: torch.Tensor) -> None:
        """``out = x_t + leak · v``."""
        if self.leak == 1.0:
            torch.add(x_t, v, out=out)
        else:
            torch.add(x_t, v, alpha=self.leak, out=out)

    def reset(self, m: torch.Tensor, spikes: torch.Tensor, threshold: torch.Tensor, out) -> None:
        """``out = m - s·θ`` (subtract) or ``m - m·s`` (zero: exactly 0 where it fired)."""
        if self.soft_reset:
            torch.addcmul(m, spikes, threshold, value=-1, out=out)
        else:
            torch.addcmul(m, m, spikes, value=-1, out=out)


def simulate(
    x: torch.Tensor,
    dyn: Dynamics,
    threshold: torch.Tensor,
    v0: torch.Tensor,
    membrane: torch.Tensor | None = None,
    pattern: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the recurrence; return ``(spikes·amplitude [T, B, ...], final potential)``.

    Potentials before the reset are written into ``membrane`` and the firing pattern into the
    boolean ``pattern`` when they are given. Runs the compiled kernel where it can.
    """
    if kernel.usable(x, threshold, v0):
        return kernel.forward(x, dyn, threshold, v0, membrane, pattern)
    step_shape = dyn.step_shape(x)
    out = torch.empty((dyn.steps, *step_shape), dtype=x.dtype, device=x.device)
    work = torch.empty(step_shape, dtype=x.dtype, device=x.device) if membrane is None else None
    v = torch.empty(step_shape, dtype=x.dtype, device=x.device)
    previous = v0
    for t in range(dyn.steps):
        m = work if membrane is None else membrane[t]
        dyn.integrate(x if dyn.static else x[t], previous, out=m)
        spikes = out[t]
        if pattern is None:
            dyn.fire(m, threshold, out=spikes)
        else:
            spikes.copy_(dyn.fire(m, threshold, out=pattern[t]))
        dyn.reset(m, spikes, threshold, out=v)
        if dyn.amplitude_is_threshold:
            spikes.mul_(threshold)
        previous = v
    return out, v


def replay_membrane(
    x: torch.Tensor,
    dyn: Dynamics,
    threshold: torch.Tensor,
    v0: torch.Tensor,
    pattern: torch.Tensor | None,
    overwrite_input: bool = False,
) -> torch.Tensor:
    """The potentials ``[T, B, ...]`` of the forward pass, recomputed with its operations.

    With ``overwrite_input`` (a time-unfolded ``x`` of no further use) they are written into
    ``x`` itself, step t's input replaced by step t's potential.
    """
    step_shape = dyn.step_shape(x)
    if overwrite_input and not dyn.static:
        membrane = x
    else:
        membrane = torch.empty((dyn.steps, *step_shape), dtype=x.dtype, device=x.device)
    spikes = torch.empty(step_shape, dtype=x.dtype, device=x.device)
    v = torch.empty_like(spikes)
    previous = v0
    for t in range(dyn.steps):
        m = membrane[t]
        dyn.integrate(x if dyn.static else x[t], previous, out=m)
        if pattern is None:
            dyn.fire(m, threshold, out=spikes)
        else:
            spikes.copy_(pattern[t])
        dyn.reset(m, spikes, threshold, out=v)
        previous = v
    return membrane


def _reduce_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum a broadcast gradient back to ``shape``."""
    if grad.shape == shape:
        return grad
    lead = grad.dim() - len(shape)
    grad = grad.sum(dim=tuple(range(lead))) if lead > 0 else grad
    dims = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(dim=dims, keepdim=True) if dims else grad


def _surrogate_(path: GradientPath, u: torch.Tensor, std: torch.Tensor | None) -> torch.Tensor:
    """``path.surrogate(u)``, computed in place in ``u`` for the triangle (same values)."""
    if path.kind != "triangle":
        return path.surrogate(u, std)
    (width,) = path.params
    return u.abs_().neg_().add_(width).clamp_min_(0).div_(width * width)


def cumulative_std(membrane: torch.Tensor) -> torch.Tensor:
    """Per-channel std of all membrane potentials seen up to each step (PDSG).

    ``membrane`` is ``[T, B, C, ...]`` (or ``[T, B, F]``); the result broadcasts against
    ``membrane[t]`` for every t. A zero spread is replaced by 1. The potentials are first
    shifted by one observed value per channel, so that the running sums do not cancel
    catastrophically: a constant channel then gets exactly 0 (hence 1), not float noise.
    """
    steps, batch = membrane.shape[:2]
    channels = membrane.shape[2] if membrane.dim() > 2 else 1
    flat = membrane.reshape(steps, batch, channels, -1)
    flat = flat - flat[:1, :1, :, :1]
    count_per_step = batch * flat.shape[-1]
    s1 = flat.sum(dim=(1, 3)).cumsum(0)
    s2 = (flat * flat).sum(dim=(1, 3)).cumsum(0)
    n = torch.arange(1, steps + 1, device=membrane.device, dtype=membrane.dtype)[:, None]
    n = n * count_per_step
    var = (s2 - s1 * s1 / n) / (n - 1).clamp_min(1)
    std = var.clamp_min(0).sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    shape = (steps, 1, channels) + (1,) * (membrane.dim() - 3)
    return std.reshape(shape)


Recipe = Callable[[torch.Tensor], torch.Tensor]


Sharpness = Callable[[torch.Tensor], torch.Tensor]


class IFFunction(torch.autograd.Function):
    """IF dynamics over all time steps with a hand-written backward for every gradient path.

    Inputs: the neuron input ``x``, θ, v0, ``source`` (the tensor ``recipe`` turns back into
    ``x``, or None), the firing ``pattern`` to fill (or None), then the settings, and for ASSG
    the function that maps ``|u − θ|`` ``[T, B, ...]`` to the sharpness α. Never saves the
    float spikes; the rate paths save no potentials at all.
    """

    @staticmethod
    def forward(
        ctx,
        x,
        threshold,
        v0,
        source,
        pattern,
        dyn: Dynamics,
        recipe: Recipe | None,
        sharpness: Sharpness | None = None,
    ):
        path = dyn.path
        compiled = kernel.supports(path) and kernel.usable(x, threshold, v0)
        if path.is_rate:
            kept = "nothing"
        elif path.kind in ("pdsg", "assg", "hart"):
            kept = "membrane"
        elif recipe is not None:
            kept = "recipe"
        else:  # the kernel replays potentials at about the cost of reading them
            kept = "input" if dyn.static or compiled else "membrane"
        membrane = None
        if kept == "membrane":
            membrane = torch.empty((dyn.steps, *dyn.step_shape(x)), dtype=x.dtype, device=x.device)
        out, final = simulate(x, dyn, threshold, v0, membrane, pattern)
        extra = None
        if path.kind == "rga":
            extra = x if dyn.static else x.mean(0)
        elif path.kind == "bptr":
            extra = (out != 0).any(0)
        elif path.kind == "pdsg":
            extra = cumulative_std(membrane)
        elif path.kind == "assg":
            if sharpness is None:
                raise ValueError("the assg path needs a sharpness function")
            extra = sharpness((membrane - threshold).abs_())
        saved = {"membrane": membrane, "input": x, "recipe": source, "nothing": None}[kept]
        replayed = kept in ("input", "recipe")
        ctx.save_for_backward(saved, threshold, v0, extra, pattern if replayed else None)
        ctx.dyn, ctx.kept, ctx.recipe, ctx.v0_shape = dyn, kept, recipe, v0.shape
        ctx.compiled = compiled
        ctx.mark_non_differentiable(final)
        return out, final

    @staticmethod
    def backward(ctx, grad_out, _grad_final):
        saved, threshold, v0, extra, pattern = ctx.saved_tensors
        dyn: Dynamics = ctx.dyn
        path = dyn.path
        amp = threshold if dyn.amplitude_is_threshold else None
        need_theta = ctx.needs_input_grad[1]
        need_v0 = ctx.needs_input_grad[2]
        rest = (None,) * 5

        if path.is_rate:
            if path.kind == "bptr":
                slope = extra.to(grad_out.dtype)
            else:
                slope = path.rate_slope(extra, threshold, dyn.leak)
            grad_x = grad_out * (slope if amp is None else amp * slope)
            return (grad_x.sum(0) if dyn.static else grad_x), None, None, *rest

        if ctx.compiled:
            sharpness = extra if path.kind == "assg" else None
            return (
                *_compiled_backward(ctx, grad_out, saved, threshold, v0, pattern, sharpness),
                *rest,
            )
        if path.kind == "hart":
            return (*_hart_backward(ctx, grad_out, saved, threshold, v0, pattern), *rest)
        if ctx.kept == "membrane":
            membrane = saved
        else:
            x = saved
            if ctx.kept == "recipe":
                with torch.no_grad():
                    x = ctx.recipe(saved)
                if not dyn.static:
                    x = x.view(dyn.steps, -1, *x.shape[1:])
            recomputed = ctx.kept == "recipe"
            membrane = replay_membrane(x, dyn, threshold, v0, pattern, overwrite_input=recomputed)
            del x
        # dm_t (the gradient at step t's potential) overwrites recomputed potentials
        grad_x = membrane if ctx.kept != "membrane" else torch.empty_like(membrane)
        grad_theta = torch.zeros_like(membrane[0]) if need_theta else None
        # buffers reused over the steps: u / surrogate, g_spike, scaled dm, amplitude, spikes
        u, g_spike = torch.empty_like(membrane[0]), torch.empty_like(membrane[0])
        dv_buf = torch.empty_like(u) if dyn.leak != 1.0 else None
        g_buf = torch.empty_like(u) if amp is not None else None
        spikes = torch.empty_like(u) if need_theta or not dyn.soft_reset else None
        dv_not_fired = torch.empty_like(u) if not dyn.soft_reset else None
        dm = dv = None  # dm_{t+1} and dv_{t+1} = leak · dm_{t+1}
        for t in reversed(range(dyn.steps)):
            m = membrane[t]
            if spikes is not None:  # float 0/1: arithmetic on them beats boolean masks
                if pattern is None:
                    dyn.fire(m, threshold, out=spikes)
                else:
                    spikes.copy_(pattern[t])
            torch.sub(m, threshold, out=u)
            sg = _surrogate_(path, u, extra[t] if path.kind in ("pdsg", "assg") else None)
            g = grad_out[t] if amp is None else torch.mul(grad_out[t], amp, out=g_buf)
            if dm is None:  # last step: nothing flows back from later steps
                torch.mul(g, sg, out=grad_x[t])
                g_step = g
            else:
                dv = dm if dv_buf is None else torch.mul(dm, dyn.leak, out=dv_buf)
                if path.detach_reset:  # the reset's spike is a constant: no term through σ'
                    g_spike.copy_(g)
                elif dyn.soft_reset:
                    torch.addcmul(g, dv, threshold, value=-1, out=g_spike)
                else:
                    torch.addcmul(g, dv, m, value=-1, out=g_spike)
                if dyn.soft_reset:
                    torch.addcmul(dv, g_spike, sg, out=grad_x[t])
                else:
                    torch.addcmul(dv, dv, spikes, value=-1, out=dv_not_fired)
                    torch.addcmul(dv_not_fired, g_spike, sg, out=grad_x[t])
                g_step = g_spike
            if need_theta:
                grad_theta.addcmul_(g_step, sg, value=-1)
                if dyn.soft_reset and dv is not None:
                    grad_theta.addcmul_(dv, spikes, value=-1)
                if amp is not None:
                    grad_theta.addcmul_(grad_out[t], spikes)
            dm = grad_x[t]
        if need_theta:
            grad_theta = _reduce_to(grad_theta, threshold.shape)
        grad_v0 = None
        if need_v0:
            grad_v0 = _reduce_to(dm if dyn.leak == 1.0 else dm * dyn.leak, ctx.v0_shape)
        if dyn.static:
            grad_x = grad_x.sum(0)
        return grad_x, grad_theta, grad_v0, *rest


def _hart_backward(ctx, grad_out, saved, threshold, v0, pattern):
    """HART (Hao et al., ICLR 2024): no gradient between time steps (the potential is cut off
    from its past), a triangle surrogate, and each step's input gradient replaced by its mean
    over the steps (the rate information). ``(dL/dx, dL/dθ, None)``."""
    dyn: Dynamics = ctx.dyn
    membrane = saved
    u = membrane - threshold
    sg = dyn.path.surrogate(u)
    g = grad_out if not dyn.amplitude_is_threshold else grad_out * threshold
    per_step = g * sg
    grad_theta = None
    if ctx.needs_input_grad[1]:
        grad_theta = -per_step.sum(0)
        if dyn.amplitude_is_threshold:
            fired = dyn.fire(membrane, threshold, out=torch.empty_like(membrane, dtype=torch.bool))
            grad_theta = grad_theta + (grad_out * fired).sum(0)
        grad_theta = _reduce_to(grad_theta, threshold.shape)
    mean = per_step.mean(0)
    grad_x = mean * dyn.steps if dyn.static else mean.unsqueeze(0).expand_as(per_step).clone()
    return grad_x, grad_theta, None


def _compiled_backward(ctx, grad_out, saved, threshold, v0, pattern, sharpness=None):
    """``(dL/dx, dL/dθ, dL/dv0)`` of :class:`IFFunction` from the compiled kernel."""
    dyn: Dynamics = ctx.dyn
    source, overwrite = saved, False
    if ctx.kept == "recipe":
        with torch.no_grad():
            source = ctx.recipe(saved)
        if not dyn.static:
            source, overwrite = source.view(dyn.steps, -1, *source.shape[1:]), True
    grad_x, grad_theta, grad_v0 = kernel.backward(
        source, ctx.kept == "membrane", dyn, threshold, v0, grad_out, pattern,
        ctx.needs_input_grad[1], ctx.needs_input_grad[2], overwrite_source=overwrite,
        sharpness=sharpness,
    )  # fmt: skip
    if grad_theta is not None:
        grad_theta = _reduce_to(grad_theta, threshold.shape)
    if grad_v0 is not None:
        grad_v0 = _reduce_to(grad_v0, ctx.v0_shape)
    return grad_x, grad_theta, grad_v0
