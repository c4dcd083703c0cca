"""Post-activation CIFAR ResNets (ResNet-20/32) with a learnable residual merge.

This is the CIFAR variant of the primary paper's reference code (Özdenizci & Legenstein, TMLR
2024): a 3x3 stem, three stages of widths 16/32/64 with strides 1/2/2, and blocks
``conv-BN-neuron-conv-BN`` whose output is merged with the shortcut by a learnable
``c0·shortcut + c1·residual`` (init 0.5/0.5) and then passed through a neuron. Every
neuron therefore sees an analog current, and the residual stream between blocks carries spikes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from robustsnn.models.layers import ConvexCombination, Normalize
from robustsnn.models.registry import register_model
from robustsnn.snn.network import SpikingNetwork
from robustsnn.snn.neuron import Neuron


def init_weights(model: nn.Module) -> None:
    """Reference initialisation: Kaiming-normal (fan_out, ReLU) convs, BN 1/0, zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


def check_image_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    """``(channels, height, width)`` as ints, or a ValueError for anything else."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"input_shape must be (channels, height, width) with positive sizes, got {shape}"
        )
    return shape  # type: ignore[return-value]


class BasicBlock(nn.Module):
    """``neuron(c0·shortcut(x) + c1·BN(conv(neuron(BN(conv(x))))))``.

    The shortcut is the identity, or a strided 1x1 conv + BN when the stride or the width
    changes.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        neuron: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        neuron = dict(neuron or {})
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = Neuron(out_channels, **neuron)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()
        self.merge = ConvexCombination()
        self.act2 = Neuron(out_channels, **neuron)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(self.merge(self.shortcut(x), residual))


class ResNet(SpikingNetwork):
    """CIFAR ResNet: stem conv-BN-neuron, three stages of :class:`BasicBlock`, linear head.

    Args:
        blocks: blocks per stage, e.g. ``(3, 3, 3)`` for ResNet-20.
        widths: channels of the three stages (the stem has ``widths[0]``).
        bias: give the classifier a bias. As in the reference, convs never have one (each
            feeds a BN, which would cancel it).
        dropout: dropout before the classifier (0 in the reference).
        neuron: settings passed to every :class:`Neuron`.
    """

    def __init__(
        self,
        blocks: Sequence[int] = (3, 3, 3),
        widths: Sequence[int] = (16, 32, 64),
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
        c_in = shape[0]
        if len(blocks) != len(widths) or any(n < 1 for n in blocks):
            raise ValueError(
                f"blocks {list(blocks)} and widths {list(widths)} need one positive entry per stage"
            )
        neuron = dict(neuron or {})
        self.normalize = Normalize(mean or [0.0] * c_in, std or [1.0] * c_in)
        self.conv1 = nn.Conv2d(c_in, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = Neuron(widths[0], **neuron)
        stages = []
        channels = widths[0]
        for index, (count, width) in enumerate(zip(blocks, widths, strict=True)):
            stride = 1 if index == 0 else 2
            stage = []
            for b in range(count):
                stage.append(BasicBlock(channels, width, stride if b == 0 else 1, neuron))
                channels = width
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes, bias=bias)
        init_weights(self)

    def forward_body(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(self.normalize(x))))
        x = self.pool(self.stages(x))
        return self.fc(self.dropout(torch.flatten(x, 1)))


@register_model
def resnet20(**kwargs: Any) -> ResNet:
    """ResNet-20 for CIFAR (post-activation, [3,3,3] blocks of 16/32/64, 19 neurons, 0.27 M)."""
    return ResNet(blocks=(3, 3, 3), **kwargs)


@register_model
def resnet32(**kwargs: Any) -> ResNet:
    """ResNet-32 for CIFAR (post-activation, [5,5,5] blocks of 16/32/64, 31 neurons, 0.47 M)."""
    return ResNet(blocks=(5, 5, 5), **kwargs)
