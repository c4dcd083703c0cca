"""The model zoo: shapes, gradients, hand-counted sizes, wiring against plain PyTorch ops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustsnn.models import ConvexCombination, count_parameters, create_model, list_models
from robustsnn.models.resnet import BasicBlock
from robustsnn.models.vgg import VGG
from robustsnn.models.wrn import PreActBlock, WideResNet
from robustsnn.snn import set_time_steps

ZOO = ["small_cnn", "vgg11", "vgg11_a", "vgg16", "vgg11_tin", "resnet20", "resnet32"]
ZOO += ["wrn16_4", "wrn28_2", "wrn28_4"]

# The smallest inputs each model's poolings allow, to keep the spiking tests cheap.
SMALL_INPUT = {
    "small_cnn": (1, 8, 8),
    "vgg11": (3, 8, 8),
    "vgg11_a": (3, 32, 32),
    "vgg16": (3, 32, 32),
    "vgg11_tin": (3, 16, 16),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: one thread is as fast, and spin-free when the cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_input(name: str) -> tuple[int, int, int]:
    return SMALL_INPUT.get(name, (3, 8, 8))


# ---- hand-counted parameters ------------------------------------------------------------------


def conv(c_in: int, c_out: int, k: int = 3) -> int:
    return c_in * c_out * k * k


def bn(c: int) -> int:
    return 2 * c


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out


def vgg_convs(widths: list[int]) -> int:
    """Conv weights + BN affine of a conv stack on RGB input (no biases)."""
    total, c_in = 0, 3
    for w in widths:
        total += conv(c_in, w) + bn(w)
        c_in = w
    return total


def resnet_block(c_in: int, c_out: int) -> int:
    shortcut = conv(c_in, c_out, 1) + bn(c_out) if c_in != c_out else 0
    return conv(c_in, c_out) + bn(c_out) + conv(c_out, c_out) + bn(c_out) + shortcut + 2


def wrn_block(c_in: int, c_out: int) -> int:
    shortcut = conv(c_in, c_out, 1) if c_in != c_out else 0
    return bn(c_in) + conv(c_in, c_out) + bn(c_out) + conv(c_out, c_out) + shortcut + 2


# Default arguments (3x32x32, 10 classes; vgg11_tin: 3x64x64, 200 classes). Every neuron adds
# one scalar threshold, the last term of each sum.
PARAMETERS = {
    "vgg11": (
        vgg_convs([64, 128, 256, 512, 512, 512, 512, 512])
        + linear(512 * 4 * 4, 4096)  # three pools: 32 -> 4, the reference's 8192 -> 4096
        + linear(4096, 4096)
        + linear(4096, 10)
        + 10
    ),
    "vgg11_a": (
        vgg_convs([64, 128, 256, 256, 512, 512, 512, 512])
        + linear(512 * 1 * 1, 4096)  # five pools: 32 -> 1
        + linear(4096, 4096)
        + linear(4096, 10)
        + 10
    ),
    "vgg16": (
        vgg_convs([64, 64, 128, 128, 256, 256, 256] + [512] * 6)
        + linear(512, 4096)
        + linear(4096, 4096)
        + linear(4096, 10)
        + 15
    ),
    "vgg11_tin": (
        vgg_convs([64, 128, 256, 256, 512, 512, 512, 512])
        + linear(512, 4096)  # global average pool
        + linear(4096, 200)
        + 9
    ),
    "resnet20": (
        conv(3, 16) + bn(16)
        + resnet_block(16, 16) * 3
        + resnet_block(16, 32) + resnet_block(32, 32) * 2
        + resnet_block(32, 64) + resnet_block(64, 64) * 2
        + linear(64, 10)
        + 19
    ),
    "wrn16_4": (
        conv(3, 16)
        + wrn_block(16, 64) + wrn_block(64, 64)
        + wrn_block(64, 128) + wrn_block(128, 128)
        + wrn_block(128, 256) + wrn_block(256, 256)
        + bn(256) + linear(256, 10)
        + 13
    ),
}  # fmt: skip

NEURONS = {
    "vgg11": 10,
    "vgg11_a": 10,
    "vgg16": 15,
    "vgg11_tin": 9,
    "resnet20": 19,
    "resnet32": 31,
    "wrn16_4": 13,
    "wrn28_2": 25,
    "wrn28_4": 25,
}


def test_hand_counts_match_the_known_sizes():
    assert PARAMETERS["vgg11"] == 61_365_834  # the reference layout, not torchvision's 28 M
    assert PARAMETERS["vgg11_a"] == 28_138_570
    assert PARAMETERS["resnet20"] == 272_501
    assert PARAMETERS["wrn16_4"] == 2_748_905


def test_every_zoo_model_is_registered():
    assert set(ZOO) <= set(list_models())


@pytest.mark.parametrize("name", list_models())
def test_default_model_sizes_and_ann_forward(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    if name in PARAMETERS:
        assert count_parameters(model) == PARAMETERS[name]
    if name in NEURONS:
        assert len(model.neurons()) == NEURONS[name]
    x = torch.rand(2, *model.input_shape)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, model.num_classes) and torch.isfinite(y).all()


def test_vgg11_reference_head():
    model = create_model("vgg11", input_shape=(3, 32, 32), num_classes=3)
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (8192, 4096),
        (4096, 4096),
        (4096, 3),
    ]
    assert [m.p for m in model.classifier if isinstance(m, nn.Dropout)] == [0.2, 0.2]


# ---- spiking forward and backward on every model ----------------------------------------------


@pytest.mark.parametrize("name", list_models())
def test_spiking_forward_backward_and_one_call_per_neuron(name):
    """T = 0 and T = 8 on a small input; BPTT reaches the input and every parameter.

    The paper's finetuning setting (hard reset, trainable thresholds), with a low threshold so
    that spikes reach the head of an uncalibrated network. Each neuron must run exactly once
    per forward, in registration order (threshold calibration walks the neurons in that order).
    """
    torch.manual_seed(0)
    model = create_model(
        name,
        input_shape=small_input(name),
        num_classes=3,
        neuron={"reset": "zero", "trainable_threshold": True, "threshold": 0.25},
    ).eval()
    names = [q for q, _ in model.neurons()]
    assert len({id(n) for _, n in model.neurons()}) == len(names)
    calls: list[str] = []
    for qualified, neuron in model.neurons():
        neuron.register_forward_hook(lambda m, a, out, q=qualified: calls.append(q))
    x = torch.rand(2, *model.input_shape, requires_grad=True)

    ann = model(x)
    assert ann.shape == (2, 3) and torch.isfinite(ann).all()
    assert calls == names

    calls.clear()
    set_time_steps(model, 8)
    snn = model(x)
    assert calls == names
    assert snn.shape == (2, 3) and torch.isfinite(snn).all()
    F.cross_entropy(snn, torch.tensor([0, 2])).backward()
    assert x.grad.abs().sum() > 0
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname
    with torch.no_grad():
        assert torch.equal(model(x), snn.detach())


@pytest.mark.parametrize("name", list_models())
def test_neuron_settings_reach_every_neuron(name):
    model = create_model(
        name,
        input_shape=small_input(name),
        neuron={"reset": "zero", "threshold": 0.5, "per_channel": True},
    )
    for _, n in model.neurons():
        assert n.reset == "zero"
        assert n.threshold.shape == (n.channels,) and torch.all(n.threshold == 0.5)


# ---- other input sizes and user mistakes ------------------------------------------------------


@pytest.mark.parametrize(
    "name, shape",
    [
        ("vgg11", (3, 16, 16)),
        ("vgg11", (3, 20, 28)),
        ("vgg11_tin", (3, 32, 32)),
        ("vgg16", (1, 36, 36)),
        ("resnet20", (3, 28, 28)),
        ("resnet20", (1, 15, 15)),
        ("wrn16_4", (3, 12, 20)),
    ],
)
def test_other_input_sizes(name, shape):
    torch.manual_seed(0)
    head = {"hidden": 64} if name.startswith("vgg") else {}
    model = create_model(name, input_shape=shape, num_classes=4, **head)
    with torch.no_grad():
        y = model.eval()(torch.rand(1, *shape))
    assert y.shape == (1, 4) and torch.isfinite(y).all()


def test_vgg11_flatten_follows_input_size():
    model = create_model("vgg11", input_shape=(3, 20, 28), hidden=8)
    assert model.classifier[1].in_features == 512 * (20 // 8) * (28 // 8)


def test_mistakes_raise_value_errors():
    with pytest.raises(ValueError, match="too small"):
        create_model("vgg16", input_shape=(3, 16, 16))
    with pytest.raises(ValueError, match="too small"):
        create_model("vgg11", input_shape=(3, 4, 4))
    with pytest.raises(ValueError, match="depth"):
        WideResNet(depth=18)
    with pytest.raises(ValueError, match="input_shape"):
        create_model("resnet20", input_shape=(32, 32))


# ---- initialisation and bias ------------------------------------------------------------------


def test_reference_initialisation():
    model = create_model("resnet20", bias=True)
    conv3 = model.stages[2][1].conv2  # 64 -> 64, 3x3: fan_out = 576
    assert abs(float(conv3.weight.detach().std()) - (2 / 576) ** 0.5) < 0.05 * (2 / 576) ** 0.5
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
        if isinstance(m, nn.Conv2d):
            assert m.bias is None
    assert torch.all(model.fc.bias == 0)
    vgg = create_model("vgg11_tin", input_shape=(3, 16, 16), bias=True, hidden=8)
    layers = [m for m in vgg.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 10 and all(torch.all(m.bias == 0) for m in layers)


# ---- wiring against plain PyTorch -------------------------------------------------------------


def randomise(module: nn.Module) -> None:
    """Random BN statistics/affine and merge weights, so the comparisons are not trivial."""
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.2)
        elif isinstance(m, ConvexCombination):
            m.weight.data.copy_(torch.rand(2, generator=g) + 0.25)


def batch_norm(m: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)


def resnet_block_by_hand(block: BasicBlock, x: torch.Tensor) -> torch.Tensor:
    stride = block.conv1.stride
    h = F.relu(batch_norm(block.bn1, F.conv2d(x, block.conv1.weight, stride=stride, padding=1)))
    h = batch_norm(block.bn2, F.conv2d(h, block.conv2.weight, padding=1))
    if isinstance(block.shortcut, nn.Sequential):
        short = F.conv2d(x, block.shortcut[0].weight, stride=stride)
        short = batch_norm(block.shortcut[1], short)
    else:
        short = x
    c0, c1 = block.merge.weight
    return F.relu(c0 * short + c1 * h)


def wrn_block_by_hand(block: PreActBlock, x: torch.Tensor) -> torch.Tensor:
    stride = block.conv1.stride
    a = F.relu(batch_norm(block.bn1, x))
    h = F.relu(batch_norm(block.bn2, F.conv2d(a, block.conv1.weight, stride=stride, padding=1)))
    h = F.conv2d(h, block.conv2.weight, padding=1)
    short = x if block.shortcut is None else F.conv2d(a, block.shortcut.weight, stride=stride)
    c0, c1 = block.merge.weight
    return c0 * short + c1 * h


@pytest.mark.parametrize("c_in, c_out, stride", [(8, 8, 1), (8, 16, 2)])
def test_resnet_block_ann_equals_plain_ops(c_in, c_out, stride):
    torch.manual_seed(0)
    block = BasicBlock(c_in, c_out, stride).eval()
    randomise(block)
    x = torch.randn(2, c_in, 6, 6)
    with torch.no_grad():
        assert torch.allclose(block(x), resnet_block_by_hand(block, x), atol=1e-5)


@pytest.mark.parametrize("c_in, c_out, stride", [(8, 8, 1), (8, 16, 1), (8, 16, 2)])
def test_wrn_block_ann_equals_plain_ops(c_in, c_out, stride):
    torch.manual_seed(0)
    block = PreActBlock(c_in, c_out, stride).eval()
    randomise(block)
    x = torch.randn(2, c_in, 6, 6)
    with torch.no_grad():
        assert torch.allclose(block(x), wrn_block_by_hand(block, x), atol=1e-5)


def test_resnet20_ann_equals_plain_ops():
    torch.manual_seed(0)
    model = create_model("resnet20", input_shape=(3, 8, 8), mean=[0.5] * 3, std=[0.25] * 3)
    model.eval()
    randomise(model)
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        h = (x - 0.5) / 0.25
        h = F.relu(batch_norm(model.bn1, F.conv2d(h, model.conv1.weight, padding=1)))
        for stage in model.stages:
            for block in stage:
                h = resnet_block_by_hand(block, h)
        expected = F.linear(h.mean((2, 3)), model.fc.weight)
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_wrn16_4_ann_equals_plain_ops():
    torch.manual_seed(0)
    model = create_model("wrn16_4", input_shape=(3, 8, 8)).eval()
    randomise(model)
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        h = F.conv2d(x, model.stem.weight, padding=1)
        for group in model.groups:
            for block in group:
                h = wrn_block_by_hand(block, h)
        h = F.relu(batch_norm(model.bn, h)).mean((2, 3))
        assert torch.allclose(model(x), F.linear(h, model.fc.weight), atol=1e-5)


def if_neuron(currents: torch.Tensor, theta: float) -> torch.Tensor:
    """Integrate-and-fire with reset by subtraction over ``currents[t]``; unit spikes."""
    v = torch.zeros_like(currents[0])
    spikes = []
    for current in currents:
        v = v + current
        s = (v >= theta).float()
        v = v - s * theta
        spikes.append(s)
    return torch.stack(spikes)


def test_resnet_block_snn_equals_step_by_step_if():
    """At T = 3 the block's time-folded batch matches running each step by hand."""
    torch.manual_seed(0)
    block = BasicBlock(4, 8, 2, neuron={"threshold": 0.5}).eval()
    randomise(block)
    set_time_steps(block, 3)
    x = torch.rand(3, 2, 4, 6, 6) * 2  # [T, B, C, H, W]: a different input at each step
    with torch.no_grad():
        out = block(x.reshape(6, 4, 6, 6)).reshape(3, 2, 8, 3, 3)
        stride = (2, 2)
        h = torch.stack(
            [batch_norm(block.bn1, F.conv2d(x_t, block.conv1.weight, stride=stride, padding=1))
             for x_t in x]
        )  # fmt: skip
        h = if_neuron(h, 0.5)
        h = torch.stack(
            [batch_norm(block.bn2, F.conv2d(s, block.conv2.weight, padding=1)) for s in h]
        )
        short = torch.stack(
            [batch_norm(block.shortcut[1], F.conv2d(x_t, block.shortcut[0].weight, stride=stride))
             for x_t in x]
        )  # fmt: skip
        c0, c1 = block.merge.weight
        expected = if_neuron(c0 * short + c1 * h, 0.5)
    assert torch.equal(out, expected)
    assert 0 < float(out.mean()) < 1


def test_wrn_identity_shortcut_direct_coding_equals_repeated_events():
    """The first block's raw shortcut is not yet expanded over time; the merge repeats it."""
    torch.manual_seed(0)
    model = WideResNet(depth=10, widen_factor=1, input_shape=(3, 8, 8), num_classes=3)
    assert model.groups[0][0].shortcut is None
    model.eval()
    randomise(model)
    for _, n in model.neurons():
        n.set_threshold(0.3)
    set_time_steps(model, 3)
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        direct = model(x)
        events = model(x.unsqueeze(0).repeat(3, 1, 1, 1, 1))
    assert torch.allclose(direct, events, atol=1e-6)


def test_vgg_builds_from_a_custom_config():
    model = VGG(config=(8, "A", 16, "A"), input_shape=(1, 8, 8), num_classes=2, hidden=5)
    assert len(model.neurons()) == 2 + 2
    assert model.classifier[1].in_features == 16 * 2 * 2
    with pytest.raises(ValueError, match="config"):
        VGG(config=(8, "M", 16), input_shape=(1, 8, 8))
