"""Stage ``report``: built from a tiny evaluate run; every plot, the table, the constraint."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from conftest import tiny_params
from mps.artifacts import ArtifactError
from mps.config import ConfigError
from mps.stages import report as rp
from mps.tracking import NullTracker

TIMES = [1.0, 86400.0, 31536000.0]


def _params(**extra):
    return tiny_params(**{"evaluate.max_test_examples": 32, "evaluate.repeats": 2, "evaluate.batch_size": 32,
                          "evaluate.bn_recalibration_batches": 1, "evaluate.drift_times": TIMES,
                          "evaluate.reference_time": 86400.0, **extra})


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tiny_supernet, tiny_pretrained, tmp_path_factory):
    """A tiny search output (hand-made: FP32, INT8, and three 'mps' mappings with their small
    7x7/linear layers on analog), its evaluation, and a calibration table."""
    from mps.stages.evaluate import run as evaluate
    from mps.supernet import MappingFile, load_supernet

    sn, _ = load_supernet(tiny_supernet)
    root = tmp_path_factory.mktemp("report")
    search, calibrate = root / "search", root / "calibrate"
    (search / "mappings").mkdir(parents=True)
    calibrate.mkdir()
    names = list(sn.infos)
    small = [n for n, i in sn.infos.items() if i.out_positions <= 49]
    int8 = sn.uniform_mapping("int8")
    mappings = {
        "fp32": ("fp32", {n: "fp32" for n in names}),
        "int8": ("int8", int8),
        "mps-00": ("mps", {**int8, names[-1]: "analog"}),
        "mps-01": ("mps", {**int8, **{n: "analog" for n in small}}),
        "mps-02": ("mps", {**sn.uniform_mapping("fp16"), **{n: "analog" for n in small[-2:]}}),
    }
    for name, (method, layers) in mappings.items():
        MappingFile(sn.meta["model_id"], name, method, layers, {"accuracy": 50.0}).save(search / "mappings" / f"{name}.json")
    pd.DataFrame([{"name": n, "method": m, "file": f"mappings/{n}.json", "accuracy": 50.0, "analog_mac_ratio": 0.1,
                   "digital_size_mb": 0.1, "rank_in_method": 0} for n, (m, _) in mappings.items()]
                 ).to_csv(search / "pareto.csv", index=False)
    (search / "search.json").write_text(json.dumps({"methods": {
        "mps": {"hypervolume": 0.42, "search_seconds": 12.5, "evaluations": 8, "mapping_seconds": 30.5,
                "details": {"hypervolume": 9.0}},
        "int8": {"hypervolume": 0.1, "search_seconds": 0.5, "evaluations": 1},
        "fp32": {"hypervolume": 0.05, "search_seconds": 0.4, "evaluations": 1}}}))
    pd.DataFrame([{"layer": n, "drift_time": t, "mean_drop": float(i % 5), "std_drop": 0.1}
                  for i, n in enumerate(names) for t in (3600.0, 86400.0)]).to_csv(calibrate / "sensitivity.csv",
                                                                                  index=False)
    params = _params()
    evaluate(params, tiny_data, tiny_supernet, tiny_pretrained, search / "mappings", root / "evaluate",
             root / "work", NullTracker())
    return {"root": root, "evaluate": root / "evaluate", "search": search, "calibrate": calibrate, "params": params}


def _report(tiny_run, out: Path, **overrides):
    params = _params(**overrides)
    return rp.run(params, tiny_run["evaluate"], tiny_run["search"], tiny_run["calibrate"], out, NullTracker())


def test_report_contains_every_plot_and_the_table(tiny_run, tmp_path):
    out = tmp_path / "report"
    summary = _report(tiny_run, out, **{"report.max_acc_drop": 100.0})
    for name in rp.OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in ("pareto.png", "drift.png", "layers.png"):
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.size[0] > 200 and img.size[1] > 200
            img.verify()

    html = (out / "report.html").read_text()
    for name in ("pareto.png", "drift.png", "layers.png"):
        assert f'src="{name}"' in html
    assert "<script" not in html.lower() and "http" not in html.lower()  # self-contained, nothing from the web
    assert html.count("<table>") >= 3

    md = (out / "report.md").read_text()
    for name in ("pareto.png", "drift.png", "layers.png"):
        assert f"]({name})" in md
    results = pd.read_csv(tiny_run["evaluate"] / "results.csv")
    assert ("| Method | Mapping | Accuracy_percent (1d) | Worst seed (1d) | Accuracy_percent (1y) | Worst seed (1y) "
            "| Analog_MAC_Ratio_percent |") in md
    for _, row in results.iterrows():
        assert f"| {row['Method']} | {row['Mapping']} | {row['Accuracy_percent']} |" in md
    # energy and latency of each method's best mapping under every shipped profile, both analog energy models
    assert "## Energy and latency under every hardware profile" in md
    for label in ("paper", "paper/per_active", "hermes-14nm", "projected", "pcm_default"):
        assert f"| {label} | " in md, label
    assert "| int8 (int8) µJ / ms |" in md and "| Lowest energy |" in md
    # each method's hypervolume and search time from search.json (not from the nested details)
    assert "| mps | 3 |" in md and "| 0.42 |" in md and "| 12.5 |" in md and "| 9 |" not in md
    # mapping time beside the hypervolume, and plotted against it; the equal-budget race as its own table
    assert "Mapping time (s)" in md and "| 30.5 |" in md and "](mapping_time.png)" in md
    assert "## Equal evaluation budget" in md
    # the second test hypervolume, over the useful accuracy range, with its bounds stated
    assert "Hypervolume (test, 1d, accuracy FP32−5…FP32)" in md and "from FP32 − 5 points to FP32" in md

    # the constraint (loose here: every mapping meets it), maximising the analog MAC ratio
    pool = results[results["Method"] != "fp32"]
    best = pool.sort_values(["Analog_MAC_Ratio_percent", "Accuracy_mean"], ascending=False).iloc[0]
    assert summary["selected"] == best["Mapping"] and summary["layers_mapping"] == best["Mapping"]
    assert f"**{best['Mapping']}** ({best['Method']}) meets the constraint" in md
    assert f"<strong>{best['Mapping']}</strong>" in html


def test_report_is_deterministic(tiny_run, tmp_path):
    _report(tiny_run, tmp_path / "a")
    _report(tiny_run, tmp_path / "b")
    for name in rp.OUTPUTS:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_report_says_when_no_mapping_meets_the_constraint(tiny_run, tmp_path):
    results = pd.read_csv(tiny_run["evaluate"] / "results.csv")
    fp32 = float(results.loc[results["Method"] == "fp32", "Accuracy_mean"].iloc[0])
    if (results.loc[results["Method"] != "fp32", "Accuracy_mean"] >= fp32).any():
        pytest.skip("a mapping matches FP32 exactly on this tiny run")
    summary = _report(tiny_run, tmp_path / "r", **{"report.max_acc_drop": 0.0, "report.layers_mapping": "mps-01"})
    assert summary["selected"] is None and summary["layers_mapping"] == "mps-01"
    md = (tmp_path / "r" / "report.md").read_text()
    assert "No mapping stays within 0 points of FP32" in md and "The closest is" in md


def test_select_mapping_known_answer():
    df = pd.DataFrame({"Method": ["fp32", "mps", "mps", "analog", "int8"],
                       "Mapping": ["fp32", "mps-00", "mps-01", "analog", "int8"],
                       "Accuracy_percent": ["90.00±0.00", "89.50±0.20", "88.00±0.30", "85.00±1.00", "89.90±0.00"],
                       "Accuracy_mean": [90.0, 89.5, 88.0, 85.0, 89.9],
                       "Analog_MAC_Ratio_percent": [0.0, 70.0, 90.0, 100.0, 0.0],
                       "Digital_Size_MB": [1.0, 0.1, 0.05, 0.0, 0.25]})
    chosen, text = rp.select_mapping(df, 90.0, 1.0, "analog_mac_ratio")
    assert chosen["Mapping"] == "mps-00" and "mps-00" in text and "2 of 4 mappings" in text
    chosen, _ = rp.select_mapping(df, 90.0, 2.5, "analog_mac_ratio")
    assert chosen["Mapping"] == "mps-01"
    chosen, _ = rp.select_mapping(df, 90.0, 2.5, "accuracy")
    assert chosen["Mapping"] == "int8"
    chosen, text = rp.select_mapping(df, 90.0, 0.05, "analog_mac_ratio")
    assert chosen is None and "closest is int8" in text
    chosen, text = rp.select_mapping(df[df["Method"] != "fp32"], None, 1.0, "accuracy")
    assert chosen is None and "No FP32 baseline" in text


def test_search_summary_reads_nested_and_flat_layouts():
    nested = {"methods": {"mps": {"hypervolume": 0.5, "search_seconds": 3.0, "evaluations": 8, "mapping_seconds": 7.0,
                                  "details": {"hypervolume": 1.0}}}, "hypervolume_reference": {"x": 1}}
    flat = {"mps.hypervolume": 0.5, "mps.search_seconds": 3.0, "nsga2.hypervolume": 0.25}
    a = rp.search_summary(nested, ["mps", "nsga2"]).set_index("Method")
    assert a.loc["mps", "search_hypervolume"] == 0.5 and a.loc["mps", "evaluations"] == 8
    assert a.loc["mps", "mapping_seconds"] == 7.0 and pd.isna(a.loc["nsga2", "mapping_seconds"])
    assert pd.isna(a.loc["nsga2", "search_hypervolume"])
    b = rp.search_summary(flat, ["mps", "nsga2"]).set_index("Method")
    assert b.loc["nsga2", "search_hypervolume"] == 0.25 and b.loc["mps", "search_seconds"] == 3.0


def test_bad_inputs_fail_before_any_output(tiny_run, tmp_path):
    import shutil

    broken = tmp_path / "evaluate"
    shutil.copytree(tiny_run["evaluate"], broken)
    results = pd.read_csv(broken / "results.csv").drop(columns=["Analog_Tiles"])
    results.to_csv(broken / "results.csv", index=False)
    params = _params()
    with pytest.raises(ArtifactError, match="lacks columns Analog_Tiles"):
        rp.run(params, broken, tiny_run["search"], tiny_run["calibrate"], tmp_path / "out", NullTracker())
    with pytest.raises(ArtifactError, match="sensitivity table not found.*mps calibrate"):
        rp.run(params, tiny_run["evaluate"], tiny_run["search"], tmp_path, tmp_path / "out", NullTracker())
    with pytest.raises(ConfigError, match="report.layers_mapping: no mapping named 'nope'"):
        _report(tiny_run, tmp_path / "out", **{"report.layers_mapping": "nope"})
    with pytest.raises(ConfigError, match="no results at evaluate.reference_time"):
        rp.run(_params(**{"evaluate.drift_times": [3600.0], "evaluate.reference_time": 3600.0}),
               tiny_run["evaluate"], tiny_run["search"], tiny_run["calibrate"], tmp_path / "out", NullTracker())
    assert not (tmp_path / "out").exists()


class _Recorder(NullTracker):
    """Records what is logged; its ``parent`` (the pipeline's run) is a second recorder."""

    def __init__(self, parent: "_Recorder | None" = None):
        self.params, self.metrics, self._parent = {}, {}, parent

    def log_params(self, params):
        self.params.update(params)

    def log_metrics(self, metrics, step=None):
        self.metrics.update(metrics)

    @property
    def parent(self):
        return self._parent or self


def test_report_logs_the_pipeline_headline_to_the_parent_run(tiny_run, tmp_path):
    pipeline = _Recorder()
    params = _params(**{"report.max_acc_drop": 100.0})
    rp.run(params, tiny_run["evaluate"], tiny_run["search"], tiny_run["calibrate"], tmp_path / "r", _Recorder(pipeline))
    assert pipeline.params["model"] == "resnet8" and pipeline.params["dataset"] == "fashion-mnist"
    assert pipeline.params["budget.search_evaluations"] == params.search.budget
    assert {"search_space", "hardware_profile", "budget.evaluate_repeats"} <= set(pipeline.params)
    results = pd.read_csv(tiny_run["evaluate"] / "results.csv")
    best = results[results["Method"] == "mps"]["Accuracy_mean"].max()
    assert pipeline.metrics["mps.best_accuracy_1d"] == pytest.approx(best)
    assert pipeline.metrics["mps.mapping_seconds"] == 12.5  # search.json's search time
    for key in ("mps.accuracy_1y", "mps.energy_uj", "mps.hypervolume", "mps.hypervolume_useful", "int8.energy_uj",
                "selected.energy_uj"):
        assert key in pipeline.metrics, key
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())  # the DVC headline
    assert saved["constraint_met"] == 1.0 and "selected.energy_uj" in saved

    # in a sweep the grid's reports share one parent: their keys carry the run
    pipeline = _Recorder()
    params = _params(**{"sweep.seeds": [0, 1]})
    rp.run(params, tiny_run["evaluate"], tiny_run["search"], tiny_run["calibrate"], tmp_path / "s", _Recorder(pipeline))
    assert "fashion-mnist/resnet8/s0/mps.best_accuracy_1d" in pipeline.metrics
    assert "fashion-mnist/resnet8/s0/model" in pipeline.params
