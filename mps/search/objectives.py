"""The objective evaluator every searcher uses, and the budget it counts.

Why one class for all methods: the comparison of MPS with its baselines is only fair if
every method pays the same price for the same information.  An *evaluation* is one
sub-network measured on the validation examples under PCM programming noise and drift at
``search.drift_time`` (one repeat); that is the expensive step, and it is what the budget
counts.  Asking again for a mapping already measured by the same evaluator is a cache hit
and costs nothing; asking beyond the budget raises :class:`BudgetExhausted`.  Each searcher
gets a fresh evaluator with the same budget, so no method profits from another's work.

The programming-noise seed of a mapping is derived from the mapping itself (and the run's
seed), so the same mapping gets the same accuracy whichever method asks for it and in
whatever order: objective values are comparable across methods, and reruns are identical.

Cost objectives (analog MAC ratio as a fraction in [0, 1], digital weight memory in MB,
energy in µJ/sample, latency in ms/sample) come from :mod:`mps.cost_model`; they need no
model and never count against the budget.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
from torch import nn

from mps.cost_model import MappingCosts
from mps.evaluation import EvalSet, drift_accuracy_grid
from mps.pareto import objective_senses, to_minimization
from mps.runtime import derived_seed

if TYPE_CHECKING:
    from mps.cost_model import HardwareProfile
    from mps.supernet import Supernet

OBJECTIVE_KEYS = ("accuracy", "analog_mac_ratio", "digital_size_mb", "energy_uj", "latency_ms")
"""Every objective an evaluation records (accuracy in percent, analog MAC ratio a fraction)."""


class BudgetExhausted(RuntimeError):
    """A searcher asked for more evaluations than its budget allows (a bug in the searcher)."""


def mapping_key(mapping: Mapping[str, str]) -> str:
    """Canonical text of a mapping (layer order independent): cache key and seed source."""
    return json.dumps(sorted(mapping.items()), separators=(",", ":"))


def mapping_seed(mapping: Mapping[str, str], seed: int) -> int:
    """Programming-noise seed of a mapping: fixed by the mapping and the run seed alone."""
    return derived_seed(seed, mapping_key(mapping))


def cost_objectives(costs: MappingCosts) -> dict[str, float]:
    """The cost model's objectives in search units (MAC ratio as a fraction)."""
    return {
        "analog_mac_ratio": costs.analog_mac_ratio_percent / 100.0,
        "digital_size_mb": costs.digital_size_mb,
        "energy_uj": costs.energy_uj_per_sample,
        "latency_ms": costs.latency_ms_per_sample,
    }


@dataclass(frozen=True)
class Evaluation:
    """One measured mapping: its objectives and the evaluation number that produced it."""

    mapping: dict[str, str]
    objectives: dict[str, float]
    costs: MappingCosts
    index: int  # 0-based position in the evaluator's counted evaluations

    @property
    def key(self) -> str:
        return mapping_key(self.mapping)

    @property
    def accuracy(self) -> float:
        return self.objectives["accuracy"]


@dataclass
class ObjectiveEvaluator:
    """Measures mappings of one supernet, counting evaluations against ``budget``.

    ``evaluate(mapping)`` extracts the sub-network (or builds a model with ``build``, for
    the FP32 baseline), recalibrates BN, programs the analog tiles with the mapping's seed,
    drifts them to ``drift_time`` and measures accuracy on ``data``; then adds the cost
    model's objectives.
    """

    supernet: "Supernet"
    data: EvalSet
    profile: "HardwareProfile"
    objectives: Sequence[str]
    drift_time: float
    budget: int
    seed: int
    name: str = "search"
    show_progress: bool = True
    repeats: int = 1  # programming-noise draws per evaluation (accuracy = their mean); LionHEART uses several
    history: list[Evaluation] = field(default_factory=list, init=False)
    _cache: dict[str, Evaluation] = field(default_factory=dict, init=False, repr=False)
    _bar: Any = field(default=None, init=False, repr=False)  # tqdm bar, made on first evaluation

    def __post_init__(self) -> None:
        if self.budget <= 0:
            raise ValueError("budget must be > 0")
        self.objectives = tuple(self.objectives)
        self.senses = objective_senses(self.objectives)

    # ---- accounting
    @property
    def used(self) -> int:
        return len(self.history)

    @property
    def remaining(self) -> int:
        return self.budget - self.used

    def is_cached(self, mapping: Mapping[str, str]) -> bool:
        return mapping_key(mapping) in self._cache

    # ---- objectives
    def costs(self, mapping: Mapping[str, str]) -> tuple[MappingCosts, dict[str, float]]:
        """Cost-model objectives of a mapping; free (no model, no evaluation counted)."""
        costs = self.supernet.costs(mapping, self.profile)  # adapted layers at their own width
        return costs, cost_objectives(costs)

    def evaluate(self, mapping: Mapping[str, str], build: Callable[[], nn.Module] | None = None,
                 recalibrate: bool = True) -> Evaluation:
        """Objectives of ``mapping``; counts one evaluation unless it was measured before.

        ``build`` makes the model instead of extracting it from the supernet (the FP32
        baseline, realised from the pretrained model, whose BN statistics are its own:
        pass ``recalibrate=False`` for it, as the evaluate stage does).
        """
        key = mapping_key(mapping)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        if self.remaining <= 0:
            raise BudgetExhausted(f"{self.name}: evaluation budget of {self.budget} is used up")
        mapping = dict(mapping)
        costs, cost_obj = self.costs(mapping)  # validates the layer names before the expensive part
        if build is None:
            from mps.supernet import extract

            model = extract(self.supernet, mapping)
        else:
            model = build()
        grid = drift_accuracy_grid(model, self.data, [self.drift_time], self.repeats,
                                   mapping_seed(mapping, self.seed), recalibrate=recalibrate)
        accuracy = round(float(grid[:, 0].mean()), 4)  # as the evaluate stage writes it; 1/n steps anyway
        del model
        result = Evaluation(mapping, {"accuracy": float(accuracy), **cost_obj}, costs, self.used)
        self.history.append(result)
        self._cache[key] = result
        self._tick()
        return result

    def matrix(self, evaluations: Sequence[Evaluation]) -> np.ndarray:
        """Objectives of ``evaluations`` in minimisation form, columns = ``self.objectives``."""
        values = np.array([[e.objectives[o] for o in self.objectives] for e in evaluations], dtype=float)
        if values.size == 0:
            return np.empty((0, len(self.objectives)))
        return to_minimization(values, self.senses)

    # ---- progress
    def _tick(self) -> None:
        if not self.show_progress:
            return
        if self._bar is None:
            from mps.runtime import progress

            self._bar = progress(None, f"search {self.name}", total=self.budget)
        self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
