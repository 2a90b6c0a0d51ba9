"""HybridAC (the peer issue 23 calls Harmonica) on a finished run: accuracy under drift against
the share of MACs moved to the digital unit.

``python -m benchmarks.hybridac [--fractions 0,0.01,0.02,0.05,0.1,0.2] [--out F]``

From the run's pretrained model (HybridAC does not retrain), once:
:func:`mps.search.hybridac.line_sensitivity` on ``--examples`` seeded training examples.  Then
for each fraction (the share of the network's MACs moved to the digital unit): the selection,
the hybrid network, its analog input ranges calibrated as the straight conversion's are, then
the evaluate stage's evaluator and options (its test subset, drift times, programming seeds, BN
recalibration, drift compensation and BN re-estimation, all from ``params.yaml``).  Fraction 0
is the straight conversion exactly, so its row is the evaluate stage's ``analog_straight`` row
(tested).  One JSON line per fraction is appended to ``--out`` (a fraction already there is
skipped, so an interrupted study resumes), then the Markdown table of everything in ``--out``
and, from the run's evaluate stage, every method's test hypervolume with HybridAC's added.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

import torch

from benchmarks.common import DAY, REPO, YEAR, machine, seed_summary
from mps.config import Params, load_params
from mps.evaluation import drift_accuracy_grid
from mps.runtime import seed_everything, set_threads
from mps.search.hybridac import build_hybrid, check_layers, hybrid_cost, line_sensitivity, select_lines
from mps.stages.common import (Splits, calibrate_input_ranges, eval_set, evaluation_options, hardware_profile,
                               load_splits)
from mps.stages.pretrain import load_pretrained


def sensitivity_examples(splits: Splits, params: Params, n: int) -> tuple:
    """``n`` training examples drawn with the run's seed (apart from every other draw's)."""
    x, y = splits.train
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(params.seed + 3))[:n]
    return x[idx], y[idx]


def study(params: Params, splits: Splits, pretrained: Path, fractions: list[float], done: set[float] = frozenset(),
          examples: int = 512, emit: Callable[[dict], None] = lambda row: None,
          log: Callable[[str], None] = print) -> list[dict]:
    """One row per fraction not in ``done`` (each passed to ``emit`` as soon as it is measured):
    the cost axes and the evaluate stage's grid summary."""
    ev = params.evaluate
    profile = hardware_profile(params)
    data = eval_set(splits, "test", ev.max_test_examples, params.seed, ev.batch_size,
                    calib_batches=ev.bn_recalibration_batches, device="cpu", **evaluation_options(params))
    model, ckpt = load_pretrained(pretrained)
    shape = tuple(ckpt["image_shape"])
    infos = check_layers(model, shape)
    sensitivity = line_sensitivity(model, *sensitivity_examples(splits, params, examples))
    times = list(ev.drift_times)
    rows = []
    for fraction in fractions:
        if fraction in done:
            continue
        seed_everything(params.seed)
        model, _ = load_pretrained(pretrained)
        masks = select_lines(infos, sensitivity, fraction)
        cost = hybrid_cost(infos, masks)
        hybrid = calibrate_input_ranges(build_hybrid(model, masks, profile, shape), splits, params)
        grid = drift_accuracy_grid(hybrid, data, times, ev.repeats, params.seed)
        row = {"fraction": fraction, "protected_lines": cost.protected_lines,
               "analog_mac_percent": round(100 * cost.analog_mac_ratio, 2),
               "digital_size_mb": round(cost.digital_size_mb, 5), "repeats": ev.repeats,
               "test_examples": len(data.y), "fisher_examples": examples}
        for t, label in ((DAY, "1d"), (YEAR, "1y")):
            if t in times:
                row[label] = seed_summary(grid[:, times.index(t)])
        rows.append(row)
        emit(row)
        log(json.dumps({k: row[k] for k in ("fraction", "analog_mac_percent", "digital_size_mb")})
            + "".join(f" {label} {row[label]['mean']:.2f}" for label in ("1d", "1y") if label in row))
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| MACs moved to digital (lines) | analog MACs | digital MB (FP32) | 1 d mean ± std (worst) | "
             "1 y mean ± std (worst) |", "|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["fraction"]):
        cells = [f"{r[t]['mean']:.2f} ± {r[t]['std']:.2f} ({r[t]['worst']:.2f})" if t in r else ""
                 for t in ("1d", "1y")]
        lines.append(f"| {100 * r['fraction']:g} % ({r['protected_lines']}) | {r['analog_mac_percent']:.1f} % "
                     f"| {r['digital_size_mb']:.4f} | {' | '.join(cells)} |")
    return "\n".join(lines)


def hypervolumes(results: "pd.DataFrame", rows: list[dict], window: float) -> dict[str, tuple[float, float]]:
    """Each method's test hypervolume as the report computes it (accuracy at the reference time,
    analog MAC ratio, digital memory; over [0, 100] % and over FP32 - ``window`` ... FP32), with
    the HybridAC networks of ``rows`` added as the method ``hybridac`` (1-day accuracy: the
    report's reference time by default)."""
    import pandas as pd

    from mps.stages.report import measured_hypervolumes

    extra = pd.DataFrame([{"Method": "hybridac", "Mapping": f"hybridac-{r['fraction']:g}",
                           "Accuracy_mean": r["1d"]["mean"], "Analog_MAC_Ratio_percent": r["analog_mac_percent"],
                           "Digital_Size_MB": r["digital_size_mb"]} for r in rows if "1d" in r])
    both = pd.concat([results, extra], ignore_index=True)
    full, useful = measured_hypervolumes(both), measured_hypervolumes(both, window)
    return {m: (full[m], useful.get(m, float("nan"))) for m in full}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.hybridac", description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--run-dir", type=Path, default=REPO / "results" / "fashion-mnist" / "resnet8" / "s0")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--fractions", default="0,0.01,0.02,0.05,0.1,0.2",
                    help="shares of the network's MACs moved to the digital unit, one network each")
    ap.add_argument("--examples", type=int, default=512, help="training examples of the Fisher sensitivity")
    ap.add_argument("--out", type=Path, default=None, help="JSON lines (default: <run-dir>/studies/hybridac.jsonl)")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    fractions = [float(f) for f in args.fractions.split(",")]
    bad = [f for f in fractions if not 0.0 <= f <= 1.0]
    if bad:
        ap.error(f"--fractions {bad} outside [0, 1]; fix: give shares of MACs, e.g. 0,0.05,0.1")
    if args.examples < 1:
        ap.error(f"--examples {args.examples}: the Fisher sensitivity needs at least one example; fix: e.g. 512")
    out = args.out or args.run_dir / "studies" / "hybridac.jsonl"
    pretrained = args.run_dir / "pretrain" / "model.pt"
    if not pretrained.is_file():
        ap.error(f"no pretrained model at {pretrained}; fix: run the pipeline's pretrain stage first (make run)")
    set_threads(params.threads)
    data_dir = args.data_dir or args.run_dir.parents[2] / "data" / params.data.dataset
    splits = load_splits(data_dir)
    lines = out.read_text().splitlines() if out.exists() else []
    done = {json.loads(line)["fraction"] for line in lines if line.strip()}
    print(f"machine: {machine()}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)

    def append(row: dict) -> None:
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")

    study(params, splits, pretrained, fractions, done, args.examples, emit=append,
          log=lambda line: print(line, flush=True))
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    print(table(rows))
    results = args.run_dir / "evaluate" / "results.csv"
    if results.is_file() and params.evaluate.reference_time == DAY:
        import pandas as pd

        print(f"\ntest hypervolume, [0, 100] % / FP32 - {params.report.hypervolume_window:g} ... FP32 "
              f"(the run's evaluate stage, with HybridAC's networks added):")
        for method, (full, useful) in sorted(hypervolumes(pd.read_csv(results), rows,
                                                          params.report.hypervolume_window).items()):
            print(f"  {method:16s} {full:.4f} / {useful:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
