"""Mapping search (phase 3): the shared budget-counting evaluator, the MPS method, and the
baselines it is compared with at the same budget.

* :mod:`mps.search.objectives` - :class:`ObjectiveEvaluator`: accuracy under programming noise
  + drift and cost-model objectives of one mapping, counting evaluations against a budget;
* :mod:`mps.search.result` - :class:`SearchResult` and the rule every method uses to report
  its non-dominated set;
* :mod:`mps.search.mps_search` - rank-preserving alpha fine-tuning and Pareto extraction;
* :mod:`mps.search.baselines` - fp32, int8, analog, greedy (LionHEART-like), random, NSGA-II.
"""

from mps.search.objectives import BudgetExhausted, Evaluation, ObjectiveEvaluator, mapping_key
from mps.search.result import SearchResult, select_nondominated

__all__ = ["BudgetExhausted", "Evaluation", "ObjectiveEvaluator", "mapping_key", "SearchResult",
           "select_nondominated"]
