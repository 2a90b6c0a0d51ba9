"""MobileNetV2 (Sandler et al. 2018), CIFAR variant kept small for CPU runs.

Differences from the ImageNet network, all for 28-32 px inputs and laptop-sized runs:
- the stem is a 3x3 conv with stride 1, and the second stage (24 channels) has stride 1, so
  a 32x32 input is downsampled only three times (32 -> 16 -> 8 -> 4);
- width multiplier ``width`` (default 0.5) scales every channel count, rounded to a multiple
  of 8; the last 1x1 conv has 1280*width channels (no "at least 1280" rule);
- fewer repeats per stage than the paper, see ``CIFAR_CONFIG`` (t = expansion, c = output
  channels before the width multiplier, n = blocks, s = stride of the first block):
  10 inverted residual blocks instead of 17.  About 0.33M parameters with 3 input channels
  (a third of them in the last 1x1 conv); a batch-8 32x32 forward takes tens of ms on a CPU.

Each inverted residual block is 1x1 expand conv + BN + ReLU6 (omitted when t == 1),
3x3 depthwise conv (``groups == channels``) + BN + ReLU6, 1x1 linear projection conv + BN,
with an identity residual when stride is 1 and the channel count is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

#: (expansion t, output channels c, repeats n, first stride s)
CIFAR_CONFIG: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 2, 2),
    (6, 64, 2, 2),
    (6, 96, 1, 1),
    (6, 160, 1, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
DEFAULT_WIDTH = 0.5


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor``, never dropping below 90 % of it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> linear project (1x1), residual when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_ch * expansion
        self.use_residual = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv_bn_relu(in_ch, hidden, 1))
        layers.append(_conv_bn_relu(hidden, hidden, 3, stride=stride, groups=hidden))
        layers.append(nn.Conv2d(hidden, out_ch, 1, bias=False))
        layers.append(nn.BatchNorm2d(out_ch))
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """CIFAR MobileNetV2: stem -> inverted residual blocks -> 1x1 conv -> GAP -> Linear."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: float = DEFAULT_WIDTH,
        config: tuple[tuple[int, int, int, int], ...] = CIFAR_CONFIG,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        in_ch = make_divisible(STEM_CHANNELS * width)
        last_ch = make_divisible(LAST_CHANNELS * width)
        blocks: list[nn.Module] = [_conv_bn_relu(in_channels, in_ch, 3, stride=1)]
        for t, c, n, s in config:
            out_ch = make_divisible(c * width)
            for i in range(n):
                blocks.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
        blocks.append(_conv_bn_relu(in_ch, last_ch, 1))
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(last_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(self.dropout(torch.flatten(x, 1)))


def mobilenetv2(
    *, in_channels: int, num_classes: int, image_size: int, width: float = DEFAULT_WIDTH
) -> MobileNetV2:
    """CIFAR MobileNetV2 with width multiplier ``width``; ``image_size`` is not needed (GAP)."""
    del image_size
    return MobileNetV2(in_channels, num_classes, width=width)
