"""A small UNet for segmentation: needs nothing beyond torch.

Encoder levels of two conv-BN-ReLU each, max-pooling between them, a bilinear-upsampling decoder that
concatenates the skip connections, and a 1x1 classifier.  The concatenations give torch-pruning groups
whose channels land in slices of the next conv's input, which the dependency graph handles.

Example:
    >>> import torch
    >>> net = SmallUNet(num_classes=2, in_channels=3, widths=[8, 16])
    >>> net(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 2, 32, 32])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from autoprune.errors import ConfigError


class DoubleConv(nn.Module):
    """Two 3x3 conv-BN-ReLU layers."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class SmallUNet(nn.Module):
    """UNet with ``len(widths)`` levels; the output has the input's spatial size.

    Args:
        num_classes: output channels (one logit map per class).
        in_channels: image channels.
        widths: channels per level, finest first (default ``[16, 32, 64]``).
    """

    def __init__(self, num_classes: int, in_channels: int = 3, widths: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__()
        widths = list(widths)
        if len(widths) < 2 or not all(isinstance(w, int) and w > 0 for w in widths):
            raise ConfigError(f"model 'unet': key 'model_options.widths' must list at least 2 positive integers, got {widths!r}")
        self.down = nn.ModuleList()
        prev = in_channels
        for w in widths:
            self.down.append(DoubleConv(prev, w))
            prev = w
        self.up = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(DoubleConv(prev + w, w))
            prev = w
        self.classifier = nn.Conv2d(prev, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for block in self.up:
            skip = skips.pop()
            # Upsample to the skip's exact size, so inputs whose side is not a power of two also work.
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.classifier(x)
