"""Tests for mps.select: duration parsing, choosing one mapping under an accuracy bound."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from mps.config import ConfigError
from mps.select import parse_duration, select_main, select_mapping

# name, method, accuracy (search estimate at 1d), analog_mac_ratio, digital_size_mb, energy, latency
ROWS = [
    ("fp32", "fp32", 90.0, 0.0, 0.30, 9.0, 0.9),
    ("int8", "int8", 89.8, 0.0, 0.08, 3.0, 0.5),
    ("mps-00", "mps", 89.5, 0.40, 0.05, 2.0, 0.4),
    ("mps-01", "mps", 88.5, 0.90, 0.01, 1.0, 0.3),
    ("greedy-00", "greedy", 89.2, 0.60, 0.03, 1.5, 0.35),
]
# evaluate's accuracy at 1y: drift hurts the analog-heavy mappings more
AT_1Y = {"fp32": 90.0, "int8": 89.8, "mps-00": 89.3, "mps-01": 85.0, "greedy-00": 88.0}


def _search_dir(tmp_path: Path) -> Path:
    d = tmp_path / "search"
    (d / "mappings").mkdir(parents=True)
    rows = []
    for name, method, acc, ratio, size, energy, latency in ROWS:
        (d / "mappings" / f"{name}.json").write_text(json.dumps({"name": name, "method": method}))
        rows.append({"name": name, "method": method, "file": f"mappings/{name}.json", "accuracy": acc,
                     "analog_mac_ratio": ratio, "digital_size_mb": size, "energy_uj": energy, "latency_ms": latency,
                     "analog_tiles": 1, "rank_in_method": 0, "rank_overall": 0})
    pd.DataFrame(rows).to_csv(d / "pareto.csv", index=False)
    (d / "search.json").write_text(json.dumps({"drift_time": 86400.0}))
    return d


def _evaluate_dir(tmp_path: Path) -> Path:
    d = tmp_path / "evaluate"
    d.mkdir()
    rows = []
    for name, method, acc, *_ in ROWS:
        for repeat, jitter in enumerate((-0.1, 0.1)):
            rows.append({"mapping": name, "method": method, "drift_time": 86400.0, "repeat": repeat,
                         "accuracy": acc + jitter})
            rows.append({"mapping": name, "method": method, "drift_time": 31536000.0, "repeat": repeat,
                         "accuracy": AT_1Y[name] + jitter})
    pd.DataFrame(rows).to_csv(d / "drift.csv", index=False)
    return d


@pytest.mark.parametrize("text, seconds", [
    (3600, 3600.0), ("3600", 3600.0), ("1s", 1.0), ("30min", 1800.0), ("1h", 3600.0), ("1d", 86400.0),
    ("2d", 172800.0), ("1m", 30 * 86400.0), ("1y", 365 * 86400.0), ("0.5h", 1800.0), (" 1D ", 86400.0),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "d", "1w", "one day", "-1d", "0", 0, -5])
def test_parse_duration_rejects(bad):
    with pytest.raises(ConfigError, match="fix"):
        parse_duration(bad)


def test_search_estimates_pick_most_analog_within_drop(tmp_path):
    d = _search_dir(tmp_path)
    chosen = select_mapping(d, None, 1.0, "1d", "analog_mac_ratio")
    assert chosen["name"] == "greedy-00"  # mps-01 is 1.5 points below FP32, greedy-00 only 0.8
    assert chosen["fp32_accuracy"] == 90.0
    assert chosen["path"] == str(d / "mappings" / "greedy-00.json")
    assert chosen["accuracy_drop"] == pytest.approx(0.8)
    assert select_mapping(d, None, 2.0, 86400, "analog_mac_ratio")["name"] == "mps-01"


def test_minimised_objectives_and_accuracy(tmp_path):
    d = _search_dir(tmp_path)
    assert select_mapping(d, None, 1.0, "1d", "digital_size_mb")["name"] == "greedy-00"
    assert select_mapping(d, None, 0.6, "1d", "energy")["name"] == "mps-00"
    assert select_mapping(d, None, 5.0, "1d", "accuracy")["name"] == "int8"  # FP32 is the reference only


def test_evaluate_accuracy_at_drift_time(tmp_path):
    d, e = _search_dir(tmp_path), _evaluate_dir(tmp_path)
    at_1d = select_mapping(d, e, 1.0, "1d", "analog_mac_ratio")
    assert at_1d["name"] == "greedy-00"
    assert at_1d["accuracy"] == pytest.approx(89.2)  # mean over repeats
    at_1y = select_mapping(d, e, 1.0, "1y", "analog_mac_ratio")
    assert at_1y["name"] == "mps-00"  # greedy-00 falls 2 points below FP32 after a year
    assert "1y" in at_1y["accuracy_source"]


def test_nothing_meets_the_bound(tmp_path):
    d, e = _search_dir(tmp_path), _evaluate_dir(tmp_path)
    with pytest.raises(ConfigError) as err:
        select_mapping(d, e, 0.1, "1y", "analog_mac_ratio")
    msg = str(err.value)
    assert "no mapping is within 0.1 points of FP32's 90.00 %" in msg
    assert "the best available is int8 at 89.80 % (0.20 points below)" in msg
    assert "fix: raise --max-acc-drop to at least 0.20" in msg and "\n" not in msg


def test_errors_are_clear(tmp_path):
    d, e = _search_dir(tmp_path), _evaluate_dir(tmp_path)
    with pytest.raises(ConfigError, match="measured only at 1d, 1y"):
        select_mapping(d, e, 1.0, "1h", "analog_mac_ratio")
    with pytest.raises(ConfigError, match="search estimates exist only at 1d"):
        select_mapping(d, None, 1.0, "1y", "analog_mac_ratio")
    with pytest.raises(ConfigError, match="unknown objective"):
        select_mapping(d, None, 1.0, "1d", "tiles")
    with pytest.raises(ConfigError, match="pareto.csv: search Pareto table not found"):
        select_mapping(tmp_path / "nowhere", None, 1.0, "1d", "accuracy")
    table = pd.read_csv(d / "pareto.csv")
    table[table["method"] != "fp32"].to_csv(d / "pareto.csv", index=False)
    with pytest.raises(ConfigError, match="no FP32 mapping"):
        select_mapping(d, None, 1.0, "1d", "accuracy")


def test_select_main(tmp_path, capsys):
    d, e = _search_dir(tmp_path), _evaluate_dir(tmp_path)
    copy = tmp_path / "chosen.json"
    code = select_main(["--search", str(d), "--evaluate", str(e), "--max-acc-drop", "1.0", "--at", "1y",
                        "--maximize", "analog_mac_ratio", "--copy-to", str(copy)])
    out = capsys.readouterr().out
    assert code == 0
    assert "selected: mps-00 (method mps)" in out and "mappings/mps-00.json" in out
    assert copy.read_bytes() == (d / "mappings" / "mps-00.json").read_bytes()
    code = select_main(["--search", str(d), "--max-acc-drop", "0.2", "--at", "1d", "--maximize", "analog_mac_ratio"])
    assert code == 0 and "selected: int8" in capsys.readouterr().out
    code = select_main(["--search", str(d), "--at", "1y"])
    assert code == 2 and "mps select: error:" in capsys.readouterr().err
