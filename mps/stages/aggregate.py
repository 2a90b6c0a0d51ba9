"""Stage ``aggregate``: one table across the sweep grid (data sets x models x seeds).

For each run's ``results.csv`` (path ``<out>/<dataset>/<model>/s<seed>/evaluate/results.csv``)
every method is represented by its most accurate mapping at the reference drift time; then
per (dataset, model, method) the mean and std over seeds of accuracy and of the hardware
columns.  With one seed, std is 0.  Writes ``summary.csv`` and ``summary.md``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import pandas as pd

from mps.artifacts import ArtifactError, atomic_write_text
from mps.config import Params
from mps.tracking import Tracker

RUN_PATH = re.compile(r"(?P<dataset>[^/]+)/(?P<model>[^/]+)/s(?P<seed>\d+)/evaluate/results\.csv$")
HARDWARE = ["Analog_MAC_Ratio_percent", "Analog_Tile_Util_percent", "Analog_Tiles", "Digital_Size_MB",
            "Latency_ms", "Energy_uJ_per_sample"]


def read_runs(paths: Sequence[Path]) -> pd.DataFrame:
    frames = []
    for path in paths:
        m = RUN_PATH.search(Path(path).as_posix())
        if m is None:
            raise ArtifactError(f"{path}: not a <dataset>/<model>/s<seed>/evaluate/results.csv path; "
                                "fix: pass the evaluate stage's results.csv files")
        if not Path(path).is_file():
            raise ArtifactError(f"{path}: results table not found; fix: run the evaluate stage first")
        df = pd.read_csv(path)
        missing = {"Method", "Accuracy_mean", *HARDWARE} - set(df.columns)
        if missing:
            raise ArtifactError(f"{path}: results table lacks {sorted(missing)}; fix: rerun mps evaluate")
        frames.append(df.assign(Dataset=m["dataset"], Model=m["model"], Seed=int(m["seed"])))
    if not frames:
        raise ArtifactError("aggregate: no results.csv given; fix: run evaluate for at least one grid point")
    return pd.concat(frames, ignore_index=True)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    best = (runs.sort_values(["Accuracy_mean", "Mapping"], ascending=[False, True])
                .groupby(["Dataset", "Model", "Seed", "Method"], as_index=False).first())
    cols = ["Accuracy_mean", *HARDWARE]
    grouped = best.groupby(["Dataset", "Model", "Method"])
    mean = grouped[cols].mean()
    std = grouped[cols].std(ddof=0)
    out = mean.join(std.add_suffix("_std")).reset_index()
    out.insert(3, "Seeds", grouped.size().values)
    out.insert(4, "Accuracy_percent", [f"{m:.2f}±{s:.2f}" for m, s in zip(out["Accuracy_mean"], out["Accuracy_mean_std"])])
    return out.sort_values(["Dataset", "Model", "Accuracy_mean"], ascending=[True, True, False]).reset_index(drop=True)


def run(params: Params, results: Sequence[Path], out_dir: Path, tracker: Tracker) -> pd.DataFrame:
    summary = summarise(read_runs(results))
    atomic_write_text(out_dir / "summary.csv", summary.to_csv(index=False, float_format="%.6g"))
    table = summary[["Dataset", "Model", "Method", "Seeds", "Accuracy_percent", "Analog_MAC_Ratio_percent",
                     "Digital_Size_MB", "Analog_Tiles", "Energy_uJ_per_sample", "Latency_ms"]]
    md = ["# MPS results across the grid", "",
          "Best mapping of each method per run, then mean ± std over seeds (accuracy at the reference drift time).",
          "", table.to_markdown(index=False, floatfmt=".3g"), ""]
    atomic_write_text(out_dir / "summary.md", "\n".join(md))
    tracker.log_metrics({f"{r.Dataset}.{r.Model}.{r.Method}.accuracy_mean": r.Accuracy_mean for r in summary.itertuples()})
    tracker.log_artifact(out_dir / "summary.csv")
    tracker.log_artifact(out_dir / "summary.md")
    print(f"aggregate: {len(results)} runs -> {out_dir / 'summary.csv'}")
    return summary
