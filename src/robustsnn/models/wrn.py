"""Pre-activation wide ResNets (WRN-16-4, WRN-28-2, WRN-28-4) with a learnable residual merge.

The CIFAR variant of the primary paper's reference code (Özdenizci & Legenstein, TMLR 2024):
a 3x3 stem conv, three groups of ``(depth - 4) / 6`` blocks of widths 16k/32k/64k with strides
1/2/2, and pre-activation blocks ``BN-neuron-conv-BN-neuron-(dropout)-conv``. The residual
stream between blocks is analog (sums of conv outputs); every conv except the stem receives
spikes. Shortcut and residual are merged by a learnable ``c0·shortcut + c1·residual``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from robustsnn.models.layers import ConvexCombination, Normalize
from robustsnn.models.registry import register_model
from robustsnn.models.resnet import check_image_shape, init_weights
from robustsnn.snn.network import SpikingNetwork
from robustsnn.snn.neuron import Neuron


class PreActBlock(nn.Module):
    """``c0·shortcut + c1·conv(drop(neuron(BN(conv(neuron(BN(x)))))))``.

    The shortcut is the block's raw (analog) input when the shape is kept; otherwise a strided
    1x1 conv applied to the block's first activation (its spikes), as in the reference.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        dropout: float = 0.0,
        neuron: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        neuron = dict(neuron or {})
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.act1 = Neuron(in_channels, **neuron)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act2 = Neuron(out_channels, **neuron)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)
            if stride != 1 or in_channels != out_channels
            else None
        )
        self.merge = ConvexCombination()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activation = self.act1(self.bn1(x))
        residual = self.conv2(self.dropout(self.act2(self.bn2(self.conv1(activation)))))
        shortcut = x if self.shortcut is None else self.shortcut(activation)
        return self.merge(shortcut, residual)


class WideResNet(SpikingNetwork):
    """Pre-activation WRN-``depth``-``widen_factor``: stem conv, three groups, BN-neuron head.

    Args:
        depth: total depth; ``(depth - 4)`` must be a positive multiple of 6.
        widen_factor: k, the width multiplier of the groups (16k, 32k, 64k channels).
        bias: give the classifier a bias. As in the reference, convs never have one.
        dropout: dropout inside each block, between its second neuron and conv (0 by default).
        neuron: settings passed to every :class:`Neuron`.
    """

    def __init__(
        self,
        depth: int = 16,
        widen_factor: int = 4,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        bias: bool = False,
        dropout: float = 0.0,
        neuron: dict[str, Any] | None = None,
        encoding: str = "direct",
    ) -> None:
        shape = check_image_shape(input_shape)
        super().__init__(shape, num_classes, encoding=encoding)
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(
                f"WRN depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {depth}"
            )
        if widen_factor < 1:
            raise ValueError(f"widen_factor must be a positive integer, got {widen_factor}")
        c_in = shape[0]
        per_group = (depth - 4) // 6
        neuron = dict(neuron or {})
        self.normalize = Normalize(mean or [0.0] * c_in, std or [1.0] * c_in)
        self.stem = nn.Conv2d(c_in, 16, 3, padding=1, bias=False)
        groups = []
        channels = 16
        for index, width in enumerate((16 * widen_factor, 32 * widen_factor, 64 * widen_factor)):
            stride = 1 if index == 0 else 2
            group = []
            for b in range(per_group):
                group.append(PreActBlock(channels, width, stride if b == 0 else 1, dropout, neuron))
                channels = width
            groups.append(nn.Sequential(*group))
        self.groups = nn.Sequential(*groups)
        self.bn = nn.BatchNorm2d(channels)
        self.act = Neuron(channels, **neuron)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes, bias=bias)
        init_weights(self)

    def forward_body(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.stem(self.normalize(x)))
        x = self.pool(self.act(self.bn(x)))
        return self.fc(torch.flatten(x, 1))


@register_model
def wrn16_4(**kwargs: Any) -> WideResNet:
    """Wide ResNet-16-4 for CIFAR (pre-activation, 64/128/256 channels, 13 neurons, 2.75 M)."""
    return WideResNet(depth=16, widen_factor=4, **kwargs)


@register_model
def wrn28_2(**kwargs: Any) -> WideResNet:
    """Wide ResNet-28-2 for CIFAR (pre-activation, 32/64/128 channels, 25 neurons, 1.47 M)."""
    return WideResNet(depth=28, widen_factor=2, **kwargs)


@register_model
def wrn28_4(**kwargs: Any) -> WideResNet:
    """Wide ResNet-28-4 for CIFAR (pre-activation, 64/128/256 channels, 25 neurons, 5.85 M)."""
    return WideResNet(depth=28, widen_factor=4, **kwargs)
