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
