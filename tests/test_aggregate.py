"""The sweep summary: best mapping per method and run, then mean ± std over seeds."""

from __future__ import annotations

import pandas as pd
import pytest

from mps.artifacts import ArtifactError
from mps.stages.aggregate import HARDWARE, read_runs, summarise


def _results(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    base = {h: 1.0 for h in HARDWARE}
    pd.DataFrame([{**base, **r} for r in rows]).to_csv(path, index=False)
    return path


def test_summary_takes_best_mapping_per_method_then_seed_statistics(tmp_path):
    paths = [
        _results(tmp_path / "fashion-mnist/resnet8/s0/evaluate/results.csv", [
            {"Method": "mps", "Mapping": "mps-00", "Accuracy_mean": 90.0, "Analog_MAC_Ratio_percent": 70.0},
            {"Method": "mps", "Mapping": "mps-01", "Accuracy_mean": 92.0, "Analog_MAC_Ratio_percent": 50.0},
            {"Method": "analog", "Mapping": "analog", "Accuracy_mean": 85.0}]),
        _results(tmp_path / "fashion-mnist/resnet8/s1/evaluate/results.csv", [
            {"Method": "mps", "Mapping": "mps-00", "Accuracy_mean": 94.0, "Analog_MAC_Ratio_percent": 30.0},
            {"Method": "analog", "Mapping": "analog", "Accuracy_mean": 87.0}]),
    ]
    summary = summarise(read_runs(paths)).set_index("Method")
    assert summary.loc["mps", "Seeds"] == 2
    assert summary.loc["mps", "Accuracy_mean"] == pytest.approx(93.0)
    assert summary.loc["mps", "Accuracy_mean_std"] == pytest.approx(1.0)
    assert summary.loc["mps", "Analog_MAC_Ratio_percent"] == pytest.approx(40.0)
    assert summary.loc["analog", "Accuracy_percent"] == "86.00±1.00"


def test_bad_paths_are_clear_errors(tmp_path):
    with pytest.raises(ArtifactError, match="fix"):
        read_runs([tmp_path / "somewhere.csv"])
    with pytest.raises(ArtifactError, match="not found"):
        read_runs([tmp_path / "d/m/s0/evaluate/results.csv"])


def _run(root, seed, rows, accuracies, seconds):
    """One run's results.csv, drift.csv (two programming seeds at 1 day and 1 year) and search.json."""
    import json

    path = _results(root / f"fashion-mnist/resnet20/s{seed}/evaluate/results.csv", rows)
    drift = [{"mapping": m, "method": m.split("-")[0], "drift_time": t, "repeat": r, "accuracy": acc[i] + r}
             for m, acc in accuracies.items() for i, t in enumerate((86400.0, 31536000.0)) for r in (0, 1)]
    pd.DataFrame(drift).to_csv(path.parent / "drift.csv", index=False)
    (path.parent.parent / "search").mkdir(parents=True, exist_ok=True)
    (path.parent.parent / "search" / "search.json").write_text(
        json.dumps({"methods": {m: {"mapping_seconds": s} for m, s in seconds.items()}}))
    return path


def test_pick_mapping_prefers_analog_share_then_closeness_to_fp32_then_accuracy():
    from mps.stages.aggregate import pick_mapping

    rows = pd.DataFrame({"Mapping": ["a", "b", "c"], "Accuracy_mean": [91.0, 90.0, 85.0],
                         "Analog_MAC_Ratio_percent": [40.0, 60.0, 75.0]})
    assert pick_mapping(rows, 91.5, 70.0, 1.0)[0]["Mapping"] == "c"          # the only one >= 70 %
    assert pick_mapping(rows, 91.5, 80.0, 1.0)[0]["Mapping"] == "a"          # none >= 80 %: within 1 of FP32
    assert pick_mapping(rows, 91.5, 80.0, 2.0)[0]["Mapping"] == "b"          # the most analog within 2
    chosen, rule = pick_mapping(rows, 99.0, 80.0, 1.0)
    assert chosen["Mapping"] == "a" and rule == "most accurate"


def test_methods_at_a_glance_picks_one_mapping_per_method_with_both_drift_times(tmp_path):
    from mps.stages.aggregate import glance_markdown, methods_at_a_glance

    rows = [{"Method": "fp32", "Mapping": "fp32", "Accuracy_mean": 92.0, "Analog_MAC_Ratio_percent": 0.0},
            {"Method": "analog_hwa", "Mapping": "analog_hwa", "Accuracy_mean": 90.0, "Analog_MAC_Ratio_percent": 100.0},
            {"Method": "mps", "Mapping": "mps-00", "Accuracy_mean": 91.8, "Analog_MAC_Ratio_percent": 50.0},
            {"Method": "mps", "Mapping": "mps-01", "Accuracy_mean": 91.0, "Analog_MAC_Ratio_percent": 80.0},
            {"Method": "random", "Mapping": "random-00", "Accuracy_mean": 10.0, "Analog_MAC_Ratio_percent": 0.0}]
    acc = {"fp32": (92.0, 92.0), "analog_hwa": (90.0, 88.0), "mps-00": (91.8, 91.0), "mps-01": (91.0, 89.0)}
    paths = [_run(tmp_path, 0, rows, acc, {"mps": 100.0, "analog_hwa": 50.0}),
             _run(tmp_path, 1, rows, {k: (a + 2, b + 2) for k, (a, b) in acc.items()}, {"mps": 120.0})]
    table = methods_at_a_glance(paths, 86400.0, 70.0, 1.0).set_index("Method")
    assert list(table.index) == ["fp32", "analog_hwa", "mps"]               # the glance rows only, in order
    mps = table.loc["mps"]
    assert mps["Mapping"] == "mps-01, mps-01" and mps["Rule"] == ">=70% analog"
    # seeds 0 and 1: repeats 0/1 around 91.0 and 93.0 -> mean 92.5; pooled std sqrt(0.25 + 1) over all four
    assert mps["Accuracy_ref"] == pytest.approx(92.5) and mps["Accuracy_ref_std"] == pytest.approx(1.25 ** 0.5)
    assert mps["Accuracy_last"] == pytest.approx(90.5)
    assert mps["Mapping_seconds"] == pytest.approx(110.0)
    assert table.loc["fp32", "Mapping_seconds"] != table.loc["fp32", "Mapping_seconds"]  # not recorded: NaN
    md = glance_markdown(table.reset_index(), 86400.0)
    assert "Accuracy 1d (%)" in md and "Accuracy 1y (%)" in md and "92.50±1.12" in md


def test_methods_at_a_glance_names_a_missing_sibling_file(tmp_path):
    from mps.stages.aggregate import methods_at_a_glance

    path = _results(tmp_path / "fashion-mnist/resnet8/s0/evaluate/results.csv",
                    [{"Method": "fp32", "Mapping": "fp32", "Accuracy_mean": 92.0}])
    with pytest.raises(ArtifactError, match="drift.csv: not found.*fix: run the search and evaluate"):
        methods_at_a_glance([path], 86400.0, 70.0, 1.0)
