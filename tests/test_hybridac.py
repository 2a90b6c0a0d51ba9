"""HybridAC (mps/search/hybridac.py, benchmarks/hybridac.py): the line selection's math, the
split of each layer into real aihwkit tiles plus a digital part, and the study on the tiny
model, whose zero fraction must be the evaluator's straight conversion."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import tiny_params


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_line_sensitivity_is_the_empirical_fisher_times_squared_weights():
    from mps.search.hybridac import line_sensitivity

    torch.manual_seed(0)
    net = _Net().eval()
    x, y = torch.randn(5, 2, 4, 4), torch.tensor([0, 1, 2, 1, 0])
    sens = line_sensitivity(net, x, y)
    expected = {"conv": torch.zeros_like(net.conv.weight), "fc": torch.zeros_like(net.fc.weight)}
    for i in range(5):  # each example's own gradient, squared, averaged
        grads = torch.autograd.grad(torch.nn.functional.cross_entropy(net(x[i:i + 1]), y[i:i + 1]),
                                    [net.conv.weight, net.fc.weight])
        expected["conv"] += grads[0] ** 2 / 5
        expected["fc"] += grads[1] ** 2 / 5
    assert sens["conv"].shape == (2, 3, 3) and sens["fc"].shape == (64,)
    assert torch.allclose(sens["conv"], (expected["conv"] * net.conv.weight ** 2).sum(0), rtol=1e-5, atol=1e-12)
    assert torch.allclose(sens["fc"], (expected["fc"] * net.fc.weight ** 2).sum(0), rtol=1e-5, atol=1e-12)
    assert net.conv.weight.grad is None  # nothing left behind for a later training step


def test_lines_are_taken_by_sensitivity_per_mac_within_the_budget():
    """Two layers of 4 lines; a line of ``a`` carries 10 MACs, a line of ``b`` 40.  Per MAC the
    order is a0 (0.8), b0 (0.5), a1 (0.3), b1 (0.1), ...; with 50 of 200 MACs to move, a0 and b0
    fill the budget; with 60, a1 joins; a line that would overshoot is passed over for a cheaper one."""
    from mps.layer_info import LayerInfo
    from mps.search.hybridac import select_lines

    infos = {"a": LayerInfo("a", "linear", 4, 1, macs=40), "b": LayerInfo("b", "linear", 4, 1, macs=160)}
    sens = {"a": torch.tensor([8.0, 3.0, 0.0, 0.0]), "b": torch.tensor([20.0, 4.0, 0.0, 0.0])}
    m = select_lines(infos, sens, 0.25)
    assert m["a"].tolist() == [True, False, False, False] and m["b"].tolist() == [True, False, False, False]
    m = select_lines(infos, sens, 0.30)
    assert m["a"].tolist() == [True, True, False, False] and m["b"].tolist() == [True, False, False, False]
    m = select_lines(infos, sens, 0.15)  # b0 (40) would overshoot 30 after a0: a1 and a2 take its place
    assert m["a"].tolist() == [True, True, True, False] and not m["b"].any()
    assert not any(v.any() for v in select_lines(infos, sens, 0.0).values())
    assert all(v.all() for v in select_lines(infos, sens, 1.0).values())
    with pytest.raises(ValueError, match="fraction"):
        select_lines(infos, sens, 1.5)


def test_each_layer_splits_into_a_real_analog_tile_and_the_digital_lines():
    """The tile holds the unselected lines' weights (the selected ones at zero), the digital
    part the selected ones, and the cost axes count the moved lines' MACs and weights."""
    from mps.analog.tiles import analog_layers
    from mps.search.hybridac import HybridLayer, build_hybrid, hybrid_cost
    from mps.stages.common import hardware_profile
    from mps.supernet.convert import trace_layers

    torch.manual_seed(1)
    net = _Net().eval()
    original = {n: m.weight.detach().clone() for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    bias = net.fc.bias.detach().clone()
    infos, _ = trace_layers(net, (2, 4, 4))
    masks = {"conv": torch.arange(18).view(2, 3, 3) % 2 == 0, "fc": torch.arange(64) < 32}
    hybrid = build_hybrid(net, masks, hardware_profile(tiny_params()), (2, 4, 4))
    assert isinstance(hybrid.conv, HybridLayer) and len(list(analog_layers(hybrid))) == 2
    for name in ("conv", "fc"):
        layer = getattr(hybrid, name)
        w_analog = layer.analog.layer.get_weights()[0].view_as(original[name])  # the tile's (out, in*kh*kw)
        mask = masks[name]
        assert torch.allclose(w_analog, original[name] * ~mask, atol=1e-6)
        assert torch.equal(layer.digital.weight, original[name] * mask)
        assert layer.digital.bias is None
    assert torch.allclose(hybrid.fc.analog.layer.get_weights()[1], bias)
    cost = hybrid_cost(infos, masks)
    assert cost.analog_mac_ratio == pytest.approx(0.5)
    assert cost.protected_lines == 41
    assert cost.digital_weights == 9 * 4 + 32 * 3
    assert cost.digital_size_mb == pytest.approx(132 * 4 / 1e6)


def test_grouped_layers_are_refused_before_any_work():
    from mps.config import ConfigError
    from mps.search.hybridac import check_layers

    net = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ConfigError, match="layer 0: HybridAC.*fix:"):
        check_layers(net, (4, 8, 8))


def test_study_at_zero_is_the_evaluators_straight_conversion(tiny_data, tiny_pretrained):
    """Fraction 0 reproduces the straight conversion the evaluate stage scores, seed for seed;
    a positive fraction moves at most that share of the MACs."""
    from benchmarks import hybridac
    from mps.evaluation import drift_accuracy_grid
    from mps.stages.common import calibrate_input_ranges, eval_set, evaluation_options, hardware_profile, load_splits
    from mps.stages.pretrain import load_pretrained
    from mps.supernet import realize

    params = tiny_params(**{"evaluate.max_test_examples": 60, "evaluate.repeats": 2,
                            "evaluate.drift_times": [86400.0, 31536000.0]})
    splits = load_splits(tiny_data)
    rows = hybridac.study(params, splits, tiny_pretrained, [0.0, 0.25], log=lambda _line: None)
    assert [r["fraction"] for r in rows] == [0.0, 0.25]
    model, ckpt = load_pretrained(tiny_pretrained)
    straight = calibrate_input_ranges(realize(model, "analog", hardware_profile(params), tuple(ckpt["image_shape"])),
                                      splits, params)
    ev = params.evaluate
    data = eval_set(splits, "test", ev.max_test_examples, params.seed, ev.batch_size,
                    calib_batches=ev.bn_recalibration_batches, device="cpu", **evaluation_options(params))
    grid = drift_accuracy_grid(straight, data, ev.drift_times, ev.repeats, params.seed)
    assert rows[0]["1d"]["seeds"] == pytest.approx([round(float(v), 2) for v in grid[:, 0]])
    assert rows[0]["1y"]["seeds"] == pytest.approx([round(float(v), 2) for v in grid[:, 1]])
    assert rows[0]["analog_mac_percent"] == 100.0 and rows[0]["digital_size_mb"] == 0.0
    assert 75.0 <= rows[1]["analog_mac_percent"] < 80.0 and rows[1]["digital_size_mb"] > 0.0
    assert "| 25 % (" in hybridac.table(rows)


def test_hybridac_hypervolume_joins_the_reports_on_the_same_bounds():
    """HybridAC's networks are scored on the report's own bounds beside the run's methods, whose
    figures do not move: a network at FP32 accuracy with every MAC analog and no digital memory
    fills the useful-range box (1.1 ** 3)."""
    import pandas as pd

    from benchmarks import hybridac
    from mps.stages.report import measured_hypervolumes

    results = pd.DataFrame([
        {"Method": "fp32", "Mapping": "fp32", "Accuracy_mean": 93.0, "Analog_MAC_Ratio_percent": 0.0,
         "Digital_Size_MB": 0.3, "Params_M": 0.075},
        {"Method": "mps", "Mapping": "mps-00", "Accuracy_mean": 92.0, "Analog_MAC_Ratio_percent": 60.0,
         "Digital_Size_MB": 0.05, "Params_M": 0.075}])
    rows = [{"fraction": 0.0, "analog_mac_percent": 100.0, "digital_size_mb": 0.0, "1d": {"mean": 93.0}},
            {"fraction": 0.1, "analog_mac_percent": 90.0, "digital_size_mb": 0.01, "1d": {"mean": 92.5}}]
    hv = hybridac.hypervolumes(results, rows, 5.0)
    alone_full, alone_useful = measured_hypervolumes(results), measured_hypervolumes(results, 5.0)
    assert hv["mps"] == pytest.approx((alone_full["mps"], alone_useful["mps"]))
    assert hv["hybridac"][1] == pytest.approx(1.1 ** 3)
