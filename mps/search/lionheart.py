"""LionHEART: greedy layer-by-layer conversion to analog, retraining the whole network after
each candidate and keeping it only if the accuracy holds.

Follows ``lionheart/methods/LH.py`` (IBM/lionheart, class ``LH``):

* **start all digital** (``set_baseline_score``: ``convert_layers_to_digital`` gives the float
  network): the digital layers are the ``fp32`` operator by default, because LionHEART's
  threshold is measured against the float network and that is the network it publishes;
  ``search.lionheart.digital: int8`` prices the digital layers as the chip's INT8 unit instead
  (the operator MPS's own mappings use), for a comparison on the same digital hardware.  The
  cost model prices whichever operator is chosen, so an ``fp32`` LionHEART mapping pays 4
  bytes per digital weight in the digital-memory objective;
* **candidate order** (``det_candidate_order``): analog-capable layers by MACs, largest first
  (ties: network order); ``order: tile_utilization`` orders by the analog tile utilisation
  of the cost model, highest first (LionHEART's alternative);
* **per candidate**: the candidate layer is converted to analog from the current network's
  weights (LH.py reloads its current checkpoint and calls ``convert_layers_to_analog``: the
  weights trained so far are kept), the whole network is retrained
  (:func:`mps.hwa.finetune` through the search stage's ``train_hwa``: the project's one HWA
  recipe, not LionHEART's AnalogSGD with separate analog/digital learning rates), then
  evaluated at ``search.drift_time`` with ``repeats`` programming-noise draws (LH.py: 10
  draws at ``t_eval`` = 1 day) by the shared :class:`~mps.search.objectives.ObjectiveEvaluator`;
* **accept rule** (:func:`accepts`, LH.py ``best_score >= baseline_score - drop_threshold``):
  keep the layer if the accuracy is at least the digital start's minus ``threshold``, else
  revert to the network before the candidate.  Every candidate is tried (LH.py pops the
  whole list; it does not stop at the first failure, unlike the ``greedy`` sensitivity mapper).

Departures, and why:

* retraining rounds (:func:`retrain_candidate`) follow LH.py: ``epochs_per_round`` (LH.py
  ``num_steps = -1``: one epoch), an evaluation after each, LH.py's ``patience`` rule
  (:func:`converged`; LH.py's default 1, so at least two rounds; its ResNet20 example,
  ``examples/resnet_cifar10.py``, sets 5, at least six epochs per candidate, which
  ``patience: 5`` gives where the time allows) and the best round kept.  A
  round is one call of the project's HWA recipe, whose cosine schedule restarts each round
  (LH.py sets one scheduler per candidate).  ``max_rounds`` caps the rounds: LionHEART at its
  recipe costs at least 2 epochs of HWA training per candidate and threshold, about
  40 epochs for ResNet8 at two thresholds, far beyond a default run's 30 minutes, so the
  default params.yaml runs a stated fraction of it (see its comments) and
  ``config/params-full.yaml`` the recipe;
* LH.py runs one threshold; a Pareto set needs several, so ``thresholds`` gives one
  independent run each (from the same digital start), one trained network per run.  The set
  reported is the non-dominated subset of the runs' final networks (the project's one rule,
  :mod:`mps.search.result`);
* evaluations: one for the digital start, then one per round per candidate per run, each by a
  fresh evaluator (the same mapping after another round is another network).  LionHEART's cost
  is its time, not an evaluation budget, so ``search.budget`` does not limit it;
* the runs of the several thresholds share their common beginning: each candidate's retraining
  is seeded from the run seed, the layers kept before it and the candidate
  (:func:`candidate_seed`), so a candidate met again with the same layers kept before it (every
  run starts from the same digital start and tries the same order) is the same network, and the
  later run takes it from the earlier one instead of retraining it (:data:`Trials`).  The runs
  are exactly the independent runs LH.py would make one per threshold; only their repeated
  first candidates are not paid twice.  They part at the first candidate one threshold keeps
  and another reverts.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any, Callable, Sequence

from torch import nn

from mps.cost_model import layer_cost
from mps.runtime import derived_seed, seed_everything
from mps.search.objectives import Evaluation, ObjectiveEvaluator
from mps.search.result import SearchResult, select_trained
from mps.supernet.operators import Analog, BuildContext

ANALOG = "analog"
FP32 = "fp32"

# (layers kept before the candidate, candidate) -> (its best round's evaluation and network, the
# rounds run): the candidates retrained so far in one search, shared by its threshold runs
Trials = dict[tuple[tuple[str, ...], str], tuple[Evaluation, nn.Module, int]]


def accepts(start_accuracy: float, trial_accuracy: float, threshold: float) -> bool:
    """LH.py's rule: keep the candidate if its score >= the digital start's score - threshold."""
    return trial_accuracy >= start_accuracy - threshold


def candidate_order(supernet, profile, order: str = "macs") -> list[str]:
    """Analog-capable layers, largest MACs first (``macs``) or highest analog tile utilisation
    first (``tile_utilization``); ties keep the network's layer order."""
    names = [n for n in supernet.infos if ANALOG in supernet.allowed[n]]
    position = {n: i for i, n in enumerate(supernet.infos)}
    if order == "macs":
        key = {n: supernet.infos[n].macs for n in names}
    elif order == "tile_utilization":
        key = {n: layer_cost(supernet.infos[n], ANALOG, profile).tile_util_percent for n in names}
    else:
        raise ValueError(f"unknown LionHEART order {order!r}")
    return sorted(names, key=lambda n: (-key[n], position[n]))


def _float_layer(op: nn.Module) -> nn.Module:
    """The float Conv2d/Linear holding a digital operator's (master) weights."""
    layer = op.layer
    return getattr(layer, "layer", layer)  # int8: QuantizedLayer wraps the float layer


def convert_to_analog(model: nn.Module, name: str, info, profile) -> nn.Module:
    """A copy of ``model`` with layer ``name`` reconverted to analog from its current weights."""
    new = copy.deepcopy(model)
    parent_name, _, child = name.rpartition(".")
    parent = new.get_submodule(parent_name) if parent_name else new
    setattr(parent, child, Analog.from_layer(_float_layer(new.get_submodule(name)), BuildContext(info, profile)))
    return new


def converged(scores: Sequence[float], patience: int) -> bool:
    """LH.py's stopping rule for a candidate's retraining rounds: stop once none of the last
    ``patience`` rounds improved on the best round before them (LH.py keeps a queue of the last
    ``patience`` scores, initialised with zeros, and stops when its max is below the best so far;
    so at least ``patience + 1`` rounds run).

    One departure: a tie counts as no improvement (LH.py: only a lower score stops).  Here each
    round of a mapping is scored with the same programming seeds, so a round that changed nothing
    ties exactly, and LH.py's strict rule would retrain it forever; with ties stopping, the rounds
    end because accuracy on a finite set cannot rise forever.  With LH.py's fresh draws per
    evaluation a tie has probability near zero, so the two rules agree otherwise."""
    return len(scores) > patience and max(scores[-patience:]) <= max(scores[:-patience])


def candidate_seed(seed: int, kept: Sequence[str], name: str) -> int:
    """The random state of candidate ``name``'s conversion and retraining (analog training noise),
    fixed by the run seed and the layers kept before it, whichever threshold's run meets it."""
    return derived_seed(seed, f"lionheart|{'+'.join(kept)}|{name}")


def retrain_candidate(model: nn.Module, train: Callable[[nn.Module], dict], score: Callable[[nn.Module], Evaluation],
                      patience: int, max_rounds: int | None) -> tuple[Evaluation, nn.Module, int]:
    """Rounds of retraining, each followed by an evaluation, until :func:`converged` (or
    ``max_rounds``); returns the best round's evaluation and network (LH.py saves the best
    round's checkpoint as the candidate), and the rounds run."""
    best, best_model, scores = None, model, []
    while True:
        train(model)
        trial = score(model)
        scores.append(trial.accuracy)
        if best is None or trial.accuracy > best.accuracy:
            best, best_model = trial, copy.deepcopy(model)
        if converged(scores, patience) or (max_rounds is not None and len(scores) >= max_rounds):
            return best, best_model, len(scores)


def lionheart_run(threshold: float, start: Evaluation, start_model: nn.Module, evaluator: ObjectiveEvaluator,
                  supernet, profile, order: Sequence[str], train: Callable[[nn.Module], dict], cfg, seed: int,
                  trials: Trials, log: Callable[[str], Any] = print
                  ) -> tuple[Evaluation, nn.Module, list[str], list[Evaluation], int]:
    """One LionHEART run: the final evaluation, its trained network, the layers made analog, the
    evaluations it made (one per retraining round) and how many candidates it took from an
    earlier run's ``trials`` (which it extends with its own)."""
    current, model, accepted, history, reused = start, start_model, [], [], 0

    def score(trial_model: nn.Module, mapping: dict) -> Evaluation:
        # a fresh evaluator per round: the same mapping after another round is another network
        round_eval = replace(evaluator, name=f"{evaluator.name} round", budget=1)
        e = round_eval.evaluate(mapping, build=lambda: trial_model)
        round_eval.close()
        history.append(e)
        return e

    for name in order:
        key = (tuple(accepted), name)
        shared = key in trials
        if shared:
            reused += 1
        else:
            mapping = {**current.mapping, name: ANALOG}
            seed_everything(candidate_seed(seed, accepted, name))
            trial_model = convert_to_analog(model, name, supernet.infos[name], profile)
            trial, trial_model, rounds = retrain_candidate(trial_model, train, lambda m: score(m, mapping),
                                                           cfg.patience, cfg.max_rounds)
            trials[key] = (trial, trial_model, rounds)
        trial, trial_model, rounds = trials[key]
        keep = accepts(start.accuracy, trial.accuracy, threshold)
        log(f"search: lionheart@{threshold:g}: {name} -> analog: {trial.accuracy:.2f} % after {rounds} round(s)"
            f"{' (taken from an earlier run)' if shared else ''} (start {start.accuracy:.2f} %): "
            f"{'kept' if keep else 'reverted'}")
        if keep:
            current, model = trial, trial_model
            accepted.append(name)
    return current, model, accepted, history, reused


def lionheart_search(evaluator: ObjectiveEvaluator, supernet, profile, build_pretrained: Callable[[dict], nn.Module],
                     train: Callable[[nn.Module], dict], cfg, k: int, seed: int,
                     log: Callable[[str], Any] = print) -> SearchResult:
    """One run per threshold from the same digital start; the non-dominated final networks.

    ``cfg`` is ``search.lionheart``; ``train`` retrains a network in place for one round
    (``cfg.epochs_per_round``)."""
    digital = {n: cfg.digital for n in supernet.infos}
    start_model = build_pretrained(digital)
    start_eval = replace(evaluator, name="lionheart start", budget=1, repeats=cfg.repeats)
    start = start_eval.evaluate(digital, build=lambda: start_model, recalibrate=cfg.digital != FP32)
    start_eval.close()
    order = candidate_order(supernet, profile, cfg.order)
    finals: list[tuple[Evaluation, nn.Module]] = []
    history, used, runs, trials = list(start_eval.history), start_eval.used, {}, {}
    for threshold in cfg.thresholds:
        run_eval = replace(evaluator, name=f"lionheart@{threshold:g}", budget=1, repeats=cfg.repeats)
        final, model, accepted, evaluations, reused = lionheart_run(threshold, start, start_model, run_eval, supernet,
                                                                    profile, order, train, cfg, seed, trials, log)
        run_eval.close()
        history += evaluations
        used += len(evaluations)
        finals.append((final, model))
        runs[f"{threshold:g}"] = {"analog_layers": accepted, "accuracy": final.accuracy,
                                  "trials": len(evaluations), "shared_candidates": reused}
    selected, trained = select_trained(evaluator, finals, k, seed)
    keys = {e.key for e in selected}
    evaluations = selected + [e for e in history if e.key not in keys]
    return SearchResult("lionheart", evaluations, selected, used, trained=trained,
                        details={"start_accuracy": start.accuracy, "digital": cfg.digital, "order": list(order),
                                 "repeats": cfg.repeats, "patience": cfg.patience, "max_rounds": cfg.max_rounds,
                                 "epochs_per_round": cfg.epochs_per_round, "runs": runs})
