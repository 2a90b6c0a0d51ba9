"""Stage ``evaluate``: drift evaluation against aihwkit's own path, drift trend, outputs,
MLflow names, resume, bad inputs.  Tiny shapes: the analog simulation is the slow part, so
only the tests about analog physics evaluate analog layers."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny_params
from mps.config import ConfigError
from mps.stages import evaluate as ev
from mps.tracking import NullTracker

SEED = 0
TIMES = [1.0, 86400.0, 31536000.0]


def _params(**extra):
    return tiny_params(**{"evaluate.max_test_examples": 48, "evaluate.repeats": 2, "evaluate.batch_size": 32,
                          "evaluate.bn_recalibration_batches": 1, "evaluate.drift_times": TIMES,
                          "evaluate.reference_time": 86400.0, **extra})


@pytest.fixture(scope="module")
def supernet(tiny_supernet):
    from mps.supernet import load_supernet

    return load_supernet(tiny_supernet)


def _write_mappings(folder: Path, supernet, which: dict[str, dict[str, str]], model_id: str | None = None) -> Path:
    from mps.supernet import MappingFile

    folder.mkdir(parents=True, exist_ok=True)
    for name, layers in which.items():
        method = name.split("-")[0]
        MappingFile(model_id or supernet.meta["model_id"], name, method, layers).save(folder / f"{name}.json")
    return folder


def _digital_mappings(sn) -> dict[str, dict[str, str]]:
    """Fast mappings (no analog layer): the FP32 baseline, all-int8, all-fp16, and int8 with skips."""
    mixed = {n: ("skip" if "skip" in ops and i % 2 else "int8") for i, (n, ops) in enumerate(sn.allowed.items())}
    return {"fp32": {n: "fp32" for n in sn.infos}, "int8-all": sn.uniform_mapping("int8"),
            "fp16-all": sn.uniform_mapping("fp16"), "random-00": mixed}


class InterruptAfter:
    """A tracker that records metrics and raises KeyboardInterrupt (as Ctrl-C would) once it
    has seen ``n`` per-mapping metric logs."""

    def __init__(self, n: int | None):
        self.n, self.metrics, self.calls = n, {}, 0

    def log_params(self, params):
        pass

    def log_metrics(self, metrics, step=None):
        self.metrics.update(metrics)
        self.calls += 1
        if self.n is not None and self.calls >= self.n:
            raise KeyboardInterrupt

    def log_artifact(self, path, artifact_path=None):
        pass

    def set_tags(self, tags):
        pass


# --------------------------------------------------------------------------- physics
def _float_copy(extracted: torch.nn.Module, pretrained_path: Path) -> torch.nn.Module:
    """The extracted model as a plain float model: its analog layers' weights (read back from
    the tiles) and its BN statistics, in the original architecture."""
    from mps.stages.pretrain import load_pretrained
    from mps.analog.chip import ANALOG_LAYER_TYPES

    model, _ = load_pretrained(pretrained_path)
    state = extracted.state_dict()
    own = model.state_dict()
    model.load_state_dict({k: (state[k] if k in state and state[k].shape == v.shape else v) for k, v in own.items()})
    for name, module in extracted.named_modules():
        if isinstance(module, ANALOG_LAYER_TYPES):
            target = model.get_submodule(name.rsplit(".layer", 1)[0])
            weight, bias = module.get_weights()
            with torch.no_grad():
                target.weight.copy_(weight.reshape(target.weight.shape))
                if bias is not None:
                    target.bias.copy_(bias)
    return model.eval()


def _input_ranges(extracted: torch.nn.Module) -> dict[str, list[torch.Tensor]]:
    """Each analog layer's tile input ranges, by the layer's name in the float architecture."""
    from mps.analog.chip import ANALOG_LAYER_TYPES

    return {name.rsplit(".layer", 1)[0]: [t.input_range.detach().clone() for t in m.analog_tiles()]
            for name, m in extracted.named_modules() if isinstance(m, ANALOG_LAYER_TYPES)}


def _aihwkit_grid(float_model, rpu_config, x, y, times, repeats, seed, batch_size, ranges=None) -> np.ndarray:
    """aihwkit's own path: convert_to_analog (with the given tiles' input ranges), then per repeat
    program_analog_weights once and drift_analog_weights to each time."""
    from aihwkit.nn import AnalogConv2d, AnalogLinear
    from aihwkit.nn.conversion import convert_to_analog

    out = np.zeros((repeats, len(times)))
    for r in range(repeats):
        analog = convert_to_analog(float_model, rpu_config).eval()  # fresh tiles (conversion draws from the RNG)
        layers = [m for m in analog.modules() if isinstance(m, (AnalogConv2d, AnalogLinear))]
        assert layers
        for name, module in analog.named_modules():
            if isinstance(module, (AnalogConv2d, AnalogLinear)) and ranges:
                with torch.no_grad():
                    for tile, value in zip(module.analog_tiles(), ranges[name]):
                        tile.input_range.copy_(value)
        torch.manual_seed(seed + r)
        with torch.no_grad():
            for layer in layers:
                layer.program_analog_weights()
            for j, t in enumerate(times):
                for layer in layers:
                    layer.drift_analog_weights(t)
                pred = torch.cat([analog(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).argmax(1)
                out[r, j] = float((pred == y).float().mean() * 100)
    return out


def _small_evalset(tiny_data, n: int, calib: int):
    """A few test examples, and a few training examples as one BN-recalibration batch."""
    from mps.evaluation import EvalSet
    from mps.stages.common import eval_set, load_splits

    splits = load_splits(tiny_data)
    data = eval_set(splits, "test", n, SEED, n, calib_batches=1)
    return EvalSet(data.x, data.y, calib_x=data.calib_x[:calib], batch_size=n, calib_batches=1,
                   calib_batch_size=calib)


def test_all_analog_drift_matches_aihwkit(supernet, tiny_data, tiny_pretrained):
    from mps.cost_model import parse_hardware_profile
    from mps.supernet import extract
    from mps.analog.chip import rpu_config_from_profile

    sn, ckpt = supernet
    mapping = sn.uniform_mapping("analog")
    assert set(mapping.values()) == {"analog"}
    data = _small_evalset(tiny_data, 24, 32)
    times = [1.0, 31536000.0]
    model = extract(sn, mapping)
    grid = ev.evaluate_grid(model, data, times, 2, SEED, recalibrate=True)
    # the model now carries its recalibrated BN statistics and, after the evaluator's reset, its trained weights
    reference = _aihwkit_grid(_float_copy(model, tiny_pretrained),
                              rpu_config_from_profile(parse_hardware_profile(ckpt["profile"]).analog),
                              data.x, data.y, times, 2, SEED, data.batch_size, _input_ranges(model))
    assert grid.shape == (2, 2)
    # same weights, same configuration, same seeds, same order of random draws: the same numbers.
    # Accuracies are counts (steps of 100/24 points); fp32 kernel differences between the two
    # forwards move logits by ~1e-6, which flips a prediction only at a near-exact tie.
    np.testing.assert_allclose(grid, reference, atol=1e-9)


@pytest.mark.parametrize("compensation", [False, True])
def test_accuracy_does_not_rise_with_drift(tiny_data, tiny_pretrained, compensation):
    """Fixed seeds, 3 repeats; the pretrained model with its smaller (7x7, 14x14, linear) layers
    on analog, the rest fp32 (the analog simulation of the 28x28 layers is what costs time)."""
    from mps.cost_model import load_hardware_profile
    from mps.stages.pretrain import load_pretrained
    from mps.supernet import realize
    from mps.supernet.convert import trace_layers

    params = _params()
    profile = load_hardware_profile(params.hardware_profile)
    profile = profile.model_copy(update={"analog": profile.analog.model_copy(update={"drift_compensation": compensation})})
    model, ckpt = load_pretrained(tiny_pretrained)
    infos, _ = trace_layers(model, tuple(ckpt["image_shape"]))
    mapping = {n: "analog" if info.out_positions <= 196 else "fp32" for n, info in infos.items()}
    assert 0 < sum(op == "analog" for op in mapping.values()) < len(mapping)
    analog = realize(model, mapping, profile, tuple(ckpt["image_shape"])).eval()
    data = _small_evalset(tiny_data, 48, 32)
    grid = ev.evaluate_grid(analog, data, [1.0, 31536000.0], 3, SEED, recalibrate=False)
    means = grid.mean(0)
    assert means[0] >= means[-1] - 2.0, means
    if not compensation:  # uncompensated conductance decay is large after a year
        assert means[0] > means[-1], means


# --------------------------------------------------------------------------- the stage
@pytest.fixture(scope="module")
def digital_run(supernet, tiny_data, tiny_supernet, tiny_pretrained, tmp_path_factory, mlflow_db):
    """The stage on four digital mappings, logged to a real (temporary) MLflow store."""
    from mps.tracking import stage_run

    sn, _ = supernet
    root = tmp_path_factory.mktemp("evaluate")
    mappings = _write_mappings(root / "mappings", sn, _digital_mappings(sn))
    db = root / "mlflow.db"
    shutil.copy(mlflow_db, db)
    params = _params()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
        mp.delenv("MPS_NO_MLFLOW", raising=False)
        with stage_run("evaluate", params.digest(), "test-evaluate", {}) as tracker:
            summary = ev.run(params, tiny_data, tiny_supernet, tiny_pretrained, mappings, root / "out",
                             root / "work", tracker)
            run_id = tracker.run_id
    return {"root": root, "out": root / "out", "mappings": mappings, "summary": summary, "params": params,
            "uri": f"sqlite:///{db}", "run_id": run_id}


def test_outputs_have_the_paper_columns(digital_run):
    out = digital_run["out"]
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns) == ["Model", "Method", "Mapping", "Accuracy_percent", "Accuracy_mean",
                                     "Accuracy_std", "Analog_Tile_Util_percent", "Analog_MAC_Ratio_percent",
                                     "Params_M", "Digital_Size_MB", "Analog_Tiles", "Latency_ms",
                                     "Energy_uJ_per_sample"]
    assert list(results["Mapping"]) == ["fp16-all", "fp32", "int8-all", "random-00"]  # file-name order
    assert set(results["Model"]) == {"resnet8"}
    row = results.set_index("Mapping").loc["int8-all"]
    assert row["Accuracy_percent"] == f"{row['Accuracy_mean']:.2f}±{row['Accuracy_std']:.2f}"
    assert row["Analog_MAC_Ratio_percent"] == 0 and row["Analog_Tiles"] == 0
    sizes = results.set_index("Mapping")["Digital_Size_MB"]
    assert sizes["fp32"] == pytest.approx(2 * sizes["fp16-all"]) == pytest.approx(4 * sizes["int8-all"])
    assert sizes["random-00"] < sizes["int8-all"]  # skipped layers hold no weights

    drift = pd.read_csv(out / "drift.csv")
    assert list(drift.columns) == ["mapping", "method", "drift_time", "repeat", "accuracy"]
    assert len(drift) == 4 * 2 * len(TIMES)
    # digital mappings are drift-free, and results.csv's numbers are drift.csv's at the reference time
    for name, rows in drift.groupby("mapping"):
        assert rows["accuracy"].nunique() == 1
        at_ref = rows[rows["drift_time"] == 86400.0]["accuracy"]
        assert results.set_index("Mapping").loc[name, "Accuracy_mean"] == pytest.approx(at_ref.mean())

    metrics = json.loads((out / "methods.json").read_text())
    assert set(metrics) == {"fp32", "fp16", "int8", "random"}
    assert set(metrics["fp32"]) == {"accuracy"}
    assert {"accuracy_1s", "accuracy_1d", "accuracy_1y", "accuracy_1d_std"} <= set(metrics["int8"])
    assert metrics["int8"]["accuracy_1d"] == results.set_index("Mapping").loc["int8-all", "Accuracy_mean"]
    headline = json.loads((out / "metrics.json").read_text())  # what `dvc metrics show` lists
    assert headline["fp32"] == metrics["fp32"]
    assert headline["int8"] == {k: metrics["int8"][k] for k in ("accuracy_1d", "accuracy_1y")}


def test_mlflow_metric_names_and_artifacts(digital_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=digital_run["uri"])
    run = client.get_run(digital_run["run_id"])
    metrics = run.data.metrics
    for name in ("fp32", "int8-all", "fp16-all", "random-00"):
        for label in ("1s", "1d", "1y"):
            assert f"{name}.accuracy_{label}" in metrics
        assert f"{name}.analog_mac_ratio_percent" in metrics and f"{name}.digital_size_mb" in metrics
    assert "fp32.accuracy" in metrics and "int8.accuracy_1d" in metrics
    assert "timing.inference_seconds" in metrics and metrics["evaluate_seconds"] > 0
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"results.csv", "drift.csv", "metrics.json", "methods.json"} <= logged


def test_work_dir_is_cleared_and_profile_printed(digital_run):
    assert not (digital_run["root"] / "work").exists()
    summary = digital_run["summary"]
    assert summary["resumed"] == [] and len(summary["evaluated"]) == 4
    assert summary["summary"].startswith("evaluate timing:")
    assert summary["timing"]["timing.inference_seconds"] > 0
    assert summary["timing"]["timing.analog_forward_seconds"] == 0  # no analog layer in these mappings


def test_resume_skips_mappings_already_done(digital_run, tiny_data, tiny_supernet, tiny_pretrained, tmp_path):
    params, mappings = digital_run["params"], digital_run["mappings"]
    out, work = tmp_path / "out", tmp_path / "work"
    # 1) interrupted after the second mapping was evaluated and saved (its metrics log raises)
    with pytest.raises(KeyboardInterrupt):
        ev.run(params, tiny_data, tiny_supernet, tiny_pretrained, mappings, out, work, InterruptAfter(2))
    assert not (out / "results.csv").exists()  # nothing under a final name
    partial = json.loads((work / ev.PARTIAL_NAME).read_text())
    assert sorted(partial["done"]) == ["fp16-all", "fp32"]
    # 2) a done mapping whose file changed since (another checksum) is evaluated again
    partial["done"]["fp32"]["checksum"] = "0" * 64
    (work / ev.PARTIAL_NAME).write_text(json.dumps(partial))
    # 3) the rerun resumes the rest and ends where an uninterrupted run ends
    tracker = InterruptAfter(None)
    summary = ev.run(params, tiny_data, tiny_supernet, tiny_pretrained, mappings, out, work, tracker)
    assert summary["resumed"] == ["fp16-all"]
    assert summary["evaluated"] == ["fp32", "int8-all", "random-00"]
    for name in ("results.csv", "drift.csv", "metrics.json", "methods.json"):
        assert (out / name).read_bytes() == (digital_run["out"] / name).read_bytes(), name
    assert "fp16-all.accuracy_1d" in tracker.metrics  # resumed mappings are logged too
    assert not work.exists()


def test_partial_for_other_params_is_ignored(digital_run, tiny_data, tiny_supernet, tiny_pretrained, tmp_path):
    params = digital_run["params"]
    key = ev.inputs_key(params, tiny_supernet, tiny_pretrained, "x")
    partial = ev.PartialResults(tmp_path / "work", key)
    assert partial.load().done == {}
    other = _params(seed=5)
    assert ev.inputs_key(other, tiny_supernet, tiny_pretrained, "x") != key


def test_bad_mappings_fail_before_any_output(supernet, tiny_data, tiny_supernet, tiny_pretrained, tmp_path):
    from mps.supernet import MappingError

    sn, _ = supernet
    params = _params()
    run = lambda folder: ev.run(params, tiny_data, tiny_supernet, tiny_pretrained, folder,  # noqa: E731
                                tmp_path / "out", tmp_path / "work", NullTracker())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no mapping files"):
        run(tmp_path / "empty")
    search_out = tmp_path / "search"  # the search's output folder instead of its mappings/
    _write_mappings(search_out / "mappings", sn, {"int8-x": sn.uniform_mapping("int8")})
    (search_out / "search.json").write_text("{}")
    with pytest.raises(ConfigError, match="search output folder.*fix: pass --mappings " + re.escape(str(search_out / "mappings"))):
        run(search_out)
    with pytest.raises(MappingError, match="not 'resnet8@fashion-mnist'"):
        run(_write_mappings(tmp_path / "other", sn, {"int8-x": sn.uniform_mapping("int8")}, model_id="resnet20@cifar10"))
    bad = dict(sn.uniform_mapping("int8"))
    bad.pop(next(iter(bad)))
    bad["nope"] = "int8"
    with pytest.raises(MappingError, match="missing layers: conv1.*unknown layers: nope"):
        run(_write_mappings(tmp_path / "bad", sn, {"int8-bad": bad}))
    last = list(sn.infos)[-1]
    with pytest.raises(MappingError, match="not allowed"):
        run(_write_mappings(tmp_path / "skip", sn, {"skip-x": {**sn.uniform_mapping("int8"), last: "skip"}}))
    dup = _write_mappings(tmp_path / "dup", sn, {"int8-a": sn.uniform_mapping("int8")})
    shutil.copy(dup / "int8-a.json", dup / "int8-b.json")
    with pytest.raises(MappingError, match="also used by"):
        run(dup)
    assert not (tmp_path / "out").exists()


def test_a_network_named_twice_is_scored_once(supernet, tiny_data, tiny_supernet, tiny_pretrained, tmp_path):
    """The ``analog`` baseline and MPS's all-analog path (or one mapping in the MPS and MPAAS
    sets) name the same network: it is scored once, and the copy's grid is the grid a
    second evaluation would give.  The same layers realised from another source are another network."""
    from mps.supernet import MappingFile

    sn, _ = supernet
    analog = sn.uniform_mapping("analog")
    both = _write_mappings(tmp_path / "both", sn, {"analog": analog, "mps-02": analog})
    other = _write_mappings(tmp_path / "other", sn, {"analog": analog})
    MappingFile(sn.meta["model_id"], "straight", "analog_straight", analog, source="pretrained").save(
        other / "straight.json")
    a, straight = ev.load_candidates(other, sn.meta["model_id"], sn.allowed, sn.ties)
    assert a.network != straight.network

    params = _params(**{"evaluate.repeats": 1})
    summary = ev.run(params, tiny_data, tiny_supernet, tiny_pretrained, both, tmp_path / "out", tmp_path / "w",
                     NullTracker())
    assert summary["evaluated"] == ["analog"] and summary["shared"] == ["mps-02"]
    assert "mps-02" in summary["summary"]
    drift = pd.read_csv(tmp_path / "out" / "drift.csv").set_index(["mapping", "drift_time", "repeat"])["accuracy"]
    alone = _write_mappings(tmp_path / "alone", sn, {"mps-02": analog})
    ev.run(params, tiny_data, tiny_supernet, tiny_pretrained, alone, tmp_path / "out2", tmp_path / "w2", NullTracker())
    again = pd.read_csv(tmp_path / "out2" / "drift.csv").set_index(["mapping", "drift_time", "repeat"])["accuracy"]
    assert drift.loc["mps-02"].equals(again.loc["mps-02"]) and drift.loc["mps-02"].equals(drift.loc["analog"])
