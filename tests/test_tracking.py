"""The MLflow parent run spans its pipeline: RUNNING while stages run, then FINISHED, FAILED or
KILLED; with a driver (Snakemake's hooks) the driver ends it, without one the last stage does."""

from __future__ import annotations

import pytest

from conftest import TINY_PARAMS
from mps.tracking import PIPELINE_ENV, end_pipeline, pipeline_main, stage_run, start_pipeline

EXPERIMENT = "mps-tiny"  # the tiny params' mlflow.experiment


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _parent(uri, pipeline_id):
    client = _client(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`mps.pipeline_id` = '{pipeline_id}' "
                                                                 "and tags.`mps.role` = 'pipeline'")
    assert len(runs) == 1
    return runs[0]


def test_without_a_driver_the_parent_runs_until_its_last_stage_ends(mlflow_uri, monkeypatch):
    monkeypatch.setenv(PIPELINE_ENV, "p-undriven")
    with stage_run("search", "d1", EXPERIMENT) as outer:
        assert _parent(mlflow_uri, "p-undriven").info.status == "RUNNING"
        with stage_run("evaluate", "d1", EXPERIMENT):
            pass
        assert _parent(mlflow_uri, "p-undriven").info.status == "RUNNING"  # search still runs
        outer.parent.log_metrics({"mps.hypervolume": 0.5})
    parent = _parent(mlflow_uri, "p-undriven")
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics == {"mps.hypervolume": 0.5}
    exp = _client(mlflow_uri).get_experiment_by_name(EXPERIMENT)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"

    with stage_run("report", "d1", EXPERIMENT):  # a later stage of the same pipeline reopens it
        assert _parent(mlflow_uri, "p-undriven").info.status == "RUNNING"
    assert _parent(mlflow_uri, "p-undriven").info.status == "FINISHED"


def test_with_a_driver_the_parent_runs_until_the_driver_ends_it(mlflow_uri, monkeypatch):
    monkeypatch.setenv(PIPELINE_ENV, "p-driven")
    assert pipeline_main(["start", "--params", str(TINY_PARAMS), "--driver", "snakemake"]) == 0
    with stage_run("pretrain", "d2", EXPERIMENT):
        pass
    parent = _parent(mlflow_uri, "p-driven")
    assert parent.info.status == "RUNNING" and parent.data.tags["mps.driver"] == "snakemake"
    assert pipeline_main(["end", "--params", str(TINY_PARAMS), "--status", "FINISHED"]) == 0
    assert _parent(mlflow_uri, "p-driven").info.status == "FINISHED"


@pytest.mark.parametrize("exc,status", [(RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")])
def test_a_failed_or_interrupted_stage_ends_the_parent_and_the_driver_keeps_that(mlflow_uri, monkeypatch, exc, status):
    pid = f"p-{status.lower()}"
    monkeypatch.setenv(PIPELINE_ENV, pid)
    start_pipeline(EXPERIMENT, pid, "snakemake")
    with pytest.raises(type(exc)):
        with stage_run("adapt", "d3", EXPERIMENT):
            raise exc
    assert _parent(mlflow_uri, pid).info.status == status
    assert "adapt" in _parent(mlflow_uri, pid).data.tags["mps.error"]
    end_pipeline(EXPERIMENT, pid, "FAILED")  # Snakemake's onerror after the failure or Ctrl-C
    assert _parent(mlflow_uri, pid).info.status == status


def test_pipeline_command_needs_the_pipeline_id(mlflow_uri, monkeypatch, capsys):
    monkeypatch.delenv(PIPELINE_ENV, raising=False)
    assert pipeline_main(["start", "--params", str(TINY_PARAMS)]) == 2
    assert PIPELINE_ENV in capsys.readouterr().err
