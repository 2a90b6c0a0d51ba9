"""Stage ``calibrate`` on the tiny real supernet: table shape and order, reproducibility,
the noise schedule's bounds, the plot, and bad inputs stopping before any output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mps.config import ConfigError
from mps.stages.calibrate import (COLUMNS, OUTPUTS, REFERENCE_OPERATOR, calibration_set, drop_rows, layer_grid,
                                  layer_seed, nearest_time, run)
from mps.stages.common import load_splits
from mps.supernet import load_supernet
from mps.tracking import NullTracker
from tests.conftest import tiny_params

# few examples, few repeats: the analog simulation is the slow part
FAST = {"calibrate.val_examples": 48, "calibrate.repeats": 2, "calibrate.bn_recalibration_batches": 1,
        "calibrate.drift_times": [86400.0, 3600.0]}


class RecordingTracker(NullTracker):
    def __init__(self):
        self.params, self.metrics, self.artifacts = {}, {}, []

    def log_params(self, params):
        self.params.update(params)

    def log_metrics(self, metrics, step=None):
        self.metrics.update(metrics)

    def log_artifact(self, path, artifact_path=None):
        self.artifacts.append(Path(path).name)


@pytest.fixture(scope="module")
def calibrated(tiny_data, tiny_supernet, tmp_path_factory):
    out = tmp_path_factory.mktemp("calibrate") / "out"
    tracker = RecordingTracker()
    run(tiny_params(**FAST), tiny_data, tiny_supernet, out, tracker)
    return out, tracker


def _analog_layers(supernet_path: Path) -> list[str]:
    supernet, _ = load_supernet(supernet_path)
    return [n for n in supernet.infos if "analog" in supernet.allowed[n]]


def test_table_shape_columns_and_order(calibrated, tiny_supernet):
    out, _ = calibrated
    table = pd.read_csv(out / "sensitivity.csv")
    layers = _analog_layers(tiny_supernet)
    times = [3600.0, 86400.0]
    assert list(table.columns) == COLUMNS
    assert table.shape == (len(layers) * len(times), len(COLUMNS))
    # network order, then ascending drift time (the config listed them descending)
    assert list(table["layer"]) == [n for n in layers for _ in times]
    assert list(table["drift_time"]) == times * len(layers)
    assert (table["std_drop"] >= 0).all()
    # float64 arithmetic on accuracies written rounded to 1e-6 points (_points): three roundings
    assert (table["mean_drop"] - (table["reference_accuracy"] - table["mean_accuracy"])).abs().max() < 2e-6
    assert (table["macs"] > 0).all() and (table["params"] > 0).all()


def test_noise_schedule_bounds(calibrated, tiny_supernet):
    out, _ = calibrated
    doc = json.loads((out / "noise_schedule.json").read_text())
    ramp = tiny_params().adapt.noise_ramp
    layers = _analog_layers(tiny_supernet)
    assert doc["drift_time"] == 86400.0
    assert doc["layers"] == layers
    assert set(doc["schedule"]) == set(layers)
    for name, fractions in doc["schedule"].items():
        assert len(fractions) == ramp.steps
        assert all(ramp.start_fraction - 1e-12 <= f <= 1.0 for f in fractions), (name, fractions)
        assert fractions[0] == pytest.approx(ramp.start_fraction)
        assert fractions[-1] == 1.0
    assert doc["targets"]["out_noise"] > 0 and doc["targets"]["hwa_weight_noise"] >= 0
    table = pd.read_csv(out / "sensitivity.csv")
    at = table[table["drift_time"] == 86400.0].set_index("layer")["mean_drop"]
    assert doc["sensitivity"] == pytest.approx(at.to_dict())


def test_plot_and_tracking(calibrated, tiny_supernet):
    out, tracker = calibrated
    png = (out / "sensitivity.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert sorted(tracker.artifacts) == sorted(OUTPUTS)
    for name in _analog_layers(tiny_supernet):
        assert f"sensitivity.{name}.1h" in tracker.metrics
        assert f"sensitivity.{name}.1d" in tracker.metrics
    assert tracker.params["calibrate.val_examples"] == 48
    assert tracker.params["val_examples_used"] == 48
    assert not list(out.glob(".*.tmp"))


def test_same_seed_same_drops(calibrated, tiny_data, tiny_supernet):
    """Re-measuring one layer on its own (no other layer before it) gives exactly its rows:
    its noise draws depend on the seed and its network position only."""
    out, _ = calibrated
    params = tiny_params(**FAST)
    table = pd.read_csv(out / "sensitivity.csv")
    supernet, _ = load_supernet(tiny_supernet)
    data = calibration_set(params, load_splits(tiny_data))
    times = sorted(params.calibrate.drift_times)
    reference_mapping = supernet.uniform_mapping(REFERENCE_OPERATOR)
    reference = layer_grid(supernet, reference_mapping, None, data, times, 2, params.seed).mean(axis=0)
    name = _analog_layers(tiny_supernet)[-1]
    index = list(supernet.infos).index(name)
    grid = layer_grid(supernet, reference_mapping, name, data, times, 2, layer_seed(params.seed, index))
    info = supernet.infos[name]
    again = pd.DataFrame(drop_rows(name, grid, reference, times, info.macs, info.params), columns=COLUMNS)
    pd.testing.assert_frame_equal(again, table[table["layer"] == name].reset_index(drop=True), check_dtype=False)


def test_layer_seed_depends_on_index_only():
    assert layer_seed(0, 0) != layer_seed(0, 1)
    assert layer_seed(5, 3) == layer_seed(5, 3)
    # repeat seeds (seed + r) of the reference and of each layer never collide
    seeds = [layer_seed(0, i) + r for i in range(20) for r in range(10)] + list(range(10))
    assert len(seeds) == len(set(seeds))
    assert nearest_time([3600.0, 86400.0, 31536000.0], 86400.0) == 86400.0
    assert nearest_time([3600.0, 31536000.0], 86400.0) == 3600.0


def _mismatched_data(tiny_data: Path, tmp_path: Path) -> Path:
    """A copy of the data folder whose manifest claims another fingerprint."""
    other = tmp_path / "other-data"
    shutil.copytree(tiny_data, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["fingerprint"] = "0" * len(manifest["fingerprint"])
    (other / "manifest.json").write_text(json.dumps(manifest))
    return other


def test_mismatched_data_errors_and_writes_nothing(tiny_data, tiny_supernet, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="other data.*fix:"):
        run(tiny_params(**FAST), _mismatched_data(tiny_data, tmp_path), tiny_supernet, out, NullTracker())
    assert not out.exists()


@pytest.mark.parametrize("content", [None, b"not a checkpoint"])
def test_missing_or_corrupt_supernet_errors_and_writes_nothing(tiny_data, tmp_path, content):
    path = tmp_path / "supernet.pt"
    if content is not None:
        path.write_bytes(content)
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="supernet.pt.*fix:"):
        run(tiny_params(**FAST), tiny_data, path, out, NullTracker())
    assert not out.exists()
