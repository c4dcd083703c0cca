"""Low-latency recipes: QCFS exactness, COS/SRP rules and gains, LTB, data normalisation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from robustsnn.convert import (
    accuracy_vs_time,
    conversion_metadata,
    convert,
    from_torch,
    latency_offset,
    list_recipes,
)
from robustsnn.convert.from_torch import load_converted, readout_start
from robustsnn.convert.low_latency import (
    local_threshold_balancing,
    offset_spike_potential,
    presimulation,
    remove_presimulation,
    residual_potential_mask,
)
from robustsnn.data import load_dataset
from robustsnn.data.dataset import DatasetInfo, ImageDataset
from robustsnn.io import save_checkpoint
from robustsnn.models import create_model
from robustsnn.snn import named_neurons, set_time_steps, using_time_steps


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_recipe_is_registered():
    assert {"qcfs", "opi", "cos", "srp", "tfc", "max-norm", "percentile"} <= set(list_recipes())
    assert "threshold-balancing" in list_recipes()


# ---- QCFS exactness --------------------------------------------------------------------------
class OneHidden(nn.Module):
    """conv-BN-ReLU-avgpool-linear: one spiking layer, then only linear maps."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.relu(self.bn(self.conv(x)))), 1))


@pytest.mark.parametrize("levels", [2, 4, 8])
def test_qcfs_at_t_equals_l_equals_the_ann_on_a_small_network(levels):
    """With direct coding the spiking layer sees a constant current, so at T = L its spike
    count is exactly the QCFS level, and the layers after it are linear: the whole network's
    output equals the ANN's (up to float rounding of the time average). Through more spiking
    layers the inputs vary over time and only the expectation is exact (test_network.py)."""
    torch.manual_seed(levels)
    net = from_torch(OneHidden().eval(), (1, 8, 8), neuron={"activation": "qcfs", "levels": levels})
    net.layers["relu"].clip_value.data.fill_(0.7)
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        ann = net(x)
        snn = convert(net, "qcfs", time_steps=levels)
        out = snn(x)
        set_time_steps(snn, 1 if levels > 1 else 3)
        other = snn(x)
    assert torch.allclose(out, ann, atol=1e-5, rtol=0)
    assert not torch.allclose(other, ann, atol=1e-3)


class ResidualDigits(nn.Module):
    """A user's residual CNN in plain torch: stem + average pooling, an identity block and a
    strided block with a 1x1 downsample, one ReLU module reused inside each block."""

    def __init__(self, width: int = 6) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width))
        self.pool = nn.AvgPool2d(2)
        self.a1, self.a2 = nn.Conv2d(width, width, 3, padding=1), nn.Conv2d(width, width, 3, 1, 1)
        self.abn1, self.abn2 = nn.BatchNorm2d(width), nn.BatchNorm2d(width)
        self.b1 = nn.Conv2d(width, 2 * width, 3, 2, 1)
        self.b2 = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.bbn1, self.bbn2 = nn.BatchNorm2d(2 * width), nn.BatchNorm2d(2 * width)
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 1, 2), nn.BatchNorm2d(2 * width))
        self.relu_a, self.relu_b = nn.ReLU(), nn.ReLU()
        self.head = nn.Linear(2 * width, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.stem(x)))
        y = self.relu_a(self.abn2(self.a2(self.relu_a(self.abn1(self.a1(x))))) + x)
        z = self.bbn2(self.b2(self.relu_b(self.bbn1(self.b1(y))))) + self.down(y)
        z = self.relu_b(z)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(z, 1), 1))


def stepwise_snn(model: nn.Module, x: torch.Tensor, steps: int) -> torch.Tensor:
    """An independent plain simulation: call the model once per time step as an ANN, with
    every neuron replaced by a stateful one-step IF update (v0 = θ/2, fire on v ≥ θ, subtract
    θ, emit θ), and average the outputs. It shares no code with the time-folded SNN."""
    from robustsnn.snn import Neuron, named_neurons, using_time_steps

    potentials: dict[int, torch.Tensor] = {}

    def one_step(neuron: Neuron, z: torch.Tensor) -> torch.Tensor:
        theta = neuron.threshold.detach()
        if theta.dim() == 1:
            theta = theta.view(-1, *([1] * (z.dim() - 2)))
        v = potentials.get(id(neuron), theta / 2 + torch.zeros_like(z))
        m = v + z
        spikes = (m >= theta).to(z.dtype)
        potentials[id(neuron)] = m - spikes * theta
        return spikes * theta

    neurons = [n for _, n in named_neurons(model)]
    for n in neurons:
        assert (n.initial_potential_mode, n.reset, n.spike_amplitude) == (
            "half",
            "subtract",
            "threshold",
        )
        n.forward = lambda z, n=n: one_step(n, z)
    try:
        with torch.no_grad(), using_time_steps(model, 0):
            outputs = [model(x) for _ in range(steps)]
    finally:
        for n in neurons:
            del n.forward
    return torch.stack(outputs).mean(0)


def residual_qcfs_models(levels: int = 4):
    """A from_torch residual network (BN kept) and a zoo ResNet, both QCFS with random BN."""
    torch.manual_seed(11)
    plain = ResidualDigits()
    for m in plain.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.4)
    neuron = {"activation": "qcfs", "levels": levels}
    graph = from_torch(plain.eval(), (1, 8, 8), neuron=neuron, fold_bn=False)
    zoo = create_model("resnet20", input_shape=(1, 8, 8), widths=(4, 6, 8), neuron=neuron).eval()
    for model in (graph, zoo):
        for index, (_, n) in enumerate(named_neurons(model)):
            n.clip_value.data.fill_(0.6 + 0.2 * index)
    return graph, zoo


@pytest.mark.parametrize("which", ["from_torch", "zoo"])
@pytest.mark.parametrize("steps", [1, 3, 8])
def test_residual_snn_equals_a_plain_step_by_step_simulation(which, steps):
    """Time folding, direct-coded input, the residual add / ConvexCombination, average
    pooling, kept BN, θ-amplitude spikes, v0 = θ/2 and the mean readout together compute
    exactly what a naive per-step loop computes (a bug in any of them breaks this)."""
    graph, zoo = residual_qcfs_models()
    model = graph if which == "from_torch" else zoo
    x = torch.rand(5, 1, 8, 8, dtype=torch.float64)
    snn = convert(model.double(), "qcfs", time_steps=steps)
    with torch.no_grad():
        folded = snn(x)
    assert torch.allclose(folded, stepwise_snn(snn, x, steps), atol=1e-12, rtol=0)


def test_qcfs_snn_at_large_t_approaches_the_clip_ann_not_the_quantised_ann():
    """The rate of an IF neuron with v0 = θ/2 tends to clip(z, 0, θ) as T grows, not to the
    QCFS staircase: a QCFS ANN whose activations sit mostly in its lowest bin (λ much larger
    than typical currents, e.g. the papers' λ = 8 after a short training) converts well at
    T = L and worse at large T. This is the measured cause of accuracy falling with T in the
    conversion benchmark, not a simulation error."""
    graph, _ = residual_qcfs_models()
    graph = graph.double()
    x = torch.rand(32, 1, 8, 8, dtype=torch.float64)
    clip_ann = copy.deepcopy(graph)
    for _, n in named_neurons(clip_ann):
        n.configure(activation="clip")
    with torch.no_grad():
        quantised, clipped = graph(x), clip_ann(x)
        snn = convert(graph, "qcfs", time_steps=1024)
        far = snn(x)
    gap = (quantised - clipped).abs().mean()
    assert gap > 0.02
    assert (far - clipped).abs().mean() < 0.02 * gap


@pytest.mark.parametrize("which", ["from_torch", "zoo"])
def test_first_time_step_of_a_qcfs_snn_is_the_ann_with_one_level(which):
    """At t = 1 a neuron starting at θ/2 fires iff its input is >= θ/2, which is QCFS with
    L = 1, layer after layer: a T = 1 SNN is exactly its ANN with one level, and the first
    step of every longer run starts from there. The conversion benchmark traces the residual
    net's low-T loss to this step (its ANN with L = 1 in the stem falls to 30 %)."""
    graph, zoo = residual_qcfs_models()
    model = (graph if which == "from_torch" else zoo).double()
    for _, n in named_neurons(model):  # low enough that the deep zoo net still fires at L = 1
        n.clip_value.data.fill_(0.4)
    for m in model.modules():  # the zoo's classifier and residual BN start at zero
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight)
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(0.0, 0.4)
    x = torch.rand(16, 1, 8, 8, dtype=torch.float64)
    one_level = copy.deepcopy(model)
    for _, n in named_neurons(one_level):
        n.configure(levels=1)
    with torch.no_grad():
        expected, four_levels = one_level(x), model(x)
        first_step = convert(model, "qcfs", time_steps=1)(x)
    assert expected.abs().max() > 0.5
    assert torch.allclose(first_step, expected, atol=1e-12, rtol=0)
    assert not torch.allclose(first_step, four_levels, atol=1e-3)


@pytest.mark.parametrize("which", ["from_torch", "zoo"])
def test_residual_qcfs_error_at_t_equals_l_is_only_the_residual_potential_error(which):
    """The error budget of plain QCFS on a residual network at T = L, neuron by neuron:

    * the time-mean input of every neuron (merge neurons included) is the ANN graph applied
      to the time-mean outputs of the neurons before it: the shortcut carries spikes of the
      previous neuron's θ, and the add / ConvexCombination, BN and pooling are exact;
    * charge is conserved: spikes·θ summed over T = input summed + v0 - v(T), with θ = λ
      and v0 = θ/2;
    * the count is the QCFS level clip(floor(z̄·L/λ + 1/2), 0, L) of the time-mean input z̄
      exactly where v(T) ends in [0, θ) (or below 0 without a spike, or at or above θ after
      L spikes: the clipped cases), and the first (directly coded) neuron equals the ANN.

    So the only way such an SNN leaves its ANN is the residual-potential (unevenness) error:
    a neuron whose input varies over time ends outside [0, θ) (an offset spike, what COS and
    SRP calibrate). A wrong θ, v0, amplitude, shortcut or merge breaks one of the checks.
    """
    graph, zoo = residual_qcfs_models()
    model = (graph if which == "from_torch" else zoo).double()
    x = torch.rand(6, 1, 8, 8, dtype=torch.float64)
    levels = 4
    lambdas = {name: float(n.clip_value.detach()) for name, n in named_neurons(model)}
    with torch.no_grad():
        ann_out: dict[str, torch.Tensor] = {}
        hooks = [
            n.register_forward_hook(lambda _m, _a, out, name=name: ann_out.__setitem__(name, out))
            for name, n in named_neurons(model)
        ]
        model(x)
        for h in hooks:
            h.remove()
        snn = convert(model, "qcfs", time_steps=levels)
        neurons = dict(named_neurons(snn))
        seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

        def record(name):
            def hook(module, args, out):
                current = args[0]
                if current.shape[0] == x.shape[0]:  # static (direct coding): same every step
                    current = current.unsqueeze(0).expand(levels, *current.shape)
                else:
                    current = current.reshape(levels, -1, *current.shape[1:])
                seen[name] = (current.sum(0), out.reshape(levels, -1, *out.shape[1:]).sum(0))

            return hook

        hooks = [n.register_forward_hook(record(name)) for name, n in neurons.items()]
        for n in neurons.values():
            n.record_potential = True
        snn(x)
        for h in hooks:
            h.remove()
        # the ANN graph fed with the SNN's time-mean spikes reproduces the mean inputs
        replayed: dict[str, torch.Tensor] = {}
        for name, n in neurons.items():
            n.forward = lambda z, name=name: (
                replayed.__setitem__(name, z),
                seen[name][1] / levels,
            )[1]
        try:
            with using_time_steps(snn, 0):
                snn(x)
        finally:
            for n in neurons.values():
                del n.forward
    uneven = 0
    for index, (name, n) in enumerate(neurons.items()):
        theta = lambdas[name]
        charge, spikes = seen[name]
        assert float(n.threshold) == pytest.approx(theta)
        assert torch.allclose(replayed[name], charge / levels, atol=1e-12, rtol=0)
        final = n.final_potential
        assert torch.allclose(spikes, charge + theta / 2 - final, atol=1e-12, rtol=0)
        count = (spikes / theta).round()
        level = torch.floor(charge * levels / (levels * theta) + 0.5).clamp(0, levels)
        # v(T) in [0, θ), or clipped: silent below 0, saturated at or above θ
        regular = ((final >= 0) & (final < theta)) | ((count == 0) & (final < 0))
        regular |= (count == levels) & (final >= theta)
        assert torch.equal(count == level, regular)
        if index == 0:
            assert regular.all()
            assert torch.allclose(spikes / levels, ann_out[name], atol=1e-12, rtol=0)
        uneven += int((~regular).sum())
    assert uneven > 0  # the deeper neurons do see time-varying currents


# ---- COS and SRP -----------------------------------------------------------------------------
def run_rule(inputs: list[float], shift: str = "margin") -> float:
    current = torch.tensor(inputs).view(-1, 1, 1)
    return float(offset_spike_potential(current, torch.tensor(1.0), shift))


def test_offset_spike_rule_by_hand():
    # fires at t=1 (m = 1.1) and ends at -0.7: one spike too many -> start one θ lower
    assert run_rule([0.6, 0.6, -0.7, -0.7]) == pytest.approx(-0.5)
    # ends at 1.0 after one spike (m = 2.0 at t=4), highest silent potential 0.7 -> one θ up
    assert run_rule([-1.0, 0.2, 1.0, 1.3]) == pytest.approx(1.5)
    # the extra spike came from m = 2.5: the code's margin shifts by 2.5 - 0.999
    assert run_rule([2.0, -3.0, 0.0, 0.0]) == pytest.approx(0.5 - 1.501)
    assert run_rule([2.0, -3.0, 0.0, 0.0], shift="unit") == pytest.approx(-0.5)
    # a constant current never leaves [0, θ), a silent neuron stays silent: no shift
    assert run_rule([-0.3, -0.3, -0.3]) == pytest.approx(0.5)
    assert run_rule([0.3, 0.3, 0.3, 0.3]) == pytest.approx(0.5)
    # the shifted start gives the count the total charge asks for
    assert run_rule([-1.0, 0.2, 1.0, 1.3]) + sum([-1.0, 0.2, 1.0, 1.3]) >= 2.0


def test_residual_mask_by_hand():
    final = torch.tensor([-0.2, 0.0, 0.0005, 0.3])
    assert residual_potential_mask(final, torch.tensor(0.5)).tolist() == [
        False,
        False,
        False,
        True,
    ]


def qcfs_case(levels: int = 4):
    """A fixed small case: a seeded QCFS small CNN with λ at each layer's 99th percentile."""
    torch.manual_seed(1)
    model = create_model(
        "small_cnn", input_shape=(1, 8, 8), neuron={"activation": "qcfs", "levels": levels}
    ).eval()
    x = torch.rand(64, 1, 8, 8)
    with torch.no_grad():
        for _, n in model.neurons():
            seen = []
            handle = n.register_forward_pre_hook(lambda m, a, seen=seen: seen.append(a[0]))
            model(x)
            handle.remove()
            n.clip_value.fill_(float(seen[0].flatten().quantile(0.99)))
    return model, x


@pytest.mark.parametrize("recipe", ["cos", "srp"])
def test_cos_and_srp_never_worse_than_qcfs(recipe):
    errors = {}
    for name in ("qcfs", recipe):
        model, x = qcfs_case()
        with torch.no_grad():
            ann = model(x)
            snn = convert(model, name, time_steps=1)
            for steps in (1, 2, 4, 8):
                set_time_steps(snn, steps)
                errors[name, steps] = float((snn(x) - ann).abs().mean())
    for steps in (1, 2, 4, 8):
        assert errors[recipe, steps] <= errors["qcfs", steps]
    assert errors[recipe, 4] < errors["qcfs", 4]


def test_presimulation_is_per_sample_restores_neurons_and_passes_gradients():
    model, x = qcfs_case()
    snn = convert(model, "cos", time_steps=4, presim_steps=3)
    assert snn is model and presimulation(snn).method == "cos"
    assert latency_offset(snn) == 3
    with torch.no_grad():
        batch = snn(x[:6])
        single = torch.cat([snn(x[i : i + 1]) for i in range(6)])
    assert torch.allclose(batch, single, atol=1e-6)
    assert all(n.initial_potential_mode == "half" for _, n in snn.neurons())
    assert all(n.initial_potential is None for _, n in snn.neurons())
    xg = x[:4].clone().requires_grad_(True)
    snn(xg).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    remove_presimulation(snn)
    assert presimulation(snn) is None and latency_offset(snn) == 0
    with torch.no_grad():
        plain = snn(x[:6])
    assert not torch.allclose(plain, batch)


def test_srp_silences_a_neuron_with_non_positive_residual():
    """A lone neuron with current +0.6θ then -0.6θ fires once at t = 1 and ends at 0:
    SRP silences it, so it stays silent in the real run (its ANN output is 0)."""

    class Lone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(2, 1, bias=False)
            self.relu = nn.ReLU()
            self.fc2 = nn.Linear(1, 1, bias=False)

        def forward(self, x):
            return self.fc2(self.relu(self.fc1(x)))

    lone = Lone()
    with torch.no_grad():
        lone.fc1.weight.copy_(torch.tensor([[1.0, 0.0]]))
        lone.fc2.weight.fill_(1.0)
    net = from_torch(lone, (2,), neuron={"activation": "qcfs", "levels": 2})
    net.layers["relu"].clip_value.data.fill_(1.0)
    events = torch.tensor([[[0.6, 0.0]], [[-0.6, 0.0]], [[0.6, 0.0]], [[-0.6, 0.0]]])
    qcfs_snn = convert(net, "qcfs", time_steps=4)
    with torch.no_grad():
        assert float(qcfs_snn(events)) == pytest.approx(0.25)  # fires once, at t = 1
    net = from_torch(lone, (2,), neuron={"activation": "qcfs", "levels": 2})
    net.layers["relu"].clip_value.data.fill_(1.0)
    srp_snn = convert(net, "srp", time_steps=4, presim_steps=2)
    with torch.no_grad():
        assert float(srp_snn(events)) == 0.0


@pytest.mark.parametrize("recipe", ["cos", "srp"])
def test_presimulated_checkpoint_round_trip(tmp_path, recipe):
    model, x = qcfs_case()
    snn = convert(model, recipe, time_steps=4, presim_steps=2)
    save_checkpoint(snn, tmp_path / "snn", conversion_metadata(snn))
    loaded, meta = load_converted(tmp_path / "snn")
    assert meta["presimulation"]["method"] == recipe
    assert presimulation(loaded).settings() == presimulation(snn).settings()
    with torch.no_grad():
        assert torch.equal(loaded(x[:8]), snn(x[:8]))


# ---- OPI, data normalisation, LTB ---------------------------------------------------------------
def tiny_set(n: int = 48) -> ImageDataset:
    torch.manual_seed(5)
    info = DatasetInfo("tiny", (1, 8, 8), 10, (0.0,), (1.0,))
    return ImageDataset(torch.rand(n, 1, 8, 8), torch.randint(0, 10, (n,)), info)


def relu_cnn():
    torch.manual_seed(2)
    return create_model("small_cnn", input_shape=(1, 8, 8)).eval()


def test_opi_needs_clipped_activations_and_sets_half_potential():
    with pytest.raises(ValueError, match="clipped activations"):
        convert(relu_cnn(), "opi")
    torch.manual_seed(2)
    model = create_model(
        "small_cnn", input_shape=(1, 8, 8), neuron={"activation": "clip", "clip_value": 3.0}
    )
    snn = convert(model, "opi", time_steps=4)
    for _, n in snn.neurons():
        assert float(n.threshold) == 3.0 and n.initial_potential_mode == "half"
        assert n.reset == "subtract" and n.spike_amplitude == "threshold"


def test_max_norm_and_percentile_thresholds_are_activation_statistics():
    data = tiny_set()
    outputs = {}
    model = relu_cnn()
    hooks = [
        n.register_forward_hook(lambda m, a, out, name=name: outputs.setdefault(name, out))
        for name, n in model.neurons()
    ]
    with torch.no_grad():
        model(data.images)
    for h in hooks:
        h.remove()
    snn = convert(model, "max-norm", data, batches=1, batch_size=48)
    for name, n in snn.neurons():
        assert float(n.threshold) == pytest.approx(float(outputs[name].max()))
        assert n.initial_potential_mode == "zero"
    robust = convert(relu_cnn(), "percentile", data, batches=1, batch_size=48)
    for name, n in robust.neurons():
        assert float(n.threshold) <= float(outputs[name].max())
        expected = float(outputs[name].flatten().sort().values[int(0.999 * outputs[name].numel())])
        assert float(n.threshold) == pytest.approx(expected, rel=1e-5)


def test_local_threshold_balancing_update_by_hand():
    model = relu_cnn()
    x = tiny_set().images
    currents = {}
    hook = model.act1.register_forward_pre_hook(lambda m, a: currents.setdefault("z", a[0]))
    with torch.no_grad():
        model(x)
    hook.remove()
    z = currents["z"]
    first = local_threshold_balancing(model, [x])["act1"]
    assert torch.allclose(first, 2 * z.clamp_min(0).mean((0, 2, 3)), atol=1e-6)
    second = local_threshold_balancing(model, [x, x])["act1"]
    excess = (z - first.view(1, -1, 1, 1)).clamp_min(0).mean((0, 2, 3))
    assert torch.allclose(second, first + 2 * excess, atol=1e-6)


def test_tfc_per_channel_thresholds_and_delayed_readout():
    data = tiny_set()
    snn = convert(relu_cnn(), "tfc", data, time_steps=16, batches=4, batch_size=16)
    for _, n in snn.neurons():
        assert n.per_channel and n.initial_potential_mode == "half"
        assert bool((n.threshold > 0).all())
    assert snn.readout_delay >= 0
    assert readout_start(32, 5) == 5 and readout_start(6, 5) == 2 and readout_start(3, 5) == 0
    snn_fixed = convert(relu_cnn(), "tfc", data, time_steps=12, batches=4, delay=6)
    outs = []
    hook = snn_fixed.fc2.register_forward_hook(lambda m, a, out: outs.append(out.detach()))
    with torch.no_grad():
        y = snn_fixed(data.images[:4])
    hook.remove()
    # the hook saw the delay-weighted outputs: their plain mean is the mean over t >= 6
    assert torch.allclose(y, outs[0].reshape(12, 4, -1).mean(0), atol=1e-6)
    assert bool((outs[0].reshape(12, 4, -1)[:6] == 0).all())


def test_accuracy_vs_time_equals_separate_runs():
    data = load_dataset("digits", "test").take(40)
    for recipe in ("qcfs", "cos"):
        model, _ = qcfs_case()
        snn = convert(model, recipe, time_steps=8)
        curve = accuracy_vs_time(snn, data, [1, 3, 8])
        for steps, value in curve.items():
            set_time_steps(snn, steps)
            with torch.no_grad():
                acc = float((snn(data.images).argmax(1) == data.labels).float().mean())
            assert value == pytest.approx(acc)


def test_recipe_option_errors_are_value_errors():
    with pytest.raises(ValueError, match="calibration data"):
        convert(relu_cnn(), "tfc", None)
    with pytest.raises(ValueError, match="recipe 'cos'"):
        convert(qcfs_case()[0], "cos", presim=3)


@pytest.mark.parametrize("recipe", ["qcfs", "cos", "srp", "opi", "tfc", "max-norm", "percentile"])
def test_robust_finetuning_accepts_every_recipe(recipe):
    from robustsnn.train import robust_finetune

    data = tiny_set(16)
    if recipe in ("qcfs", "cos", "srp"):
        model = qcfs_case()[0]
    elif recipe == "opi":
        torch.manual_seed(2)
        model = create_model(
            "small_cnn", input_shape=(1, 8, 8), neuron={"activation": "clip", "clip_value": 2.0}
        )
    else:
        model = relu_cnn()
    options = {"batches": 2, "batch_size": 8} if recipe in ("tfc", "max-norm", "percentile") else {}
    snn = convert(model, recipe, data, time_steps=2, **options)
    before = [p.detach().clone() for p in snn.parameters()]
    bn_before = snn.bn1.running_mean.clone()
    robust_finetune(snn, data, epochs=1, batch_size=8, eps=0.05)
    assert any(not torch.equal(a, p) for a, p in zip(before, snn.parameters(), strict=True))
    assert all(torch.isfinite(p).all() for p in snn.parameters())
    # two batches, each a clean and an adversarial forward in training mode: four BN
    # updates, none from COS/SRP pre-simulation
    assert not torch.equal(bn_before, snn.bn1.running_mean)
    assert int(snn.bn1.num_batches_tracked) == 4


def test_readout_delay_survives_deepcopy_and_checkpoints(tmp_path):
    import copy

    data = tiny_set()
    snn = convert(relu_cnn(), "tfc", data, time_steps=10, batches=4, delay=5)
    x = data.images[:6]
    twin = copy.deepcopy(snn)
    set_time_steps(twin, 9)  # the copy's delay hooks must follow the copy's T
    with torch.no_grad():
        expected = snn(x)
        assert torch.equal(twin(x), convert_at(snn, 9)(x))
        set_time_steps(snn, 10)
        save_checkpoint(snn, tmp_path / "tfc", conversion_metadata(snn))
        loaded, meta = load_converted(tmp_path / "tfc")
        assert meta["readout_delay"] == 5
        assert torch.equal(loaded(x), expected)


def convert_at(model, steps):
    set_time_steps(model, steps)
    return model
