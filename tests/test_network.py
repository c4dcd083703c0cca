"""One network, two modes: time folding, encoders, readout, model-level QCFS conversion."""

from __future__ import annotations

import pytest
import torch

from robustsnn.models import create_model
from robustsnn.snn import set_time_steps


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
    events = x.unsqueeze(0).repeat(4, 1, 1, 1, 1)
    assert torch.allclose(model(x), model(events), atol=1e-6)


def test_first_layer_computed_once_for_direct_coding():
    model = snn(steps=8)
    seen = []
    model.conv1.register_forward_hook(lambda m, a, out: seen.append(a[0].shape[0]))
    model.fc1.register_forward_hook(lambda m, a, out: seen.append(a[0].shape[0]))
    model(torch.rand(5, 1, 8, 8))
    assert seen == [5, 40]


def test_readout_is_mean_over_time_of_last_layer():
    model = snn(steps=3)
    outs = []
    model.fc2.register_forward_hook(lambda m, a, out: outs.append(out))
    y = model(torch.rand(2, 1, 8, 8))
    assert torch.allclose(y, outs[0].reshape(3, 2, -1).mean(0))


def test_identical_calls_identical_outputs_and_ann_mode():
    model = snn()
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(model(x), model(x))
    set_time_steps(model, 0)
    assert all(n.time_steps == 0 for _, n in model.neurons())
    assert torch.equal(model(x), model(x))


def test_poisson_coding_is_seeded_and_binary():
    model = snn(encoding="poisson")
    model.reseed(7)
    x = torch.rand(6, 1, 8, 8)
    first = model(x)
    model.reseed(7)
    assert torch.equal(model(x), first)
    spikes = []
    model.normalize.register_forward_hook(lambda m, a, out: spikes.append(a[0]))
    model.reseed(3)
    set_time_steps(model, 400)
    model(torch.full((1, 1, 8, 8), 0.25))
    s = spikes[-1]
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    assert abs(float(s.mean()) - 0.25) < 0.02


def test_event_input_with_wrong_time_steps_is_refused():
    model = snn(steps=4)
    with pytest.raises(ValueError, match="time steps"):
        model(torch.rand(5, 2, 1, 8, 8))
    with pytest.raises(ValueError, match="expected input"):
        model(torch.rand(2, 8, 8))


def test_qcfs_model_first_layer_exact_at_t_equals_l():
    """Inside a whole model, the first QCFS layer (constant input over time, direct coding)
    is reproduced exactly at T = L; deeper layers see inputs that vary over time, so they
    carry the "unevenness" error QCFS only removes in expectation, yet the output error at
    T = L is far below that at T = 1."""
    torch.manual_seed(1)
    model = create_model(
        "small_cnn", input_shape=(1, 8, 8), neuron={"activation": "qcfs", "levels": 4}
    )
    model.eval()
    x = torch.rand(32, 1, 8, 8)
    outputs = {}
    model.act1.register_forward_hook(lambda m, a, out: outputs.__setitem__("act1", out))
    with torch.no_grad():
        for _, n in model.neurons():  # λ at the 99th percentile of each layer's input
            seen = []
            handle = n.register_forward_pre_hook(lambda m, a, seen=seen: seen.append(a[0]))
            model(x)
            handle.remove()
            n.clip_value.fill_(float(seen[0].flatten().quantile(0.99)))
        ann = model(x)
        ann_first = outputs["act1"].clone()
        for _, n in model.neurons():
            n.set_threshold(n.clip_value.detach())
            n.configure(initial_potential="half", reset="subtract", spike_amplitude="threshold")
        set_time_steps(model, 4)
        out_l = model(x)
        assert torch.equal(outputs["act1"].reshape(4, *ann_first.shape).mean(0), ann_first)
        set_time_steps(model, 1)
        out_1 = model(x)
    assert (out_l - ann).abs().mean() < 0.5 * (out_1 - ann).abs().mean()
