"""The methods MPS is compared with, measured by the same evaluator at the same budget.

* ``fp32``: the pretrained model with every layer a full-precision digital operator (built
  with :func:`mps.supernet.realize`, not taken from the supernet); one evaluation;
* ``int8`` / ``analog``: the supernet's uniform mappings (layers that cannot be analog fall
  back as :meth:`Supernet.uniform_mapping` does); one evaluation each;
* ``analog_straight``: the same all-analog mapping realised from the pretrained model with no
  training at all (straight conversion): what all of this buys over simply converting;
* ``analog_hwa``: the paper's "fully analog" row: that straight conversion fine-tuned by
  hardware-aware training (:func:`mps.hwa.finetune`, the adaptation's HWA configuration and
  number of steps); its trained network is written beside its mapping file;
* ``greedy``: a per-layer sensitivity mapper in the spirit of LionHEART: from all-int8, move
  layers to analog from the least to the most sensitive (calibration table at the search
  drift time) while the measured accuracy drop from the all-int8 start stays within
  ``search.max_acc_drop``; it stops at the first layer that breaks the bound;
* ``random``: uniform samples of the search space, as many as the budget allows;
* ``nsga2``: optuna's NSGA-II, one categorical parameter per layer over its operators.

Every method reports the non-dominated set of all it evaluated (:mod:`mps.search.result`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch
from torch import nn

from mps.config import ConfigError
from mps.search.objectives import ObjectiveEvaluator
from mps.search.result import SearchResult, finish
from mps.supernet.mapping import PRETRAINED

SENSITIVITY_COLUMNS = ("layer", "drift_time", "mean_drop", "std_drop")
FP32 = "fp32"


class SensitivityError(ConfigError):
    """The calibration table is missing, malformed or for another model."""


# --------------------------------------------------------------------------- single mappings
def fp32_mapping(supernet) -> dict[str, str]:
    return {name: FP32 for name in supernet.infos}


def fp32_baseline(evaluator: ObjectiveEvaluator, supernet, build_fp32: Callable[[], nn.Module], k: int,
                  seed: int) -> SearchResult:
    """The pretrained model, all layers 'fp32' (``build_fp32`` realises it); one evaluation."""
    evaluator.evaluate(fp32_mapping(supernet), build=build_fp32, recalibrate=False)
    return finish(FP32, evaluator, k, seed)


def uniform_baseline(method: str, op: str, evaluator: ObjectiveEvaluator, supernet, k: int, seed: int) -> SearchResult:
    """Every layer on ``op`` where allowed (uniform_mapping's fallback elsewhere); one evaluation."""
    evaluator.evaluate(supernet.uniform_mapping(op))
    return finish(method, evaluator, k, seed)


def straight_baseline(evaluator: ObjectiveEvaluator, supernet, build_pretrained: Callable[[dict], nn.Module],
                      k: int, seed: int) -> SearchResult:
    """The pretrained model converted to the all-analog mapping, untrained; one evaluation."""
    mapping = supernet.uniform_mapping("analog")
    evaluator.evaluate(mapping, build=lambda: build_pretrained(mapping))
    result = finish("analog_straight", evaluator, k, seed)
    result.sources = {e.key: PRETRAINED for e in result.selected}
    return result


def hwa_baseline(evaluator: ObjectiveEvaluator, supernet, build_pretrained: Callable[[dict], nn.Module],
                 train: Callable[[nn.Module], dict], k: int, seed: int) -> SearchResult:
    """The straight conversion after hardware-aware training (``train``); one evaluation."""
    mapping = supernet.uniform_mapping("analog")
    model = build_pretrained(mapping)
    stats = train(model)
    evaluator.evaluate(mapping, build=lambda: model)
    result = finish("analog_hwa", evaluator, k, seed, **stats)
    result.trained = {e.key: model for e in result.selected}
    return result


# --------------------------------------------------------------------------- greedy
def read_sensitivity(path: Path) -> pd.DataFrame:
    """The calibrate stage's table; needs columns layer, drift_time, mean_drop, std_drop."""
    path = Path(path)
    if not path.is_file():
        raise SensitivityError(f"{path}: sensitivity table not found; fix: run 'mps calibrate' first "
                               "or drop 'greedy' from search.baselines")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SensitivityError(f"{path}: not a readable CSV table ({str(exc).splitlines()[0]}); "
                               "fix: rerun 'mps calibrate'") from None
    missing = [c for c in SENSITIVITY_COLUMNS if c not in table.columns]
    if missing:
        raise SensitivityError(f"{path}: sensitivity table lacks columns {', '.join(missing)}; "
                               "fix: rerun 'mps calibrate' (it writes layer, drift_time, mean_drop, std_drop)")
    if table.empty:
        raise SensitivityError(f"{path}: sensitivity table has no rows; fix: rerun 'mps calibrate'")
    try:
        table["drift_time"] = table["drift_time"].astype(float)
        table["mean_drop"] = table["mean_drop"].astype(float)
    except ValueError:
        raise SensitivityError(f"{path}: drift_time and mean_drop must be numbers; fix: rerun 'mps calibrate'") from None
    if table["mean_drop"].isna().any():
        raise SensitivityError(f"{path}: mean_drop has empty values; fix: rerun 'mps calibrate'")
    table["layer"] = table["layer"].astype(str)
    return table


def sensitivity_order(table: pd.DataFrame, supernet, drift_time: float, source: str = "sensitivity table",
                      per_mac: bool = False) -> list[str]:
    """Analog-capable layers from least to most sensitive at the drift time nearest ``drift_time``.

    The nearest time is taken on a log scale (drift is logarithmic in time); ties in
    sensitivity keep the network's layer order.  ``per_mac`` ranks by the accuracy drop per MAC
    (what a layer costs per unit of the analog-MAC share it brings: MPS's sensitivity anchors)
    instead of the drop alone (the greedy mapper's order).  Layers the table names but the supernet
    lacks, or analog-capable layers it omits, mean the table is for another model: an error.
    """
    times = sorted(set(table["drift_time"]))
    nearest = min(times, key=lambda t: abs(math.log(max(t, 1e-9)) - math.log(drift_time)))
    rows = table[table["drift_time"] == nearest]
    drops = rows.groupby("layer", sort=False)["mean_drop"].mean().to_dict()
    layers = list(supernet.infos)
    unknown = [n for n in dict.fromkeys(table["layer"]) if n not in supernet.infos]
    analog_layers = [n for n in layers if "analog" in supernet.allowed[n]]
    absent = [n for n in analog_layers if n not in drops]
    if unknown or absent:
        what = f"unknown layers {', '.join(unknown[:4])}" if unknown else f"no row for {', '.join(absent[:4])}"
        raise SensitivityError(f"{source}: does not match the supernet's layers ({what}); "
                               "fix: rerun 'mps calibrate' on this supernet")
    position = {n: i for i, n in enumerate(layers)}
    if per_mac:
        return sorted(analog_layers, key=lambda n: (drops[n] / max(supernet.infos[n].macs, 1), position[n]))
    return sorted(analog_layers, key=lambda n: (drops[n], position[n]))


def greedy_search(evaluator: ObjectiveEvaluator, supernet, order: Sequence[str], max_acc_drop: float, k: int,
                  seed: int) -> SearchResult:
    """LionHEART-like greedy: all-int8, then layers to analog in ``order`` while the drop holds."""
    current = supernet.uniform_mapping("int8")
    start = evaluator.evaluate(current)
    accepted: list[str] = []
    stopped_at = None
    for name in order:
        if evaluator.remaining <= 0:
            break
        if current[name] == "analog":
            continue
        trial = evaluator.evaluate({**current, name: "analog"})
        if start.accuracy - trial.accuracy <= max_acc_drop:
            current = trial.mapping
            accepted.append(name)
        else:
            stopped_at = name
            break
    return finish("greedy", evaluator, k, seed, analog_layers=accepted, stopped_at=stopped_at,
                  start_accuracy=start.accuracy)


# --------------------------------------------------------------------------- random
def random_search(evaluator: ObjectiveEvaluator, supernet, k: int, seed: int) -> SearchResult:
    """Uniform samples of the space until the budget is spent (repeats are free and redrawn)."""
    generator = torch.Generator().manual_seed(seed)
    attempts = 0
    while evaluator.remaining > 0 and attempts < 100 * evaluator.budget:
        attempts += 1
        evaluator.evaluate(supernet.sample_mapping(generator))
    return finish("random", evaluator, k, seed, draws=attempts)


# --------------------------------------------------------------------------- NSGA-II
def nsga2_population(budget: int, configured: int | None) -> int:
    """Configured size, else budget // 4 clamped to [4, 50] (so a small budget sees generations)."""
    if configured is not None:
        return configured
    return max(4, min(50, budget // 4))


def nsga2_search(evaluator: ObjectiveEvaluator, supernet, k: int, seed: int, population: int) -> SearchResult:
    """optuna NSGA-II over per-layer categoricals; trials run until the budget is spent.

    A trial that proposes an already-evaluated mapping is answered from the evaluator's
    cache at no cost, so trials continue (up to 10x the budget) until the evaluations used
    equal the budget: NSGA-II gets exactly the same number of measurements as the others.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    directions = [optuna.study.StudyDirection.MAXIMIZE if s == "max" else optuna.study.StudyDirection.MINIMIZE
                  for s in evaluator.senses]
    study = optuna.create_study(directions=directions, sampler=sampler)
    allowed = supernet.allowed
    trials = 0
    while evaluator.remaining > 0 and trials < 10 * evaluator.budget:
        trial = study.ask()
        mapping = {name: trial.suggest_categorical(name, list(ops)) for name, ops in allowed.items()}
        result = evaluator.evaluate(supernet.tie(mapping))  # adapted pairs (mpaas) agree
        study.tell(trial, [result.objectives[o] for o in evaluator.objectives])
        trials += 1
    return finish("nsga2", evaluator, k, seed, trials=trials, population=population)
