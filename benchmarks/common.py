"""What every benchmark figure shares: the inputs, a timer that reports medians, the table.

Why medians of interleaved rounds: on a shared 2-core machine absolute times drift by tens of
percent from minute to minute.  Each figure therefore runs the variants it compares
round-robin (A, B, C, A, B, C, ...) and reports, besides each variant's median, the median
of the per-round *ratios*, which cancels most of the drift.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from mps.config import ConfigError, Params

REPO = Path(__file__).resolve().parents[1]
DAY, YEAR = 86400.0, 31536000.0  # the drift times the studies report: the headline and the last


def seed_summary(accuracies) -> dict:
    """Mean, std and worst programming seed of one network's accuracies at one drift time (a
    column of :func:`mps.evaluation.drift_accuracy_grid`), with the seeds themselves: the worst
    seed is reported because single collapsing seeds are what a user meets."""
    return {"mean": round(float(accuracies.mean()), 3), "std": round(float(accuracies.std()), 3),
            "worst": round(float(accuracies.min()), 3), "seeds": [round(float(v), 2) for v in accuracies]}


class BenchmarkError(ConfigError):
    """A benchmark input is missing or unusable; the message names it and the fix."""


# --------------------------------------------------------------------------- inputs
@dataclass
class Inputs:
    """Paths and settings of one benchmark run (everything a figure may read)."""

    params: Params
    quick: bool
    run_dir: Path                 # results/<dataset>/<model>/s<seed>: a finished pipeline run
    data_dir: Path                # results/data/<dataset>
    bench_dir: Path               # results/benchmarks: Snakemake's per-job benchmark TSVs
    runs: int                     # repetitions per measurement (median reported)
    threads: int
    supernet_path: Path | None = None
    pretrained_path: Path | None = None
    sensitivity_path: Path | None = None
    out_dir: Path | None = None   # where the report goes; a figure may save its plot there
    params_path: Path | None = None  # the params file ``params`` came from (figures that run `mps` stages)

    def __post_init__(self) -> None:
        self.supernet_path = self.supernet_path or self.run_dir / "adapt" / "supernet.pt"
        self.pretrained_path = self.pretrained_path or self.run_dir / "pretrain" / "model.pt"
        if self.sensitivity_path is None:
            candidate = self.run_dir / "calibrate" / "sensitivity.csv"
            self.sensitivity_path = candidate if candidate.is_file() else None

    def missing(self, *paths: Path | None) -> str | None:
        """A one-line reason if any input file/folder is absent (None when all are there)."""
        absent = [str(p) for p in paths if p is None or not Path(p).exists()]
        if not absent:
            return None
        return f"missing {', '.join(absent)}; fix: run `make run` first (or pass --run-dir/--data-dir)"


# --------------------------------------------------------------------------- timing
@dataclass
class Stats:
    """Repeated measurements of one quantity."""

    values: list[float]

    @property
    def median(self) -> float:
        return float(statistics.median(self.values)) if self.values else float("nan")

    @property
    def low(self) -> float:
        return float(min(self.values)) if self.values else float("nan")

    @property
    def high(self) -> float:
        return float(max(self.values)) if self.values else float("nan")

    @property
    def n(self) -> int:
        return len(self.values)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def interleaved(variants: Mapping[str, Callable[[], Any]], runs: int, warmup: int = 1) -> dict[str, Stats]:
    """Seconds per call of each variant, measured round-robin ``runs`` times after ``warmup``
    untimed rounds (first calls pay for lazy initialisation and allocator growth)."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    out = {name: Stats([]) for name in variants}
    for _ in range(runs):
        for name, fn in variants.items():
            seconds, _ = timed(fn)
            out[name].values.append(seconds)
    return out


def ratio(a: Stats, b: Stats) -> Stats:
    """Per-round ratios a/b of two interleaved measurements (same rounds, same order)."""
    return Stats([x / y for x, y in zip(a.values, b.values) if y > 0])


# --------------------------------------------------------------------------- the table
@dataclass
class Row:
    """One line of the results table."""

    figure: str
    measure: str
    value: float | str
    unit: str = ""
    runs: int | str = ""
    low: float | str = ""
    high: float | str = ""
    note: str = ""


@dataclass
class Figure:
    """A section of the report: a title, a short text saying what is measured, its rows."""

    key: str
    title: str
    text: str
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0
    images: list[tuple[str, str]] = field(default_factory=list)  # (file beside the report, caption)

    def add(self, measure: str, value: float | str, unit: str = "", stats: Stats | None = None,
            note: str = "") -> Row:
        row = Row(self.key, measure, value, unit, stats.n if stats else "",
                  stats.low if stats and stats.n > 1 else "", stats.high if stats and stats.n > 1 else "", note)
        self.rows.append(row)
        return row

    def add_stats(self, measure: str, stats: Stats, unit: str, note: str = "", scale: float = 1.0) -> Row:
        """Median of ``stats`` (times ``scale``), with its range."""
        scaled = Stats([v * scale for v in stats.values])
        return self.add(measure, scaled.median, unit, scaled, note)

    def skip(self, reason: str) -> None:
        self.rows.append(Row(self.key, "not measured", "n/a", note=reason))


# --------------------------------------------------------------------------- machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, str]:
    """The machine and software the numbers were measured on."""
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        memory = f"{mem_gb:.1f} GiB"
    except (ValueError, OSError, AttributeError):
        memory = "unknown"
    return {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": memory,
        "torch_threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "aihwkit": package_version("aihwkit"),
        "libc": " ".join(platform.libc_ver()) or "unknown",
        "os": platform.platform(),
    }


def fmt(value: float | str, digits: int = 4) -> str:
    """Numbers with ``digits`` significant digits (no scientific notation for ordinary sizes)."""
    if isinstance(value, str):
        return value
    if value != value:  # NaN
        return "n/a"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 10 ** digits:
        return f"{value:,.0f}"
    if magnitude < 1e-3:
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def markdown(figures: Sequence[Figure], info: Mapping[str, str], header: Mapping[str, str]) -> str:
    """The dated report: machine, settings, then one table per figure."""
    lines = ["# MPS pipeline benchmarks", ""]
    for key, value in header.items():
        lines.append(f"- **{key}**: {value}")
    lines += ["", "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    for fig in figures:
        lines += ["", f"## {fig.title}", "", fig.text, "", f"_measured in {fig.seconds:.0f} s_", "",
                  "| measure | value | unit | runs | min | max | note |", "|---|---:|---|---:|---:|---:|---|"]
        for r in fig.rows:
            note = r.note.replace("|", "/")
            lines.append(f"| {r.measure} | {fmt(r.value)} | {r.unit} | {r.runs} | {fmt(r.low)} | {fmt(r.high)} | "
                         f"{note} |")
        for file, caption in fig.images:
            lines += ["", f"![{caption}]({file})"]
    return "\n".join(lines) + "\n"


def rows_frame(figures: Sequence[Figure], info: Mapping[str, str]):
    """All rows as one data frame (the CSV), machine columns repeated on each row."""
    import pandas as pd

    records = [{**r.__dict__, **{f"machine_{k}": v for k, v in info.items()}} for f in figures for r in f.rows]
    return pd.DataFrame.from_records(records)
