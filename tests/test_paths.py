"""Gradient paths: each backward matches its formula; BPTT matches plain autograd; contexts."""

from __future__ import annotations

import math

import pytest
import torch

from robustsnn.models import create_model
from robustsnn.snn import (
    Neuron,
    expand_paths,
    parse_path,
    set_gradient_path,
    set_time_steps,
    using_gradient_path,
    using_time_steps,
)

U = torch.tensor([-1.5, -0.6, -0.2, 0.0, 0.1, 0.45, 0.9, 2.0])


def formula(kind: str, u: float) -> float:
    """The surrogate derivatives written out independently of the library."""
    if kind == "triangle:1.0":
        return max(0.0, 1.0 - abs(u))
    if kind == "triangle:0.5":
        return max(0.0, 0.5 - abs(u)) / 0.25
    if kind == "rect:1.0":
        return 1.0 if abs(u) < 0.5 else 0.0
    if kind == "exp:0.3:2.0":
        return 0.3 * math.exp(-2.0 * abs(u))
    if kind == "sigmoid:4.0":
        s = 1 / (1 + math.exp(-4 * u))
        return 4 * s * (1 - s)
    if kind == "arctan:2.0":
        return 1.0 / (1 + (math.pi * u) ** 2)
    if kind == "gaussian:0.5":
        return math.exp(-(u**2) / 0.5) / (math.sqrt(2 * math.pi) * 0.5)
    if kind == "ste":
        return 1.0
    raise KeyError(kind)


@pytest.mark.parametrize(
    "path",
    [
        "triangle:1.0",
        "triangle:0.5",
        "rect:1.0",
        "exp:0.3:2.0",
        "sigmoid:4.0",
        "arctan:2.0",
        "gaussian:0.5",
        "ste",
    ],
)
def test_single_step_backward_matches_formula(path):
    theta = 0.5
    n = Neuron(threshold=theta, gradient_path=path)
    n.time_steps = 1
    x = (U + theta).clone().requires_grad_(True)
    n(x[:, None]).sum().backward()
    expected = torch.tensor([formula(path, float(u)) for u in U])
    assert torch.allclose(x.grad, expected, atol=1e-6)


def reference_if(x, theta, v0, leak, soft, amp, path):
    """Plain autograd through every step, with a surrogate-only autograd Function."""

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u):
            ctx.save_for_backward(u)
            return (u >= 0).to(u.dtype)

        @staticmethod
        def backward(ctx, grad):
            (u,) = ctx.saved_tensors
            return grad * path.surrogate(u)

    v = v0.expand_as(x[0])
    outs = []
    for t in range(x.shape[0]):
        m = leak * v + x[t]
        s = Spike.apply(m - theta)
        outs.append(s * theta if amp else s)
        v = m - s * theta if soft else m * (1 - s)
    return torch.stack(outs)


@pytest.mark.parametrize("soft", [True, False])
@pytest.mark.parametrize("path", ["triangle:1.0", "exp:1.0:0.5", "rect:2.0", "sigmoid:4.0"])
def test_bptt_matches_plain_autograd(soft, path):
    torch.manual_seed(0)
    p = parse_path(path)
    n = Neuron(
        threshold=0.7,
        trainable_threshold=True,
        leak=0.9,
        initial_potential="half",
        reset="subtract" if soft else "zero",
        spike_amplitude="threshold",
        gradient_path=p,
        threshold_min=0.0,
    )
    n.time_steps = 6
    x = (torch.randn(6, 3, 5) * 1.2).requires_grad_(True)
    out = n(x.reshape(18, 5)).reshape(6, 3, 5)
    g = torch.randn_like(out)
    got = torch.autograd.grad((out * g).sum(), [x, n.threshold])
    theta = n.threshold
    ref = reference_if(x, theta, theta / 2, 0.9, soft, True, p)
    assert torch.equal(out, ref)
    want = torch.autograd.grad((ref * g).sum(), [x, theta])
    assert torch.allclose(got[0], want[0], atol=1e-5)
    assert torch.allclose(got[1], want[1], atol=1e-4)


def test_bptr_passes_gradient_where_the_neuron_fired():
    n = Neuron(threshold=1.0, gradient_path="bptr")
    n.time_steps = 4
    # neuron 0 fires (input .6 accumulates past 1), neuron 1 never fires (input .2)
    x = torch.tensor([[0.6, 0.2]] * 4, requires_grad=True)
    g = torch.arange(1.0, 9.0).reshape(4, 2)
    (n(x) * g).sum().backward()
    assert x.grad[:, 0].tolist() == g[:, 0].tolist()
    assert x.grad[:, 1].tolist() == [0.0] * 4


def test_rga_uses_rate_slope():
    # IF (leak 1), θ = 1, β = 2: slope 1/(βθ) = .5 for mean input in [0, 2θ], 0 above
    n = Neuron(threshold=1.0, gradient_path="rga")
    n.time_steps = 3
    x = torch.tensor([[0.5, 2.5, -0.5]] * 3, requires_grad=True)
    n(x).sum().backward()
    assert x.grad[0].tolist() == [0.5, 0.0, 0.0]


def test_pdsg_uses_membrane_std_so_far():
    theta = 1.0
    n = Neuron(2, threshold=theta, gradient_path="pdsg", reset="subtract")
    n.time_steps = 2
    x = torch.tensor([[0.2, 0.4], [0.6, 1.4], [0.3, 0.1], [0.5, 0.9]])  # [T*B, C], B = 2
    x.requires_grad_(True)
    out = n(x)
    g = torch.zeros_like(out)
    g[0:2] = 1.0  # gradient only from step 1 outputs → only the step-1 surrogate matters
    (out * g).sum().backward()
    m1 = x[:2].detach()  # step-1 membranes (v0 = 0)
    std = m1.std(0, unbiased=True)
    u = m1 - theta
    want = torch.exp(-((u - std / 2) ** 2) / (2 * std**2)) / (math.sqrt(2 * math.pi) * std)
    assert torch.allclose(x.grad[:2], want, atol=1e-6)


def test_parse_round_trip_defaults_aliases_and_errors():
    for s in ["triangle:1.0", "exp:0.3:2.0", "rect:0.25", "ste", "bptr", "ann", "pdsg"]:
        assert str(parse_path(s)) == s
    assert str(parse_path("pcw")) == "triangle:1.0"
    assert str(parse_path("exp:2")) == "exp:1.0:2.0"
    assert str(parse_path("rga")) == "rga:0.2:2.0"
    for bad in ["", "triangle:x", "wiggle:1", "triangle:-1", "exp:1:2:3"]:
        with pytest.raises(ValueError):
            parse_path(bad)


def test_named_sets():
    paper = [str(p) for p in expand_paths("paper19")]
    assert len(paper) == 19 == len(set(paper))
    assert paper[:5] == [
        "triangle:1.0",
        "triangle:2.0",
        "triangle:3.0",
        "triangle:0.5",
        "triangle:0.25",
    ]
    assert paper[5:11] == [
        "exp:0.3:0.5",
        "exp:0.3:1.0",
        "exp:0.3:2.0",
        "exp:1.0:0.5",
        "exp:1.0:1.0",
        "exp:1.0:2.0",
    ]
    assert paper[11:16] == ["rect:0.25", "rect:0.5", "rect:1.0", "rect:2.0", "rect:4.0"]
    assert paper[16:] == ["ste", "bptr", "ann"]
    extended = [str(p) for p in expand_paths("extended")]
    assert extended == paper + ["sigmoid:4.0", "arctan:2.0", "rga:0.2:2.0", "pdsg"]


def small_snn(threshold: float = 0.1):
    torch.manual_seed(0)
    model = create_model("small_cnn", input_shape=(1, 8, 8))
    for _, n in model.neurons():
        n.set_threshold(threshold)
    set_time_steps(model, 4)
    return model.eval()


def test_context_restores_path_and_time_even_on_error():
    model = small_snn()
    set_gradient_path(model, "rect:0.5")
    with pytest.raises(RuntimeError), using_gradient_path(model, "exp:1.0:2.0"):
        assert all(str(n.gradient_path) == "exp:1.0:2.0" for _, n in model.neurons())
        raise RuntimeError
    assert all(str(n.gradient_path) == "rect:0.5" for _, n in model.neurons())
    with using_gradient_path(model, "ann"):
        assert model.time_steps == 0 and all(n.time_steps == 0 for _, n in model.neurons())
    assert model.time_steps == 4 and all(n.time_steps == 4 for _, n in model.neurons())
    with using_time_steps(model, 16):
        assert model.time_steps == 16
    assert model.time_steps == 4
    with pytest.raises(ValueError):
        set_time_steps(model, -1)
    with pytest.raises(ValueError, match="using_gradient_path"):
        set_gradient_path(model, "ann")


@pytest.mark.parametrize("path", [str(p) for p in expand_paths("extended")])
def test_input_gradients_nonzero_in_eval_mode(path):
    model = small_snn()
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    with using_gradient_path(model, path):
        torch.nn.functional.cross_entropy(model(x), torch.arange(4)).backward()
    assert x.grad.abs().sum() > 0
