"""MLflow bookkeeping: one run per stage execution, nested under one run per pipeline run.

Stages run in separate processes (Snakemake jobs, DVC stages), so the parent run cannot be
held in memory.  It is found or created by a tag, ``mps.pipeline_id``: the Snakefile sets
``MPS_PIPELINE_ID`` once per ``snakemake`` invocation (jobs inherit it); without it (a bare
``dvc repro`` or a hand-run stage) the id is derived from the params digest, so the stages
of one configuration still group together.  Creating the SQLite schema, the experiment and
the parent happens under a file lock, because parallel jobs doing it at once fail.

The default store is an embedded SQLite file ``mlflow.db`` in the working directory
(MLflow >= 3.7's default; the old ``./mlruns`` file store is refused by newer MLflow);
``MLFLOW_TRACKING_URI`` overrides it (a server for a cluster).  A failed stage's run is
marked FAILED with the error as a tag, an interrupted one KILLED, never left RUNNING.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol

PIPELINE_ENV = "MPS_PIPELINE_ID"
DISABLE_ENV = "MPS_NO_MLFLOW"


class Tracker(Protocol):
    """What a stage needs from experiment tracking; the library codes against this."""

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...


class NullTracker:
    """Tracker that records nothing (library use, unit tests)."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _lock_path(uri: str) -> Path:
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        return db.with_name(db.name + ".lock")
    return Path(tempfile.gettempdir()) / "mps-mlflow.lock"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class MlflowTracker:
    """Tracker writing to one MLflow run."""

    def __init__(self, client: Any, run_id: str):
        self.client = client
        self.run_id = run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(str(k), float(v), now, step or 0) for k, v in metrics.items()]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        elif path.exists():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, str(k), str(v))


def flatten(prefix: str, obj: Any) -> dict[str, Any]:
    """Nested dict -> dotted keys, for logging params."""
    out: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
    else:
        out[prefix] = obj
    return out


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: ``mlartifacts/`` beside the SQLite file of
    the store, so that the artifacts go with the runs that name them (not into whatever the
    working directory is when the experiment happens to be created: a test run from the
    repository once left a run's ``search.json`` in the user's ``mlartifacts/``); ``None`` for
    any other store, whose server has its own artifact root."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):]).resolve()
        return (db.parent / "mlartifacts").as_uri()
    return None


def _experiment_id(client: Any, name: str, uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(uri))


def _parent_run_id(client: Any, experiment_id: str, pipeline_id: str) -> str:
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`mps.pipeline_id` = '{pipeline_id}' and tags.`mps.role` = 'pipeline'",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(
        experiment_id, run_name=f"pipeline-{pipeline_id[:24]}",
        tags={"mps.pipeline_id": pipeline_id, "mps.role": "pipeline"},
    )
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


@contextlib.contextmanager
def stage_run(stage: str, params_digest: str, experiment: str, tags: Mapping[str, Any] | None = None) -> Iterator[Tracker]:
    """Open the MLflow run of one stage execution; close it FINISHED, FAILED or KILLED."""
    if os.environ.get(DISABLE_ENV) == "1":
        yield NullTracker()
        return
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    pipeline_id = os.environ.get(PIPELINE_ENV) or f"params-{params_digest}"
    with _file_lock(_lock_path(uri)):
        client = MlflowClient(tracking_uri=uri)
        experiment_id = _experiment_id(client, experiment, uri)
        parent = _parent_run_id(client, experiment_id, pipeline_id)
    all_tags = {
        "mlflow.parentRunId": parent,
        "mps.stage": stage,
        "mps.role": "stage",
        "mps.pipeline_id": pipeline_id,
        "mps.params_digest": params_digest,
        **{k: str(v) for k, v in (tags or {}).items()},
    }
    run = client.create_run(experiment_id, run_name=stage, tags=all_tags)
    tracker = MlflowTracker(client, run.info.run_id)
    try:
        yield tracker
    except KeyboardInterrupt:
        client.set_tag(run.info.run_id, "mps.error", "interrupted")
        client.set_terminated(run.info.run_id, "KILLED")
        raise
    except BaseException as exc:
        client.set_tag(run.info.run_id, "mps.error", f"{type(exc).__name__}: {exc}"[:5000])
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    else:
        client.set_terminated(run.info.run_id, "FINISHED")
