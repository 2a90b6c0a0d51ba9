"""Entry point: ``python -m benchmarks.run [--quick] [--out benchmarks/out]`` (``make bench``).

Runs the seven figure groups against a finished pipeline run (``make run``'s
``results/<dataset>/<model>/s<seed>``) and writes ``<out>/<YYYY-MM-DD>-bench.md`` and
``-bench.csv``: for each measurement the median of several runs, its range, and ratios
measured within the same run.  ``--quick`` uses fewer and smaller runs (about a minute on
the tiny profile).  A figure whose inputs are missing says so in the table; a figure that
fails is reported in the table too, and the exit status is then 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

from benchmarks.common import REPO, Figure, Inputs, machine, markdown, rows_frame

FIGURES: dict[str, tuple[str, str]] = {  # key -> (module, title for a failure row)
    "mapping": ("benchmarks.mapping", "1. Mapping time"),
    "claims": ("benchmarks.claims", "2. Accuracy claims"),
    "throughput": ("benchmarks.throughput", "3. Evaluation throughput"),
    "training": ("benchmarks.training", "4. Training step cost"),
    "e2e": ("benchmarks.e2e", "5. End to end"),
    "hwa_engine": ("benchmarks.hwa_engine", "6. HWA engine cost"),
    "growth": ("benchmarks.growth", "7. Growth with the network"),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer, smaller runs (smoke test / first look)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out", help="folder of the dated report")
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml", help="params of the run to benchmark")
    ap.add_argument("--run-dir", type=Path, default=None,
                    help="finished pipeline run (default <out_dir>/<dataset>/<model>/s<seed> from the params)")
    ap.add_argument("--data-dir", type=Path, default=None, help="prepared data (default <out_dir>/data/<dataset>)")
    ap.add_argument("--bench-dir", type=Path, default=None,
                    help="Snakemake benchmark files (default <out_dir>/benchmarks)")
    ap.add_argument("--supernet", type=Path, default=None, help="adapted supernet (default <run-dir>/adapt/supernet.pt)")
    ap.add_argument("--pretrained", type=Path, default=None, help="pretrained model (default <run-dir>/pretrain/model.pt)")
    ap.add_argument("--sensitivity", type=Path, default=None,
                    help="calibrate table for the greedy mapper (default <run-dir>/calibrate/sensitivity.csv; "
                         "computed when absent)")
    ap.add_argument("--runs", type=int, default=None, help="repetitions per measurement (default 3; quick 2)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the params' threads rule)")
    ap.add_argument("--only", default=",".join(FIGURES), help=f"comma-separated subset of {', '.join(FIGURES)}")
    return ap.parse_args(argv)


def build_inputs(args: argparse.Namespace) -> Inputs:
    from mps.config import ConfigError, load_params
    from mps.runtime import set_threads

    params = load_params(args.params)
    root = Path(params.out_dir)
    if not root.is_absolute() and not root.exists() and (REPO / root).exists():
        root = REPO / root
    run_dir = args.run_dir or root / params.data.dataset / params.model.name / f"s{params.seed}"
    runs = args.runs if args.runs is not None else (2 if args.quick else 3)
    if runs < 1:
        raise ConfigError(f"--runs {runs}: must be at least 1; fix: pass --runs 1 or more")
    threads = set_threads(args.threads if args.threads is not None else params.threads)
    return Inputs(params=params, quick=args.quick, run_dir=Path(run_dir),
                  data_dir=Path(args.data_dir or root / "data" / params.data.dataset),
                  bench_dir=Path(args.bench_dir or root / "benchmarks"), runs=runs, threads=threads,
                  supernet_path=args.supernet, pretrained_path=args.pretrained, sensitivity_path=args.sensitivity,
                  out_dir=args.out, params_path=Path(args.params))


def figure_runner(key: str) -> Callable[[Inputs], Figure]:
    import importlib

    return importlib.import_module(FIGURES[key][0]).run


def run_figures(inp: Inputs, keys: list[str], log=print) -> tuple[list[Figure], bool]:
    figures, ok = [], True
    for key in keys:
        log(f"benchmarks: {FIGURES[key][1]} ...")
        t0 = time.perf_counter()
        try:
            fig = figure_runner(key)(inp)
        except Exception as exc:  # noqa: BLE001 - one broken figure must not hide the others
            ok = False
            fig = Figure(key, FIGURES[key][1], "This figure failed; the error is below.")
            fig.skip(f"FAILED: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
            traceback.print_exc()
        fig.seconds = time.perf_counter() - t0
        log(f"benchmarks: {FIGURES[key][1]}: {fig.seconds:.0f} s")
        figures.append(fig)
    return figures, ok


def write_report(out: Path, figures: list[Figure], info: dict[str, str], header: dict[str, str],
                 date: str) -> tuple[Path, Path]:
    from mps.artifacts import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    md = atomic_write_text(out / f"{date}-bench.md", markdown(figures, info, header))
    csv = atomic_write_text(out / f"{date}-bench.csv", rows_frame(figures, info).to_csv(index=False))
    return md, csv


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MPS_NO_PROGRESS", "1")
    args = parse_args(argv)
    from mps.config import ConfigError

    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in keys if k not in FIGURES]
    if unknown or not keys:
        print(f"benchmarks: error: --only {args.only!r}: unknown figure(s) {', '.join(unknown) or '(none given)'}; "
              f"fix: use a comma-separated subset of {', '.join(FIGURES)}", file=sys.stderr)
        return 2
    try:
        inp = build_inputs(args)
    except ConfigError as exc:
        print(f"benchmarks: error: {exc}", file=sys.stderr)
        return 2
    from mps.runtime import seed_everything

    seed_everything(inp.params.seed)
    t0 = time.perf_counter()
    figures, ok = run_figures(inp, keys)
    date = dt.datetime.now(dt.timezone.utc).date().isoformat()
    header = {"mode": "quick (fewer, smaller runs)" if inp.quick else "full",
              "runs per measurement": f"{inp.runs} (median reported; min and max beside it)",
              "params": str(args.params), "run directory": str(inp.run_dir), "data": str(inp.data_dir),
              "command": "python -m benchmarks.run " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
              "date (UTC)": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
              "total time": f"{time.perf_counter() - t0:.0f} s"}
    md, csv = write_report(args.out, figures, machine(), header, date)
    print(f"benchmarks: wrote {md} and {csv}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
