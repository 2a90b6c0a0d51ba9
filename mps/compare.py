"""``mps compare``: one table of stage runs across pipeline runs (models, data sets, seeds).

Every stage execution is an MLflow run tagged by :mod:`mps.tracking` (``mps.stage``,
``mps.model``, ``mps.dataset``, ``mps.seed``, ``mps.pipeline_id``, ``mps.role=stage``) and its
metrics are named the same way across stages and methods (``<method>.accuracy_1d``,
``<mapping>.accuracy_1y``, ``mps.hypervolume`` ...), so one row per stage run with the
metrics as columns lines them up.  The same table from Python or a notebook::

    import mlflow
    mlflow.set_tracking_uri("sqlite:///mlflow.db")
    df = mlflow.search_runs(experiment_names=["mps"],
                            filter_string="tags.`mps.role` = 'stage' and tags.`mps.stage` = 'evaluate'")

This module runs exactly that search (``mlflow.search_runs``), under the tracking URI asked
for, and tidies the columns.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import os
import sys
from typing import Iterator, Sequence

import pandas as pd

from mps.config import ConfigError

TAG_COLUMNS = {"tags.mps.stage": "stage", "tags.mps.model": "model", "tags.mps.dataset": "dataset",
               "tags.mps.seed": "seed", "tags.mps.pipeline_id": "pipeline_id"}
BASE_COLUMNS = ["stage", "model", "dataset", "seed", "pipeline_id", "status", "run_id"]
STAGE_ORDER = ("prepare-data", "pretrain", "adapt", "calibrate", "search", "evaluate", "report")


@contextlib.contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """Point mlflow's fluent API at ``uri`` for the duration, then restore exactly what was set
    before (mlflow.set_tracking_uri also sets the environment variable)."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    global_before = getattr(tracking_utils, "_tracking_uri", None)
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(global_before)  # type: ignore[arg-type]  # None unsets it
        if env_before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env_before


def _quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def compare_runs(tracking_uri: str | None, experiment: str, stage: str | None = None) -> pd.DataFrame:
    """One row per stage run of ``experiment`` (optionally one stage), with the run's tags
    (stage, model, dataset, seed, pipeline id), status, id and every metric as a column.

    ``tracking_uri`` None means the pipeline's default (``MLFLOW_TRACKING_URI`` or
    ``./mlflow.db``).  An unknown experiment is a ConfigError.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    from mps.tracking import tracking_uri as default_uri

    uri = tracking_uri or default_uri()
    if MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment) is None:
        raise ConfigError(f"MLflow experiment {experiment!r} not found in {uri}; fix: run a stage first, pass "
                          "--experiment (params mlflow.experiment) or set MLFLOW_TRACKING_URI")
    filters = ["tags.`mps.role` = 'stage'"]
    if stage:
        filters.append(f"tags.`mps.stage` = {_quote(stage)}")
    with _tracking_uri(uri):
        runs = mlflow.search_runs(experiment_names=[experiment], filter_string=" and ".join(filters),
                                  output_format="pandas")
    metric_cols = sorted(c for c in runs.columns if c.startswith("metrics."))
    out = pd.DataFrame({new: runs[old] if old in runs.columns else pd.Series([None] * len(runs), dtype=object)
                        for old, new in TAG_COLUMNS.items()})
    out["status"] = runs["status"] if "status" in runs.columns else None
    out["run_id"] = runs["run_id"] if "run_id" in runs.columns else None
    for col in metric_cols:
        out[col[len("metrics."):]] = runs[col].to_numpy()
    if out.empty:
        return out.reset_index(drop=True)
    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    out["_stage_order"] = out["stage"].map(lambda s: order.get(s, len(order)))
    out = out.sort_values(["pipeline_id", "_stage_order", "model", "dataset", "seed", "run_id"], kind="stable")
    return out.drop(columns="_stage_order").reset_index(drop=True)


def select_metrics(df: pd.DataFrame, pattern: str | None) -> pd.DataFrame:
    """Keep the base columns and the metrics matching ``pattern`` (a shell-style glob such as
    ``'*.accuracy_1d'``; without a wildcard, a substring), dropping metrics no run has."""
    metrics = [c for c in df.columns if c not in BASE_COLUMNS]
    if pattern:
        glob = pattern if any(ch in pattern for ch in "*?[") else f"*{pattern}*"
        metrics = [c for c in metrics if fnmatch.fnmatchcase(c, glob)]
    metrics = [c for c in metrics if df[c].notna().any()]
    return df[[c for c in BASE_COLUMNS if c in df.columns] + metrics]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mps compare", description="Table of stage runs across pipeline runs (MLflow).")
    p.add_argument("--experiment", default="mps", help="MLflow experiment (params mlflow.experiment; default mps)")
    p.add_argument("--stage", help="only runs of this stage, e.g. evaluate")
    p.add_argument("--metrics", metavar="PATTERN",
                   help="only metrics matching this glob (e.g. '*.accuracy_1d'); a plain word matches as substring")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db)")
    return p


def compare_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mps compare``; prints the table, returns the exit code (2: config error)."""
    args = build_parser().parse_args(argv)
    try:
        df = compare_runs(args.tracking_uri, args.experiment, args.stage)
    except ConfigError as exc:
        print(f"mps compare: error: {exc}", file=sys.stderr)
        return 2
    if df.empty:
        where = f" of stage {args.stage!r}" if args.stage else ""
        print(f"mps compare: no runs{where} in experiment {args.experiment!r}")
        return 0
    table = select_metrics(df, args.metrics)
    with pd.option_context("display.max_columns", None, "display.width", 250, "display.max_colwidth", 40):
        print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(compare_main())
