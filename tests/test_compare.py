"""``mps compare``: stage runs logged through mps.tracking come back as one table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mps.compare import compare_main, compare_runs, select_metrics
from mps.config import ConfigError
from mps.tracking import PIPELINE_ENV, stage_run


def _log_pipeline(pipeline: str, model: str, seed: int, acc: float, monkeypatch) -> None:
    monkeypatch.setenv(PIPELINE_ENV, pipeline)
    monkeypatch.chdir(Path(os.environ["MLFLOW_TRACKING_URI"][len("sqlite:///"):]).parent)  # artifact root there
    tags = {"mps.model": model, "mps.dataset": "fashion-mnist", "mps.seed": seed}
    with stage_run("search", "digest", "cmp", tags) as tracker:
        tracker.log_metrics({"mps.hypervolume": 0.5 + seed, "mps.search_seconds": 3.0})
    with stage_run("evaluate", "digest", "cmp", tags) as tracker:
        tracker.log_metrics({"analog.accuracy_1d": acc, "mps-00.accuracy_1d": acc + 1, "fp32.accuracy": 92.0})


def test_compare_runs_one_row_per_stage_run(mlflow_uri, monkeypatch, capsys):
    _log_pipeline("p-a", "resnet8", 0, 85.0, monkeypatch)
    _log_pipeline("p-b", "resnet20", 1, 87.0, monkeypatch)

    df = compare_runs(mlflow_uri, "cmp")
    assert len(df) == 4  # the two pipeline parent runs are not stage runs
    assert list(df.columns[:7]) == ["stage", "model", "dataset", "seed", "pipeline_id", "status", "run_id"]
    assert list(df["stage"]) == ["search", "evaluate", "search", "evaluate"]  # pipeline, then stage order
    assert set(df["model"]) == {"resnet8", "resnet20"}
    assert set(df["status"]) == {"FINISHED"}

    ev = compare_runs(mlflow_uri, "cmp", stage="evaluate")
    assert list(ev["stage"]) == ["evaluate", "evaluate"]
    by_model = ev.set_index("model")
    assert by_model.loc["resnet8", "analog.accuracy_1d"] == pytest.approx(85.0)
    assert by_model.loc["resnet20", "mps-00.accuracy_1d"] == pytest.approx(88.0)
    assert list(by_model["seed"].astype(int)) == [0, 1]

    picked = select_metrics(ev, "*.accuracy_1d")
    assert [c for c in picked.columns if "." in c] == ["analog.accuracy_1d", "mps-00.accuracy_1d"]
    assert "mps.hypervolume" not in picked.columns  # not an evaluate metric: dropped, not shown empty

    # the tracking URI of the caller is left as it was
    assert os.environ["MLFLOW_TRACKING_URI"] == mlflow_uri

    assert compare_main(["--experiment", "cmp", "--stage", "evaluate", "--metrics", "accuracy_1d",
                         "--tracking-uri", mlflow_uri]) == 0
    out = capsys.readouterr().out
    assert "analog.accuracy_1d" in out and "resnet20" in out and "fp32.accuracy" not in out


def test_compare_unknown_experiment_is_a_config_error(mlflow_uri, capsys):
    with pytest.raises(ConfigError, match="experiment 'nope' not found"):
        compare_runs(mlflow_uri, "nope")
    assert compare_main(["--experiment", "nope"]) == 2  # URI from MLFLOW_TRACKING_URI
    assert "not found" in capsys.readouterr().err


def test_compare_empty_stage_says_so(mlflow_uri, monkeypatch, capsys):
    _log_pipeline("p-a", "resnet8", 0, 85.0, monkeypatch)
    assert compare_runs(None, "cmp", stage="report").empty
    assert compare_main(["--experiment", "cmp", "--stage", "report"]) == 0
    assert "no runs of stage 'report'" in capsys.readouterr().out
