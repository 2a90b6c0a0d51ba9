"""Digital-precision quantizers behind the supernet's ``int8`` and ``fp16`` operators.

The supernet's digital candidates must train (quantization-aware training, QAT) alongside the
analog ones and later deploy as real low-precision modules.  This module holds only the
numerics; the operator registry in :mod:`mps.supernet.operators` wraps these classes.

- :class:`WeightFakeQuant`: per-output-channel symmetric weight fake quantization.
- :class:`ActFakeQuant`: per-tensor affine activation fake quantization with a
  moving-average min/max observer.
- :class:`QuantizedLayer` (built by :func:`quantized_from_float`): a Conv2d/Linear copy whose
  input and weight are fake-quantized; :meth:`QuantizedLayer.to_quantized` turns it into a real
  int8 module (:class:`Int8Inference`, ``torch.ao.nn.quantized``) for deployment.
- :class:`HalfPrecisionLayer`: the FP16 path (fp32 master weights, half-precision numerics).

The numerics follow ``torch.ao.quantization`` on purpose, so that the QAT model and the
converted int8 model agree and the tests can check against PyTorch's own ``FakeQuantize``:

- Weight scale per channel = ``max|w_c| / ((qmax - qmin) / 2)``, i.e. ``/127.5`` for 8 bits
  (``/7.5`` for 4 bits), floored at ``finfo(float32).eps``; zero point 0.  This is exactly
  what ``PerChannelMinMaxObserver`` with ``per_channel_symmetric`` computes for
  ``[-2^(b-1), 2^(b-1)-1]``.  (A "restricted range" ``max|w|/127`` would not match PyTorch's
  converter.)  Unlike that observer, the scale is recomputed from the *current* weights
  on every forward (no running min/max over past weights), because the weights are trained.
- Activations: ``MovingAverageMinMaxObserver`` (averaging constant 0.01; the first batch
  initialises min/max) and ``_calculate_qparams`` for ``per_tensor_affine``.  The observer
  updates only in training mode; in eval the statistics are frozen.
- The input of a deployable (8-bit) layer is quantized with ``reduce_range=True``, i.e. to
  ``[0, 127]`` rather than ``[0, 255]``, in QAT and in the real int8 module alike, as
  torch's own x86/fbgemm qconfigs (``get_default_qat_qconfig('x86')``) do.  Why: on x86
  CPUs without AVX-512 VNNI the fbgemm, x86 and onednn int8 kernels multiply u8 activations
  by s8 weights with ``vpmaddubsw``, which adds each pair of adjacent products in
  *saturating 16-bit* arithmetic; 255 * 128 * 2 = 65280 overflows int16, 127 * 128 * 2 =
  32512 does not.  Measured on a 2-core AMD EPYC (AVX2, no VNNI), torch 2.13: with [0, 255]
  the real int8 layers missed the fake-quant ones by up to 2.6 (a 6.6 output range) under
  fbgemm/x86 and 0.88 under onednn, and the kernels' outputs equal a pair-saturated int16
  emulation to half an output step; with [0, 127] every engine (qnnpack, onednn, x86,
  fbgemm) agrees with fake quant to one output step.  The range is fixed, not chosen by the
  engine of the machine that trains, so one checkpoint deploys right on any CPU (VNNI or
  not, qnnpack or fbgemm); the price is one bit of activation resolution.
- Gradients are straight-through (``torch.fake_quantize_per_*_affine`` have the STE built
  in: gradient 1 inside the representable range, 0 where the value is clipped).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mps.config import ConfigError

__all__ = [
    "WeightFakeQuant",
    "ActFakeQuant",
    "QuantizedLayer",
    "Int8Inference",
    "HalfPrecisionLayer",
    "quantized_from_float",
    "ensure_quantized_engine",
]

_EPS = torch.finfo(torch.float32).eps
AVERAGING_CONSTANT = 0.01
# Engines that run per-channel qint8 conv/linear on CPU, best first (x86/fbgemm on x86-64,
# qnnpack on ARM).
_ENGINE_PREFERENCE = ("x86", "fbgemm", "onednn", "qnnpack")


def _check_bits(bits: int, what: str) -> int:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 8:
        raise ConfigError(f"{what}: bits={bits!r} is not supported; fix: use an integer from 2 to 8")
    return bits


# --------------------------------------------------------------------------- weights
class WeightFakeQuant(nn.Module):
    """Per-output-channel (axis 0) symmetric fake quantization to signed ``bits`` integers.

    Stateless: the scales come from the weight tensor passed in, so they follow the weights
    as they train.
    """

    def __init__(self, bits: int = 8):
        super().__init__()
        self.bits = _check_bits(bits, "WeightFakeQuant")
        self.quant_min = -(2 ** (bits - 1))
        self.quant_max = 2 ** (bits - 1) - 1

    def calculate_qparams(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``(scale float32, zero_point int32)`` for ``weight``, as PyTorch's
        ``PerChannelMinMaxObserver`` (per_channel_symmetric) would compute them."""
        w = weight.detach().to(torch.float32).reshape(weight.shape[0], -1)
        min_val, max_val = torch.aminmax(w, dim=1)
        min_neg = torch.min(min_val, torch.zeros_like(min_val))
        max_pos = torch.max(max_val, torch.zeros_like(max_val))
        max_pos = torch.max(-min_neg, max_pos)
        scale = max_pos / (float(self.quant_max - self.quant_min) / 2)
        scale = torch.max(scale, torch.tensor(_EPS, device=scale.device))
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
        return scale, zero_point

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        scale, zero_point = self.calculate_qparams(weight)
        return torch.fake_quantize_per_channel_affine(
            weight, scale, zero_point, 0, self.quant_min, self.quant_max
        )

    def extra_repr(self) -> str:
        return f"bits={self.bits}, range=[{self.quant_min}, {self.quant_max}], per_channel_symmetric"


# --------------------------------------------------------------------------- activations
class ActFakeQuant(nn.Module):
    """Per-tensor affine fake quantization to unsigned ``bits`` integers ``[0, 2^bits - 1]``.

    The observer is a moving-average min/max (PyTorch's ``MovingAverageMinMaxObserver``) and
    runs only in training mode, so evaluation never shifts the statistics.  Before any
    statistics exist, eval-mode forwards pass the input through unchanged (there is no
    range to quantize to yet).  ``fake_quant=False`` makes a pure observer (stats only, output
    untouched), used for the output range a real int8 layer needs.

    ``reduce_range=True`` quantizes to ``[0, 2^(bits-1) - 1]`` (PyTorch's ``reduce_range``).

    State (``min_val``, ``max_val``, ``initialized``) lives in buffers so it round-trips
    through ``state_dict``.
    """

    min_val: torch.Tensor
    max_val: torch.Tensor
    initialized: torch.Tensor

    def __init__(self, bits: int = 8, averaging_constant: float = AVERAGING_CONSTANT, fake_quant: bool = True,
                 reduce_range: bool = False):
        super().__init__()
        self.bits = _check_bits(bits, "ActFakeQuant")
        # reduce_range: one bit less, as torch's observers do (``[0, 127]`` for quint8), so that
        # non-VNNI x86 int8 kernels cannot saturate (see the module docstring)
        self.reduce_range = bool(reduce_range)
        self.quant_min = 0
        self.quant_max = 2 ** (bits - 1) - 1 if self.reduce_range else 2**bits - 1
        self.averaging_constant = float(averaging_constant)
        self.fake_quant = fake_quant
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        """Update the running min/max with one batch (same arithmetic as PyTorch's observer)."""
        if x.numel() == 0:
            return
        x = x.detach().to(self.min_val.dtype)
        if not bool(self.initialized):
            min_val, max_val = torch.aminmax(x)
        else:
            min_cur, max_cur = torch.aminmax(x)
            min_val = self.min_val + self.averaging_constant * (min_cur - self.min_val)
            max_val = self.max_val + self.averaging_constant * (max_cur - self.max_val)
        self.min_val.copy_(min_val)
        self.max_val.copy_(max_val)
        self.initialized.fill_(True)

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale float32 [1], zero_point int32 [1])`` from the running min/max, as
        ``_calculate_qparams`` for per_tensor_affine computes them."""
        if not bool(self.initialized):
            raise ConfigError(
                "ActFakeQuant has no statistics yet; fix: run calibration batches through the "
                "layer in training mode before asking for quantization parameters"
            )
        min_neg = torch.min(self.min_val, torch.zeros_like(self.min_val))
        max_pos = torch.max(self.max_val, torch.zeros_like(self.max_val))
        scale = (max_pos - min_neg) / float(self.quant_max - self.quant_min)
        scale = torch.max(scale, torch.tensor(_EPS, device=scale.device))
        zero_point = self.quant_min - torch.round(min_neg / scale).to(torch.int)
        zero_point = torch.clamp(zero_point, self.quant_min, self.quant_max)
        return scale.reshape(1), zero_point.reshape(1).to(torch.int32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.observe(x)
        if not self.fake_quant or not bool(self.initialized):
            return x
        scale, zero_point = self.calculate_qparams()
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, self.quant_min, self.quant_max)

    def extra_repr(self) -> str:
        mode = "fake_quant" if self.fake_quant else "observe_only"
        reduced = ", reduce_range" if self.reduce_range else ""
        return f"bits={self.bits}, range=[{self.quant_min}, {self.quant_max}]{reduced}, {mode}"


# --------------------------------------------------------------------------- QAT layer
class QuantizedLayer(nn.Module):
    """A Conv2d or Linear under quantization-aware training.

    forward = fake-quant(input) -> conv/linear with fake-quant weight (bias stays float);
    the output range is observed (not quantized) so :meth:`to_quantized` can build a real
    int8 module.  Holds its own deep copy of the float layer; grouped and depthwise
    convolutions work because the weight quantization is per output channel whatever the
    grouping.  8-bit inputs (the deployable case) are quantized with ``reduce_range`` to
    ``[0, 127]`` so the real int8 kernels of every x86 CPU compute what QAT trained (see the
    module docstring); other widths keep their full range (they never run as real int8).
    The output observer keeps the full ``[0, 255]``: requantizing the int32 result does not
    go through the saturating multiply.
    """

    def __init__(self, layer: nn.Module, bits: int = 8, act_bits: int | None = None):
        super().__init__()
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            raise ConfigError(
                f"QuantizedLayer: cannot quantize {type(layer).__name__}; fix: only nn.Conv2d "
                "and nn.Linear layers take the int8 operator"
            )
        self.bits = _check_bits(bits, "QuantizedLayer")
        self.layer = layer
        self.weight_quant = WeightFakeQuant(bits)
        act_bits = bits if act_bits is None else act_bits
        self.input_quant = ActFakeQuant(act_bits, reduce_range=act_bits == 8)
        self.output_observer = ActFakeQuant(8, fake_quant=False)

    @classmethod
    def from_float(cls, layer: nn.Module, bits: int = 8, act_bits: int | None = None) -> "QuantizedLayer":
        """Wrap a deep copy of ``layer`` (the float model is left untouched). ``act_bits``
        defaults to ``bits``."""
        return cls(copy.deepcopy(layer), bits=bits, act_bits=act_bits)

    @property
    def weight(self) -> torch.Tensor:
        """The float (master) weight."""
        return self.layer.weight

    def quantized_weight(self) -> torch.Tensor:
        """The fake-quantized weight the forward uses."""
        return self.weight_quant(self.layer.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = self.input_quant(x)
        wq = self.quantized_weight()
        if isinstance(self.layer, nn.Conv2d):
            y = self.layer._conv_forward(xq, wq, self.layer.bias)
        else:
            y = F.linear(xq, wq, self.layer.bias)
        if self.training:
            self.output_observer.observe(y)
        return y

    @torch.no_grad()
    def to_quantized(self) -> "Int8Inference":
        """A real int8 module (``torch.ao.nn.quantized``) computing what this layer computes.

        Weights become qint8 per-channel with the same scales the fake quantization uses;
        the input is quantized to quint8 with the observed input range, clamped to the same
        ``[0, 127]`` the fake quantization uses (``reduce_range``: no int16 saturation on
        non-VNNI x86 kernels), and the output requantized with the observed output range.
        Needs 8-bit weights and activations and calibrated observers (run some batches in
        training mode first).  The result is right under every quantized engine torch offers
        (qnnpack, onednn, x86, fbgemm); packed weights belong to the engine selected when
        this is called.
        """
        import torch.ao.nn.quantized as nnq

        if self.bits != 8 or self.input_quant.bits != 8:
            raise ConfigError(
                f"to_quantized: only 8-bit layers convert to a real int8 module (this one has "
                f"{self.bits}-bit weights, {self.input_quant.bits}-bit activations); fix: keep "
                "the fake-quantized layer for other bit widths"
            )
        if not (bool(self.input_quant.initialized) and bool(self.output_observer.initialized)):
            raise ConfigError(
                "to_quantized: the layer is not calibrated; fix: run a few batches through it in "
                "training mode (under torch.no_grad() if only calibrating) before converting"
            )
        ensure_quantized_engine()
        layer = self.layer
        weight = layer.weight.detach().float().cpu()
        w_scale, w_zp = self.weight_quant.calculate_qparams(weight)
        qweight = torch.quantize_per_channel(weight, w_scale.double(), w_zp.long(), 0, torch.qint8)
        bias = None if layer.bias is None else layer.bias.detach().float().cpu()
        out_scale, out_zp = self.output_observer.calculate_qparams()
        if isinstance(layer, nn.Conv2d):
            if layer.padding_mode not in ("zeros", "reflect") or isinstance(layer.padding, str):
                raise ConfigError(
                    f"to_quantized: padding={layer.padding!r}, padding_mode={layer.padding_mode!r} "
                    "has no quantized conv; fix: use numeric padding with 'zeros' or 'reflect'"
                )
            qlayer: nnq.Conv2d | nnq.Linear = nnq.Conv2d(
                layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                bias=layer.bias is not None, padding_mode=layer.padding_mode,
            )
        else:
            qlayer = nnq.Linear(layer.in_features, layer.out_features, bias_=layer.bias is not None)
        qlayer.set_weight_bias(qweight, bias)
        qlayer.scale = float(out_scale)
        qlayer.zero_point = int(out_zp)
        in_scale, in_zp = self.input_quant.calculate_qparams()
        return Int8Inference(qlayer, float(in_scale), int(in_zp),
                             self.input_quant.quant_min, self.input_quant.quant_max)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


def quantized_from_float(layer: nn.Module, bits: int = 8, act_bits: int | None = None) -> QuantizedLayer:
    """The QAT layer for ``layer`` (a deep copy); what the ``int8``/``int4`` operators build."""
    return QuantizedLayer.from_float(layer, bits=bits, act_bits=act_bits)


def ensure_quantized_engine() -> str:
    """Make sure a quantized CPU engine is selected (x86/fbgemm on x86-64, qnnpack on ARM) and
    return its name; packed int8 weights are engine-specific, so this runs before packing."""
    supported = torch.backends.quantized.supported_engines
    current = torch.backends.quantized.engine
    if current in supported and current != "none":
        return current
    for name in _ENGINE_PREFERENCE:
        if name in supported:
            torch.backends.quantized.engine = name
            return name
    raise ConfigError(
        f"this torch build has no quantized CPU engine (supported: {supported}); fix: install a "
        "torch build with fbgemm/x86 or qnnpack, or deploy the fake-quantized layer"
    )


class Int8Inference(nn.Module):
    """Deployment form of a :class:`QuantizedLayer`: float in, quint8 quantize (clamped to
    ``[quant_min, quant_max]``, the range QAT used), a ``torch.ao.nn.quantized`` Conv2d/Linear
    (qint8 per-channel weights, int arithmetic), float out.  CPU only (PyTorch's quantized
    kernels).

    The clamp matters: ``torch.quantize_per_tensor`` to quint8 clips at 255, so an input beyond
    the calibrated range would reach the kernel above 127 and could saturate its int16 pair
    sums on a non-VNNI x86 CPU, where the fake quantization clips it at 127."""

    input_scale: torch.Tensor
    input_zero_point: torch.Tensor

    def __init__(self, qlayer: nn.Module, input_scale: float, input_zero_point: int,
                 quant_min: int = 0, quant_max: int = 255):
        super().__init__()
        self.qlayer = qlayer
        self.register_buffer("input_scale", torch.tensor(float(input_scale), dtype=torch.float64))
        self.register_buffer("input_zero_point", torch.tensor(int(input_zero_point), dtype=torch.int64))
        self.quant_min, self.quant_max = int(quant_min), int(quant_max)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, zero_point = float(self.input_scale), int(self.input_zero_point)
        lo, hi = (self.quant_min - zero_point) * scale, (self.quant_max - zero_point) * scale
        xq = torch.quantize_per_tensor(x.detach().float().cpu().clamp(lo, hi), scale, zero_point, torch.quint8)
        return self.qlayer(xq).dequantize().to(x.device)

    def extra_repr(self) -> str:
        return f"input range=[{self.quant_min}, {self.quant_max}]"


# --------------------------------------------------------------------------- FP16
class HalfPrecisionLayer(nn.Module):
    """FP16 digital path for a Conv2d or Linear, with an fp32 master copy of the weights.

    The master weights stay fp32 so plain SGD on CPU works and small updates are not lost to
    half rounding; every forward rounds input, weight and bias to float16 and returns a
    float32 tensor whose values are float16 numbers.  Gradients flow to the fp32 master
    weights through the casts.

    Mode ``"auto"`` (default) computes natively in half on CUDA and *emulates* on CPU:
    input/weight/bias rounded to half (``.half().float()``), the conv/linear run in fp32 and
    the output rounded to half.  Because a product of two halves is exact in fp32, this is
    fp16 multiplication with fp32 accumulation, which is also how fp16 units with wide
    accumulators (and PyTorch's own CPU half kernels) work; results agree with
    ``layer.half()(x.half())`` to fp16 rounding.  Why emulate on CPU: measured on the project
    machine (torch 2.13 CPU, 2 threads), a 64->64 3x3 conv on a 128x64x16x16 batch took
    39.9 ms in fp32, 927 ms in native half (23x slower) and 88 ms emulated; a depthwise 3x3
    conv 31.9 ms fp32 vs 1028 ms half (32x); a 512->256 linear on 128 rows 8.0 ms fp32 vs
    24.0 ms half (3x).  ``"native"`` / ``"emulate"`` force one path.
    """

    def __init__(self, layer: nn.Module, mode: Literal["auto", "native", "emulate"] = "auto"):
        super().__init__()
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            raise ConfigError(
                f"HalfPrecisionLayer: cannot run {type(layer).__name__} in fp16; fix: only "
                "nn.Conv2d and nn.Linear layers take the fp16 operator"
            )
        if mode not in ("auto", "native", "emulate"):
            raise ConfigError(f"HalfPrecisionLayer: unknown mode {mode!r}; fix: use 'auto', 'native' or 'emulate'")
        self.layer = layer.float()
        self.mode = mode

    @classmethod
    def from_float(cls, layer: nn.Module, mode: Literal["auto", "native", "emulate"] = "auto") -> "HalfPrecisionLayer":
        """Wrap a deep copy of ``layer`` (the float model is left untouched)."""
        return cls(copy.deepcopy(layer), mode=mode)

    @property
    def weight(self) -> torch.Tensor:
        """The fp32 master weight."""
        return self.layer.weight

    def _apply_layer(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, w, b)
        return F.linear(x, w, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        native = self.mode == "native" or (self.mode == "auto" and x.device.type == "cuda")
        w, b = self.layer.weight, self.layer.bias
        if native:
            y = self._apply_layer(x.half(), w.half(), None if b is None else b.half())
            return y.float()
        y = self._apply_layer(x.half().float(), w.half().float(), None if b is None else b.half().float())
        return y.half().float()

    def extra_repr(self) -> str:
        return f"mode={self.mode}"
