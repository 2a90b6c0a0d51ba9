"""Stage ``evaluate``: what every mapping really delivers over the life of the chip.

For each mapping file of the search output (the Pareto set and every baseline, in file-name
order) the stage builds the standalone model, then measures its test accuracy under PCM
programming noise and drift with the shared evaluator (:func:`mps.evaluation.drift_accuracy_grid`):
per repeat the analog tiles are programmed once and drifted from that state to each
configured time; nothing is rebuilt per time point.  The hardware columns come from the cost
model, with the hardware profile recorded in the supernet (the one its analog layers were
built with).

* A mapping whose layers are all ``fp32`` is the FP32 baseline.  The supernet holds no fp32
  operator, so it is realised from the pretrained model instead; its BatchNorm statistics
  are its own, so it is not recalibrated.  A mapping whose ``source`` is ``pretrained`` (the
  straight conversion) is realised from the pretrained model too, one whose source is a
  ``.pt`` file beside it (the full-analog HWA baseline, retraining methods) is that trained
  network; every other mapping is extracted from the supernet.  All but the FP32 baseline
  have their BN statistics re-estimated (the supernet's shared BN fits no single path, and
  an analog network's statistics shift with its noise).
* A mapping that names the same network as one already scored (same source, same layers, the
  same trained weights: e.g. the ``analog`` baseline and MPS's all-analog path, or one mapping
  in both the MPS and the MPAAS set) gets that grid again instead of a second evaluation: every
  mapping is scored with the same seeds, so the grid would be the same to the last bit.
* Resumable: after each mapping its rows go into ``evaluate-partial.json`` in the work
  folder (rewritten atomically); a rerun skips mappings already there when the inputs'
  digest and the mapping file's checksum still match, and the folder is cleared at the end.
* Outputs: ``results.csv`` (the paper's raw-data columns), ``drift.csv`` (mapping x drift
  time x repeat), ``methods.json`` (per method: its best mapping at the reference time, at
  every drift time, with its costs) and ``metrics.json`` (the headline of that: accuracy at
  the reference time and at one year).
  Per-mapping MLflow metrics are ``<mapping>.accuracy_<t>`` with ``t`` from
  :func:`mps.units.drift_label` (``1s``, ``1h``, ``1d``, ``30d``, ``1y``).
* Profiling: the time of model building, BN recalibration, programming, drift and
  inference (and, inside those, of the aihwkit analog layers) is measured and printed as one
  line at the end, and logged to MLflow (not to the JSON files, which must be reproducible).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
from torch import nn

from mps import evaluation
from mps.artifacts import ArtifactError, atomic_write_json, atomic_write_text, read_json, sha256_file
from mps.config import Params
from mps.cost_model import parse_hardware_profile
from mps.evaluation import EvalSet
from mps.runtime import progress
from mps.stages.common import calibrate_input_ranges, eval_set, evaluation_options, load_supernet_inputs
from mps.stages.pretrain import load_pretrained
from mps.supernet import MappingFile, check_layers, extract, load_mapping, realize
from mps.supernet.mapping import MappingError, allowed_for, mapping_files
from mps.supernet.extract import load_deployed
from mps.analog.tiles import analog_layers
from mps.tracking import Tracker
from mps.units import drift_label

RESULT_COLUMNS = [
    "Model", "Method", "Mapping", "Accuracy_percent", "Accuracy_mean", "Accuracy_std",
    "Analog_Tile_Util_percent", "Analog_MAC_Ratio_percent", "Params_M", "Digital_Size_MB",
    "Analog_Tiles", "Latency_ms", "Energy_uJ_per_sample",
]
DRIFT_COLUMNS = ["mapping", "method", "drift_time", "repeat", "accuracy"]
PARTIAL_NAME = "evaluate-partial.json"
PARTIAL_SCHEMA = "mps-evaluate-partial/1"
FP32 = "fp32"


# --------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Candidate:
    """One mapping file to evaluate, validated against the model."""

    path: Path
    mapping: MappingFile
    checksum: str
    network: str  # what is evaluated: source, layers and trained weights (equal = same grid)

    @property
    def name(self) -> str:
        return self.mapping.name

    @property
    def is_fp32_baseline(self) -> bool:
        return is_fp32_mapping(self.mapping.layers)


def is_fp32_mapping(layers: dict[str, str]) -> bool:
    return bool(layers) and all(op == FP32 for op in layers.values())


def load_candidates(mappings_dir: Path, model_id: str, allowed: dict[str, list[str]],
                    ties: dict[str, str] | None = None) -> list[Candidate]:
    """Read and validate every mapping before any work (so a bad file fails first, not last)."""
    out: list[Candidate] = []
    seen: dict[str, Path] = {}
    for path in mapping_files(mappings_dir):
        mapping = load_mapping(path, model_id)
        if is_fp32_mapping(mapping.layers):
            check_layers(mapping.layers, {n: None for n in allowed}, model_id, source=str(path))
        else:  # a trained network of its own may keep float layers (LionHEART)
            check_layers(mapping.layers, allowed_for(mapping, allowed), model_id, source=str(path), ties=ties)
        if mapping.name in seen:
            raise MappingError(f"{path}: mapping name {mapping.name!r} is also used by {seen[mapping.name].name}; "
                               "fix: give each mapping file a unique name")
        seen[mapping.name] = path
        checksum = sha256_file(path)
        source = "pretrained" if mapping.from_pretrained else "supernet"
        if mapping.weights_file is not None:
            weights = path.parent / mapping.weights_file
            if not weights.is_file():
                raise MappingError(f"{path}: its trained network {weights.name} is missing; "
                                   "fix: rerun 'mps search' (it writes both)")
            source = sha256_file(weights)
            checksum += source
        network = json.dumps({"source": source, "layers": mapping.layers}, sort_keys=True)
        out.append(Candidate(path, mapping, checksum, network))
    return out


# --------------------------------------------------------------------------- profiling
# Evaluator internals whose time is attributed to a category; drift_accuracy_grid looks them
# up as module globals at call time, so wrapping them there measures exactly its phases.
_EVALUATOR_PHASES = {
    "recalibrate_batchnorm": "bn_recalibration",
    "program_analog": "programming",
    "reset_programming": "programming",
    "drift_analog": "drift",
    "evaluate_accuracy": "inference",
}


class EvalProfile:
    """Wall time per phase of the evaluation, and of aihwkit's analog layers inside them."""

    CATEGORIES = ("build", "bn_recalibration", "programming", "drift", "inference", "analog_forward")

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def section(self, category: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[category] += time.perf_counter() - t0

    def _timed(self, fn: Callable, category: str) -> Callable:
        def wrapper(*args, **kwargs):
            with self.section(category):
                return fn(*args, **kwargs)
        return wrapper

    @contextlib.contextmanager
    def instrument(self, model: nn.Module) -> Iterator[None]:
        """Time the evaluator's phases and the analog layers' forward passes of ``model``."""
        originals = {name: getattr(evaluation, name) for name in _EVALUATOR_PHASES if hasattr(evaluation, name)}
        started: dict[int, float] = {}

        def pre(module, _inputs):
            started[id(module)] = time.perf_counter()

        def post(module, _inputs, _output):
            self.seconds["analog_forward"] += time.perf_counter() - started.pop(id(module), time.perf_counter())

        handles = []
        for layer in analog_layers(model):
            handles += [layer.register_forward_pre_hook(pre), layer.register_forward_hook(post)]
        try:
            for name, fn in originals.items():
                setattr(evaluation, name, self._timed(fn, _EVALUATOR_PHASES[name]))
            yield
        finally:
            for name, fn in originals.items():
                setattr(evaluation, name, fn)
            for h in handles:
                h.remove()

    def as_metrics(self) -> dict[str, float]:
        return {f"timing.{c}_seconds": round(self.seconds.get(c, 0.0), 3) for c in self.CATEGORIES}

    def summary(self, total: float, evaluated: int, skipped: int) -> str:
        s = self.seconds
        inference = s.get("inference", 0.0) + s.get("bn_recalibration", 0.0)
        analog = s.get("analog_forward", 0.0)
        accounted = sum(s.get(c, 0.0) for c in self.CATEGORIES if c != "analog_forward")
        share = f" = {100 * analog / inference:.0f} % of forward time" if inference > 0 else ""
        return (f"evaluate timing: {total:.1f} s for {evaluated} mapping(s) ({skipped} resumed); "
                f"inference {s.get('inference', 0.0):.1f} s, BN recalibration {s.get('bn_recalibration', 0.0):.1f} s, "
                f"programming {s.get('programming', 0.0):.1f} s, drift {s.get('drift', 0.0):.1f} s, "
                f"model build {s.get('build', 0.0):.1f} s, other {max(0.0, total - accounted):.1f} s; "
                f"aihwkit analog layers {analog:.1f} s{share}")


# --------------------------------------------------------------------------- resume state
class PartialResults:
    """Per-mapping results of an unfinished run, in the work folder (outside the outputs)."""

    def __init__(self, work_dir: Path, key: str):
        self.path = Path(work_dir) / PARTIAL_NAME
        self.key = key
        self.done: dict[str, dict[str, Any]] = {}

    def load(self, log: Callable[[str], None] = print) -> "PartialResults":
        if not self.path.exists():
            return self
        try:
            raw = read_json(self.path, "evaluate resume file")
        except ArtifactError as exc:
            log(f"evaluate: warning: ignoring resume file: {exc}")
            return self
        if not isinstance(raw, dict) or raw.get("schema") != PARTIAL_SCHEMA or not isinstance(raw.get("done"), dict):
            log(f"evaluate: warning: {self.path} is not an evaluate resume file; starting fresh")
        elif raw.get("key") != self.key:
            log(f"evaluate: note: {self.path} was written for other inputs or params; starting fresh")
        else:
            self.done = raw["done"]
        return self

    def get(self, candidate: Candidate) -> dict[str, Any] | None:
        record = self.done.get(candidate.name)
        if record is None or record.get("checksum") != candidate.checksum:
            return None
        return record

    def add(self, candidate: Candidate, record: dict[str, Any]) -> None:
        self.done[candidate.name] = {"checksum": candidate.checksum, **record}
        atomic_write_json(self.path, {"schema": PARTIAL_SCHEMA, "key": self.key, "done": self.done})

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()  # only if empty: the folder may hold nothing of ours


def inputs_key(params: Params, supernet_path: Path, pretrained_path: Path, data_fingerprint: str) -> str:
    """What a finished mapping's numbers depend on besides its own file."""
    blob = json.dumps({
        "seed": params.seed, "device": params.device, "evaluate": params.evaluate.model_dump(mode="json"),
        "supernet": sha256_file(supernet_path), "pretrained": sha256_file(pretrained_path),
        "data": data_fingerprint,
    }, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


# --------------------------------------------------------------------------- one mapping
def build_model(candidate: Candidate, supernet, pretrained_path: Path, profile, splits, params: Params) -> nn.Module:
    """The standalone model of a mapping, from where its ``source`` says (see the module docstring);
    one realised from the pretrained weights gets its input ranges calibrated as the search did."""
    if candidate.mapping.weights_file is not None:
        return load_deployed(candidate.path.parent / candidate.mapping.weights_file)[0]
    if candidate.mapping.from_pretrained:
        model, ckpt = load_pretrained(pretrained_path)
        model = realize(model, candidate.mapping.layers, profile, tuple(ckpt["image_shape"]))
        return calibrate_input_ranges(model, splits, params).eval()
    return extract(supernet, candidate.mapping.layers)


def evaluate_grid(model: nn.Module, data: EvalSet, drift_times: list[float], repeats: int, seed: int,
                  recalibrate: bool) -> np.ndarray:
    """Accuracy (%) per repeat x drift time, by the shared evaluator."""
    return evaluation.drift_accuracy_grid(model, data, drift_times, repeats, seed, recalibrate=recalibrate)


def result_row(model_name: str, candidate: Candidate, grid: np.ndarray, drift_times: list[float],
               reference_time: float, costs) -> dict[str, Any]:
    j = drift_times.index(reference_time)
    mean, std = float(grid[:, j].mean()), float(grid[:, j].std())
    row = {"Model": model_name, "Method": candidate.mapping.method, "Mapping": candidate.name,
           "Accuracy_percent": f"{mean:.2f}±{std:.2f}", "Accuracy_mean": round(mean, 4), "Accuracy_std": round(std, 4)}
    for key, value in costs.as_row().items():
        row[key] = int(value) if key == "Analog_Tiles" else round(float(value), 6)
    return row


def drift_rows(candidate: Candidate, grid: np.ndarray, drift_times: list[float]) -> list[dict[str, Any]]:
    return [{"mapping": candidate.name, "method": candidate.mapping.method, "drift_time": float(t),
             "repeat": r, "accuracy": round(float(grid[r, j]), 4)}
            for r in range(grid.shape[0]) for j, t in enumerate(drift_times)]


def metric_prefix(name: str) -> str:
    """A mapping name as an MLflow metric-name prefix (MLflow allows letters, digits, ``_-. /``)."""
    return re.sub(r"[^\w.\- /]", "_", name)


def mapping_metrics(name: str, grid: np.ndarray, drift_times: list[float], costs) -> dict[str, float]:
    """MLflow metrics of one mapping: ``<mapping>.accuracy_<t>`` (+ ``_std``) and its hardware costs."""
    name = metric_prefix(name)
    out: dict[str, float] = {}
    for j, t in enumerate(drift_times):
        out[f"{name}.accuracy_{drift_label(t)}"] = float(grid[:, j].mean())
        out[f"{name}.accuracy_{drift_label(t)}_std"] = float(grid[:, j].std())
    for key, value in costs.to_dict().items():
        out[f"{name}.{key}"] = float(value)
    return out


# --------------------------------------------------------------------------- summaries
def method_metrics(results: pd.DataFrame, grids: dict[str, np.ndarray], drift_times: list[float],
                   reference_time: float) -> dict[str, dict[str, float]]:
    """Per method, its best mapping at the reference time: accuracy (mean over repeats) at every
    drift time, std at the reference time, and its hardware costs.  The FP32 baseline is
    drift-free: ``fp32.accuracy``."""
    ref = drift_label(reference_time)
    out: dict[str, dict[str, float]] = {}
    for method, group in results.groupby("Method", sort=True):
        best = group.sort_values(["Accuracy_mean", "Mapping"], ascending=[False, True]).iloc[0]
        if method == FP32:
            out[str(method)] = {"accuracy": round(float(best["Accuracy_mean"]), 4)}
            continue
        grid = grids[best["Mapping"]]
        entry: dict[str, float] = {f"accuracy_{drift_label(t)}": round(float(grid[:, j].mean()), 4)
                                   for j, t in enumerate(drift_times)}
        entry[f"accuracy_{ref}_std"] = round(float(best["Accuracy_std"]), 4)
        entry["analog_mac_ratio_percent"] = round(float(best["Analog_MAC_Ratio_percent"]), 4)
        entry["digital_size_mb"] = round(float(best["Digital_Size_MB"]), 6)
        entry["mappings"] = int(len(group))
        out[str(method)] = entry
    return out


def headline_metrics(details: dict[str, dict[str, float]], reference_time: float) -> dict[str, dict[str, float]]:
    """The headline of :func:`method_metrics` (``metrics.json``, what ``dvc metrics show``
    lists): per method its best mapping's accuracy at the reference time and at one year (when
    evaluated); everything else stays in ``methods.json``."""
    keep = (f"accuracy_{drift_label(reference_time)}", "accuracy_1y", "accuracy")
    return {method: {k: v for k, v in entry.items() if k in keep} for method, entry in details.items()}


def flat_metrics(nested: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"{method}.{k}": float(v) for method, entry in nested.items() for k, v in entry.items()}


# --------------------------------------------------------------------------- stage
def run(params: Params, data_dir: Path, supernet_path: Path, pretrained_path: Path, mappings_dir: Path,
        out_dir: Path, work_dir: Path, tracker: Tracker) -> dict:
    cfg = params.evaluate
    t_start = time.perf_counter()
    drift_times = [float(t) for t in cfg.drift_times]

    # ---- inputs, all checked before any work or output
    splits, supernet, ckpt, pre_ckpt = load_supernet_inputs(data_dir, supernet_path, pretrained_path)
    model_id = str(supernet.meta.get("model_id"))
    fingerprint = splits.manifest["fingerprint"]
    candidates = load_candidates(mappings_dir, model_id, supernet.allowed, supernet.ties)
    profile = parse_hardware_profile(ckpt["profile"], f"{supernet_path} hardware profile")
    costs_of = {c.name: supernet.costs(c.mapping.layers, profile) for c in candidates}
    data = eval_set(splits, "test", cfg.max_test_examples, params.seed, cfg.batch_size,
                    calib_batches=cfg.bn_recalibration_batches, device=params.device, **evaluation_options(params))

    tracker.log_params({"model": params.model.name, "dataset": params.data.dataset, "seed": params.seed,
                        "mappings": len(candidates), "test_examples": len(data.x),
                        **{f"evaluate.{k}": v for k, v in cfg.model_dump().items()}})
    partial = PartialResults(work_dir, inputs_key(params, supernet_path, pretrained_path, fingerprint)).load()
    profile_t = EvalProfile()
    model_name = str(supernet.meta.get("model_name", params.model.name))
    results, drifts = [], []
    grids: dict[str, np.ndarray] = {}
    scored: dict[str, str] = {}  # network -> the first mapping that scored it
    evaluated, resumed, shared = [], [], []
    for candidate in progress(candidates, "evaluate mappings", total=len(candidates)):
        costs = costs_of[candidate.name]
        record = partial.get(candidate)
        same = scored.get(candidate.network)
        if record is not None:
            grid = np.asarray(record["grid"], dtype=float)
            resumed.append(candidate.name)
        elif same is not None:
            grid = grids[same]
            shared.append(candidate.name)
        else:
            with profile_t.section("build"):
                model = build_model(candidate, supernet, pretrained_path, profile, splits, params)
            with profile_t.instrument(model):
                grid = evaluate_grid(model, data, drift_times, cfg.repeats, params.seed,
                                     recalibrate=not candidate.is_fp32_baseline)
            del model
            partial.add(candidate, {"grid": grid.tolist()})
            evaluated.append(candidate.name)
        scored.setdefault(candidate.network, candidate.name)
        grids[candidate.name] = grid
        results.append(result_row(model_name, candidate, grid, drift_times, cfg.reference_time, costs))
        drifts += drift_rows(candidate, grid, drift_times)
        tracker.log_metrics(mapping_metrics(candidate.name, grid, drift_times, costs))
        ref = drift_times.index(cfg.reference_time)
        print(f"evaluate: {candidate.name} ({candidate.mapping.method}): "
              f"{grid[:, ref].mean():.2f}±{grid[:, ref].std():.2f} % at {drift_label(cfg.reference_time)}, "
              f"analog MACs {costs.analog_mac_ratio_percent:.1f} %" + (" [resumed]" if record is not None else "")
              + (f" [the network of {same}]" if record is None and same is not None else ""))

    results_df = pd.DataFrame(results, columns=RESULT_COLUMNS)
    drift_df = pd.DataFrame(drifts, columns=DRIFT_COLUMNS)
    metrics = method_metrics(results_df, grids, drift_times, cfg.reference_time)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "results.csv", results_df.to_csv(index=False))
    atomic_write_text(out_dir / "drift.csv", drift_df.to_csv(index=False))
    atomic_write_json(out_dir / "methods.json", metrics)
    atomic_write_json(out_dir / "metrics.json", headline_metrics(metrics, cfg.reference_time))
    partial.clear()

    total = time.perf_counter() - t_start
    tracker.log_metrics({**flat_metrics(metrics), **profile_t.as_metrics(), "evaluate_seconds": round(total, 3)})
    for name in ("results.csv", "drift.csv", "metrics.json", "methods.json"):
        tracker.log_artifact(out_dir / name)
    line = profile_t.summary(total, len(evaluated), len(resumed))
    if shared:
        line += f"; {len(shared)} mapping(s) named a network already scored: {', '.join(shared)}"
    print(line)
    return {"metrics": metrics, "evaluated": evaluated, "resumed": resumed, "shared": shared,
            "timing": {**profile_t.as_metrics(), "evaluate_seconds": round(total, 3)}, "summary": line}
