"""Stage ``aggregate``: one table across the sweep grid (data sets x models x seeds).

For each run's ``results.csv`` (path ``<out>/<dataset>/<model>/s<seed>/evaluate/results.csv``)
every method is represented by its most accurate mapping at the reference drift time; then
per (dataset, model, method) the mean and std over seeds of accuracy and of the hardware
columns.  With one seed, std is 0.  Writes ``summary.csv`` and ``summary.md``.

Beside it, the methods at a glance (``methods.csv``, second table of ``summary.md``): per
(dataset, model) the rows a reader of the paper compares, FP32, straight conversion, the HWA
full-analog network, and each mapper (MPS, MPAAS, LionHEART, ODiMo) by one mapping picked with
the same rule for all: its most accurate mapping with at least ``report.min_analog_mac_percent``
of its MACs on analog tiles; without one, its most analog mapping within ``report.max_acc_drop``
points of FP32; without one, its most accurate.  Each row gives the accuracy at the reference
drift time and at the last one (1 year by default), the analog MAC share, tiles, energy and the
method's mapping time as the search stage recorded it (pretrained model to Pareto set, training
included).  The run's ``drift.csv`` and ``search/search.json`` are read beside ``results.csv``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from mps.artifacts import ArtifactError, atomic_write_text, read_json
from mps.config import Params
from mps.tracking import Tracker
from mps.units import drift_label

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


GLANCE_METHODS = ("fp32", "analog_straight", "analog_hwa", "mps", "mpaas", "lionheart", "odimo")
MAPPERS = frozenset({"mps", "mpaas", "lionheart", "odimo"})


def pick_mapping(rows: pd.DataFrame, fp32_acc: float, min_analog: float, max_drop: float) -> tuple[pd.Series, str]:
    """One mapping of a mapper's set and the rule that picked it (see the module docstring)."""
    ranked = rows.sort_values(["Accuracy_mean", "Mapping"], ascending=[False, True])
    analog = ranked[ranked["Analog_MAC_Ratio_percent"] >= min_analog - 1e-9]
    if len(analog):
        return analog.iloc[0], f">={min_analog:g}% analog"
    close = ranked[ranked["Accuracy_mean"] >= fp32_acc - max_drop - 1e-9]
    if len(close):
        best = close.sort_values(["Analog_MAC_Ratio_percent", "Accuracy_mean", "Mapping"],
                                 ascending=[False, False, True]).iloc[0]
        return best, f"most analog within {max_drop:g} of FP32"
    return ranked.iloc[0], "most accurate"


def _drift_stats(drift: pd.DataFrame, mapping: str, time: float) -> tuple[float, float]:
    """Mean and std (over programming seeds) of a mapping's accuracy at one drift time."""
    rows = drift[(drift["mapping"] == mapping) & np.isclose(drift["drift_time"].astype(float), time)]
    acc = rows["accuracy"].astype(float)
    return (float(acc.mean()), float(acc.std(ddof=0))) if len(rows) else (float("nan"), float("nan"))


def glance_rows(results_csv: Path, results: pd.DataFrame, reference_time: float, min_analog: float,
                max_drop: float) -> list[dict]:
    """The methods-at-a-glance rows of one run (``results`` is its results table)."""
    evaluate_dir = Path(results_csv).parent
    drift_csv, search_json = evaluate_dir / "drift.csv", evaluate_dir.parent / "search" / "search.json"
    for path in (drift_csv, search_json):
        if not path.is_file():
            raise ArtifactError(f"{path}: not found beside {results_csv}; fix: run the search and evaluate stages "
                                "of that run")
    drift = pd.read_csv(drift_csv)
    last = float(drift["drift_time"].max())
    searched = read_json(search_json, "search summary").get("methods", {})
    fp32 = results[results["Method"] == "fp32"]
    fp32_acc = float(fp32["Accuracy_mean"].max()) if len(fp32) else float("inf")
    rows = []
    for method in GLANCE_METHODS:
        own = results[results["Method"] == method]
        if own.empty:
            continue
        if method in MAPPERS:
            chosen, rule = pick_mapping(own, fp32_acc, min_analog, max_drop)
        else:
            chosen, rule = own.iloc[0], "the only mapping"
        seconds = (searched.get(method) or {}).get("mapping_seconds")
        (ref_mean, ref_std), (last_mean, last_std) = (_drift_stats(drift, chosen["Mapping"], t)
                                                      for t in (reference_time, last))
        rows.append({"Method": method, "Mapping": chosen["Mapping"], "Rule": rule,
                     "Accuracy_ref": ref_mean, "Accuracy_ref_std": ref_std,
                     "Accuracy_last": last_mean, "Accuracy_last_std": last_std, "Last_time": last,
                     "Analog_MAC_Ratio_percent": chosen["Analog_MAC_Ratio_percent"],
                     "Analog_Tiles": chosen["Analog_Tiles"], "Energy_uJ_per_sample": chosen["Energy_uJ_per_sample"],
                     "Mapping_seconds": float(seconds) if seconds is not None else float("nan")})
    return rows


def methods_at_a_glance(paths: Sequence[Path], reference_time: float, min_analog: float,
                        max_drop: float) -> pd.DataFrame:
    """Per (dataset, model, method): mean over seeds of the picked mapping's columns, and the std
    of its accuracies over every programming seed of every run (pooled: the mean of the runs'
    variances plus the variance of their means); the mapping and rule are each seed's, joined."""
    rows = []
    for path in paths:
        m = RUN_PATH.search(Path(path).as_posix())
        results = read_runs([path])  # checks the path and the table's columns
        for row in glance_rows(Path(path), results, reference_time, min_analog, max_drop):
            rows.append({"Dataset": m["dataset"], "Model": m["model"], "Seed": int(m["seed"]), **row})
    runs = pd.DataFrame(rows)
    numeric = ["Accuracy_ref", "Accuracy_last", "Analog_MAC_Ratio_percent", "Analog_Tiles", "Energy_uJ_per_sample",
               "Mapping_seconds"]
    grouped = runs.groupby(["Dataset", "Model", "Method"], sort=False)
    out = grouped[numeric].mean()
    for col in ("Accuracy_ref", "Accuracy_last"):
        out[f"{col}_std"] = np.sqrt(grouped[f"{col}_std"].agg(lambda s: float((s ** 2).mean()))
                                    + grouped[col].var(ddof=0))
    out["Seeds"] = grouped.size()
    out["Mapping"] = grouped["Mapping"].agg(lambda s: ", ".join(s))
    out["Rule"] = grouped["Rule"].agg(lambda s: ", ".join(dict.fromkeys(s)))
    out["Last_time"] = grouped["Last_time"].max()
    return out.reset_index()


def glance_markdown(table: pd.DataFrame, reference_time: float) -> str:
    """The methods-at-a-glance table as Markdown (accuracy columns labelled by their drift times)."""
    ref = drift_label(reference_time)
    last = drift_label(float(table["Last_time"].max()))
    shown = pd.DataFrame({
        "Dataset": table["Dataset"], "Model": table["Model"], "Method": table["Method"],
        "Mapping": table["Mapping"], "Picked by": table["Rule"],
        f"Accuracy {ref} (%)": [f"{m:.2f}±{s:.2f}" for m, s in zip(table["Accuracy_ref"], table["Accuracy_ref_std"])],
        f"Accuracy {last} (%)": [f"{m:.2f}±{s:.2f}" for m, s in zip(table["Accuracy_last"], table["Accuracy_last_std"])],
        "Analog MACs (%)": table["Analog_MAC_Ratio_percent"].round(1), "Tiles": table["Analog_Tiles"].round(1),
        "Energy (µJ)": table["Energy_uJ_per_sample"].round(2), "Mapping time (s)": table["Mapping_seconds"].round(0)})
    return shown.to_markdown(index=False)


def run(params: Params, results: Sequence[Path], out_dir: Path, tracker: Tracker) -> pd.DataFrame:
    summary = summarise(read_runs(results))
    reference_time = float(params.evaluate.reference_time)
    glance = methods_at_a_glance(results, reference_time, params.report.min_analog_mac_percent,
                                 params.report.max_acc_drop)
    atomic_write_text(out_dir / "summary.csv", summary.to_csv(index=False, float_format="%.6g"))
    atomic_write_text(out_dir / "methods.csv", glance.to_csv(index=False, float_format="%.6g"))
    table = summary[["Dataset", "Model", "Method", "Seeds", "Accuracy_percent", "Analog_MAC_Ratio_percent",
                     "Digital_Size_MB", "Analog_Tiles", "Energy_uJ_per_sample", "Latency_ms"]]
    md = ["# MPS results across the grid", "",
          "Best mapping of each method per run, then mean ± std over seeds (accuracy at the reference drift time).",
          "", table.to_markdown(index=False, floatfmt=".3g"), "",
          "## Methods at a glance", "",
          f"FP32, straight conversion and the HWA full-analog network; each mapper by its most accurate mapping "
          f"with at least {params.report.min_analog_mac_percent:g} % of MACs on analog tiles, else its most analog "
          f"mapping within {params.report.max_acc_drop:g} points of FP32, else its most accurate. Accuracy: mean ± "
          "std over programming seeds pooled over seeds of the grid; mapping time: pretrained model to Pareto "
          "set, training included, as the search stage recorded it.", "",
          glance_markdown(glance, reference_time), ""]
    atomic_write_text(out_dir / "summary.md", "\n".join(md))
    tracker.log_metrics({f"{r.Dataset}.{r.Model}.{r.Method}.accuracy_mean": r.Accuracy_mean for r in summary.itertuples()})
    tracker.log_artifact(out_dir / "summary.csv")
    tracker.log_artifact(out_dir / "summary.md")
    tracker.log_artifact(out_dir / "methods.csv")
    print(f"aggregate: {len(results)} runs -> {out_dir / 'summary.csv'}")
    return summary
