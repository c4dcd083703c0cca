"""VGG networks with BN, average pooling and a spiking classifier.

``vgg11``, ``vgg16`` and ``vgg11_tin`` are the CIFAR / Tiny-ImageNet variants of the primary
paper's reference code (Özdenizci & Legenstein, TMLR 2024); ``vgg11_a`` is torchvision's
configuration A (five poolings) with the same 4096-wide head. Every conv is 3x3 with padding 1
and is followed by BN and a neuron; pooling is ``AvgPool2d(2)`` only (never max), so it stays
linear on spike maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from robustsnn.models.layers import Normalize
from robustsnn.models.registry import register_model
from robustsnn.models.resnet import check_image_shape, init_weights
from robustsnn.snn.network import SpikingNetwork
from robustsnn.snn.neuron import Neuron

POOL = "A"

VGG11 = (64, POOL, 128, 256, POOL, 512, 512, 512, POOL, 512, 512)
VGG11_A = (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL)
VGG16 = (
    64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512, POOL,
)  # fmt: skip
VGG11_TIN = (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512)


class VGG(SpikingNetwork):
    """Conv-BN-neuron features (``A`` = 2x2 average pooling), then a spiking MLP head.

    The head is ``[Linear -> neuron -> dropout] x hidden_layers -> Linear``. Its input is the
    flattened feature map (``global_pool=False``, as in the CIFAR reference) or the
    channel-wise global average (``global_pool=True``, as in the Tiny-ImageNet reference).

    Args:
        config: conv widths and ``"A"`` pooling markers, in order.
        hidden: width of the hidden linear layers.
        hidden_layers: number of hidden (spiking) linear layers in the head.
        global_pool: average the feature map to ``C x 1 x 1`` before the head.
        bias: give every conv and linear layer a bias (off in the reference ANN).
        dropout: dropout after each hidden neuron of the head.
        neuron: settings passed to every :class:`Neuron`.
    """

    def __init__(
        self,
        config: Sequence[int | str] = VGG11,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        hidden: int = 4096,
        hidden_layers: int = 2,
        global_pool: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        bias: bool = False,
        dropout: float = 0.2,
        neuron: dict[str, Any] | None = None,
        encoding: str = "direct",
    ) -> None:
        shape = check_image_shape(input_shape)
        super().__init__(shape, num_classes, encoding=encoding)
        c_in, height, width = shape
        pools = sum(1 for item in config if item == POOL)
        if min(height, width) < 2**pools:
            raise ValueError(
                f"a {height}x{width} input is too small for {pools} 2x2 poolings; "
                f"use images of at least {2**pools}x{2**pools} or another model"
            )
        if any(item != POOL and (not isinstance(item, int) or item < 1) for item in config):
            raise ValueError(f"config entries must be positive widths or {POOL!r}, got {config}")
        neuron = dict(neuron or {})
        self.normalize = Normalize(mean or [0.0] * c_in, std or [1.0] * c_in)
        layers: list[nn.Module] = []
        channels = c_in
        for item in config:
            if item == POOL:
                layers.append(nn.AvgPool2d(2))
                height, width = height // 2, width // 2
                continue
            layers += [
                nn.Conv2d(channels, item, 3, padding=1, bias=bias),
                nn.BatchNorm2d(item),
                Neuron(item, **neuron),
            ]
            channels = item
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1)] if global_pool else []
        features = channels if global_pool else channels * height * width
        head.append(nn.Flatten())
        for _ in range(hidden_layers):
            head += [
                nn.Linear(features, hidden, bias=bias),
                Neuron(hidden, **neuron),
                nn.Dropout(dropout),
            ]
            features = hidden
        head.append(nn.Linear(features, num_classes, bias=bias))
        self.classifier = nn.Sequential(*head)
        init_weights(self)

    def forward_body(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)))


@register_model
def vgg11(**kwargs: Any) -> VGG:
    """VGG-11 (reference CIFAR layout, 3 pools, 8192-4096-4096 head, 10 neurons, 61.4 M)."""
    return VGG(config=VGG11, **kwargs)


@register_model
def vgg11_a(**kwargs: Any) -> VGG:
    """VGG-11 config A (torchvision layout, 5 pools, 512-4096-4096 head, 10 neurons, 28.1 M)."""
    return VGG(config=VGG11_A, **kwargs)


@register_model
def vgg16(**kwargs: Any) -> VGG:
    """VGG-16 for CIFAR (13 convs, 5 pools, 512-4096-4096 head, 15 neurons, 33.6 M)."""
    return VGG(config=VGG16, **kwargs)


@register_model
def vgg11_tin(**kwargs: Any) -> VGG:
    """VGG-11 for 64x64 Tiny-ImageNet (4 pools, global pool, 512-4096 head, 9 neurons, 12.1 M)."""
    kwargs.setdefault("input_shape", (3, 64, 64))
    kwargs.setdefault("num_classes", 200)
    kwargs.setdefault("dropout", 0.0)
    return VGG(config=VGG11_TIN, hidden_layers=1, global_pool=True, **kwargs)
