"""Candidate operators of a choice layer, and their registry.

Each operator is an ``nn.Module`` built from one float ``Conv2d``/``Linear`` by
``from_layer``; it keeps its *own copy* of the weights (see ``mps.supernet.choice`` for why)
and is itself the deployable module: extraction puts it in place of the choice layer, and a
deployed model is rebuilt from the mapping by calling ``from_layer`` again, then loading
the saved state dict.  Adding an operator (say ``int4``) is one subclass with
``@register_operator`` — see :class:`Int4`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from mps.config import ConfigError
from mps.layer_info import LayerInfo

OPERATORS: dict[str, type["Operator"]] = {}


def register_operator(cls: type["Operator"]) -> type["Operator"]:
    if not cls.name or cls.name in OPERATORS:
        raise ValueError(f"operator name {cls.name!r} missing or registered twice")
    OPERATORS[cls.name] = cls
    return cls


def operator_class(name: str) -> type["Operator"]:
    try:
        return OPERATORS[name]
    except KeyError:
        raise ConfigError(f"unknown operator {name!r}; fix: use one of {', '.join(sorted(OPERATORS))}") from None


def shaped_layer(op: nn.Module) -> nn.Module | None:
    """The module inside an operator that carries the layer's shape attributes."""
    for module in op.modules():
        if hasattr(module, "in_channels") or hasattr(module, "in_features"):
            return module
    return None


@dataclass(frozen=True)
class BuildContext:
    """What an operator may need besides the layer: its static info and the hardware profile."""

    info: LayerInfo
    profile: Any  # mps.cost_model.HardwareProfile
    shape: LayerInfo | None = None  # an adapted operator's own (widened) shape; None = the layer's
    blocks: tuple[int, int] = (1, 1)  # (output, input) blocks that grow evenly (mps.supernet.adapted)


class Operator(nn.Module):
    """One way to execute a weight layer."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "digital"  # "analog" | "digital" | "skip": what the cost model charges

    @classmethod
    def unsupported_reason(cls, layer: nn.Module, info: LayerInfo) -> str | None:
        """Why this operator cannot realise the layer (None if it can)."""
        return None

    @classmethod
    def from_layer(cls, layer: nn.Module, ctx: BuildContext) -> "Operator":
        raise NotImplementedError


# --------------------------------------------------------------------------- analog
@register_operator
class Analog(Operator):
    """PCM analog tiles, simulated by aihwkit (AnalogConv2d / AnalogLinear); the forward runs on the
    engine that ``analog_engine`` selects (:mod:`mps.analog.engine`)."""

    name = "analog"
    kind = "analog"

    def __init__(self, analog_layer: nn.Module):
        super().__init__()
        self.layer = analog_layer

    @classmethod
    def unsupported_reason(cls, layer: nn.Module, info: LayerInfo) -> str | None:
        if isinstance(layer, nn.Conv2d) and layer.groups != 1:
            return "grouped/depthwise convolutions are not supported by aihwkit 1.2.0 analog layers"
        return None

    @classmethod
    def from_layer(cls, layer: nn.Module, ctx: BuildContext) -> "Analog":
        from mps.analog.chip import analog_from_digital, rpu_config_from_profile

        return cls(analog_from_digital(layer, rpu_config_from_profile(ctx.profile.analog)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from mps.analog.engine import analog_forward

        return analog_forward(self.layer, x)


@register_operator
class AnalogWide(Analog):
    """MPAAS adapted candidate: the layer widened to fill the analog tiles it already occupies
    (see :mod:`mps.supernet.adapted`).  Offered by the converter on adaptable pairs only."""

    name = "analog_wide"

    @classmethod
    def unsupported_reason(cls, layer: nn.Module, info: LayerInfo) -> str | None:
        return "only offered on adaptable layer pairs with space.search_space: mpaas"

    @classmethod
    def from_layer(cls, layer: nn.Module, ctx: BuildContext) -> "AnalogWide":
        from mps.supernet.adapted import widen_layer
        from mps.analog.chip import analog_from_digital, rpu_config_from_profile

        if ctx.shape is None:
            raise ConfigError(f"layer {ctx.info.name}: analog_wide needs its widened shape; fix: use search_space: mpaas")
        # new rows drawn from a generator of their own: building never perturbs the global RNG
        wide = widen_layer(layer, ctx.shape, torch.Generator().manual_seed(zlib.crc32(ctx.info.name.encode())),
                           ctx.blocks)
        return cls(analog_from_digital(wide, rpu_config_from_profile(ctx.profile.analog)))


# --------------------------------------------------------------------------- digital
@register_operator
class Int8(Operator):
    """INT8 digital unit: QAT with per-channel weight / per-tensor activation fake quantization."""

    name = "int8"
    bits: ClassVar[int] = 8

    def __init__(self, qlayer: nn.Module):
        super().__init__()
        self.layer = qlayer

    @classmethod
    def from_layer(cls, layer: nn.Module, ctx: BuildContext) -> "Int8":
        from mps.quant import quantized_from_float

        return cls(quantized_from_float(layer, bits=cls.bits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def to_quantized(self) -> nn.Module:
        """A real int8 module (torch.ao.nn.quantized) for deployment."""
        return self.layer.to_quantized()


class Int4(Int8):
    """4-bit digital path: the whole of what adding an operator takes (register it to enable;
    the hardware profile needs an ``int4`` precision entry for its cost)."""

    name = "int4"
    bits = 4


@register_operator
class Fp16(Operator):
    """FP16 digital unit."""

    name = "fp16"

    def __init__(self, hlayer: nn.Module):
        super().__init__()
        self.layer = hlayer

    @classmethod
    def from_layer(cls, layer: nn.Module, ctx: BuildContext) -> "Fp16":
        from mps.quant import HalfPrecisionLayer

        return cls(HalfPrecisionLayer.from_float(layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


@register_operator
class Fp32(Operator):
    """Full-precision digital reference (the FP32 baseline); not a search candidate by default."""

    name = "fp32"

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    @classmethod
    def from_layer(cls, layer: nn.Module, ctx: BuildContext) -> "Fp32":
        import copy

        return cls(copy.deepcopy(layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


# --------------------------------------------------------------------------- skip
@register_operator
class Skip(Operator):
    """The layer removed.

    Identity where input and output shapes agree; elsewhere the cheapest shape-matching path,
    which is parameter-free: spatial subsampling to the output size (strided slicing, or
    average pooling when a stride does not fit) and channel zero-padding or truncation (the
    'option A' shortcut of He et al.).  It has no MACs and no weights, so the cost model
    charges nothing for it.
    """

    name = "skip"
    kind = "skip"

    def __init__(self, out_features: int, is_conv: bool, stride: tuple[int, int] = (1, 1),
                 source: LayerInfo | None = None):
        super().__init__()
        self.out_features = out_features
        self.is_conv = is_conv
        self.stride = stride
        self.source = source  # the removed layer: a skip has no weights to read its shape from

    @classmethod
    def from_layer(cls, layer: nn.Module, ctx: BuildContext | None) -> "Skip":
        source = ctx.info if ctx is not None else None
        if isinstance(layer, nn.Conv2d):
            return cls(layer.out_channels, True, tuple(layer.stride), source)
        return cls(layer.out_features, False, source=source)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_conv:
            return fit_width(x, self.out_features, -1)
        sh, sw = self.stride
        if (sh, sw) != (1, 1):
            x = x[:, :, ::sh, ::sw]
        return fit_width(x, self.out_features, 1)


def fit_width(x: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """``x`` with exactly ``width`` features along ``dim``: the first ones, or zero-padded."""
    have = x.shape[dim]
    if have == width:
        return x
    if have > width:
        return x.narrow(dim, 0, width)
    pad_shape = list(x.shape)
    pad_shape[dim] = width - have
    return torch.cat([x, x.new_zeros(pad_shape)], dim=dim)


def skip_output_matches(layer: nn.Module, x: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether the skip path reproduces the layer's output shape for this input (checked once
    at conversion, so a layer whose shape cannot be matched never offers ``skip``)."""
    with torch.no_grad():
        out = Skip.from_layer(layer, None)(x)
    return tuple(out.shape) == tuple(y.shape)
