"""The peer methods measured in the search stage: LionHEART (greedy conversion with
retraining, mps.search.lionheart) and ODiMo-style differentiable search (mps.search.odimo),
their config sections, and the mapping time the stage records for every method."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import tiny_params
from mps.config import ConfigError, parse_params
from mps.evaluation import EvalSet
from mps.search.lionheart import accepts, candidate_order, converged, lionheart_search, retrain_candidate
from mps.search.objectives import ObjectiveEvaluator
from mps.search.odimo import odimo_search, operator_costs, temperature
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


def trainer(splits, steps: int, examples: int | None = None):
    from mps.hwa import finetune

    x, y = splits.train
    return lambda model: finetune(model, x[:examples], y[:examples], steps, 32, 0.01, 0.9, 0.0, 0)


# --------------------------------------------------------------------------- config
def test_peer_sections_validate_with_one_line_errors():
    params = tiny_params()
    assert params.search.lionheart.thresholds == [1.0, 4.0] and params.search.odimo.cost == "energy"
    assert {"lionheart", "odimo"} <= set(params.search.baselines)
    for bad in ({"lionheart": {"thresholds": [-1.0]}}, {"lionheart": {"thresholds": []}},
                {"lionheart": {"order": "random"}}, {"lionheart": {"repeats": 0}},
                {"odimo": {"lambdas": [0.0, 0.0]}}, {"odimo": {"cost": "area"}}, {"odimo": {"stepz": 3}},
                {"lionheart": {"epochs_per_round": 0}}, {"lionheart": {"patience": 0}},
                {"lionheart": {"max_rounds": 0}}, {"odimo": {"search_epochs": -1}},
                {"odimo": {"finetune_epochs": 0}}, {"odimo": {"final_temperature": 2.0}}):
        with pytest.raises(ConfigError) as err:
            parse_params({"search": bad})
        assert "\n" not in str(err.value) and "search." in str(err.value)
    for bad in (0, -1.0, "long"):  # the HWA baseline's own budget, validated like the peers'
        with pytest.raises(ConfigError, match="search.hwa_epochs"):
            parse_params({"search": {"hwa_epochs": bad}})
    assert parse_params({"search": {"hwa_epochs": 19}}).search.hwa_epochs == 19.0
    assert parse_params({}).search.hwa_epochs is None
    assert parse_params({"search": {"lionheart": {"thresholds": [4, 0.5]}}}).search.lionheart.thresholds == [0.5, 4]


@pytest.mark.parametrize("section,old,new", [
    ({"search": {"lionheart": {"steps": 20}}}, "search.lionheart.steps", "epochs_per_round"),
    ({"search": {"odimo": {"steps": 60}}}, "search.odimo.steps", "search_epochs"),
    ({"search": {"odimo": {"finetune_steps": 60}}}, "search.odimo.finetune_steps", "finetune_epochs"),
    ({"search": {"odimo": {"temperature_decay": 0.045}}}, "search.odimo.temperature_decay", "final_temperature"),
    ({"adapt": {"max_steps_per_epoch": 40}}, "adapt.max_steps_per_epoch", "fairness_epochs"),
])
def test_removed_step_caps_name_the_key_that_replaces_them(section, old, new):
    """Budgets are epochs of the training split; an old params file stops with the fix."""
    with pytest.raises(ConfigError) as err:
        parse_params(section)
    assert old in str(err.value) and new in str(err.value) and "\n" not in str(err.value)


def test_budgets_in_epochs_give_steps_of_the_training_split():
    from mps.training import adapt_steps, epoch_chunks, epoch_steps

    assert epoch_steps(1.0, 55000, 128) == 429 and epoch_steps(0.093, 55000, 128) == 40
    assert epoch_steps(1e-6, 55000, 128) == 1 and epoch_steps(0.0, 55000, 128) == 0
    assert epoch_chunks(1000, 429) == [429, 429, 142] and epoch_chunks(429, 429) == [429]
    params = parse_params({"adapt": {"fairness_epochs": 0.5, "noise_epochs": 1.5}})
    assert adapt_steps(params, 55000) == 214 + 644  # each phase rounds on its own, as the stage steps it
    for bad in ({"fairness_epochs": -0.1}, {"fairness_epochs": 0, "noise_epochs": 0}, {"noise_epochs": "two"}):
        with pytest.raises(ConfigError):
            parse_params({"adapt": bad})


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


def test_lionheart_threshold_runs_share_their_common_candidates_exactly(tiny):
    """A second threshold whose run keeps the same layers takes every candidate from the first
    run instead of retraining it, and its result is the one it gets when run alone."""
    from mps.stages.pretrain import load_pretrained
    from mps.supernet import realize

    supernet, profile, _, splits, pretrained = tiny

    def build(mapping):
        model, ck = load_pretrained(pretrained)
        return realize(model, mapping, profile, tuple(ck["image_shape"])).eval()

    def search(thresholds):
        cfg = tiny_params(**{"search.lionheart.thresholds": thresholds,
                             "search.lionheart.repeats": 1}).search.lionheart
        return lionheart_search(evaluator(tiny), supernet, profile, build, trainer(splits, 2), cfg, 3, 0,
                                log=lambda _: None)

    both, alone = search([50.0, 100.0]), search([100.0])
    order = candidate_order(supernet, profile, "macs")
    runs = both.details["runs"]
    assert runs["50"]["shared_candidates"] == 0 and runs["50"]["trials"] == len(order)
    assert runs["100"]["shared_candidates"] == len(order) and runs["100"]["trials"] == 0
    assert both.evaluations_used == 1 + len(order)  # the second run retrained nothing
    assert runs["100"]["accuracy"] == alone.details["runs"]["100"]["accuracy"]
    assert runs["100"]["analog_layers"] == alone.details["runs"]["100"]["analog_layers"] == order


def lh_py_converged(scores: list[float], patience: int) -> bool:
    """LH.py's loop, transcribed: a deque of ``patience`` zeros, each round's score pushed to the
    left, stop when its max is below the best score of the rounds before."""
    from collections import deque

    best, queue = 0.0, deque([0.0] * patience, maxlen=patience)
    for i, score in enumerate(scores):
        queue.appendleft(score)
        if max(queue) < best:
            return i == len(scores) - 1  # it stops at the last round given, not before
        best = max(best, score)
    return False


def test_lionheart_patience_rule_is_lh_py():
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        patience = int(torch.randint(1, 4, (1,), generator=gen))
        scores = (torch.rand(int(torch.randint(1, 8, (1,), generator=gen)), generator=gen) * 10 + 80).tolist()
        # the rounds LH.py runs: stop at the first round its rule fires
        for n in range(1, len(scores) + 1):
            if lh_py_converged(scores[:n], patience):
                scores = scores[:n]
                break
        assert converged(scores, patience) == lh_py_converged(scores, patience)
    assert not converged([90.0], 1) and converged([90.0, 89.0], 1) and not converged([90.0, 91.0], 1)
    assert converged([90.0, 90.0], 1)  # a round that changed nothing ends the candidate (see converged)


def test_lionheart_epoch_rounds_with_patience_on_the_tiny_profile(tiny):
    """LionHEART at its recipe: an epoch of retraining per round, rounds until LH.py's patience
    rule stops them (or the cap), the best round kept."""
    from mps.stages.pretrain import load_pretrained
    from mps.supernet import realize
    from mps.training import epoch_steps

    supernet, profile, _, splits, pretrained = tiny

    def build(mapping):
        model, ck = load_pretrained(pretrained)
        return realize(model, mapping, profile, tuple(ck["image_shape"])).eval()

    cfg = tiny_params(**{"search.lionheart.thresholds": [100.0], "search.lionheart.repeats": 1,
                         "search.lionheart.epochs_per_round": 1.0, "search.lionheart.max_rounds": 4,
                         "search.lionheart.patience": 1}).search.lionheart
    examples = 96  # a 3-step epoch keeps the test short; the rounds and the rule are what it checks
    one_epoch = epoch_steps(cfg.epochs_per_round, examples, 32)
    assert one_epoch == 3
    logs: list[str] = []
    result = lionheart_search(evaluator(tiny), supernet, profile, build, trainer(splits, one_epoch, examples), cfg,
                              3, 0, log=logs.append)
    order = candidate_order(supernet, profile, "macs")
    rounds = [int(line.split(" after ")[1].split(" round")[0]) for line in logs]
    # patience 1: at least two rounds; the cap keeps this test short (uncapped, the tiny split's
    # 20 validation images kept improving for up to 16 rounds)
    assert len(rounds) == len(order) and all(2 <= r <= 4 for r in rounds)
    assert result.evaluations_used == 1 + sum(rounds)
    run = result.details["runs"]["100"]
    assert run["analog_layers"] == order and run["trials"] == sum(rounds)


def test_lionheart_keeps_the_best_round():
    """LH.py saves the best round's checkpoint as the candidate: the network and score returned
    are those of the best round, not the last."""
    from types import SimpleNamespace

    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    scores = iter([80.0, 85.0, 83.0, 84.0])

    def train(m):
        with torch.no_grad():
            m.weight += 1  # round r leaves weight r

    best, best_model, rounds = retrain_candidate(model, train, lambda m: SimpleNamespace(accuracy=next(scores)),
                                                 patience=2, max_rounds=None)
    assert rounds == 4 and best.accuracy == 85.0 and float(best_model.weight.detach()) == 2.0
    scores = iter([80.0, 85.0, 83.0])
    _, _, rounds = retrain_candidate(torch.nn.Linear(1, 1), train, lambda m: SimpleNamespace(accuracy=next(scores)),
                                     patience=5, max_rounds=2)
    assert rounds == 2  # the cap stops before the rule


# --------------------------------------------------------------------------- ODiMo
def test_odimo_lambda_sweep_ends_at_the_cheapest_mapping(tiny):
    supernet, profile, _, splits, _ = tiny
    alphas_before = [a.detach().clone() for a in supernet.alpha_parameters()]
    # a large alpha step so that a few steps settle the argmax (Adam moves every alpha by about alpha_lr a step)
    cfg = tiny_params(**{"search.odimo.lambdas": [0.0, 1e6], "search.odimo.alpha_lr": 1.0}).search.odimo
    x, y = splits.train
    result = odimo_search(evaluator(tiny), supernet, profile, x[:64], y[:64], trainer(splits, 1), cfg, 10, 32, 0.9, 3,
                          0, log=lambda _: None)
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
    # the temperature annealed within the search, to where ODiMo's 200 epochs end
    assert all(r["final_temperature"] == pytest.approx(cfg.final_temperature) for r in runs.values())


def test_odimo_temperature_anneals_per_step_from_initial_to_final():
    cfg = tiny_params().search.odimo
    taus = [temperature(cfg, s, 50) for s in range(50)]
    assert taus[0] == pytest.approx(cfg.initial_temperature) and taus[-1] == pytest.approx(cfg.final_temperature)
    assert all(a > b for a, b in zip(taus, taus[1:]))  # every step cools, not once per epoch
    # geometric: equal ratios, as ODiMo's exp(-0.045) per epoch
    assert taus[1] / taus[0] == pytest.approx(taus[-1] / taus[-2])
    assert cfg.final_temperature == pytest.approx(math.exp(-0.045 * 200))
    assert temperature(cfg, 0, 1) == cfg.final_temperature  # a one-step search runs at the final temperature
