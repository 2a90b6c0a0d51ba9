"""Figure 3: how fast analog evaluation is, where its time goes, and a speed-up that keeps the physics.

* Throughput (images/s) of drift evaluation - program the tiles, drift to one day, forward
  every image - of the all-analog ResNet sub-network, against the same network's FP32 forward
  and against a straightforward aihwkit use (``convert_to_analog(model, InferenceRPUConfig())``,
  default settings, batch 128, program + drift + forward).  Measured round-robin in this
  process, with the pipeline's default process settings.
* A torch profile of one all-analog forward, grouped by what the operators do.
* The evaluate stage's share of the whole pipeline (Snakemake benchmark files).
* Speed-up: the pipeline's own evaluator (``drift_accuracy_grid``) run in separate processes
  with different process settings (malloc configuration, batch size, threads) on the same
  seeds; a variant counts as a drop-in speed-up only if its accuracies are identical.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from typing import Callable

import torch

from benchmarks.common import REPO, Figure, Inputs, Stats, interleaved, ratio
from benchmarks.pipeline import stage_table

TITLE = "3. Analog evaluation throughput, where the time goes, and a speed-up"
TEXT = ("Images/s of drift evaluation (program + drift to 1 day + forward) of the all-analog sub-network vs its "
        "FP32 forward and vs straightforward aihwkit (`convert_to_analog(model, InferenceRPUConfig())`, batch 128); "
        "torch-profile shares of one all-analog forward; the evaluate stage's share of the pipeline; and process "
        "settings for the pipeline's own evaluator, each in a fresh process on the same seeds (identical = same "
        "accuracy grid to the last bit).")
DRIFT_T = 86400.0

# profiler operator -> group (self CPU time); anything else is "other"
PROFILE_GROUPS = {
    "aten::im2col": "im2col (unfold)",
    "aten::copy_": "copies (copy_/contiguous)",
    "aten::abs": "input/output quantization & noise management",
    "aten::max": "input/output quantization & noise management",
    "aten::amax": "input/output quantization & noise management",
    "aten::where": "input/output quantization & noise management",
    "aten::round": "input/output quantization & noise management",
    "aten::clamp": "input/output quantization & noise management",
    "aten::clamp_": "input/output quantization & noise management",
    "aten::div": "input/output quantization & noise management",
    "aten::le": "input/output quantization & noise management",
    "aten::ge": "input/output quantization & noise management",
    "aten::all": "input/output quantization & noise management",
    "aten::mul_": "input/output quantization & noise management",
    "UniformQuantize": "input/output quantization & noise management",
    "aten::normal_": "output noise (normal_)",
    "aten::mm": "matrix products (mm/matmul)",
    "aten::matmul": "matrix products (mm/matmul)",
    "aten::addmm": "matrix products (mm/matmul)",
}


def _all_analog(inp: Inputs):
    """(supernet, all-analog model with BN recalibrated, fp32 model, eval images, labels)."""
    from mps.evaluation import recalibrate_batchnorm
    from mps.stages.common import eval_set, load_splits
    from mps.stages.pretrain import load_pretrained
    from mps.supernet import extract, load_supernet, realize

    supernet, ckpt = load_supernet(inp.supernet_path)
    splits = load_splits(inp.data_dir)
    n = 128 if inp.quick else 1024
    data = eval_set(splits, "test", n, inp.params.seed, calib_batches=1 if inp.quick else 8, device="cpu")
    analog = extract(supernet, supernet.uniform_mapping("analog"))
    torch.manual_seed(inp.params.seed)
    recalibrate_batchnorm(analog, data.calib_x, data.calib_batches, data.calib_batch_size)
    pretrained, pre_ckpt = load_pretrained(inp.pretrained_path)
    fp32 = realize(copy.deepcopy(pretrained), {name: "fp32" for name in supernet.infos}, None,
                   tuple(pre_ckpt["image_shape"])).eval()
    return supernet, analog, fp32, pretrained.eval(), data


def drift_evaluation(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int,
                     t: float = DRIFT_T, engine: str = "aihwkit") -> Callable[[], float]:
    """program + drift + forward of every image, as the evaluator does per repeat and time, with the
    analog forward of ``engine`` (mps.analog.engine: ``fast`` or aihwkit's own)."""
    from mps.analog.engine import use_engine
    from mps.analog.tiles import drift_analog, program_analog, reset_programming
    from mps.training import evaluate_accuracy

    def step() -> float:
        torch.manual_seed(seed)
        reset_programming(model)
        program_analog(model)
        drift_analog(model, t)
        with use_engine(engine):
            return evaluate_accuracy(model, x, y, batch_size)
    return step


def all_analog_resnet20(image_shape: tuple[int, ...], num_classes: int) -> torch.nn.Module:
    """An all-analog ResNet20 (untrained weights, BN at init) for the engine speed rows: speed does
    not depend on training, only on the shapes and the tile configuration."""
    from mps.cost_model import load_hardware_profile
    from mps.models import build_model
    from mps.supernet import realize

    model = build_model("resnet20", image_shape[0], num_classes, image_shape[-1])
    profile = load_hardware_profile(REPO / "hardware" / "pcm_default.yaml")
    return realize(model, "analog", profile, image_shape).eval()


def engine_rows(fig: Figure, inp: Inputs, models: dict[str, torch.nn.Module], x: torch.Tensor, y: torch.Tensor,
                bs: int, seed: int) -> None:
    """Images/s of program + drift + forward with the fast engine vs aihwkit's forward, side by side
    (round-robin, median of the runs), the speed-up, and a profile of the fast forward."""
    n = len(x)
    for name, model in models.items():
        fns = {e: drift_evaluation(model, x, y, bs, seed, engine=e) for e in ("aihwkit", "fast")}
        stats = interleaved(fns, inp.runs, warmup=1)
        acc = {e: fn() for e, fn in fns.items()}
        for e in fns:
            fig.add_stats(f"all-analog {name}: program + drift + forward, engine {e} (batch {bs})",
                          Stats([n / s for s in stats[e].values]), "images/s",
                          note=f"{n} images; accuracy {acc[e]:.2f} % at 1 d")
        fig.add_stats(f"all-analog {name}: fast engine speed-up (aihwkit time / fast time)",
                      ratio(stats["aihwkit"], stats["fast"]), "x", note="goal >= 10x; same seeds, same draws")
        from mps.analog.engine import use_engine

        with use_engine("fast"):
            shares = profile_shares(model, x[: 64 if inp.quick else 256])
        for group, share in shares.items():
            fig.add(f"profile of {name} fast-engine forward: {group}", share, "% self CPU")


def aihwkit_straightforward(pretrained: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int,
                            t: float = DRIFT_T) -> Callable[[], float]:
    """The textbook aihwkit inference flow with default settings, batch 128."""
    from aihwkit.nn.conversion import convert_to_analog
    from aihwkit.simulator.configs import InferenceRPUConfig

    from mps.training import evaluate_accuracy

    model = convert_to_analog(copy.deepcopy(pretrained), InferenceRPUConfig()).eval()

    def step() -> float:
        torch.manual_seed(seed)
        model.program_analog_weights()
        model.drift_analog_weights(t)
        return evaluate_accuracy(model, x, y, 128)
    return step


def profile_shares(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Share (%) of self CPU time per operator group in one forward of ``x``."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        model(x[:8])  # warm
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x)
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        group = PROFILE_GROUPS.get(event.key, "other")
        totals[group] = totals.get(group, 0.0) + float(event.self_cpu_time_total)
    whole = sum(totals.values()) or 1.0
    return {g: 100.0 * v / whole for g, v in sorted(totals.items(), key=lambda kv: -kv[1])}


# --------------------------------------------------------------------------- speed-up variants
def variants(inp: Inputs) -> dict[str, list[str]]:
    """Name -> extra arguments of ``benchmarks.evalspeed``; the first is the pipeline's default."""
    bs = inp.params.evaluate.batch_size
    out = {f"pipeline default (batch {bs}, {inp.threads} threads, glibc malloc defaults)":
           ["--allocator", "default", "--batch-size", str(bs)],
           f"tuned malloc (batch {bs}, {inp.threads} threads)": ["--allocator", "tuned", "--batch-size", str(bs)]}
    if not inp.quick:
        out[f"tuned malloc, batch 128 ({inp.threads} threads)"] = ["--allocator", "tuned", "--batch-size", "128"]
        out[f"default malloc, batch 128 ({inp.threads} threads)"] = ["--allocator", "default", "--batch-size", "128"]
        if inp.threads > 1:
            out[f"tuned malloc, batch {bs}, 1 thread"] = ["--allocator", "tuned", "--batch-size", str(bs),
                                                          "--threads", "1"]
    return out


def run_variant(inp: Inputs, extra: list[str]) -> dict:
    """The evaluator in a fresh process: test subset x the evaluate stage's drift times, 1 repeat."""
    cfg = inp.params.evaluate
    times = cfg.drift_times if not inp.quick else [1.0, DRIFT_T]
    return run_process(inp, ["--examples", "64" if inp.quick else "512",
                             "--calib-batches", "1" if inp.quick else str(cfg.bn_recalibration_batches),
                             "--drift-times", ",".join(f"{t:g}" for t in times), "--repeats", "1", "--runs", "1",
                             *extra])


def run_process(inp: Inputs, extra: list[str]) -> dict:
    """``python -m benchmarks.evalspeed`` with the run's supernet, data, seed and threads; its JSON."""
    args = [sys.executable, "-m", "benchmarks.evalspeed", "--supernet", str(inp.supernet_path),
            "--data-dir", str(inp.data_dir), "--seed", str(inp.params.seed), "--threads", str(inp.threads), *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    for key in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"):
        env.pop(key, None)  # the variant decides, not the caller's environment
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=3600)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"benchmarks.evalspeed {' '.join(extra)} failed: {tail[0]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def speedup_rows(fig: Figure, inp: Inputs) -> None:
    names = variants(inp)
    results: dict[str, list[dict]] = {name: [] for name in names}
    for _ in range(inp.runs):  # round-robin over fresh processes
        for name, extra in names.items():
            results[name].append(run_variant(inp, extra))
    base_name = next(iter(names))
    base_grid = results[base_name][0]["grids"][0]
    seconds = {name: Stats([r["seconds"][0] for r in rs]) for name, rs in results.items()}
    first = results[base_name][0]
    fig.add("speed-up setting: images per evaluator call", first["images"], "images",
            note="BN recalibration + test images x drift times, 1 repeat; fresh all-analog model per call")
    for name, rs in results.items():
        grids = [r["grids"][0] for r in rs]
        stable = all(g == grids[0] for g in grids)
        identical = stable and grids[0] == base_grid
        if identical:
            verdict = "identical accuracies to the default"
        else:
            diff = max(abs(a - b) for ra, rb in zip(grids[0], base_grid) for a, b in zip(ra, rb))
            verdict = f"NOT identical: accuracies differ by up to {diff:.2f} points (other random draws)"
        fig.add_stats(f"evaluator: {name}", seconds[name], "s", note=verdict)
        fig.add(f"evaluator: {name}: throughput", first["images"] / seconds[name].median, "images/s")
        fig.add(f"evaluator: {name}: page faults, kernel time", rs[-1]["minor_faults"], "minor faults",
                note=f"kernel {rs[-1]['sys_seconds']:.1f} s, user {rs[-1]['user_seconds']:.1f} s, "
                     f"peak RSS {rs[-1]['max_rss_mb']:.0f} MiB (process)")
        if name != base_name:
            fig.add_stats(f"evaluator speed-up: {name}", ratio(seconds[base_name], seconds[name]), "x",
                          note="default time / this time, per round")


# --------------------------------------------------------------------------- figure
def run(inp: Inputs) -> Figure:
    fig = Figure("throughput", TITLE, TEXT)
    reason = inp.missing(inp.supernet_path, inp.pretrained_path, inp.data_dir)
    if reason:
        fig.skip(reason)
        _stage_share(fig, inp)
        return fig
    _, analog, fp32, pretrained, data = _all_analog(inp)
    x, y, seed = data.x, data.y, inp.params.seed
    bs = inp.params.evaluate.batch_size

    def fp32_forward() -> float:
        from mps.training import evaluate_accuracy

        return evaluate_accuracy(fp32, x, y, bs)

    fns = {"analog": drift_evaluation(analog, x, y, bs, seed), "fp32": fp32_forward,
           "aihwkit": aihwkit_straightforward(pretrained, x, y, seed)}
    stats = interleaved(fns, inp.runs, warmup=1)
    n = len(x)
    rate = {k: Stats([n / s for s in v.values]) for k, v in stats.items()}
    accuracy = {k: fn() for k, fn in fns.items()}
    fig.add_stats(f"all-analog sub-network: program + drift + forward (batch {bs})", rate["analog"], "images/s",
                  note=f"{n} test images; accuracy {accuracy['analog']:.2f} % at 1 d")
    fig.add_stats(f"same network FP32 forward (batch {bs})", rate["fp32"], "images/s",
                  note=f"accuracy {accuracy['fp32']:.2f} %")
    fig.add_stats("straightforward aihwkit: convert_to_analog(InferenceRPUConfig()), batch 128", rate["aihwkit"],
                  "images/s", note=f"pretrained model, default aihwkit config; accuracy {accuracy['aihwkit']:.2f} %")
    fig.add_stats("analog evaluation slowdown vs FP32 forward", ratio(stats["analog"], stats["fp32"]), "x")
    fig.add_stats("pipeline analog evaluation vs straightforward aihwkit (time ratio)",
                  ratio(stats["analog"], stats["aihwkit"]), "x", note="< 1: the pipeline's path is faster")

    shares = profile_shares(analog, x[: 64 if inp.quick else 256])
    for group, share in shares.items():
        fig.add(f"profile of all-analog forward: {group}", share, "% self CPU")

    resnet20 = all_analog_resnet20(tuple(x.shape[1:]), int(y.max()) + 1)
    engine_rows(fig, inp, {"resnet8": analog, "resnet20": resnet20}, x, y, bs, seed)

    _stage_share(fig, inp)
    speedup_rows(fig, inp)
    return fig


def _stage_share(fig: Figure, inp: Inputs) -> None:
    stages = stage_table(inp)
    if "evaluate" in stages:
        total = sum(row["s"] for row in stages.values())
        fig.add("evaluate stage share of the pipeline", 100.0 * stages["evaluate"]["s"] / total, "% of wall time",
                note=f"evaluate {stages['evaluate']['s']:.0f} s of {total:.0f} s ({len(stages)} stages, "
                     f"Snakemake benchmark files in {inp.bench_dir})")
    else:
        fig.add("evaluate stage share of the pipeline", "n/a", note=f"no Snakemake benchmark files in {inp.bench_dir}")
