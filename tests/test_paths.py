"""Gradient paths: each backward matches its formula; BPTT matches plain autograd; contexts."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from torch import nn

from robustsnn.models import create_model
from robustsnn.snn import (
    GradientPath,
    Neuron,
    expand_paths,
    parse_path,
    set_gradient_path,
    set_time_steps,
    using_gradient_path,
    using_time_steps,
)

# ---- surrogate formulas, written out independently of the library --------------------------


def formula(path: str, u: float, std: float | None = None) -> float:
    """dS/du at u = v - θ for one path string, from the formulas in the research notes."""
    kind, *params = path.split(":")
    p = [float(v) for v in params]
    if kind == "triangle":  # (1/γ²)·max(γ - |u|, 0)
        return max(p[0] - abs(u), 0.0) / p[0] ** 2
    if kind == "rect":  # (1/γ)·1[|u| < γ/2]
        return (1.0 / p[0]) if abs(u) < p[0] / 2 else 0.0
    if kind == "exp":  # a·exp(-γ|u|)
        return p[0] * math.exp(-p[1] * abs(u))
    if kind == "sigmoid":  # γ·σ(γu)·(1 - σ(γu))
        s = 1 / (1 + math.exp(-p[0] * u))
        return p[0] * s * (1 - s)
    if kind == "arctan":  # (γ/2) / (1 + (π/2·γ·u)²)
        return (p[0] / 2) / (1 + (math.pi / 2 * p[0] * u) ** 2)
    if kind == "gaussian":  # N(u; 0, s²)
        return math.exp(-(u**2) / (2 * p[0] ** 2)) / (math.sqrt(2 * math.pi) * p[0])
    if kind == "pdsg":  # N(u; σ/2, σ²), σ = spread of the membrane potentials
        return math.exp(-((u - std / 2) ** 2) / (2 * std**2)) / (math.sqrt(2 * math.pi) * std)
    if kind == "ste":
        return 1.0
    raise KeyError(path)


def formula_tensor(path: str, u: torch.Tensor, std: torch.Tensor | None = None) -> torch.Tensor:
    """The same formulas on tensors (for the reference BPTT below)."""
    kind, *params = path.split(":")
    p = [float(v) for v in params]
    if kind == "triangle":
        return (p[0] - u.abs()).clamp_min(0) / p[0] ** 2
    if kind == "rect":
        return (u.abs() < p[0] / 2).to(u.dtype) / p[0]
    if kind == "exp":
        return p[0] * torch.exp(-p[1] * u.abs())
    if kind == "sigmoid":
        s = torch.sigmoid(p[0] * u)
        return p[0] * s * (1 - s)
    if kind == "arctan":
        return (p[0] / 2) / (1 + (math.pi / 2 * p[0] * u) ** 2)
    if kind == "gaussian":
        return torch.exp(-(u**2) / (2 * p[0] ** 2)) / (math.sqrt(2 * math.pi) * p[0])
    if kind == "pdsg":
        return torch.exp(-((u - std / 2) ** 2) / (2 * std**2)) / (math.sqrt(2 * math.pi) * std)
    if kind == "ste":
        return torch.ones_like(u)
    raise KeyError(path)


U = [-1.5, -0.6, -0.2, 0.0, 0.1, 0.45, 0.9, 2.0]

SINGLE_STEP_PATHS = [
    "triangle:1.0",
    "triangle:0.5",
    "triangle:2.0",
    "rect:1.0",
    "rect:0.25",
    "exp:0.3:2.0",
    "exp:1.0:0.5",
    "sigmoid:4.0",
    "arctan:2.0",
    "gaussian:0.5",
    "ste",
    "pdsg",
]


@pytest.mark.parametrize("path", SINGLE_STEP_PATHS)
def test_single_step_backward_matches_formula(path):
    """T = 1, v0 = 0, unit spikes: out = H(x - θ), so d out/d x = surrogate(x - θ)."""
    theta = 0.5
    n = Neuron(threshold=theta, gradient_path=path)
    n.time_steps = 1
    x = torch.tensor([u + theta for u in U]).requires_grad_(True)
    n(x[:, None]).sum().backward()
    values = [float(v) for v in x.detach()]
    # PDSG: one channel, 8 samples, one step: σ = sample std of the 8 potentials (= inputs)
    std = statistics.stdev(values) if path == "pdsg" else None
    expected = torch.tensor([formula(path, v - theta, std) for v in values])
    assert torch.allclose(x.grad, expected, atol=1e-6)
    assert x.grad.abs().sum() > 0


def test_surrogate_anchor_values():
    """A few values worked out on paper pin the parameterisation (width, height, peak)."""
    u = torch.tensor([0.0, 0.45, -1.2])
    # triangle γ = 2: (2 - |u|)/4 → .5, .3875, .2
    assert parse_path("triangle:2").surrogate(u).tolist() == pytest.approx([0.5, 0.3875, 0.2])
    # rect γ = .25: height 4 on |u| < .125
    assert parse_path("rect:0.25").surrogate(u).tolist() == [4.0, 0.0, 0.0]
    # exp 0.3, rate 2: .3, .3·e^-.9 = .121970, .3·e^-2.4 = .027215
    got = parse_path("exp:0.3:2").surrogate(u).tolist()
    assert got == pytest.approx([0.3, 0.121970, 0.027215], abs=1e-6)
    # sigmoid γ = 4 and arctan γ = 2 both peak at 1; gaussian s = .5 peaks at 1/(.5·√(2π))
    assert parse_path("sigmoid").surrogate(u)[0].item() == pytest.approx(1.0)
    assert parse_path("arctan").surrogate(u)[0].item() == pytest.approx(1.0)
    assert parse_path("gaussian").surrogate(u)[0].item() == pytest.approx(0.797885, abs=1e-6)
    # PDSG with σ = 2: mode at u = σ/2 = 1, value 1/(2·√(2π)) = .199471
    sg = parse_path("pdsg").surrogate(torch.tensor([1.0]), torch.tensor(2.0))
    assert sg.item() == pytest.approx(0.199471, abs=1e-6)
    with pytest.raises(ValueError, match="std"):
        parse_path("pdsg").surrogate(u)
    with pytest.raises(ValueError, match="no surrogate"):
        parse_path("bptr").surrogate(u)


# ---- BPTT: the hand-written backward against plain autograd ---------------------------------


def channel_std(history: list[torch.Tensor]) -> torch.Tensor:
    """PDSG's σ: per-channel sample std of all potentials so far ([B, C, ...] each); 0 → 1."""
    h = torch.stack(history).movedim(2, 0)  # [C, t, B, ...]
    std = h.reshape(h.shape[0], -1).std(1)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return std.view(-1, *([1] * (history[0].dim() - 2)))


def reference_if(x, theta, v0, leak, soft, amp, path):
    """Plain autograd through every step; only the spike itself is a custom Function."""
    history: list[torch.Tensor] = []

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u, std):
            ctx.save_for_backward(u, std)
            return (u >= 0).to(u.dtype)

        @staticmethod
        def backward(ctx, grad):
            u, std = ctx.saved_tensors
            return grad * formula_tensor(path, u, std), None

    v = v0.expand_as(x[0])
    outs = []
    for t in range(x.shape[0]):
        m = leak * v + x[t]
        history.append(m.detach())
        std = channel_std(history) if path == "pdsg" else torch.ones(())
        s = Spike.apply(m - theta, std)
        outs.append(s * theta if amp else s)
        v = m - s * theta if soft else m * (1 - s)
    return torch.stack(outs)


BPTT_PATHS = [
    "triangle:1.0",
    "exp:1.0:0.5",
    "rect:2.0",
    "sigmoid:4.0",
    "arctan:2.0",
    "gaussian:0.5",
    "ste",
    "pdsg",
]


@pytest.mark.parametrize("soft", [True, False])
@pytest.mark.parametrize("path", BPTT_PATHS)
def test_bptt_matches_plain_autograd(soft, path):
    """T = 6, leak .9, v0 = θ/2, spikes of height θ, trainable θ (whose gradient also flows
    through v0 = θ/2, the reset and the amplitude)."""
    torch.manual_seed(0)
    n = Neuron(
        5,
        threshold=0.7,
        trainable_threshold=True,
        leak=0.9,
        initial_potential="half",
        reset="subtract" if soft else "zero",
        spike_amplitude="threshold",
        gradient_path=path,
        threshold_min=0.0,
    )
    n.time_steps = 6
    x = (torch.randn(6, 3, 5) * 1.2).requires_grad_(True)
    out = n(x.reshape(18, 5)).reshape(6, 3, 5)
    g = torch.randn_like(out)
    got = torch.autograd.grad((out * g).sum(), [x, n.threshold])
    theta = n.threshold
    ref = reference_if(x, theta, theta / 2, 0.9, soft, True, path)
    assert torch.equal(out, ref)
    assert 0 < (out != 0).float().mean() < 1  # the neurons fire sometimes, not always
    want = torch.autograd.grad((ref * g).sum(), [x, theta])
    assert torch.allclose(got[0], want[0], atol=1e-5)
    assert torch.allclose(got[1], want[1], atol=1e-4, rtol=1e-4)
    assert got[1].abs() > 0


@pytest.mark.parametrize("path", ["triangle:0.5", "pdsg"])
def test_bptt_per_channel_threshold_on_feature_maps(path):
    """Per-channel θ on [T·B, C, H, W], v0 = 0, unit spikes, IF: the θ gradient per channel."""
    torch.manual_seed(1)
    n = Neuron(3, per_channel=True, trainable_threshold=True, gradient_path=path)
    n.set_threshold(torch.tensor([0.3, 0.6, 0.9]))
    n.time_steps = 4
    x = torch.rand(4, 2, 3, 2, 2, requires_grad=True)
    out = n(x.reshape(8, 3, 2, 2)).reshape(4, 2, 3, 2, 2)
    g = torch.randn_like(out)
    got = torch.autograd.grad((out * g).sum(), [x, n.threshold])
    theta = n.threshold
    ref = reference_if(x, theta.view(3, 1, 1), torch.zeros(()), 1.0, True, False, path)
    assert torch.equal(out, ref)
    want = torch.autograd.grad((ref * g).sum(), [x, theta])
    assert got[1].shape == (3,)
    assert torch.allclose(got[0], want[0], atol=1e-5)
    assert torch.allclose(got[1], want[1], atol=1e-4, rtol=1e-4)


# ---- rate paths and PDSG --------------------------------------------------------------------


def test_bptr_passes_gradient_where_the_neuron_fired():
    n = Neuron(threshold=1.0, trainable_threshold=True, gradient_path="bptr")
    n.time_steps = 4
    # neuron 0 fires (input .6 accumulates past 1); neuron 1 never fires (input .2);
    # neuron 2 fires once only (input 1.0 at t1, then nothing)
    x = torch.tensor([[0.6, 0.2, 1.0], [0.6, 0.2, 0.0], [0.6, 0.2, 0.0], [0.6, 0.2, 0.0]])
    x.requires_grad_(True)
    g = torch.arange(1.0, 13.0).reshape(4, 3)
    (n(x) * g).sum().backward()
    assert x.grad.tolist() == [[1, 0, 3], [4, 0, 6], [7, 0, 9], [10, 0, 12]]  # g·1[rate > 0]
    assert n.threshold.grad is None  # BPTR sends nothing to θ


def test_bptr_rule_is_stated_on_spikes():
    # With spikes of height θ = .5 the rule ∂L/∂x_t = ∂L/∂s_t·1[rate > 0] gives g·θ.
    n = Neuron(threshold=0.5, spike_amplitude="threshold", gradient_path="bptr")
    n.time_steps = 2
    x = torch.tensor([[0.6], [0.0]], requires_grad=True)
    (n(x) * torch.tensor([[2.0], [4.0]])).sum().backward()
    assert x.grad.flatten().tolist() == [1.0, 2.0]


def test_rga_if_slope_is_one_over_beta_theta():
    # IF, θ = 2, β = 2: slope 1/(βθ) = .25 for mean input in [0, βθ] = [0, 4], 0 outside;
    # the same slope at every step. Means: 0 (exactly), 1, 4 (edge), 4.5, -.5
    n = Neuron(threshold=2.0, gradient_path="rga")
    n.time_steps = 2
    x = torch.tensor([[1.0, 0.0, 8.0, 4.5, -1.0], [-1.0, 2.0, 0.0, 4.5, 0.0]])
    x.requires_grad_(True)
    g = torch.tensor([[1.0] * 5, [2.0] * 5])
    (n(x) * g).sum().backward()
    assert x.grad.tolist() == [[0.25, 0.25, 0.25, 0.0, 0.0], [0.5, 0.5, 0.5, 0.0, 0.0]]


def test_rga_leaky_slope_and_parameters():
    # leak λ = .5, θ = 1, γ_low = .2, β = 2: onset (1-λ)θ = .5; below it slope .2;
    # then (1 - γ_low(1-λ)θ)/((λ + β - 1)θ) = .9/1.5 = .6 up to βθ = 2; 0 outside [0, 2]
    n = Neuron(threshold=1.0, leak=0.5, gradient_path="rga")
    n.time_steps = 1
    x = torch.tensor([[0.25, 1.0, 2.0, 2.5, -0.1]], requires_grad=True)
    n(x).sum().backward()
    assert x.grad.flatten().tolist() == pytest.approx([0.2, 0.6, 0.6, 0.0, 0.0])
    # rga:0.1:3 on IF, θ = 1: slope 1/3 on [0, 3]
    n = Neuron(threshold=1.0, gradient_path="rga:0.1:3")
    n.time_steps = 1
    x = torch.tensor([[0.5, 2.9, 3.1]], requires_grad=True)
    n(x).sum().backward()
    assert x.grad.flatten().tolist() == pytest.approx([1 / 3, 1 / 3, 0.0])


def test_pdsg_uses_per_channel_membrane_std_so_far():
    """T = 2, B = 2, C = 2, θ = 1, soft reset, v0 = 0; every output has gradient 1.

    Step 1: m1 = x1, σ1[c] = std(m1[:, c]); step 2: m2 = m1 - s1·θ + x2,
    σ2[c] = std({m1[:, c], m2[:, c]}). Backward by hand:
    dL/dx2 = sg(m2 - θ; σ2); the carry to step 1 is dv = dL/dm2 = dL/dx2;
    dL/ds1 = 1 - θ·dv (soft reset); dL/dx1 = dv + dL/ds1·sg(m1 - θ; σ1).
    """
    theta = 1.0
    n = Neuron(2, threshold=theta, gradient_path="pdsg", reset="subtract")
    n.time_steps = 2
    x = torch.tensor([[0.2, 0.4], [0.6, 1.4], [0.3, 0.1], [0.5, 0.9]], requires_grad=True)
    n(x).sum().backward()
    x1, x2 = x.detach()[:2].tolist(), x.detach()[2:].tolist()
    m1 = x1
    s1 = [[1.0 if m >= theta else 0.0 for m in row] for row in m1]
    m2 = [[m1[b][c] - s1[b][c] * theta + x2[b][c] for c in range(2)] for b in range(2)]
    assert s1 == [[0.0, 0.0], [0.0, 1.0]]
    want1, want2 = [[0.0] * 2 for _ in range(2)], [[0.0] * 2 for _ in range(2)]
    for c in range(2):
        sigma1 = statistics.stdev([m1[0][c], m1[1][c]])
        sigma2 = statistics.stdev([m1[0][c], m1[1][c], m2[0][c], m2[1][c]])
        for b in range(2):
            dv = formula("pdsg", m2[b][c] - theta, sigma2)
            want2[b][c] = dv
            ds1 = 1.0 - theta * dv
            want1[b][c] = dv + ds1 * formula("pdsg", m1[b][c] - theta, sigma1)
    assert torch.allclose(x.grad, torch.tensor(want1 + want2), atol=1e-6)


def test_pdsg_std_of_a_constant_channel_is_one():
    # T = 1, B = 5: channel 0 sees .3 five times (spread exactly 0, so σ = 1, not float noise
    # from cancelling sums); channel 1 sees .5, 1.5, .5, 1.5, 1.0
    n = Neuron(2, threshold=1.0, gradient_path="pdsg")
    n.time_steps = 1
    ch1 = [0.5, 1.5, 0.5, 1.5, 1.0]
    x = torch.tensor([[0.3, v] for v in ch1], requires_grad=True)
    n(x).sum().backward()
    sigma1 = statistics.stdev(ch1)
    want = [[formula("pdsg", 0.3 - 1, 1.0), formula("pdsg", v - 1, sigma1)] for v in ch1]
    assert torch.allclose(x.grad, torch.tensor(want), atol=1e-6)


# ---- parsing and named sets -----------------------------------------------------------------

CANONICAL = [
    "triangle:1.0",
    "triangle:0.25",
    "rect:0.5",
    "exp:0.3:2.0",
    "exp:1.0:0.5",
    "sigmoid:4.0",
    "arctan:2.0",
    "gaussian:0.5",
    "ste",
    "bptr",
    "rga:0.2:2.0",
    "rga:0.0:3.0",
    "pdsg",
    "ann",
]


@pytest.mark.parametrize("spec", CANONICAL)
def test_canonical_strings_round_trip(spec):
    path = parse_path(spec)
    assert str(path) == spec
    assert parse_path(path) is path
    assert parse_path(str(path)) == path


def test_defaults_aliases_and_spelling():
    defaults = {
        "triangle": "triangle:1.0",
        "rect": "rect:1.0",
        "exp": "exp:1.0:1.0",
        "exp:2": "exp:1.0:2.0",  # one number is the rate, amplitude 1
        "sigmoid": "sigmoid:4.0",
        "arctan": "arctan:2.0",
        "gaussian": "gaussian:0.5",
        "rga": "rga:0.2:2.0",
        "triangle:3": "triangle:3.0",
        " Triangle : 0.5 ": "triangle:0.5",
        "EXP:0.3:1": "exp:0.3:1.0",
    }
    aliases = {
        "pcw": "triangle:1.0",
        "tri:2": "triangle:2.0",
        "rectangular:0.5": "rect:0.5",
        "exponential:0.3:2": "exp:0.3:2.0",
        "atan": "arctan:2.0",
        "sig": "sigmoid:4.0",
        "gauss": "gaussian:0.5",
        "straight-through": "ste",
        "proxy": "ann",
    }
    for spec, canonical in {**defaults, **aliases}.items():
        assert str(parse_path(spec)) == canonical, spec
    assert parse_path("triangle") == GradientPath("triangle", (1.0,))


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "wiggle:1",
        "triangle:x",
        "triangle:-1",
        "triangle:0",
        "rect:nan",
        "rect:inf",
        "exp:1:2:3",
        "ste:1",
        "bptr:0.5",
        "rga:-0.1:2",
        "rga:0.2:0",
        None,
        3,
    ],
)
def test_bad_path_strings_are_refused(bad):
    with pytest.raises(ValueError):
        parse_path(bad)


def test_named_sets():
    paper = [str(p) for p in expand_paths("paper19")]
    assert len(paper) == 19 == len(set(paper))
    assert paper == [
        "triangle:1.0",
        "triangle:2.0",
        "triangle:3.0",
        "triangle:0.5",
        "triangle:0.25",
        "exp:0.3:0.5",
        "exp:0.3:1.0",
        "exp:0.3:2.0",
        "exp:1.0:0.5",
        "exp:1.0:1.0",
        "exp:1.0:2.0",
        "rect:0.25",
        "rect:0.5",
        "rect:1.0",
        "rect:2.0",
        "rect:4.0",
        "ste",
        "bptr",
        "ann",
    ]
    extended = [str(p) for p in expand_paths("extended")]
    assert extended == paper + ["sigmoid:4.0", "arctan:2.0", "rga:0.2:2.0", "pdsg"]
    assert len(set(extended)) == 23


def test_expand_paths_lists_deduplicate_and_refuse_nonsense():
    assert [str(p) for p in expand_paths("pcw, triangle:1, rect:0.5,")] == [
        "triangle:1.0",
        "rect:0.5",
    ]
    assert len(expand_paths("paper19,extended,pdsg")) == 23
    assert [str(p) for p in expand_paths(["ste", parse_path("bptr"), "ste"])] == ["ste", "bptr"]
    assert expand_paths(parse_path("ann")) == [parse_path("ann")]
    for bad in ["", " , ", [], "paper20"]:
        with pytest.raises(ValueError):
            expand_paths(bad)


# ---- switching paths and time on a whole model ----------------------------------------------


def small_snn(threshold: float = 0.1):
    torch.manual_seed(0)
    model = create_model("small_cnn", input_shape=(1, 8, 8))
    for _, n in model.neurons():
        n.set_threshold(threshold)
    set_time_steps(model, 4)
    return model.eval()


def test_gradient_path_context_restores_even_on_error():
    model = small_snn()
    set_gradient_path(model, "rect:0.5")
    model.act2.gradient_path = parse_path("ste")  # per-neuron paths are restored one by one
    before = [str(n.gradient_path) for _, n in model.neurons()]
    assert before == ["rect:0.5", "ste", "rect:0.5"]
    with pytest.raises(RuntimeError), using_gradient_path(model, "exp:1.0:2.0") as path:
        assert path == parse_path("exp:1.0:2.0")
        assert all(str(n.gradient_path) == "exp:1.0:2.0" for _, n in model.neurons())
        raise RuntimeError
    assert [str(n.gradient_path) for _, n in model.neurons()] == before
    with pytest.raises(RuntimeError), using_gradient_path(model, "ann"):
        assert model.time_steps == 0 and all(n.time_steps == 0 for _, n in model.neurons())
        raise RuntimeError
    assert model.time_steps == 4 and all(n.time_steps == 4 for _, n in model.neurons())
    assert [str(n.gradient_path) for _, n in model.neurons()] == before


def test_time_steps_context_and_validation():
    model = small_snn()
    with using_time_steps(model, 16):
        assert model.time_steps == 16 and all(n.time_steps == 16 for _, n in model.neurons())
    assert model.time_steps == 4
    with pytest.raises(KeyError), using_time_steps(model, 0):
        raise KeyError
    assert model.time_steps == 4 and all(n.time_steps == 4 for _, n in model.neurons())
    for bad in [-1, 1.5, True, "4", None]:
        with pytest.raises(ValueError, match="time steps"):
            set_time_steps(model, bad)
    assert model.time_steps == 4
    with pytest.raises(ValueError, match="using_gradient_path"):
        set_gradient_path(model, "ann")
    plain = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="no Neuron"):
        set_time_steps(plain, 4)
    with pytest.raises(ValueError, match="no Neuron"), using_gradient_path(plain, "ste"):
        pass


def test_ann_path_runs_the_model_at_t0():
    model = small_snn()
    x = torch.rand(3, 1, 8, 8)
    with using_time_steps(model, 0):
        xa = x.clone().requires_grad_(True)
        ann_out = model(xa)
        ann_out.sum().backward()
    xp = x.clone().requires_grad_(True)
    with using_gradient_path(model, "ann"):
        proxy_out = model(xp)
        proxy_out.sum().backward()
    assert torch.equal(proxy_out, ann_out)
    assert torch.equal(xp.grad, xa.grad)
    assert not torch.equal(model(x), ann_out)  # outside the block it is the SNN again


@pytest.mark.parametrize("path", [str(p) for p in expand_paths("extended,gaussian:0.5")])
def test_input_gradients_nonzero_in_eval_mode(path):
    model = small_snn()
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    with using_gradient_path(model, path):
        torch.nn.functional.cross_entropy(model(x), torch.arange(4)).backward()
    assert x.grad.abs().sum() > 0
    assert torch.isfinite(x.grad).all()
