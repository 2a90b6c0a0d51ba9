"""User-model factories for tests of ``build_model('user_models:...')``."""

from __future__ import annotations

from torch import nn


def tiny_net(*, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """A one-conv network, as a user would bring their own."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * image_size * image_size, num_classes),
    )


def not_a_module(*, in_channels: int, num_classes: int, image_size: int) -> object:
    return {"in_channels": in_channels}


def wrong_signature(width: int) -> nn.Module:
    return nn.Linear(width, width)


def raises(*, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    raise RuntimeError("weights file\nmissing")


NOT_CALLABLE = 42


class _DivergesLater(nn.Module):
    """Trains normally for ``ok_steps`` training forwards, then returns NaN: a fault-injection
    model for 'a NaN loss stops the stage and keeps the last good checkpoint'."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, ok_steps: int):
        super().__init__()
        self.net = tiny_net(in_channels=in_channels, num_classes=num_classes, image_size=image_size)
        self.ok_steps = ok_steps
        self.calls = 0

    def forward(self, x):
        out = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls > self.ok_steps:
                return out * float("nan")
        return out


def diverges_in_second_epoch(*, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    # the tiny profile has 300 training images at batch 64 -> 4 steps per epoch
    return _DivergesLater(in_channels, num_classes, image_size, ok_steps=4)
