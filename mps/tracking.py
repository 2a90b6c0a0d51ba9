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

The parent run spans the pipeline.  A driver that knows when the whole pipeline starts and
ends (Snakemake's ``onstart``/``onsuccess``/``onerror`` hooks, through ``mps pipeline
start|end``) opens it RUNNING and closes it FINISHED or FAILED (:func:`start_pipeline`,
:func:`end_pipeline`); the parent is then tagged ``mps.driver`` and stages leave its end to
the driver.  Without a driver (``dvc repro``, a hand-run stage) each stage reopens the parent
and the last stage to end closes it.  Either way a failing stage marks the parent FAILED and
an interrupted one KILLED at once.  The report stage logs the pipeline's headline params and
metrics to the parent (``Tracker.parent``), so pipeline runs compare side by side in the UI.

The experiment is tagged ``mlflow.experimentKind = custom_model_development`` (MLflow's own
tag for a model-training experiment, which its UI writes when a user picks the type).
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
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


class Tracker(Protocol):
    """What a stage needs from experiment tracking; the library codes against this."""

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...
    @property
    def parent(self) -> "Tracker":
        """The pipeline's run, for the headline params and metrics of the whole pipeline."""
        ...


class NullTracker:
    """Tracker that records nothing (library use, unit tests)."""

    @property
    def parent(self) -> "NullTracker":
        return self

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

    def __init__(self, client: Any, run_id: str, parent_run_id: str | None = None):
        self.client = client
        self.run_id = run_id
        self.parent_run_id = parent_run_id

    @property
    def parent(self) -> "MlflowTracker":
        return MlflowTracker(self.client, self.parent_run_id) if self.parent_run_id else self

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
        for key, value in EXPERIMENT_KIND.items():
            if key not in exp.tags:  # a kind the user picked in the UI stays
                client.set_experiment_tag(exp.experiment_id, key, value)
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(uri), tags=EXPERIMENT_KIND)


def _parent_run(client: Any, experiment_id: str, pipeline_id: str, driver: str | None = None) -> Any:
    """The pipeline's run, created RUNNING if new (call under the store's file lock)."""
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`mps.pipeline_id` = '{pipeline_id}' and tags.`mps.role` = 'pipeline'",
        max_results=1,
    )
    if found:
        return found[0]
    tags = {"mps.pipeline_id": pipeline_id, "mps.role": "pipeline", **({"mps.driver": driver} if driver else {})}
    run = client.create_run(experiment_id, run_name=f"pipeline-{pipeline_id[:24]}", tags=tags)
    return client.get_run(run.info.run_id)


def _running_stages(client: Any, experiment_id: str, parent_id: str) -> int:
    return len(client.search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and attributes.status = 'RUNNING'",
        max_results=1000,
    ))


def _reopen(client: Any, run: Any) -> None:
    if run.info.status != "RUNNING":
        client.update_run(run.info.run_id, status="RUNNING")


@contextlib.contextmanager
def _store(experiment: str, client: Any = None) -> Iterator[tuple[Any, str]]:
    """A client (new, or the one given) and the experiment id, under the store's file lock."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    with _file_lock(_lock_path(uri)):
        client = client or MlflowClient(tracking_uri=uri)
        yield client, _experiment_id(client, experiment, uri)


def start_pipeline(experiment: str, pipeline_id: str, driver: str) -> str | None:
    """Open (or reopen) the pipeline's parent run RUNNING, ended by :func:`end_pipeline`."""
    if os.environ.get(DISABLE_ENV) == "1":
        return None
    with _store(experiment) as (client, experiment_id):
        run = _parent_run(client, experiment_id, pipeline_id, driver)
        if run.data.tags.get("mps.driver") != driver:
            client.set_tag(run.info.run_id, "mps.driver", driver)
        _reopen(client, run)
        return run.info.run_id


def end_pipeline(experiment: str, pipeline_id: str, status: str) -> str | None:
    """Close the pipeline's parent run: FINISHED, or FAILED unless a stage already marked it
    FAILED or KILLED (an interruption stays KILLED)."""
    if status not in ("FINISHED", "FAILED", "KILLED"):
        raise ValueError(f"status {status!r}: use FINISHED, FAILED or KILLED")
    if os.environ.get(DISABLE_ENV) == "1":
        return None
    with _store(experiment) as (client, experiment_id):
        run = _parent_run(client, experiment_id, pipeline_id)
        if status == "FINISHED" or run.info.status in ("RUNNING", "SCHEDULED", "FINISHED"):
            client.set_terminated(run.info.run_id, status)
        return run.info.run_id


@contextlib.contextmanager
def stage_run(stage: str, params_digest: str, experiment: str, tags: Mapping[str, Any] | None = None) -> Iterator[Tracker]:
    """Open the MLflow run of one stage execution; close it FINISHED, FAILED or KILLED."""
    if os.environ.get(DISABLE_ENV) == "1":
        yield NullTracker()
        return
    pipeline_id = os.environ.get(PIPELINE_ENV) or f"params-{params_digest}"
    with _store(experiment) as (client, experiment_id):
        parent_run = _parent_run(client, experiment_id, pipeline_id)
        parent = parent_run.info.run_id
        driven = "mps.driver" in parent_run.data.tags
        if not driven:
            _reopen(client, parent_run)
        all_tags = {
            "mlflow.parentRunId": parent,
            "mps.stage": stage,
            "mps.role": "stage",
            "mps.pipeline_id": pipeline_id,
            "mps.params_digest": params_digest,
            **{k: str(v) for k, v in (tags or {}).items()},
        }
        run = client.create_run(experiment_id, run_name=stage, tags=all_tags)
    tracker = MlflowTracker(client, run.info.run_id, parent)

    def close(status: str, error: str | None = None) -> None:
        """End the stage's run; a failure or interruption ends the parent at once, and without
        a driver the last stage to end closes it."""
        with _store(experiment, client) as (_, experiment_id_):
            if error is not None:
                client.set_tag(run.info.run_id, "mps.error", error[:5000])
            client.set_terminated(run.info.run_id, status)
            if status != "FINISHED":
                client.set_tag(parent, "mps.error", f"{stage}: {error}"[:5000])
                client.set_terminated(parent, status)
            elif not driven and _running_stages(client, experiment_id_, parent) == 0:
                client.set_terminated(parent, "FINISHED")

    try:
        yield tracker
    except KeyboardInterrupt:
        close("KILLED", "interrupted")
        raise
    except BaseException as exc:
        close("FAILED", f"{type(exc).__name__}: {exc}")
        raise
    else:
        close("FINISHED")


def pipeline_main(argv: list[str]) -> int:
    """``mps pipeline start|end``: a driver (a workflow engine's start/end hooks) opens and
    closes the pipeline's parent run; the pipeline id is ``$MPS_PIPELINE_ID``."""
    import argparse
    import sys

    from mps.config import ConfigError, load_params

    parser = argparse.ArgumentParser(prog="mps pipeline", description="open or close the MLflow parent run of one pipeline run")
    parser.add_argument("action", choices=["start", "end"])
    parser.add_argument("--params", default="params.yaml", help="params file (its mlflow.experiment)")
    parser.add_argument("--driver", default="cli", help="what drives the pipeline (start; a tag on the run)")
    parser.add_argument("--status", choices=["FINISHED", "FAILED", "KILLED"], default="FINISHED", help="end status")
    args = parser.parse_args(argv)
    pipeline_id = os.environ.get(PIPELINE_ENV)
    try:
        if not pipeline_id:
            raise ConfigError(f"${PIPELINE_ENV} is not set; fix: export it once per pipeline run (the Snakefile does)")
        experiment = load_params(args.params).mlflow.experiment
    except ConfigError as exc:
        print(f"mps pipeline: error: {exc}", file=sys.stderr)
        return 2
    if args.action == "start":
        start_pipeline(experiment, pipeline_id, args.driver)
    else:
        end_pipeline(experiment, pipeline_id, args.status)
    return 0
