"""Which code computes an analog layer's forward: the one switch for training and inference.

``analog_engine: fast`` (params, the default): a convolution whose tiles have static input
ranges runs as direct convolutions (:mod:`mps.analog.direct`) in training and in eval mode; a
tile with dynamic per-vector scaling runs the im2col engine in eval mode
(:mod:`mps.analog.im2col`) and aihwkit's own forward in training; linear layers run aihwkit's
forward.  ``analog_engine: aihwkit``: every analog layer runs aihwkit's own forward.  Programming,
drift, read noise and drift compensation are aihwkit's calls in both.

The operator :class:`mps.supernet.operators.Analog` calls :func:`analog_forward`, so every model
the pipeline builds (supernet paths, extracted and realised mappings) follows the switch; the
CLI sets it once per stage from params (:func:`use_engine`).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

import torch
from torch import Tensor, nn

from aihwkit.nn import AnalogConv2d, AnalogLinear

from mps.analog import direct, im2col

ENGINES = ("fast", "aihwkit")
_ENGINE: ContextVar[str] = ContextVar("mps_analog_engine", default="fast")
_WORKSPACE = im2col.Workspace()  # the im2col engine's reusable buffers (one process, one thread)


def current_engine() -> str:
    return _ENGINE.get()


@contextmanager
def use_engine(engine: str) -> Iterator[str]:
    """Within the block, analog layers called through :func:`analog_forward` use ``engine``."""
    if engine not in ENGINES:
        raise ValueError(f"unknown analog engine {engine!r}; fix: use one of {', '.join(ENGINES)}")
    token = _ENGINE.set(engine)
    try:
        yield engine
    finally:
        _ENGINE.reset(token)


def analog_forward(layer: nn.Module, x: Tensor) -> Tensor:
    """Forward of one ``AnalogConv2d``/``AnalogLinear`` by the current engine."""
    if _ENGINE.get() == "aihwkit" or type(layer) not in (AnalogConv2d, AnalogLinear):
        return layer(x)
    static = direct.has_static_ranges(layer)
    if static and type(layer) is AnalogConv2d:
        return direct.conv2d_forward(layer, x)
    if static or layer.training or (torch.is_grad_enabled() and x.requires_grad):
        return layer(x)  # training with dynamic scaling, and static-range linear layers: aihwkit's path
    with torch.no_grad():
        if type(layer) is AnalogConv2d:
            return im2col.conv2d_forward(layer, x, _WORKSPACE)
        return im2col.linear_forward(layer, x, _WORKSPACE)
