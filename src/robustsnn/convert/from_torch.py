"""Convert a user's plain-PyTorch CNN into a model of this toolkit, one neuron per ReLU call site.

:func:`from_torch` traces the model with ``torch.fx`` and rebuilds it as a
:class:`GraphNetwork`: a :class:`~robustsnn.snn.network.SpikingNetwork` whose layers are listed
in a JSON-serialisable *spec* (op, constructor arguments, inputs). Every ReLU **call** becomes
its own :class:`~robustsnn.snn.neuron.Neuron`, so a ReLU module used twice (torchvision's
``BasicBlock``) gets two membrane states. Supported: ``Conv2d``, ``Linear``, ``BatchNorm1d/2d``
(folded into the conv before it or kept), ``ReLU`` (module, ``F.relu``, ``torch.relu``,
``.relu()``), ``MaxPool2d`` (moved in front of its neuron: ``max∘ReLU = ReLU∘max``, exact in the
ANN and correct for spikes), ``AvgPool2d``, ``AdaptiveAvgPool2d``, ``Flatten`` (and
``x.view(x.size(0), -1)``), ``Dropout``, ``Identity``, residual ``+`` and this toolkit's
``Normalize``. Anything else is refused with an error naming the graph node.

Because the spec is plain JSON, ``robustsnn.io.save_checkpoint`` stores it as the model's
architecture and ``load_checkpoint`` rebuilds the network without the user's class (the
registered constructor ``graph_network``).
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from robustsnn.errors import UserError
from robustsnn.models.layers import Normalize, match_time
from robustsnn.models.registry import create_model, register_model
from robustsnn.snn.network import SpikingNetwork
from robustsnn.snn.neuron import Neuron

SUPPORTED = (
    "Conv2d, Linear, BatchNorm1d/2d, ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, "
    "Dropout, Identity, residual add, robustsnn Normalize"
)
_ADD = (operator.add, operator.iadd, torch.add)
_RELU = (F.relu, torch.relu, torch.relu_)
_PLAIN = (str, int, float, bool, type(None))


# ---- the rebuilt network ---------------------------------------------------------------------
def _build_layer(op: str, args: dict[str, Any], neuron: dict[str, Any]) -> nn.Module | None:
    """The module of one spec node (None for ops without one: add, flatten)."""
    if op == "conv2d":
        return nn.Conv2d(**args)
    if op == "linear":
        return nn.Linear(**args)
    if op == "batchnorm2d":
        return nn.BatchNorm2d(**args)
    if op == "batchnorm1d":
        return nn.BatchNorm1d(**args)
    if op == "neuron":
        return Neuron(args["channels"], **neuron)
    if op == "maxpool2d":
        return nn.MaxPool2d(**args)
    if op == "avgpool2d":
        return nn.AvgPool2d(**args)
    if op == "adaptive_avgpool2d":
        return nn.AdaptiveAvgPool2d(**args)
    if op == "dropout":
        return nn.Dropout(**args)
    if op == "normalize":
        return Normalize(**args)
    if op in ("add", "flatten", "identity"):
        return None
    raise UserError(f"unknown op '{op}' in the network spec")


def _check_spec(spec: dict[str, Any]) -> None:
    if not isinstance(spec, dict) or not isinstance(spec.get("nodes"), list):
        raise UserError("spec must be a dict with a 'nodes' list and an 'output' name")
    known = {"input"}
    for node in spec["nodes"]:
        missing = [i for i in node.get("inputs", []) if i not in known]
        if missing:
            raise UserError(f"spec node '{node.get('name')}' uses {missing} before they exist")
        known.add(node["name"])
    if spec.get("output") not in known:
        raise UserError(f"spec output '{spec.get('output')}' is not a node")


class GraphNetwork(SpikingNetwork):
    """A network given as a list of nodes; what :func:`from_torch` produces.

    Args:
        spec: ``{"nodes": [{"name", "op", "args", "inputs"}, ...], "output": name}``; the input
            image is called ``input``. None: :func:`example_spec` (a tiny residual CNN).
        input_shape: shape of one sample.
        num_classes: number of outputs.
        neuron: settings passed to every :class:`Neuron`.
        readout_delay: average the output only over steps ``t ≥ delay`` (delayed readout of
            training-free conversion); with ``T < delay + 4`` the last 4 steps are used.
        encoding: ``direct`` or ``poisson``.
    """

    def __init__(
        self,
        spec: dict[str, Any] | None = None,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        neuron: dict[str, Any] | None = None,
        readout_delay: int = 0,
        encoding: str = "direct",
    ) -> None:
        super().__init__(tuple(input_shape), num_classes, encoding=encoding)
        if spec is None:
            spec = example_spec(self.input_shape, self.num_classes)
        _check_spec(spec)
        self.spec = copy.deepcopy(spec)
        self.readout_delay = int(readout_delay)
        neuron = dict(neuron or {})
        self.layers = nn.ModuleDict()
        for node in self.spec["nodes"]:
            layer = _build_layer(node["op"], node.get("args", {}), neuron)
            if layer is not None:
                self.layers[node["name"]] = layer

    def forward_body(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {"input": x}
        for node in self.spec["nodes"]:
            inputs = [values[name] for name in node["inputs"]]
            op = node["op"]
            if op == "add":
                a, b = match_time(inputs[0], inputs[1])
                values[node["name"]] = a + b
            elif op == "flatten":
                args = node.get("args", {})
                values[node["name"]] = torch.flatten(
                    inputs[0], args.get("start_dim", 1), args.get("end_dim", -1)
                )
            elif op == "identity":
                values[node["name"]] = inputs[0]
            else:
                values[node["name"]] = self.layers[node["name"]](inputs[0])
        return self._delayed(values[self.spec["output"]])

    def _delayed(self, out: torch.Tensor) -> torch.Tensor:
        """Weight the time steps so that the mean over T is the mean over the readout window."""
        if self.time_steps == 0 or self.readout_delay == 0:
            return out
        return delay_weighted(out, self.time_steps, self.readout_delay)


def example_spec(input_shape: Sequence[int], num_classes: int, width: int = 8) -> dict[str, Any]:
    """A tiny residual CNN as a spec: conv-BN-neuron, conv-BN + shortcut, neuron, pool, fc."""
    channels = int(input_shape[0])

    def conv(name: str, c_in: int, inputs: list[str]) -> dict[str, Any]:
        args = {"in_channels": c_in, "out_channels": width, "kernel_size": 3, "padding": 1}
        return {"name": name, "op": "conv2d", "args": args | {"bias": False}, "inputs": inputs}

    def bn(name: str, inputs: list[str]) -> dict[str, Any]:
        return {
            "name": name,
            "op": "batchnorm2d",
            "args": {"num_features": width},
            "inputs": inputs,
        }

    def neuron(name: str, inputs: list[str]) -> dict[str, Any]:
        return {"name": name, "op": "neuron", "args": {"channels": width}, "inputs": inputs}

    nodes = [
        conv("conv1", channels, ["input"]),
        bn("bn1", ["conv1"]),
        neuron("relu1", ["bn1"]),
        conv("conv2", width, ["relu1"]),
        bn("bn2", ["conv2"]),
        {"name": "add", "op": "add", "args": {}, "inputs": ["bn2", "relu1"]},
        neuron("relu2", ["add"]),
        {
            "name": "pool",
            "op": "adaptive_avgpool2d",
            "args": {"output_size": 1},
            "inputs": ["relu2"],
        },
        {"name": "flatten", "op": "flatten", "args": {"start_dim": 1}, "inputs": ["pool"]},
        {
            "name": "fc",
            "op": "linear",
            "args": {"in_features": width, "out_features": int(num_classes), "bias": True},
            "inputs": ["flatten"],
        },
    ]
    return {"nodes": nodes, "output": "fc"}


def readout_start(steps: int, delay: int) -> int:
    """First step of the delayed readout window at T = ``steps``: ``delay``, or the last 4."""
    if delay <= 0:
        return 0
    if steps < delay + 4:
        return max(0, steps - 4)
    return delay


def delay_weighted(out: torch.Tensor, steps: int, delay: int) -> torch.Tensor:
    """Time-folded ``out`` weighted so that its mean over T is the delayed-readout mean."""
    start = readout_start(steps, delay) if steps else 0
    if start == 0 or out.shape[0] % steps:
        return out
    seq = out.reshape(steps, -1, *out.shape[1:])
    weights = torch.zeros(steps, dtype=out.dtype, device=out.device)
    weights[start:] = steps / (steps - start)
    return (seq * weights.view(-1, *([1] * (seq.dim() - 1)))).reshape(out.shape)


@register_model
def graph_network(**kwargs: Any) -> GraphNetwork:
    """A network given as a JSON spec of layers (what from_torch builds; default: an example)."""
    return GraphNetwork(**kwargs)


# ---- tracing ---------------------------------------------------------------------------------
class _Node:
    """A node of the spec under construction."""

    def __init__(self, name: str, op: str, inputs: list[str], args=None, source=None) -> None:
        self.name, self.op, self.inputs = name, op, inputs
        self.args: dict[str, Any] = dict(args or {})
        self.source: nn.Module | None = source

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "args": self.args, "inputs": list(self.inputs)}


def _refuse(node: fx.Node, why: str = "") -> ValueError:
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    return ValueError(
        f"cannot convert graph node '{node.name}' ({node.op} {target}){': ' + why if why else ''}; "
        f"supported: {SUPPORTED}"
    )


def _module_node(node: fx.Node, module: nn.Module, inputs: list[str], shape) -> _Node:
    name = node.name
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise _refuse(node, "only zero padding given as numbers is supported")
        args = {
            "in_channels": module.in_channels,
            "out_channels": module.out_channels,
            "kernel_size": list(module.kernel_size),
            "stride": list(module.stride),
            "padding": list(module.padding),
            "dilation": list(module.dilation),
            "groups": module.groups,
            "bias": module.bias is not None,
        }
        return _Node(name, "conv2d", inputs, args, module)
    if isinstance(module, nn.Linear):
        args = {
            "in_features": module.in_features,
            "out_features": module.out_features,
            "bias": module.bias is not None,
        }
        return _Node(name, "linear", inputs, args, module)
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        op = "batchnorm2d" if isinstance(module, nn.BatchNorm2d) else "batchnorm1d"
        args = {
            "num_features": module.num_features,
            "eps": module.eps,
            "momentum": module.momentum,
            "affine": module.affine,
            "track_running_stats": module.track_running_stats,
        }
        return _Node(name, op, inputs, args, module)
    if isinstance(module, (nn.ReLU, Neuron)):
        return _Node(name, "neuron", inputs, {"channels": int(shape[1])}, module)
    if isinstance(module, nn.MaxPool2d):
        if module.return_indices:
            raise _refuse(node, "max-pool with return_indices")
        args = {k: getattr(module, k) for k in ("kernel_size", "stride", "padding", "dilation")} | {
            "ceil_mode": module.ceil_mode
        }
        return _Node(name, "maxpool2d", inputs, _plain(args))
    if isinstance(module, nn.AvgPool2d):
        args = {
            k: getattr(module, k)
            for k in ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")
        } | {"divisor_override": module.divisor_override}
        return _Node(name, "avgpool2d", inputs, _plain(args))
    if isinstance(module, nn.AdaptiveAvgPool2d):
        args = _plain({"output_size": module.output_size})
        return _Node(name, "adaptive_avgpool2d", inputs, args)
    if isinstance(module, nn.Flatten):
        args = {"start_dim": module.start_dim, "end_dim": module.end_dim}
        return _Node(name, "flatten", inputs, args)
    if isinstance(module, nn.Dropout):
        return _Node(name, "dropout", inputs, {"p": module.p})
    if isinstance(module, nn.Identity):
        return _Node(name, "identity", inputs)
    if isinstance(module, Normalize):
        args = {"mean": module.mean.tolist(), "std": module.std.tolist()}
        return _Node(name, "normalize", inputs, args, module)
    raise _refuse(node, f"module type {type(module).__name__}")


def _plain(args: dict[str, Any]) -> dict[str, Any]:
    """Tuples to lists, so the spec survives a JSON round trip unchanged."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}


def _tensor_inputs(node: fx.Node, count: int) -> list[str]:
    names = [a.name for a in node.args if isinstance(a, fx.Node)]
    if len(names) != count or len(node.args) != count:
        raise _refuse(node, f"expected {count} tensor argument(s)")
    return names


def _function_node(node: fx.Node, shape, sizes: set[str]) -> _Node | None:
    target = node.target
    if node.op == "call_method":
        if target == "size":
            sizes.add(node.name)
            return None
        if target in ("relu", "relu_"):
            return _Node(node.name, "neuron", _tensor_inputs(node, 1), {"channels": int(shape[1])})
        if target == "flatten":
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            if start != 1:
                raise _refuse(node, "only flatten(1) (keep the batch) is supported")
            return _Node(node.name, "flatten", [node.args[0].name], {"start_dim": 1})
        if target in ("view", "reshape"):
            shape_args = node.args[1:]
            if len(shape_args) == 1 and isinstance(shape_args[0], (tuple, list)):
                shape_args = tuple(shape_args[0])
            first = shape_args[0] if shape_args else None
            batch_first = isinstance(first, fx.Node) and first.name in sizes
            if len(shape_args) == 2 and batch_first and shape_args[1] == -1:
                return _Node(node.name, "flatten", [node.args[0].name], {"start_dim": 1})
            raise _refuse(node, "only x.view(x.size(0), -1) is supported")
        raise _refuse(node)
    if target in _ADD:
        if node.kwargs.get("alpha", 1) != 1:
            raise _refuse(node, "add with alpha")
        return _Node(node.name, "add", _tensor_inputs(node, 2))
    if target in _RELU:
        return _Node(node.name, "neuron", [node.args[0].name], {"channels": int(shape[1])})
    if target is torch.flatten:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        if start != 1 or end != -1:
            raise _refuse(node, "only torch.flatten(x, 1) (keep the batch) is supported")
        return _Node(node.name, "flatten", [node.args[0].name], {"start_dim": 1})
    if target is F.adaptive_avg_pool2d:
        size = node.args[1] if len(node.args) > 1 else node.kwargs["output_size"]
        return _Node(
            node.name, "adaptive_avgpool2d", [node.args[0].name], _plain({"output_size": size})
        )
    if target is F.dropout:
        p = node.args[1] if len(node.args) > 1 else node.kwargs.get("p", 0.5)
        return _Node(node.name, "dropout", [node.args[0].name], {"p": p})
    raise _refuse(node)


def _trace(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[list[_Node], str, int]:
    """The spec nodes of ``model`` (weights attached), its output node and output width."""
    try:
        graph = fx.symbolic_trace(model)
    except Exception as err:  # fx raises many types for untraceable code
        raise UserError(f"torch.fx cannot trace {type(model).__name__}: {err}") from None
    from torch.fx.passes.shape_prop import ShapeProp

    with torch.no_grad():
        ShapeProp(graph).propagate(torch.zeros(2, *input_shape))
    modules = dict(graph.named_modules())
    nodes: list[_Node] = []
    sizes: set[str] = set()
    placeholders = [n for n in graph.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UserError(f"the model must take one input tensor, it takes {len(placeholders)}")
    alias = {placeholders[0].name: "input"}
    output_name, width = "", 0
    for node in graph.graph.nodes:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            result = node.args[0]
            if not isinstance(result, fx.Node):
                raise _refuse(node, "the model must return one tensor")
            output_name = alias.get(result.name, result.name)
            width = int(result.meta["tensor_meta"].shape[-1])
            continue
        meta = node.meta.get("tensor_meta")
        shape = tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None
        if node.op == "call_module":
            inputs = _tensor_inputs(node, 1)
            spec_node = _module_node(node, modules[node.target], inputs, shape)
        elif node.op in ("call_function", "call_method"):
            spec_node = _function_node(node, shape, sizes)
        else:
            raise _refuse(node)
        if spec_node is None:
            continue
        spec_node.inputs = [alias.get(name, name) for name in spec_node.inputs]
        if spec_node.op == "identity":
            alias[spec_node.name] = spec_node.inputs[0]
            continue
        nodes.append(spec_node)
    return nodes, output_name, width


def _users(nodes: list[_Node], name: str) -> list[_Node]:
    return [n for n in nodes if name in n.inputs]


def _rename_input(nodes: list[_Node], old: str, new: str) -> None:
    for n in nodes:
        n.inputs = [new if i == old else i for i in n.inputs]


def _fold_batchnorm(nodes: list[_Node], output: str) -> str:
    """Fold every BN whose input is a conv used by that BN alone (eval-mode statistics)."""
    for bn in [n for n in nodes if n.op == "batchnorm2d"]:
        conv = next((n for n in nodes if n.name == bn.inputs[0]), None)
        if conv is None or conv.op != "conv2d" or len(_users(nodes, conv.name)) != 1:
            continue
        if conv.name == output or bn.source is None or bn.source.running_mean is None:
            continue
        conv.source = _folded_conv(conv.source, bn.source)
        conv.args["bias"] = True
        nodes.remove(bn)
        _rename_input(nodes, bn.name, conv.name)
        if output == bn.name:
            output = conv.name
    return output


@torch.no_grad()
def _folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """``W' = γ/σ·W``, ``b' = γ/σ·(b − μ) + β``."""
    scale = bn.running_var.add(bn.eps).rsqrt()
    if bn.affine:
        scale = scale * bn.weight
    shift = bn.bias if bn.affine else torch.zeros_like(scale)
    folded = copy.deepcopy(conv)
    folded.weight.mul_(scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
    folded.bias = nn.Parameter((bias - bn.running_mean) * scale + shift)
    return folded


def _max_pool_before_neuron(nodes: list[_Node], output: str) -> str:
    """Turn ``neuron → maxpool`` into ``maxpool → neuron`` where the pool is the only user.

    ``max∘f = f∘max`` for any non-decreasing activation f (ReLU, clip, QCFS), so the ANN is
    unchanged, and the SNN max-pools membrane input currents instead of spikes.
    """
    for pool in [n for n in nodes if n.op == "maxpool2d"]:
        neuron = next((n for n in nodes if n.name == pool.inputs[0]), None)
        if neuron is None or neuron.op != "neuron" or len(_users(nodes, neuron.name)) != 1:
            continue
        readers = _users(nodes, pool.name)
        nodes.remove(pool)
        nodes.insert(nodes.index(neuron), pool)
        pool.inputs, neuron.inputs = list(neuron.inputs), [pool.name]
        for reader in readers:
            reader.inputs = [neuron.name if i == pool.name else i for i in reader.inputs]
        if output == pool.name:
            output = neuron.name
    return output


def from_torch(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    num_classes: int | None = None,
    neuron: dict[str, Any] | None = None,
    fold_bn: bool = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    encoding: str = "direct",
) -> GraphNetwork:
    """A :class:`GraphNetwork` computing what ``model`` computes (in eval mode) at T = 0.

    Args:
        model: a ``torch.fx``-traceable CNN (see the module docstring for the supported ops).
        input_shape: shape of one sample, e.g. ``(3, 32, 32)``.
        num_classes: checked against the model's output width (inferred when None).
        neuron: settings of every neuron, e.g. ``{"activation": "qcfs", "levels": 4}``
            (default: ReLU, so the rebuilt ANN equals the original).
        fold_bn: fold each Conv→BN pair into the conv (needs the BN's running statistics);
            otherwise BN is kept and applied at every time step (the same function).
        mean, std: add a :class:`Normalize` in front (images then stay in [0, 1]); a model
            that already starts with this toolkit's ``Normalize`` keeps it.
        encoding: input coding of the SNN.

    The original model is not modified; weights are copied.
    """
    input_shape = tuple(int(s) for s in input_shape)
    was_training = model.training
    model.eval()
    try:
        nodes, output, width = _trace(model, input_shape)
        if fold_bn:
            output = _fold_batchnorm(nodes, output)
        output = _max_pool_before_neuron(nodes, output)
    finally:
        model.train(was_training)
    if num_classes is not None and num_classes != width:
        raise UserError(f"the model has {width} outputs, not num_classes = {num_classes}")
    if (mean is None) != (std is None):
        raise UserError("give both mean and std for the normalisation, or neither")
    if mean is not None:
        args = {"mean": list(mean), "std": list(std)}
        front = _Node("normalize_input", "normalize", ["input"], args)
        _rename_input(nodes, "input", front.name)
        nodes.insert(0, front)
    spec = {"nodes": [n.as_dict() for n in nodes], "output": output}
    kwargs = {
        "spec": spec,
        "input_shape": list(input_shape),
        "num_classes": width,
        "neuron": dict(neuron or {}),
        "encoding": encoding,
    }
    network = create_model("graph_network", **kwargs)
    with torch.no_grad():
        for node in nodes:
            if node.source is None or node.op == "neuron" and isinstance(node.source, nn.ReLU):
                continue
            if node.op == "neuron":
                network.layers[node.name].load_state_dict(node.source.state_dict())
                network.layers[node.name].configure(**_neuron_settings(node.source))
            else:
                network.layers[node.name].load_state_dict(node.source.state_dict())
    return network.eval()


def _neuron_settings(neuron: Neuron) -> dict[str, Any]:
    settings = neuron.settings()
    for fixed in ("channels", "per_channel", "initial_potential"):
        settings.pop(fixed)
    return settings


def convert_checkpoint(
    path: str | Path,
    recipe: str,
    time_steps: Sequence[int] | int,
    out: str | Path,
    *,
    dataset: str | None = None,
    root: str | Path | None = None,
    calibration_size: int = 512,
    eval_size: int | None = None,
    batch_size: int = 256,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``robustsnn convert CHECKPOINT --recipe NAME --T ...`` as one library call.

    Loads the ANN checkpoint, converts it with ``recipe`` (calibration data: the first
    ``calibration_size`` training images of ``dataset``, by default the one the checkpoint's
    metadata names under ``dataset``), saves the SNN at the largest T to ``out`` with its
    conversion settings (:func:`~robustsnn.convert.low_latency.conversion_metadata`) and
    returns ``{"recipe", "dataset", "latency_offset", "accuracy": {T: acc}, "checkpoint"}``
    with the accuracy after each T of ``time_steps`` on the test split (first ``eval_size``
    images, or all). ``options`` (a dict) go to the recipe; the recipe, its options and T are
    checked before anything is loaded (ValueError).
    """
    from robustsnn.convert.low_latency import (
        accuracy_vs_time,
        conversion_metadata,
        latency_offset,
    )
    from robustsnn.convert.recipes import check_options, convert
    from robustsnn.data import load_dataset
    from robustsnn.io import load_checkpoint, save_checkpoint

    wanted = [time_steps] if isinstance(time_steps, int) else list(time_steps)
    if any(isinstance(t, bool) or int(t) != t for t in wanted):
        raise UserError(f"time steps must be integers >= 1, got {time_steps!r}")
    steps = sorted({int(t) for t in wanted})
    if not steps or steps[0] < 1:
        raise UserError(f"time steps must be integers >= 1, got {time_steps!r}")
    options = dict(options or {})
    check_options(recipe, options)
    model, meta = load_checkpoint(path)
    dataset = dataset or meta.get("dataset")
    if not dataset:
        raise UserError(
            f"{path}: the checkpoint records no dataset; name it (dataset=..., --dataset NAME)"
        )
    calibration = load_dataset(dataset, "train", root).take(calibration_size)
    test = load_dataset(dataset, "test", root)
    if eval_size is not None:
        test = test.take(eval_size)
    snn = convert(model, recipe, calibration, time_steps=steps[-1], **options)
    accuracy = accuracy_vs_time(snn, test, steps, batch_size=batch_size)
    offset = latency_offset(snn)
    metadata = {
        "recipe": recipe,
        "recipe_options": {k: v for k, v in options.items() if isinstance(v, _PLAIN)},
        "dataset": dataset,
        "source_checkpoint": str(path),
        "latency_offset": offset,
        "metrics": {"accuracy_vs_T": {str(t): a for t, a in accuracy.items()}},
        **conversion_metadata(snn),
    }
    saved = save_checkpoint(snn, out, metadata)
    return {
        "recipe": recipe,
        "dataset": dataset,
        "latency_offset": offset,
        "accuracy": accuracy,
        "checkpoint": str(saved),
        "source_metadata": {k: meta.get(k) for k in ("architecture", "time_steps")},
    }


def load_converted(path: str | Path, device: str | torch.device = "cpu"):
    """The converted SNN of a checkpoint and its metadata, exactly as it was saved.

    Kept for existing callers: :func:`robustsnn.io.load_checkpoint` itself now restores the
    conversion settings (COS/SRP pre-simulation, readout delay) recorded in the metadata.
    """
    from robustsnn.io import load_checkpoint

    return load_checkpoint(path, device)
