"""The project's Pareto conventions over pymoo's math.

Why this module exists: the search stage ranks mappings by their multi-objective Pareto rank,
picks "a Pareto set of K mappings", and the report compares methods by hypervolume with one
shared reference point.  All of that must agree across stages and baselines, so the
conventions (objective senses, fixed normalisation bounds, the reference point, input checks
with one-line errors) live here, while the math is pymoo's: non-dominated sorting
(:class:`NonDominatedSorting`), crowding and NSGA-II survival (:class:`RankAndCrowding`,
pruning crowding distance), exact hypervolume (:class:`HV`).  The tests cross-check the
results against optuna as well.

Conventions
-----------
* Objectives are passed as a float array of shape ``(n_points, n_obj)`` in **minimisation**
  form: smaller is better in every column.  Callers negate the objectives they maximise,
  most simply with :func:`to_minimization` (``senses`` = ``"max"``/``"min"`` per column).
* NaN is refused everywhere (it has no order).  ``+inf`` is allowed (e.g. a failed evaluation)
  and behaves as "worst possible".
* Hypervolume is the Lebesgue measure of the region weakly dominated by the points and
  bounded above by ``ref_point``.  Points not strictly better than the reference in every
  objective contribute nothing.

Report convention (normalised hypervolume)
------------------------------------------
The report compares methods by hypervolume in a normalised space so that the number does not
depend on the units of each objective nor on which points a method happened to find:

* every objective is mapped to ``[0, 1]`` with **fixed** bounds per objective (not bounds
  derived from the data): accuracy in ``[0, 1]`` (a fraction, not percent), analog MAC ratio in
  ``[0, 1]`` (a fraction), digital weight memory in ``[0, size of the full-FP32 model]``;
* maximised objectives are negated first, so in minimisation form the bounds of accuracy and
  MAC ratio are ``[-1, 0]``; :func:`minimization_bounds` does this conversion and
  :func:`report_bounds` returns the bounds for :data:`REPORT_OBJECTIVES` (or any objectives
  of :data:`OBJECTIVE_SENSES`; energy and latency need an explicit upper bound);
* the reference point is :data:`DEFAULT_REF` (= 1.1) in every normalised minimisation
  objective, so a point on a bound still contributes and the maximum attainable value is
  ``1.1 ** n_obj``.

Use :func:`normalized_hypervolume` (``F_min`` in minimisation form + the fixed bounds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.indicators.hv import HV
from pymoo.operators.survival.rank_and_crowding import RankAndCrowding
from pymoo.functions.standard.pruning_cd import calc_pcd as calc_pcd_numpy
from pymoo.operators.survival.rank_and_crowding.metrics import FunctionalDiversity
from pymoo.util.dominator import Dominator
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from mps.errors import ConfigError

__all__ = [
    "DEFAULT_REF",
    "OBJECTIVE_SENSES",
    "REPORT_OBJECTIVES",
    "REPORT_SENSES",
    "crowding_distance",
    "dominates",
    "hypervolume",
    "minimization_bounds",
    "non_dominated_sort",
    "objective_senses",
    "normalize",
    "normalized_hypervolume",
    "pareto_ranks",
    "report_bounds",
    "select_pareto_subset",
    "to_minimization",
]

DEFAULT_REF = 1.1
"""Reference point (in every objective) of the normalised minimisation space."""

REPORT_OBJECTIVES = ("accuracy", "analog_mac_ratio", "digital_size_mb")
"""Objective order the report's hypervolume uses (fractions, not percent, for the first two)."""

REPORT_SENSES = ("max", "max", "min")
"""Optimisation sense of each of :data:`REPORT_OBJECTIVES`."""

OBJECTIVE_SENSES: dict[str, str] = {
    "accuracy": "max",
    "analog_mac_ratio": "max",
    "digital_size_mb": "min",
    "energy_uj": "min",
    "latency_ms": "min",
}
"""Sense of every objective ``search.objectives`` in params.yaml may name."""

_SENSES = ("max", "min")


# --------------------------------------------------------------------------- input checks
def _as_matrix(F: np.ndarray, name: str = "F", n_obj: int | None = None) -> np.ndarray:
    """Return ``F`` as a float (n, d) array; an empty input becomes shape (0, n_obj or 0)."""
    arr = np.asarray(F, dtype=float)
    if arr.size == 0:
        width = n_obj if n_obj is not None else (arr.shape[-1] if arr.ndim == 2 else 0)
        return np.empty((0, width))
    if arr.ndim != 2:
        raise ConfigError(
            f"{name}: expected a 2-D array (n_points, n_obj), got shape {arr.shape}; "
            "fix: pass one row per point (use F[None, :] for a single point)"
        )
    if np.isnan(arr).any():
        raise ConfigError(
            f"{name}: contains NaN; fix: drop or repair the points with NaN objectives"
        )
    if n_obj is not None and arr.shape[1] != n_obj:
        raise ConfigError(
            f"{name}: has {arr.shape[1]} objectives but {n_obj} were expected; "
            "fix: pass arrays with the same objective columns"
        )
    return arr


def _as_vector(v: np.ndarray | Sequence[float] | float, n_obj: int, name: str) -> np.ndarray:
    """Return ``v`` as a float vector of length ``n_obj`` (a scalar is broadcast)."""
    arr = np.asarray(v, dtype=float)
    if arr.ndim == 0:
        arr = np.full(n_obj, float(arr))
    if arr.shape != (n_obj,):
        raise ConfigError(
            f"{name}: expected {n_obj} values (one per objective), got shape {arr.shape}; "
            "fix: give one value per objective column"
        )
    if np.isnan(arr).any():
        raise ConfigError(f"{name}: contains NaN; fix: give a finite value per objective")
    return arr


# --------------------------------------------------------------------------- senses
def to_minimization(values: np.ndarray, senses: Sequence[str]) -> np.ndarray:
    """Return a copy of ``values`` (n_points, n_obj) with every ``"max"`` column negated.

    Everything else in this module assumes minimisation; this is the one place where the
    sense of each objective is applied, so no caller has to remember which columns to flip.
    """
    arr = np.array(values, dtype=float, copy=True)
    n_obj = arr.shape[-1] if arr.ndim >= 1 else 0
    senses = tuple(senses)
    if len(senses) != n_obj:
        raise ConfigError(
            f"senses: got {len(senses)} senses for {n_obj} objective columns; "
            "fix: give one of 'max'/'min' per column"
        )
    bad = [s for s in senses if s not in _SENSES]
    if bad:
        raise ConfigError(f"senses: unknown sense {bad[0]!r}; fix: use 'max' or 'min'")
    flip = np.array([s == "max" for s in senses], dtype=bool)
    arr[..., flip] = -arr[..., flip]
    return arr


def minimization_bounds(
    lower: Sequence[float], upper: Sequence[float], senses: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Convert natural per-objective bounds ``[lower, upper]`` to minimisation-form bounds.

    A maximised objective with natural range ``[lo, hi]`` becomes ``[-hi, -lo]`` after
    negation; a minimised one is unchanged.
    """
    lo = to_minimization(np.asarray(lower, dtype=float)[None, :], senses)[0]
    hi = to_minimization(np.asarray(upper, dtype=float)[None, :], senses)[0]
    return np.minimum(lo, hi), np.maximum(lo, hi)


def objective_senses(objectives: Sequence[str]) -> tuple[str, ...]:
    """The sense (``"max"``/``"min"``) of each named objective, from :data:`OBJECTIVE_SENSES`."""
    unknown = [o for o in objectives if o not in OBJECTIVE_SENSES]
    if unknown:
        raise ConfigError(
            f"objectives: unknown objective {unknown[0]!r}; "
            f"fix: use one of {', '.join(OBJECTIVE_SENSES)}"
        )
    return tuple(OBJECTIVE_SENSES[o] for o in objectives)


def report_bounds(
    fp32_digital_size_mb: float,
    objectives: Sequence[str] = REPORT_OBJECTIVES,
    *,
    upper: Mapping[str, float] | None = None,
    lower: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed minimisation-form bounds for ``objectives`` (see module docstring).

    ``lower`` (and ``upper``) narrow an objective to the range a user cares about, e.g.
    accuracy from FP32 minus 5 points to FP32: over [0, 1] every usable mapping sits in the top
    few percent of the accuracy axis and differences that matter read as 0.003.

    Accuracy and analog MAC ratio are fractions in [0, 1]; digital size ranges from 0 to the
    weight memory of the full-FP32 model (``fp32_digital_size_mb``, > 0).  Objectives without
    a natural bound (``energy_uj``, ``latency_ms``) range from 0 to ``upper[name]``, which the
    caller must give and should choose to cover every compared method (e.g. the largest value
    over all baselines); values beyond it normalise above 1 and count less or nothing.
    """
    fixed = {"accuracy": 1.0, "analog_mac_ratio": 1.0, "digital_size_mb": fp32_digital_size_mb}
    fixed.update(upper or {})
    senses = objective_senses(objectives)
    highs = []
    for name in objectives:
        if name not in fixed:
            raise ConfigError(
                f"report_bounds: no upper bound for objective {name!r}; "
                f"fix: pass upper={{{name!r}: value}}"
            )
        hi = float(fixed[name])
        if not np.isfinite(hi) or hi <= 0:
            raise ConfigError(
                f"report_bounds: upper bound of {name!r} must be positive and finite, got {hi}; "
                "fix: pass the objective's largest value (full-FP32 size for digital_size_mb)"
            )
        highs.append(hi)
    lows = [float((lower or {}).get(name, 0.0)) for name in objectives]
    for name, lo, hi in zip(objectives, lows, highs):
        if not np.isfinite(lo) or lo >= hi:
            raise ConfigError(f"report_bounds: lower bound of {name!r} ({lo}) must be finite and below its upper "
                              f"bound ({hi}); fix: pass a narrower range")
    return minimization_bounds(lows, highs, senses)


# --------------------------------------------------------------------------- dominance
def dominates(a: np.ndarray | Sequence[float], b: np.ndarray | Sequence[float]) -> bool:
    """Pareto dominance (minimisation): ``a <= b`` in every objective and ``<`` in at least one.

    Equal points do not dominate each other (pymoo's :class:`Dominator`).
    """
    a_arr = np.asarray(a, dtype=float).ravel()
    b_arr = np.asarray(b, dtype=float).ravel()
    if a_arr.shape != b_arr.shape:
        raise ConfigError(
            f"dominates: points have {a_arr.size} and {b_arr.size} objectives; "
            "fix: compare points with the same objective columns"
        )
    return Dominator.get_relation(a_arr, b_arr) == 1


def non_dominated_sort(F: np.ndarray) -> list[np.ndarray]:
    """Fronts of point indices, best first (pymoo's :class:`NonDominatedSorting`).

    Each front is a sorted int array.  Equal points never dominate each other, so duplicates
    land in the same front.
    """
    F = _as_matrix(F)
    if F.shape[0] == 0:
        return []
    return [np.sort(np.asarray(front, dtype=np.int64)) for front in NonDominatedSorting().do(F)]


def pareto_ranks(F: np.ndarray) -> np.ndarray:
    """Pareto rank of every point (0 = first, non-dominated front); int array of length n."""
    F = _as_matrix(F)
    if F.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    _, ranks = NonDominatedSorting().do(F, return_rank=True)
    return np.asarray(ranks, dtype=np.int64)


# --------------------------------------------------------------------------- crowding
def pruning_crowding() -> FunctionalDiversity:
    """pymoo's pruning crowding distance ("pcd"), run on pymoo's NumPy implementation
    (``pymoo/functions/standard/pruning_cd.py``) rather than the compiled one that ``"pcd"``
    loads.

    Why: the compiled ``pymoo/functions/compiled/pruning_cd.pyx`` (pymoo 0.6.2, built with
    ``boundscheck=False``) takes each objective's extremes from ``argmin``/``argmax``, which
    return the *first* tied index, while a stable sort puts the *last* tied index at the end;
    that point is not treated as an extreme, so the code reads its neighbour one row past the
    sorted index array.  Ties at an objective's best value are the normal case here
    (accuracies on 1000 images move in steps of 0.1 point; several mappings share an analog
    share of 1.0).  Measured: such a point gets a negative distance (``-0.27`` on the 7-point
    case in ``tests/test_pareto.py``), so it is pruned first, and the out-of-bounds writes of
    the removal loop corrupted the heap: ``benchmarks.mps_pick_study`` died with a segmentation
    fault three times in one evening (``visit_decref`` in the garbage collector, at exit, and
    inside ``calc_pcd``).  The NumPy version pads each sorted column with ``inf`` and gives the
    tied end point ``inf`` like any extreme, which is the crowding distance's definition.
    pymoode's users met the same crash in its copy of this code
    (github.com/stepeos/pycarmodel_calibration/issues/11).  A few hundred points at most are
    thinned per search, so the NumPy version's speed does not matter.  The NumPy version sums
    the objectives' gaps where the compiled one averages them; dividing by the number of
    objectives keeps the documented convention (the same order, so the same pruning).
    """
    return FunctionalDiversity(_mean_pcd, filter_out_duplicates=True)


def _mean_pcd(F: np.ndarray, n_remove: int = 0) -> np.ndarray:
    return calc_pcd_numpy(F, n_remove=n_remove) / F.shape[1]


def crowding_distance(F_front: np.ndarray) -> np.ndarray:
    """Crowding distance of each point of one front (larger = more isolated).

    pymoo's pruning crowding distance (``"pcd"``) with nothing pruned: per objective, the gap
    between a point's neighbours over the front's range, averaged over the objectives; each
    objective's extreme points get ``inf`` and a front of at most two points is all ``inf``.
    Duplicated points are measured once: the first copy gets the distance of the unique point
    and later copies get 0, so a selection by crowding never keeps two copies while distinct
    points remain.  This is the distance :func:`select_pareto_subset` prunes by.
    """
    F = _as_matrix(F_front, name="F_front")
    if F.shape[0] == 0:
        return np.empty(0)
    with np.errstate(invalid="ignore", divide="ignore"):  # a zero-range objective adds nothing
        return np.asarray(pruning_crowding().do(F), dtype=float)


# --------------------------------------------------------------------------- hypervolume
def hypervolume(F: np.ndarray, ref_point: np.ndarray | Sequence[float] | float) -> float:
    """Exact hypervolume of the region dominated by ``F`` and bounded by ``ref_point``.

    ``F`` is (n_points, n_obj) in minimisation form, any number of objectives (pymoo's
    :class:`HV`, exact).  ``ref_point`` must be finite; a scalar is used for every objective.
    Points not strictly better than the reference in every objective contribute nothing; an
    empty set gives 0.0.
    """
    arr = np.asarray(F, dtype=float)
    ref_arr = np.asarray(ref_point, dtype=float)
    n_obj = ref_arr.size if arr.size == 0 and ref_arr.ndim == 1 else None
    F = _as_matrix(arr, n_obj=n_obj)
    if F.shape[0] == 0:
        return 0.0
    ref = _as_vector(ref_arr, F.shape[1], "ref_point")
    if not np.all(np.isfinite(ref)):
        raise ConfigError(
            "ref_point: must be finite; fix: give a finite reference value per objective"
        )
    P = F[np.all(F < ref, axis=1)]
    if P.shape[0] == 0:
        return 0.0
    if np.isinf(P).any():
        raise ConfigError(
            "F: a point has -inf in an objective, so the hypervolume is infinite; "
            "fix: drop or bound that point"
        )
    return float(HV(ref_point=ref).do(P))


# --------------------------------------------------------------------------- normalisation
def normalize(
    F: np.ndarray,
    ideal: np.ndarray | Sequence[float],
    nadir: np.ndarray | Sequence[float],
) -> np.ndarray:
    """Map each objective linearly so that ``ideal`` -> 0 and ``nadir`` -> 1 (no clipping).

    ``ideal`` and ``nadir`` are per-objective bounds in minimisation form with
    ``ideal < nadir``; use fixed bounds (see module docstring), not the data's own extremes,
    so that values from different runs are comparable.
    """
    ideal_arr = np.asarray(ideal, dtype=float)
    F = _as_matrix(F, n_obj=ideal_arr.size if ideal_arr.ndim == 1 else None)
    d = F.shape[1]
    lo = _as_vector(ideal_arr, d, "ideal")
    hi = _as_vector(nadir, d, "nadir")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(hi > lo)):
        raise ConfigError(
            f"normalize: bounds must be finite with nadir > ideal per objective, got "
            f"ideal={lo.tolist()} nadir={hi.tolist()}; fix: pass the fixed objective bounds"
        )
    return (F - lo) / (hi - lo)


def normalized_hypervolume(
    F_min: np.ndarray,
    lower: np.ndarray | Sequence[float],
    upper: np.ndarray | Sequence[float],
    ref: float | np.ndarray | Sequence[float] = DEFAULT_REF,
) -> float:
    """Hypervolume of ``F_min`` after :func:`normalize` with fixed ``lower``/``upper`` bounds.

    ``F_min`` and the bounds are in minimisation form (:func:`to_minimization`,
    :func:`minimization_bounds`, :func:`report_bounds`); the reference point is ``ref`` in every
    normalised objective (default :data:`DEFAULT_REF`).  Methods compared with the same bounds
    and ``ref`` get comparable numbers; the maximum is ``prod(ref)``.
    """
    lower_arr = np.asarray(lower, dtype=float)
    F = _as_matrix(F_min, name="F_min", n_obj=lower_arr.size if lower_arr.ndim == 1 else None)
    Z = normalize(F, lower_arr, upper)
    return hypervolume(Z, _as_vector(ref, F.shape[1], "ref"))


# --------------------------------------------------------------------------- selection
def select_pareto_subset(
    F: np.ndarray,
    k: int,
    rng: np.random.Generator | int | None = None,
    *,
    first_front_only: bool = False,
) -> np.ndarray:
    """Indices of up to ``k`` points taken from the best fronts, keeping the spread.

    pymoo's NSGA-II survival (:class:`RankAndCrowding` with the pruning crowding distance):
    whole fronts are taken in rank order while they fit; from the front that overflows, the
    most crowded point (smallest :func:`crowding_distance`) is removed one at a time,
    recomputing distances after each removal, until ``k`` remain.  Ties are broken at random by
    ``rng`` (a Generator or a seed; same seed -> same result).  With
    ``first_front_only`` only non-dominated points are eligible, so fewer than ``k`` may be
    returned.  The result is sorted by (rank, index).
    """
    F = _as_matrix(F)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ConfigError(
            f"k: must be a non-negative integer, got {k!r}; fix: pass the number of points to keep"
        )
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    ranks = pareto_ranks(F)
    eligible = np.flatnonzero(ranks == 0) if first_front_only else np.arange(F.shape[0])
    if k == 0 or eligible.size == 0:
        return np.empty(0, dtype=np.int64)
    survival = RankAndCrowding(crowding_func=pruning_crowding())
    with np.errstate(invalid="ignore", divide="ignore"):  # a zero-range objective adds nothing
        kept = survival.do(Problem(n_var=1, n_obj=F.shape[1]), Population.new(F=F[eligible]),
                           n_survive=int(k), random_state=gen, return_indices=True)
    chosen = eligible[np.asarray(kept, dtype=np.int64)]
    return chosen[np.lexsort((chosen, ranks[chosen]))].astype(np.int64)
