"""How the chip's behaviour over time changes the 1-year figures: drift compensation x BN re-estimation.

``python -m benchmarks.drift_options [--run-dir results/fashion-mnist/resnet8/s0] [--seeds 10]``

On a finished run, four networks the evaluate stage scores - the straight conversion
(``analog_straight``), the HWA-trained full-analog network (``analog_hwa``), the supernet's
all-analog path (``analog``) and the best MPS mapping with at least 70 % analog MACs (the
evaluate stage's results) - are evaluated by the shared evaluator
(:func:`mps.evaluation.drift_accuracy_grid`, the evaluate stage's test subset and BN
recalibration) under every ``evaluate.drift_compensation`` method, without and with BatchNorm
re-estimation after drift (``--bn-batches``), over ``--seeds`` programming seeds at 1 day and
1 year.  It prints one Markdown table row per (network, method, BN) with mean, std and the
worst seed at each time; the README section "One-year accuracy as a chip would deliver it"
holds its table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import REPO
from mps.analog.tiles import drift_compensations
from mps.config import load_params
from mps.evaluation import drift_accuracy_grid
from mps.stages.common import eval_set, load_supernet_inputs
from mps.stages.evaluate import build_model, load_candidates

ROWS = {"straight conversion": "analog_straight", "HWA full analog": "analog_hwa",
        "supernet all-analog path": "analog"}


def best_mps(run_dir: Path, min_analog: float = 70.0) -> str | None:
    """The evaluate stage's most accurate MPS mapping (reference time) with enough analog MACs."""
    results = pd.read_csv(run_dir / "evaluate" / "results.csv")
    mps = results[(results["Method"] == "mps") & (results["Analog_MAC_Ratio_percent"] >= min_analog)]
    return None if mps.empty else str(mps.sort_values("Accuracy_mean", ascending=False)["Mapping"].iloc[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.drift_options", description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--run-dir", type=Path, default=REPO / "results" / "fashion-mnist" / "resnet8" / "s0")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--examples", type=int, default=2000)
    ap.add_argument("--bn-batches", type=int, default=8, help="BN re-estimation batches (of 128) in the 'with' rows")
    ap.add_argument("--methods", default=",".join(drift_compensations()))
    args = ap.parse_args(argv)
    params = load_params(args.params)
    data_dir = args.data_dir or args.run_dir.parents[2] / "data" / params.data.dataset
    splits, supernet, ckpt, _ = load_supernet_inputs(data_dir, args.run_dir / "adapt" / "supernet.pt",
                                                     args.run_dir / "pretrain" / "model.pt")
    from mps.cost_model import parse_hardware_profile

    profile = parse_hardware_profile(ckpt["profile"])
    candidates = {c.name: c for c in load_candidates(args.run_dir / "search" / "mappings",
                                                     str(supernet.meta.get("model_id")), supernet.allowed, supernet.ties)}
    rows = dict(ROWS)
    best = best_mps(args.run_dir)
    if best is not None:
        rows[f"best MPS ≥70 % analog ({best})"] = best
    times = [86400.0, 31536000.0]
    print(f"| network | compensation | BN re-estimated | 1 d mean ± std (worst) | 1 y mean ± std (worst) | s |")
    print("|---|---|---|---|---|---|")
    for label, name in rows.items():
        if name not in candidates:
            print(f"| {label} | (no mapping {name} in this run) | | | | |")
            continue
        for method in args.methods.split(","):
            for bn in (0, args.bn_batches):
                t0 = time.perf_counter()
                model = build_model(candidates[name], supernet, args.run_dir / "pretrain" / "model.pt", profile,
                                    splits, params)
                data = eval_set(splits, "test", args.examples, params.seed, params.evaluate.batch_size,
                                calib_batches=params.evaluate.bn_recalibration_batches, device="cpu",
                                engine=params.analog_engine, drift_compensation=method, bn_reestimation_batches=bn)
                grid = drift_accuracy_grid(model, data, times, args.seeds, params.seed)
                cells = [f"{grid[:, j].mean():.2f} ± {grid[:, j].std():.2f} ({grid[:, j].min():.2f})"
                         for j in range(len(times))]
                print(f"| {label} | {method} | {bn or 'no'} | {' | '.join(cells)} | {time.perf_counter() - t0:.0f} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
