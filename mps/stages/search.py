"""Stage ``search``: MPS's rank-preserving alpha search, and the baselines at the same budget.

Every method (``mps`` and each of ``search.baselines``) gets a fresh
:class:`~mps.search.objectives.ObjectiveEvaluator` with the same budget, validation examples,
drift time, hardware profile and seed, so evaluations, accuracies and costs are comparable;
its wall-clock time is measured around the whole method, evaluations included.

Outputs (into ``--out``):

* ``mappings/``: each method's non-dominated set, one ``mps-mapping/1`` file per mapping
  (``mps-00.json`` ..., ``greedy-00.json``, ``random-00.json``, ``nsga2-00.json``, and
  ``fp32.json``, ``int8.json``, ``analog.json``), written as a whole folder atomically.  The
  files hold no timestamps or times: the same params and seed give byte-identical files;
* ``pareto.csv``: one row per written mapping: its estimated objectives, its Pareto rank
  within its method and over all methods;
* ``search.json``: per method the search time, evaluations used, hypervolume of its set and
  number of mappings; every hypervolume uses the same fixed normalisation
  (:func:`mps.pareto.report_bounds` with the FP32 model's digital size) and reference point.
  And its *mapping time* (the paper's): wall time from the pretrained checkpoint to the
  method's set, all training it needs included (:func:`mapping_seconds`): a method that
  searches the adapted supernet (MPS and the supernet baselines, ODiMo too: it starts from the
  supernet's weights) adds the adapt stage's training seconds (``fairness_seconds +
  noise_seconds`` of ``evidence.json`` beside the supernet) and, for ``greedy``, the calibrate
  stage's seconds when a ``metrics.json`` beside the sensitivity table records them; methods
  that start from the pretrained model (FP32, straight, HWA, LionHEART) count their own time,
  their training included.
* ``metrics.json``: the headline of ``search.json`` (per method its hypervolume, search and
  mapping time), what ``dvc metrics show`` lists.

Resumable per method: a finished method's result is kept in the work folder and reused by a
rerun with the same inputs and params (its recorded search time included).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from mps.artifacts import (ArtifactError, atomic_directory, atomic_write_json, atomic_write_text, provenance,
                           read_json, sha256_file)
from mps.config import ConfigError, Params, SearchConfig
from mps.cost_model import parse_hardware_profile
from mps.pareto import (DEFAULT_REF, normalized_hypervolume, objective_senses, pareto_ranks, report_bounds,
                        to_minimization)
from mps.runtime import derived_seed, seed_everything
from mps.search.baselines import (FP32, fp32_baseline, fp32_mapping, greedy_search, hwa_baseline, nsga2_population,
                                  nsga2_search, random_search, read_sensitivity, sensitivity_order, straight_baseline,
                                  uniform_baseline)
from mps.search.lionheart import lionheart_search
from mps.search.mps_search import mps_search, sensitive_first
from mps.search.odimo import odimo_search
from mps.search.objectives import Evaluation, ObjectiveEvaluator, cost_objectives
from mps.search.result import SearchResult
from mps.stages.common import calibrate_input_ranges, eval_set, evaluation_options, load_supernet_inputs
from mps.data import black_fill
from mps.hwa import finetune
from mps.supernet import MappingFile, check_layers, realize
from mps.supernet.extract import load_deployed, save_deployed
from mps.supernet.mapping import allowed_for
from mps.training import adapt_steps, epoch_steps
from mps.supernet.adapted import WIDE
from mps.tracking import Tracker

SINGLE_MAPPING_METHODS = ("fp32", "int8", "analog", "analog_straight", "analog_hwa")
PARETO_COLUMNS = ["name", "method", "file", "accuracy", "analog_mac_ratio", "digital_size_mb", "energy_uj",
                  "latency_ms", "analog_tiles", "rank_in_method", "rank_overall"]
STATE_SCHEMA = "mps-search-state/1"


# --------------------------------------------------------------------------- methods
@dataclass
class SearchContext:
    """What the searchers need besides their evaluator: the supernet, config, seed, inputs."""

    supernet: Any  # mps.supernet.Supernet
    cfg: SearchConfig
    seed: int
    build_pretrained: Callable[[dict], Any]  # realises a mapping from the pretrained model (FP32, straight)
    greedy_order: list[str] | None  # analog-capable layers, least sensitive first
    most_sensitive: list[str] | None  # analog-capable layers, most sensitive per MAC first (MPS's anchors)
    # hardware-aware training of a realised model in place: train_hwa(model, steps=None, desc=...);
    # steps None = the adaptation's step count
    train_hwa: Callable[..., dict] | None = None
    profile: Any = None  # the hardware profile (LionHEART's order, ODiMo's expected cost)
    train_data: tuple[Any, Any] | None = None  # training split (ODiMo's search batches)
    train_batch_size: int = 128
    train_momentum: float = 0.9
    # optimizer steps of a budget in epochs of the training split (mps.training.epoch_steps);
    # LionHEART and ODiMo need it (their budgets are epochs)
    epochs_to_steps: Callable[[float], int] | None = None


def mps_draw_seed(run_seed: int, draw_seed: int) -> int:
    """The seed of MPS's own draws: the run seed for ``search.draw_seed`` 0 (as every run before
    it existed), else an independent seed derived from the run seed and the draw seed."""
    return run_seed if draw_seed == 0 else derived_seed(run_seed, f"mps-draws-{draw_seed}")


def run_method(method: str, evaluator: ObjectiveEvaluator, ctx: SearchContext) -> SearchResult:
    """Run one method within ``evaluator``'s budget; time it, evaluations included.

    The global random state is reseeded per method (from the run seed and the method's name):
    aihwkit's training noise draws from it, and ODiMo's searches, which nothing else reseeds,
    depended on the methods before them and on a resume until 2026-12-03.
    """
    seed_everything(derived_seed(ctx.seed, method))
    t0 = time.perf_counter()
    if method == "mpaas":  # MPS over the extended space, adapted candidates included
        result = mps_search(ctx.supernet, evaluator, ctx.cfg, mps_draw_seed(ctx.seed, ctx.cfg.draw_seed),
                            method="mpaas", most_sensitive=ctx.most_sensitive or ())
    else:  # MPS and every baseline search the plain operators
        with ctx.supernet.excluding({WIDE}):
            result = _run_plain_method(method, evaluator, ctx)
    result.seconds = time.perf_counter() - t0
    return result


def _run_plain_method(method: str, evaluator: ObjectiveEvaluator, ctx: SearchContext) -> SearchResult:
    cfg, k, seed, sn = ctx.cfg, ctx.cfg.pareto_size, ctx.seed, ctx.supernet
    if method == "mps":
        result = mps_search(sn, evaluator, cfg, mps_draw_seed(seed, cfg.draw_seed),
                            most_sensitive=ctx.most_sensitive or ())
    elif method == "fp32":
        result = fp32_baseline(evaluator, sn, lambda: ctx.build_pretrained(fp32_mapping(sn)), k, seed)
    elif method in ("int8", "analog"):
        result = uniform_baseline(method, method, evaluator, sn, k, seed)
    elif method == "analog_straight":
        result = straight_baseline(evaluator, sn, ctx.build_pretrained, k, seed)
    elif method == "analog_hwa":
        steps = _epochs_to_steps(ctx)(cfg.hwa_epochs) if cfg.hwa_epochs else None  # None: the adaptation's
        result = hwa_baseline(evaluator, sn, ctx.build_pretrained, lambda m: ctx.train_hwa(m, steps=steps), k, seed)
    elif method == "greedy":
        result = greedy_search(evaluator, sn, ctx.greedy_order or [], cfg.max_acc_drop, k, seed)
    elif method == "random":
        result = random_search(evaluator, sn, k, seed)
    elif method == "nsga2":
        result = nsga2_search(evaluator, sn, k, seed, nsga2_population(cfg.budget, cfg.nsga2_population))
    elif method == "lionheart":
        lh = cfg.lionheart
        steps = _epochs_to_steps(ctx)(lh.epochs_per_round)
        result = lionheart_search(evaluator, sn, ctx.profile, ctx.build_pretrained,
                                  lambda m: ctx.train_hwa(m, steps=steps, desc="search lionheart"), lh, k, seed)
    elif method == "odimo":
        od = cfg.odimo
        to_steps = _epochs_to_steps(ctx)
        finetune_steps = to_steps(od.finetune_epochs) if od.finetune_epochs else None
        result = odimo_search(evaluator, sn, ctx.profile, *ctx.train_data,
                              lambda m: ctx.train_hwa(m, steps=finetune_steps, desc="search odimo"), od,
                              to_steps(od.search_epochs), ctx.train_batch_size, ctx.train_momentum, k,
                              seed, device=str(evaluator.data.device))
    else:  # config validation makes this unreachable
        raise ValueError(f"unknown search method {method!r}")
    return result


def _epochs_to_steps(ctx: SearchContext) -> Callable[[float], int]:
    if ctx.epochs_to_steps is None:
        raise ValueError("SearchContext.epochs_to_steps is not set: the HWA, LionHEART and ODiMo budgets are "
                         "epochs of the training split; fix: pass epochs_to_steps (mps.training.epoch_steps over "
                         "the training split)")
    return ctx.epochs_to_steps


# --------------------------------------------------------------------------- mapping files
def mapping_names(result: SearchResult) -> list[str]:
    if result.method in SINGLE_MAPPING_METHODS and len(result.selected) == 1:
        return [result.method]
    return [f"{result.method}-{i:02d}" for i in range(len(result.selected))]


def _objectives(e: Evaluation) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in e.objectives.items()}


def mapping_files(results: list[SearchResult], model_id: str, prov: dict[str, Any],
                  cfg: SearchConfig) -> list[MappingFile]:
    """The mapping files of every method, in method order then name order."""
    files = []
    for result in results:
        for name, e in zip(mapping_names(result), result.selected):
            source = f"{name}.pt" if e.key in result.trained else result.sources.get(e.key)
            files.append(MappingFile(model_id, name, result.method, dict(sorted(e.mapping.items())), _objectives(e), {
                **prov, "search": {"drift_time": cfg.drift_time, "val_examples": cfg.val_examples,
                                   "budget": cfg.budget, "evaluations": result.evaluations_used,
                                   "evaluation_index": e.index}}, source))
    return files


def trained_models(results: list[SearchResult]) -> dict[str, Any]:
    """Mapping name -> the network its method trained for it (methods that retrain)."""
    return {name: r.trained[e.key] for r in results for name, e in zip(mapping_names(r), r.selected)
            if e.key in r.trained}


def write_mapping_folder(folder: Path, files: list[MappingFile], allowed: dict[str, list[str]],
                         ties: dict[str, str] | None = None, models: dict[str, Any] | None = None,
                         save_model: Callable[[Path, Any, MappingFile], Any] | None = None) -> None:
    """Check every mapping against the model, then write the folder atomically (with the
    trained network of each mapping that has one, as ``<name>.pt``)."""
    models = models or {}
    for f in files:
        ops = {n: None for n in allowed} if f.method == FP32 else allowed_for(f, allowed)
        check_layers(f.layers, ops, f.model_id, source=f"mapping {f.name}", ties=ties)
    with atomic_directory(folder) as tmp:
        for f in files:
            f.save(tmp / f"{f.name}.json")
            if f.weights_file is not None:
                save_model(tmp / f.weights_file, models[f.name], f)


# --------------------------------------------------------------------------- tables
def hypervolume_setup(objectives: list[str], fp32_size_mb: float,
                      points: list[dict[str, float]]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Fixed bounds shared by every method: accuracy and MAC ratio as fractions in [0, 1],
    digital memory in [0, FP32 size]; energy/latency (if searched) in [0, largest written value]."""
    upper = {o: max([p[o] for p in points] + [1e-12]) for o in objectives if o in ("energy_uj", "latency_ms")}
    lower, upper_b = report_bounds(fp32_size_mb, objectives, upper=upper or None)
    info = {"objectives": list(objectives), "lower": lower.tolist(), "upper": upper_b.tolist(), "ref": DEFAULT_REF,
            "fp32_digital_size_mb": fp32_size_mb, "accuracy_unit": "fraction", "upper_from_data": upper}
    return lower, upper_b, info


def hv_matrix(evaluations: list[Evaluation], objectives: list[str], senses: tuple[str, ...]) -> np.ndarray:
    """Minimisation-form objectives with accuracy as a fraction (the normalisation's unit)."""
    rows = [[e.objectives[o] / 100.0 if o == "accuracy" else e.objectives[o] for o in objectives] for e in evaluations]
    if not rows:
        return np.empty((0, len(objectives)))
    return to_minimization(np.array(rows, dtype=float), senses)


def pareto_table(results: list[SearchResult], objectives: list[str], senses: tuple[str, ...]) -> pd.DataFrame:
    rows, mats = [], []
    for result in results:
        names = mapping_names(result)
        ranks = pareto_ranks(hv_matrix(result.selected, objectives, senses)).tolist() if result.selected else []
        for name, e, r in zip(names, result.selected, ranks):
            rows.append({"name": name, "method": result.method, "file": f"mappings/{name}.json", **_objectives(e),
                         "analog_tiles": int(e.costs.analog_tiles), "rank_in_method": int(r)})
        mats.extend(result.selected)
    if mats:
        overall = pareto_ranks(hv_matrix(mats, objectives, senses))
        for row, r in zip(rows, overall):
            row["rank_overall"] = int(r)
    return pd.DataFrame(rows, columns=PARETO_COLUMNS)


# --------------------------------------------------------------------------- mapping time
SUPERNET_METHODS = frozenset({"mps", "mpaas", "int8", "analog", "greedy", "random", "nsga2", "odimo"})
"""Methods whose mappings use the adapted supernet's weights: they pay the adaptation."""


def stage_seconds(metrics_path: Path, keys: tuple[str, ...]) -> float | None:
    """Sum of ``keys`` in a stage's JSON record; None when the file or a key is missing."""
    if not metrics_path.is_file():
        return None
    try:
        raw = read_json(metrics_path, "stage metrics")
        return float(sum(float(raw[k]) for k in keys))
    except (ArtifactError, KeyError, TypeError, ValueError):
        return None


def mapping_seconds(method: str, search_seconds: float, adapt_seconds: float | None,
                    calibrate_seconds: float | None, uses_calibration: bool = False) -> dict[str, float | None]:
    """The paper's mapping time of a method and its parts (unknown parts count as 0, shown as None);
    the calibrate stage counts for the greedy mapper and for a method ``uses_calibration`` (MPS with
    sensitivity anchors)."""
    parts = {"search": search_seconds,
             "adapt": adapt_seconds if method in SUPERNET_METHODS else 0.0,
             "calibrate": calibrate_seconds if method == "greedy" or uses_calibration else 0.0}
    total = sum(v for v in parts.values() if v is not None)
    return {"mapping_seconds": total, **{f"{k}_seconds": v for k, v in parts.items() if k != "search"}}


# --------------------------------------------------------------------------- resume
class SearchState:
    """Finished methods of an interrupted run, one JSON file each in the work folder."""

    def __init__(self, work_dir: Path, key: str, save_model: Callable[[Path, Any, MappingFile], Any] | None = None,
                 load_model: Callable[[Path], Any] | None = None):
        self.dir = Path(work_dir) / "search-state"
        self.key = key
        self.save_model, self.load_model = save_model, load_model

    def _path(self, method: str) -> Path:
        return self.dir / f"{method}.json"

    def save(self, result: SearchResult) -> None:
        trained = []
        for i, e in enumerate(result.selected):
            if e.key in result.trained:
                name = f"{result.method}-trained-{i}.pt"
                self.save_model(self.dir / name, result.trained[e.key],
                                MappingFile("", name, result.method, dict(e.mapping)))
                trained.append([e.key, name])
        atomic_write_json(self._path(result.method), {
            "schema": STATE_SCHEMA, "key": self.key, "method": result.method, "seconds": result.seconds,
            "evaluations_used": result.evaluations_used, "details": result.details,
            "evaluations": [{"mapping": e.mapping, "objectives": e.objectives, "index": e.index}
                            for e in result.evaluations],
            "selected": [e.key for e in result.selected], "sources": result.sources, "trained": trained})

    def load(self, method: str, evaluator: ObjectiveEvaluator) -> SearchResult | None:
        path = self._path(method)
        if not path.exists():
            return None
        try:
            raw = read_json(path, "search resume file")
        except ArtifactError as exc:
            print(f"search: warning: ignoring resume file: {exc}")
            return None
        if not isinstance(raw, dict) or raw.get("schema") != STATE_SCHEMA or raw.get("key") != self.key:
            return None
        evals = []
        for item in raw["evaluations"]:
            costs, _ = evaluator.costs(item["mapping"])
            evals.append(Evaluation(dict(item["mapping"]), dict(item["objectives"]), costs, int(item["index"])))
        by_key = {e.key: e for e in evals}
        selected = [by_key[k] for k in raw["selected"]]
        try:
            trained = {k: self.load_model(self.dir / name) for k, name in raw.get("trained", [])}
        except ArtifactError as exc:
            print(f"search: warning: ignoring resume file of {method}: {exc}")
            return None
        return SearchResult(method, evals, selected, int(raw["evaluations_used"]), float(raw["seconds"]),
                            dict(raw["details"]), trained, dict(raw.get("sources") or {}))

    def clear(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


def inputs_key(params: Params, paths: list[Path], data_fingerprint: str) -> str:
    blob = json.dumps({"params": params.digest(), "inputs": [sha256_file(p) for p in paths],
                       "data": data_fingerprint}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


# --------------------------------------------------------------------------- stage
def run(params: Params, data_dir: Path, supernet_path: Path, pretrained_path: Path, sensitivity_path: Path | None,
        out_dir: Path, work_dir: Path, tracker: Tracker) -> dict:
    cfg = params.search
    methods = ["mps", *[m for m in cfg.baselines if m != "mps"]]

    # ---- inputs, all checked before any work or output
    splits, supernet, ckpt, pre_ckpt = load_supernet_inputs(data_dir, supernet_path, pretrained_path)
    if supernet.pairs:  # an mpaas supernet: MPS on the plain operators, and MPAAS on all
        methods.insert(1, "mpaas")
    elif params.space.search_space == "mpaas":
        print("search: search_space mpaas, but the supernet has no adaptable layer pairs "
              "(model without mpaas_pairs(), or no room in its tiles): searching the plain space only")
    model_id = str(supernet.meta.get("model_id"))
    fingerprint = splits.manifest["fingerprint"]
    greedy_order = most_sensitive = None
    key_inputs = [supernet_path, pretrained_path]
    if "greedy" in methods or cfg.sensitivity_anchors:
        if sensitivity_path is None:
            needs = ("search.baselines lists greedy" if "greedy" in methods else
                     f"search.sensitivity_anchors is {cfg.sensitivity_anchors}")
            raise ConfigError(f"{needs}, which needs the calibrate stage's table; fix: pass --sensitivity "
                              "sensitivity.csv, or drop greedy from search.baselines and set "
                              "search.sensitivity_anchors 0")
        table = read_sensitivity(sensitivity_path)
        greedy_order = sensitivity_order(table, supernet, cfg.drift_time, str(sensitivity_path))
        most_sensitive = sensitive_first(table, supernet, cfg.drift_time, str(sensitivity_path))
        key_inputs.append(sensitivity_path)
    profile = parse_hardware_profile(ckpt["profile"], f"{supernet_path} hardware profile")
    data = eval_set(splits, "val", cfg.val_examples, params.seed, calib_batches=cfg.bn_recalibration_batches,
                    device=params.device, **evaluation_options(params))
    fp32_size = supernet.costs(fp32_mapping(supernet), profile).digital_size_mb
    shape = tuple(pre_ckpt["image_shape"])

    def build_pretrained(mapping: dict) -> Any:
        from mps.stages.pretrain import load_pretrained  # noqa: PLC0415 - heavy import chain, stage-local

        model, _ = load_pretrained(pretrained_path)
        return calibrate_input_ranges(realize(model, mapping, profile, shape), splits, params).eval()

    def train_hwa(model: Any, steps: int | None = None, desc: str = "search analog_hwa") -> dict:
        """The adaptation's HWA recipe (and, by default, step count) on a standalone network (mps.hwa)."""
        a = params.adapt
        steps = steps or adapt_steps(params, len(splits.train[0]))
        return finetune(model, *splits.train, steps, a.batch_size, a.lr, a.momentum, a.weight_decay, params.seed,
                        params.device, a.augment, black_fill(splits.manifest), desc=desc,
                        equalize=a.equalize_analog_lr)

    meta = {k: supernet.meta[k] for k in ("model_name", "model_id", "num_classes", "data_fingerprint",
                                          "input_shape") if k in supernet.meta}
    prov = provenance(params.digest(), seed=params.seed)

    def save_model(path: Path, model: Any, mapping: MappingFile) -> None:
        save_deployed(path, model, mapping, meta, profile, prov)

    def load_model(path: Path) -> Any:
        return load_deployed(path)[0]

    tracker.log_params({"model": params.model.name, "dataset": params.data.dataset, "seed": params.seed,
                        "val_examples": len(data.x), "methods": ",".join(methods),
                        **{f"search.{k}": v for k, v in cfg.model_dump().items()}})
    seed_everything(params.seed)
    ctx = SearchContext(supernet, cfg, params.seed, build_pretrained, greedy_order, most_sensitive, train_hwa,
                        profile, splits.train, params.adapt.batch_size, params.adapt.momentum,
                        lambda epochs: epoch_steps(epochs, len(splits.train[0]), params.adapt.batch_size))
    # the adapt stage's timings are in its evidence.json (its metrics.json holds the headline only)
    adapt_seconds = stage_seconds(Path(supernet_path).parent / "evidence.json", ("fairness_seconds", "noise_seconds"))
    if adapt_seconds is None:
        print(f"search: warning: no adapt evidence.json beside {supernet_path}: mapping times leave out the adaptation")
    calibrate_seconds = (stage_seconds(Path(sensitivity_path).parent / "metrics.json", ("calibrate_seconds",))
                         if sensitivity_path is not None else None)
    state = SearchState(work_dir, inputs_key(params, key_inputs, fingerprint), save_model, load_model)

    def new_evaluator(method: str) -> ObjectiveEvaluator:
        return ObjectiveEvaluator(supernet, data, profile, cfg.objectives, cfg.drift_time, cfg.budget, params.seed,
                                  name=method)

    results: list[SearchResult] = []
    for method in methods:
        result = state.load(method, new_evaluator(method))
        if result is not None:
            print(f"search: {method}: resumed ({result.evaluations_used} evaluations, {result.seconds:.1f} s)")
        else:
            result = run_method(method, new_evaluator(method), ctx)
            state.save(result)
            best = max((e.accuracy for e in result.selected), default=float("nan"))
            print(f"search: {method}: {len(result.selected)} mapping(s) from {result.evaluations_used} evaluations "
                  f"in {result.seconds:.1f} s; best accuracy {best:.2f} %")
        results.append(result)

    # ---- outputs
    objectives = [str(o) for o in cfg.objectives]
    senses = objective_senses(objectives)
    written = [cost_objectives(e.costs) for r in results for e in r.selected]
    lower, upper, hv_info = hypervolume_setup(objectives, fp32_size, written)
    files = mapping_files(results, model_id, prov, cfg)
    summary: dict[str, Any] = {"model_id": model_id, "drift_time": cfg.drift_time, "budget": cfg.budget,
                               "draw_seed": cfg.draw_seed, "objectives": objectives, "val_examples": len(data.x),
                               "hypervolume_reference": hv_info, "methods": {}, "provenance": prov}
    metrics: dict[str, float] = {}
    for result in results:
        hv = normalized_hypervolume(hv_matrix(result.selected, objectives, senses), lower, upper)
        names = mapping_names(result)
        timing = mapping_seconds(result.method, result.seconds, adapt_seconds, calibrate_seconds,
                                 uses_calibration=result.method in ("mps", "mpaas") and cfg.sensitivity_anchors > 0)
        summary["methods"][result.method] = {
            "search_seconds": round(result.seconds, 3), "evaluations": result.evaluations_used,
            **{k: (None if v is None else round(v, 3)) for k, v in timing.items()},
            "hypervolume": round(hv, 6), "mappings": len(names), "files": [f"mappings/{n}.json" for n in names],
            "details": result.details}
        metrics.update({f"{result.method}.hypervolume": hv, f"{result.method}.search_seconds": result.seconds,
                        f"{result.method}.mapping_seconds": timing["mapping_seconds"],
                        f"{result.method}.evaluations": result.evaluations_used})
    table = pareto_table(results, objectives, senses)

    out_dir.mkdir(parents=True, exist_ok=True)
    write_mapping_folder(out_dir / "mappings", files, supernet.allowed, supernet.ties, trained_models(results),
                         save_model)
    atomic_write_text(out_dir / "pareto.csv", table.to_csv(index=False))
    atomic_write_json(out_dir / "search.json", summary)
    atomic_write_json(out_dir / "metrics.json", {
        m: {"hypervolume": e["hypervolume"], "search_seconds": e["search_seconds"]}
        for m, e in summary["methods"].items()})
    state.clear()

    tracker.log_metrics(metrics)
    for name in ("mappings", "pareto.csv", "search.json", "metrics.json"):
        tracker.log_artifact(out_dir / name, "mappings" if name == "mappings" else None)
    for method, entry in summary["methods"].items():
        print(f"search: {method}: hypervolume {entry['hypervolume']:.4f}, {entry['mappings']} mapping(s), "
              f"{entry['evaluations']} evaluations, {entry['search_seconds']:.1f} s "
              f"(mapping time {entry['mapping_seconds']:.1f} s)")
    return summary
