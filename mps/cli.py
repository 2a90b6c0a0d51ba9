"""Command line: ``mps <stage> --params params.yaml [paths...]``.

One sub-command per pipeline stage, called identically by the Snakemake rules and the DVC
stages.  Every sub-command: loads and validates params (exit 2 on a config error, before
any work), applies the wildcard overrides (``--model``, ``--dataset``, ``--seed``), sets
seeds/threads, opens the stage's MLflow run, and turns SIGTERM into a clean interruption
(exit 130) that leaves no partial output under a final name.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

from mps.config import ConfigError, Params, check_user_model, load_params

ExitOK, ExitConfig, ExitNumeric, ExitInterrupted = 0, 2, 3, 130


def work_dir_for(out: Path, explicit: str | None = None) -> Path:
    """Resumable state lives outside declared outputs, which Snakemake and DVC delete before a rerun."""
    if explicit:
        return Path(explicit)
    return Path(".mps-work") / str(out).lstrip("/")


# --------------------------------------------------------------------------- stage bodies
# Each body maps CLI paths onto the stage module's run(); imports are lazy so `mps --help`
# and a config error answer fast.
def _prepare_data(params: Params, args: argparse.Namespace, tracker) -> None:
    from mps.stages.prepare_data import run

    run(params, Path(args.out), tracker)


def _pretrain(params: Params, args: argparse.Namespace, tracker) -> None:
    from mps.stages.pretrain import run

    run(params, Path(args.data), Path(args.out), work_dir_for(Path(args.out), args.work_dir), tracker)


def _adapt(params: Params, args: argparse.Namespace, tracker) -> None:
    from mps.stages.adapt import run

    run(params, Path(args.data), Path(args.pretrained), Path(args.out),
        work_dir_for(Path(args.out), args.work_dir), tracker)


def _calibrate(params: Params, args: argparse.Namespace, tracker) -> None:
    from mps.stages.calibrate import run

    run(params, Path(args.data), Path(args.supernet), Path(args.out), tracker)


def _search(params: Params, args: argparse.Namespace, tracker) -> None:
    from mps.stages.search import run

    run(params, Path(args.data), Path(args.supernet), Path(args.pretrained),
        Path(args.sensitivity) if args.sensitivity else None, Path(args.out),
        work_dir_for(Path(args.out), args.work_dir), tracker)


def _evaluate(params: Params, args: argparse.Namespace, tracker) -> None:
    from mps.stages.evaluate import run

    run(params, Path(args.data), Path(args.supernet), Path(args.pretrained), Path(args.mappings),
        Path(args.out), work_dir_for(Path(args.out), args.work_dir), tracker)


def _report(params: Params, args: argparse.Namespace, tracker) -> None:
    from mps.stages.report import run

    run(params, Path(args.evaluate), Path(args.search), Path(args.calibrate), Path(args.out), tracker)


def _aggregate(params: Params, args: argparse.Namespace, tracker) -> None:
    from mps.stages.aggregate import run

    run(params, [Path(p) for p in args.results], Path(args.out), tracker)


def _ablation(params: Params, args: argparse.Namespace, tracker) -> None:
    from mps.stages.ablation import run

    run(params, [Path(p) for p in args.results], Path(args.out), tracker)


def _opt(flag: str, help_text: str, required: bool = True) -> tuple[str, dict]:
    return flag, {"required": required, "help": help_text}


_OUT = _opt("--out", "output folder")
_DATA = _opt("--data", "prepared data folder (mps prepare-data)")
_WORK = _opt("--work-dir", "resume-checkpoint folder (default .mps-work/<out>)", required=False)
_SUPERNET = _opt("--supernet", "adapted supernet checkpoint (mps adapt)")
_PRETRAINED = _opt("--pretrained", "pretrained model checkpoint (mps pretrain)")

STAGES: dict[str, tuple[str, list[tuple[str, dict]], Callable[..., None]]] = {
    "prepare-data": ("read the data set, split it, write tensors and a manifest", [_OUT], _prepare_data),
    "pretrain": ("train the FP32 model", [_DATA, _OUT, _WORK], _pretrain),
    "adapt": ("build and adapt the supernet (fairness training, then noise ramp + QAT)",
              [_DATA, _PRETRAINED, _OUT, _WORK], _adapt),
    "calibrate": ("per-layer analog sensitivity under programming noise and drift",
                  [_DATA, _SUPERNET, _OUT], _calibrate),
    "search": ("rank-preserving alpha search: a Pareto set of mappings, plus the baselines",
               [_DATA, _SUPERNET, _PRETRAINED, _opt("--sensitivity", "sensitivity table (mps calibrate; needed by the greedy baseline)",
                                                           required=False),
                _OUT, _WORK], _search),
    "evaluate": ("accuracy of every mapping under PCM noise and drift, and its hardware costs",
                 [_DATA, _SUPERNET, _PRETRAINED, _opt("--mappings", "mapping folder (mps search)"), _OUT, _WORK],
                 _evaluate),
    "report": ("results table, plots and the Markdown/HTML report",
               [_opt("--evaluate", "evaluate folder"), _opt("--search", "search folder"),
                _opt("--calibrate", "calibrate folder"), _OUT], _report),
    "ablation": ("the ablation table: adaptation variants x seeds (after `snakemake ablation`)",
                 [("--results", {"required": True, "nargs": "+", "help": "the ablation runs' evaluate results.csv"}),
                  _OUT], _ablation),
    "aggregate": ("one table across the sweep grid: mean ± std over seeds",
                  [("--results", {"required": True, "nargs": "+", "help": "evaluate results.csv files"}), _OUT],
                  _aggregate),
}


def _parse_set(values: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value; fix: e.g. --set pretrain.epochs=2")
        out[key] = yaml.safe_load(raw)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mps", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, (help_text, _) in TOOLS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    for name, (help_text, arguments, _) in STAGES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
        p.add_argument("--model", help="override model.name (a Snakemake wildcard)")
        p.add_argument("--dataset", help="override data.dataset")
        p.add_argument("--seed", type=int, help="override seed")
        p.add_argument("--threads", type=int, help="torch threads (default: params.threads or all cores)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override any params key, e.g. --set pretrain.epochs=2")
        for flag, kwargs in arguments:
            p.add_argument(flag, **kwargs)
    return parser


def load_stage_params(args: argparse.Namespace) -> Params:
    overrides = _parse_set(args.set)
    if args.model:
        overrides["model.name"] = args.model
    if args.dataset:
        overrides["data.dataset"] = args.dataset
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.threads is not None:
        overrides["threads"] = args.threads
    params = load_params(args.params, overrides)
    preflight(args.stage, params)
    return params


def preflight(stage: str, params: Params) -> None:
    """Checks that need more than the schema, done before any work or any write."""
    from mps.cost_model import load_hardware_profile

    check_user_model(params.model.name)
    for name in params.sweep.models:
        try:
            check_user_model(name)
        except ConfigError as exc:
            raise ConfigError(f"sweep.models: {str(exc).removeprefix('model.name: ')}") from None
    load_hardware_profile(params.hardware_profile)
    check_space_names(params)
    if stage == "prepare-data":
        root = params.data.resolved_root()
        if not root.is_dir():
            raise ConfigError(f"data.root: folder {root} does not exist; fix: set data.root to the data set's folder"
                              + (" or install dataset-fashion-mnist (make setup)" if params.data.dataset == "fashion-mnist" else ""))


def check_space_names(params: Params) -> None:
    """Every name in ``space`` points at something: each operator is registered, and each
    override glob matches a weight layer (Conv2d/Linear) of at least one model the params run
    (``model.name`` and ``sweep.models``); otherwise a typo would silently change nothing."""
    from mps.supernet.operators import OPERATORS

    space = params.space
    lists = [("space.operators", space.operators), ("space.first_layer", space.first_layer),
             ("space.last_layer", space.last_layer)]
    lists += [(f"space.overrides[{pattern!r}]", ops) for pattern, ops in space.overrides.items()]
    known = sorted(OPERATORS)
    for key, ops in lists:
        for op in ops or []:
            if op not in OPERATORS:
                raise ConfigError(f"{key}: unknown operator {op!r}; fix: use one of {', '.join(known)}")
    if not space.overrides:
        return
    import fnmatch

    from torch import nn

    from mps.data import _IMAGE_SHAPES
    from mps.models import build_model

    channels, size, _ = _IMAGE_SHAPES[params.data.dataset]
    models = dict.fromkeys([params.model.name, *params.sweep.models])
    names: list[str] = []
    for model in models:
        net = build_model(model, in_channels=channels, num_classes=10, image_size=size)
        names += [n for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for pattern in space.overrides:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise ConfigError(f"space.overrides: glob {pattern!r} matches no Conv2d/Linear layer of "
                              f"{', '.join(models)} (layers: {', '.join(names[:6])}, ...); fix: correct the glob")


def _select(argv: list[str]) -> int:
    from mps.select import select_main

    return select_main(argv)


def _compare(argv: list[str]) -> int:
    from mps.compare import compare_main

    return compare_main(argv)


def recost_mappings(mappings_dir: Path, profile_paths: list[str], supernet_path: str | None = None):
    """``mps costs``' table: every mapping file of ``mappings_dir`` under every profile (each with
    its ``per_active`` variant, :func:`mps.cost_model.profile_variants`).  Layer tables come from
    tracing the mapping's architecture (``model_id`` = ``<model>@<data set>``), or from the supernet
    checkpoint when one is given (needed for MPAAS ``analog_wide`` layers, whose widths it holds)."""
    from mps.cost_model import CostedMapping, costs_table, load_hardware_profile, profile_variants
    from mps.supernet.mapping import load_mapping, mapping_files

    profiles: dict[str, Any] = {}
    for path in profile_paths:
        profiles.update(profile_variants(load_hardware_profile(path)))  # a bad constant stops here (exit 2)
    mappings = [load_mapping(f) for f in mapping_files(mappings_dir)]
    supernet = None
    if supernet_path:
        from mps.supernet import load_supernet

        supernet, _ = load_supernet(supernet_path)
    traced: dict[str, list] = {}
    entries = []
    for m in mappings:
        if supernet is not None:
            if supernet.meta.get("model_id") != m.model_id:
                raise ConfigError(f"mapping {m.name} is for {m.model_id!r}, the supernet for "
                                  f"{supernet.meta.get('model_id')!r}; "
                                  "fix: pass the supernet the mappings were searched on")
            layers = supernet.layer_infos(m.layers)
        else:
            if any(op == "analog_wide" for op in m.layers.values()):
                raise ConfigError(f"mapping {m.name} has MPAAS analog_wide layers, whose widths only the supernet "
                                  "holds; fix: add --supernet <adapt folder>/supernet.pt")
            if m.model_id not in traced:
                from mps.stages.common import architecture_layers

                model_name, _, dataset = m.model_id.rpartition("@")
                traced[m.model_id] = list(architecture_layers(model_name, dataset).values())
            layers = traced[m.model_id]
        entries.append(CostedMapping(m.model_id, m.method, m.name, layers, m.layers))
    return costs_table(entries, profiles)


def _costs(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="mps costs", description="Re-cost existing mapping files under other hardware profiles (no model run); "
        "writes one CSV row per mapping and profile, the profile's per_active variant included.")
    parser.add_argument("--mappings", required=True, help="folder of mapping files (mps search's mappings/)")
    parser.add_argument("--profile", required=True, action="append", metavar="FILE",
                        help="hardware profile YAML; repeat for several (e.g. hardware/*.yaml)")
    parser.add_argument("--out", default="costs.csv", help="CSV to write (default costs.csv)")
    parser.add_argument("--supernet", help="supernet checkpoint: needed for MPAAS mappings with analog_wide layers")
    args = parser.parse_args(argv)
    try:
        table = recost_mappings(Path(args.mappings), args.profile, args.supernet)
    except ConfigError as exc:
        print(f"mps costs: error: {exc}", file=sys.stderr)
        return ExitConfig
    from mps.artifacts import atomic_write_text

    atomic_write_text(args.out, table.to_csv(index=False))
    wide = table.pivot_table(index="Mapping", columns="Profile", values="Energy_uJ_per_sample", sort=False)
    print("energy, µJ per sample:")
    print(wide.round(2).to_string())
    print(f"mps costs: {len(table)} rows ({table['Mapping'].nunique()} mappings x {table['Profile'].nunique()} "
          f"profiles) -> {args.out}")
    return ExitOK


def _estimate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="mps estimate", description="Expected wall seconds per stage of a run of these params on this machine "
        "(work counted from the params x one FP32 training step measured here); JSON on stdout.")
    parser.add_argument("--params", default="params.yaml", help="params file")
    parser.add_argument("--model", action="append", default=None,
                        help="estimate this model instead of model.name (repeatable: a sweep's models; the JSON is "
                             "then {model: {stage: seconds}})")
    args = parser.parse_args(argv)
    from mps.config import load_params
    from mps.runtime import set_threads
    from mps.stage_time import estimate_seconds

    try:
        params = load_params(args.params)
        per_model = {m: load_params(args.params, {"model.name": m}) for m in args.model or []}
    except ConfigError as exc:
        print(f"mps estimate: error: {exc}", file=sys.stderr)
        return ExitConfig
    set_threads(params.threads)

    def seconds(p) -> dict[str, float]:
        return {stage: round(s, 1) for stage, s in estimate_seconds(p).items()}

    print(json.dumps({m: seconds(p) for m, p in per_model.items()} if args.model else seconds(params)))
    return ExitOK


def _pipeline(argv: list[str]) -> int:
    from mps.tracking import pipeline_main

    return pipeline_main(argv)


# Commands that are not pipeline stages (no params file, no MLflow run of their own).
TOOLS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "select": ("pick one mapping from a Pareto set by constraint", _select),
    "compare": ("tabulate MLflow runs across pipeline runs (models, seeds, methods)", _compare),
    "costs": ("re-cost mapping files under other hardware profiles (CSV), no model run", _costs),
    "pipeline": ("open/close a pipeline's MLflow parent run (a workflow engine's start/end hooks)", _pipeline),
    "estimate": ("expected seconds per stage of these params on this machine (the progress line's start)", _estimate),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOLS:
        return TOOLS[argv[0]][1](argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    _, _, body = STAGES[args.stage]
    from mps.runtime import Interrupted, set_threads, sigterm_as_interrupt, tune_glibc_malloc
    from mps.training import NumericalError

    try:
        params = load_stage_params(args)  # bad input fails here, before any work or setting
        tune_glibc_malloc()  # before the stage allocates: bit-identical results, far fewer page faults
        set_threads(params.threads)
        from mps.tracking import stage_run

        tags = {"mps.model": params.model.name, "mps.dataset": params.data.dataset, "mps.seed": params.seed}
        from mps.analog.engine import use_engine
        from mps.artifacts import output_dir_guard

        with output_dir_guard(getattr(args, "out", None)), sigterm_as_interrupt(), use_engine(params.analog_engine), \
                stage_run(args.stage, params.digest(), params.mlflow.experiment, tags) as tracker:
            body(params, args, tracker)
    except NumericalError as exc:
        print(f"mps {args.stage}: error: {exc}", file=sys.stderr)
        return ExitNumeric
    except ConfigError as exc:
        print(f"mps {args.stage}: error: {exc}", file=sys.stderr)
        return ExitConfig
    except (KeyboardInterrupt, Interrupted):
        print(f"mps {args.stage}: interrupted; rerun the same command to resume", file=sys.stderr)
        return ExitInterrupted
    return ExitOK


if __name__ == "__main__":
    sys.exit(main())
