"""Digital-precision quantizers (mps.quant) checked against PyTorch's own quantization."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn
from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver, PerChannelMinMaxObserver

from mps.config import ConfigError
from mps.quant import (
    ActFakeQuant,
    HalfPrecisionLayer,
    Int8Inference,
    QuantizedLayer,
    WeightFakeQuant,
    quantized_from_float,
)

# torch.quantize_per_* warn that they are deprecated (pytorch#184982); the int8 path still
# uses them because torch.ao.nn.quantized does.
pytestmark = pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _calibrate(q: nn.Module, batches: list[torch.Tensor]) -> None:
    q.train()
    with torch.no_grad():
        for x in batches:
            q(x)
    q.eval()


# --------------------------------------------------------------------------- weights
def test_weight_fake_quant_equals_torch_per_channel_symmetric():
    g = _gen(0)
    # channels with very different ranges, one all-zero channel (eps guard), 4-D and 2-D
    for shape in [(12, 5, 3, 3), (7, 33)]:
        w = torch.randn(shape, generator=g) * torch.rand((shape[0],) + (1,) * (len(shape) - 1), generator=g) * 4
        w[1] = 0.0
        ref = FakeQuantize(observer=PerChannelMinMaxObserver, quant_min=-128, quant_max=127,
                           dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)
        ours = WeightFakeQuant(8)
        assert torch.equal(ours(w), ref(w))
        scale, zp = ours.calculate_qparams(w)
        assert torch.equal(scale, ref.scale)
        assert torch.equal(zp, ref.zero_point.to(zp.dtype))
        assert torch.all(ours(w)[1] == 0)


def test_weight_scales_follow_current_weights():
    wq = WeightFakeQuant(8)
    w = torch.randn(4, 6, generator=_gen(1))
    s1, _ = wq.calculate_qparams(w)
    s2, _ = wq.calculate_qparams(w * 3)
    assert torch.allclose(s2, 3 * s1)


def test_four_bit_weights_have_at_most_16_levels_per_channel():
    w = torch.randn(8, 4, 3, 3, generator=_gen(2))
    wq = WeightFakeQuant(4)(w)
    scale, _ = WeightFakeQuant(4).calculate_qparams(w)
    for c in range(w.shape[0]):
        levels = torch.unique(wq[c])
        assert 2 < len(levels) <= 16
        ints = levels / scale[c]
        assert torch.allclose(ints, ints.round(), atol=1e-4)
        assert ints.min() >= -8 - 1e-4 and ints.max() <= 7 + 1e-4


def test_weight_ste_passes_gradient():
    w = torch.randn(4, 6, generator=_gen(3), requires_grad=True)
    WeightFakeQuant(8)(w).sum().backward()
    # symmetric range [-128, 127] at scale max/127.5: only +max rounds past 127 and clips
    assert w.grad is not None and (w.grad == 1).float().mean() > 0.8


# --------------------------------------------------------------------------- activations
def test_act_fake_quant_equals_torch_moving_average_over_train_then_eval():
    g = _gen(4)
    ref = FakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                       dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    ours = ActFakeQuant(8).train()
    for i in range(6):  # drifting statistics, including an all-positive batch
        x = torch.randn(16, 10, generator=g) * (1 + i) + 0.5 * i
        if i == 3:
            x = x.abs() + 1
        assert torch.equal(ours(x), ref(x))
        scale, zp = ours.calculate_qparams()
        assert torch.equal(scale, ref.scale) and torch.equal(zp, ref.zero_point)
    ours.eval()
    ref.disable_observer()  # torch's FakeQuantize needs this; ours freezes in eval
    frozen = (ours.min_val.clone(), ours.max_val.clone())
    for _ in range(3):
        x = torch.randn(16, 10, generator=g) * 20
        assert torch.equal(ours(x), ref(x))
    assert torch.equal(ours.min_val, frozen[0]) and torch.equal(ours.max_val, frozen[1])
    assert torch.equal(ours.calculate_qparams()[0], ref.scale)


@pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max:UserWarning")  # torch's own qconfig
def test_reduced_range_act_fake_quant_equals_torch_x86_qat_activation():
    """reduce_range=True is torch's x86 QAT activation (get_default_qat_qconfig('x86')): the
    same [0, 127] range, scale, zero point and outputs, in training and frozen in eval."""
    from torch.ao.quantization import get_default_qat_qconfig

    g = _gen(11)
    ref = get_default_qat_qconfig("x86").activation()
    ours = ActFakeQuant(8, reduce_range=True).train()
    assert (ours.quant_min, ours.quant_max) == (ref.quant_min, ref.quant_max) == (0, 127)
    for i in range(4):
        x = torch.randn(16, 10, generator=g) * (1 + i) + 0.5 * i
        assert torch.equal(ours(x), ref(x))
        assert torch.equal(ours.calculate_qparams()[0], ref.scale)
        assert torch.equal(ours.calculate_qparams()[1], ref.zero_point)
    ours.eval()
    ref.disable_observer()
    x = torch.randn(16, 10, generator=g) * 20  # far outside: both clip at 127
    assert torch.equal(ours(x), ref(x))
    assert QuantizedLayer(nn.Linear(3, 2)).input_quant.reduce_range  # the deployable int8 input
    assert not QuantizedLayer(nn.Linear(3, 2), bits=4).input_quant.reduce_range  # fake-only widths


def test_act_fake_quant_passes_through_before_statistics_in_eval():
    a = ActFakeQuant().eval()
    x = torch.randn(3, 5, generator=_gen(5))
    assert torch.equal(a(x), x)
    assert not bool(a.initialized)
    with pytest.raises(ConfigError, match="no statistics"):
        a.calculate_qparams()


def test_act_ste_gradient_is_one_inside_zero_outside():
    a = ActFakeQuant().train()
    a(torch.linspace(-1.0, 2.0, 50))  # range [-1, 2]
    a.eval()
    x = torch.tensor([-3.0, -0.5, 0.0, 0.7, 1.9, 5.0], requires_grad=True)
    a(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]


# --------------------------------------------------------------------------- QAT layers
def test_quantized_layer_copies_and_quantizes_depthwise_conv():
    conv = nn.Conv2d(6, 6, 3, padding=1, groups=6)
    q = quantized_from_float(conv)
    assert q.layer is not conv and q.layer.weight is not conv.weight
    x = torch.relu(torch.randn(2, 6, 7, 7, generator=_gen(6)))
    _calibrate(q, [x])
    y = q(x)
    expect = nn.functional.conv2d(q.input_quant(x), q.quantized_weight(), conv.bias, padding=1, groups=6)
    assert torch.equal(y, expect)
    with torch.no_grad():
        ref = conv(x)
    assert torch.allclose(y, ref, atol=0.05 * float(ref.abs().max()))
    # trains: gradients reach the master weights and input
    q.train()
    xg = x.clone().requires_grad_()
    q(xg).square().mean().backward()
    assert q.layer.weight.grad is not None and q.layer.weight.grad.abs().sum() > 0
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    assert conv.weight.grad is None


def test_quantized_layer_rejects_other_layers():
    with pytest.raises(ConfigError, match="Conv1d"):
        quantized_from_float(nn.Conv1d(2, 2, 3))


# Every quantized engine this torch build offers (on x86: qnnpack, onednn, x86, fbgemm); the
# packed int8 weights belong to the engine selected at conversion, so each is converted anew.
ENGINES = [e for e in torch.backends.quantized.supported_engines if e != "none"]


@pytest.fixture(params=ENGINES)
def engine(request):
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = request.param
    yield request.param
    torch.backends.quantized.engine = before


@pytest.mark.parametrize("make", [
    lambda: nn.Conv2d(4, 8, 3, padding=1, stride=2),
    lambda: nn.Conv2d(8, 8, 3, padding=1, groups=8),
    lambda: nn.Conv2d(8, 4, 1, groups=2, bias=False),
    lambda: nn.Linear(24, 10),
])
def test_to_quantized_matches_fake_quant(make, engine):
    """The real int8 module computes what the fake-quant layer computes, under every engine.

    Before reduce_range, fbgemm/x86/onednn on a non-VNNI x86 CPU (AVX2 AMD EPYC) missed by up
    to 2.6 on a 6.6 output range (saturating int16 pair sums); qnnpack did not.
    """
    torch.manual_seed(0)
    layer = make()
    shape = (16, 24) if isinstance(layer, nn.Linear) else (4, layer.in_channels, 8, 8)
    g = _gen(7)
    calib = torch.randn(shape, generator=g) * 2 + 0.5
    q = quantized_from_float(layer)
    _calibrate(q, [calib] * 3)  # a fixed batch: observed ranges equal its ranges
    assert (q.input_quant.quant_min, q.input_quant.quant_max) == (0, 127)  # reduce_range
    real = q.to_quantized()
    assert isinstance(real, Int8Inference)
    s, z = q.output_observer.calculate_qparams()
    # Tolerance from the arithmetic: the int path is the fake-quant result rounded to the output
    # grid (step s), so it is within s/2 of it, plus what differs between float and integer
    # accumulation (fp32 rounding ~1e-6 relative; qnnpack's int32 bias at scale s_in*s_w) -
    # a few thousandths of a step here; 0.55 s leaves room for that and no more: one saturated
    # int16 pair shifts the output by many steps.
    tol = 0.55 * float(s)
    with torch.no_grad():
        y_fake, y_real = q(calib), real(calib)
    assert float((y_fake - y_real).abs().max()) <= tol
    # Fresh data, part of it far beyond the calibrated input range: the integer path equals
    # fake quant (which clips inputs at 127) followed by output quantization (values beyond
    # the calibrated output range are clipped, as deployed int8 does).  Both sides lie on the
    # output grid, so an output whose float value sits within that accumulation difference of
    # a half-step rounds to the neighbour (qnnpack: up to 0.4 % of the elements here): at most
    # one step, and rarely.
    for x in (torch.randn(shape, generator=g) * 2 + 0.5, torch.randn(shape, generator=g) * 6):
        with torch.no_grad():
            steps = (torch.fake_quantize_per_tensor_affine(q(x), s, z, 0, 255) - real(x)).abs() / s
        assert float(steps.max()) <= 1.001 and float(steps.mean()) <= 0.02


def test_int8_kernels_saturate_without_reduce_range_on_this_cpu(engine):
    """The mechanism the reduce_range rests on, measured on the running CPU: a u8 x s8 linear
    whose adjacent product pairs exceed int16 (255 * 127 * 2).  qnnpack and every VNNI CPU
    accumulate in int32 and are exact; fbgemm/x86/onednn without VNNI saturate each pair sum
    at 32767.  With [0, 127] inputs, no engine can saturate, which the layer tests check."""
    import torch.ao.nn.quantized as nnq

    wq = torch.quantize_per_channel(torch.full((1, 2), 127.0), torch.ones(1, dtype=torch.double),
                                    torch.zeros(1, dtype=torch.long), 0, torch.qint8)
    lin = nnq.Linear(2, 1, bias_=False)  # one pair of products
    lin.set_weight_bias(wq, None)
    lin.scale, lin.zero_point = 256.0, 0  # output step 256: 255 * 127 * 2 = 64770 fits in quint8
    for top in (255, 127):
        xq = torch.quantize_per_tensor(torch.full((1, 2), float(top)), 1.0, 0, torch.quint8)
        y = float(lin(xq).dequantize())
        exact, saturated = top * 127 * 2, min(top * 127 * 2, 32767)
        assert min(abs(y - exact), abs(y - saturated)) <= 128, (engine, top, y)  # half a step
        if top == 127 or engine == "qnnpack" or torch.cpu._is_vnni_supported():
            assert abs(y - exact) <= 128, (engine, top, y)


def test_to_quantized_needs_calibration_and_8_bits():
    with pytest.raises(ConfigError, match="not calibrated"):
        quantized_from_float(nn.Linear(4, 2)).to_quantized()
    q4 = quantized_from_float(nn.Linear(4, 2), bits=4)
    _calibrate(q4, [torch.randn(3, 4)])
    with pytest.raises(ConfigError, match="8-bit"):
        q4.to_quantized()


def test_quantized_layer_state_dict_round_trip():
    g = _gen(8)
    q = quantized_from_float(nn.Conv2d(3, 5, 3, padding=1))
    _calibrate(q, [torch.randn(2, 3, 6, 6, generator=g) for _ in range(4)])
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    buf.seek(0)
    fresh = quantized_from_float(nn.Conv2d(3, 5, 3, padding=1))
    fresh.load_state_dict(torch.load(buf))
    fresh.eval()
    x = torch.randn(2, 3, 6, 6, generator=g)
    assert torch.equal(fresh(x), q(x))
    assert bool(fresh.input_quant.initialized) and bool(fresh.output_observer.initialized)
    assert torch.equal(fresh.to_quantized()(x), q.to_quantized()(x))


# --------------------------------------------------------------------------- FP16
def _cpu_half_supported(layer: nn.Module, x: torch.Tensor) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            layer.half()(x.half())
        return True
    except RuntimeError:
        return False


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.Conv2d(4, 6, 3, padding=1), (2, 4, 6, 6)),
    (lambda: nn.Conv2d(6, 6, 3, padding=1, groups=6), (2, 6, 5, 5)),
    (lambda: nn.Linear(20, 7), (5, 20)),
])
def test_half_precision_matches_fp16_and_trains(make, shape):
    torch.manual_seed(0)
    layer = make()
    x = torch.randn(shape, generator=_gen(9))
    h = HalfPrecisionLayer.from_float(layer)
    y = h(x)
    assert y.dtype == torch.float32
    assert torch.equal(y, y.half().float())  # values are fp16 numbers
    import copy

    if _cpu_half_supported(copy.deepcopy(layer), x):
        ref = copy.deepcopy(layer).half()(x.half()).float()
    else:  # manual emulation: fp16 operands, fp32 arithmetic, fp16 result
        ref = copy.deepcopy(layer)(x.half().float()).half().float()
    # fp16 results of fp32 (or fp16-kernel) accumulations: a last-bit difference in the
    # accumulation rounds to the neighbouring half, one fp16 eps (2^-10 ~ 9.8e-4) relative;
    # two eps of the output's magnitude (+ 1e-3 for outputs near zero) covers either kernel
    tol = 2e-3 * float(ref.detach().abs().max()) + 1e-3
    assert torch.allclose(y, ref, atol=tol, rtol=2e-3)
    native = HalfPrecisionLayer(copy.deepcopy(layer), mode="native")(x)
    assert torch.allclose(y, native, atol=tol, rtol=2e-3)
    # master weights stay fp32 and receive gradients; the float model is untouched
    assert h.layer.weight.dtype == torch.float32 and h.layer is not layer
    xg = x.clone().requires_grad_()
    h(xg).square().mean().backward()
    assert h.layer.weight.grad is not None and h.layer.weight.grad.dtype == torch.float32
    assert h.layer.weight.grad.abs().sum() > 0 and xg.grad.abs().sum() > 0
    assert layer.weight.grad is None


def test_half_precision_state_dict_round_trip_and_sgd_step():
    g = _gen(10)
    h = HalfPrecisionLayer.from_float(nn.Linear(8, 3))
    x = torch.randn(4, 8, generator=g)
    opt = torch.optim.SGD(h.parameters(), lr=0.1)
    before = h.layer.weight.detach().clone()
    h(x).square().sum().backward()
    opt.step()
    assert not torch.equal(before, h.layer.weight)
    buf = io.BytesIO()
    torch.save(h.state_dict(), buf)
    buf.seek(0)
    fresh = HalfPrecisionLayer.from_float(nn.Linear(8, 3))
    fresh.load_state_dict(torch.load(buf))
    assert torch.equal(fresh(x), h(x))


def test_half_precision_rejects_other_layers_and_modes():
    with pytest.raises(ConfigError, match="BatchNorm2d"):
        HalfPrecisionLayer.from_float(nn.BatchNorm2d(3))
    with pytest.raises(ConfigError, match="mode"):
        HalfPrecisionLayer.from_float(nn.Linear(2, 2), mode="bf16")  # type: ignore[arg-type]
