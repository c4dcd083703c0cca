"""The Neuron: membrane traces computed by hand, QCFS equivalence, spike-count property, state."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustsnn.snn import Neuron


def run(neuron: Neuron, inputs: list, steps: int) -> torch.Tensor:
    """Feed ``inputs[t]`` (one sample per step) as time-folded input ``[T·1, ...]``.

    Returns the outputs as ``[T, ...]``; ``neuron.final_potential`` holds v after step T.
    """
    neuron.time_steps = steps
    neuron.record_potential = True
    x = torch.tensor(inputs, dtype=torch.float32)  # [T, C, ...] = [T·B, C, ...] with B = 1
    return neuron(x)


def constant(value: float, steps: int, channels: int = 1) -> list[list[float]]:
    return [[value] * channels for _ in range(steps)]


# Every number in the traces below is a dyadic fraction with few bits, so float32 arithmetic
# is exact and the expected values can be compared with ==.


def test_soft_reset_trace_v0_zero():
    # θ = 1, input 5/8, v0 = 0, v ← v - θ on a spike:
    # t1 .625 | t2 1.25 → spike, .25 | t3 .875 | t4 1.5 → spike, .5 | t5 1.125 → spike, .125
    n = Neuron(reset="subtract")
    out = run(n, constant(0.625, 5), 5)
    assert out.flatten().tolist() == [0, 1, 0, 1, 1]
    assert n.final_potential.flatten().tolist() == [0.125]


def test_time_folding_is_time_major():
    # [T·B, C] with B = 2 holds rows (t1 b1, t1 b2, t2 b1, t2 b2, ...). θ = 1, v0 = 0, soft:
    # sample 1, input .625: 0 1 0 1 (as above); sample 2, input .25: .25 .5 .75 1.0 → 0 0 0 1
    n = Neuron()
    out = run(n, [[0.625], [0.25]] * 4, 4).reshape(4, 2)
    assert out[:, 0].tolist() == [0, 1, 0, 1]
    assert out[:, 1].tolist() == [0, 0, 0, 1]
    assert n.final_potential.flatten().tolist() == [0.5, 0.0]


def test_hard_reset_trace_v0_zero():
    # hard reset (v ← 0 on a spike): .625 | 1.25 → spike, 0 | .625 | 1.25 → spike, 0 | .625
    n = Neuron(reset="zero")
    out = run(n, constant(0.625, 5), 5)
    assert out.flatten().tolist() == [0, 1, 0, 1, 0]
    assert n.final_potential.flatten().tolist() == [0.625]


def test_soft_reset_trace_v0_half_input_landing_on_threshold():
    # v0 = θ/2 = .5: t1 1.125 → spike, .125 | t2 .75 | t3 1.375 → spike, .375
    # | t4 1.0 = θ exactly → spike under v ≥ θ, 0 | t5 .625
    n = Neuron(reset="subtract", initial_potential="half")
    assert run(n, constant(0.625, 5), 5).flatten().tolist() == [1, 0, 1, 1, 0]
    assert n.final_potential.flatten().tolist() == [0.625]
    # strict v > θ: at t4 v = 1.0 does not fire; t5 1.625 → spike, .625
    strict = Neuron(reset="subtract", initial_potential="half", strict_firing=True)
    assert run(strict, constant(0.625, 5), 5).flatten().tolist() == [1, 0, 1, 0, 1]
    assert strict.final_potential.flatten().tolist() == [0.625]


def test_hard_reset_trace_v0_half_threshold_amplitude():
    # θ = 1.5, v0 = .75, input .5, hard reset, spikes of height θ:
    # t1 1.25 | t2 1.75 → spike (1.5), 0 | t3 .5 | t4 1.0 | t5 1.5 = θ → spike (1.5), 0 | t6 .5
    n = Neuron(threshold=1.5, reset="zero", initial_potential="half", spike_amplitude="threshold")
    out = run(n, constant(0.5, 6), 6)
    assert out.flatten().tolist() == [0, 1.5, 0, 0, 1.5, 0]
    assert n.final_potential.flatten().tolist() == [0.5]
    # strict firing: t5 1.5 does not fire; t6 2.0 → spike, 0
    n.configure(strict_firing=True)
    assert run(n, constant(0.5, 6), 6).flatten().tolist() == [0, 1.5, 0, 0, 0, 1.5]
    assert n.final_potential.flatten().tolist() == [0.0]


def test_leaky_soft_reset_trace():
    # leak .5, θ = 1, input .75, v_t = .5·v_{t-1} + x_t:
    # t1 .75 | t2 .375+.75 = 1.125 → spike, .125 | t3 .0625+.75 = .8125
    # | t4 .40625+.75 = 1.15625 → spike, .15625 | t5 .078125+.75 = .828125
    n = Neuron(leak=0.5)
    assert run(n, constant(0.75, 5), 5).flatten().tolist() == [0, 1, 0, 1, 0]
    assert n.final_potential.flatten().tolist() == [0.828125]


def test_leaky_hard_reset_trace_v0_half():
    # leak .5, θ = 1, v0 = .5, input .75, hard reset:
    # t1 .25+.75 = 1.0 → spike, 0 | t2 .75 | t3 .375+.75 = 1.125 → spike, 0 | t4 .75
    n = Neuron(leak=0.5, reset="zero", initial_potential="half")
    assert run(n, constant(0.75, 4), 4).flatten().tolist() == [1, 0, 1, 0]
    assert n.final_potential.flatten().tolist() == [0.75]


def test_per_channel_threshold_and_threshold_amplitude():
    # channel 0, θ = .5: .75 → spike .25 | 1.0 → spike .5 | 1.25 → spike .75 | 1.5 → spike 1.0
    # channel 1, θ = 2: .75 | 1.5 | 2.25 → spike, .25 | 1.0
    n = Neuron(2, per_channel=True, spike_amplitude="threshold")
    n.set_threshold(torch.tensor([0.5, 2.0]))
    out = run(n, constant(0.75, 4, channels=2), 4)
    assert out[:, 0].tolist() == [0.5, 0.5, 0.5, 0.5]
    assert out[:, 1].tolist() == [0.0, 0.0, 2.0, 0.0]
    assert n.final_potential.tolist() == [[1.0, 1.0]]


def test_per_channel_threshold_on_feature_maps_with_half_potential_and_hard_reset():
    # [T·B, C, H, W] = [3·1, 2, 1, 2]; θ = (1, .5) per channel, so v0 = (.5, .25);
    # channel 0 (θ 1), pixel inputs .25 / .5:
    #   .25 px: .75 | 1.0 → spike, 0 | .25          .5 px: 1.0 → spike, 0 | .5 | 1.0 → spike, 0
    # channel 1 (θ .5), pixel inputs .125 / .5:
    #   .125 px: .375 | .5 → spike, 0 | .125        .5 px: .75 → spike, 0 | .5 → spike, 0 | spike, 0
    n = Neuron(2, per_channel=True, reset="zero", initial_potential="half")
    n.set_threshold(torch.tensor([1.0, 0.5]))
    step = [[[0.25, 0.5]], [[0.125, 0.5]]]
    out = run(n, [step] * 3, 3)
    assert out[:, 0, 0].tolist() == [[0, 1], [1, 0], [0, 1]]
    assert out[:, 1, 0].tolist() == [[0, 1], [1, 1], [0, 1]]
    assert n.final_potential.tolist() == [[[[0.25, 0.0]], [[0.125, 0.0]]]]


def test_tensor_initial_potential():
    # v0 = (.5, 0) per channel, θ = 1, input .5:
    # ch0 1.0 → spike, 0 | .5 | 1.0 → spike, 0;  ch1 .5 | 1.0 → spike, 0 | .5
    n = Neuron(2)
    n.set_initial_potential(torch.tensor([0.5, 0.0]))
    assert n.initial_potential_mode == "tensor"
    out = run(n, constant(0.5, 3, channels=2), 3)
    assert out[:, 0].tolist() == [1, 0, 1]
    assert out[:, 1].tolist() == [0, 1, 0]
    assert n.final_potential.tolist() == [[0.0, 0.5]]


def test_tensor_initial_potential_per_neuron_on_feature_maps():
    # one v0 per neuron of a sample ([C, H, W] = [1, 1, 3]): (.75, .25, 0); θ = 1, input .25:
    # px0 1.0 → spike, 0 | .25;  px1 .5 | .75;  px2 .25 | .5
    n = Neuron(1)
    n.set_initial_potential(torch.tensor([[[0.75, 0.25, 0.0]]]))
    out = run(n, [[[[0.25, 0.25, 0.25]]]] * 2, 2)
    assert out.flatten().tolist() == [1, 0, 0, 0, 0, 0]
    assert n.final_potential.flatten().tolist() == [0.25, 0.75, 0.5]


def test_tensor_mode_without_a_tensor_is_refused():
    with pytest.raises(ValueError, match="set_initial_potential"):
        Neuron().configure(initial_potential="tensor")
    n = Neuron(initial_potential="tensor")  # allowed so a checkpoint can bring the tensor
    n.time_steps = 2
    with pytest.raises(ValueError, match="set_initial_potential"):
        n(torch.ones(2, 1))


def test_analog_activations():
    x = torch.tensor([-1.0, 0.3, 1.7, 9.0])
    assert torch.equal(Neuron()(x), torch.relu(x))
    clip = Neuron(activation="clip", clip_value=2.0)
    assert clip(x).tolist() == pytest.approx([0.0, 0.3, 1.7, 2.0])
    q = Neuron(activation="qcfs", levels=4, clip_value=2.0)
    # λ·clip(floor(x·L/λ + .5)/L, 0, 1): 0.3 → floor(1.1) = 1 → .5; 1.7 → floor(3.9) = 3 → 1.5
    assert q(x).tolist() == pytest.approx([0.0, 0.5, 1.5, 2.0])


def test_qcfs_gradient_is_straight_through_inside_range():
    q = Neuron(activation="qcfs", levels=4, clip_value=2.0)
    x = torch.tensor([-1.0, 0.3, 1.7, 9.0], requires_grad=True)
    q(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]


def convert_qcfs(neuron: Neuron) -> Neuron:
    """The QCFS conversion: θ = λ, v0 = θ/2, reset by subtraction, spikes of height θ."""
    neuron.set_threshold(neuron.clip_value.detach())
    return neuron.configure(initial_potential="half", reset="subtract", spike_amplitude="threshold")


@pytest.mark.parametrize("levels", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("lam", [2.0, 0.7])
def test_qcfs_converted_equals_ann_at_t_equals_l(levels, lam):
    """Why this is exact: for a constant input z with 0 ≤ z ≤ θ the potential stays in
    [0, θ) after every reset (it gains at most θ per step, so it fires at most once), hence
    after T steps the count is floor((T·z + θ/2)/θ); z < 0 never reaches θ, z > θ fires every
    step. With T = L and θ = λ that is L·clip(floor(z·L/λ + 1/2)/L, 0, 1), the QCFS
    activation, and v ≥ θ matches floor's closed bin edge.

    In float32 the spike counts still agree exactly. The rate θ·count/T is formed as a sum of
    `count` copies of θ divided by T, the ANN as (count/L)·λ; these are bitwise equal when θ has
    few significant bits (λ = 2: every partial sum is exact) and at most a couple of ulps apart
    otherwise (λ = 0.7: each partial sum rounds), which is float rounding, not conversion error.
    """
    torch.manual_seed(levels)
    x = torch.randn(256, 8) * lam  # negatives, values inside (0, λ) and above λ
    if lam == 2.0 and levels in (1, 2, 4, 8):  # every bin edge λ(k - ½)/L is exact here
        edges = lam * (torch.arange(levels + 2) - 0.5) / levels
        x = torch.cat([x, edges.repeat(8, 1).t()])
    ann = Neuron(8, activation="qcfs", levels=levels, clip_value=lam)
    expected = ann(x)
    snn = convert_qcfs(Neuron(8, activation="qcfs", levels=levels, clip_value=lam))
    snn.time_steps = levels
    spikes = snn(x.repeat(levels, 1)).reshape(levels, *x.shape)
    counts = (spikes != 0).sum(0)
    assert torch.equal(counts, torch.round(expected / lam * levels).long())
    rate = spikes.mean(0)
    if lam == 2.0:
        assert torch.equal(rate, expected)
    else:
        assert (rate - expected).abs().max() <= 2 * torch.finfo(torch.float32).eps * lam
    assert expected.min() == 0 and expected.max() == lam  # both clip ends were exercised


@settings(max_examples=200, deadline=None)
@given(
    x=st.floats(-2.0, 3.0, allow_nan=False, width=32),
    theta=st.floats(0.0625, 2.0, allow_nan=False, width=32),
    steps=st.integers(1, 64),
)
def test_spike_count_within_one_of_rate(x, theta, steps):
    """IF, v0 = 0, soft reset: count = floor(T·x/θ) for 0 ≤ x ≤ θ, so |count - T·clip| < 1.

    The slack 1e-4 covers float32 rounding: for 0 ≤ x ≤ θ each step rounds once (v + x; the
    subtraction v - θ with θ ≤ v < 2θ is exact), at most 2^-24·2θ, so after 64 steps the
    potential is off by less than 64·2^-23·θ ≈ 8e-6·θ, i.e. 8e-6 spikes.
    """
    n = Neuron()
    n.set_threshold(theta)
    n.time_steps = steps
    count = n(torch.full((steps, 1), x)).sum().item()
    expected = steps * min(max(x / theta, 0.0), 1.0)
    assert abs(count - expected) <= 1.0 + 1e-4


def test_rate_of_if_neuron_approaches_clip():
    n = Neuron()
    n.set_threshold(0.5)
    n.time_steps = 256
    x = torch.linspace(-0.5, 1.0, 31)[None].repeat(256, 1)
    rate = n(x).mean(0)
    expected = (torch.linspace(-0.5, 1.0, 31) / 0.5).clamp(0, 1)
    assert (rate - expected).abs().max() <= 1 / 256 + 1e-6
    assert math.isclose(float(rate[-1]), 1.0)


def test_identical_calls_identical_outputs():
    n = Neuron(4)
    n.set_threshold(0.3)
    n.time_steps = 6
    x = torch.randn(6 * 3, 4)
    first = n(x)
    n(torch.randn(6 * 3, 4) * 5)  # a different call in between leaves no state behind
    assert torch.equal(n(x), first)


def test_trainable_threshold_gets_gradient_and_is_clamped():
    n = Neuron(trainable_threshold=True, threshold=0.5, threshold_min=0.1)
    n.time_steps = 4
    x = torch.rand(4 * 8, 3, requires_grad=True)
    n(x).sum().backward()
    assert n.threshold.grad is not None and n.threshold.grad.abs() > 0
    n.set_threshold(-1.0)
    assert n.threshold.requires_grad  # set_threshold keeps the parameter trainable
    assert n.effective_threshold().item() == pytest.approx(0.1)
    # the forward uses the clamped θ: spikes of height θ are .1, and input .1 fires every step
    n.configure(spike_amplitude="threshold")
    out = n(torch.full((4, 1), 0.1))
    assert out.flatten().tolist() == pytest.approx([0.1] * 4)


def test_set_threshold_checks_shape():
    n = Neuron(3, per_channel=True)
    with pytest.raises(ValueError, match="3 entries"):
        n.set_threshold(torch.ones(4))
    with pytest.raises(ValueError, match="3 entries"):
        n.set_threshold(torch.ones(3, 1))
    n.set_threshold(torch.tensor([0.1, 0.2, 0.3]))
    assert n.per_channel and n.threshold.tolist() == pytest.approx([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="channels"):
        Neuron(per_channel=True)


@pytest.mark.parametrize("rebuild", ["settings", "default"])
def test_state_dict_round_trip_restores_per_channel_and_initial_potential(rebuild):
    src = Neuron(3, per_channel=True, trainable_threshold=True, reset="zero")
    src.set_threshold(torch.tensor([0.2, 0.4, 0.8]))
    src.set_initial_potential(torch.tensor([0.1, 0.0, 0.3]))
    if rebuild == "settings":  # how checkpoints are rebuilt: settings (JSON) + tensors
        dst = Neuron(**src.settings())
        dst.load_state_dict(src.state_dict())
    else:  # a fresh default neuron takes the tensors; the settings are configured after
        dst = Neuron()
        dst.load_state_dict(src.state_dict())
        dst.configure(initial_potential="tensor", trainable_threshold=True, reset="zero")
    assert dst.per_channel and dst.threshold.tolist() == pytest.approx([0.2, 0.4, 0.8])
    assert torch.equal(dst.initial_potential, src.initial_potential)
    src.time_steps = dst.time_steps = 5
    x = torch.rand(5 * 2, 3, 2, 2)
    assert torch.equal(src(x), dst(x))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="reset"):
        Neuron(reset="sometimes")
    with pytest.raises(ValueError, match="leak"):
        Neuron(leak=1.5)
    with pytest.raises(ValueError, match="leak"):
        Neuron().configure(leak=0.0)
    with pytest.raises(ValueError, match="spike_amplitude"):
        Neuron(spike_amplitude="loud")
    with pytest.raises(ValueError, match="unknown neuron setting"):
        Neuron().configure(colour="red")
    n = Neuron()
    n.time_steps = 3
    with pytest.raises(ValueError, match="multiple of T"):
        n(torch.ones(4, 2))
