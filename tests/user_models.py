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
