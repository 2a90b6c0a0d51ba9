"""The direct-convolution engine of the static-range chip model (mps/analog/direct.py) against
aihwkit itself, on real aihwkit layers: training-mode outputs and the gradients of inputs,
weights, biases and input ranges with the noise off; the data-initialised ranges; eval mode on
programmed and drifted tiles; output statistics with the noise on; a tiny network trained by
both engines; the calibration of ranges for models that are not trained."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mps.analog import direct
from mps.analog.chip import analog_from_digital, rpu_config_from_profile
from mps.analog.engine import analog_forward, use_engine
from mps.analog.im2col import UnsupportedAnalogConfig
from mps.analog.tiles import drift_analog, program_analog, set_training_noise
from mps.cost_model import load_hardware_profile

from tests.conftest import REPO, assert_same_output_distribution

PROFILE = load_hardware_profile(REPO / "hardware" / "paper.yaml")

# name -> (digital conv, input shape, tile rows, tile cols)
CONVS = {
    "conv-1-tile": (lambda: nn.Conv2d(16, 32, 3, padding=1), (6, 16, 10, 10), 512, 512),
    "conv-2-in-tiles": (lambda: nn.Conv2d(64, 48, 3, padding=1), (4, 64, 7, 7), 512, 512),
    "conv-channel-split-2x3-tiles": (lambda: nn.Conv2d(20, 40, 3, stride=2, padding=1), (4, 20, 9, 9), 16, 100),
    "conv-1x1-stride-2": (lambda: nn.Conv2d(16, 32, 1, stride=2, bias=False), (4, 16, 10, 10), 512, 512),
    "conv-dilated-5x5": (lambda: nn.Conv2d(6, 8, 5, padding=3, dilation=2), (3, 6, 12, 12), 512, 512),
}


def _pair(name: str, out_noise: float = 0.0, weight_noise: float = 0.0, init_idx: float | None = 1000.0):
    """Two identical analog layers built by aihwkit's conversion, and an input (ReLU-like, so the
    ranges clip some values)."""
    make, shape, rows, cols = CONVS[name]
    analog = PROFILE.analog.model_copy(update={"out_noise": out_noise, "hwa_weight_noise": weight_noise,
                                               "tile_rows": rows, "tile_cols": cols})
    torch.manual_seed(0)
    digital = make()
    layers = [analog_from_digital(digital, rpu_config_from_profile(analog)) for _ in range(2)]
    for layer in layers:
        for tile in layer.analog_tiles():
            if init_idx is not None:  # ranges set by hand: 1.2 clips a few percent of the inputs
                tile.input_range.data.fill_(1.2)
                tile.input_range_update_idx.data.fill_(init_idx)
    x = torch.randn(shape).relu_() * 1.5
    return layers[0], layers[1], x


def _adc_step(layer) -> float:
    """One ADC step of the layer's output (layer units), summed over in-tiles: aihwkit's step
    (out_res * 2 * out_bound) x input range x mapping scale."""
    steps = [tile.rpu_config.forward.out_res * 2 * tile.rpu_config.forward.out_bound * float(tile.input_range.detach())
             * float(tile.get_mapping_scales().max()) for tile in layer.analog_tiles()]
    return len(getattr(layer.analog_module, "in_sizes", [0])) * max(steps)


def _grads(layer) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", sorted(CONVS))
def test_training_forward_and_gradients_equal_aihwkit(name):
    """Noise off, training mode: the outputs equal aihwkit's up to float rounding (a different
    summation order may move a rare output across an ADC boundary: one step); the gradients of
    the input, the weights, the digital bias and every tile's input range (aihwkit's one-sided
    clipping gradient over im2col copies, its decay term, the mapping-scale gradient hook) equal
    aihwkit's autograd up to float rounding."""
    ref, mine, x = _pair(name)
    ref.train(), mine.train()
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ref(xa), direct.conv2d_forward(mine, xb)
    assert ya.shape == yb.shape
    diff = (ya - yb).abs()
    assert diff.max().item() <= _adc_step(ref) * (1 + 1e-4)
    assert (diff > 0).float().mean().item() <= 0.01
    g = torch.randn_like(ya)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    ga, gb = _grads(ref), _grads(mine)
    assert set(ga) == set(gb) and any("input_range" in n for n in ga)
    for n in ga:
        scale = ga[n].abs().max().item() + 1e-12
        assert (ga[n] - gb[n]).abs().max().item() <= 1e-4 * scale, n
    assert (xa.grad - xb.grad).abs().max().item() <= 1e-4 * xa.grad.abs().max().item()


@pytest.mark.parametrize("name", sorted(CONVS))
def test_noisy_training_forward_draws_what_aihwkit_draws(name):
    """Noise on (HWA weight noise, output noise), the same seed: the same draws in the same order
    (weight noise per tile, then output noise in aihwkit's im2col order), so the outputs agree
    within one ADC step on rare elements and the generator is left in aihwkit's state."""
    ref, mine, x = _pair(name, out_noise=0.04, weight_noise=0.08)
    ref.train(), mine.train()
    with torch.no_grad():
        torch.manual_seed(11)
        ya, state_a = ref(x), torch.randint(0, 2**62, (1,)).item()
        torch.manual_seed(11)
        yb, state_b = direct.conv2d_forward(mine, x), torch.randint(0, 2**62, (1,)).item()
    diff = (ya - yb).abs()
    assert state_a == state_b
    assert diff.max().item() <= _adc_step(ref) * (1 + 1e-4)
    assert (diff > 0).float().mean().item() <= 0.01


@pytest.mark.parametrize("name", ["conv-1-tile", "conv-channel-split-2x3-tiles"])
def test_ranges_initialised_from_data_as_aihwkit(name):
    """The first training batches set each tile's range to init_std_alpha x the std of its im2col
    input (padding zeros included): computed from the pixels, equal to aihwkit's unfold."""
    ref, mine, x = _pair(name, init_idx=None)
    ref.train(), mine.train()
    for step in range(3):
        xs = x * (1 + step)
        ref(xs), direct.conv2d_forward(mine, xs)
        for ta, tb in zip(ref.analog_tiles(), mine.analog_tiles()):
            assert float(ta.input_range_update_idx) == float(tb.input_range_update_idx) == step + 1
            assert float(tb.input_range) == pytest.approx(float(ta.input_range), rel=1e-5)


@pytest.mark.parametrize("name", sorted(CONVS))
def test_eval_on_programmed_drifted_tiles_equals_aihwkit(name):
    """Eval mode after aihwkit programmed and drifted the tiles (output noise on, the same seed):
    within one ADC step of aihwkit's output on rare elements, equal elsewhere."""
    ref, mine, x = _pair(name, out_noise=0.0)
    mine.load_state_dict(ref.state_dict())
    for layer in (ref, mine):
        layer.eval()
        torch.manual_seed(7)
        program_analog(layer)
        drift_analog(layer, 86400.0)
    with torch.no_grad():
        ya, yb = ref(x), direct.conv2d_forward(mine, x)
    diff = (ya - yb).abs()
    assert diff.max().item() <= _adc_step(ref) * float(torch.as_tensor(next(ref.analog_tiles()).alpha)) * (1 + 1e-4)
    assert (diff > 0).float().mean().item() <= 0.01


@pytest.mark.parametrize("name", ["conv-2-in-tiles", "conv-channel-split-2x3-tiles"])
def test_noise_statistics_match_aihwkit_over_seeds(name):
    """Training mode with the HWA weight noise and the output noise on, 24 independent seeds per
    engine: per output, mean and std agree within their standard errors."""
    seeds = 24
    ref, mine, x = _pair(name, out_noise=0.04, weight_noise=0.08)
    ref.train(), mine.train()
    samples = {"aihwkit": [], "direct": []}
    with torch.no_grad():
        for s in range(seeds):
            torch.manual_seed(s)
            samples["aihwkit"].append(ref(x).flatten())
            torch.manual_seed(1000 + s)
            samples["direct"].append(direct.conv2d_forward(mine, x).flatten())
    assert_same_output_distribution(torch.stack(samples["aihwkit"]), torch.stack(samples["direct"]))


def test_engine_switch_and_unsupported_settings():
    """``analog_engine: aihwkit`` runs aihwkit's own forward; a static-range setting the direct
    engine does not implement fails naming it (before any result is produced)."""
    ref, _, x = _pair("conv-1-tile")
    ref.train()
    torch.manual_seed(3)
    want = ref(x)
    torch.manual_seed(3)
    with use_engine("aihwkit"):
        got = analog_forward(ref, x)
    assert torch.equal(want, got)
    noisy, _, _ = _pair("conv-1-tile", out_noise=0.04, weight_noise=0.08)
    noisy.train()
    outs = []
    for level in (1.0, 0.0, 0.0):  # the HWA noise ramp reaches the direct engine (tile.set_config)
        set_training_noise(noisy, 0.04 * level, 0.08 * level)
        torch.manual_seed(len(outs))
        outs.append(direct.conv2d_forward(noisy, x))
    assert not torch.equal(outs[0], outs[1]) and torch.equal(outs[1], outs[2])
    next(iter(ref.analog_tiles())).rpu_config.forward.inp_noise = 0.01
    with pytest.raises(UnsupportedAnalogConfig, match="inp_noise"), use_engine("fast"):
        analog_forward(ref, x)


def test_tiny_network_trains_alike_on_both_engines(tiny_pretrained, tiny_data):
    """The straight-converted tiny ResNet8, hardware-aware trained the same number of steps by
    each engine (2 training seeds each, noise on), reaches the same accuracy within the noise."""
    from mps.evaluation import drift_accuracy_grid
    from mps.hwa import finetune
    from mps.stages.common import calibrate_input_ranges, eval_set, load_splits
    from mps.stages.pretrain import load_pretrained
    from mps.supernet import realize

    from tests.conftest import tiny_params

    params = tiny_params()
    splits = load_splits(tiny_data)
    accs = {"aihwkit": [], "fast": []}
    for engine in accs:
        for seed in (0, 1):
            model, ckpt = load_pretrained(tiny_pretrained)
            model = realize(model, "analog", PROFILE, tuple(ckpt["image_shape"]))
            with use_engine(engine):
                calibrate_input_ranges(model, splits, params)
                finetune(model, *splits.train, 12, 32, 0.01, 0.9, 0.0, seed)
                data = eval_set(splits, "test", None, seed, calib_batches=1, device="cpu", engine=engine)
                accs[engine].extend(drift_accuracy_grid(model, data, [86400.0], 2, seed)[:, 0])
    a, f = np.array(accs["aihwkit"]), np.array(accs["fast"])
    se = np.sqrt(a.var(ddof=1) / len(a) + f.var(ddof=1) / len(f))
    assert abs(a.mean() - f.mean()) <= 3 * se + 2.0, (a, f)


def test_calibration_sets_ranges_once_for_models_not_trained(tiny_pretrained, tiny_data):
    """A straight conversion's ranges come from aihwkit's calibration (not the default 3.0), are
    seeded, mark the tiles initialised (HWA training starts from them instead of re-initialising),
    and a model rebuilt from the state dict computes the same."""
    from mps.stages.common import calibrate_input_ranges, load_splits
    from mps.stages.pretrain import load_pretrained
    from mps.supernet import realize

    from tests.conftest import tiny_params

    params = tiny_params()
    splits = load_splits(tiny_data)

    def straight():
        model, ckpt = load_pretrained(tiny_pretrained)
        return realize(model, "analog", PROFILE, tuple(ckpt["image_shape"]))

    a, b = calibrate_input_ranges(straight(), splits, params), calibrate_input_ranges(straight(), splits, params)
    ranges = [float(t.input_range) for m in a.modules() if hasattr(m, "analog_tiles") and
              type(m).__name__.startswith("Analog") for t in m.analog_tiles()]
    assert ranges and all(r != 3.0 and r > 0 for r in ranges)
    assert torch.equal(torch.cat([p.flatten() for n, p in a.state_dict().items() if "input_range" in n]),
                       torch.cat([p.flatten() for n, p in b.state_dict().items() if "input_range" in n]))
    for m in a.modules():
        if type(m).__name__ in ("AnalogConv2d", "AnalogLinear"):
            for t in m.analog_tiles():
                assert float(t.input_range_update_idx) >= t.rpu_config.pre_post.input_range.init_from_data
    rebuilt = straight()
    rebuilt.load_state_dict(a.state_dict())
    x = splits.test[0][:16]
    a.eval(), rebuilt.eval()
    with torch.no_grad():
        torch.manual_seed(0)
        ya = a(x)
        torch.manual_seed(0)
        assert torch.equal(ya, rebuilt(x))  # the same output-noise draws
