"""Conversion recipes: threshold balancing against a hand computation, QCFS exactness, registry."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustsnn.convert.recipes import (
    CALIBRATION_STREAM,
    convert,
    forward_order,
    layer_percentile,
    list_recipes,
    percentile_rank,
    qcfs,
    recipe_options,
    threshold_balancing,
)
from robustsnn.data import DatasetInfo, ImageDataset, batches
from robustsnn.models import create_model
from robustsnn.models.layers import ConvexCombination
from robustsnn.snn import Neuron, SpikingNetwork, set_time_steps

INFO = DatasetInfo("toy", (1, 4, 4), 3, (0.0,), (1.0,))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TwoLayer(SpikingNetwork):
    """linear-BN-neuron ×2 and a linear readout, on 4x4 images."""

    def __init__(self, bn=True):
        super().__init__((1, 4, 4), 3)
        self.fc1 = nn.Linear(16, 6)
        self.bn1 = nn.BatchNorm1d(6) if bn else nn.Identity()
        self.act1 = Neuron(6)
        self.fc2 = nn.Linear(6, 5)
        self.bn2 = nn.BatchNorm1d(5) if bn else nn.Identity()
        self.act2 = Neuron(5)
        self.fc3 = nn.Linear(5, 3)

    def forward_body(self, x):
        x = self.act1(self.bn1(self.fc1(x.flatten(1))))
        return self.fc3(self.act2(self.bn2(self.fc2(x))))


def two_layer(bn=True):
    torch.manual_seed(0)
    model = TwoLayer(bn)
    if bn:
        for norm in (model.bn1, model.bn2):
            norm.weight.data.uniform_(0.5, 1.5)
            norm.bias.data.uniform_(-0.2, 0.5)
            norm.running_mean.fill_(5.0)  # must not be used during calibration
            norm.running_var.fill_(9.0)
    return model


def data(n=20, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return ImageDataset(torch.rand(n, 1, 4, 4, generator=gen), torch.arange(n) % 3, INFO)


def kth(values: torch.Tensor, percentile: float) -> torch.Tensor:
    flat = values.flatten().sort().values
    return flat[percentile_rank(flat.numel(), percentile) - 1]


def hand_if(current: torch.Tensor, threshold: torch.Tensor, steps: int) -> torch.Tensor:
    """IF neuron, v0 = 0, hard reset, unit spikes, constant input: spikes [T, ...]."""
    v = torch.zeros_like(current)
    out = []
    for _ in range(steps):
        v = v + current
        spikes = (v >= threshold).float()
        v = v * (1 - spikes)
        out.append(spikes)
    return torch.stack(out)


def batch_norm(norm: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, None, None, norm.weight, norm.bias, True, 0.0, norm.eps)


# ---- threshold balancing ----------------------------------------------------------------------
@pytest.mark.parametrize("percentile", [99.7, 90.0])
def test_threshold_balancing_matches_a_hand_computation(percentile):
    model, calib, steps = two_layer(), data(), 5
    reference = copy.deepcopy(model)
    with torch.no_grad():
        out = threshold_balancing(
            model,
            calib,
            time_steps_calibration=steps,
            percentile=percentile,
            batches=1,
            batch_size=len(calib),
        )
        assert out is model  # in place
        # the calibration batches: the whole set, shuffled afresh for each layer
        x1, x2 = (
            next(batches(calib, len(calib), shuffle=True, epoch=CALIBRATION_STREAM + layer))[0]
            for layer in (0, 1)
        )
        # layer 1: static input (direct coding), batch-statistics BN, counted once per step
        z1 = batch_norm(reference.bn1, reference.fc1(x1.flatten(1)))
        theta1 = kth(z1.repeat(steps, 1), percentile)
        assert torch.equal(model.act1.threshold, theta1 * 0.3)
        # layer 2: spikes of the calibrated layer 1 over T_c steps, BN over T·B
        z1 = batch_norm(reference.bn1, reference.fc1(x2.flatten(1)))
        spikes = hand_if(z1, theta1, steps).reshape(-1, 6)
        z2 = batch_norm(reference.bn2, reference.fc2(spikes))
        assert torch.equal(model.act2.threshold, kth(z2, percentile) * 0.3)
    for neuron in (model.act1, model.act2):
        assert neuron.threshold.requires_grad and neuron.threshold_min == 0.03
        assert (neuron.reset, neuron.initial_potential_mode, neuron.spike_amplitude) == (
            "zero",
            "zero",
            "unit",
        )
        assert neuron.time_steps == 8
    for norm in (model.bn1, model.bn2):
        assert torch.equal(norm.running_mean, torch.zeros_like(norm.running_mean))
        assert torch.equal(norm.running_var, torch.ones_like(norm.running_var))
        assert int(norm.num_batches_tracked) == 0
    assert model.time_steps == 8 and not model.training


def test_threshold_is_the_max_over_fresh_shuffled_batches():
    model, calib = two_layer(), data()
    reference = copy.deepcopy(model)
    threshold_balancing(model, calib, time_steps_calibration=3, batches=3, batch_size=8)
    values = []
    with torch.no_grad():
        loader = batches(calib, 8, shuffle=True, seed=0, epoch=CALIBRATION_STREAM)
        for x, _ in loader:
            values.append(kth(batch_norm(reference.bn1, reference.fc1(x.flatten(1))), 99.7))
    assert len(values) == 3
    assert torch.equal(model.act1.threshold, max(values) * 0.3)


def test_chunked_percentile_equals_the_whole_batch():
    model = two_layer(bn=False)
    set_time_steps(model, 4)
    x = data(11).images
    with torch.no_grad():
        for neuron in (model.act1, model.act2):
            neuron.set_threshold(0.2)
            whole = layer_percentile(model, neuron, x, percentile=97.0)
            assert layer_percentile(model, neuron, x, percentile=97.0, chunk_size=3) == whole


class Reordered(SpikingNetwork):
    """Registers its neurons in the opposite order of the forward pass."""

    def __init__(self):
        super().__init__((1, 4, 4), 3)
        self.late = Neuron(4)
        self.early = Neuron(4)
        self.fc1 = nn.Linear(16, 4)
        self.fc2 = nn.Linear(4, 4)
        self.fc3 = nn.Linear(4, 3)

    def forward_body(self, x):
        return self.fc3(self.late(self.fc2(self.early(self.fc1(x.flatten(1))))))


def test_neurons_are_calibrated_in_forward_order():
    torch.manual_seed(0)
    model = Reordered()
    order = forward_order(model, data(2).images)
    assert [name for name, _ in order] == ["early", "late"]
    calib = data()
    threshold_balancing(model, calib, time_steps_calibration=4, batches=1, batch_size=20)
    z = model.fc1(calib.images.flatten(1)).detach()
    assert torch.equal(model.early.threshold, kth(z.repeat(4, 1), 99.7) * 0.3)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.bn1, self.act1 = nn.Linear(6, 6), nn.BatchNorm1d(6), Neuron(6)
        self.fc2, self.bn2 = nn.Linear(6, 6), nn.BatchNorm1d(6)
        self.merge, self.act2 = ConvexCombination(), Neuron(6)

    def forward(self, x):
        residual = self.bn2(self.fc2(self.act1(self.bn1(self.fc1(x)))))
        return self.act2(self.merge(x, residual))


class TinyResNet(SpikingNetwork):
    def __init__(self):
        super().__init__((1, 4, 4), 3)
        self.stem, self.act, self.block, self.head = nn.Linear(16, 6), Neuron(6), Block(), None
        self.head = nn.Linear(6, 3)

    def forward_body(self, x):
        return self.head(self.block(self.act(self.stem(x.flatten(1)))))


def test_residual_quirk_is_off_by_default_and_reproducible():
    torch.manual_seed(0)
    base = TinyResNet()
    base.block.bn1.weight.data.fill_(5.0)  # the block's first input is much larger
    calib = data()
    options = {"time_steps_calibration": 4, "batches": 1, "batch_size": 20}
    plain = threshold_balancing(copy.deepcopy(base), calib, **options)
    quirk = threshold_balancing(copy.deepcopy(base), calib, residual_quirk=True, **options)
    first, second = plain.block.act1.threshold, plain.block.act2.threshold
    assert first > second
    assert torch.equal(quirk.block.act1.threshold, first)
    # the first input's percentile, measured again on the second neuron's batches
    assert torch.allclose(quirk.block.act2.threshold, torch.maximum(first, second), rtol=1e-6)
    assert torch.equal(quirk.act.threshold, plain.act.threshold)


def test_bn_recalibration_estimates_statistics_on_the_snn():
    model, calib = two_layer(), data(20)
    threshold_balancing(
        model,
        calib,
        time_steps_calibration=4,
        batches=1,
        batch_size=5,
        bn_recalibration_batches=4,
    )
    with torch.no_grad():
        expected = model.fc1(calib.images.flatten(1)).mean(0)
    assert torch.allclose(model.bn1.running_mean, expected, atol=1e-6)
    assert int(model.bn1.num_batches_tracked) == 4 and model.bn1.momentum == 0.1
    assert not torch.equal(model.bn2.running_var, torch.ones(5))
    assert not model.training


def test_threshold_balancing_on_a_zoo_cnn_is_deterministic():
    torch.manual_seed(0)
    ann = create_model("small_cnn", input_shape=(1, 8, 8), channels=(4, 8), hidden=16)
    calib = ImageDataset(torch.rand(16, 1, 8, 8), torch.arange(16) % 10, INFO)
    options = {"time_steps_calibration": 6, "batches": 2, "batch_size": 8, "chunk_size": 4}
    first = convert(copy.deepcopy(ann), "threshold-balancing", calib, **options)
    second = convert(copy.deepcopy(ann), "threshold-balancing", calib, **options)
    thresholds = [float(n.threshold.detach()) for _, n in first.neurons()]
    assert thresholds == [float(n.threshold.detach()) for _, n in second.neurons()]
    assert all(t >= 0.03 for t in thresholds)
    assert first(calib.images[:2]).shape == (2, 10)


# ---- QCFS ---------------------------------------------------------------------------------------
class QNet(SpikingNetwork):
    def __init__(self, levels=4):
        super().__init__((1, 4, 4), 3)
        self.fc1 = nn.Linear(16, 20)
        self.act = Neuron(20, activation="qcfs", levels=levels, clip_value=1.5)
        self.fc2 = nn.Linear(20, 3)

    def forward_body(self, x):
        return self.fc2(self.act(self.fc1(x.flatten(1))))


def test_qcfs_conversion_reproduces_the_ann_at_t_equal_l():
    torch.manual_seed(0)
    model = QNet(levels=4).double()
    model.fc1.weight.data *= 3
    x = torch.rand(64, 1, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        ann = model(x)
        pre = model.fc1(x.flatten(1))
    assert (pre < 0).any() and (pre > 1.5).any()  # both clipping regions are exercised
    qcfs(model, time_steps=None)
    assert model.time_steps == 4
    assert float(model.act.threshold) == pytest.approx(1.5)
    assert (model.act.initial_potential_mode, model.act.reset, model.act.spike_amplitude) == (
        "half",
        "subtract",
        "threshold",
    )
    with torch.no_grad():
        snn = model(x)
    assert torch.allclose(snn, ann, atol=1e-10)


def test_qcfs_defaults_and_refusals():
    model = convert(QNet(), "qcfs")
    assert model.time_steps == 8
    with pytest.raises(ValueError, match="qcfs"):
        qcfs(two_layer())


# ---- registry -----------------------------------------------------------------------------------
def test_registry_lists_recipes_and_their_paper_defaults():
    assert {"threshold-balancing", "qcfs"} <= set(list_recipes())
    defaults = recipe_options("threshold-balancing")
    assert defaults["time_steps"] == 8 and defaults["time_steps_calibration"] == 100
    assert (defaults["percentile"], defaults["batches"], defaults["batch_size"]) == (99.7, 10, 64)
    assert (defaults["scale"], defaults["threshold_min"], defaults["reset"]) == (0.3, 0.03, "zero")
    assert defaults["bn_recalibration_batches"] == 0 and defaults["residual_quirk"] is False


def test_convert_rejects_mistakes():
    with pytest.raises(ValueError, match="unknown conversion recipe"):
        convert(two_layer(), "magic", data())
    with pytest.raises(ValueError, match="no option scaling"):
        convert(two_layer(), "threshold-balancing", data(), scaling=0.3)
    with pytest.raises(ValueError, match="calibration images"):
        convert(two_layer(), "threshold-balancing", None)
    with pytest.raises(ValueError, match="percentile"):
        convert(two_layer(), "threshold-balancing", data(), percentile=0)
