"""CIFAR-style ResNets (He et al. 2016, section 4.2; MLPerf Tiny image-classification model).

``resnet8`` is the MLPerf Tiny reference (about 78k parameters with 3 input channels);
``resnet20`` is He et al.'s CIFAR ResNet-20 (about 0.27M parameters).  Both: a 3x3 stem conv
with 16 channels, three stages of basic blocks with 16, 32 and 64 channels (stride 1, 2, 2),
global average pooling and one Linear head.  Where a block changes the shape, the shortcut
is a 1x1 conv followed by BatchNorm (He et al.'s option B), so that every weight layer is a
plain ``nn.Conv2d`` or ``nn.Linear`` the supernet converter can swap; convs carry no bias
because a BatchNorm follows each one.
"""

from __future__ import annotations

import torch
from torch import nn

STAGE_CHANNELS = (16, 32, 64)
STAGE_STRIDES = (1, 2, 2)


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN layers with an identity or 1x1-conv+BN shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem conv (16) -> 3 stages of ``blocks_per_stage`` basic blocks -> GAP -> Linear."""

    def __init__(self, blocks_per_stage: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, STAGE_CHANNELS[0])
        self.bn1 = nn.BatchNorm2d(STAGE_CHANNELS[0])
        self.relu = nn.ReLU(inplace=True)
        in_ch = STAGE_CHANNELS[0]
        stages = []
        for out_ch, stride in zip(STAGE_CHANNELS, STAGE_STRIDES):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(BasicBlock(in_ch, out_ch, stride if i == 0 else 1))
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        _init_weights(self)

    def mpaas_pairs(self) -> list[tuple[str, str, str]]:
        """Adaptable pairs for MPAAS (mps.supernet.adapted): conv1 -> bn1 -> relu -> conv2 of
        every basic block; the block's output width (residual) is never changed."""
        return [(f"{n}.conv1", f"{n}.bn1", f"{n}.conv2") for n, m in self.named_modules() if isinstance(m, BasicBlock)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs, unit BN, default Linear: draws only from torch's global RNG."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def resnet8(*, in_channels: int, num_classes: int, image_size: int) -> CifarResNet:
    """MLPerf Tiny ResNet-8: one basic block per stage. ``image_size`` is not needed (GAP)."""
    del image_size
    return CifarResNet(1, in_channels, num_classes)


def resnet20(*, in_channels: int, num_classes: int, image_size: int) -> CifarResNet:
    """He et al.'s CIFAR ResNet-20: three basic blocks per stage."""
    del image_size
    return CifarResNet(3, in_channels, num_classes)
