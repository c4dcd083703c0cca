"""One network, two modes: time folding, encoders, readout, model-level QCFS conversion."""

from __future__ import annotations

import math

import pytest
import torch

from robustsnn.models import create_model
from robustsnn.snn import poisson_encode, set_time_steps, using_time_steps


def snn(steps: int = 4, threshold: float = 0.2, **kwargs):
    torch.manual_seed(0)
    model = create_model("small_cnn", input_shape=(1, 8, 8), **kwargs)
    for _, n in model.neurons():
        n.set_threshold(threshold)
    set_time_steps(model, steps)
    return model.eval()


def test_direct_coding_equals_repeated_event_input():
    model = snn()
    x = torch.rand(3, 1, 8, 8)
    events = x.unsqueeze(0).repeat(4, 1, 1, 1, 1)  # [T, B, C, H, W]
    assert torch.allclose(model(x), model(events), atol=1e-6)


def test_first_layer_computed_once_for_direct_coding():
    model = snn(steps=8)
    seen = []
    model.conv1.register_forward_hook(lambda m, a, out: seen.append(("conv1", a[0].shape[0])))
    model.fc1.register_forward_hook(lambda m, a, out: seen.append(("fc1", a[0].shape[0])))
    model(torch.rand(5, 1, 8, 8))
    assert seen == [("conv1", 5), ("fc1", 40)]  # B before the first neuron, T·B after it
    seen.clear()
    model(torch.rand(8, 5, 1, 8, 8))  # event input varies over time: T·B everywhere
    assert seen == [("conv1", 40), ("fc1", 40)]


def test_readout_is_mean_over_time_of_per_step_outputs():
    model = snn(steps=4)
    x = torch.rand(2, 1, 8, 8)
    outs = []
    model.fc2.register_forward_hook(lambda m, a, out: outs.append(out.detach()))
    y = model(x)
    per_step = outs[-1].reshape(4, 2, -1)  # what the last layer produced at each step
    assert torch.allclose(y, per_step.mean(0), atol=1e-6)
    # The network is causal, so a t-step run is the first t steps of the 4-step run and the
    # step-t output is t·y_t - (t-1)·y_{t-1}, with y_t the readout at T = t.
    previous = torch.zeros_like(y)
    for t in range(1, 5):
        with using_time_steps(model, t):
            y_t = model(x)
        assert torch.allclose(t * y_t - (t - 1) * previous, per_step[t - 1], atol=1e-5)
        previous = y_t


def test_identical_calls_identical_outputs_and_ann_mode():
    model = snn()
    x = torch.rand(4, 1, 8, 8)
    first = model(x)
    model(torch.rand(6, 1, 8, 8) * 3)  # no state survives a call
    assert torch.equal(model(x), first)
    set_time_steps(model, 0)
    assert model.time_steps == 0 and all(n.time_steps == 0 for _, n in model.neurons())
    ann = model(x)
    assert torch.equal(model(x), ann)
    assert not torch.equal(ann, first)
    # at T = 0 an event tensor is read as its mean over time
    events = torch.stack([x, 3 * x])
    assert torch.allclose(model(events), model(2 * x), atol=1e-6)


def test_poisson_encoder_is_binary_unbiased_and_straight_through():
    x = torch.tensor([[0.0, 0.25, 0.5, 1.0, -0.5, 1.5]], requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    spikes = poisson_encode(x, 2000, gen)
    assert spikes.shape == (2000, 6)
    assert set(spikes.unique().tolist()) == {0.0, 1.0}
    rate = spikes.mean(0)
    # rate 0 and 1 exactly at the ends (values outside [0, 1] are clipped); 2000 draws put the
    # mean within 4 standard deviations, ≤ 4·√(.25/2000) ≈ .045, of p
    assert rate[[0, 3, 4, 5]].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert abs(rate[1] - 0.25) < 0.045 and abs(rate[2] - 0.5) < 0.045
    spikes.sum().backward()  # d spikes/d x = 1 at every step inside [0, 1]
    assert x.grad.tolist() == [[2000.0, 2000.0, 2000.0, 2000.0, 0.0, 0.0]]


def test_poisson_coding_is_seeded_and_binary():
    model = snn(encoding="poisson")
    spikes = []
    model.normalize.register_forward_hook(lambda m, a, out: spikes.append(a[0]))
    x = torch.rand(6, 1, 8, 8)
    model.reseed(7)
    first = model(x)
    model.reseed(7)
    assert torch.equal(model(x), first)
    assert torch.equal(spikes[0], spikes[1])  # the same spikes, not just the same logits
    assert spikes[0].shape == (4 * 6, 1, 8, 8)
    model.reseed(8)
    model(x)
    assert not torch.equal(spikes[-1], spikes[0])
    model.reseed(3)
    set_time_steps(model, 400)
    model(torch.full((1, 1, 8, 8), 0.25))
    s = spikes[-1]
    assert set(s.unique().tolist()) == {0.0, 1.0}
    assert abs(float(s.mean()) - 0.25) < 0.02  # 25,600 draws: std .0027


def test_event_input_with_wrong_time_steps_is_refused():
    model = snn(steps=4)
    with pytest.raises(ValueError, match="time steps"):
        model(torch.rand(5, 2, 1, 8, 8))
    with pytest.raises(ValueError, match="expected input"):
        model(torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match="encoding"):
        create_model("small_cnn", input_shape=(1, 8, 8), encoding="morse")


# ---- QCFS conversion of a whole model -------------------------------------------------------

LEVELS = 4


def few_bits(value: float) -> float:
    """``value`` rounded to 4 significant bits: sums of up to L copies are then exact."""
    mantissa, exponent = math.frexp(value)
    return math.ldexp(round(mantissa * 16) / 16, exponent)


def qcfs_model():
    """small_cnn with QCFS (L = 4), BN in eval mode, λ at the 99th percentile of each input."""
    torch.manual_seed(1)
    model = create_model(
        "small_cnn", input_shape=(1, 8, 8), neuron={"activation": "qcfs", "levels": LEVELS}
    ).eval()
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        for _, n in model.neurons():
            seen = []
            handle = n.register_forward_pre_hook(lambda m, a, seen=seen: seen.append(a[0]))
            model(x)
            handle.remove()
            n.clip_value.fill_(few_bits(float(seen[0].flatten().quantile(0.99))))
    return model, x


def record_neurons(model, x):
    """Each neuron's input and output on one forward call (no gradient)."""
    inputs, outputs, handles = {}, {}, []
    for name, n in model.neurons():
        handles.append(n.register_forward_pre_hook(lambda m, a, k=name: inputs.update({k: a[0]})))
        handles.append(n.register_forward_hook(lambda m, a, o, k=name: outputs.update({k: o})))
    with torch.no_grad():
        out = model(x)
    for h in handles:
        h.remove()
    return out, inputs, outputs


def convert(model) -> None:
    """QCFS conversion: θ = λ, v0 = θ/2, reset by subtraction, spikes of height θ."""
    for _, n in model.neurons():
        n.set_threshold(n.clip_value.detach())
        n.configure(initial_potential="half", reset="subtract", spike_amplitude="threshold")


def test_qcfs_model_layer_wise_exact_for_constant_input():
    """Each converted layer, fed its ANN input held constant for T = L steps, reproduces the
    QCFS ANN layer exactly (see test_neuron.py for why). Inside the whole model this is what
    the first layer sees under direct coding, so it is exact there too."""
    model, x = qcfs_model()
    _, ann_in, ann_out = record_neurons(model, x)
    convert(model)
    set_time_steps(model, LEVELS)
    with torch.no_grad():
        for name, n in model.neurons():
            assert (ann_out[name] > 0).any() and (ann_out[name] == n.clip_value).any()
            seq = ann_in[name].repeat(LEVELS, *[1] * (ann_in[name].dim() - 1))
            rate = n(seq).reshape(LEVELS, *ann_in[name].shape).mean(0)
            assert torch.equal(rate, ann_out[name]), name
    _, _, snn_out = record_neurons(model, x)
    first = snn_out["act1"].reshape(LEVELS, *ann_out["act1"].shape).mean(0)
    assert torch.equal(first, ann_out["act1"])


def test_qcfs_model_whole_network_at_t_equals_l_and_large_t():
    """Past the first layer the input of a neuron is a spike train that varies over time, so
    the spike count also depends on the order of arrival ("unevenness"): the whole SNN at
    T = L is not bitwise the QCFS ANN, and QCFS only removes that error in expectation.

    What holds per sample: (1) at T = L the output is much closer to the ANN than at T = 1;
    (2) as T grows each layer's rate tends to clip(mean input/θ, 0, 1)·θ, so the SNN tends to
    the *clip* network with the same λ (the QCFS floor disappears), with error ~ 1/T.
    """
    model, x = qcfs_model()
    ann, _, _ = record_neurons(model, x)
    for _, n in model.neurons():
        n.configure(activation="clip")
    clip_ann, _, _ = record_neurons(model, x)
    for _, n in model.neurons():
        n.configure(activation="qcfs")
    convert(model)

    def error(steps, reference):
        set_time_steps(model, steps)
        with torch.no_grad():
            return float((model(x) - reference).abs().mean())

    assert error(LEVELS, ann) < 0.5 * error(1, ann)
    far, farther = error(32, clip_ann), error(256, clip_ann)
    assert farther < far / 4
    assert farther < 0.05 * float((clip_ann - ann).abs().mean())
