"""Operation counting: brute-force synaptic counts, silent layers cost 0, analytic ANN MACs."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from robustsnn.energy import (
    ENERGY_PRESETS,
    count_operations,
    energy_costs,
    energy_report,
    synaptic_events,
)
from robustsnn.models import create_model
from robustsnn.snn import set_time_steps


def brute_force_conv(layer: nn.Conv2d, spikes: torch.Tensor) -> int:
    """Count (input event, output) synapse uses by walking every output and kernel tap."""
    _, c_in, h, w = spikes.shape
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
    out_h = (h + 2 * ph - kh) // sh + 1
    out_w = (w + 2 * pw - kw) // sw + 1
    total = 0
    for _oc, oy, ox, ic, ky, kx in itertools.product(
        range(layer.out_channels), range(out_h), range(out_w), range(c_in), range(kh), range(kw)
    ):
        iy, ix = oy * sh - ph + ky, ox * sw - pw + kx
        if 0 <= iy < h and 0 <= ix < w and spikes[0, ic, iy, ix] != 0:
            total += 1
    return total


@pytest.mark.parametrize(("stride", "padding"), [(1, 1), (2, 1), (1, 0)])
def test_conv_synaptic_operations_equal_brute_force(stride, padding):
    torch.manual_seed(stride + padding)
    layer = nn.Conv2d(2, 3, 3, stride=stride, padding=padding)
    spikes = (torch.rand(1, 2, 6, 5) < 0.3).float()
    assert synaptic_events(layer, spikes) == brute_force_conv(layer, spikes)


def test_linear_synaptic_operations_equal_brute_force():
    layer = nn.Linear(7, 4)
    spikes = (torch.rand(3, 7) < 0.5).float()
    brute = sum(1 for b in range(3) for i in range(7) for _ in range(4) if spikes[b, i] != 0)
    assert synaptic_events(layer, spikes) == brute


def spiking_cnn(threshold: float):
    torch.manual_seed(0)
    model = create_model("small_cnn", input_shape=(1, 8, 8))
    for _, n in model.neurons():
        n.set_threshold(threshold)
    set_time_steps(model, 4)
    return model.eval()


def test_silent_layers_cost_nothing_and_first_layer_is_dense_once():
    model = spiking_cnn(threshold=1e6)
    counts = count_operations(model, torch.rand(5, 1, 8, 8))
    by_name = {layer.name: layer for layer in counts.layers}
    assert by_name["conv1"].fed_by == "analog"
    assert by_name["conv1"].mac == 8 * 8 * 16 * 9  # computed once, not T times
    for name in ("conv2", "fc1", "fc2"):
        assert by_name[name].fed_by == "spikes" and by_name[name].ac == 0
    assert counts.spikes_per_image == 0


def test_counts_follow_spikes_through_average_pooling():
    model = spiking_cnn(threshold=0.05)
    spikes = {}
    model.act2.register_forward_hook(lambda m, a, out: spikes.__setitem__("act2", out))
    counts = count_operations(model, torch.rand(1, 1, 8, 8))
    fc1 = next(layer for layer in counts.layers if layer.name == "fc1")
    events = float((spikes["act2"] != 0).sum())
    assert events > 0
    assert fc1.ac == events * model.fc1.out_features
    rates = {n.name: n.firing_rate for n in counts.neurons}
    assert 0 < rates["act2"] <= 1


def vgg_macs(cfg, classes, size=32):
    macs, channels = 0, 3
    for item in cfg:
        if item == "A":
            size //= 2
        else:
            macs += size * size * channels * item * 9
            channels = item
    features = channels * size * size
    return macs + features * 4096 + 4096 * 4096 + 4096 * classes


def test_ann_count_matches_analytic_vgg11_macs():
    model = create_model("vgg11", num_classes=10)
    counts = count_operations(model, torch.rand(1, 3, 32, 32), time_steps=0)
    cfg = [64, "A", 128, 256, "A", 512, 512, 512, "A", 512, 512]
    assert counts.mac == vgg_macs(cfg, 10)
    assert counts.ac == 0


def test_energy_report_and_presets():
    model = spiking_cnn(threshold=0.2)
    report = energy_report(model, torch.rand(4, 1, 8, 8), time_steps=[2, 4])
    assert set(report["snn"]) == {"2", "4"}
    snn4 = report["snn"]["4"]
    e_mac, e_ac = ENERGY_PRESETS["45nm-fp32"]
    assert snn4["energy_pj"] == pytest.approx(snn4["mac"] * e_mac + snn4["ac"] * e_ac)
    assert snn4["energy_ratio_to_ann"] == pytest.approx(
        snn4["energy_pj"] / report["ann"]["energy_pj"]
    )
    assert "memory" in report["caveat"]
    assert energy_costs((1.0, 0.5)) == (1.0, 0.5)
    with pytest.raises(ValueError, match="unknown energy preset"):
        energy_costs("3nm")
