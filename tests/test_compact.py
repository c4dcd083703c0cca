"""Compact saving at T > 0: one-byte spike maps and recomputed BN outputs change no gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustsnn.models import create_model
from robustsnn.snn import set_time_steps, using_gradient_path
from robustsnn.snn.neuron import Neuron


def model_with(settings: dict, name: str = "small_cnn", shape=(1, 12, 12), train: bool = True):
    torch.manual_seed(0)
    model = create_model(name, input_shape=shape, neuron=settings)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(0.0, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    set_time_steps(model, 4)
    return model.train(train)


def plain_forward(model, x: torch.Tensor) -> torch.Tensor:
    """The network's direct-coding forward without the compaction context."""
    neurons = [m for m in model.modules() if isinstance(m, Neuron)]
    for n in neurons:
        n._static_batch = x.shape[0]
    try:
        out = model.forward_body(x)
    finally:
        for n in neurons:
            n._static_batch = None
    return out.reshape(4, x.shape[0], *out.shape[1:]).mean(0)


def gradients(model, forward, path: str) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(3, *model.input_shape, generator=gen) * 2).double().requires_grad_(True)
    y = torch.tensor([1, 4, 7])
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)  # the same dropout masks in both passes
    with using_gradient_path(model, path):
        F.cross_entropy(forward(x), y).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    grads["input"] = x.grad.clone()
    return grads


SETTINGS = [
    {},
    {"spike_amplitude": "threshold", "trainable_threshold": True, "per_channel": True},
    {"reset": "zero", "leak": 0.9, "trainable_threshold": True, "initial_potential": "half"},
    {"spike_amplitude": "threshold", "reset": "zero", "strict_firing": True},
]


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("path", ["triangle:1.0", "exp:0.3:2.0", "bptr", "rga", "pdsg", "ste"])
@pytest.mark.parametrize("train", [True, False])
def test_compaction_keeps_gradients(settings, path, train):
    model = model_with({"threshold": 0.7, **settings}, train=train).double()
    compact = gradients(model, model, path)
    plain = gradients(model, lambda x: plain_forward(model, x), path)
    assert compact.keys() == plain.keys()
    for key, g in plain.items():
        torch.testing.assert_close(compact[key], g, rtol=1e-10, atol=1e-12, msg=key)


def test_spike_maps_are_saved_in_one_byte():
    model = model_with({"spike_amplitude": "threshold", "trainable_threshold": True})
    x = torch.rand(3, 1, 12, 12)
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    def spike_shaped(t):
        return t.dtype == torch.float32 and t.dim() == 4 and t.shape[0] == 12

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.cross_entropy(model(x), torch.tensor([0, 1, 2])).backward()
    patterns = [t for t in saved if t.dtype == torch.bool and t.shape[0] == 4]
    assert len(patterns) >= 2  # at least the two conv neurons' firing patterns
    spike_maps = [t for t in saved if spike_shaped(t) and set(t.unique().tolist()) <= {0.0, 0.7}]
    assert not spike_maps  # no float spike map of the T·B batch is kept


def test_vgg_gradients_with_compaction():
    model = model_with({"trainable_threshold": True}, name="vgg11_a", shape=(3, 32, 32)).double()
    compact = gradients(model, model, "triangle:1.0")
    plain = gradients(model, lambda x: plain_forward(model, x), "triangle:1.0")
    for key, g in plain.items():
        torch.testing.assert_close(compact[key], g, rtol=1e-10, atol=1e-12, msg=key)


def test_pooling_over_spikes_saves_and_rebuilds_no_input_memory():
    """What an average pooling over spikes saves unpacks to a zero-stride placeholder."""
    from robustsnn.snn.compact import ActivationStore, _Shape

    store = ActivationStore()
    placeholder = store.unpack(_Shape((4, 3, 8, 8), (192, 64, 8, 1), torch.float32, "cpu"))
    assert placeholder.shape == (4, 3, 8, 8) and placeholder.stride() == (0, 0, 0, 0)
    grad = torch.rand(4, 3, 4, 4)
    x = torch.rand(4, 3, 8, 8)
    args = ([2, 2], [2, 2], [0, 0], False, True, None)
    expected = torch.ops.aten.avg_pool2d_backward(grad, x, *args)
    assert torch.equal(torch.ops.aten.avg_pool2d_backward(grad, placeholder, *args), expected)
