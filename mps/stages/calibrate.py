"""Stage ``calibrate``: how much accuracy each layer loses when it alone runs on analog tiles.

Reference: every layer digital (``uniform_mapping('fp16')``; int8 where fp16 is not
allowed).  For each layer whose operators include ``analog``, the sub-network with only that
layer on ``analog`` is extracted and scored with the shared evaluator
(:func:`mps.evaluation.drift_accuracy_grid`: BN recalibration, program once per repeat,
drift to each time) on a seeded subset of the validation split; the reference is scored the
same way.  The layer's *sensitivity* is the accuracy drop in points, reference minus
layer-analog, per drift time (mean and std over the programming-noise repeats).

Seeds: the reference uses ``seed``, the layer at position ``i`` of the network (all weight
layers, analog-capable or not) ``seed + (i + 1) * LAYER_SEED_STRIDE``, so a layer's noise
draws depend only on its place in the network, not on which other layers are calibrated.

Outputs (all computed first, then each written atomically):

* ``sensitivity.csv``: one row per (layer, drift time), layers in network order, times
  ascending; columns :data:`COLUMNS`.  Search (greedy baseline) and report read
  ``layer, drift_time, mean_drop, std_drop``.
* ``noise_schedule.json``: the per-layer progressive-noise schedule phase 2 of adaptation
  would use (:func:`mps.noise_schedule.layer_schedule` on the drops at the largest drift
  time), with the hardware profile's target noise levels.
* ``sensitivity.png``: layers sorted by sensitivity at the calibrated time closest to one day.
"""

from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from mps.artifacts import atomic_write_bytes, atomic_write_json, atomic_write_text, provenance
from mps.config import ConfigError, Params
from mps.cost_model import parse_hardware_profile
from mps.evaluation import EvalSet, drift_accuracy_grid
from mps.noise_schedule import layer_schedule
from mps.runtime import progress, seed_everything
from mps.stages.common import Splits, eval_set, evaluation_options, load_supernet_inputs
from mps.supernet import Supernet, extract
from mps.tracking import Tracker
from mps.units import drift_label, drift_title

COLUMNS = ["layer", "drift_time", "mean_drop", "std_drop", "mean_accuracy", "reference_accuracy", "macs", "params"]
OUTPUTS = ("sensitivity.csv", "noise_schedule.json", "sensitivity.png")
LAYER_SEED_STRIDE = 1000  # > any sensible repeats count: repeat seeds of different layers never overlap
PLOT_REFERENCE_TIME = 86400.0  # the bar chart shows the calibrated time closest to one day
REFERENCE_OPERATOR = "fp16"
ACCURACY_DECIMALS = 6


class CalibrateError(ConfigError):
    """The calibrate stage's inputs do not fit together (data, supernet, search space)."""


# --------------------------------------------------------------------------- pure helpers
def layer_seed(seed: int, index: int) -> int:
    """Noise seed of the layer at network position ``index`` (0-based); ``seed`` is the reference's."""
    return seed + (index + 1) * LAYER_SEED_STRIDE


def analog_capable(supernet: Supernet) -> list[str]:
    """Layers that may run on analog tiles, in network order."""
    return [name for name in supernet.infos if "analog" in supernet.allowed[name]]


def nearest_time(times: Sequence[float], target: float) -> float:
    """The time closest to ``target`` on a log scale (drift is logarithmic in time)."""
    return min(times, key=lambda t: (abs(math.log(t) - math.log(target)), t))


def _points(value: float) -> float:
    """Accuracy points to 1e-6: drops the float32 noise of the accuracy counts, keeps every real digit."""
    return round(float(value), ACCURACY_DECIMALS) + 0.0  # + 0.0: no '-0.0' in the table


def drop_rows(layer: str, grid: np.ndarray, reference: np.ndarray, drift_times: Sequence[float],
              macs: int, params: int) -> list[dict]:
    """Rows of one layer: ``grid`` (repeats x times) of layer-analog accuracy, ``reference``
    (per time) of the all-digital reference."""
    rows = []
    for j, t in enumerate(drift_times):
        drops = reference[j] - grid[:, j]
        rows.append({"layer": layer, "drift_time": float(t), "mean_drop": _points(drops.mean()),
                     "std_drop": _points(drops.std()), "mean_accuracy": _points(grid[:, j].mean()),
                     "reference_accuracy": _points(reference[j]), "macs": int(macs), "params": int(params)})
    return rows


def schedule_document(table: pd.DataFrame, params: Params, profile) -> dict:
    """``noise_schedule.json``: per-layer noise fractions per ramp step, from the drops at the
    largest calibrated drift time, plus the absolute target levels they scale."""
    t = float(table["drift_time"].max())
    rows = table[table["drift_time"] == t]
    drops = {str(r.layer): float(r.mean_drop) for r in rows.itertuples()}
    ramp = params.adapt.noise_ramp
    return {
        "drift_time": t,
        "drift_label": drift_label(t),
        "layers": list(drops),  # network order (the JSON object keys below are sorted)
        "sensitivity": drops,
        "ramp": ramp.model_dump(mode="json"),
        "targets": {"out_noise": float(profile.analog.out_noise),
                    "hwa_weight_noise": float(profile.analog.hwa_weight_noise)},
        "schedule": layer_schedule(drops, ramp),
        "provenance": provenance(params.digest(), seed=params.seed),
    }


def sensitivity_png(table: pd.DataFrame, drift_time: float) -> bytes:
    """Horizontal bars: layers by mean drop at ``drift_time`` (most sensitive on top), std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table[table["drift_time"] == drift_time].reset_index(drop=True)
    position = {n: i for i, n in enumerate(rows["layer"])}
    rows = rows.assign(_pos=rows["layer"].map(position)).sort_values(["mean_drop", "_pos"], kind="stable")
    fig, ax = plt.subplots(figsize=(6.4, max(2.5, 0.32 * len(rows) + 1.2)))
    y = np.arange(len(rows))
    ax.barh(y, rows["mean_drop"], xerr=rows["std_drop"], color="#2ca02c", ecolor="#333333", capsize=2)
    ax.set_yticks(y, rows["layer"], fontsize=8)
    ax.axvline(0.0, color="#000000", linewidth=0.8)
    ax.set_xlabel("accuracy drop (points): all digital minus this layer on analog\n"
                  "error bars: ±1 std over the programming-noise repeats")
    ax.set_title(f"Per-layer analog sensitivity at {drift_title(drift_time)} after programming")
    ax.grid(axis="x", alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


# --------------------------------------------------------------------------- measuring
def calibration_set(params: Params, splits: Splits) -> EvalSet:
    """The seeded validation subset every sub-network is scored on (and its BN-recalibration batches)."""
    cfg = params.calibrate
    return eval_set(splits, "val", cfg.val_examples, params.seed, cfg.batch_size,
                    calib_batches=cfg.bn_recalibration_batches, device=params.device,
                    **evaluation_options(params))


def layer_grid(supernet: Supernet, reference_mapping: dict[str, str], layer: str | None, data: EvalSet,
               drift_times: Sequence[float], repeats: int, seed: int) -> np.ndarray:
    """Accuracy (repeats x drift times) of the reference with ``layer`` on analog (None: the reference)."""
    mapping = dict(reference_mapping) if layer is None else {**reference_mapping, layer: "analog"}
    return drift_accuracy_grid(extract(supernet, mapping), data, drift_times, repeats, seed)


# --------------------------------------------------------------------------- inputs
def load_inputs(data_dir: Path, supernet_path: Path) -> tuple[Splits, Supernet, dict]:
    """Data splits and supernet, checked to belong together; raises before any output."""
    splits, supernet, ckpt, _ = load_supernet_inputs(data_dir, supernet_path)
    if not analog_capable(supernet):
        raise CalibrateError(f"{supernet_path}: no layer of the supernet may run on 'analog', so there is nothing "
                             "to calibrate; fix: include 'analog' in space.operators and rerun 'mps adapt'")
    return splits, supernet, ckpt


# --------------------------------------------------------------------------- stage
def run(params: Params, data_dir: Path, supernet_path: Path, out_dir: Path, tracker: Tracker) -> dict:
    cfg = params.calibrate
    t_start = time.perf_counter()
    drift_times = sorted({float(t) for t in cfg.drift_times})
    splits, supernet, ckpt = load_inputs(Path(data_dir), Path(supernet_path))
    profile = parse_hardware_profile(ckpt["profile"], f"{supernet_path} hardware profile")
    data = calibration_set(params, splits)
    seed_everything(params.seed)
    layers = analog_capable(supernet)
    index = {name: i for i, name in enumerate(supernet.infos)}
    plot_time = nearest_time(drift_times, PLOT_REFERENCE_TIME)

    tracker.log_params({"model": params.model.name, "dataset": params.data.dataset, "seed": params.seed,
                        "layers": len(supernet.infos), "analog_layers": len(layers), "val_examples_used": len(data.x),
                        "plot_drift_time": plot_time,
                        **{f"calibrate.{k}": v for k, v in cfg.model_dump().items()}})

    reference_mapping = supernet.uniform_mapping(REFERENCE_OPERATOR)
    reference = layer_grid(supernet, reference_mapping, None, data, drift_times, cfg.repeats,
                           params.seed).mean(axis=0)
    rows: list[dict] = []
    for name in progress(layers, "calibrate layers", total=len(layers)):
        grid = layer_grid(supernet, reference_mapping, name, data, drift_times, cfg.repeats,
                          layer_seed(params.seed, index[name]))
        info = supernet.infos[name]
        rows += drop_rows(name, grid, reference, drift_times, info.macs, info.params)
    table = pd.DataFrame(rows, columns=COLUMNS)

    schedule = schedule_document(table, params, profile)
    png = sensitivity_png(table, plot_time)
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "sensitivity.csv", table.to_csv(index=False))
    atomic_write_json(out_dir / "noise_schedule.json", schedule)
    atomic_write_bytes(out_dir / "sensitivity.png", png)

    metrics = {f"sensitivity.{r.layer}.{drift_label(r.drift_time)}": float(r.mean_drop) for r in table.itertuples()}
    metrics.update({f"reference_accuracy_{drift_label(t)}": float(a) for t, a in zip(drift_times, reference)})
    metrics["calibrate_seconds"] = round(time.perf_counter() - t_start, 2)
    tracker.log_metrics(metrics)
    for name in OUTPUTS:
        tracker.log_artifact(out_dir / name)
    at_plot = table[table["drift_time"] == plot_time].sort_values("mean_drop", ascending=False, kind="stable")
    top = ", ".join(f"{r.layer} {r.mean_drop:.2f}" for r in at_plot.head(3).itertuples())
    print(f"calibrate: {len(layers)} layers, reference {reference[drift_times.index(plot_time)]:.2f} % at "
          f"{drift_label(plot_time)}; most sensitive: {top}")
    return metrics
