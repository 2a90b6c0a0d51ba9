"""The peer methods measured in the search stage: LionHEART (greedy conversion with
retraining, mps.search.lionheart) and ODiMo-style differentiable search (mps.search.odimo),
their config sections, and the mapping time the stage records for every method."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_params
from mps.config import ConfigError, parse_params
from mps.evaluation import EvalSet
from mps.search.lionheart import accepts, candidate_order, lionheart_search
from mps.search.objectives import ObjectiveEvaluator
from mps.search.odimo import odimo_search, operator_costs
from mps.stages.common import eval_set, load_splits
from mps.stages.search import SUPERNET_METHODS, mapping_seconds

VAL = 20
OBJECTIVES = ["accuracy", "analog_mac_ratio", "digital_size_mb"]


@pytest.fixture(scope="module")
def tiny(tiny_data, tiny_supernet, tiny_pretrained):
    from mps.cost_model import parse_hardware_profile
    from mps.supernet import load_supernet

    supernet, ckpt = load_supernet(tiny_supernet)
    profile = parse_hardware_profile(ckpt["profile"])
    splits = load_splits(tiny_data)
    full = eval_set(splits, "val", VAL, 0, calib_batches=1)
    data = EvalSet(full.x, full.y, calib_x=full.calib_x[:32], calib_batches=1, calib_batch_size=32)
    return supernet, profile, data, splits, tiny_pretrained


def evaluator(tiny, budget: int = 1) -> ObjectiveEvaluator:
    supernet, profile, data, _, _ = tiny
    return ObjectiveEvaluator(supernet, data, profile, OBJECTIVES, 86400.0, budget, 0, name="test",
                              show_progress=False)


def trainer(splits, steps: int):
    from mps.hwa import finetune

    return lambda model: finetune(model, *splits.train, steps, 32, 0.01, 0.9, 0.0, 0)


# --------------------------------------------------------------------------- config
def test_peer_sections_validate_with_one_line_errors():
    params = tiny_params()
    assert params.search.lionheart.thresholds == [1.0, 4.0] and params.search.odimo.cost == "energy"
    assert {"lionheart", "odimo"} <= set(params.search.baselines)
    for bad in ({"lionheart": {"thresholds": [-1.0]}}, {"lionheart": {"thresholds": []}},
                {"lionheart": {"order": "random"}}, {"lionheart": {"repeats": 0}},
                {"odimo": {"lambdas": [0.0, 0.0]}}, {"odimo": {"cost": "area"}}, {"odimo": {"stepz": 3}}):
        with pytest.raises(ConfigError) as err:
            parse_params({"search": bad})
        assert "\n" not in str(err.value) and "search." in str(err.value)
    assert parse_params({"search": {"lionheart": {"thresholds": [4, 0.5]}}}).search.lionheart.thresholds == [0.5, 4]


# --------------------------------------------------------------------------- mapping time
def test_mapping_time_adds_the_training_each_method_needs():
    assert mapping_seconds("mps", 10.0, 100.0, 7.0) == {"mapping_seconds": 110.0, "adapt_seconds": 100.0,
                                                         "calibrate_seconds": 0.0}
    assert mapping_seconds("greedy", 10.0, 100.0, 7.0)["mapping_seconds"] == 117.0
    assert mapping_seconds("odimo", 10.0, 100.0, None)["mapping_seconds"] == 110.0  # starts from the supernet
    for method in ("lionheart", "analog_hwa", "fp32", "analog_straight"):  # from the pretrained model
        assert method not in SUPERNET_METHODS
        assert mapping_seconds(method, 10.0, 100.0, 7.0)["mapping_seconds"] == 10.0
    assert mapping_seconds("mps", 10.0, None, None) == {"mapping_seconds": 10.0, "adapt_seconds": None,
                                                        "calibrate_seconds": 0.0}


# --------------------------------------------------------------------------- LionHEART
def test_lionheart_accept_rule():
    # LH.py: keep if score >= baseline - threshold (the boundary itself is kept)
    assert accepts(90.0, 89.0, 1.0)
    assert not accepts(90.0, 88.99, 1.0)
    assert accepts(90.0, 91.0, 0.0)
    assert not accepts(90.0, 89.9, 0.0)


def test_lionheart_order_largest_macs_first(tiny):
    supernet, profile = tiny[0], tiny[1]
    order = candidate_order(supernet, profile, "macs")
    assert set(order) == {n for n, ops in supernet.allowed.items() if "analog" in ops}
    macs = [supernet.infos[n].macs for n in order]
    assert macs == sorted(macs, reverse=True)
    assert sorted(candidate_order(supernet, profile, "tile_utilization")) == sorted(order)


def test_lionheart_tiny_run_keeps_every_layer_under_a_loose_threshold(tiny):
    from mps.stages.pretrain import load_pretrained
    from mps.supernet import realize

    supernet, profile, _, splits, pretrained = tiny

    def build(mapping):
        model, ck = load_pretrained(pretrained)
        return realize(model, mapping, profile, tuple(ck["image_shape"])).eval()

    cfg = tiny_params(**{"search.lionheart.thresholds": [100.0], "search.lionheart.repeats": 1}).search.lionheart
    result = lionheart_search(evaluator(tiny), supernet, profile, build, trainer(splits, 1), cfg, 3, 0,
                              log=lambda _: None)
    order = candidate_order(supernet, profile, "macs")
    assert result.evaluations_used == 1 + len(order)  # the digital start, then one per candidate
    run = result.details["runs"]["100"]
    assert run["analog_layers"] == order  # nothing can fail a 100-point threshold: every candidate kept
    (final,) = result.selected
    assert {n for n, op in final.mapping.items() if op == "analog"} == set(order)
    assert set(final.mapping.values()) <= {"analog", "fp32"}  # the rest stays float (LionHEART's digital)
    model = result.trained[final.key]
    from mps.analog.tiles import analog_layers

    assert len(list(analog_layers(model))) == len(order)


# --------------------------------------------------------------------------- ODiMo
def test_odimo_lambda_sweep_ends_at_the_cheapest_mapping(tiny):
    supernet, profile, _, splits, _ = tiny
    alphas_before = [a.detach().clone() for a in supernet.alpha_parameters()]
    # a large alpha step so that a few steps settle the argmax (Adam moves every alpha by about alpha_lr a step)
    cfg = tiny_params(**{"search.odimo.lambdas": [0.0, 1e6], "search.odimo.steps": 10,
                         "search.odimo.alpha_lr": 1.0, "search.odimo.finetune_steps": 1}).search.odimo
    x, y = splits.train
    result = odimo_search(evaluator(tiny), supernet, profile, x[:64], y[:64], trainer(splits, 1), cfg, 32, 0.9, 3, 0,
                          log=lambda _: None)
    # the MPS supernet is untouched
    assert all(torch.equal(a, b) for a, b in zip(alphas_before, supernet.alpha_parameters()))
    runs = result.details["runs"]
    costs = operator_costs(supernet, profile, "energy")
    layers = supernet.choice_layers()
    cheapest = {n: min(ops, key=lambda op, n=n: float(costs[n][layers[n].op_names.index(op)]))
                for n, ops in supernet.allowed.items()}
    assert runs["1e+06"]["mapping"] == dict(sorted(cheapest.items()))
    # without the cost term the search keeps the accuracy the cost-driven one gives away
    assert runs["0"]["accuracy"] >= runs["1e+06"]["accuracy"]
    assert result.evaluations_used == 2
    assert result.selected and all(e.key in result.trained for e in result.selected)
