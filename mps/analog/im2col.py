"""Eval-mode forward of analog layers with dynamic (per-vector abs-max) scaling, im2col as aihwkit.

The engine of the ``dynamic`` chip model (``analog.input_ranges: dynamic``, the earlier default;
static input ranges run as direct convolutions, :mod:`mps.analog.direct`).

Why: evaluating a mapping under programming noise and drift (search, baselines, calibration,
the evaluate stage) is dominated by aihwkit's eval forward, which spends most of its time in
temporaries of the input/output quantisation and noise management and in copies, not in the
matrix product.  Once aihwkit has programmed and drifted the tiles (``program_analog_weights`` /
``drift_analog_weights``: programming noise, drift, read noise and the global drift
compensation stay aihwkit's), an eval forward is fixed arithmetic on the tile's weights.  This
module computes exactly that arithmetic with fewer passes over memory and reused buffers.

What it mirrors (aihwkit 1.2.0; eval mode, ``is_test=True``), step by step:

* ``AnalogConv2d.forward``: ``unfold`` (im2col, one row per output pixel) - here one strided
  copy from a patch view of the padded input;  ``AnalogLinear.forward``: the tile on ``x``.
* ``TileModuleArray.forward``: split the input columns over the in-tiles, concatenate the
  out-tiles, add the in-tiles' partial results in order, add the digital bias.
* ``TorchInferenceTile.forward`` -> ``joint_forward`` -> ``TorchSimulatorTile.forward`` ->
  ``AnalogMVM.matmul`` (eval mode: no weight modifier), per tile:
  - ``_compute_noise_management`` (ABS_MAX: per input vector, i.e. per im2col row = per
    output pixel and tile, the max |x| over that tile's columns; so a direct convolution
    cannot apply it and the engine keeps im2col);
  - the all-zero shortcut, then the iterative bound management loop (each round halves the
    input scale and redraws the output noise, until no output of the *whole batch* clips);
  - ``_prepare_input``: scale, ``UniformQuantize`` (DAC), clip to ``inp_bound``;
  - the matrix product, ``_finalize_output``: ``out_noise * randn_like`` (same draws, same
    order as aihwkit), ``UniformQuantize`` (ADC), clip to ``out_bound``;
  - final ``out_scale / scale``;
  ``TileWithPeriphery.post_forward``: the mapping scales (``weight_scaling_omega``,
  columnwise); ``InferenceTileWithPeriphery.post_forward``: the drift-compensation ``alpha``;
  ``apply_out_scaling`` (learned out scales) and the tile's digital bias.
  Every elementwise step is the same float operation in the same order as aihwkit's, and the
  matrix product is the same ``mm`` on the same contiguous operands, so outputs equal aihwkit's
  bit for bit, including the output noise (the same ``torch.randn`` draws from the global
  generator, in the same order and number, so the later draws of drift/read noise are unchanged).

It applies to eval-mode layers only, programmed, drifted or not (an unprogrammed tile is just
weights); a layer in train mode runs aihwkit's forward (hardware-aware training stays aihwkit's).
A tile whose configuration this engine does not implement raises :class:`UnsupportedAnalogConfig`
naming the setting (fix: ``analog_engine: aihwkit``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aihwkit.nn import AnalogConv2d, AnalogLinear
from aihwkit.simulator.parameters.enums import AnalogMVType, BoundManagementType, NoiseManagementType
from aihwkit.simulator.tiles.array import TileModuleArray
from aihwkit.simulator.tiles.inference_torch import TorchInferenceTile
from aihwkit.simulator.tiles.torch_tile import TorchSimulatorTile

class UnsupportedAnalogConfig(ValueError):
    """A tile configuration the fast engine does not implement (use ``analog_engine: aihwkit``)."""


def check_tile(tile: nn.Module) -> None:
    """Raise :class:`UnsupportedAnalogConfig` unless the engine computes this tile's eval forward."""
    def fail(setting: str) -> None:
        raise UnsupportedAnalogConfig(f"fast analog engine: {setting} is not implemented; fix: set "
                                      "analog_engine: aihwkit (or the setting back)")

    if type(tile) is not TorchInferenceTile or type(tile.tile) is not TorchSimulatorTile:
        fail(f"tile class {type(tile).__name__} (only TorchInferenceTile / TorchInferenceRPUConfig)")
    cfg = tile.rpu_config
    io = cfg.forward
    if io.mv_type != AnalogMVType.ONE_PASS:
        fail(f"forward.mv_type={io.mv_type}")
    if io.noise_management not in (NoiseManagementType.ABS_MAX, NoiseManagementType.NONE,
                                   NoiseManagementType.MAX, NoiseManagementType.CONSTANT):
        fail(f"forward.noise_management={io.noise_management}")
    if io.bound_management not in (BoundManagementType.ITERATIVE, BoundManagementType.NONE):
        fail(f"forward.bound_management={io.bound_management}")
    for name in ("inp_noise", "inp_asymmetry", "out_asymmetry", "out_noise_std"):
        if getattr(io, name) != 0.0:
            fail(f"forward.{name}={getattr(io, name)}")
    for name in ("inp_sto_round", "out_sto_round"):
        if getattr(io, name):
            fail(f"forward.{name}=True")
    if tile.input_range is not None:
        fail("pre_post.input_range (learned input range)")
    if hasattr(cfg.pre_post, "periph_quant"):
        fail("pre_post.periph_quant (quantized periphery)")
    if tile.analog_bias or tile.in_trans or tile.out_trans:
        fail("analog bias / transposed tiles")
    if getattr(tile.tile, "out_noise_values", None) is not None:
        fail("per-output out-noise values")


# --------------------------------------------------------------------------- one tile
class Workspace:
    """Flat scratch buffers reused across layers and batches (no per-op allocations, no page
    faults from fresh large allocations).  A view is valid until the next ``get`` of that slot."""

    def __init__(self) -> None:
        self._bufs: dict[str, Tensor] = {}

    def get(self, slot: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        n = 1
        for s in shape:
            n *= s
        buf = self._bufs.get(slot)
        if buf is None or buf.numel() < n or buf.dtype != like.dtype or buf.device != like.device:
            buf = torch.empty(max(n, 1), dtype=like.dtype, device=like.device)
            self._bufs[slot] = buf
        return buf[:n].view(shape)


def _quantize_(t: Tensor, res: float, bound: float) -> Tensor:
    """``UniformQuantize.forward`` (deterministic rounding), in place: same ops, same order."""
    res = 1 / res if res > 1.0 else res
    res *= 2 * bound
    return t.div_(res).round_().mul_(res)


def _noise_management(io, rows: Tensor | None, abs_max: Tensor | None):
    """``AnalogMVM._compute_noise_management`` along the last dim; ``abs_max`` may be given
    precomputed (exact: a max is the same whatever the order)."""
    nm = io.noise_management
    if nm == NoiseManagementType.NONE:
        return 1.0
    if nm == NoiseManagementType.CONSTANT:
        return io.nm_thres if io.nm_thres > 0.0 else 1.0
    if nm == NoiseManagementType.ABS_MAX:
        value = abs_max if abs_max is not None else rows.abs().amax(-1, keepdim=True)
    else:  # MAX
        value = rows.amax(-1, keepdim=True)
    if io.nm_thres > 0.0:
        value = torch.clamp(value, max=io.nm_thres)
    return value


def _tile_mvm(tile: TorchInferenceTile, rows, abs_max: Tensor | None, m: int, ws: Workspace,
              columns=None) -> Tensor:
    """``AnalogMVM.matmul`` (eval mode) of one tile on ``m`` input vectors.

    ``rows(scale, out)`` writes ``x * scale`` (the tile's input vectors, scaled; ``scale`` a
    float or an (m, 1) tensor) into ``out`` of shape (m, in_size) and returns it;
    ``columns(weight)``, if given, reorders the weight's columns to the order ``rows`` writes.
    """
    io = tile.rpu_config.forward  # aihwkit re-reads it at every forward (tile.set_config)
    weight = tile.tile.weight.detach()
    if columns is not None:
        weight = columns(weight)
    out_size = weight.shape[0]
    if io.is_perfect:
        return torch.mm(rows(1.0, ws.get("q", (m, weight.shape[1]), weight)), weight.T)
    if io.noise_management == NoiseManagementType.ABS_MAX and abs_max is None:
        abs_max = rows(1.0, ws.get("q", (m, weight.shape[1]), weight)).abs().amax(-1, keepdim=True)
    nm_values = _noise_management(io, None if abs_max is not None else rows(1.0, ws.get("q", (m, weight.shape[1]),
                                                                                       weight)), abs_max)
    if io.noise_management != NoiseManagementType.ABS_MAX:
        abs_max = None  # (only used to skip a no-op input clip)
    if io.inp_noise <= 0.0 and isinstance(nm_values, Tensor) and (nm_values == 0.0).all():
        return torch.zeros((m, out_size), dtype=weight.dtype, device=weight.device)  # aihwkit's shortcut
    if isinstance(nm_values, Tensor):
        nm_values = nm_values.clone()
        nm_values[nm_values <= 0.0] = 1.0
    n_management = io.noise_management != NoiseManagementType.NONE
    b_management = io.bound_management != BoundManagementType.NONE
    inp_bound = io.inp_bound if io.inp_bound > 0 else float("inf")
    out_bound = io.out_bound if io.out_bound > 0 else float("inf")
    inp_res = io.inp_res
    if inp_res > 0:
        inp_res = 1 / inp_res if inp_res > 1.0 else inp_res
        inp_res *= 2.0 * io.inp_bound
    reduction = 0.5
    while True:
        reduction *= 2.0
        scale = 1.0
        if n_management:
            scale /= nm_values
        if b_management:
            scale /= reduction
        q = rows(scale, ws.get("q", (m, weight.shape[1]), weight))
        if io.inp_res > 0:
            _quantize_(q, io.inp_res, io.inp_bound)
        if not _within(abs_max, scale, io, inp_bound):
            q.clamp_(-inp_bound, inp_bound)
        out = torch.mm(q, weight.T)
        if io.out_noise > 0.0:
            noise = torch.randn(out.shape, dtype=out.dtype, device=out.device, out=ws.get("noise", out.shape, out))
            out.add_(noise.mul_(io.out_noise))
        if io.out_res > 0:
            _quantize_(out, io.out_res, io.out_bound)
        lo, hi = torch.aminmax(out)
        not_clipping = bool(hi <= out_bound) and bool(lo >= -out_bound)
        out.clamp_(-out_bound, out_bound)
        if not b_management:
            break
        if (not_clipping or reduction > io.max_bm_factor
                or (inp_res > 0.0 and reduction > io.max_bm_res / inp_res)):
            break
    if not isinstance(scale, float) or scale != 1.0 or io.out_scale != 1.0:
        out *= io.out_scale / scale
    return out


def _within(abs_max: Tensor | None, scale, io, bound: float) -> bool:
    """True when clipping the quantised input to ``inp_bound`` provably changes nothing: the
    largest |x * scale| of a row is fl(abs_max * scale) (rounding is monotonic) and quantising
    is monotonic, so the row's largest |q| is the quantised fl(abs_max * scale)."""
    if abs_max is None or io.nm_thres > 0.0 or not isinstance(scale, Tensor):
        return False
    top = abs_max * scale
    if io.inp_res > 0:
        _quantize_(top, io.inp_res, io.inp_bound)
    return bool(top.max() <= bound)


def _tile_post(tile: TorchInferenceTile, out: Tensor, bias: bool = True) -> Tensor:
    """``post_forward`` (mapping scales, drift-compensation alpha), ``apply_out_scaling`` and the
    tile's own digital bias, in aihwkit's order (in place)."""
    if tile.mapping_scales is not None:
        out *= tile.get_mapping_scales().view(1, -1)
    if getattr(tile.rpu_config, "drift_compensation", None) is not None:
        out *= tile.alpha
    if tile.out_scaling_alpha is not None:
        out *= tile.out_scaling_alpha.view(1, -1)
    if bias and tile.digital_bias and getattr(tile, "bias", None) is not None:
        out += tile.bias.view(1, -1)
    return out


def _module_forward(analog_module: nn.Module, rows_for, abs_max_for, m: int, ws: Workspace) -> Tensor:
    """``TileModuleArray.forward`` / ``TorchInferenceTile.forward`` on ``m`` input vectors.

    ``rows_for(start, stop)`` returns the ``rows`` writer and ``columns`` of :func:`_tile_mvm` for
    input columns [start, stop); ``abs_max_for(start, stop, io)`` their per-row max |x| (m, 1), or None to compute it
    from the rows.
    """
    if isinstance(analog_module, TorchInferenceTile):
        tiles = [[analog_module]]
        in_sizes = [analog_module.in_size]
        bias = None
    elif isinstance(analog_module, TileModuleArray):
        tiles = analog_module.array
        in_sizes = analog_module.in_sizes
        bias = analog_module.bias
    else:
        raise UnsupportedAnalogConfig(f"fast analog engine: analog module {type(analog_module).__name__} is not "
                                      "implemented; fix: set analog_engine: aihwkit")
    result = None
    start = 0
    for in_size, in_tiles in zip(in_sizes, tiles):
        stop = start + in_size
        rows, columns = rows_for(start, stop)
        abs_max = abs_max_for(start, stop, in_tiles[0].rpu_config.forward)
        parts = []
        for tile in in_tiles:
            check_tile(tile)
            if tile.rpu_config.forward.noise_management != in_tiles[0].rpu_config.forward.noise_management:
                abs_max = None
            parts.append(_tile_post(tile, _tile_mvm(tile, rows, abs_max, m, ws, columns)))
        part = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
        result = part if result is None else result.add_(part)
        start = stop
    if bias is not None:
        result = result + bias.view(1, -1)
    return result


# --------------------------------------------------------------------------- layers
def linear_forward(layer: AnalogLinear, x: Tensor, ws: Workspace) -> Tensor:
    """``AnalogLinear.forward`` in eval mode."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])

    def rows_for(a: int, b: int):
        cols = x2[:, a:b]
        return (lambda scale, out: torch.mul(cols, scale, out=out)), None

    def abs_max_for(a: int, b: int, io):
        return None

    out = _module_forward(layer.analog_module, rows_for, abs_max_for, x2.shape[0], ws)
    return out.view(*shape[:-1], out.shape[-1])


def conv2d_forward(layer: AnalogConv2d, x: Tensor, ws: Workspace, exact_order: bool = False) -> Tensor:
    """``AnalogConv2d.forward`` (im2col path) in eval mode.

    The im2col rows are read from a strided patch view of the padded input and written once,
    already scaled, into the quantisation buffer.  A tile of whole input channels takes them
    from the channels-last input in (kernel row, kernel column, channel) order, with its weight's
    columns permuted to match: the copy then runs over contiguous channels, about 8x faster than
    in ``unfold``'s (channel, kernel row, kernel column) order, whose innermost run is one kernel
    row.  Elementwise the result is the same; only the matrix product sums its K terms in another
    order (float rounding, ~1e-7 relative), which can move an output across an ADC rounding
    boundary (one ADC step, on rare elements; see tests/test_analog_im2col.py).  With
    ``exact_order`` (and for tiles splitting a channel) the rows are in ``unfold``'s order and
    every output equals aihwkit's bit for bit.
    """
    if x.dim() != 4:
        raise UnsupportedAnalogConfig("fast analog engine: unbatched conv input; fix: analog_engine: aihwkit")
    n, c = x.shape[:2]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = layer.kernel_size, layer.stride, layer.padding, layer.dilation
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    k2 = kh * kw
    abs_in = None
    if exact_order:
        xp = F.pad(x, (pw, pw, ph, ph)) if (ph or pw) else x
        patches = xp.unfold(2, span_h, sh).unfold(3, span_w, sw)[..., ::dh, ::dw]  # (n, c, ho, wo, kh, kw)
        patches = patches.permute(0, 2, 3, 1, 4, 5)  # unfold's row order (c, kh, kw)
    else:
        xl = x.permute(0, 2, 3, 1)  # channels last: a view when x is (aihwkit's conv output is)
        xl = F.pad(xl, (0, 0, pw, pw, ph, ph)) if (ph or pw) else xl
        patches = xl.unfold(1, span_h, sh).unfold(2, span_w, sw)[..., ::dh, ::dw]  # (n, ho, wo, c, kh, kw)
    ho, wo = patches.shape[1], patches.shape[2]
    m = n * ho * wo

    def rows_for(a: int, b: int):
        if a % k2 == 0 and b % k2 == 0:  # whole channels: one strided copy from the patch view
            c0, c1 = a // k2, b // k2
            if exact_order:
                view, shape, columns = patches[:, :, :, c0:c1], (n, ho, wo, c1 - c0, kh, kw), None
            else:
                view = patches[:, :, :, c0:c1].permute(0, 1, 2, 4, 5, 3)  # (n, ho, wo, kh, kw, c)
                shape = (n, ho, wo, kh, kw, c1 - c0)

                def columns(w: Tensor) -> Tensor:
                    return w.view(w.shape[0], c1 - c0, kh, kw).permute(0, 2, 3, 1).reshape(w.shape[0], -1)

            def write(scale, out):
                s = scale.view(n, ho, wo, 1, 1, 1) if isinstance(scale, Tensor) else scale
                torch.mul(view, s, out=out.view(shape))
                return out
            return write, columns
        # a tile splitting a channel: unfold's order (a copy of the layer's rows)
        cols = patches.reshape(m, c * k2)[:, a:b]
        return (lambda scale, out: torch.mul(cols, scale, out=out)), None

    def abs_max_for(a: int, b: int, io):
        nonlocal abs_in
        if io.noise_management != NoiseManagementType.ABS_MAX or a % k2 or b % k2:
            return None
        # max |x| over a patch and a channel range = max-pool of the channel max of |x| (exact;
        # the zero padding never exceeds a max of absolute values)
        if abs_in is None:
            abs_in = x.abs()
        chan_max = abs_in[:, a // k2:b // k2].amax(1, keepdim=True)
        pooled = F.max_pool2d(chan_max, (kh, kw), (sh, sw), (ph, pw), (dh, dw))
        return pooled.reshape(m, 1)

    out = _module_forward(layer.analog_module, rows_for, abs_max_for, m, ws)
    # aihwkit returns the transposed (channels-last strided) view; same layout here
    return out.view(n, ho * wo, -1).transpose(-1, -2).view(n, -1, ho, wo)
