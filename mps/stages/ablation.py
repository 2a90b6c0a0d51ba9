"""Stage ``ablation``: the paper's ablation study, one row per adaptation variant.

Each variant is the default adaptation with some of its components switched off
(``ablation.variants`` in params: overrides of ``adapt.*`` keys, e.g. ``{qat: false, hwa:
none}``), adapted from the *same* pretrained model with each of ``ablation.seeds``, then
searched ``ablation.search_draws`` times (MPS with ``search.draw_seed`` 0 ... n-1: the same
supernet, evaluator and images, other draws) and each search evaluated like the main run
(``snakemake ablation`` runs the grid).  Why several searches: on the default ResNet8 one search's
best >= 70 % mapping moves by about a point with its draws alone (the README's pick studies),
more than most components of the adaptation move it, so a column read from one search per
supernet ranks the variants by the search's luck.  This stage reads the grid's outputs and
writes, per variant, mean and std over every (seed, search) run of:

* the supernet's all-analog path at the reference drift time and at the last drift time
  (``analog`` mapping of the evaluate stage);
* its INT8 path (``int8`` mapping);
* the best MPS mapping with at least ``ablation.min_analog_mac_percent`` of its MACs on
  analog tiles, at the reference time (NaN when the set has none);
* the hypervolume of the MPS set (search stage, on its validation estimates, same reference
  point in every run);
* the hypervolume of the MPS set on the test split over the useful accuracy range, FP32 minus
  ``report.hypervolume_window`` points to FP32, as the report computes it
  (:func:`mps.stages.report.measured_hypervolumes`; the ablation's search adds the ``fp32``
  mapping so that its evaluate stage scores FP32 on the same test images).  Why: on [0, 100] %
  every variant reads 1.22-1.23, and the ">= 70 % analog" column is a step that moves by a point
  when one mapping of the set lands at 69 % instead of 71 %; this one weighs the whole set.
  NaN for a run whose results have no FP32 row (an ablation run before 2026-12-03).

The all-analog and INT8 columns depend on the adaptation only: every search of one supernet
repeats them, so their mean and std are those over seeds.

Outputs: ``ablation.csv`` (one row per variant x seed x search), ``ablation.md`` (mean ± std
table) and ``ablation.png``.  Run folders are ``<root>/<variant>/r<seed>/adapt`` and
``<root>/<variant>/r<seed>/d<draw>/{search,evaluate}``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from mps.artifacts import ArtifactError, atomic_write_text, read_json
from mps.config import Params
from mps.stages.report import measured_hypervolumes
from mps.tracking import Tracker
from mps.units import drift_label

RUN_PATH = re.compile(r"(?P<variant>[^/]+)/r(?P<seed>\d+)/d(?P<draw>\d+)/evaluate/results\.csv$")
METRICS = ("analog_ref", "analog_last", "int8", "best_analog_mapping", "hypervolume", "hypervolume_useful")


def _path_accuracy(drift: pd.DataFrame, mapping: str, time: float) -> float:
    rows = drift[(drift["mapping"] == mapping) & np.isclose(drift["drift_time"], time)]
    return float(rows["accuracy"].mean()) if len(rows) else float("nan")


def read_run(results_csv: Path, min_analog: float, reference_time: float,
             window: float) -> dict[str, float | str | int]:
    """The ablation metrics of one (variant, seed, search) run from its evaluate and search outputs."""
    m = RUN_PATH.search(Path(results_csv).as_posix())
    if m is None:
        raise ArtifactError(f"{results_csv}: not a <variant>/r<seed>/d<draw>/evaluate/results.csv path; "
                            "fix: pass the ablation runs' results.csv files")
    evaluate_dir = Path(results_csv).parent
    search_json = evaluate_dir.parent / "search" / "search.json"
    for path in (results_csv, evaluate_dir / "drift.csv", search_json):
        if not Path(path).is_file():
            raise ArtifactError(f"{path}: not found; fix: run the ablation's search and evaluate first")
    results = pd.read_csv(results_csv)
    drift = pd.read_csv(evaluate_dir / "drift.csv")
    last_time = float(drift["drift_time"].max())
    mps_rows = results[(results["Method"] == "mps") & (results["Analog_MAC_Ratio_percent"] >= min_analog)]
    summary = read_json(search_json, "search summary")
    return {"variant": m["variant"], "seed": int(m["seed"]), "draw": int(m["draw"]),
            "analog_ref": _path_accuracy(drift, "analog", reference_time),
            "analog_last": _path_accuracy(drift, "analog", last_time),
            "int8": _path_accuracy(drift, "int8", reference_time),
            "best_analog_mapping": float(mps_rows["Accuracy_mean"].max()) if len(mps_rows) else float("nan"),
            "hypervolume": float(summary["methods"]["mps"]["hypervolume"]),
            "hypervolume_useful": float(measured_hypervolumes(results, window).get("mps", float("nan"))),
            "last_time": last_time}


def summarise(runs: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """Mean and std (over every seed x search run) of every metric, variants in ``order``."""
    grouped = runs.groupby("variant")
    out = grouped[list(METRICS)].mean().join(grouped[list(METRICS)].std(ddof=0).add_suffix("_std"))
    out.insert(0, "searches", grouped.size())
    out.insert(0, "seeds", grouped["seed"].nunique())
    known = [v for v in order if v in out.index] + sorted(v for v in out.index if v not in order)
    return out.loc[known].reset_index()


def ablation_plot(table: pd.DataFrame, path: Path, labels: dict[str, str]) -> Path:
    from mps.plots import _save, plt  # noqa: PLC0415 - matplotlib only when plotting

    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(table))
    width = 0.2
    for i, (col, label) in enumerate(labels.items()):
        ax.bar(x + (i - 1.5) * width, table[col], width, yerr=table[f"{col}_std"], label=label, capsize=2)
    ax.set_xticks(x, table["variant"], rotation=20, ha="right")
    ax.set_ylabel("test accuracy (%)")
    finite = table[list(labels)].to_numpy(dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size:
        ax.set_ylim(max(0.0, finite.min() - 5), min(100.0, finite.max() + 2))
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Ablation of the adaptation (mean ± std over seeds x searches)")
    fig.tight_layout()
    return _save(fig, path)


def run(params: Params, results: Sequence[Path], out_dir: Path, tracker: Tracker) -> pd.DataFrame:
    cfg = params.ablation
    reference = float(params.evaluate.reference_time)
    window = params.report.hypervolume_window
    runs = pd.DataFrame([read_run(Path(p), cfg.min_analog_mac_percent, reference, window) for p in results])
    if runs.empty:
        raise ArtifactError("ablation: no results.csv given; fix: run `snakemake ablation`")
    table = summarise(runs, list(cfg.variants))
    last = drift_label(float(runs["last_time"].max()))
    ref = drift_label(reference)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "ablation.csv", runs.drop(columns="last_time").to_csv(index=False, float_format="%.4f"))
    labels = {"analog_ref": f"all-analog path, {ref}", "analog_last": f"all-analog path, {last}",
              "int8": "INT8 path", "best_analog_mapping": f"best MPS mapping >= {cfg.min_analog_mac_percent:g} % analog MACs"}
    ablation_plot(table, out_dir / "ablation.png", labels)
    shown = pd.DataFrame({"variant": table["variant"], "seeds": table["seeds"], "searches": table["searches"]})
    hv_labels = {"hypervolume": "MPS hypervolume (search, validation)",
                 "hypervolume_useful": f"MPS hypervolume (test, accuracy FP32−{window:g}…FP32)"}
    for col, label in {**labels, **hv_labels}.items():
        digits = 3 if col.startswith("hypervolume") else 2
        shown[label] = [f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in zip(table[col], table[f"{col}_std"])]
    overrides = {name: ", ".join(f"{k}={v}" for k, v in o.items()) or "(defaults)" for name, o in cfg.variants.items()}
    shown.insert(1, "adapt overrides", [overrides.get(v, "?") for v in table["variant"]])
    md = ["# Ablation of the adaptation", "",
          f"Accuracy on the test split (evaluate stage), mean ± std over adaptation seeds {list(cfg.seeds)} "
          f"x {cfg.search_draws} MPS search(es) of each adapted supernet (draw seeds 0 ... {cfg.search_draws - 1}); "
          "every variant adapted from the same pretrained model. The all-analog and INT8 paths depend on the "
          "adaptation only; the MPS columns vary with the search too.", "",
          shown.to_markdown(index=False), ""]
    atomic_write_text(out_dir / "ablation.md", "\n".join(md))
    tracker.log_metrics({f"{r.variant}.{m}": float(getattr(r, m)) for r in table.itertuples() for m in METRICS
                         if np.isfinite(getattr(r, m))})
    for name in ("ablation.csv", "ablation.md", "ablation.png"):
        tracker.log_artifact(out_dir / name)
    print(f"ablation: {len(runs)} runs of {len(table)} variants -> {out_dir / 'ablation.csv'}")
    return table
