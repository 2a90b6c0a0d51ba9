"""Snakemake's per-job benchmark files (``benchmark:`` of every rule) read as stage costs.

Each rule writes ``results/benchmarks/<stage>/<dataset>-<model>-s<seed>.tsv`` (data
preparation: ``<dataset>.tsv``) with Snakemake's columns: ``s`` (wall seconds), ``max_rss``
(peak resident MiB), ``cpu_time``, ``mean_load`` ...  The files of the run the benchmark
looks at are picked by the params' dataset, model and seed.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks.common import Inputs

STAGES = ("prepare-data", "pretrain", "adapt", "calibrate", "search", "evaluate", "report")
COLUMNS = ("s", "max_rss", "cpu_time", "mean_load")


def stage_file(inp: Inputs, stage: str, model: str | None = None) -> Path:
    """The benchmark file of ``stage`` for the params' run, or for ``model`` of the grid."""
    p = inp.params
    model = model or p.model.name
    name = f"{p.data.dataset}.tsv" if stage == "prepare-data" else f"{p.data.dataset}-{model}-s{p.seed}.tsv"
    return inp.bench_dir / stage / name


def read_stage(path: Path) -> dict[str, float] | None:
    """Median over the file's rows (Snakemake writes one row per repeat) of the known columns."""
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path, sep="\t")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None
    out = {}
    for col in COLUMNS:
        if col in table.columns:
            values = pd.to_numeric(table[col], errors="coerce").dropna()
            if len(values):
                out[col] = float(values.median())
    return out if "s" in out else None


def stage_table(inp: Inputs) -> dict[str, dict[str, float]]:
    """Stage name -> its benchmark columns, for the stages that have a readable file."""
    out = {}
    for stage in STAGES:
        row = read_stage(stage_file(inp, stage))
        if row is not None:
            out[stage] = row
    return out


def stage_seconds(inp: Inputs, stage: str, model: str | None = None) -> float | None:
    row = read_stage(stage_file(inp, stage, model))
    return None if row is None else row["s"]
