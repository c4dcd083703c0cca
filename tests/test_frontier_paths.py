"""Detached-reset paths, ASSG's adaptive sharpness and HART, against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from robustsnn.attacks.victim import Victim
from robustsnn.models import create_model
from robustsnn.snn import set_time_steps, using_gradient_path
from robustsnn.snn.adaptive import SharpnessState, using_sharpness_state
from robustsnn.snn.neuron import Neuron
from robustsnn.snn.paths import GradientPath, expand_paths, parse_path


def neuron(path: str, reset: str, steps: int, threshold: float = 1.0) -> Neuron:
    n = Neuron(None, threshold=threshold, reset=reset, gradient_path=path)
    n.time_steps = steps
    return n


def triangle(u: float) -> float:
    return max(1.0 - abs(u), 0.0)


@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("detached", [False, True])
def test_two_step_if_backward_by_hand(reset, detached):
    """T = 2, θ = 1, v0 = 0, triangle:1: x1 = 1.2 fires, x2 = 0.5; loss = s1 + s2.

    m1 = 1.2, s1 = 1, v1 = 0 (zero) or 0.2 (subtract); m2 = v1 + 0.5, s2 = 0.
    ds2/dm2 = σ'(m2 − 1); dm2/dv1 = 1; dv1/dm1 = (1 − s1) − m1·σ'(m1 − 1) (zero) or
    1 − θ·σ'(m1 − 1) (subtract); the detached reset drops the σ' term.
    """
    path = "triangle:1.0/dr" if detached else "triangle:1.0"
    n = neuron(path, reset, 2)
    x = torch.tensor([[1.2], [0.5]], requires_grad=True)
    out = n(x)
    assert out.flatten().tolist() == [1.0, 0.0]
    out.sum().backward()
    m1 = 1.2
    v1 = 0.0 if reset == "zero" else 0.2
    m2 = v1 + 0.5
    sg1, sg2 = triangle(m1 - 1), triangle(m2 - 1)
    if reset == "zero":
        dv1_dm1 = (1 - 1) - (0.0 if detached else m1 * sg1)
    else:
        dv1_dm1 = 1 - (0.0 if detached else 1.0 * sg1)
    want_x2 = sg2
    want_x1 = sg1 + sg2 * dv1_dm1
    assert x.grad.flatten().tolist() == pytest.approx([want_x1, want_x2], abs=1e-6)


def reference(x, theta, soft, path, detach):
    """IF neurons by plain autograd with the surrogate as a custom function."""
    sg = parse_path(path)

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u):
            ctx.save_for_backward(u)
            return (u >= 0).to(u.dtype)

        @staticmethod
        def backward(ctx, grad):
            (u,) = ctx.saved_tensors
            return grad * sg.surrogate(u)

    v = torch.zeros_like(x[0])
    outs = []
    for t in range(x.shape[0]):
        m = v + x[t]
        s = Spike.apply(m - theta)
        outs.append(s)
        r = s.detach() if detach else s
        v = m - r * theta if soft else m * (1 - r)
    return torch.stack(outs)


@pytest.mark.parametrize("soft", [True, False])
@pytest.mark.parametrize("path", ["triangle:1.0", "arctan:8.0", "sigmoid:4.0", "exp:0.3:2.0"])
def test_detached_reset_matches_autograd_with_detached_spikes(soft, path):
    torch.manual_seed(0)
    x = (torch.randn(6, 4, 5) * 0.8 + 0.4).requires_grad_(True)
    g = torch.randn(6, 4, 5)
    n = neuron(f"{path}/dr", "subtract" if soft else "zero", 6, threshold=0.7)
    got = torch.autograd.grad((n(x.reshape(24, 5)).reshape(6, 4, 5) * g).sum(), x)[0]
    want = torch.autograd.grad((reference(x, 0.7, soft, path, True) * g).sum(), x)[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    attached = torch.autograd.grad((reference(x, 0.7, soft, path, False) * g).sum(), x)[0]
    assert not torch.allclose(got, attached, atol=1e-4)  # the reset term did contribute


def test_path_strings_of_the_new_kinds():
    assert str(parse_path("triangle:1/dr")) == "triangle:1.0/dr"
    assert str(parse_path("assg")) == "assg:atan:0.425"
    assert str(parse_path("assg:rect/dr")) == "assg:rect:0.8/dr"
    assert str(parse_path("assg:arctan:0.44")) == "assg:atan:0.44"
    assert str(parse_path("hart")) == "hart:1.0"
    assert parse_path("pdsg/dr").detach_reset
    for spec in ["arctan:8.0/dr", "assg:sigmoid:2.0/dr", "hart:0.5"]:
        assert str(parse_path(spec)) == spec
    for bad in ["bptr/dr", "ann/dr", "rga/dr", "hart/dr", "triangle/x", "assg:wiggle", "assg:0.5"]:
        with pytest.raises(ValueError):
            parse_path(bad)
    with pytest.raises(ValueError):
        GradientPath("triangle", (1.0,), shape="atan")
    grid = [str(p) for p in expand_paths("sharpness")]
    assert len(grid) == 20 and grid[0] == "arctan:2.0/dr" and grid[-1] == "sigmoid:20.0/dr"


def test_assg_sharpness_over_three_iterations_by_hand():
    """M ← .9M + .1|x|; D ← .9D + .1||x| − M| (new M); α = a/(M + 1.5D + 1e-4)."""
    state = SharpnessState()
    ids = torch.tensor([7, 3])
    key = object()
    distances = [torch.tensor([[0.5, 2.0]]), torch.tensor([[0.1, 1.0]]), torch.tensor([[0.3, 0.0]])]
    mean = [1.0, 1.0]
    spread = [0.0, 0.0]
    scale = 2 / math.pi * math.tan(math.pi * 0.425)
    for d in distances:
        with using_sharpness_state(state, ids):
            alpha = state.sharpness(key, d.clone(), scale)
        for i in range(2):
            mean[i] = 0.9 * mean[i] + 0.1 * float(d[0, i])
            spread[i] = 0.9 * spread[i] + 0.1 * abs(float(d[0, i]) - mean[i])
        want = [scale / (mean[i] + 1.5 * spread[i] + 1e-4) for i in range(2)]
        assert alpha.flatten().tolist() == pytest.approx(want, rel=1e-6)
    # sample 3 alone (sample 7 left the batch) keeps its own statistics
    with using_sharpness_state(state, torch.tensor([3])):
        alpha = state.sharpness(key, torch.tensor([[1.0]]), scale)
    m = 0.9 * mean[1] + 0.1 * 1.0
    s = 0.9 * spread[1] + 0.1 * abs(1.0 - m)
    assert float(alpha) == pytest.approx(scale / (m + 1.5 * s + 1e-4), rel=1e-6)
    # EOT's extra draws read the statistics without moving them
    with using_sharpness_state(state, torch.tensor([3]), frozen=True):
        frozen = state.sharpness(key, torch.tensor([[5.0]]), scale)
    assert float(frozen) == pytest.approx(float(alpha), rel=1e-6)


def test_assg_surrogate_in_the_backward_uses_the_adaptive_sharpness():
    """One neuron, T = 1, atan shape: the gradient is (α/2)/(1 + (π/2·α·u)²) with α from a
    fresh state (M = .9 + .1|u|, D = .1·||u| − M|)."""
    n = neuron("assg:atan:0.425", "zero", 1)
    x = torch.tensor([[0.6]], requires_grad=True)
    n(x).sum().backward()
    u = 0.6 - 1.0
    mean = 0.9 + 0.1 * abs(u)
    spread = 0.1 * abs(abs(u) - mean)
    alpha = 2 / math.pi * math.tan(math.pi * 0.425) / (mean + 1.5 * spread + 1e-4)
    want = (alpha / 2) / (1 + (math.pi / 2 * alpha * u) ** 2)
    assert float(x.grad) == pytest.approx(want, rel=1e-5)


def test_assg_state_is_fresh_per_run_and_sharpens_across_iterations():
    torch.manual_seed(0)
    model = create_model("small_cnn", input_shape=(1, 8, 8), num_classes=4, channels=[4, 8])
    set_time_steps(model.eval(), 4)
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2])
    ids = torch.arange(3)
    victim = Victim(model, "assg/dr")
    loss = torch.nn.functional.cross_entropy
    first = victim.gradient(x, y, ids, lambda z, t: loss(z, t, reduction="none"), "a")[0]
    second = victim.gradient(x, y, ids, lambda z, t: loss(z, t, reduction="none"), "b")[0]
    assert not torch.equal(first, second)  # the statistics moved
    victim.new_run()
    again = victim.gradient(x, y, ids, lambda z, t: loss(z, t, reduction="none"), "c")[0]
    assert torch.equal(first, again)  # a new run starts from M = 1, D = 0


def test_hart_backward_by_hand():
    """No gradient between steps; each step's input gradient is the mean over steps of
    g_t·σ'(m_t − θ) (triangle of width γ)."""
    n = neuron("hart:1.0", "zero", 3)
    x = torch.tensor([[0.6], [0.7], [0.2]], requires_grad=True)
    g = torch.tensor([[1.0], [2.0], [-1.0]])
    out = n(x)
    (out * g).sum().backward()
    m = [0.6, 1.3, 0.2]  # the second step fires and resets to 0
    per_step = [float(g[t]) * triangle(m[t] - 1.0) for t in range(3)]
    mean = sum(per_step) / 3
    assert x.grad.flatten().tolist() == pytest.approx([mean] * 3, abs=1e-6)


@pytest.mark.parametrize(
    "path", ["assg/dr", "hart:1.0", "arctan:8.0/dr", "triangle:1.0/dr", "assg:gaussian"]
)
def test_new_paths_give_gradients_on_a_network(path):
    torch.manual_seed(0)
    model = create_model("small_cnn", input_shape=(1, 8, 8), num_classes=4, channels=[4, 8])
    set_time_steps(model.eval(), 4)
    x = (torch.rand(2, 1, 8, 8) * 3).requires_grad_(True)
    with using_gradient_path(model, path):
        model(x)[:, 0].sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("attack", ["pgd", "apgd-dlr", "sapgd"])
@pytest.mark.parametrize("path", ["assg/dr", "hart:1.0", "arctan:8.0/dr"])
def test_attacks_through_the_new_paths_stay_in_budget(attack, path):
    """Every attack runs through every new path; no example leaves its ε-ball or [0, 1]."""
    from robustsnn.attacks import Member
    from robustsnn.attacks.core import perturbation_norm

    torch.manual_seed(0)
    model = create_model("small_cnn", input_shape=(1, 8, 8), num_classes=4, channels=[4, 8])
    set_time_steps(model.eval(), 4)
    x, y = torch.rand(6, 1, 8, 8), torch.randint(0, 4, (6,))
    x_adv = Member(attack, path, steps=6).craft(model, x, y, 0.05)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert perturbation_norm(x_adv, x).max() <= 0.05 + 1e-6
    assert torch.isfinite(x_adv).all()
