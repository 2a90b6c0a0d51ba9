"""Analog convolution with static input ranges as direct convolutions: training and inference.

Why: aihwkit computes an ``AnalogConv2d`` by ``unfold`` (im2col), one input vector per output
pixel, because its per-vector noise management (ABS_MAX) needs each patch's maximum.  With the
standard HWA chip model (static input range per tile, no noise or bound management: Rasch et
al., Nat. Commun. 2023; aihwkit's ``StandardHWATrainingPreset``) every non-ideality of a tile is
elementwise on the input pixels (clamp to the range, divide by it, DAC rounding) or on the
output pixels (output noise, ADC rounding, output bound, scales, bias), and the weight noise is
one draw per forward.  So each tile is a plain ``conv2d`` of its channels of the input with its
weights: about 2x an FP32 step on a CPU instead of 10-14x, and no im2col memory on a GPU.

What it computes, per tile, is what aihwkit 1.2.0's torch tile computes for this configuration
(``AnalogConv2d.forward`` -> ``TileModuleArray.forward`` -> ``TorchInferenceTile.forward`` ->
``TileWithPeriphery.joint_forward`` -> ``TorchSimulatorTile.forward`` -> ``AnalogMVM.matmul``), and
it calls aihwkit's own pieces for every step that is not the matrix product:

* ``apply_input_range`` (data-initialised range in training: ``init_from_data`` batches of
  ``init_std_alpha`` x the std of the tile's im2col input; computed here exactly from the pixels
  and how many patches each pixel falls in, see :func:`_unfold_moments`), then the clamp;
* ``InputRangeForward``'s input-range gradient (clipped inputs push the range out, ``decay``
  pulls it in while more than ``input_min_percentage`` of the inputs are inside): its one-sided
  sum runs over *copies* of a pixel in the im2col matrix, so :class:`_TileConv` computes it per
  kernel offset from the output gradient, exactly (no pixel-level shortcut);
* ``TorchSimulatorTile.modify_weight`` (HWA weight noise) is called as it is; ``AnalogMVM``'s
  ``_prepare_input`` (DAC) and ``_finalize_output`` (output noise, ADC, bound) are the two small
  autograd functions :class:`_Dac` and :class:`_Adc`: the same steps with aihwkit's
  ``UniformQuantize`` and aihwkit's gradient rules, on the pixel and output tensors, without the
  temporaries (and the unused clipping test) that made them a third of a training step;
* ``post_forward`` (input range x mapping scales, drift-compensation ``alpha`` in eval mode),
  ``apply_out_scaling`` and the digital bias, in aihwkit's order.

A tile whose columns split a channel's kernel (``in_channels * kh * kw`` over ``tile_cols``)
convolves the channels it touches with its weight slice placed in a zero-masked kernel.
The equivalence with aihwkit (outputs and the gradients of weights, biases and input ranges
with the noise off; mean and std per output with the noise on) is tests/test_analog_direct.py.
Linear layers have no im2col: they run aihwkit's own forward.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aihwkit.nn import AnalogConv2d
from aihwkit.simulator.parameters.enums import (AnalogMVType, BoundManagementType, NoiseManagementType,
                                                WeightModifierType)
from aihwkit.simulator.tiles.array import TileModuleArray
from aihwkit.simulator.tiles.inference_torch import TorchInferenceTile
from aihwkit.simulator.tiles.torch_tile import TorchSimulatorTile
from aihwkit.simulator.tiles.utils import UniformQuantize

from mps.analog.im2col import UnsupportedAnalogConfig, _quantize_


def _fail(setting: str) -> None:
    raise UnsupportedAnalogConfig(f"direct analog engine: {setting} is not implemented; fix: set "
                                  "analog_engine: aihwkit (or the setting back)")


def has_static_ranges(layer: nn.Module) -> bool:
    """Whether every tile of an analog layer has a static input range (the direct engine's case)."""
    return all(getattr(t, "input_range", None) is not None for t in layer.analog_tiles())


def check_tile(tile: nn.Module) -> None:
    """Raise :class:`UnsupportedAnalogConfig` unless :func:`conv2d_forward` computes this tile."""
    if type(tile) is not TorchInferenceTile or type(tile.tile) is not TorchSimulatorTile:
        _fail(f"tile class {type(tile).__name__} (only TorchInferenceTile / TorchInferenceRPUConfig)")
    if tile.input_range is None:
        _fail("a tile without a static input range (pre_post.input_range.enable=False)")
    io = tile.rpu_config.forward
    if io.mv_type != AnalogMVType.ONE_PASS:
        _fail(f"forward.mv_type={io.mv_type}")
    if io.noise_management not in (NoiseManagementType.NONE, NoiseManagementType.CONSTANT):
        _fail(f"forward.noise_management={io.noise_management} with static input ranges")
    if io.bound_management != BoundManagementType.NONE:
        _fail(f"forward.bound_management={io.bound_management} with static input ranges")
    for name in ("inp_noise", "inp_asymmetry", "out_asymmetry", "out_noise_std", "w_noise"):
        if getattr(io, name, 0.0) != 0.0:
            _fail(f"forward.{name}={getattr(io, name)}")
    if io.inp_sto_round:
        _fail("forward.inp_sto_round=True")  # a random rounding per im2col copy, not per pixel
    if tile.rpu_config.modifier.per_batch_sample and tile.rpu_config.modifier.type not in (
            WeightModifierType.NONE, WeightModifierType.COPY):
        _fail("modifier.per_batch_sample=True")
    if tile.rpu_config.pre_post.input_range.manage_output_clipping:
        _fail("pre_post.input_range.manage_output_clipping=True")
    if hasattr(tile.rpu_config.pre_post, "periph_quant"):
        _fail("pre_post.periph_quant (quantized periphery)")
    if tile.analog_bias or tile.in_trans or tile.out_trans:
        _fail("analog bias / transposed tiles")


# --------------------------------------------------------------------------- im2col statistics
def _multiplicity(shape_hw: tuple[int, int], mask: Tensor, geom: dict[str, Any]) -> Tensor:
    """How many im2col columns of a tile each input pixel fills: (channels, h, w).

    ``mask`` (channels, kh, kw) marks the tile's columns; the count is the transposed convolution
    of an all-ones output with it (zero padding fills the rest of the patches)."""
    c = mask.shape[0]
    ho, wo = geom["out_hw"]
    ones = torch.ones((1, c, ho, wo), dtype=mask.dtype, device=mask.device)
    # depthwise: each channel's own kernel mask
    return torch.nn.grad.conv2d_input((1, c, *shape_hw), mask.unsqueeze(1), ones, stride=geom["stride"],
                                      padding=geom["padding"], dilation=geom["dilation"], groups=c)[0]


def _unfold_moments(x: Tensor, mult: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Mean and (unbiased) std of the tile's im2col input, padding zeros included, from the pixels:
    what ``values.std()`` gives on aihwkit's unfolded input, up to float rounding."""
    xd = x.detach().double()
    m = mult.double()
    s1 = (xd * m).sum()
    s2 = (xd * xd * m).sum()
    mean = s1 / count
    var = (s2 - s1 * mean) / max(count - 1, 1)
    return mean, var.clamp_min(0.0).sqrt()


# --------------------------------------------------------------------------- the tile's convolution
class _Dac(torch.autograd.Function):
    """``AnalogMVM._prepare_input`` for the static-range tile (no input noise or asymmetry), in one
    buffer: x scale, ``UniformQuantize`` (deterministic rounding; straight-through gradient), clamp
    to ``inp_bound`` with aihwkit's gradient rule (zero where the quantised value lies outside)."""

    @staticmethod
    def forward(ctx, xn: Tensor, scale: float, io) -> Tensor:
        q = xn * scale if scale != 1.0 else xn
        if io.inp_res > 0:
            q = UniformQuantize.apply(q, io.inp_res, io.inp_bound, False)  # aihwkit's quantiser (a copy)
        elif q is xn:
            q = xn.clone()
        bound = io.inp_bound if io.inp_bound > 0 else float("inf")
        outside = None
        if bool(q.abs().max() > bound):
            outside = q.abs() > bound
            q.clamp_(-bound, bound)
        ctx.scale = scale
        ctx.save_for_backward(outside)
        return q

    @staticmethod
    def backward(ctx, grad: Tensor):
        (outside,) = ctx.saved_tensors
        grad = grad * ctx.scale if ctx.scale != 1.0 else grad
        if outside is not None:
            grad = grad.masked_fill(outside, 0.0)
        return grad, None, None


class _Adc(torch.autograd.Function):
    """``AnalogMVM._finalize_output`` for the static-range tile, in place on the product: output
    noise (``out_noise`` x standard normal, :func:`_output_noise`), ``UniformQuantize`` (ADC,
    straight-through), clamp to ``out_bound`` (no gradient where the value lay outside)."""

    @staticmethod
    def forward(ctx, out: Tensor, io) -> Tensor:
        if io.out_noise > 0.0:
            out.add_(_output_noise(out, io.out_noise))
        if io.out_res > 0:
            out.copy_(UniformQuantize.apply(out, io.out_res, io.out_bound, io.out_sto_round))  # aihwkit's quantiser
        bound = io.out_bound if io.out_bound > 0 else float("inf")
        outside = None
        if bool(out.abs().max() > bound):
            outside = out.abs() > bound
            out.clamp_(-bound, bound)
        ctx.mark_dirty(out)
        ctx.save_for_backward(outside)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        (outside,) = ctx.saved_tensors
        if outside is not None:
            grad = grad.masked_fill(outside, 0.0)
        return grad, None


def _output_noise(out: Tensor, std: float) -> Tensor:
    """``std`` x standard normal draws for an (n, channels, h, w) output, drawn in aihwkit's
    order (its im2col output is (n, h x w, channels)): the same numbers from the same seed, and
    the generator left where aihwkit leaves it, so later programming and drift draws agree too."""
    n, c, h, w = out.shape
    noise = torch.randn((n, h * w, c), dtype=out.dtype, device=out.device).mul_(std)
    return noise.transpose(1, 2).view(n, c, h, w)


class _TileConv(torch.autograd.Function):
    """``conv2d(q, w)`` whose backward also adds ``InputRangeForward``'s input-range gradient.

    aihwkit's input-range gradient is, over the *im2col elements* of the clipped inputs,
    ``sum(clamp(upper * d, max=0)) - sum(clamp(lower * d, min=0))`` with ``d`` the gradient at
    the clamped input, then x range x gradient_scale (relative) plus the decay term.  A pixel has
    one copy per patch it is in, each with its own ``d``; the per-copy ``d`` of kernel offset
    (i, j) is the output gradient at the patches using that offset times the weights of that
    offset, so the sum is one matrix product per offset (the FLOPs of the input gradient).
    """

    @staticmethod
    def forward(ctx, q: Tensor, weight: Tensor, input_range: Tensor, geom: dict, ir_info: dict) -> Tensor:
        ctx.save_for_backward(q, weight)
        ctx.geom = geom
        ctx.ir_info = ir_info
        ctx.ir_shape = input_range.shape
        return F.conv2d(q, weight, None, geom["stride"], geom["padding"], geom["dilation"])

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        q, weight = ctx.saved_tensors
        geom = ctx.geom
        need_q, need_w, need_ir = ctx.needs_input_grad[:3]
        grad_q, grad_w = torch.ops.aten.convolution_backward(
            grad_out, q, weight, None, list(geom["stride"]), list(geom["padding"]), list(geom["dilation"]),
            False, [0, 0], 1, [need_q, need_w, False])[:2]
        grad_ir = None
        if need_ir:
            grad_ir = _range_gradient(grad_out, weight, geom, ctx.ir_info).reshape(ctx.ir_shape)
        return grad_q, grad_w, grad_ir, None, None


def _range_gradient(grad_out: Tensor, weight: Tensor, geom: dict, info: dict) -> Tensor:
    """``InputRangeForward.backward``'s input-range gradient, summed over im2col copies (see
    :class:`_TileConv`).  ``info["signed"]`` (n, h, w, c), padded and channels-last, is +f at
    inputs clipped at the top, -f at the bottom and 0 elsewhere, where f >= 0 turns the gradient
    at the DAC input into the gradient at the clamped input; so a copy's term
    ``clamp(upper * d, max=0) - clamp(lower * d, min=0)`` is ``clamp(signed * d_q, max=0)``."""
    params, ir = info["params"], info["range"]
    signed = info["signed"]
    n, cout, ho, wo = grad_out.shape
    (sh, sw), (dh, dw) = geom["stride"], geom["dilation"]
    d = grad_out.permute(0, 2, 3, 1).reshape(-1, cout)
    kh, kw = weight.shape[2:]
    total = grad_out.new_zeros(())
    if info["clipped"]:
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
                cols = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
                g = (d @ weight[:, :, i, j]).view(n, ho, wo, -1)
                total = total + g.mul_(signed[:, rows, cols]).clamp_(max=0.0).sum()
    grad = total
    if params.gradient_relative:
        grad = grad * ir.detach().reshape(()) * params.gradient_scale
    if params.decay > 0:
        grad = grad + params.decay * ir.detach().reshape(()) * float(info["inside"] > params.input_min_percentage)
    return grad


def _tile_conv2d(tile: TorchInferenceTile, x: Tensor, start: int, stop: int, layer: AnalogConv2d,
                 geom: dict) -> Tensor:
    """One tile's share of the layer: input columns [start, stop) of the im2col order
    (channel, kernel row, kernel column), all of the tile's output channels."""
    kh, kw = layer.kernel_size
    k2 = kh * kw
    c0, c1 = start // k2, -(-stop // k2)
    xs = x[:, c0:c1]
    cfg = tile.rpu_config
    tile.tile.set_config(cfg)  # as TorchInferenceTile.forward: the noise levels set since take effect
    io, ir_params = cfg.forward, cfg.pre_post.input_range
    ir = tile.input_range
    training = tile.training
    cols = stop - start
    n = x.shape[0]
    ho, wo = geom["out_hw"]
    count = n * ho * wo * cols  # im2col elements of this tile
    key = (tuple(xs.shape[1:]), start, stop, str(x.device), x.dtype)
    cache = tile.__dict__.setdefault("_mps_direct_cache", {})
    if key not in cache:
        mask = torch.zeros((c1 - c0) * k2, dtype=x.dtype, device=x.device)
        mask[start - c0 * k2:stop - c0 * k2] = 1.0
        cache[key] = _multiplicity(tuple(xs.shape[2:]), mask.view(c1 - c0, kh, kw), geom)
    mult = cache[key]

    # apply_input_range: data initialisation in training (aihwkit: update_from_data = not is_test)
    if training and tile.input_range_update_idx < ir_params.init_from_data:
        idx = tile.input_range_update_idx
        _, std = _unfold_moments(xs, mult, count)
        std = std.to(ir.dtype)
        if std > 0.0:
            ir.data = (ir.data * idx + ir_params.init_std_alpha * std) / (idx + 1)
            tile.input_range_update_idx.data += 1
        ir.data = ir.data.abs()
    bound = abs(ir.item())
    scale, scaling = 1.0, False
    if io.noise_management == NoiseManagementType.CONSTANT and io.nm_thres > 0 and io.nm_thres != 1.0:
        scale, scaling = 1.0 / io.nm_thres, True
    pad_before, pad_after = start - c0 * k2, c1 * k2 - stop
    if not training and not torch.is_grad_enabled():
        w4 = F.pad(tile.tile.weight.detach(), (pad_before, pad_after)).view(-1, c1 - c0, kh, kw)
        return _eval_tile(tile, xs, w4, bound, scale, scaling, geom)
    xc = torch.clamp(xs, min=-bound, max=bound)

    # pre_forward's division by the range, then AnalogMVM's input preparation (DAC)
    xn = xc / ir.view(1, 1, 1, 1)
    q = _Dac.apply(xn, scale, io)

    # weights: the tile's (out, cols) matrix, HWA-noisy in training, in a zero-masked kernel
    weight = tile.tile.weight
    if training:
        weight = TorchSimulatorTile.modify_weight(weight, tile.tile._modifier, n)
    w4 = F.pad(weight, (pad_before, pad_after)).view(weight.shape[0], c1 - c0, kh, kw)

    ir_info = None
    if training and torch.is_grad_enabled() and isinstance(ir, nn.Parameter) and ir.requires_grad:
        ir_info = _range_info(xc, ir, ir_params, io, mult, count, scale, geom)
    out = _TileConv.apply(q, w4, ir if ir_info is not None else ir.detach(), geom, ir_info)

    # AnalogMVM: output noise, ADC, bound; then out_scale / scale
    out = _Adc.apply(out, io)
    if scaling or io.out_scale != 1.0:
        out = out * (io.out_scale / scale)

    return _periphery(tile, out, training, inplace=False)


def _eval_tile(tile: TorchInferenceTile, xs: Tensor, w4: Tensor, bound: float, scale: float, scaling: bool,
               geom: dict) -> Tensor:
    """:func:`_tile_conv2d` without autograd (eval mode): the same float operations in the same
    order, in place on two buffers (the DAC input, the output) instead of a temporary per step."""
    io = tile.rpu_config.forward
    q = torch.clamp(xs, min=-bound, max=bound).div_(tile.input_range.view(1, 1, 1, 1))
    if scaling:
        q.mul_(scale)
    if io.inp_res > 0:
        _quantize_(q, io.inp_res, io.inp_bound)
    inp_bound = io.inp_bound if io.inp_bound > 0 else float("inf")
    q.clamp_(-inp_bound, inp_bound)
    out = F.conv2d(q, w4, None, geom["stride"], geom["padding"], geom["dilation"])
    if io.out_noise > 0.0:
        out.add_(_output_noise(out, io.out_noise))
    if io.out_res > 0:
        _quantize_(out, io.out_res, io.out_bound)
    out_bound = io.out_bound if io.out_bound > 0 else float("inf")
    out.clamp_(-out_bound, out_bound)
    if scaling or io.out_scale != 1.0:
        out.mul_(io.out_scale / scale)
    return _periphery(tile, out, training=False, inplace=True)


def _periphery(tile: TorchInferenceTile, out: Tensor, training: bool, inplace: bool) -> Tensor:
    """After the MVM, in aihwkit's order: ``post_forward`` (input range x mapping scales),
    ``InferenceTileWithPeriphery``'s drift compensation (eval mode only), ``apply_out_scaling``
    and the digital bias.  ``inplace`` (no autograd) overwrites ``out``; the values are the same."""
    mul = Tensor.mul_ if inplace else Tensor.mul
    post = tile.input_range.view(1, 1, 1, 1)
    if tile.mapping_scales is not None:
        post = post * tile.get_mapping_scales().view(1, -1, 1, 1)
    out = mul(out, post)
    if not training and getattr(tile.rpu_config, "drift_compensation", None) is not None:
        out = mul(out, _per_channel(tile.alpha))
    if tile.out_scaling_alpha is not None:
        out = mul(out, tile.out_scaling_alpha.view(1, -1, 1, 1))
    if tile.digital_bias and getattr(tile, "bias", None) is not None:
        out = (Tensor.add_ if inplace else Tensor.add)(out, tile.bias.view(1, -1, 1, 1))
    return out


def _per_channel(alpha) -> Tensor:
    """The drift-compensation factor against (n, channels, h, w) outputs: a scalar (global
    compensation) or one per output channel (``PerColumnDriftCompensation``)."""
    alpha = torch.as_tensor(alpha)
    return alpha.view(1, -1, 1, 1) if alpha.numel() > 1 else alpha


def _range_info(xc: Tensor, ir: Tensor, params, io, mult: Tensor, count: int, scale: float, geom: dict) -> dict:
    """What :func:`_range_gradient` needs: the signed, padded, channels-last clip map, whether
    anything clips, and the share of im2col inputs inside the range (the decay term)."""
    (ph, pw) = geom["padding"]
    with torch.no_grad():
        irv = ir.detach().view(1, 1, 1, 1)
        sign = (xc >= irv).to(xc.dtype) - (xc <= -irv).to(xc.dtype)
        clipped = float((sign.abs() * mult).sum())
        # aihwkit: (x_input.abs() < input_range).float().mean() over im2col, padding zeros (inside) included
        inside = (count - clipped) / count
        signed = sign.permute(0, 2, 3, 1)
        signed = F.pad(signed, (0, 0, pw, pw, ph, ph)) if (ph or pw) else signed.contiguous()
        signed.mul_(_dac_factor(ir, scale, io))
    return {"signed": signed, "clipped": clipped > 0, "params": params, "range": ir, "inside": inside}


def _dac_factor(ir: Tensor, scale: float, io) -> float:
    """d loss / d clamped input = d loss / d q x this, at a clipped input (clamped = +-range, so
    its DAC input is +-scale): the quantiser passes the gradient straight through, aihwkit's clamp
    of q to ``inp_bound`` masks it if the quantised value lies outside, and q = clamped / range x
    scale.  (Inputs inside the range have no term of their own.)"""
    pre = torch.tensor([scale, -scale], dtype=ir.dtype)
    if io.inp_res > 0:
        pre = UniformQuantize.apply(pre, io.inp_res, io.inp_bound, False)
    b = io.inp_bound if io.inp_bound > 0 else float("inf")
    if not bool(((pre >= -b) & (pre <= b)).all()):
        return 0.0
    return scale / float(ir.detach())


# --------------------------------------------------------------------------- layers
def conv_geometry(layer: AnalogConv2d, x: Tensor) -> dict[str, Any]:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = layer.kernel_size, layer.stride, layer.padding, layer.dilation
    h, w = x.shape[-2:]
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return {"stride": (sh, sw), "padding": (ph, pw), "dilation": (dh, dw), "out_hw": (ho, wo)}


def conv2d_forward(layer: AnalogConv2d, x: Tensor) -> Tensor:
    """``AnalogConv2d.forward`` for tiles with static input ranges, as direct convolutions, in
    training (with autograd) and in eval mode alike."""
    if x.dim() != 4:
        _fail("unbatched conv input")
    if getattr(layer, "padding_mode", "zeros") != "zeros":
        _fail(f"padding_mode={layer.padding_mode}")
    module = layer.analog_module
    if isinstance(module, TorchInferenceTile):
        rows, in_sizes, bias = [[module]], [module.in_size], None
    elif isinstance(module, TileModuleArray):
        rows, in_sizes, bias = module.array, module.in_sizes, module.bias
    else:
        _fail(f"analog module {type(module).__name__}")
    geom = conv_geometry(layer, x)
    result = None
    start = 0
    for in_size, tiles in zip(in_sizes, rows):
        stop = start + in_size
        parts = []
        for tile in tiles:
            check_tile(tile)
            parts.append(_tile_conv2d(tile, x, start, stop, layer, geom))
        part = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
        result = part if result is None else result + part
        start = stop
    if bias is not None:
        result = result + bias.view(1, -1, 1, 1)
    return result


