"""MPS search (phase 3 of the paper): rank-preserving fine-tuning of the supernet's alphas.

The adapted supernet holds, per choice layer, a vector of selection weights (alphas); a
mapping's *score* is the sum over layers of ``log softmax(alpha)[operator]``
(:meth:`Supernet.score`), i.e. its log-probability under the supernet's distribution.  The
search makes that score order mappings the way their true multi-objective Pareto ranks do
(accuracy under drift max, analog MAC ratio max, digital memory min, ...):

1. round 0 evaluates the supernet's uniform paths first (all-analog, all-int8, all-fp16: one
   per operator with weights, the paths the adaptation trains as whole networks, and the
   corners of the objective space), then samples sub-networks uniformly; later rounds sample
   from the current softmax(alpha).  Each is evaluated (counted against the budget) and all
   evaluated mappings so far are ranked by non-dominated sorting.  Without the anchors a
   uniform draw over 4^10 mappings, most with a destructive ``skip`` somewhere, found no
   mapping as good as the plain all-analog one, which then dominated MPS's whole set.
   With ``search.sampling: stratified`` (the default) each round's draws after the anchors
   are spread over the analog-MAC-share axis: draw i of n aims at a share in the i-th of n
   equal strata, and comes from the round's distribution (uniform in round 0, softmax(alpha)
   later) exponentially tilted along that share until its expected share is the target
   (:func:`tilted_probabilities`). The plain draws (``alphas``: uniform, three layers in four
   off analog, then the alphas fitted to a front spanning 0-100 %) spend the rounds where
   the draws happen to fall; over 3 adaptation seeds x 10 search seeds the search fell back
   to the all-analog path in 11 of 30 searches with them and in 7 of 30 with the strata,
   the validation hypervolume rose by 0.042 ± 0.019 and the best >= 70 % mapping by
   0.23 ± 0.13 points on test (README, "Spreading MPS's draws over the analog share"); the
   whole sets' test hypervolume moved -0.013 ± 0.027 on adaptation seed 0, +0.056 ± 0.032
   on seed 1 and +0.040 ± 0.027 on seed 2 (useful range; +0.020 ± 0.017 over the 22
   searches). The
   paper's reference code draws from the alphas: this is our departure, for that reason.
   ``search.sensitivity_anchors: k`` adds k more anchors to round 0 (:func:`sensitivity_anchors`):
   the all-analog path with its 1 .. k most sensitive layers per MAC (the calibrate stage's
   table) on INT8, the points HybridAC and the greedy mapper find near 99 % analog.  Measured
   with k = 2 over 3 adaptation seeds x 10 search seeds (README, "Sensitivity anchors"): the
   best >= 70 % mapping moved +0.08 +- 0.13 points at 1 day and +0.17 +- 0.28 at 1 year on test,
   +0.43 on one adaptation seed and -0.36 on another, where the anchors' 99 % mapping was
   thinned out of the reported set by crowding distance beside the all-analog path; so the
   default stays 0;
2. only the alphas are fine-tuned (the operator weights stay frozen; the score does not
   even depend on them) with a pairwise logistic loss: for every pair with
   ``rank_i < rank_j``, ``-log sigmoid(score_i - score_j)`` (RankNet), Adam,
   ``search.alpha_steps`` steps at ``search.alpha_lr``;
3. after ``search.iterations`` rounds, a Pareto set is extracted: the argmax mapping, the
   highest-scored mappings drawn from the learned distribution, and constrained variants
   (the best-scored mapping reaching each of several analog-MAC-ratio levels; the best-scored
   evaluated mapping within ``search.max_acc_drop`` of the best accuracy seen).  The
   extraction candidates are evaluated in the budget's reserve; the method reports the
   non-dominated set of everything it evaluated (:func:`mps.search.result.select_nondominated`).

The alphas are restored after the search, so the supernet object is left as it was given
(running the search twice gives the same result); the learned probabilities are returned.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mps.config import SearchConfig
from mps.pareto import pareto_ranks
from mps.search.baselines import sensitivity_order
from mps.search.objectives import Evaluation, ObjectiveEvaluator, mapping_key
from mps.search.result import SearchResult, finish
from mps.supernet.adapted import WIDE


# --------------------------------------------------------------------------- scores
def index_table(supernet, mappings: Sequence[Mapping[str, str]]) -> torch.Tensor:
    """(n_mappings, n_layers) operator indices into each layer's alphas, layer order = ``supernet.infos``."""
    ops = {n: layer.op_names for n, layer in supernet.choice_layers().items()}
    names = list(supernet.infos)
    return torch.tensor([[ops[n].index(m[n]) for n in names] for m in mappings], dtype=torch.long)


def table_scores(alphas: Sequence[torch.Tensor], table: torch.Tensor) -> torch.Tensor:
    """Scores of the mappings in ``table``: equal to ``supernet.score`` of each, vectorised."""
    total = torch.zeros(table.shape[0])
    for j, alpha in enumerate(alphas):
        total = total + F.log_softmax(alpha, dim=0)[table[:, j]]
    return total


def ranked_pairs(ranks: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs (i, j) with ``rank_i < rank_j`` (i is better and should score higher)."""
    r = torch.as_tensor(np.asarray(ranks), dtype=torch.long)
    better = r[:, None] < r[None, :]
    i, j = torch.nonzero(better, as_tuple=True)
    return i, j


def rank_preserving_loss(scores: torch.Tensor, ranks: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Mean pairwise logistic loss ``-log sigmoid(s_i - s_j)`` over pairs with rank_i < rank_j.

    Zero (and constant) when every mapping has the same rank.
    """
    i, j = ranked_pairs(ranks)
    if i.numel() == 0:
        return scores.new_zeros(())  # nothing to order: no gradient, fine-tuning stops
    return F.softplus(-(scores[i] - scores[j])).mean()


def finetune_alphas(supernet, mappings: Sequence[Mapping[str, str]], ranks: np.ndarray, steps: int,
                    lr: float) -> list[float]:
    """Adam on the alphas only (weights frozen) to make scores follow ``ranks``; loss per step."""
    alphas = supernet.alpha_parameters()
    frozen = [(p, p.requires_grad) for p in supernet.weight_parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    for a in alphas:
        a.requires_grad_(True)
    table = index_table(supernet, mappings)
    optimizer = torch.optim.Adam(alphas, lr=lr)
    losses: list[float] = []
    try:
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = rank_preserving_loss(table_scores(alphas, table), ranks)
            losses.append(float(loss.detach()))
            if not loss.requires_grad or losses[-1] == 0.0:
                break
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            losses.append(float(rank_preserving_loss(table_scores(alphas, table), ranks)))
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
    return losses


# --------------------------------------------------------------------------- sampling
def uniform_paths(supernet) -> list[dict[str, str]]:
    """The uniform mapping of every operator with weights (``skip`` excluded), in the order the
    operators first appear: the anchors of round 0."""
    kinds = dict.fromkeys(op for ops in supernet.allowed.values() for op in ops if op != "skip")
    # an adapted (MPAAS) candidate exists on its pairs only: the other layers of its path stay analog
    return [supernet.tie(supernet.uniform_mapping(op, ("analog", "int8", "fp16") if op == WIDE else ("int8", "fp16")))
            for op in kinds]


def sensitive_first(table, supernet, drift_time: float, source: str = "sensitivity table") -> list[str]:
    """The analog-capable layers of the calibrate stage's ``table``, most sensitive per MAC first."""
    return sensitivity_order(table, supernet, drift_time, source, per_mac=True)[::-1]


def sensitivity_anchors(supernet, most_sensitive: Sequence[str], k: int) -> list[dict[str, str]]:
    """The all-analog path with its ``j`` most sensitive layers (``most_sensitive``: most sensitive
    per MAC first, from the calibrate stage) on INT8, for j = 1 .. k: round 0's points between
    the all-analog and the mixed mappings, where the first layer and the classifier cost the
    most accuracy for the fewest MACs (README, "HybridAC")."""
    base = supernet.uniform_mapping("analog")
    out, moved = [], {}
    for name in most_sensitive:
        if len(out) >= k:
            break
        if base.get(name) != "analog" or "int8" not in supernet.allowed[name]:
            continue
        moved[name] = "int8"
        out.append(supernet.tie({**base, **moved}))
    return out


def sample_from_alphas(supernet, generator: torch.Generator) -> dict[str, str]:
    """One mapping drawn from the supernet's distribution: per layer, softmax(alpha) over the
    operators the (possibly restricted) space allows; adapted pairs repaired to agree."""
    out = {}
    allowed = supernet.allowed
    with torch.no_grad():
        for name, layer in supernet.choice_layers().items():
            idx = [layer.op_names.index(op) for op in allowed[name]]
            probs = F.softmax(layer.alphas.detach().float()[idx], dim=0)
            out[name] = allowed[name][int(torch.multinomial(probs, 1, generator=generator))]
    return supernet.tie(out)


ANALOG_KINDS = ("analog", WIDE)  # operators whose MACs count as analog (the analog-share objective)


def share_weights(supernet) -> dict[str, float]:
    """Each choice layer's share of the network's MACs: its weight in the analog-MAC-share objective."""
    total = sum(info.macs for info in supernet.infos.values()) or 1
    return {name: info.macs / total for name, info in supernet.infos.items()}


TiltedDistribution = Callable[[float], dict[str, tuple[list[str], torch.Tensor]]]


def tilted_probabilities(supernet, uniform: bool) -> TiltedDistribution:
    """``probs(lam) -> {layer: (ops, probabilities)}``: the round's distribution (uniform over the
    allowed operators, or softmax(alpha)) exponentially tilted along the analog-MAC share.

    Tilting a product distribution by ``exp(lam * share(m))``, with ``share`` a sum of per-layer
    MAC weights, keeps it a product distribution: each layer's analog logits gain ``lam * w_l``.
    So a large ``lam`` turns the layers with many MACs analog first and leaves the small ones
    (the first layer, the classifier, shortcuts) to their learned preference."""
    weights = share_weights(supernet)
    allowed = supernet.allowed
    base = {}
    with torch.no_grad():
        for name, layer in supernet.choice_layers().items():
            ops = allowed[name]
            logits = (torch.zeros(len(ops)) if uniform else
                      layer.alphas.detach().float()[[layer.op_names.index(op) for op in ops]])
            mask = torch.tensor([op in ANALOG_KINDS for op in ops], dtype=torch.float32)
            base[name] = (ops, logits, mask * weights[name])

    def probs(lam: float) -> dict[str, tuple[list[str], torch.Tensor]]:
        return {n: (ops, F.softmax(logits + lam * offset, dim=0)) for n, (ops, logits, offset) in base.items()}
    return probs


def expected_share(probs: Mapping[str, tuple[list[str], torch.Tensor]], weights: Mapping[str, float]) -> float:
    """Expected analog-MAC share of mappings drawn from ``probs`` (one distribution per layer)."""
    return float(sum(weights[n] * sum(float(p) for op, p in zip(ops, pr) if op in ANALOG_KINDS)
                     for n, (ops, pr) in probs.items()))


def solve_tilt(probs: TiltedDistribution, weights: Mapping[str, float], target: float) -> float:
    """The tilt whose expected analog-MAC share is ``target`` (bisection: the share rises with
    the tilt); a target beyond reach gets the nearest end of [-1e4, 1e4]."""
    lo, hi = -1e4, 1e4
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if expected_share(probs(mid), weights) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def draw_tilted(supernet, probs: TiltedDistribution, lam: float, generator: torch.Generator) -> dict[str, str]:
    """One mapping from the distribution tilted by ``lam`` (:func:`solve_tilt` finds the tilt of a share)."""
    out = {}
    for name, (ops, pr) in probs(lam).items():
        out[name] = ops[int(torch.multinomial(pr, 1, generator=generator))]
    return supernet.tie(out)


def stratified_targets(n: int, generator: torch.Generator) -> list[float]:
    """``n`` analog-share targets, one in each of ``n`` equal strata of [0, 1] (Latin hypercube)."""
    u = torch.rand(n, generator=generator)
    return [float((i + u[i]) / n) for i in range(n)]


def _fresh(evaluator: ObjectiveEvaluator, draw, n: int, seen: set[str], attempts: int) -> list[dict[str, str]]:
    """Up to ``n`` mappings from ``draw()`` that were not evaluated or drawn before."""
    out: list[dict[str, str]] = []
    for _ in range(attempts):
        if len(out) >= n:
            break
        m = draw()
        key = mapping_key(m)
        if key in seen or evaluator.is_cached(m):
            continue
        seen.add(key)
        out.append(m)
    return out


def budget_plan(budget: int, iterations: int, pareto_size: int) -> tuple[list[int], int]:
    """Evaluations per round and the reserve kept for the final extraction.

    The reserve is ``pareto_size`` but at most a quarter of the budget (at least 1); the rest
    is split evenly over the rounds (earlier rounds take the remainder), with at least two
    mappings per round so that ranks can disagree.
    """
    reserve = min(pareto_size, max(1, budget // 4))
    search = budget - reserve
    rounds = min(iterations, search // 2)
    if rounds <= 0:
        return [], budget
    base, extra = divmod(search, rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)], reserve


# --------------------------------------------------------------------------- extraction
def extraction_candidates(supernet, evaluator: ObjectiveEvaluator, cfg: SearchConfig,
                          generator: torch.Generator) -> tuple[list[dict[str, str]], dict[str, str | None]]:
    """Ordered candidates of the final Pareto extraction, and which rule picked what.

    Order: the argmax mapping; then, alternating, the best-scored pool mapping reaching each
    analog-MAC-ratio level (highest level first) and the next highest-scored pool mapping.
    The pool is ``search.extraction_samples`` draws from the learned distribution (scored and
    costed for free; only the candidates actually evaluated count).
    """
    argmax = supernet.argmax_mapping()
    pool: dict[str, dict[str, str]] = {mapping_key(argmax): argmax}
    for _ in range(cfg.extraction_samples):
        m = sample_from_alphas(supernet, generator)
        pool.setdefault(mapping_key(m), m)
    members = list(pool.values())
    with torch.no_grad():
        scores = table_scores(supernet.alpha_parameters(), index_table(supernet, members)).numpy()
    ratios = np.array([evaluator.costs(m)[1]["analog_mac_ratio"] for m in members])
    by_score = sorted(range(len(members)), key=lambda i: (-scores[i], mapping_key(members[i])))

    levels = max(1, cfg.pareto_size - 1)
    constrained: list[int] = []
    lo, hi = float(ratios.min()), float(ratios.max())
    for q in np.linspace(hi, lo, levels + 1)[:-1] if hi > lo else [hi]:
        best = next(i for i in by_score if ratios[i] >= q - 1e-12)
        constrained.append(best)
    order: list[dict[str, str]] = [argmax]
    top = iter(by_score)
    for c in constrained:
        order.append(members[c])
        order.append(members[next(top)])
    order.extend(members[i] for i in top)
    seen: set[str] = set()
    unique = []
    for m in order:
        k = mapping_key(m)
        if k not in seen:
            seen.add(k)
            unique.append(m)
    return unique, {"argmax": mapping_key(argmax)}


def accuracy_constrained_pick(supernet, evaluations: Sequence[Evaluation], max_acc_drop: float) -> Evaluation | None:
    """Best-scored evaluated mapping within ``max_acc_drop`` points of the best accuracy seen."""
    if not evaluations:
        return None
    best_acc = max(e.accuracy for e in evaluations)
    ok = [e for e in evaluations if e.accuracy >= best_acc - max_acc_drop]
    with torch.no_grad():
        scores = table_scores(supernet.alpha_parameters(), index_table(supernet, [e.mapping for e in ok]))
    return max(zip(scores.tolist(), ok), key=lambda t: (t[0], -t[1].index))[1]


# --------------------------------------------------------------------------- search
def mps_search(supernet, evaluator: ObjectiveEvaluator, cfg: SearchConfig, seed: int,
               log=print, method: str = "mps", most_sensitive: Sequence[str] = ()) -> SearchResult:
    """Run the MPS search within ``evaluator``'s budget; the supernet's alphas are restored after.

    ``most_sensitive``: the analog-capable layers, most sensitive per MAC first (needed when
    ``cfg.sensitivity_anchors`` > 0)."""
    if cfg.sensitivity_anchors and not most_sensitive:
        raise ValueError("search.sensitivity_anchors needs the calibrate stage's layer order (most_sensitive)")
    generator = torch.Generator().manual_seed(seed)
    saved = [a.detach().clone() for a in supernet.alpha_parameters()]
    weights = share_weights(supernet)  # the layers' MAC shares: fixed for the whole search
    rounds, reserve = budget_plan(evaluator.budget, cfg.iterations, cfg.pareto_size)
    seen: set[str] = set()
    round_log: list[dict[str, float]] = []
    anchors = uniform_paths(supernet) + sensitivity_anchors(supernet, most_sensitive, cfg.sensitivity_anchors)
    try:
        for r, n in enumerate(rounds):
            n = min(n, evaluator.remaining - reserve)
            if cfg.sampling == "stratified":
                draws = []
                if r == 0:
                    draws = _fresh(evaluator, iter(anchors).__next__, min(n, len(anchors)), seen, len(anchors))
                probs = tilted_probabilities(supernet, uniform=r == 0)
                for target in stratified_targets(n - len(draws), generator):
                    lam = solve_tilt(probs, weights, target)
                    draws += _fresh(evaluator, lambda lam=lam: draw_tilted(supernet, probs, lam, generator), 1, seen,
                                    100)
                if len(draws) < n:  # a stratum's draws were all seen before: explore uniformly for the rest
                    draws += _fresh(evaluator, lambda: supernet.sample_mapping(generator), n - len(draws), seen,
                                    100 * n)
            elif r == 0:
                queue = iter(anchors)
                draws = _fresh(evaluator, lambda: next(queue, None) or supernet.sample_mapping(generator), n, seen,
                               100 * n)
            else:
                draws = _fresh(evaluator, lambda: sample_from_alphas(supernet, generator), n, seen, 100 * n)
                if len(draws) < n:  # the distribution has collapsed: explore uniformly for the rest
                    draws += _fresh(evaluator, lambda: supernet.sample_mapping(generator), n - len(draws), seen,
                                    100 * n)
            for m in draws:
                evaluator.evaluate(m)
            history = evaluator.history
            ranks = pareto_ranks(evaluator.matrix(history))
            losses = finetune_alphas(supernet, [e.mapping for e in history], ranks, cfg.alpha_steps, cfg.alpha_lr)
            round_log.append({"round": r + 1, "evaluated": len(history), "fronts": int(ranks.max()) + 1,
                              "loss_start": losses[0], "loss_end": losses[-1]})
            log(f"search {method}: round {r + 1}/{len(rounds)}: {len(history)} evaluated, "
                f"{int(ranks.max()) + 1} fronts, rank loss {losses[0]:.4f} -> {losses[-1]:.4f}")

        candidates, picks = extraction_candidates(supernet, evaluator, cfg, generator)
        extracted = 0
        for m in candidates:
            if evaluator.remaining <= 0:
                break
            if not evaluator.is_cached(m):
                extracted += 1
            evaluator.evaluate(m)
        constrained = accuracy_constrained_pick(supernet, evaluator.history, cfg.max_acc_drop)
        with torch.no_grad():
            probabilities = {name: {op: round(float(p), 6) for op, p in zip(layer.op_names, layer.probabilities(1.0))}
                             for name, layer in supernet.choice_layers().items()}
        details = {"rounds": round_log, "reserve": reserve, "extraction_evaluations": extracted,
                   "argmax": supernet.argmax_mapping(), "probabilities": probabilities,
                   "accuracy_constrained": constrained.mapping if constrained else None}
    finally:
        with torch.no_grad():
            for a, v in zip(supernet.alpha_parameters(), saved):
                a.copy_(v)
    return finish(method, evaluator, cfg.pareto_size, seed, **details)
