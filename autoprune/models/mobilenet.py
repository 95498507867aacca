"""A small MobileNetV2-style network: inverted residuals with depthwise convs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 project, with a residual add when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_ch * expand
        self.use_res = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(in_ch, hidden, 1))
        layers.append(_conv_bn(hidden, hidden, 3, stride, groups=hidden))
        layers.append(_conv_bn(hidden, out_ch, 1, act=False))
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res else out


class SmallMobileNetV2(nn.Module):
    """MobileNetV2 for small images.

    Args:
        num_classes: classifier outputs.
        in_channels: image channels.
        stem: channels of the first conv.
        setting: ``(expand, channels, repeats, stride)`` per stage.
        last: channels of the final 1x1 conv.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        stem: int = 32,
        setting: Sequence[Sequence[int]] = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 1, 1)),
        last: int = 256,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(in_channels, stem, 3, 1)]
        ch = stem
        for expand, out_ch, repeats, stride in setting:
            for i in range(repeats):
                layers.append(InvertedResidual(ch, out_ch, stride if i == 0 else 1, expand))
                ch = out_ch
        layers.append(_conv_bn(ch, last, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
