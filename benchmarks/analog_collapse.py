"""Why an all-analog network collapses on some programming seeds: the controlled experiment.

``python -m benchmarks.analog_collapse [--run-dir results/fashion-mnist/resnet8/s0] [--seeds 10]``

The pretrained model of a finished run, converted straight to analog (every Conv2d/Linear on
aihwkit tiles, the evaluate stage's ``analog_straight``), BatchNorm recalibrated once as the
shared evaluator does.  For each programming seed and drift time it measures accuracy on the
evaluate stage's test subset

* as programmed and drifted (``all noisy``);
* with one layer's tiles put back to their exact weights, for every layer (the layer whose
  repair restores most is reported);
* with the first layer's weight error made zero-mean per output channel (``first layer, no
  DC``), and with only that per-channel mean error left (``first layer, DC only``).

The weight error is read from aihwkit's own state: ``tile.tile.get_weights() * tile.alpha``
(drifted weights times the global drift compensation) against
``tile.reference_combined_weights`` (what was programmed).  Nothing here changes how the
pipeline evaluates; the README section "Why the analog references collapse" reports the table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import REPO
from mps.analog.engine import use_engine
from mps.config import load_params
from mps.evaluation import recalibrate_batchnorm
from mps.stages.common import eval_set, hardware_profile, load_splits
from mps.stages.pretrain import load_pretrained
from mps.supernet import realize
from mps.analog.tiles import analog_layers, drift_analog, program_analog, reset_programming
from mps.training import evaluate_accuracy


def tile_errors(layer) -> list[tuple[object, torch.Tensor, torch.Tensor]]:
    """(tile, drifted weights, alpha) of every tile of ``layer``, to restore after a repair."""
    return [(t, t.tile.get_weights().clone(), t.alpha.clone()) for t in layer.analog_tiles()]


def restore(saved) -> None:
    for tile, weights, alpha in saved:
        tile.tile.set_weights(weights)
        tile.alpha = alpha


def set_effective(tile, weights: torch.Tensor) -> None:
    """Make the tile compute ``weights`` exactly (compensation scale 1)."""
    tile.tile.set_weights(weights)
    tile.alpha = torch.ones(1, dtype=tile.alpha.dtype)


def study(params, data_dir: Path, pretrained: Path, seeds: int, examples: int | None,
          times: list[float]) -> list[dict]:
    """One row per programming seed x drift time (the columns of the module docstring).

    Seeds and BN recalibration follow :func:`mps.evaluation.drift_accuracy_grid` (seed
    ``params.seed + r`` for repeat ``r``), so ``all noisy`` at the first drift time is what the
    shared evaluator reports for ``analog_straight``; later times differ in their random draws,
    because the repairs in between draw output noise too.
    """
    splits = load_splits(data_dir)
    data = eval_set(splits, "test", examples, params.seed, calib_batches=params.evaluate.bn_recalibration_batches,
                    device="cpu")
    model, ckpt = load_pretrained(pretrained)
    shape = tuple(ckpt["image_shape"])
    model = realize(model, "analog", hardware_profile(params), shape).eval()
    analog = {id(layer) for layer in analog_layers(model)}
    layers = [(name.removesuffix(".layer"), module) for name, module in model.named_modules() if id(module) in analog]
    first = layers[0][1]

    def accuracy() -> float:
        return evaluate_accuracy(model, data.x, data.y, data.batch_size, data.device)

    rows = []
    with torch.no_grad(), use_engine("fast"):
        torch.manual_seed(params.seed)
        recalibrate_batchnorm(model, data.calib_x, data.calib_batches, data.calib_batch_size, data.device)
        for r in range(seeds):
            torch.manual_seed(params.seed + r)
            reset_programming(model)
            program_analog(model)
            for t in times:
                drift_analog(model, t)
                row = {"seed": params.seed + r, "time_s": t, "all noisy": accuracy()}
                repaired = {}
                for name, layer in layers:
                    saved = tile_errors(layer)
                    for tile, _, _ in saved:
                        set_effective(tile, tile.reference_combined_weights)
                    repaired[name] = accuracy()
                    restore(saved)
                best = max(repaired, key=repaired.get)
                row["best single-layer repair"] = best
                row["after that repair"] = repaired[best]
                saved = tile_errors(first)
                for variant, keep_mean in (("first layer, no DC", False), ("first layer, DC only", True)):
                    for tile, w, a in saved:
                        ref = tile.reference_combined_weights
                        err = w * a - ref
                        mean = err.mean(dim=1, keepdim=True)
                        set_effective(tile, ref + (mean.expand_as(err) if keep_mean else err - mean))
                    row[variant] = accuracy()
                restore(saved)
                rows.append(row)
                print(" | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()), flush=True)
        reset_programming(model)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.analog_collapse", description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--run-dir", type=Path, default=REPO / "results" / "fashion-mnist" / "resnet8" / "s0",
                    help="finished run: its pretrain/model.pt is converted")
    ap.add_argument("--data-dir", type=Path, default=None, help="prepared data (default: the run's results/data/<dataset>)")
    ap.add_argument("--seeds", type=int, default=10, help="programming seeds per drift time")
    ap.add_argument("--examples", type=int, default=2000, help="test images (the evaluate stage's subset)")
    ap.add_argument("--times", type=float, nargs="+", default=[86400.0, 31536000.0], help="drift times (s)")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    data_dir = args.data_dir or args.run_dir.parents[2] / "data" / params.data.dataset
    print("seed | time (s) | all noisy | best single-layer repair | after it | first layer, no DC | DC only")
    rows = study(params, data_dir, args.run_dir / "pretrain" / "model.pt", args.seeds, args.examples, args.times)
    print(f"\nstraight all-analog, {args.examples} test images, {args.seeds} programming seeds; mean ± std (min):")
    for t in args.times:
        sel = [r for r in rows if r["time_s"] == t]
        for key in ("all noisy", "first layer, no DC", "first layer, DC only"):
            v = np.array([r[key] for r in sel])
            print(f"  t={t:>10.0f} s  {key:22s} {v.mean():6.2f} ± {v.std():5.2f}  (min {v.min():.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
