"""One evaluation-speed variant, measured in its own process (``python -m benchmarks.evalspeed``).

A fresh process per variant because process-wide settings (the malloc configuration, the
torch thread count) must be set before the first large allocation, and must not leak into
the other variants or the other figures.  It runs the pipeline's own evaluator
(:func:`mps.evaluation.drift_accuracy_grid`: BN recalibration, program once per repeat, drift
to each time, accuracy) on a fresh all-analog sub-network and prints one JSON object: the
seconds, the accuracy grid (to check that a faster variant gives identical numbers) and the
process's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--supernet", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--mapping", default="analog", help="operator of every layer (uniform mapping)")
    ap.add_argument("--examples", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--calib-batches", type=int, default=8)
    ap.add_argument("--drift-times", default="1,86400")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--allocator", choices=("default", "tuned"), default="default")
    ap.add_argument("--task", choices=("evaluate", "fair-step"), default="evaluate",
                    help="evaluate: the evaluator on a fresh all-analog model; fair-step: adapt's fairness steps")
    ap.add_argument("--steps", type=int, default=3, help="fair-step: timed steps per run (after one untimed)")
    args = ap.parse_args(argv)

    tuned = False
    if args.allocator == "tuned":  # before torch allocates anything
        from mps.runtime import tune_glibc_malloc

        tuned = tune_glibc_malloc()

    import resource
    import time

    import torch

    from mps.evaluation import drift_accuracy_grid
    from mps.stages.common import eval_set, load_splits
    from mps.supernet import extract, load_supernet
    from mps.training import evaluate_accuracy

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    supernet, _ = load_supernet(args.supernet)
    splits = load_splits(args.data_dir)
    if args.task == "fair-step":
        result = fair_steps(supernet, splits, args)
        result.update(threads=torch.get_num_threads(), allocator_tuned=tuned)
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
        return 0
    data = eval_set(splits, "test", args.examples, args.seed, args.batch_size, calib_batches=args.calib_batches,
                    device="cpu")
    times = [float(t) for t in args.drift_times.split(",")]
    mapping = supernet.uniform_mapping(args.mapping)
    with torch.no_grad():  # lazy initialisation of the tiles, outside the timing
        evaluate_accuracy(extract(supernet, mapping), data.x[:8], data.y[:8], 8)
    seconds, grids = [], []
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(args.runs):
        model = extract(supernet, mapping)  # fresh: a model is evaluated once, as in every stage
        t0 = time.perf_counter()
        grid = drift_accuracy_grid(model, data, times, args.repeats, args.seed)
        seconds.append(time.perf_counter() - t0)
        grids.append(grid.tolist())
        del model
    images = len(data.x) * len(times) * args.repeats + min(len(data.calib_x), args.calib_batches * 128)
    after = resource.getrusage(resource.RUSAGE_SELF)
    json.dump({"seconds": seconds, "grids": grids, "images": images, "threads": torch.get_num_threads(),
               "allocator_tuned": tuned, "max_rss_mb": after.ru_maxrss / 1024.0,  # whole process, peak
               # of the timed runs only:
               "minor_faults": after.ru_minflt - before.ru_minflt, "sys_seconds": after.ru_stime - before.ru_stime,
               "user_seconds": after.ru_utime - before.ru_utime},
              sys.stdout)
    sys.stdout.write("\n")
    return 0


def fair_steps(supernet, splits, args) -> dict:
    """Seconds of adapt's fairness step (median over ``args.steps`` after one untimed), and the
    losses, which must not depend on process settings that leave the arithmetic alone."""
    import statistics
    import time

    import torch

    from mps.stages.adapt import fair_step
    from mps.training import sgd

    torch.manual_seed(args.seed)
    x, y = splits.train[0][: args.batch_size], splits.train[1][: args.batch_size]
    supernet.train()
    optimizer = sgd(supernet.weight_parameters(), 0.01, 0.9, 1e-4)
    generator = torch.Generator().manual_seed(args.seed)
    losses, seconds = [], []
    for i in range(args.steps + 1):
        t0 = time.perf_counter()
        loss, _ = fair_step(supernet, x, y, optimizer, generator, "benchmark")
        if i:
            seconds.append(time.perf_counter() - t0)
        losses.append(loss)
    return {"seconds": [statistics.median(seconds)], "grids": [[losses]], "images": len(x) * args.steps}


if __name__ == "__main__":
    raise SystemExit(main())
