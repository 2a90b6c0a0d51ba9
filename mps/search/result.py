"""What a searcher returns, and the one rule every method uses to report its mappings.

Every method - MPS and each baseline - reports the non-dominated subset of everything it
evaluated, thinned to at most ``search.pareto_size`` points by crowding distance
(:func:`mps.pareto.select_pareto_subset`).  Using one rule for all keeps the comparison
about the search, not about how each method chose what to show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from torch import nn

from mps.pareto import select_pareto_subset
from mps.search.objectives import Evaluation, ObjectiveEvaluator


@dataclass
class SearchResult:
    """A method's outcome: all it evaluated, the mappings it reports, and its accounting."""

    method: str
    evaluations: list[Evaluation]
    selected: list[Evaluation]
    evaluations_used: int
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    # mapping key -> the network the method trained for it (written beside the mapping file)
    trained: dict[str, nn.Module] = field(default_factory=dict)
    # mapping key -> mapping-file ``source`` for mappings not taken from the supernet ("pretrained")
    sources: dict[str, str] = field(default_factory=dict)


def select_nondominated(evaluator: ObjectiveEvaluator, evaluations: Sequence[Evaluation], k: int,
                        seed: int) -> list[Evaluation]:
    """Up to ``k`` non-dominated evaluations (distinct mappings), best accuracy first.

    The order (accuracy descending, then mapping text) is what names the files
    ``<method>-00``, ``-01``, ...: deterministic for the same evaluations.
    """
    unique: dict[str, Evaluation] = {}
    for e in evaluations:
        unique.setdefault(e.key, e)
    items = sorted(unique.values(), key=lambda e: e.key)
    if not items:
        return []
    chosen = select_pareto_subset(evaluator.matrix(items), k, seed, first_front_only=True)
    picked = [items[i] for i in chosen]
    return sorted(picked, key=lambda e: (-e.accuracy, e.key))


def finish(method: str, evaluator: ObjectiveEvaluator, k: int, seed: int, **details: Any) -> SearchResult:
    """The SearchResult of a method whose candidates are everything ``evaluator`` measured."""
    evaluator.close()
    history = list(evaluator.history)
    return SearchResult(method, history, select_nondominated(evaluator, history, k, seed), evaluator.used,
                        details=dict(details))


def select_trained(evaluator: ObjectiveEvaluator, finals: Sequence[tuple[Evaluation, nn.Module]], k: int,
                   seed: int) -> tuple[list[Evaluation], dict[str, nn.Module]]:
    """For the methods that train a network per run (LionHEART, ODiMo): the non-dominated runs'
    evaluations and, per reported mapping, its network.  When several runs reach one mapping,
    the most accurate run's network represents it."""
    models: dict[str, nn.Module] = {}
    for e, m in sorted(finals, key=lambda fm: -fm[0].accuracy):
        models.setdefault(e.key, m)
    selected = select_nondominated(evaluator, [e for e, _ in finals], k, seed)
    return selected, {e.key: models[e.key] for e in selected}

