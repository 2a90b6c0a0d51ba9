"""Tests for the search stage: the rank-preserving alpha loss, the budget-counting evaluator,
the baselines, determinism, and a whole run of the stage on the tiny fixtures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny_params
from mps.config import ConfigError
from mps.cost_model import parse_hardware_profile
from mps.evaluation import EvalSet
from mps.pareto import normalized_hypervolume
from mps.search.baselines import (SensitivityError, greedy_search, read_sensitivity, sensitivity_order)
from mps.search.mps_search import (budget_plan, finetune_alphas, index_table, mps_search, rank_preserving_loss,
                                   table_scores)
from mps.search.objectives import BudgetExhausted, ObjectiveEvaluator, mapping_key
from mps.stages.common import eval_set, load_splits
from mps.stages.search import SearchState, hv_matrix, hypervolume_setup, mapping_files, write_mapping_folder
from mps.training import adapt_steps, epoch_steps
from mps.supernet import load_mapping, load_supernet

VAL = 20  # validation examples per evaluation: enough to order mappings, fast on 2 cores


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny(tiny_data, tiny_supernet):
    supernet, ckpt = load_supernet(tiny_supernet)
    profile = parse_hardware_profile(ckpt["profile"])
    # few examples and a small BN-recalibration set: aihwkit's analog forward dominates test time
    full = eval_set(load_splits(tiny_data), "val", VAL, 0, calib_batches=1)
    data = EvalSet(full.x, full.y, calib_x=full.calib_x[:32], calib_batches=1, calib_batch_size=32)
    return supernet, profile, data


def make_evaluator(tiny, budget: int, name: str = "test", seed: int = 0) -> ObjectiveEvaluator:
    supernet, profile, data = tiny
    return ObjectiveEvaluator(supernet, data, profile, ["accuracy", "analog_mac_ratio", "digital_size_mb"],
                              86400.0, budget, seed, name=name, show_progress=False)


def sensitivity_csv(path, supernet, drops: dict[str, float] | None = None):
    rows = []
    for i, name in enumerate(supernet.infos):
        if "analog" not in supernet.allowed[name]:
            continue
        drop = (drops or {}).get(name, float(len(supernet.infos) - i))  # later layers less sensitive by default
        for t, scale in ((3600.0, 0.5), (86400.0, 1.0)):
            rows.append({"layer": name, "drift_time": t, "mean_drop": drop * scale, "std_drop": 0.1, "repeats": 2})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# --------------------------------------------------------------------------- the rank-preserving loss
def test_rank_loss_counts_only_ordered_pairs():
    scores = torch.tensor([2.0, 0.0, -1.0])
    ranks = np.array([0, 1, 1])
    # pairs (0,1), (0,2): softplus(-(2-0)), softplus(-(2+1))
    expected = (torch.nn.functional.softplus(torch.tensor(-2.0)) + torch.nn.functional.softplus(torch.tensor(-3.0))) / 2
    assert float(rank_preserving_loss(scores, ranks)) == pytest.approx(float(expected))
    # reversing the scores makes the ordering wrong: a larger loss
    assert float(rank_preserving_loss(-scores, ranks)) > float(rank_preserving_loss(scores, ranks))
    assert float(rank_preserving_loss(scores, np.zeros(3, dtype=int))) == 0.0


def test_scores_match_supernet_score(tiny):
    supernet = tiny[0]
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for a in supernet.alpha_parameters():
            a.copy_(torch.randn(a.shape, generator=g))
    try:
        mappings = [supernet.sample_mapping(g) for _ in range(5)]
        table = index_table(supernet, mappings)
        vectorised = table_scores(supernet.alpha_parameters(), table)
        direct = torch.stack([supernet.score(m) for m in mappings])
        # two summation orders of one fp32 log-probability per layer: each partial sum rounds by
        # at most eps/2 of its magnitude, so they agree to n_layers * eps of the total's magnitude
        tol = len(supernet.choice_layers()) * torch.finfo(torch.float32).eps * float(direct.abs().max())
        assert torch.allclose(vectorised, direct, rtol=0, atol=tol)
    finally:
        with torch.no_grad():
            for a in supernet.alpha_parameters():
                a.zero_()


def test_finetune_moves_alphas_toward_the_better_operator(tiny):
    """Constructed case: int8 is always better, so rank = number of layers not on int8."""
    supernet = tiny[0]
    g = torch.Generator().manual_seed(0)
    mappings = [supernet.sample_mapping(g) for _ in range(16)]
    ranks = np.array([sum(op != "int8" for op in m.values()) for m in mappings])
    # plain tensors only: aihwkit's analog_ctx entries are placeholders (the tile weight is a plain entry)
    state_before = {k: v.clone() for k, v in supernet.state_dict().items()
                    if type(v) is torch.Tensor and not k.endswith("alphas")}
    before = {n: float(l.probabilities(1.0)[l.op_names.index("int8")].detach()) for n, l in supernet.choice_layers().items()}
    try:
        losses = finetune_alphas(supernet, mappings, ranks, steps=60, lr=0.1)
        assert losses[-1] < 0.8 * losses[0]
        after = {n: float(l.probabilities(1.0)[l.op_names.index("int8")].detach()) for n, l in supernet.choice_layers().items()}
        assert all(after[n] > before[n] for n in before), (before, after)
        assert set(supernet.argmax_mapping().values()) == {"int8"}
        # only the alphas move: every operator weight is untouched and still trainable
        state_after = supernet.state_dict()
        for k, v in state_before.items():
            assert torch.equal(state_after[k], v), k
        assert all(p.requires_grad for p in supernet.weight_parameters())
        assert all(a.requires_grad for a in supernet.alpha_parameters())
    finally:
        with torch.no_grad():
            for a in supernet.alpha_parameters():
                a.zero_()


def test_budget_plan_reserves_extraction_and_spends_all():
    for budget, iterations, k in [(8, 2, 3), (48, 4, 8), (5, 4, 8), (3, 4, 8), (1, 2, 3), (100, 3, 8)]:
        rounds, reserve = budget_plan(budget, iterations, k)
        assert sum(rounds) + reserve == budget
        assert 1 <= reserve and len(rounds) <= iterations
        assert all(n >= 2 for n in rounds)
    assert budget_plan(8, 2, 3) == ([3, 3], 2)


# --------------------------------------------------------------------------- the evaluator
def test_evaluator_counts_caches_and_refuses_beyond_budget(tiny):
    supernet = tiny[0]
    ev = make_evaluator(tiny, budget=2)
    a, b, c = supernet.uniform_mapping("int8"), supernet.uniform_mapping("analog"), supernet.uniform_mapping("fp16")
    first = ev.evaluate(a)
    assert ev.used == 1 and 0.0 <= first.accuracy <= 100.0
    assert ev.evaluate(dict(reversed(list(a.items())))) is first  # cache hit, any layer order: free
    assert ev.used == 1
    analog = ev.evaluate(b)
    assert ev.used == 2 and ev.remaining == 0
    assert analog.objectives["analog_mac_ratio"] > 0.9 and first.objectives["analog_mac_ratio"] == 0.0
    assert analog.objectives["digital_size_mb"] < first.objectives["digital_size_mb"]
    with pytest.raises(BudgetExhausted):
        ev.evaluate(c)
    assert ev.evaluate(a) is first  # cached answers still come after the budget is spent
    # the noise seed is fixed per mapping: a fresh evaluator measures the same value
    again = make_evaluator(tiny, budget=1).evaluate(b)
    assert again.accuracy == analog.accuracy


# --------------------------------------------------------------------------- baselines
def test_sensitivity_table_order_and_errors(tiny, tmp_path):
    supernet = tiny[0]
    analog_layers = [n for n in supernet.infos if "analog" in supernet.allowed[n]]
    drops = {n: float(i % 3) for i, n in enumerate(analog_layers)}
    table = read_sensitivity(sensitivity_csv(tmp_path / "s.csv", supernet, drops))
    order = sensitivity_order(table, supernet, 86400.0)
    assert sorted(order) == sorted(analog_layers)
    assert [drops[n] for n in order] == sorted(drops.values())
    # ties keep the network order
    zeros = [n for n in order if drops[n] == 0.0]
    assert zeros == [n for n in analog_layers if drops[n] == 0.0]

    with pytest.raises(SensitivityError, match="not found"):
        read_sensitivity(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("layer,time,drop\na,1,2\n")
    with pytest.raises(SensitivityError, match="lacks columns drift_time, mean_drop, std_drop"):
        read_sensitivity(tmp_path / "bad.csv")
    other = table.copy()
    other.loc[0, "layer"] = "not.a.layer"
    with pytest.raises(SensitivityError, match="does not match the supernet"):
        sensitivity_order(other, supernet, 86400.0)
    assert issubclass(SensitivityError, ConfigError)


def test_greedy_moves_least_sensitive_layers_first(tiny):
    supernet = tiny[0]
    order = [n for n in supernet.infos if "analog" in supernet.allowed[n]][::-1]
    ev = make_evaluator(tiny, budget=3, name="greedy")
    result = greedy_search(ev, supernet, order, max_acc_drop=100.0, k=3, seed=0)
    assert result.evaluations_used == 3 == ev.budget
    # start all-int8, then the first two layers of the order, each accepted under a huge bound
    assert result.details["analog_layers"] == order[:2]
    last = result.evaluations[-1].mapping
    assert [n for n, op in last.items() if op == "analog"] == sorted(order[:2], key=list(supernet.infos).index)
    assert {mapping_key(e.mapping) for e in result.selected} <= {mapping_key(e.mapping) for e in result.evaluations}


# --------------------------------------------------------------------------- determinism
def test_mps_search_is_deterministic(tiny, tmp_path):
    supernet = tiny[0]
    params = tiny_params(**{"search.budget": 4, "search.iterations": 2, "search.pareto_size": 3,
                            "search.alpha_steps": 10, "search.extraction_samples": 64})
    alphas_before = [a.detach().clone() for a in supernet.alpha_parameters()]
    blobs = []
    for run in range(2):
        ev = make_evaluator(tiny, budget=params.search.budget, name="mps")
        result = mps_search(supernet, ev, params.search, seed=7, log=lambda _msg: None)
        assert result.evaluations_used == ev.budget == 4
        assert 1 <= len(result.selected) <= 3
        out = tmp_path / f"run{run}" / "mappings"
        files = mapping_files([result], supernet.meta["model_id"], {"seed": 7}, params.search)
        write_mapping_folder(out, files, supernet.allowed)
        blobs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
        for p in out.iterdir():
            m = load_mapping(p, supernet.meta["model_id"], supernet.allowed)
            assert m.method == "mps" and set(m.objectives) >= {"accuracy", "analog_mac_ratio", "digital_size_mb"}
    assert blobs[0] == blobs[1] and list(blobs[0]) == [f"mps-{i:02d}.json" for i in range(len(blobs[0]))]
    # a finished method survives an interruption: its result round-trips through the work folder
    state = SearchState(tmp_path / "work", "key")
    state.save(result)
    back = state.load("mps", make_evaluator(tiny, budget=4))
    assert [e.key for e in back.selected] == [e.key for e in result.selected]
    assert [e.objectives for e in back.evaluations] == [e.objectives for e in result.evaluations]
    assert back.evaluations_used == result.evaluations_used
    assert SearchState(tmp_path / "work", "other inputs").load("mps", make_evaluator(tiny, budget=5)) is None
    # the supernet is handed back as it was given
    for a, b in zip(supernet.alpha_parameters(), alphas_before):
        assert torch.equal(a.detach(), b)


@pytest.mark.parametrize("sampling", ["stratified", "alphas"])
def test_mps_set_contains_the_uniform_anchors_and_no_mapping_they_dominate(tiny, sampling):
    """Round 0 starts from the uniform paths, so no uniform mapping (measured by the same
    evaluator, same seed) dominates a mapping of MPS's set, whichever way the rounds draw."""
    from mps.pareto import dominates
    from mps.search.mps_search import uniform_paths

    supernet = tiny[0]
    params = tiny_params(**{"search.budget": 6, "search.iterations": 2, "search.pareto_size": 3,
                            "search.alpha_steps": 10, "search.extraction_samples": 64,
                            "search.sampling": sampling})
    anchors = uniform_paths(supernet)
    assert [a[next(iter(a))] for a in anchors][:1] == ["analog"] and len(anchors) == 3
    ev = make_evaluator(tiny, budget=params.search.budget, name="mps")
    result = mps_search(supernet, ev, params.search, seed=3, log=lambda _msg: None)
    evaluated = {e.key for e in result.evaluations}
    assert {mapping_key(a) for a in anchors} <= evaluated
    selected = ev.matrix(result.selected)
    for anchor in anchors:
        point = make_evaluator(tiny, budget=1).matrix([make_evaluator(tiny, budget=1).evaluate(anchor)])[0]
        assert not any(dominates(point, row) for row in selected)


# --------------------------------------------------------------------------- hypervolume reference
def test_hypervolume_reference_is_shared():
    objectives = ["accuracy", "analog_mac_ratio", "digital_size_mb"]
    lower, upper, info = hypervolume_setup(objectives, 0.3, [])
    assert info["lower"] == [-1.0, -1.0, 0.0] and info["upper"] == [0.0, 0.0, 0.3]
    with pytest.raises(ConfigError):
        hypervolume_setup(objectives, 0.0, [])
    _, upper_e, info_e = hypervolume_setup([*objectives, "energy_uj"], 0.3, [{"energy_uj": 2.0}, {"energy_uj": 5.0}])
    assert upper_e[-1] == 5.0


# --------------------------------------------------------------------------- the stage
def test_search_stage_writes_every_output(tiny_data, tiny_supernet, tiny_pretrained, tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    from mps.stages.search import run
    from mps.tracking import stage_run

    budget = 4
    params = tiny_params(**{"search.budget": budget, "search.val_examples": VAL, "search.alpha_steps": 10,
                            "search.extraction_samples": 64, "search.pareto_size": 3,
                            "search.bn_recalibration_batches": 0, "search.lionheart.thresholds": [4.0],
                            "search.odimo.lambdas": [0.0, 100.0], "search.odimo.search_epochs": 0.2,
                            "search.odimo.finetune_epochs": 0.1, "search.hwa_epochs": 0.3})
    supernet, _ = load_supernet(tiny_supernet)
    sens = sensitivity_csv(tmp_path / "sensitivity.csv", supernet)
    out = tmp_path / "search"
    with stage_run("search", params.digest(), params.mlflow.experiment) as tracker:
        summary = run(params, tiny_data, tiny_supernet, tiny_pretrained, sens, out, tmp_path / "work", tracker)
        run_id = tracker.run_id

    methods = ["mps", "fp32", "int8", "analog", "analog_straight", "analog_hwa", "greedy", "random", "nsga2",
               "lionheart", "odimo"]
    assert list(summary["methods"]) == methods
    # equal accounting: searchers that can use the whole budget use exactly it, none exceeds it
    used = {m: summary["methods"][m]["evaluations"] for m in methods}
    assert used["mps"] == used["random"] == used["nsga2"] == budget
    assert used["fp32"] == used["int8"] == used["analog"] == used["analog_straight"] == used["analog_hwa"] == 1
    assert 1 <= used["greedy"] <= budget

    files = sorted((out / "mappings").glob("*.json"))
    names = [p.stem for p in files]
    assert {"fp32", "int8", "analog", "analog_straight", "analog_hwa", "mps-00", "greedy-00", "random-00",
            "nsga2-00"} <= set(names)
    # the straight conversion comes from the pretrained model; the HWA baseline's network sits beside its mapping
    assert load_mapping(out / "mappings" / "analog_straight.json").source == "pretrained"
    hwa = load_mapping(out / "mappings" / "analog_hwa.json")
    assert hwa.source == "analog_hwa.pt" and (out / "mappings" / "analog_hwa.pt").is_file()
    assert load_mapping(out / "mappings" / "analog.json").source is None
    # every network a method trained sits beside its mapping: HWA, LionHEART's runs, ODiMo's fine-tuned argmaxes
    trained = sorted(p.name for p in (out / "mappings").glob("*.pt"))
    assert trained[0] == "analog_hwa.pt" and {n.split("-")[0] for n in trained[1:]} == {"lionheart", "odimo"}
    assert len(trained) == 1 + summary["methods"]["lionheart"]["mappings"] + summary["methods"]["odimo"]["mappings"]
    allowed = supernet.allowed
    model_id = supernet.meta["model_id"]
    with_fp32 = {n: [*ops, "fp32"] for n, ops in allowed.items()}  # LionHEART's digital layers stay float
    for p in files:
        m = load_mapping(p, model_id, {n: None for n in allowed} if p.stem == "fp32" else
                         with_fp32 if p.stem.startswith("lionheart") else allowed)
        assert m.name == p.stem and m.provenance["params_digest"] == params.digest()
        if p.stem == "fp32":
            assert set(m.layers.values()) == {"fp32"}
    assert not list((out).glob(".*tmp"))  # no leftovers of the atomic writes
    assert not (tmp_path / "work" / "search-state").exists()

    table = pd.read_csv(out / "pareto.csv")
    assert sorted(table["name"]) == sorted(names)
    assert (table["rank_in_method"] == 0).all()  # each method writes its non-dominated set
    assert table["rank_overall"].min() == 0
    saved = json.loads((out / "search.json").read_text())
    # the HWA baseline trains for search.hwa_epochs when given, not the adaptation's budget
    train_examples = len(load_splits(tiny_data).train[0])
    assert saved["methods"]["analog_hwa"]["details"]["steps"] == epoch_steps(0.3, train_examples,
                                                                             params.adapt.batch_size)
    assert epoch_steps(0.3, train_examples, params.adapt.batch_size) != adapt_steps(params, train_examples)
    ref = saved["hypervolume_reference"]
    assert ref["fp32_digital_size_mb"] == pytest.approx(table.loc[table["name"] == "fp32", "digital_size_mb"].item(),
                                                        rel=1e-4)
    for method in methods:
        entry = saved["methods"][method]
        assert entry["mappings"] == int((table["method"] == method).sum()) >= 1
        assert entry["search_seconds"] > 0
        # no adapt metrics.json beside the fixture's supernet: mapping time = the method's own time
        assert entry["mapping_seconds"] == pytest.approx(entry["search_seconds"], abs=2e-3)
        rows = table[table["method"] == method]
        F = np.column_stack([rows["accuracy"] / 100, rows["analog_mac_ratio"], rows["digital_size_mb"]])
        F[:, :2] *= -1
        hv = normalized_hypervolume(F, ref["lower"], ref["upper"], ref["ref"])
        assert entry["hypervolume"] == pytest.approx(hv, abs=1e-5)
        assert 0.0 < entry["hypervolume"] <= 1.1 ** 3
    # one reference for all: the union of every method's mappings covers at least each method's volume
    F_all = np.column_stack([-table["accuracy"] / 100, -table["analog_mac_ratio"], table["digital_size_mb"]])
    hv_all = normalized_hypervolume(F_all, ref["lower"], ref["upper"], ref["ref"])
    assert hv_all >= max(saved["methods"][m]["hypervolume"] for m in methods) - 1e-9
    assert hv_matrix([], ["accuracy"], ("max",)).shape == (0, 1)

    logged = MlflowClient(tracking_uri=mlflow_uri).get_run(run_id).data.metrics
    for method in methods:
        for key in ("hypervolume", "search_seconds", "mapping_seconds", "evaluations"):
            assert f"{method}.{key}" in logged
    assert logged["mps.evaluations"] == budget
    # the run's artifacts live beside its store (here the test's folder), not in the working tree
    client = MlflowClient(tracking_uri=mlflow_uri)
    artifacts = client.get_run(run_id).info.artifact_uri
    assert artifacts.startswith((tmp_path / "mlartifacts").as_uri() + "/"), artifacts

    # a method's result does not depend on the methods run before it (its random state is its own):
    # ODiMo's joint training draws aihwkit's noise from the global generator, which the methods
    # before it advance (ten of them in the full run, only MPS here)
    alone = params.model_copy(update={"search": params.search.model_copy(update={"baselines": ["odimo"]})})
    with stage_run("search", alone.digest(), alone.mlflow.experiment) as tracker:
        run(alone, tiny_data, tiny_supernet, tiny_pretrained, sens, tmp_path / "alone", tmp_path / "work2", tracker)
    again = json.loads((tmp_path / "alone" / "search.json").read_text())["methods"]["odimo"]["details"]["runs"]
    assert again == saved["methods"]["odimo"]["details"]["runs"]
    assert list((tmp_path / "mlartifacts").rglob("search.json"))


# --------------------------------------------------------------------------- share-stratified sampling
def test_tilted_draws_reach_each_analog_share_and_keep_small_layers_free(tiny):
    """The tilt solves for the asked expected analog-MAC share, leaves the distribution alone at
    zero tilt, and draws more analog MACs for a higher target; one target per stratum."""
    from mps.search.mps_search import (draw_tilted, expected_share, share_weights, solve_tilt, stratified_targets,
                                       tilted_probabilities)

    supernet = tiny[0]
    weights = share_weights(supernet)
    assert sum(weights.values()) == pytest.approx(1.0)
    probs = tilted_probabilities(supernet, uniform=True)
    for name, (ops, p) in probs(0.0).items():
        assert torch.allclose(p, torch.full((len(ops),), 1.0 / len(ops)))
    reach = expected_share(probs(1e4), weights)
    for target in (0.1, 0.5, 0.9 * reach):
        lam = solve_tilt(probs, weights, target)
        assert expected_share(probs(lam), weights) == pytest.approx(target, abs=1e-4)
    generator = torch.Generator().manual_seed(0)

    def mean_share(target):
        lam = solve_tilt(probs, weights, target)
        draws = [draw_tilted(supernet, probs, lam, generator) for _ in range(100)]
        return np.mean([sum(w for n, w in weights.items() if m[n] == "analog") for m in draws])
    low, high = mean_share(0.1), mean_share(0.9 * reach)
    assert low < 0.25 and high > 0.75 * reach
    targets = stratified_targets(5, torch.Generator().manual_seed(1))
    assert [int(t * 5) for t in targets] == [0, 1, 2, 3, 4]


def test_stratified_search_is_deterministic_and_starts_from_the_anchors(tiny):
    from mps.search.mps_search import uniform_paths

    supernet = tiny[0]
    params = tiny_params(**{"search.budget": 8, "search.iterations": 2, "search.pareto_size": 3,
                            "search.alpha_steps": 10, "search.extraction_samples": 64,
                            "search.sampling": "stratified"})
    runs = []
    for _ in range(2):
        ev = make_evaluator(tiny, budget=params.search.budget, name="mps")
        result = mps_search(supernet, ev, params.search, seed=5, log=lambda _msg: None)
        runs.append([e.key for e in result.evaluations])
    assert runs[0] == runs[1] and len(runs[0]) == 8
    assert runs[0][:3] == [mapping_key(a) for a in uniform_paths(supernet)]
    # search.draw_seed 0 is the run seed's sequence; another draw seed draws other mappings on the
    # same supernet and evaluator, from the same anchors (the ablation's searches per supernet)
    from mps.stages.search import mps_draw_seed

    assert mps_draw_seed(5, 0) == 5 and mps_draw_seed(5, 1) not in (5, mps_draw_seed(5, 2))
    ev = make_evaluator(tiny, budget=params.search.budget, name="mps")
    other = [e.key for e in mps_search(supernet, ev, params.search, seed=mps_draw_seed(5, 1),
                                       log=lambda _msg: None).evaluations]
    assert other[:3] == runs[0][:3] and other[3:] != runs[0][3:]


def test_sampling_knob_is_validated_before_any_work():
    from mps.config import parse_params

    with pytest.raises(ConfigError, match="search.sampling") as err:
        parse_params({"search": {"sampling": "uniform"}})
    assert "\n" not in str(err.value)
    assert parse_params({}).search.sampling == "stratified"
    assert parse_params({"search": {"sampling": "alphas"}}).search.sampling == "alphas"
    # the draw seed and the ablation's searches per supernet likewise
    for section, key, bad in (("search", "draw_seed", -1), ("ablation", "search_draws", 0)):
        with pytest.raises(ConfigError, match=f"{section}.{key}"):
            parse_params({section: {key: bad}})
    assert parse_params({}).search.draw_seed == 0 and parse_params({}).ablation.search_draws == 2


def test_sensitivity_anchors_follow_the_calibration_per_mac(tiny, tmp_path):
    """search.sensitivity_anchors: round 0 evaluates, after the uniform paths, the all-analog path
    with its 1 .. k most sensitive layers per MAC (the calibrate table) on INT8; the knob needs
    the order, and is validated at load."""
    from mps.config import parse_params
    from mps.search.mps_search import sensitive_first, sensitivity_anchors, uniform_paths

    supernet = tiny[0]
    analog_layers = [n for n in supernet.infos if "analog" in supernet.allowed[n]]
    macs = {n: supernet.infos[n].macs for n in analog_layers}
    small, large = min(analog_layers, key=macs.get), max(analog_layers, key=macs.get)
    assert macs[small] < macs[large]
    # the largest layer loses the most accuracy, the smallest less: per MAC the smallest comes first
    drops = {n: 0.0 for n in analog_layers} | {large: 2.0, small: 1.0}
    table = read_sensitivity(sensitivity_csv(tmp_path / "s.csv", supernet, drops))
    assert sensitivity_order(table, supernet, 86400.0)[-1] == large  # the greedy mapper's order: by drop
    first = sensitive_first(table, supernet, 86400.0)
    assert first[:2] == [small, large] and sorted(first) == sorted(analog_layers)

    anchors = sensitivity_anchors(supernet, first, 2)
    analog = supernet.uniform_mapping("analog")
    assert anchors == [{**analog, small: "int8"}, {**analog, small: "int8", large: "int8"}]
    params = tiny_params(**{"search.budget": 12, "search.iterations": 2, "search.pareto_size": 3,
                            "search.alpha_steps": 10, "search.extraction_samples": 64,
                            "search.sensitivity_anchors": 2})  # round 0: 5 evaluations, the 3 uniform paths + 2
    ev = make_evaluator(tiny, budget=params.search.budget, name="mps")
    result = mps_search(supernet, ev, params.search, seed=5, log=lambda _msg: None, most_sensitive=first)
    keys = [e.key for e in result.evaluations]
    assert keys[:5] == [mapping_key(a) for a in uniform_paths(supernet) + anchors]
    with pytest.raises(ValueError, match="most_sensitive"):
        mps_search(supernet, make_evaluator(tiny, budget=12), params.search, seed=5, log=lambda _msg: None)
    with pytest.raises(ConfigError, match="search.sensitivity_anchors"):
        parse_params({"search": {"sensitivity_anchors": -1}})


def test_sensitivity_anchors_need_the_calibration_and_count_its_time(tiny_data, tiny_supernet, tiny_pretrained,
                                                                      tmp_path):
    """The stage refuses anchors without the calibrate table before any work or output, and MPS's
    mapping time then includes the calibration, as the greedy mapper's does."""
    from mps.stages.search import mapping_seconds, run

    params = tiny_params(**{"search.sensitivity_anchors": 2, "search.baselines": ["int8"]})
    with pytest.raises(ConfigError, match="search.sensitivity_anchors is 2.*--sensitivity"):
        run(params, tiny_data, tiny_supernet, tiny_pretrained, None, tmp_path / "search", tmp_path / "work", None)
    assert not (tmp_path / "search").exists() and not (tmp_path / "work").exists()
    assert mapping_seconds("mps", 10.0, 100.0, 5.0, uses_calibration=True)["mapping_seconds"] == 115.0
    assert mapping_seconds("mps", 10.0, 100.0, 5.0)["mapping_seconds"] == 110.0
    assert mapping_seconds("greedy", 10.0, 100.0, 5.0)["mapping_seconds"] == 115.0
