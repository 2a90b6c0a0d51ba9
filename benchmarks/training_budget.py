"""What training budget each method needs: accuracy under drift against training steps.

``python -m benchmarks.training_budget hwa [--steps 0,120,500,1000,2000,4000] [--seeds 10]``
``python -m benchmarks.training_budget supernet [--epochs 0.28,1,2] [--seeds 10]``

On a finished default run (its pretrained model, supernet and data):

* ``hwa``: the pretrained model converted straight to analog (``analog_straight``, the
  ``0`` row), then the same conversion fine-tuned by hardware-aware training
  (:func:`mps.hwa.finetune`, the adaptation's recipe and batch size, i.e. exactly what the
  search stage's ``analog_hwa`` baseline runs) for each number of steps, each a separate run
  with its own cosine schedule (a snapshot of one long run would sit at a higher learning
  rate and is not what a user's budget gives).
* ``supernet``: the adapt stage itself (:func:`mps.stages.adapt.run`) at each total budget,
  split between the fairness and noise phases as the default (1 : 2; ``--fairness-share``), with
  ``--set key=value`` adapt settings changed one at a time (dotted keys for nested ones), in a
  scratch folder;
  its all-analog path is scored like the ``hwa`` rows, its INT8 and FP16 paths once
  (they are deterministic).

Every network is scored by the evaluate stage's evaluator and options (test subset of
``--examples`` images, BN recalibration, drift compensation and BN re-estimation of
``params.yaml``) over ``--seeds`` programming seeds at 1 day and 1 year; the worst seed is
reported because single collapsing seeds are what a user meets.  One JSON line per budget is
appended to ``--out`` (a budget already there is skipped, so an interrupted study resumes),
and the Markdown table of everything in ``--out`` is printed.  Training wall time is measured
in this process: run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.common import DAY, REPO, YEAR, machine, seed_summary
from mps.config import AdaptConfig, load_params
from mps.data import black_fill
from mps.evaluation import accuracy_at, drift_accuracy_grid
from mps.hwa import finetune
from mps.runtime import seed_everything, set_threads
from mps.stages.common import (calibrate_input_ranges, eval_set, evaluation_options, hardware_profile,
                               load_supernet_inputs)
from mps.stages.pretrain import load_pretrained
from mps.supernet import extract, realize
from mps.training import steps_per_epoch

TIMES = (DAY, YEAR)


def _summary(grid) -> dict:
    return {label: seed_summary(grid[:, j]) for j, label in enumerate(("1d", "1y"))}


def _done(out: Path, kind: str) -> dict[float, dict]:
    if not out.exists():
        return {}
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return {r["budget"]: r for r in rows if r["kind"] == kind}


def _append(out: Path, row: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")


def study_hwa(args, params, splits, supernet, profile, data) -> None:
    a = params.adapt
    pretrained = args.run_dir / "pretrain" / "model.pt"
    shape = tuple(load_pretrained(pretrained)[1]["image_shape"])
    done = _done(args.out, "hwa")
    for steps in [int(s) for s in args.steps.split(",")]:
        if float(steps) in done:
            continue
        seed_everything(params.seed)
        model = realize(load_pretrained(pretrained)[0], supernet.uniform_mapping("analog"), profile, shape)
        model = calibrate_input_ranges(model, splits, params)
        t0 = time.perf_counter()
        if steps:
            finetune(model, *splits.train, steps, a.batch_size, a.lr, a.momentum, a.weight_decay, params.seed, "cpu",
                     a.augment, black_fill(splits.manifest), desc=f"hwa {steps} steps", equalize=a.equalize_analog_lr)
        train_s = time.perf_counter() - t0
        grid = drift_accuracy_grid(model, data, TIMES, args.seeds, params.seed)
        row = {"kind": "hwa", "budget": float(steps), "steps": steps, "train_seconds": round(train_s, 1),
               "analog": _summary(grid)}
        _append(args.out, row)
        print(json.dumps({k: row[k] for k in ("budget", "train_seconds")}), row["analog"]["1d"]["mean"],
              row["analog"]["1y"]["mean"], flush=True)


def study_supernet(args, params, splits, profile, data) -> None:
    from mps.stages import adapt
    from mps.tracking import NullTracker

    overrides = dict(kv.split("=", 1) for kv in args.set)
    fairness_share = args.fairness_share
    kind = "supernet" + "".join(f" {k}={v}" for k, v in overrides.items())
    if fairness_share != 1 / 3:
        kind += f" fairness_share={fairness_share:g}"
    done = _done(args.out, kind)
    data_dir = args.data_dir
    pretrained = args.run_dir / "pretrain" / "model.pt"
    n = steps_per_epoch(len(splits.train[0]), params.adapt.batch_size)
    for epochs in [float(e) for e in args.epochs.split(",")]:
        if epochs in done:
            continue
        settings = params.adapt.model_dump()
        for key, value in overrides.items():  # dotted keys reach nested sections (noise_ramp.start_fraction)
            *path, last = key.split(".")
            node = settings
            for part in path:
                node = node[part]
            node[last] = value
        cfg = AdaptConfig(**{**settings, "fairness_epochs": epochs * fairness_share,
                             "noise_epochs": epochs * (1 - fairness_share)})
        p = params.model_copy(update={"adapt": cfg})
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            adapt.run(p, data_dir, pretrained, Path(tmp) / "out", Path(tmp) / "work", NullTracker())
            train_s = time.perf_counter() - t0
            from mps.supernet import load_supernet

            supernet, _ = load_supernet(Path(tmp) / "out" / "supernet.pt")
        row = {"kind": kind, "budget": epochs, "steps": round(epochs * n), "train_seconds": round(train_s, 1),
               "analog": _summary(drift_accuracy_grid(extract(supernet, supernet.uniform_mapping("analog")), data,
                                                      TIMES, args.seeds, params.seed))}
        for op in ("int8", "fp16"):
            row[op] = round(accuracy_at(extract(supernet, supernet.uniform_mapping(op)), data, TIMES[0], 1,
                                        params.seed)[0], 3)
        _append(args.out, row)
        print(json.dumps({k: row[k] for k in ("budget", "steps", "train_seconds", "int8", "fp16")}),
              row["analog"]["1d"]["mean"], row["analog"]["1y"]["mean"], flush=True)


def table(out: Path) -> str:
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    lines = ["| training | budget | steps | train s | 1 d mean ± std (worst) | 1 y mean ± std (worst) | INT8 | FP16 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["kind"], r["budget"])):
        cells = [f"{r['analog'][t]['mean']:.2f} ± {r['analog'][t]['std']:.2f} ({r['analog'][t]['worst']:.2f})"
                 for t in ("1d", "1y")]
        budget = f"{r['budget']:g} epochs" if r["kind"].startswith("supernet") else f"{r['budget']:g} steps"
        lines.append(f"| {r['kind']} | {budget} | {r['steps']} | {r['train_seconds']:.0f} | {' | '.join(cells)} "
                     f"| {r.get('int8', '')} | {r.get('fp16', '')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.training_budget", description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=["hwa", "supernet", "table"])
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--run-dir", type=Path, default=REPO / "results" / "fashion-mnist" / "resnet8" / "s0")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--steps", default="0,120,500,1000,2000,4000", help="hwa: fine-tuning steps, one run each")
    ap.add_argument("--epochs", default="0.28,1,2,3", help="supernet: adaptation epochs (both phases, 1 : 2)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="supernet: an adapt setting changed from params.yaml (one change at a time), e.g. context_mixing=0")
    ap.add_argument("--fairness-share", type=float, default=1 / 3,
                    help="supernet: the fairness phase's share of each budget (the rest is the noise phase)")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--examples", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=None, help="JSON lines (default: <run-dir>/studies/training_budget.jsonl)")
    args = ap.parse_args(argv)
    args.out = args.out or args.run_dir / "studies" / "training_budget.jsonl"
    if args.kind == "table":
        print(table(args.out))
        return 0
    params = load_params(args.params)
    set_threads(params.threads)
    args.data_dir = args.data_dir or args.run_dir.parents[2] / "data" / params.data.dataset
    splits, supernet, _, _ = load_supernet_inputs(args.data_dir, args.run_dir / "adapt" / "supernet.pt",
                                                  args.run_dir / "pretrain" / "model.pt")
    profile = hardware_profile(params)
    data = eval_set(splits, "test", args.examples, params.seed, params.evaluate.batch_size,
                    calib_batches=params.evaluate.bn_recalibration_batches, device="cpu", **evaluation_options(params))
    print(f"machine: {machine()}", flush=True)
    if args.kind == "hwa":
        study_hwa(args, params, splits, supernet, profile, data)
    else:
        study_supernet(args, params, splits, profile, data)
    print(table(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
