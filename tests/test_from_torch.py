"""User models: torch.fx conversion, one neuron per ReLU call site, checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustsnn.convert import accuracy_vs_time, convert, from_torch
from robustsnn.data import load_dataset
from robustsnn.io import load_checkpoint, save_checkpoint
from robustsnn.snn import set_time_steps


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: one ReLU module called twice."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(2)
        self.layer1 = BasicBlock(channels)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.1)
        self.fc = nn.Linear(channels, 10)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(self.dropout(x))


def randomise_bn(model: nn.Module) -> nn.Module:
    torch.manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def test_one_neuron_per_relu_call_site_and_same_ann():
    torch.manual_seed(0)
    model = randomise_bn(TinyResNet())
    x = torch.rand(5, 1, 8, 8)
    for fold in (True, False):
        net = from_torch(model, (1, 8, 8), fold_bn=fold)
        names = [name for name, _ in net.neurons()]
        assert names == ["layers.relu", "layers.layer1_relu", "layers.layer1_relu_1"]
        assert len({id(n) for _, n in net.neurons()}) == 3
        ops = [node["op"] for node in net.spec["nodes"]]
        assert ("batchnorm2d" in ops) is not fold
        with torch.no_grad():
            assert torch.allclose(net(x), model(x), atol=1e-5)
    # the max-pool now sits before the first neuron
    order = [node["name"] for node in net.spec["nodes"]]
    assert order.index("maxpool") < order.index("relu")


def test_reused_relu_has_two_membrane_states():
    torch.manual_seed(0)
    net = from_torch(randomise_bn(TinyResNet()), (1, 8, 8))
    for _, n in net.neurons():
        n.set_threshold(0.5)
        n.record_potential = True
    set_time_steps(net, 3)
    with torch.no_grad():
        net(torch.rand(2, 1, 8, 8))
    first = net.layers["layer1_relu"].final_potential
    second = net.layers["layer1_relu_1"].final_potential
    assert first is not None and second is not None
    assert not torch.equal(first, second)


class Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        x = F.relu(self.conv(x))
        x = F.adaptive_avg_pool2d(x, 4)
        x = x.relu()
        return self.fc(x.view(x.size(0), -1))


def test_functional_ops_and_normalisation_in_front():
    torch.manual_seed(1)
    model = Functional().eval()
    x = torch.rand(3, 1, 8, 8)
    net = from_torch(model, (1, 8, 8), mean=[0.5], std=[0.25], num_classes=3)
    assert net.spec["nodes"][0]["op"] == "normalize"
    assert len(net.neurons()) == 2
    with torch.no_grad():
        assert torch.allclose(net(x), model((x - 0.5) / 0.25), atol=1e-5)
    with pytest.raises(ValueError, match="3 outputs"):
        from_torch(model, (1, 8, 8), num_classes=10)


class Unsupported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.act = nn.GELU()

    def forward(self, x):
        return torch.flatten(torch.sigmoid(self.conv(x)), 1)


def test_unsupported_operation_names_the_graph_node():
    with pytest.raises(ValueError, match="graph node 'sigmoid'"):
        from_torch(Unsupported(), (1, 8, 8))

    class WithGelu(Unsupported):
        def forward(self, x):
            return torch.flatten(self.act(self.conv(x)), 1)

    with pytest.raises(ValueError, match="graph node 'act'.*GELU"):
        from_torch(WithGelu(), (1, 8, 8))


def train_plain(model: nn.Module, data, epochs: int = 6) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(data))
        for start in range(0, len(data), 64):
            idx = perm[start : start + 64]
            loss = F.cross_entropy(model(data.images[idx]), data.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def test_resnet_block_with_reused_relu_matches_ann_at_large_t(tmp_path):
    """A trained plain-torch ResNet converts (tfc, per-channel thresholds) and, at large T,
    is within 0.5 points of the ANN's accuracy; the SNN survives a checkpoint round trip."""
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    torch.manual_seed(0)
    model = train_plain(TinyResNet(), train)
    with torch.no_grad():
        ann_accuracy = float((model(test.images).argmax(1) == test.labels).float().mean())
    assert ann_accuracy > 0.85
    net = from_torch(model, (1, 8, 8))
    snn = convert(net, "tfc", train, time_steps=128, batches=256)
    accuracy = accuracy_vs_time(snn, test, [128])[128]
    assert abs(accuracy - ann_accuracy) <= 0.005

    save_checkpoint(snn, tmp_path / "snn", {"recipe": "tfc"})
    loaded, meta = load_checkpoint(tmp_path / "snn")
    assert meta["architecture"]["name"] == "graph_network"
    assert loaded.readout_delay == snn.readout_delay
    x = test.images[:16]
    set_time_steps(snn, 8)
    set_time_steps(loaded, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), snn(x))


def test_convert_checkpoint_writes_snn_and_accuracy_table(tmp_path):
    from robustsnn.convert import convert_checkpoint
    from robustsnn.convert.from_torch import load_converted
    from robustsnn.models import create_model

    torch.manual_seed(0)
    ann = create_model("small_cnn", neuron={"activation": "qcfs", "levels": 4})
    save_checkpoint(ann, tmp_path / "ann", {"dataset": "mnist5k"})
    result = convert_checkpoint(
        tmp_path / "ann", "cos", [2, 1], tmp_path / "snn", eval_size=20, calibration_size=32
    )
    assert set(result["accuracy"]) == {1, 2} and result["latency_offset"] == 4
    snn, meta = load_converted(tmp_path / "snn")
    assert meta["recipe"] == "cos" and meta["time_steps"] == 2
    assert meta["presimulation"]["presim_steps"] == 4
    with pytest.raises(ValueError, match="time steps"):
        convert_checkpoint(tmp_path / "ann", "qcfs", [0], tmp_path / "bad")


class StaticMerge(nn.Module):
    """A residual add of a pre-neuron tensor (computed once under direct coding) and a
    post-neuron one (time-folded)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        y = self.conv1(x)
        h = torch.relu(self.conv2(torch.relu(y)) + y)
        return self.fc(torch.flatten(h, 1))


def test_merge_of_a_static_and_a_time_folded_input_keeps_time_order():
    """Direct coding computes conv1 once; the merge must repeat it step-major ([T, B]), so the
    output equals feeding the image as a T-step event stream (every layer run T times)."""
    torch.manual_seed(0)
    net = from_torch(StaticMerge(), (1, 8, 8))
    set_time_steps(net, 4)
    x = torch.rand(3, 1, 8, 8) * 2
    with torch.no_grad():
        direct = net(x)
        events = net(x.unsqueeze(0).expand(4, *x.shape).contiguous())
    torch.testing.assert_close(direct, events, rtol=0, atol=1e-6)
    assert not torch.allclose(direct[0], direct[1])  # samples differ, so a b-major repeat shows
