"""Adaptation: strict fairness, the progressive noise schedule, and the stage on the tiny profile."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_params
from mps.config import NoiseRampConfig
from mps.noise_schedule import layer_schedule, normalised_sensitivity, ramp_fraction, ramp_step_at
from mps.stages.adapt import (HEADLINE_EVIDENCE, analog_choice_layers, apply_noise_fraction, fair_paths, fair_step,
                              path_loss)
from mps.supernet import load_supernet
from mps.analog.tiles import training_noise


def test_fair_paths_cover_every_operator_of_every_layer():
    allowed = {"a": ["analog", "int8", "fp16", "skip"], "b": ["int8", "fp16"], "c": ["fp16"]}
    for seed in range(20):
        paths, counts = fair_paths(allowed, torch.Generator().manual_seed(seed), skip_contexts=True)
        assert len(paths) == 4
        assert sorted(p["a"] for p in paths) == sorted(allowed["a"])       # exactly once each
        assert set(p["b"] for p in paths) == {"int8", "fp16"}               # each at least once
        assert sum(counts["b"].values()) == 4 and all(p["c"] == "fp16" for p in paths)


def test_fair_paths_leave_skip_out_of_the_training_contexts_by_default():
    """skip has no weights: by default no path removes a layer, and the weighted operators are
    still each trained exactly once per step."""
    allowed = {"a": ["analog", "int8", "fp16", "skip"], "b": ["int8", "fp16"], "c": ["skip", "fp16"]}
    for seed in range(20):
        paths, counts = fair_paths(allowed, torch.Generator().manual_seed(seed))
        assert len(paths) == 3 and all("skip" not in p.values() for p in paths)
        assert sorted(p["a"] for p in paths) == ["analog", "fp16", "int8"]
        assert counts["a"]["skip"] == 0 and counts["c"] == {"skip": 0, "fp16": 3}


def test_one_fair_step_updates_every_operator_exactly_once(tiny_supernet):
    """Count it: every operator's forward runs in the step, and the optimizer makes one update
    in which every operator's weights move (gradients of repeated operators are averaged)."""
    supernet, _ = load_supernet(tiny_supernet)
    supernet.train()
    layers = supernet.choice_layers()
    calls = {(n, op): 0 for n, l in layers.items() for op in l.op_names}
    for n, l in layers.items():
        for op, module in l.ops.items():
            module.register_forward_hook(lambda m, i, o, key=(n, op): calls.__setitem__(key, calls[key] + 1))
    def weights(module):
        return [p for name, p in module.named_parameters() if not name.endswith("analog_ctx")]

    before = {(n, op): [p.detach().clone() for p in weights(m)] for n, l in layers.items() for op, m in l.ops.items()}
    opt = torch.optim.SGD(supernet.weight_parameters(), lr=0.1)
    steps = []
    opt.register_step_post_hook(lambda *a: steps.append(1))
    x, y = torch.randn(8, 1, 28, 28), torch.randint(10, (8,))
    _, counts = fair_step(supernet, x, y, opt, torch.Generator().manual_seed(0), "test")
    assert len(steps) == 1
    k = max(len([op for op in l.op_names if op != "skip"]) for l in layers.values())
    for (n, op), c in calls.items():
        assert c == counts[n][op] >= (0 if op == "skip" else 1)
        assert sum(counts[n].values()) == k
        after = weights(layers[n].ops[op])
        if after and op != "skip":
            assert any(not torch.equal(a, b) for a, b in zip(after, before[(n, op)])), (n, op)


def test_noise_schedule_reaches_target_and_never_exceeds_it():
    cfg = NoiseRampConfig(steps=5, start_fraction=0.2, sensitivity_slowdown=1.0)
    drops = {"l1": 0.1, "l2": 5.0, "l3": 1.0}
    sched = layer_schedule(drops, cfg)
    z = normalised_sensitivity(drops)
    assert z == {"l1": 0.0, "l3": 0.5, "l2": 1.0}
    for name, fractions in sched.items():
        assert fractions[0] == pytest.approx(0.2) and fractions[-1] == 1.0
        assert all(0.2 <= f <= 1.0 for f in fractions)
        assert fractions == sorted(fractions)
    for s in range(1, 4):                       # sensitive layers rise more slowly
        assert sched["l2"][s] < sched["l3"][s] < sched["l1"][s]
    flat = NoiseRampConfig(steps=3, start_fraction=0.5, sensitivity_slowdown=0.0)
    assert ramp_fraction(1, flat, 0.0) == ramp_fraction(1, flat, 1.0) == pytest.approx(0.75)
    assert [ramp_step_at(s, 12, cfg) for s in (0, 3, 11)] == [0, 1, 4]


def test_noise_fraction_is_applied_to_the_analog_tiles(tiny_supernet):
    from mps.cost_model import default_hardware_profile

    supernet, _ = load_supernet(tiny_supernet)
    profile = default_hardware_profile()
    names = list(analog_choice_layers(supernet))
    apply_noise_fraction(supernet, {n: 0.5 for n in names}, profile)
    for layer in analog_choice_layers(supernet).values():
        assert training_noise(layer) == pytest.approx((0.5 * profile.analog.out_noise,
                                                       0.5 * profile.analog.hwa_weight_noise))
    apply_noise_fraction(supernet, {}, profile)
    for layer in analog_choice_layers(supernet).values():
        assert training_noise(layer) == pytest.approx((profile.analog.out_noise, profile.analog.hwa_weight_noise))


def test_sensitivity_probe_measures_at_the_deployment_noise(tiny_supernet, tiny_data):
    """The probe's result does not depend on the training noise the last step left on the tiles
    (none after the fairness phase, the full level in a run resumed at the noise phase): that
    history dependence once made an interrupted adapt run resume to other weights."""
    from mps.stages.adapt import sensitivity_probe
    from mps.stages.common import hardware_profile, load_splits

    params = tiny_params()
    profile = hardware_profile(params)
    supernet, _ = load_supernet(tiny_supernet)
    splits = load_splits(tiny_data)
    names = list(analog_choice_layers(supernet))
    probes = []
    for fraction in (0.0, 1.0):
        apply_noise_fraction(supernet, {n: fraction for n in names}, profile)
        probes.append(sensitivity_probe(supernet, splits, params.seed, "cpu", profile, params.analog_engine))
    assert probes[0] == probes[1]
    for layer in analog_choice_layers(supernet).values():  # left at the deployment level
        assert training_noise(layer) == pytest.approx((profile.analog.out_noise, profile.analog.hwa_weight_noise))


def test_operator_parameters_leave_shared_layers_out(tiny_supernet):
    """train_shared: false trains only the operators' weights: BatchNorm and the other layers
    every path shares stay as pretrained, and every operator weight is included."""
    supernet, _ = load_supernet(tiny_supernet)
    ops = {id(p) for p in supernet.operator_parameters()}
    shared = [n for n, p in supernet.named_parameters() if id(p) not in ops and not n.endswith("analog_ctx")
              and id(p) not in {id(a) for a in supernet.alpha_parameters()}]
    assert shared and all(".ops." not in n for n in shared)
    assert any("bn" in n for n in shared)
    assert {id(p) for p in supernet.weight_parameters()} >= ops
    for layer in supernet.choice_layers().values():
        for n, p in layer.ops.named_parameters():
            assert n.endswith("analog_ctx") or id(p) in ops


def test_path_loss_blends_cross_entropy_and_distillation():
    torch.manual_seed(0)
    logits, teacher, y = torch.randn(16, 10), torch.randn(16, 10), torch.randint(10, (16,))
    ce = torch.nn.functional.cross_entropy(logits, y)
    assert torch.equal(path_loss(logits, y, None, 0.5), ce)
    assert torch.equal(path_loss(logits, y, teacher, 0.0), ce)
    kd = torch.nn.functional.kl_div(logits.log_softmax(1), teacher.softmax(1), reduction="batchmean")
    assert torch.allclose(path_loss(logits, y, teacher, 0.25), 0.75 * ce + 0.25 * kd)
    # student = teacher: log(softmax) vs log_softmax differ by a few fp32 eps (1.2e-7) per term
    assert float(path_loss(teacher, y, teacher, 1.0)) == pytest.approx(0.0, abs=8 * torch.finfo(torch.float32).eps)


def test_adapt_stage_on_tiny_profile(tmp_path, tiny_data, tiny_pretrained):
    from mps.stages.adapt import run
    from mps.tracking import NullTracker

    params = tiny_params(**{"adapt.evidence_examples": 50, "adapt.distillation": 0.5})
    metrics = run(params, tiny_data, tiny_pretrained, tmp_path / "adapt", tmp_path / "work", NullTracker())
    assert (tmp_path / "adapt" / "supernet.pt").exists()
    saved = json.loads((tmp_path / "adapt" / "evidence.json").read_text())
    assert saved == metrics
    headline = json.loads((tmp_path / "adapt" / "metrics.json").read_text())
    assert headline == {k: metrics[k] for k in HEADLINE_EVIDENCE}
    for key in ("adapted_analog.accuracy_drift", "pretrained_analog.accuracy_drift", "adapted_int8.accuracy",
                "adapted_fp16.accuracy", "pretrained.accuracy", "fairness_seconds", "noise_seconds",
                "adapted_analog.accuracy_1d", "adapted_analog.accuracy_1y_std", "pretrained_analog.accuracy_1y",
                "analog_gain_points_1d", "analog_gain_points_1y"):
        assert key in metrics
    assert metrics["analog_gain_points"] == metrics["analog_gain_points_1d"]
    assert not (tmp_path / "work").exists(), "resume state is cleared after success"
    supernet, ckpt = load_supernet(tmp_path / "adapt" / "supernet.pt")
    assert ckpt["sensitivity_probe"] and set(ckpt["sensitivity_probe"]) == set(analog_choice_layers(supernet))
    # train_shared is off by default: BatchNorm affine weights are still the pretrained ones
    pretrained = torch.load(tiny_pretrained, weights_only=False)["state_dict"]
    bn = {n: p for n, p in supernet.named_parameters() if ".bn" in n or n.startswith("model.bn")}
    assert bn
    for n, p in bn.items():
        assert torch.equal(p.detach(), pretrained[n.removeprefix("model.")]), n


def test_aligned_paths_train_each_operator_in_a_context_of_its_kind():
    """context_mixing 0: path i is the uniform network of the i-th weighted operator; skip (no
    weights) has no path of its own; every weighted operator is still trained once per step."""
    allowed = {"a": ["analog", "int8", "fp16", "skip"], "b": ["analog", "int8", "fp16"], "c": ["int8", "fp16"]}
    for seed in range(10):
        paths, counts = fair_paths(allowed, torch.Generator().manual_seed(seed), mixing=0.0)
        assert [p["a"] for p in paths] == ["analog", "int8", "fp16"]
        assert [p["b"] for p in paths] == ["analog", "int8", "fp16"]
        assert paths[1]["c"] == "int8" and paths[2]["c"] == "fp16" and paths[0]["c"] in ("int8", "fp16")
        assert counts["a"] == {"analog": 1, "int8": 1, "fp16": 1, "skip": 0}
        assert all(n >= 1 for n in counts["c"].values())


def test_context_mixing_puts_that_share_of_layers_in_random_order():
    allowed = {f"l{i}": ["analog", "int8", "fp16", "skip"] for i in range(40)}
    mixed = 0
    for seed in range(10):
        paths, _ = fair_paths(allowed, torch.Generator().manual_seed(seed), mixing=0.25)
        mixed += sum(1 for n in allowed if [p[n] for p in paths] != ["analog", "int8", "fp16"])
    share = mixed / 400
    assert 0.12 < share < 0.3  # 25 % drawn, a few of which land in the aligned order by chance
    strict, _ = fair_paths(allowed, torch.Generator().manual_seed(0), mixing=1.0, skip_contexts=True)
    assert len(strict) == 4  # strict fairness with skip as an operator: K = 4


def test_random_path_is_one_valid_mapping(tiny_supernet):
    from mps.stages.adapt import random_path

    supernet, _ = load_supernet(tiny_supernet)
    paths, counts = random_path(supernet, torch.Generator().manual_seed(3))
    assert len(paths) == 1
    supernet.set_mapping(paths[0])  # valid
    for name, per_op in counts.items():
        assert sum(per_op.values()) == 1 and per_op[paths[0][name]] == 1


def test_without_qat_the_int8_operators_are_not_trained(tiny_supernet):
    supernet, _ = load_supernet(tiny_supernet)
    frozen = {id(p) for l in supernet.choice_layers().values() if "int8" in l.ops for p in l.ops["int8"].parameters()}
    assert frozen
    assert not frozen & {id(p) for p in supernet.operator_parameters({"int8"})}
    assert not frozen & {id(p) for p in supernet.weight_parameters({"int8"})}
    assert frozen <= {id(p) for p in supernet.operator_parameters()}
