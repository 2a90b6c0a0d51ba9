"""Figure 5: end to end - each stage's wall time and peak memory, and how the total grows.

* Per stage: Snakemake's benchmark files of the default pipeline run (wall seconds, peak
  resident memory, CPU seconds).
* With model size (resnet8 -> resnet20 -> mobilenetv2): a full pipeline per model is too
  long for a benchmark, so the per-model costs that drive the stages are measured as proxies:
  a plain FP32 training step (pretrain), the supernet fairness step (adapt) and one all-analog
  evaluation batch, program + drift + forward (calibrate, search, evaluate); the measured
  stage times of resnet8 are then scaled by those ratios into an *estimate* of each model's
  pipeline total (calibrate also by the number of analog-capable layers it scores one by one).
* With the number of drift times: the evaluator on the all-analog resnet8 with 1, 3 and 5
  drift times (one programming per repeat, one forward pass of the images per time).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import REPO, Figure, Inputs, interleaved, ratio
from benchmarks.pipeline import STAGES, stage_table

TITLE = "5. End to end: stage costs, growth with model size and with drift times"
TEXT = ("Stage wall time and peak memory from Snakemake's benchmark files of the default run; per-model proxies "
        "(FP32 train step, supernet fairness step, all-analog evaluation batch) for resnet8 -> resnet20 -> "
        "mobilenetv2, with the resnet8 stage times scaled by them into an estimated pipeline total; evaluator time "
        "for 1, 3 and 5 drift times.")
MODELS = ("resnet8", "resnet20", "mobilenetv2")
DRIFT_TIMES = (1.0, 3600.0, 86400.0, 2592000.0, 31536000.0)
DEFAULT_SHAPES = {"fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


def _profile(inp: Inputs):
    from mps.cost_model import load_hardware_profile

    path = Path(inp.params.hardware_profile)
    if not path.is_file() and (REPO / path).is_file():
        path = REPO / path
    return load_hardware_profile(path)


def _images(inp: Inputs, n: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` real training images when the data folder exists (random ones otherwise: cost only)."""
    if inp.data_dir.is_dir():
        from mps.stages.common import load_splits

        x, y = load_splits(inp.data_dir).train
        if len(x) >= 1:
            reps = -(-n // len(x))
            return x.repeat(reps, 1, 1, 1)[:n], y.repeat(reps)[:n]
    g = torch.Generator().manual_seed(inp.params.seed)
    return torch.randn((n, *shape), generator=g), torch.randint(0, 10, (n,), generator=g)


def model_costs(inp: Inputs, fig: Figure, stages: dict[str, dict[str, float]]) -> None:
    from benchmarks.throughput import drift_evaluation
    from mps.models import build_model
    from mps.stages.adapt import fair_step
    from mps.supernet import convert_to_supernet, extract
    from mps.training import sgd

    params = inp.params
    shape = DEFAULT_SHAPES.get(params.data.dataset, (1, 28, 28))
    batch = 16 if inp.quick else 128
    x, y = _images(inp, batch, shape)
    shape = tuple(x.shape[1:])
    profile = _profile(inp)
    cfg = params.adapt
    fns, info = {}, {}
    for name in MODELS:
        torch.manual_seed(params.seed)
        model = build_model(name, in_channels=shape[0], num_classes=10, image_size=shape[1])
        plain = build_model(name, in_channels=shape[0], num_classes=10, image_size=shape[1]).train()
        supernet = convert_to_supernet(model, params.space, profile, shape,
                                       {"model_name": name, "model_id": f"{name}@bench", "num_classes": 10})
        analog = extract(supernet, supernet.uniform_mapping("analog"))
        supernet.train()
        opt = sgd(supernet.weight_parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
        gen = torch.Generator().manual_seed(params.seed)
        plain_opt = sgd(plain.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)

        def fp32_step(m=plain, o=plain_opt) -> None:
            o.zero_grad(set_to_none=True)
            F.cross_entropy(m(x), y).backward()
            o.step()

        fns[f"{name} fp32"] = fp32_step
        fns[f"{name} fair"] = lambda s=supernet, o=opt, g=gen: fair_step(s, x, y, o, g, "benchmark")
        fns[f"{name} eval"] = drift_evaluation(analog, x, y, batch, params.seed)
        infos = list(supernet.infos.values())
        info[name] = {"params": sum(i.params for i in infos), "macs": sum(i.macs for i in infos),
                      "layers": len(infos), "analog_layers": sum(1 for a in supernet.allowed.values() if "analog" in a)}
    stats = interleaved(fns, inp.runs, warmup=1)

    base = "resnet8"
    for name in MODELS:
        i = info[name]
        fig.add(f"{name}: size", i["params"], "parameters",
                note=f"{i['macs'] / 1e6:.2f} M MACs/image, {i['layers']} weight layers ({i['analog_layers']} analog-capable)")
        fig.add_stats(f"{name}: FP32 train step (batch {batch})", stats[f"{name} fp32"], "s")
        fig.add_stats(f"{name}: supernet fairness step (batch {batch})", stats[f"{name} fair"], "s")
        fig.add_stats(f"{name}: all-analog eval batch, program + drift + forward (batch {batch})",
                      stats[f"{name} eval"], "s")
        if name == base:
            continue
        r = {kind: ratio(stats[f"{name} {kind}"], stats[f"{base} {kind}"]) for kind in ("fp32", "fair", "eval")}
        fig.add_stats(f"{name} / resnet8: fairness step", r["fair"], "x")
        fig.add_stats(f"{name} / resnet8: eval batch", r["eval"], "x")
        if stages:
            scale = {"pretrain": r["fp32"].median, "adapt": r["fair"].median, "search": r["eval"].median,
                     "evaluate": r["eval"].median,
                     "calibrate": r["eval"].median * i["analog_layers"] / max(1, info[base]["analog_layers"])}
            estimate = sum(row["s"] * scale.get(stage, 1.0) for stage, row in stages.items())
            fig.add(f"{name}: estimated pipeline total", estimate, "s",
                    note="resnet8's measured stage times x the proxy ratios (same params); an estimate, not a run")


def drift_scaling(inp: Inputs, fig: Figure) -> None:
    from mps.evaluation import EvalSet, drift_accuracy_grid
    from mps.supernet import extract, load_supernet

    if inp.missing(inp.supernet_path):
        fig.add("evaluator time vs drift times", "n/a", note=inp.missing(inp.supernet_path))
        return
    supernet, _ = load_supernet(inp.supernet_path)
    model = extract(supernet, supernet.uniform_mapping("analog"))
    n = 64 if inp.quick else 512
    shape = tuple(supernet.meta["input_shape"])
    x, y = _images(inp, n, shape)
    data = EvalSet(x, y, calib_x=None, batch_size=inp.params.evaluate.batch_size, device="cpu")
    counts = (1, 3, 5)
    fns = {k: (lambda k=k: drift_accuracy_grid(model, data, DRIFT_TIMES[:k], 1, inp.params.seed, recalibrate=False))
           for k in counts}
    stats = interleaved(fns, inp.runs, warmup=1)
    for k in counts:
        fig.add_stats(f"evaluator, all-analog resnet8, {k} drift time(s)", stats[k], "s",
                      note=f"{n} images, 1 repeat; times {', '.join(f'{t:g}' for t in DRIFT_TIMES[:k])} s")
    fig.add_stats("5 drift times / 1 drift time", ratio(stats[5], stats[1]), "x",
                  note="~5: evaluation cost is one forward pass per drift time; programming is once per repeat")


def run(inp: Inputs) -> Figure:
    fig = Figure("e2e", TITLE, TEXT)
    stages = stage_table(inp)
    if stages:
        total = sum(row["s"] for row in stages.values())
        for stage in STAGES:
            row = stages.get(stage)
            if row is None:
                fig.add(f"stage {stage}", "n/a", note="no benchmark file")
                continue
            fig.add(f"stage {stage}: wall time", row["s"], "s",
                    note=f"{100 * row['s'] / total:.1f} % of the total; CPU {row.get('cpu_time', float('nan')):.0f} s")
            fig.add(f"stage {stage}: peak memory", row.get("max_rss", float("nan")), "MiB (max RSS)")
        fig.add("pipeline total (sum of stages)", total, "s",
                note=f"{inp.params.data.dataset}/{inp.params.model.name}/s{inp.params.seed}; Snakemake benchmark "
                     f"files in {inp.bench_dir}; stages run one after another, so wall time adds up")
        fig.add("pipeline peak memory (largest stage)", max(r.get("max_rss", 0.0) for r in stages.values()),
                "MiB (max RSS)")
    else:
        fig.add("stage costs", "n/a", note=f"no Snakemake benchmark files under {inp.bench_dir}; fix: run `make run` first")
    model_costs(inp, fig, stages)
    drift_scaling(inp, fig)
    return fig
