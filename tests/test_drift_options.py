"""What a deployed chip does over time, as the shared evaluator applies it (evaluate.drift_compensation,
evaluate.bn_reestimation_batches): each option changes what it should, on real aihwkit tiles and
the tiny pretrained model; results are seeded; the options are validated like every other field."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mps.analog.chip import analog_from_digital, rpu_config_from_profile
from mps.analog.tiles import drift_analog, drift_compensations, program_analog, reset_programming, set_drift_compensation
from mps.config import ConfigError
from mps.cost_model import load_hardware_profile

from tests.conftest import REPO, tiny_params

PROFILE = load_hardware_profile(REPO / "hardware" / "paper.yaml")
YEAR = 31536000.0


def _alphas(method: str) -> torch.Tensor:
    torch.manual_seed(0)
    layer = analog_from_digital(nn.Linear(32, 8), rpu_config_from_profile(PROFILE.analog)).eval()
    set_drift_compensation(layer, method)
    torch.manual_seed(1)
    program_analog(layer)
    drift_analog(layer, YEAR)
    return torch.as_tensor(next(iter(layer.analog_tiles())).alpha).detach().clone().flatten()


def test_compensation_methods_give_their_own_scales():
    """Global: one scale > 1 after a year of drift; with exact reference: another scalar; per
    column: one scale per output; none: no rescaling at all."""
    alphas = {m: _alphas(m) for m in drift_compensations()}
    assert alphas["global"].numel() == 1 and float(alphas["global"]) > 1.0
    assert alphas["global_exact"].numel() == 1 and float(alphas["global_exact"]) != float(alphas["global"])
    assert alphas["per_column"].numel() == 8 and alphas["per_column"].std() > 0
    assert torch.equal(alphas["none"], torch.ones(1))
    with pytest.raises(ValueError, match="unknown drift compensation"):
        set_drift_compensation(nn.Linear(2, 2), "local")


def _straight(tiny_pretrained, splits, params):
    from mps.stages.common import calibrate_input_ranges
    from mps.stages.pretrain import load_pretrained
    from mps.supernet import realize

    model, ckpt = load_pretrained(tiny_pretrained)
    return calibrate_input_ranges(realize(model, "analog", PROFILE, tuple(ckpt["image_shape"])), splits, params).eval()


def test_batchnorm_reestimated_on_the_drifted_network(tiny_pretrained, tiny_data):
    """With bn_reestimation_batches, each score is taken with BN statistics estimated through the
    programmed, drifted, noisy network at that time (recomputed here independently with the same
    seeds), they differ from the undrifted ones, the evaluator puts the statistics back after,
    and the grid is seeded."""
    from mps.evaluation import drift_accuracy_grid, recalibrate_batchnorm
    from mps.stages.common import eval_set, evaluation_options, load_splits

    params = tiny_params(**{"evaluate.bn_reestimation_batches": 1})
    splits = load_splits(tiny_data)
    data = eval_set(splits, "test", 64, params.seed, 64, calib_batches=1, device="cpu", **evaluation_options(params))
    assert data.bn_reestimation_batches == 1
    model = _straight(tiny_pretrained, splits, params)
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    seen: list[torch.Tensor] = []
    handle = bn.register_forward_pre_hook(lambda m, a: None if m.training else seen.append(m.running_mean.clone()))
    grid = drift_accuracy_grid(model, data, [1.0, YEAR], 1, params.seed, recalibrate=True)
    handle.remove()
    after = bn.running_mean.clone()
    assert np.array_equal(grid, drift_accuracy_grid(model, data, [1.0, YEAR], 1, params.seed, recalibrate=True))

    # the same steps by hand: recalibrate (seeded), program (seed), drift to 1 year, re-estimate
    torch.manual_seed(params.seed)
    recalibrate_batchnorm(model, data.calib_x, data.calib_batches, data.calib_batch_size)
    base = bn.running_mean.clone()
    torch.manual_seed(params.seed)
    reset_programming(model)
    program_analog(model)
    drift_analog(model, 1.0)
    recalibrate_batchnorm(model, data.calib_x, 1, data.calib_batch_size)
    # (the scoring at 1 s draws output noise too; replay it so the drift at 1 year sees the same generator)
    model(data.x)
    drift_analog(model, YEAR)
    recalibrate_batchnorm(model, data.calib_x, 1, data.calib_batch_size)
    year = bn.running_mean.clone()
    reset_programming(model)
    assert torch.allclose(seen[-1], year, atol=1e-5)  # scored with the statistics of the drifted network
    assert not torch.allclose(year, base, atol=1e-3)   # which differ from the undrifted ones
    assert torch.equal(after, base)                     # and are put back afterwards


def test_options_validated_and_the_old_engine_key_points_to_its_new_place():
    assert tiny_params(**{"evaluate.drift_compensation": "per_column"}).evaluate.drift_compensation == "per_column"
    for key, value, words in (("evaluate.drift_compensation", "local", "drift_compensation"),
                              ("evaluate.bn_reestimation_batches", -1, "bn_reestimation_batches"),
                              ("evaluate.engine", "fast", "analog_engine")):
        with pytest.raises(ConfigError, match=words):
            tiny_params(**{key: value})
