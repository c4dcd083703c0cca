"""The Neuron: membrane traces computed by hand, QCFS equivalence, spike-count property."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustsnn.snn import Neuron


def run(neuron: Neuron, inputs: list[list[float]], steps: int) -> torch.Tensor:
    """Feed ``inputs[t]`` (one value per channel) at each step; return outputs [T, C]."""
    neuron.time_steps = steps
    neuron.record_potential = True
    x = torch.tensor(inputs, dtype=torch.float32)  # [T, C]
    return neuron(x).reshape(steps, -1)


def constant(value: float, steps: int, channels: int = 1) -> list[list[float]]:
    return [[value] * channels for _ in range(steps)]


# All numbers below are dyadic fractions, so float32 arithmetic is exact.


def test_soft_reset_trace_v0_zero():
    # input 5/8, θ = 1: v = .625 | 1.25→spike, .25 | .875 | 1.5→spike, .5 | 1.125→spike, .125
    n = Neuron(reset="subtract")
    out = run(n, constant(0.625, 5), 5)
    assert out.flatten().tolist() == [0, 1, 0, 1, 1]
    assert n.final_potential.item() == 0.125


def test_hard_reset_trace_v0_zero():
    # hard reset: .625 | 1.25→spike, 0 | .625 | 1.25→spike, 0 | .625
    n = Neuron(reset="zero")
    out = run(n, constant(0.625, 5), 5)
    assert out.flatten().tolist() == [0, 1, 0, 1, 0]
    assert n.final_potential.item() == 0.625


def test_soft_reset_trace_v0_half_and_strict_firing():
    # v0 = θ/2 = .5: 1.125→spike, .125 | .75 | 1.375→spike, .375 | 1.0→spike (v ≥ θ), 0 | .625
    n = Neuron(reset="subtract", initial_potential="half")
    assert run(n, constant(0.625, 5), 5).flatten().tolist() == [1, 0, 1, 1, 0]
    assert n.final_potential.item() == 0.625
    # strict v > θ: at step 4 v = 1.0 does not fire; 1.625 fires at step 5 → .625
    strict = Neuron(reset="subtract", initial_potential="half", strict_firing=True)
    assert run(strict, constant(0.625, 5), 5).flatten().tolist() == [1, 0, 1, 0, 1]
    assert strict.final_potential.item() == 0.625


def test_leaky_trace():
    # leak .5, input .75: .75 | .375+.75=1.125→spike, .125 | .8125 | 1.15625→spike, .15625
    # | .078125+.75 = .828125
    n = Neuron(leak=0.5)
    assert run(n, constant(0.75, 5), 5).flatten().tolist() == [0, 1, 0, 1, 0]
    assert n.final_potential.item() == 0.828125


def test_per_channel_threshold_and_threshold_amplitude():
    # channel 0, θ = .5: fires every step (v: .25, .5, .75, 1.0 after reset);
    # channel 1, θ = 2: .75, 1.5, 2.25→spike .25, 1.0
    n = Neuron(2, per_channel=True, spike_amplitude="threshold")
    n.set_threshold(torch.tensor([0.5, 2.0]))
    out = run(n, constant(0.75, 4, channels=2), 4)
    assert out[:, 0].tolist() == [0.5, 0.5, 0.5, 0.5]
    assert out[:, 1].tolist() == [0.0, 0.0, 2.0, 0.0]
    assert n.final_potential.tolist() == [[1.0, 1.0]]


def test_tensor_initial_potential():
    # v0 = (.5, 0) per channel, θ = 1, input .5:
    # ch0 1.0→spike, 0 | .5 | 1.0→spike;  ch1 .5 | 1.0→spike, 0 | .5
    n = Neuron(2)
    n.set_initial_potential(torch.tensor([0.5, 0.0]))
    out = run(n, constant(0.5, 3, channels=2), 3)
    assert out[:, 0].tolist() == [1, 0, 1]
    assert out[:, 1].tolist() == [0, 1, 0]


def test_analog_activations():
    x = torch.tensor([-1.0, 0.3, 1.7, 9.0])
    assert torch.equal(Neuron()(x), torch.relu(x))
    clip = Neuron(activation="clip", clip_value=2.0)
    assert clip(x).tolist() == pytest.approx([0.0, 0.3, 1.7, 2.0])
    q = Neuron(activation="qcfs", levels=4, clip_value=2.0)
    # λ·floor(x·L/λ + .5)/L clipped: 0.3 → floor(1.1)=1 → .5; 1.7 → floor(3.9)=3 → 1.5
    assert q(x).tolist() == pytest.approx([0.0, 0.5, 1.5, 2.0])


def test_qcfs_gradient_is_straight_through_inside_range():
    q = Neuron(activation="qcfs", levels=4, clip_value=2.0)
    x = torch.tensor([-1.0, 0.3, 1.7, 9.0], requires_grad=True)
    q(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("levels", [1, 2, 4, 8])
def test_qcfs_converted_equals_ann_at_t_equals_l(levels):
    torch.manual_seed(levels)
    lam = 2.0
    ann = Neuron(8, activation="qcfs", levels=levels, clip_value=lam)
    x = torch.randn(64, 8) * 2
    expected = ann(x)
    snn = Neuron(8, activation="qcfs", levels=levels, clip_value=lam)
    snn.set_threshold(snn.clip_value.detach())
    snn.configure(initial_potential="half", reset="subtract", spike_amplitude="threshold")
    snn.time_steps = levels
    out = snn(x.repeat(levels, 1)).reshape(levels, 64, 8).mean(0)
    assert torch.equal(out, expected)


@settings(max_examples=200, deadline=None)
@given(
    x=st.floats(-2.0, 3.0, allow_nan=False, width=32),
    theta=st.floats(0.0625, 2.0, allow_nan=False, width=32),
    steps=st.integers(1, 64),
)
def test_spike_count_within_one_of_rate(x, theta, steps):
    n = Neuron()
    n.set_threshold(theta)
    n.time_steps = steps
    count = n(torch.full((steps, 1), x)).sum().item()
    expected = steps * min(max(x / theta, 0.0), 1.0)
    assert abs(count - expected) <= 1.0 + 1e-4


def test_identical_calls_identical_outputs():
    n = Neuron(4)
    n.set_threshold(0.3)
    n.time_steps = 6
    x = torch.randn(6 * 3, 4)
    assert torch.equal(n(x), n(x))


def test_trainable_threshold_gets_gradient_and_is_clamped():
    n = Neuron(trainable_threshold=True, threshold=0.5, threshold_min=0.1)
    n.time_steps = 4
    x = torch.rand(4 * 8, 3, requires_grad=True)
    n(x).sum().backward()
    assert n.threshold.grad is not None and n.threshold.grad.abs() > 0
    with torch.no_grad():
        n.threshold.fill_(-1.0)
    assert n.effective_threshold().item() == pytest.approx(0.1)


def test_set_threshold_checks_shape():
    n = Neuron(3, per_channel=True)
    with pytest.raises(ValueError, match="3 entries"):
        n.set_threshold(torch.ones(4))


def test_state_dict_round_trip_restores_per_channel_and_initial_potential():
    src = Neuron(3, per_channel=True, trainable_threshold=True)
    src.set_threshold(torch.tensor([0.2, 0.4, 0.8]))
    src.set_initial_potential(torch.tensor([0.1, 0.0, 0.3]))
    src.time_steps = 5
    dst = Neuron(3)
    dst.load_state_dict(src.state_dict())
    dst.configure(initial_potential="tensor", trainable_threshold=True)
    dst.time_steps = 5
    x = torch.rand(5 * 2, 3)
    assert torch.equal(src(x), dst(x))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="reset"):
        Neuron(reset="sometimes")
    with pytest.raises(ValueError, match="leak"):
        Neuron(leak=1.5)
    with pytest.raises(ValueError, match="unknown neuron setting"):
        Neuron().configure(colour="red")
    with pytest.raises(ValueError, match="multiple of T"):
        n = Neuron()
        n.time_steps = 3
        n(torch.ones(4, 2))


def test_rate_of_if_neuron_approaches_clip():
    n = Neuron()
    n.set_threshold(0.5)
    n.time_steps = 256
    x = torch.linspace(-0.5, 1.0, 31)[None].repeat(256, 1)
    rate = n(x).mean(0)
    expected = (torch.linspace(-0.5, 1.0, 31) / 0.5).clamp(0, 1)
    assert (rate - expected).abs().max() <= 1 / 256 + 1e-6
    assert math.isclose(float(rate[-1]), 1.0)
