"""Small CNNs for 28x28 (MNIST-like) and 8x8 (scikit-learn digits) inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from robustsnn.models.layers import Normalize
from robustsnn.models.registry import register_model
from robustsnn.snn.network import SpikingNetwork
from robustsnn.snn.neuron import Neuron


class SmallCNN(SpikingNetwork):
    """conv-BN-neuron ×2 with average pooling, one hidden linear layer, linear readout.

    Images of 16 pixels or more are pooled after each conv (28 → 14 → 7); smaller ones only
    after the second (8 → 4).
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        channels: Sequence[int] | None = None,
        hidden: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        bias: bool = False,
        dropout: float = 0.0,
        neuron: dict[str, Any] | None = None,
        encoding: str = "direct",
    ) -> None:
        super().__init__(tuple(input_shape), num_classes, encoding=encoding)
        c_in, height, width = self.input_shape
        large = min(height, width) >= 16
        c1, c2 = channels or ((32, 64) if large else (16, 32))
        hidden = hidden or (128 if large else 64)
        neuron = dict(neuron or {})
        self.normalize = Normalize(mean or [0.0] * c_in, std or [1.0] * c_in)
        self.conv1 = nn.Conv2d(c_in, c1, 3, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(c1)
        self.act1 = Neuron(c1, **neuron)
        self.pool1 = nn.AvgPool2d(2) if large else nn.Identity()
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(c2)
        self.act2 = Neuron(c2, **neuron)
        self.pool2 = nn.AvgPool2d(2)
        reduced = (height // 4, width // 4) if large else (height // 2, width // 2)
        self.fc1 = nn.Linear(c2 * reduced[0] * reduced[1], hidden, bias=bias)
        self.act3 = Neuron(hidden, **neuron)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes, bias=bias)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_body(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.act1(self.bn1(self.conv1(self.normalize(x)))))
        x = self.pool2(self.act2(self.bn2(self.conv2(x))))
        x = self.dropout(self.act3(self.fc1(torch.flatten(x, 1))))
        return self.fc2(x)


@register_model
def small_cnn(**kwargs: Any) -> SmallCNN:
    """Small CNN for 28x28 or 8x8 inputs (conv32-pool-conv64-pool-fc128 at 28x28)."""
    return SmallCNN(**kwargs)
