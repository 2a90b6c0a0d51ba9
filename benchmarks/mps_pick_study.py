"""What moves MPS's best mapping with at least 70 % analog MACs: search seed, budget, round 0, validation size.

``python -m benchmarks.mps_pick_study [--params params.yaml] [--run-dir results/fashion-mnist/resnet8/s0]
[--budgets 24] [--seeds 0,1,2,3,4] [--variant default|no-skip-round0|val2000|alphas|anchors [--anchors K]]
[--pareto-size N]
[--supernet PATH --seed N [--sensitivity CSV]] [--no-test] [--ablation OUT.jsonl]``

On a finished run's adapted supernet, the MPS search (:func:`mps.search.mps_search.mps_search`
over the plain operators, as the search stage runs it) is repeated with several seeds of its own
draws while the evaluator stays fixed (the stage's validation subset and programming seeds), so
the spread over search seeds is the search's own.  For each search, its most accurate mapping
with ``--min-analog`` analog MACs (by the search's validation estimate) is measured as the
evaluate stage measures it (:func:`mps.evaluation.drift_accuracy_grid` on its test subset,
``evaluate.repeats`` programming seeds) at 1 day and 1 year.  One JSON line per search, with
``val_hv_useful``: the 2-D hypervolume (accuracy, analog MAC share; pymoo, reference 1.1 after
normalisation) of the search's reported set on its own validation estimates, accuracy axis from the
pretrained FP32 model's accuracy on the same validation images minus ``report.hypervolume_window``
points to that accuracy, analog share 0 to 1: the quality of the whole set, not of one pick.

``--supernet`` and ``--seed`` point the study at another supernet of the run, e.g. an ablation
variant's (``<run-dir>/ablation/<variant>/r<seed>/adapt/supernet.pt`` with ``--seed <seed>``, the
seed it was adapted and searched with: it also draws the validation and test subsets, as in the
ablation); ``--no-test`` skips the picks' test measurement (validation only, a few times faster).

``--ablation OUT.jsonl`` runs the study on every adapted supernet of a finished ``snakemake
ablation`` (each variant of ``ablation.variants`` x each of ``ablation.seeds``, each with its own
seed), appends one line per search to OUT.jsonl (fields ``ablation_variant`` and
``adaptation_seed``; a supernet already in the file is not searched again, so an interrupted
study resumes), and prints two tables: each variant's mean pick over all its searches, and each
variant minus the default adaptation (the variant without overrides), paired by adaptation seed and
search seed.  Why: the ablation stage reads one or a few searches per supernet, and one search's
pick moves by about a point with its draws alone (README, "More than one search per supernet").

Variants (one change each, for the README table "MPS's mapping with ≥ 70 % analog MACs"):
``no-skip-round0`` draws round 0's uniform sub-networks without ``skip`` (a candidate change,
measured and not adopted); ``val2000`` gives the evaluator 2000 validation images; ``alphas``
draws without the analog-share strata (``search.sampling: alphas``, the default before
commit 608f0ff; the README's "Spreading MPS's draws over the analog share"); ``anchors`` adds
``--anchors`` sensitivity anchors to round 0 (``search.sensitivity_anchors``; the layer order comes
from ``--sensitivity``, by default the ``calibrate/sensitivity.csv`` beside the supernet's ``adapt``
folder, as a run lays them out; measured and not adopted, README "Sensitivity anchors").
``--pareto-size N`` sets ``search.pareto_size`` for the searches: the reported set's size, and with it
the search's reserve and extraction levels (measured 2026-12-05: 8 instead of 4, adopted; README
"How many mappings each method reports").  Each row also gives the untrimmed first front of
everything the search evaluated (``front_size``, ``front_val_hv_useful`` and ``front_pick*``): what
the search found, before the reporting rule's crowding-distance thinning.
Evaluations are memoised across the searches of one invocation (an evaluation is fixed by the
mapping and the evaluator's seed), so the later searches cost less than the first.
"""

from __future__ import annotations

import argparse
import json
import time
import types
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import DAY, REPO, YEAR
from mps.artifacts import ArtifactError
from mps.config import load_params
from mps.cost_model import parse_hardware_profile
from mps.evaluation import drift_accuracy_grid
from mps.pareto import normalized_hypervolume
from mps.search.baselines import read_sensitivity
from mps.search.mps_search import mps_search, sensitive_first
from mps.search.objectives import Evaluation, ObjectiveEvaluator, mapping_key
from mps.search.result import select_nondominated
from mps.stages.common import eval_set, evaluation_options, load_supernet_inputs
from mps.stages.pretrain import load_pretrained
from mps.supernet import extract
from mps.supernet.adapted import WIDE
from mps.training import evaluate_accuracy


class MemoEvaluator(ObjectiveEvaluator):
    """The search's evaluator with a memo shared across searches (counted against each budget)."""

    def __init__(self, *args, memo: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.memo = memo  # mapping key -> Evaluation, one study's

    def evaluate(self, mapping, build=None, recalibrate=True):
        key = mapping_key(mapping)
        if key in self._cache:
            return self._cache[key]
        known = self.memo.get(key)
        if known is not None and self.remaining > 0:
            e = Evaluation(dict(mapping), known.objectives, known.costs, self.used)
            self.history.append(e)
            self._cache[key] = e
            return e
        e = super().evaluate(mapping, build, recalibrate)
        self.memo[key] = e
        return e


def skip_free_round0(supernet) -> None:
    """The ``no-skip-round0`` variant: uniform draws (round 0, and the collapse fallback) without skip."""
    def sample(self, generator):
        out = {}
        for name, ops in self.allowed.items():
            ops = [o for o in ops if o != "skip"] or ops
            out[name] = ops[int(torch.randint(len(ops), (1,), generator=generator))]
        return self.tie(out)
    supernet.sample_mapping = types.MethodType(sample, supernet)


def useful_hypervolume(selected: list[tuple[float, float]], fp32_accuracy: float, window: float) -> float:
    """2-D hypervolume of (accuracy %, analog MAC share) points, accuracy over FP32 - ``window`` ... FP32."""
    if not selected:
        return 0.0
    F = np.array([[-acc / 100.0, -share] for acc, share in selected])
    lower = [-fp32_accuracy / 100.0, -1.0]
    upper = [-(fp32_accuracy - window) / 100.0, 0.0]
    return normalized_hypervolume(F, lower, upper)


def study(params, splits, supernet, profile, budgets: list[int], seeds: list[int], variant: str = "default",
          min_analog: float = 0.7, log=print, fp32_model=None, measure_test: bool = True,
          most_sensitive: list[str] | None = None, anchors: int = 2, pareto_size: int | None = None) -> list[dict]:
    """One row per (budget, search seed): the search's set, its useful-range hypervolume (with
    ``fp32_model``) and its pick measured on the test subset (``measure_test``).  ``most_sensitive``:
    the calibrate stage's layer order (most sensitive per MAC first), for sensitivity anchors
    (``search.sensitivity_anchors``, or ``anchors`` of them in the ``anchors`` variant)."""
    cfg = params.search
    if pareto_size is not None:  # the reported set's size, and the search's reserve and extraction levels with it
        cfg = cfg.model_copy(update={"pareto_size": pareto_size})
    if variant == "anchors":
        cfg = cfg.model_copy(update={"sensitivity_anchors": anchors})
    if variant == "val2000":
        cfg = cfg.model_copy(update={"val_examples": 2000})
    if variant == "no-skip-round0":
        skip_free_round0(supernet)
    if variant == "alphas":
        cfg = cfg.model_copy(update={"sampling": "alphas"})
    val = eval_set(splits, "val", cfg.val_examples, params.seed, calib_batches=cfg.bn_recalibration_batches,
                   device=params.device, **evaluation_options(params))
    ev_cfg = params.evaluate
    test = eval_set(splits, "test", ev_cfg.max_test_examples, params.seed, ev_cfg.batch_size,
                    calib_batches=ev_cfg.bn_recalibration_batches, device=params.device, **evaluation_options(params))
    fp32_val = (evaluate_accuracy(fp32_model.eval(), val.x, val.y, val.batch_size, val.device)
                if fp32_model is not None else None)
    window = params.report.hypervolume_window
    measured: dict[str, list[float]] = {}
    rows = []
    memo: dict = {}
    for budget in budgets:
        for seed in seeds:
            ev = MemoEvaluator(supernet, val, profile, cfg.objectives, cfg.drift_time, budget, params.seed,
                               name="mps", show_progress=False, memo=memo)
            t0 = time.perf_counter()
            with supernet.excluding({WIDE}):
                result = mps_search(supernet, ev, cfg, seed, log=lambda _msg: None, most_sensitive=most_sensitive or ())
            seconds = time.perf_counter() - t0
            front = select_nondominated(ev, ev.history, len(ev.history), seed)  # the untrimmed first front
            row = {"variant": variant, "budget": budget, "pareto_size": cfg.pareto_size, "seed": seed,
                   "search_seconds": round(seconds, 1),
                   "with_skip": sum("skip" in e.mapping.values() for e in ev.history),
                   "selected": [(e.accuracy, round(e.objectives["analog_mac_ratio"], 3)) for e in result.selected],
                   "front_size": len(front)}
            if fp32_val is not None:
                row.update(fp32_val=round(float(fp32_val), 2),
                           val_hv_useful=round(useful_hypervolume(row["selected"], fp32_val, window), 4),
                           front_val_hv_useful=round(useful_hypervolume(
                               [(e.accuracy, round(e.objectives["analog_mac_ratio"], 3)) for e in front], fp32_val,
                               window), 4))
            for prefix, chosen in (("", result.selected), ("front_", front)):
                enough = [e for e in chosen if e.objectives["analog_mac_ratio"] >= min_analog]
                if not (enough and measure_test):
                    continue
                pick = max(enough, key=lambda e: e.accuracy)
                key = mapping_key(pick.mapping)
                if key not in measured:
                    grid = drift_accuracy_grid(extract(supernet, pick.mapping), test, [DAY, YEAR], ev_cfg.repeats,
                                               params.seed)
                    measured[key] = [round(float(v), 2) for v in (grid[:, 0].mean(), grid[:, 0].std(),
                                                                   grid[:, 1].mean(), grid[:, 1].std())]
                row.update({f"{prefix}pick_val": pick.accuracy,
                            f"{prefix}pick_analog": round(pick.objectives["analog_mac_ratio"], 3),
                            f"{prefix}pick_test_1d_mean_std_1y_mean_std": measured[key], f"{prefix}pick": pick.mapping})
            log(json.dumps(row))
            rows.append(row)
    return rows


def layer_order(params, supernet, supernet_path: Path, sensitivity: Path | None = None) -> list[str]:
    """The supernet's analog-capable layers, most sensitive per MAC first, from ``sensitivity`` or
    else the calibrate table beside its ``adapt`` folder (``<...>/calibrate/sensitivity.csv``, as
    a run and each ablation variant x seed lay them out): what sensitivity anchors need."""
    path = sensitivity or supernet_path.parent.parent / "calibrate" / "sensitivity.csv"
    return sensitive_first(read_sensitivity(path), supernet, params.search.drift_time, str(path))


def ablation_supernets(params, run_dir: Path) -> list[tuple[str, int, Path]]:
    """(variant, adaptation seed, supernet) of every run of ``snakemake ablation``; all of them
    must exist before any search starts."""
    cfg = params.ablation
    runs = [(v, s, run_dir / "ablation" / v / f"r{s}" / "adapt" / "supernet.pt")
            for v in cfg.variants for s in cfg.seeds]
    missing = [str(p) for _, _, p in runs if not p.is_file()]
    if missing:
        raise ArtifactError(f"{len(missing)} ablation supernet(s) not found, e.g. {missing[0]}; fix: run "
                            "`snakemake ablation` with the same params first (or pass that run's --run-dir)")
    return runs


def ablation_study(params, run_dir: Path, data_dir: Path, seeds: list[int], out: Path, log=print) -> list[dict]:
    """The study on every ablation supernet, ``seeds`` as search seeds; one line per search appended
    to ``out`` (resumes: a (variant, adaptation seed) already there is skipped).  All its rows."""
    runs = ablation_supernets(params, run_dir)
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.is_file() else []
    done = {(r["ablation_variant"], r["adaptation_seed"]) for r in rows}
    pretrained = run_dir / "pretrain" / "model.pt"
    fp32_model, _ = load_pretrained(pretrained)
    for variant, seed, path in runs:
        if (variant, seed) in done:
            log(f"ablation study: {variant} r{seed} already in {out}")
            continue
        splits, supernet, ckpt, _ = load_supernet_inputs(data_dir, path, pretrained)
        seeded = params.model_copy(update={"seed": seed})  # the seed it was adapted, searched and evaluated with
        most_sensitive = layer_order(params, supernet, path) if params.search.sensitivity_anchors else None
        new = study(seeded, splits, supernet, parse_hardware_profile(ckpt["profile"]), [seeded.search.budget], seeds,
                    log=lambda _line: None, fp32_model=fp32_model, most_sensitive=most_sensitive)
        with out.open("a") as f:
            for r in new:
                r.update(ablation_variant=variant, adaptation_seed=seed)
                f.write(json.dumps(r) + "\n")
        rows.extend(new)
        log(f"ablation study: {variant} r{seed}: {len(new)} searches -> {out}")
    return rows


def _mean_se(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else float("nan")


def ablation_tables(rows: list[dict], variants: dict[str, dict]) -> str:
    """Markdown: per variant the mean pick (1 day, 1 year; ± standard error over its searches),
    fall-backs to the all-analog path and validation hypervolume; then each variant minus the
    default adaptation (the variant without overrides, else the first), paired by (adaptation
    seed, search seed).  A search without a pick (nothing >= the analog share) counts as no pick."""
    by_variant: dict[str, dict[tuple[int, int], dict]] = {}
    for r in rows:
        by_variant.setdefault(r["ablation_variant"], {})[(r["adaptation_seed"], r["seed"])] = r
    order = [v for v in variants if v in by_variant] + sorted(v for v in by_variant if v not in variants)
    picked_key = "pick_test_1d_mean_std_1y_mean_std"  # absent when a search had no pick

    def pick(r: dict, i: int) -> float:
        return r[picked_key][i]

    lines = ["| variant | searches | pick 1 d (± SE) | pick 1 y (± SE) | fall-backs to all-analog | searches without a pick "
             "| validation hypervolume, useful range |", "|---|---|---|---|---|---|---|"]
    for v in order:
        runs = list(by_variant[v].values())
        picked = [r for r in runs if picked_key in r]
        d1, y1 = (_mean_se([pick(r, i) for r in picked]) if picked else (float("nan"),) * 2 for i in (0, 2))
        hv = np.mean([r["val_hv_useful"] for r in runs if "val_hv_useful" in r] or [np.nan])
        fall = sum(r.get("pick_analog", 0.0) >= 0.999 for r in picked)
        lines.append(f"| {v} | {len(runs)} | {d1[0]:.2f} ± {d1[1]:.2f} | {y1[0]:.2f} ± {y1[1]:.2f} | {fall} | "
                     f"{len(runs) - len(picked)} | {hv:.3f} |")
    default = next((v for v in variants if not variants[v] and v in by_variant), order[0])
    lines += ["", f"Each variant minus `{default}`, paired by adaptation seed and search seed (± SE):", "",
              "| variant | pairs | pick 1 d | pick 1 y | validation hypervolume |", "|---|---|---|---|---|"]
    for v in order:
        if v == default:
            continue
        a, b = by_variant[v], by_variant[default]
        keys = [k for k in sorted(a) if k in b and picked_key in a[k] and picked_key in b[k]]
        if not keys:
            continue
        cells = []
        for diff in ([pick(a[k], 0) - pick(b[k], 0) for k in keys], [pick(a[k], 2) - pick(b[k], 2) for k in keys],
                     [a[k].get("val_hv_useful", np.nan) - b[k].get("val_hv_useful", np.nan) for k in keys]):
            m, se = _mean_se(diff)
            cells.append(f"{m:+.3f} ± {se:.3f}")
        lines.append(f"| {v} | {len(keys)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.mps_pick_study", description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--run-dir", type=Path, default=REPO / "results" / "fashion-mnist" / "resnet8" / "s0")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--budgets", default="24")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--variant", choices=["default", "no-skip-round0", "val2000", "alphas", "anchors"],
                    default="default")
    ap.add_argument("--anchors", type=int, default=2, help="sensitivity anchors of the anchors variant")
    ap.add_argument("--sensitivity", type=Path, default=None,
                    help="the supernet's calibrate table (default: calibrate/sensitivity.csv beside its adapt folder)")
    ap.add_argument("--pareto-size", type=int, default=None,
                    help="search.pareto_size for these searches (default: the params')")
    ap.add_argument("--min-analog", type=float, default=0.7, help="analog MAC share of the pick (fraction)")
    ap.add_argument("--supernet", type=Path, default=None, help="default <run-dir>/adapt/supernet.pt")
    ap.add_argument("--seed", type=int, default=None, help="params seed (the supernet's adaptation seed)")
    ap.add_argument("--no-test", action="store_true", help="do not measure the picks on the test subset")
    ap.add_argument("--ablation", type=Path, default=None, metavar="OUT.jsonl",
                    help="every supernet of the run's `snakemake ablation`, --seeds each; lines appended to OUT.jsonl")
    args = ap.parse_args(argv)
    if args.pareto_size is not None and args.pareto_size < 1:
        ap.error(f"--pareto-size {args.pareto_size}: the number of mappings a search reports must be at least 1; "
                 "fix: e.g. --pareto-size 8")
    if args.anchors < 0:
        ap.error(f"--anchors {args.anchors}: the number of sensitivity anchors cannot be negative; fix: e.g. --anchors 2")
    params = load_params(args.params)
    data_dir = args.data_dir or args.run_dir.parents[2] / "data" / params.data.dataset
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.ablation is not None:
        rows = ablation_study(params, args.run_dir, data_dir, seeds, args.ablation,
                              log=lambda line: print(line, flush=True))
        print(ablation_tables(rows, params.ablation.variants))
        return 0
    if args.seed is not None:
        params = params.model_copy(update={"seed": args.seed})
    pretrained = args.run_dir / "pretrain" / "model.pt"
    supernet_path = args.supernet or args.run_dir / "adapt" / "supernet.pt"
    splits, supernet, ckpt, _ = load_supernet_inputs(data_dir, supernet_path, pretrained)
    fp32_model, _ = load_pretrained(pretrained)
    most_sensitive = (layer_order(params, supernet, supernet_path, args.sensitivity)
                      if args.variant == "anchors" or params.search.sensitivity_anchors else None)
    study(params, splits, supernet, parse_hardware_profile(ckpt["profile"]),
          [int(b) for b in args.budgets.split(",")], seeds, args.variant,
          args.min_analog, log=lambda line: print(line, flush=True), fp32_model=fp32_model,
          measure_test=not args.no_test, most_sensitive=most_sensitive, anchors=args.anchors,
          pareto_size=args.pareto_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
