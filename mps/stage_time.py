"""How long each stage of a run will take here: its work, counted from the run's own params,
times the measured speed of this machine.

Why: a wall time measured on one machine says little about another (the same run has taken
10 minutes on one and 40 on another), and a reference run's stage times say nothing about a
run with other budgets.  What carries over is the *ratio* of each kind of work to a plain
FP32 training step of the same model, so the work of a stage is counted in FP32-step
equivalents (:func:`stage_work`, from params: steps of each kind of training, images scored
by the analog evaluator) and multiplied by the seconds one FP32 training step of the run's
model takes on this machine, measured at the start of the run (:func:`measure_fp32_step`,
about a second).  The workflow's progress line (``workflow/scripts/progress.py``) starts from
these estimates and rescales them as stages finish.

The ratios (:data:`COST`) were measured on ResNet8 / Fashion-MNIST, batch 128, 2 cores
(AMD EPYC, 2026-12-02): FP32 step 89.5 ms (pretrain), HWA step 0.31 s, fairness step
0.55 s, noise-phase step 0.64 s, ODiMo search step 0.25 s, analog evaluation 0.46 ms per image
per programming seed and drift time (BN re-estimation included).  They are ResNet8's; for
another model they are a first guess that the finished stages correct.
"""

from __future__ import annotations

import time

from mps.config import Params
from mps.data import NUM_CLASSES

TRAIN_SIZE = {"fashion-mnist": 60000, "cifar10": 50000}

# Work per unit, in FP32 training steps of the same model at batch 128 (see the module docstring).
COST = {
    "fp32_step": 1.0,
    "hwa_step": 3.46,
    "fairness_step": 6.1,
    "noise_step": 7.1,
    "odimo_step": 2.8,
    "analog_image": 0.0051,  # one image through the analog evaluator, one seed and drift time
}
STARTUP = 40.0  # per stage: interpreter, imports, data and model loading (FP32 steps)


def train_examples(params: Params) -> int:
    d = params.data
    if d.subset is not None:
        return d.subset.train * NUM_CLASSES
    return TRAIN_SIZE.get(d.dataset, 50000) - d.val_size


def _steps(epochs: float, n: int, batch: int) -> float:
    from mps.training import epoch_steps

    return epoch_steps(epochs, n, batch) * batch / 128  # cost ratios are per batch of 128


def _images(examples: int | None, n_default: int) -> int:
    return examples if examples is not None else n_default


def stage_work(params: Params, analog_layers: int = 10) -> dict[str, float]:
    """FP32-step equivalents of each stage of one run of ``params`` (``analog_layers``: the
    model's analog-capable weight layers, which calibrate and LionHEART visit one by one)."""
    n = train_examples(params)
    a, s, e, c = params.adapt, params.search, params.evaluate, params.calibrate
    val = params.data.val_size if params.data.subset is None else params.data.subset.val * NUM_CLASSES
    test = 10000 if params.data.subset is None else params.data.subset.test * NUM_CLASSES
    img = COST["analog_image"]
    adapt_steps = _steps(a.fairness_epochs, n, a.batch_size) + _steps(a.noise_epochs, n, a.batch_size)
    work = {
        "prepare_data": 0.0,
        "pretrain": params.pretrain.epochs * _steps(1.0, n, params.pretrain.batch_size),
        "adapt": (_steps(a.fairness_epochs, n, a.batch_size) * COST["fairness_step"]
                  + _steps(a.noise_epochs, n, a.batch_size) * COST["noise_step"]
                  + 2 * a.evidence_repeats * len(a.evidence_drift_times) * _images(a.evidence_examples, test) * img),
        "calibrate": (analog_layers + 1) * c.repeats * len(c.drift_times) * _images(c.val_examples, val) * img,
        "report": 0.0,
        "aggregate": 0.0,
    }
    search_images = _images(s.val_examples, val)
    search = 0.0
    baselines = set(s.baselines)
    evaluations = s.budget * (1 + sum(m in baselines for m in ("random", "nsga2", "greedy")))
    search += evaluations * search_images * img
    if "analog_hwa" in baselines:
        search += (_steps(s.hwa_epochs, n, a.batch_size) if s.hwa_epochs else adapt_steps) * COST["hwa_step"]
    lh, od = s.lionheart, s.odimo
    if "lionheart" in baselines:
        rounds = lh.max_rounds or lh.patience + 1  # uncapped: LH.py's least, a lower bound
        per_candidate = rounds * (_steps(lh.epochs_per_round, n, a.batch_size) * COST["hwa_step"]
                                  + lh.repeats * search_images * img)
        # every threshold's run tries every layer; runs share their common first candidates
        # (mps.search.lionheart), so this counts the shared ones twice: an upper bound there
        search += len(lh.thresholds) * analog_layers * per_candidate
    if "odimo" in baselines:
        finetune = _steps(od.finetune_epochs, n, a.batch_size) if od.finetune_epochs else adapt_steps
        search += len(od.lambdas) * (_steps(od.search_epochs, n, a.batch_size) * COST["odimo_step"]
                                     + finetune * COST["hwa_step"] + search_images * img)
    work["search"] = search
    # analog mappings the evaluate stage scores: each method's set, at most pareto_size each (an upper
    # bound: sets are often smaller); the digital fp32 and int8 rows are scored once, nearly free
    sizes = {"lionheart": len(lh.thresholds), "odimo": len(od.lambdas), "analog": 1, "analog_straight": 1,
             "analog_hwa": 1, "fp32": 0, "int8": 0}
    mappings = sum(min(s.pareto_size, sizes.get(m, s.pareto_size)) for m in [*baselines, "mps"])
    scored = _images(e.max_test_examples, test) + 128 * e.bn_reestimation_batches
    work["evaluate"] = mappings * e.repeats * len(e.drift_times) * scored * img
    # `snakemake ablation` (workflow/rules/ablation.smk): each variant adapts as the adapt stage does,
    # searches with MPS alone (its baselines int8 and analog are the uniform paths: no training) and
    # evaluates MPS's set and the all-analog path; an ablation job is not a main stage's work
    work["ablation_adapt"] = work["adapt"]
    work["ablation_search"] = s.budget * search_images * img
    work["ablation_evaluate"] = (s.pareto_size + 1) * e.repeats * len(e.drift_times) * scored * img
    return {stage: w + STARTUP for stage, w in work.items()}


def measure_fp32_step(params: Params, steps: int = 3) -> float:
    """Seconds of one FP32 training step (forward, backward, SGD update) of the run's model at
    batch 128 on random inputs: one warm-up step, then the median of ``steps`` timed ones."""
    import torch
    import torch.nn.functional as F

    from mps import data as mdata
    from mps.models import build_model

    shape = tuple(mdata._IMAGE_SHAPES[params.data.dataset])  # noqa: SLF001 - the data module's shape table
    model = build_model(params.model.name, in_channels=shape[0], num_classes=NUM_CLASSES, image_size=shape[1])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(128, *shape), torch.randint(0, NUM_CLASSES, (128,))
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        if i:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def estimate_seconds(params: Params, fp32_step: float | None = None, analog_layers: int | None = None
                     ) -> dict[str, float]:
    """Expected wall seconds per stage of a run of ``params`` on this machine."""
    if analog_layers is None:
        from mps.stages.common import architecture_layers

        analog_layers = len(architecture_layers(params.model.name, params.data.dataset))
    step = measure_fp32_step(params) if fp32_step is None else fp32_step
    return {stage: w * step for stage, w in stage_work(params, analog_layers).items()}
