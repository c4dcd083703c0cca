"""The compiled IF kernel gives what the torch implementation gives, for every setting."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F

from robustsnn.models import create_model
from robustsnn.snn import kernel, set_time_steps, using_gradient_path
from robustsnn.snn.bptt import Dynamics, IFFunction, simulate
from robustsnn.snn.paths import parse_path

pytestmark = pytest.mark.skipif(
    kernel.library() is None, reason="no C compiler: the kernel cannot be built here"
)

PATHS = ["triangle:1.0", "triangle:0.5", "rect:1.0", "exp:0.3:2.0", "sigmoid:4.0"]
PATHS += ["arctan:2.0", "gaussian:0.5", "ste"]
PATHS += ["triangle:1.0/dr", "arctan:8.0/dr", "rect:0.5/dr", "ste/dr"]  # detached reset
# leak, soft reset, strict firing, amplitude θ, static input
DYNAMICS = list(itertools.product([1.0, 0.8], [True, False], [False, True], [False, True]))


def inputs(static: bool, per_channel: bool, v0_kind: str, seed: int = 0):
    """Inputs on a 0.25 grid, so that potentials hit the threshold exactly (ties)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (3, 4, 5, 5) if static else (6, 3, 4, 5, 5)
    x = (torch.randint(-3, 6, shape, generator=gen) * 0.25).float()
    theta = torch.tensor([0.75, 1.0, 1.25, 0.5]).view(4, 1, 1) if per_channel else torch.tensor(1.0)
    v0 = {
        "zero": torch.zeros(()),
        "half": theta / 2,
        "tensor": torch.rand((3, 4, 5, 5), generator=gen),
    }[v0_kind]
    return x, theta, v0


def run(monkeypatch, mode: str, x, theta, v0, dyn: Dynamics, grad_seed: int = 3):
    monkeypatch.setenv("ROBUSTSNN_KERNEL", mode)
    x, theta, v0 = (t.clone().requires_grad_(True) for t in (x, theta, v0))
    out, final = IFFunction.apply(x, theta, v0, None, None, dyn, None)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed))
    (out * grad).sum().backward()
    return out.detach(), final, x.grad, theta.grad, v0.grad


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("leak", "soft", "strict", "amp"), DYNAMICS)
def test_kernel_matches_torch(monkeypatch, path, leak, soft, strict, amp):
    for static, per_channel, v0_kind in [(False, False, "zero"), (True, True, "half")] + [
        (False, True, "tensor")
    ]:
        x, theta, v0 = inputs(static, per_channel, v0_kind)
        steps = 6
        dyn = Dynamics(steps, static, leak, soft, strict, amp, parse_path(path))
        compiled = run(monkeypatch, "on", x, theta, v0, dyn)
        reference = run(monkeypatch, "off", x, theta, v0, dyn)
        assert torch.equal(compiled[0], reference[0]), "spikes differ"
        torch.testing.assert_close(compiled[1], reference[1], rtol=1e-6, atol=1e-6)
        for name, a, b in zip(("x", "theta", "v0"), compiled[2:], reference[2:], strict=True):
            scale = max(1.0, float(b.abs().max())) if b is not None else 1.0
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * scale, msg=f"d/d{name}")


def test_kernel_fills_membrane_and_pattern(monkeypatch):
    x, theta, v0 = inputs(False, True, "half")
    dyn = Dynamics(6, False, 1.0, True, False, False, parse_path("triangle:1.0"))
    buffers = {}
    for mode in ("on", "off"):
        monkeypatch.setenv("ROBUSTSNN_KERNEL", mode)
        membrane = torch.empty(x.shape)
        pattern = torch.empty(x.shape, dtype=torch.bool)
        out, _ = simulate(x, dyn, theta, v0, membrane, pattern)
        buffers[mode] = (out, membrane, pattern)
        assert torch.equal(out != 0, pattern)
    for a, b in zip(buffers["on"], buffers["off"], strict=True):
        assert torch.equal(a, b)


def test_kernel_results_do_not_depend_on_the_thread_count():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 2, 40_000, generator=gen)  # enough blocks to run in parallel
    pattern = torch.rand(256, 4, 16, 16, generator=gen) < 0.5
    theta, v0 = torch.tensor(0.7), torch.zeros(())
    dyn = Dynamics(4, False, 1.0, True, False, False, parse_path("triangle:1.0"))
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            xx = x.clone().requires_grad_(True)
            out, final = IFFunction.apply(xx, theta, v0, None, None, dyn, None)
            out.backward(torch.ones_like(out))
            results.append((out, final, xx.grad, kernel.pool_spikes(pattern, None, (2, 2))))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"spike_amplitude": "threshold", "trainable_threshold": True, "per_channel": True},
        {"reset": "zero", "leak": 0.9, "trainable_threshold": True, "initial_potential": "half"},
    ],
)
def test_network_gradients_agree_with_torch_implementation(monkeypatch, settings):
    """Through a whole network (BN-fed neurons replay from the norm input, with patterns)."""
    results = []
    for mode in ("on", "off"):
        monkeypatch.setenv("ROBUSTSNN_KERNEL", mode)
        torch.manual_seed(0)
        model = create_model("small_cnn", input_shape=(1, 12, 12), neuron=settings)
        set_time_steps(model, 4)
        x = torch.rand(5, 1, 12, 12, generator=torch.Generator().manual_seed(1))
        x.requires_grad_(True)
        with using_gradient_path(model, "triangle:1.0"):
            F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3, 4])).backward()
        grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
        results.append({"input": x.grad, **grads})
    compiled, reference = results
    assert compiled.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(compiled[name], reference[name], rtol=1e-4, atol=1e-6)


def test_other_dtypes_and_disabled_kernel_use_torch(monkeypatch):
    assert kernel.usable(torch.zeros(2))
    assert not kernel.usable(torch.zeros(2, dtype=torch.float64))
    monkeypatch.setenv("ROBUSTSNN_KERNEL", "off")
    assert not kernel.usable(torch.zeros(2))


def test_missing_compiler_warns_once_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setattr(kernel, "_library", None)
    monkeypatch.setattr(kernel, "_failure", None)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        assert kernel.library() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not kernel.usable(torch.zeros(2))
        x = torch.tensor([[0.6], [0.6]])
        dyn = Dynamics(2, False, 1.0, True, False, False, parse_path("triangle:1.0"))
        out, _ = simulate(x, dyn, torch.tensor(1.0), torch.zeros(()))
    assert out.flatten().tolist() == [0.0, 1.0]


def test_kernel_is_compiled_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(kernel, "_library", None)
    monkeypatch.setattr(kernel, "_failure", None)
    monkeypatch.setenv("ROBUSTSNN_CACHE", str(tmp_path))
    assert kernel.library() is not None
    assert [p.name for p in tmp_path.iterdir()] == [kernel.library()._name.rsplit("/", 1)[1]]
    assert tmp_path.joinpath(kernel.library()._name).name.startswith("if_kernel-")


@pytest.mark.parametrize(("height", "kernel_size"), [(8, (2, 2)), (7, (3, 3)), (6, (2, 3))])
@pytest.mark.parametrize("amplitude", [None, "scalar", "per-channel"])
def test_pooling_from_pattern_equals_pooling_float_spikes(height, kernel_size, amplitude):
    gen = torch.Generator().manual_seed(0)
    pattern = torch.rand((5, 3, height, 9), generator=gen) < 0.4
    amp = {
        None: None,
        "scalar": torch.tensor(0.37),
        "per-channel": torch.tensor([0.3, 1.7, 0.11]).view(3, 1, 1),
    }[amplitude]
    spikes = pattern.float() if amp is None else pattern.float() * amp
    expected = F.avg_pool2d(spikes, kernel_size)
    assert torch.equal(kernel.pool_spikes(pattern, amp, kernel_size), expected)


def test_compact_backward_rebuilds_pooled_spikes_with_the_kernel(monkeypatch):
    calls = []
    original = kernel.pool_spikes
    monkeypatch.setattr(kernel, "pool_spikes", lambda *a: calls.append(a) or original(*a))
    model = create_model("small_cnn")
    set_time_steps(model, 4)
    F.cross_entropy(model(torch.rand(2, 1, 28, 28)), torch.tensor([0, 1])).backward()
    assert len(calls) == 2  # the two pooled spike maps that conv2 and fc1 saved


@pytest.mark.parametrize("shape", ["atan", "rect", "triangle", "sigmoid", "gaussian"])
@pytest.mark.parametrize("detached", [False, True])
@pytest.mark.parametrize(("soft", "static"), [(True, False), (False, True), (False, False)])
def test_kernel_matches_torch_for_assg(monkeypatch, shape, detached, soft, static):
    """ASSG's per-element sharpness (a function of |u − θ|) in the kernel and in torch."""
    x, theta, v0 = inputs(static, True, "half")
    path = parse_path(f"assg:{shape}" + ("/dr" if detached else ""))
    dyn = Dynamics(6, static, 1.0, soft, False, False, path)
    results = {}
    for mode in ("on", "off"):
        monkeypatch.setenv("ROBUSTSNN_KERNEL", mode)
        xs, th = x.clone().requires_grad_(True), theta.clone().requires_grad_(True)
        out, _ = IFFunction.apply(xs, th, v0, None, None, dyn, None, lambda d: 2.0 / (d + 0.5))
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
        (out * grad).sum().backward()
        results[mode] = (out.detach(), xs.grad, th.grad)
    assert torch.equal(results["on"][0], results["off"][0])
    for a, b in zip(results["on"][1:], results["off"][1:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * max(1.0, float(b.abs().max())))
    assert results["on"][1].abs().sum() > 0
