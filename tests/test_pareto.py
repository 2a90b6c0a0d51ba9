"""Tests for mps.pareto: hand-computed cases plus cross-checks against pymoo and optuna."""

from __future__ import annotations

import itertools

import matplotlib
import numpy as np
import optuna
import pytest
from optuna.visualization.matplotlib import plot_hypervolume_history
from pymoo.indicators.hv import HV
from pymoo.util.dominator import Dominator
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from mps.config import ConfigError
from mps.pareto import (
    DEFAULT_REF,
    REPORT_OBJECTIVES,
    REPORT_SENSES,
    crowding_distance,
    dominates,
    hypervolume,
    minimization_bounds,
    non_dominated_sort,
    normalize,
    normalized_hypervolume,
    objective_senses,
    pareto_ranks,
    report_bounds,
    select_pareto_subset,
    to_minimization,
)


def _random_set(seed: int, n: int, d: int) -> np.ndarray:
    """Random points on a coarse grid (so ties and duplicates occur) plus exact duplicates."""
    rng = np.random.default_rng(seed)
    F = rng.integers(0, 8, size=(n, d)).astype(float) / 7.0
    F += rng.normal(0.0, 0.05, size=F.shape) * (rng.random(F.shape) < 0.5)
    dup = rng.integers(0, n, size=max(1, n // 5))
    return np.vstack([F, F[dup]])[rng.permutation(n + dup.size)]


def _optuna_study(F: np.ndarray) -> optuna.Study:
    """An in-memory study holding one completed trial per point (all objectives minimised)."""
    study = optuna.create_study(directions=["minimize"] * F.shape[1])
    study.add_trials([optuna.trial.create_trial(values=[float(v) for v in row]) for row in F])
    return study


def optuna_ranks(F: np.ndarray) -> np.ndarray:
    """Pareto ranks from optuna's public API: peel ``Study.best_trials`` front by front."""
    ranks = np.full(len(F), -1)
    left = np.arange(len(F))
    rank = 0
    while left.size:
        front = [left[t.number] for t in _optuna_study(F[left]).best_trials]
        ranks[front] = rank
        left = np.setdiff1d(left, front)
        rank += 1
    return ranks


def optuna_hv(F: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume from optuna's public API: the last value of its hypervolume history plot."""
    matplotlib.use("Agg")
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        ax = plot_hypervolume_history(_optuna_study(F), ref)
    value = float(ax.lines[0].get_ydata()[-1])
    matplotlib.pyplot.close(ax.figure)
    return value


optuna.logging.set_verbosity(optuna.logging.WARNING)

CASES = [(seed, n, d) for d in (2, 3, 4) for seed, n in zip(range(4), (5, 17, 33, 60))]


# --------------------------------------------------------------------------- dominance
def test_dominates_is_strict_somewhere():
    assert dominates([1, 2], [1, 3])
    assert dominates([0, 0, 0], [1, 1, 1])
    assert not dominates([1, 2], [1, 2])  # equal points do not dominate
    assert not dominates([1, 3], [2, 2])  # incomparable
    assert not dominates([1, 3], [1, 2])
    with pytest.raises(ConfigError):
        dominates([1, 2], [1, 2, 3])


def test_to_minimization_negates_max_columns():
    v = np.array([[0.9, 0.5, 3.0], [0.8, 0.7, 1.0]])
    out = to_minimization(v, ["max", "max", "min"])
    np.testing.assert_array_equal(out, [[-0.9, -0.5, 3.0], [-0.8, -0.7, 1.0]])
    np.testing.assert_array_equal(v[0], [0.9, 0.5, 3.0])  # input untouched
    with pytest.raises(ConfigError, match="senses"):
        to_minimization(v, ["max", "min"])
    with pytest.raises(ConfigError, match="maximize"):
        to_minimization(v, ["max", "min", "maximize"])


# --------------------------------------------------------------------------- sorting
def test_non_dominated_sort_hand_case():
    F = np.array([[1, 5], [2, 2], [5, 1], [3, 3], [2, 2], [6, 6], [4, 4]], dtype=float)
    fronts = non_dominated_sort(F)
    assert [f.tolist() for f in fronts] == [[0, 1, 2, 4], [3], [6], [5]]
    np.testing.assert_array_equal(pareto_ranks(F), [0, 0, 0, 1, 0, 3, 2])


def test_non_dominated_sort_empty_and_single():
    assert non_dominated_sort(np.empty((0, 3))) == []
    assert pareto_ranks(np.empty((0, 3))).shape == (0,)
    assert [f.tolist() for f in non_dominated_sort(np.array([[1.0, 2.0]]))] == [[0]]
    with pytest.raises(ConfigError, match="NaN"):
        pareto_ranks(np.array([[1.0, np.nan]]))


@pytest.mark.parametrize("seed,n,d", CASES)
def test_pareto_ranks_match_pymoo_and_optuna(seed, n, d):
    F = _random_set(seed, n, d)
    ours = pareto_ranks(F)
    _, pymoo_rank = NonDominatedSorting().do(F, return_rank=True)
    np.testing.assert_array_equal(ours, pymoo_rank)
    # pymoo's pure-python Deb sort (used when a dominator is given)
    fronts = NonDominatedSorting(dominator=Dominator()).do(F)
    assert sorted(map(sorted, (f.tolist() for f in fronts))) == sorted(
        f.tolist() for f in non_dominated_sort(F)
    )
    np.testing.assert_array_equal(ours, optuna_ranks(F))
    # duplicates share a rank
    for i, j in itertools.combinations(range(len(F)), 2):
        if np.array_equal(F[i], F[j]):
            assert ours[i] == ours[j]


# --------------------------------------------------------------------------- hypervolume
def test_hypervolume_2d_staircase_by_hand():
    # ref (5, 5); points (1,4), (2,2), (4,1):
    # x in [1,2): height 5-4=1 -> 1;  x in [2,4): height 5-2=3 -> 6;  x in [4,5): 5-1=4 -> 4
    F = np.array([[1, 4], [2, 2], [4, 1]], dtype=float)
    assert hypervolume(F, [5, 5]) == pytest.approx(11.0)
    # a dominated point, a duplicate and points outside the reference change nothing
    G = np.vstack([F, [[3, 3], [2, 2], [6, 0], [0, 5]]])
    assert hypervolume(G, [5, 5]) == pytest.approx(11.0)


def test_hypervolume_single_point_and_empty():
    assert hypervolume(np.array([[1.0, 2.0, 3.0]]), [2.0, 4.0, 7.0]) == pytest.approx(1 * 2 * 4)
    assert hypervolume(np.array([[0.5, 0.5, 0.5, 0.5]]), 1.0) == pytest.approx(0.5**4)
    assert hypervolume(np.empty((0, 3)), [1.0, 1.0, 1.0]) == 0.0
    assert hypervolume(np.empty((0, 2)), 1.0) == 0.0
    assert hypervolume(np.array([[1.0, 0.0]]), [1.0, 1.0]) == 0.0  # on the reference: nothing
    assert hypervolume(np.array([[2.0, 0.0]]), [1.0, 1.0]) == 0.0  # worse than the reference
    with pytest.raises(ConfigError, match="ref_point"):
        hypervolume(np.array([[0.0, 0.0]]), [1.0, 1.0, 1.0])
    with pytest.raises(ConfigError, match="finite"):
        hypervolume(np.array([[0.0, 0.0]]), [1.0, np.inf])


def test_hypervolume_3d_by_hand():
    # points (0,1,0) and (1,0,0), ref (2,2,1): each slice z in [0,1) is the union of the
    # rectangles [0,2]x[1,2] and [1,2]x[0,2] -> 2 + 2 - 1 = 3; height 1 -> 3
    F = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert hypervolume(F, [2.0, 2.0, 1.0]) == pytest.approx(3.0)
    # adding (0,0,0.5): for z in [0.5,1) the slice becomes the whole [0,2]^2 = 4
    # -> 3 * 0.5 + 4 * 0.5 = 3.5
    G = np.vstack([F, [[0.0, 0.0, 0.5]]])
    assert hypervolume(G, [2.0, 2.0, 1.0]) == pytest.approx(3.5)


@pytest.mark.parametrize("seed,n,d", CASES)
def test_hypervolume_matches_pymoo_and_optuna(seed, n, d):
    ref = np.full(d, 0.9)
    F = _random_set(seed, n, d)
    # make sure some points are worse than (or on) the reference in one objective, and one is
    # very good in all other objectives, so dropping it wrongly would change the result
    outside = np.full((2, d), 0.0)
    outside[0, 0] = 1.5
    outside[1, -1] = 0.9
    F = np.vstack([F, outside])
    ours = hypervolume(F, ref)
    assert ours > 0
    assert ours == pytest.approx(HV(ref_point=ref).do(F), rel=1e-10, abs=1e-12)
    assert ours == pytest.approx(optuna_hv(F, ref), rel=1e-10, abs=1e-12)


def test_hypervolume_five_objectives_matches_pymoo():
    F = _random_set(7, 25, 5)
    ref = np.full(5, 1.0)
    assert hypervolume(F, ref) == pytest.approx(HV(ref_point=ref).do(F), rel=1e-10)


def test_hypervolume_is_permutation_invariant_and_monotone():
    F = _random_set(3, 40, 3)
    ref = np.full(3, 1.1)
    base = hypervolume(F, ref)
    rng = np.random.default_rng(0)
    assert hypervolume(F[rng.permutation(len(F))], ref) == pytest.approx(base, rel=1e-12)
    better = np.vstack([F, [[0.01, 0.01, 0.01]]])
    assert hypervolume(better, ref) > base


# --------------------------------------------------------------------------- normalisation
def test_normalize_and_report_convention():
    F = np.array([[0.0, 10.0], [5.0, 20.0]])
    np.testing.assert_allclose(normalize(F, [0.0, 10.0], [10.0, 30.0]), [[0.0, 0.0], [0.5, 0.5]])
    with pytest.raises(ConfigError, match="nadir > ideal"):
        normalize(F, [0.0, 10.0], [0.0, 30.0])

    lower, upper = report_bounds(fp32_digital_size_mb=4.0)
    np.testing.assert_array_equal(lower, [-1.0, -1.0, 0.0])
    np.testing.assert_array_equal(upper, [0.0, 0.0, 4.0])
    lo2, hi2 = minimization_bounds([0, 0, 0], [1, 1, 4.0], REPORT_SENSES)
    np.testing.assert_array_equal(lo2, lower)
    np.testing.assert_array_equal(hi2, upper)

    # accuracy 0.9, all-analog MACs (ratio 1.0), 1 MB digital of a 4 MB FP32 model
    raw = np.array([[0.9, 1.0, 1.0]])
    F_min = to_minimization(raw, REPORT_SENSES)
    Z = normalize(F_min, lower, upper)
    np.testing.assert_allclose(Z, [[0.1, 0.0, 0.25]])
    expected = (DEFAULT_REF - 0.1) * (DEFAULT_REF - 0.0) * (DEFAULT_REF - 0.25)
    assert normalized_hypervolume(F_min, lower, upper) == pytest.approx(expected)
    # the ideal point reaches the maximum ref ** n_obj
    ideal = to_minimization(np.array([[1.0, 1.0, 0.0]]), REPORT_SENSES)
    assert normalized_hypervolume(ideal, lower, upper) == pytest.approx(DEFAULT_REF**3)
    assert normalized_hypervolume(np.empty((0, 3)), lower, upper) == 0.0
    with pytest.raises(ConfigError):
        report_bounds(0.0)


def test_report_bounds_other_objectives():
    objs = ["accuracy", "latency_ms", "digital_size_mb"]
    assert objective_senses(objs) == ("max", "min", "min")
    lower, upper = report_bounds(2.0, objs, upper={"latency_ms": 5.0})
    np.testing.assert_array_equal(lower, [-1.0, 0.0, 0.0])
    np.testing.assert_array_equal(upper, [0.0, 5.0, 2.0])
    with pytest.raises(ConfigError, match="latency_ms"):
        report_bounds(2.0, objs)
    with pytest.raises(ConfigError, match="unknown objective"):
        objective_senses(["accuracy", "speed"])
    assert objective_senses(REPORT_OBJECTIVES) == REPORT_SENSES


def test_useful_range_hypervolume_narrows_the_accuracy_axis():
    """The report's second test hypervolume: accuracy from FP32 - 5 points to FP32 (here 0.88 to
    0.93), checked by hand and against pymoo on the same normalised points."""
    lower, upper = report_bounds(4.0, upper={"accuracy": 0.93}, lower={"accuracy": 0.88})
    np.testing.assert_allclose(lower, [-0.93, -1.0, 0.0])
    np.testing.assert_allclose(upper, [-0.88, 0.0, 4.0])
    raw = np.array([[0.92, 1.0, 1.0], [0.93, 0.5, 0.0], [0.80, 1.0, 0.0]])  # the last is 8 points under FP32
    F_min = to_minimization(raw, REPORT_SENSES)
    Z = normalize(F_min, lower, upper)
    np.testing.assert_allclose(Z[:2], [[0.2, 0.0, 0.25], [0.0, 0.5, 0.0]])
    assert Z[2, 0] > DEFAULT_REF  # beyond the reference point: adds nothing
    hv = normalized_hypervolume(F_min, lower, upper)
    assert hv == pytest.approx(HV(ref_point=np.full(3, DEFAULT_REF))(Z))
    assert hv == pytest.approx(normalized_hypervolume(F_min[:2], lower, upper))
    # one point apart at the top of the range: 0.2 of the narrowed axis, 0.01 of the full one
    wide_lo, wide_hi = report_bounds(4.0)
    narrow_gap = hv - normalized_hypervolume(to_minimization(raw[:2] - [0.01, 0, 0], REPORT_SENSES), lower, upper)
    wide_gap = (normalized_hypervolume(F_min[:2], wide_lo, wide_hi)
                - normalized_hypervolume(to_minimization(raw[:2] - [0.01, 0, 0], REPORT_SENSES), wide_lo, wide_hi))
    assert narrow_gap > 10 * wide_gap
    with pytest.raises(ConfigError, match="lower bound"):
        report_bounds(4.0, upper={"accuracy": 0.9}, lower={"accuracy": 0.95})


# --------------------------------------------------------------------------- crowding
def test_crowding_distance_hand_case():
    F = np.array([[0.0, 4.0], [1.0, 2.0], [3.0, 1.0], [4.0, 0.0]])
    cd = crowding_distance(F)
    assert np.isinf(cd[0]) and np.isinf(cd[3])
    # mean over the objectives of the neighbours' gap over the range (pymoo's convention):
    # point 1: ((3-0)/4 + (4-1)/4) / 2 = 0.75 ; point 2: ((4-1)/4 + (2-0)/4) / 2 = 0.625
    np.testing.assert_allclose(cd[1:3], [0.75, 0.625])
    assert np.all(np.isinf(crowding_distance(F[:2])))
    assert crowding_distance(np.empty((0, 2))).shape == (0,)


def test_crowding_distance_duplicates_get_zero_after_first():
    F = np.array([[0.0, 4.0], [1.0, 2.0], [1.0, 2.0], [4.0, 0.0]])
    cd = crowding_distance(F)
    assert cd[1] > 0 and cd[2] == 0.0
    assert np.isinf(cd[0]) and np.isinf(cd[3])


def test_crowding_distance_point_tied_at_a_columns_end_is_an_extreme():
    # column 0's largest value is shared by points 1 and 6; a stable sort puts 6 last, argmax
    # names 1.  pymoo's compiled pcd then read past its index array and gave point 6 -0.27
    # (pruned first; its writes corrupted the heap).  The distance's definition gives inf.
    F = np.array([[0.0, 0.5, 0.5], [1.0, 0.2, 0.6], [0.5, 0.0, 0.4], [0.4, 1.0, 0.3],
                  [0.3, 0.6, 0.0], [0.2, 0.4, 1.0], [1.0, 0.5, 0.45]])
    cd = crowding_distance(F)
    assert np.isinf(cd[6])
    assert np.all(cd >= 0)


def test_crowding_and_selection_on_quantised_objectives():
    # what a search produces: accuracies in steps of 0.1 point, a few analog shares, many ties
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(4, 25))
        F = np.column_stack([-rng.integers(900, 930, n) / 1000, -rng.integers(0, 5, n) / 4, rng.random(n)])
        cd = crowding_distance(F)
        assert np.all(cd >= 0), F
        k = int(rng.integers(1, n))
        sel = select_pareto_subset(F, k, rng=1)
        assert len(sel) == k and len(set(sel.tolist())) == k and sel.max() < n


# --------------------------------------------------------------------------- selection
def test_select_pareto_subset_takes_fronts_then_spread():
    # front 0: 5 points on a line, the middle ones unevenly spaced; front 1: one point
    F = np.array(
        [[0.0, 1.0], [0.1, 0.9], [0.15, 0.85], [0.6, 0.4], [1.0, 0.0], [1.0, 1.0]], dtype=float
    )
    sel = select_pareto_subset(F, 3, rng=0)
    assert sel.tolist() == [0, 3, 4]  # extremes + the isolated interior point
    assert select_pareto_subset(F, 6, rng=0).tolist() == [0, 1, 2, 3, 4, 5]
    assert select_pareto_subset(F, 10, rng=0).tolist() == [0, 1, 2, 3, 4, 5]
    assert select_pareto_subset(F, 10, rng=0, first_front_only=True).tolist() == [0, 1, 2, 3, 4]
    assert select_pareto_subset(F, 0, rng=0).tolist() == []
    assert select_pareto_subset(np.empty((0, 2)), 3, rng=0).tolist() == []
    with pytest.raises(ConfigError, match="k"):
        select_pareto_subset(F, -1, rng=0)


def test_select_pareto_subset_prefers_distinct_points_and_is_seeded():
    F = np.array([[0.0, 1.0], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [1.0, 0.0]])
    sel = select_pareto_subset(F, 3, rng=1)
    assert len(sel) == 3
    assert {0, 4} <= set(sel.tolist())
    assert len({tuple(F[i]) for i in sel}) == 3  # one copy of the duplicate kept

    G = _random_set(5, 60, 3)
    a = select_pareto_subset(G, 7, rng=np.random.default_rng(42))
    b = select_pareto_subset(G, 7, rng=np.random.default_rng(42))
    np.testing.assert_array_equal(a, b)
    assert len(a) == 7 and len(set(a.tolist())) == 7
    ranks = pareto_ranks(G)
    # every selected point is at least as good (rank) as every unselected point
    rest = np.setdiff1d(np.arange(len(G)), a)
    assert ranks[a].max() <= ranks[rest].min()
