"""Figure 7: how stage times and each method's mapping time grow with the network.

Reads the finished runs of a grid over models: the params' own when they sweep
``sweep.models``, otherwise the models profile's (``config/params-models.yaml``, so that ``make
bench`` after a models sweep shows it).  Per model its weight layers and MACs (one traced forward pass, as the supernet
records them), each stage's wall time from Snakemake's benchmark files, and each method's
mapping time as the run's search stage recorded it (``search.json``: pretrained model to
Pareto set, training included).  Nothing is re-measured: a default-budget run of the larger
models takes hours on 2 cores.  Run it on the models profile::

    snakemake --cores 2 --configfile config/params-models.yaml
    python -m benchmarks.run --params config/params-models.yaml --only growth

The paper's search_time.csv gives, relative to MPS on ResNet8, MPS 1.0 / 1.6, LionHEART
5.8 / 6.1 and ODiMo 3.0 / 3.8 on ResNet8 / ResNet20: LionHEART retrains once per layer, MPS
adapts one supernet.  Stage times per weight layer are compared with ResNet8's; a stage more
than 3 times ResNet8's per layer is flagged in the note.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from benchmarks.common import REPO, Figure, Inputs
from benchmarks.pipeline import read_stage

TITLE = "7. Growth with the network: stage and mapping times per model"
TEXT = ("Per model of a grid over models (the params' `sweep.models`, else config/params-models.yaml's): weight layers, MACs per image, each stage's wall time "
        "(Snakemake benchmark files) and each method's mapping time (search stage's record; one run each, "
        "same machine). Ratios to ResNet8 are per weight layer for stages and absolute for mapping times; "
        "the paper's search_time.csv: MPS 1.0 / 1.6, LionHEART 5.8 / 6.1, ODiMo 3.0 / 3.8 on ResNet8 / ResNet20.")
STAGES = ("pretrain", "adapt", "calibrate", "search", "evaluate")
METHODS = ("mps", "mpaas", "lionheart", "odimo")
REFERENCE = "resnet8"
# search_time.csv of the paper, relative to MPS on ResNet8
PAPER_MAPPING_TIME = {"resnet8": {"mps": 1.0, "lionheart": 5.8, "odimo": 3.0},
                      "resnet20": {"mps": 1.6, "lionheart": 6.1, "odimo": 3.8}}
SLOW_PER_LAYER = 3.0


MODELS_PROFILE = REPO / "config" / "params-models.yaml"


def model_grid(inp: Inputs) -> tuple[list[str], Path, Path, str, str]:
    """The models, their runs' folder (``<out>/<dataset>``), the Snakemake benchmark folder, the
    data set and the seed folder (``s<seed>``) of the grid to read."""
    params, runs, bench = inp.params, inp.run_dir.parent.parent, inp.bench_dir
    if not params.sweep.models and MODELS_PROFILE.is_file():
        from mps.config import load_params

        params = load_params(MODELS_PROFILE)
        root = Path(params.out_dir)
        root = root if root.is_absolute() else REPO / root
        runs, bench = root / params.data.dataset, root / "benchmarks"
    models = list(params.sweep.models) or [params.model.name]
    return models, runs, bench, params.data.dataset, f"s{params.seed}"


def mapping_seconds(run_dir: Path) -> dict[str, float]:
    path = run_dir / "search" / "search.json"
    if not path.is_file():
        return {}
    methods = json.loads(path.read_text()).get("methods", {})
    return {m: float(methods[m]["mapping_seconds"]) for m in METHODS
            if m in methods and methods[m].get("mapping_seconds") is not None}


def collect(inp: Inputs) -> tuple[dict[str, dict], Path]:
    """Model -> layers, MACs, stage seconds and mapping seconds (absent values left out), and the
    folder the runs were looked for in."""
    from mps.stages.common import architecture_layers

    models, runs, bench, dataset, seed = model_grid(inp)
    out = {}
    for model in models:
        infos = architecture_layers(model, dataset)
        stages = {s: row["s"] for s in STAGES
                  if (row := read_stage(bench / s / f"{dataset}-{model}-{seed}.tsv")) is not None}
        out[model] = {"layers": len(infos), "macs": sum(i.macs for i in infos.values()), "stages": stages,
                      "mapping": mapping_seconds(runs / model / seed)}
    return out, runs


def plot(data: dict[str, dict], path: Path) -> Path:
    """Stage wall time and mapping time per model (models in order of MACs, labelled with their
    weight layers and MACs), one line per stage / method, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted(data, key=lambda m: data[m]["macs"])
    labels = [f"{m}\n{data[m]['layers']} layers\n{data[m]['macs'] / 1e6:.1f} M MACs" for m in models]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, key, names, title in ((axes[0], "stages", STAGES, "stage wall time"),
                                  (axes[1], "mapping", METHODS, "mapping time (training included)")):
        for name in names:
            pts = [(i, data[m][key][name]) for i, m in enumerate(models) if name in data[m][key]]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=name)
        ax.set_xticks(range(len(models)), labels, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("seconds")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run(inp: Inputs) -> Figure:
    fig = Figure("growth", TITLE, TEXT)
    data, runs = collect(inp)
    if not any(d["stages"] or d["mapping"] for d in data.values()):
        fig.skip(f"no finished run of {', '.join(data)} under {runs}; "
                 "fix: run `snakemake --cores 2 --configfile config/params-models.yaml` first")
        return fig
    ref = data.get(REFERENCE)
    for model, d in data.items():
        fig.add(f"{model}: weight layers", d["layers"], "layers", note=f"{d['macs'] / 1e6:.2f} M MACs per image")
        for stage in STAGES:
            if stage not in d["stages"]:
                fig.add(f"{model}: {stage} wall time", "n/a", note=f"no benchmark file for {stage}")
                continue
            seconds = d["stages"][stage]
            fig.add(f"{model}: {stage} wall time", seconds, "s")
            if ref and model != REFERENCE and stage in ref["stages"]:
                per_layer = (seconds / d["layers"]) / (ref["stages"][stage] / ref["layers"])
                flag = f"more than {SLOW_PER_LAYER:g}x ResNet8 per layer" if per_layer > SLOW_PER_LAYER else ""
                fig.add(f"{model}: {stage} time per weight layer / ResNet8's", per_layer, "x", note=flag)
        paper = PAPER_MAPPING_TIME.get(model, {})
        for method, seconds in d["mapping"].items():
            fig.add(f"{model}: {method} mapping time", seconds, "s")
            if method != "mps" and "mps" in d["mapping"]:
                paper_ratio = (paper[method] / paper["mps"]) if method in paper else None
                fig.add(f"{model}: {method} / mps mapping time", seconds / d["mapping"]["mps"], "x",
                        note=f"paper {paper_ratio:.2f}" if paper_ratio else "")
        if ref and model != REFERENCE and "mps" in d["mapping"] and "mps" in ref["mapping"]:
            fig.add(f"{model}: mps mapping time / ResNet8's", d["mapping"]["mps"] / ref["mapping"]["mps"], "x",
                    note=f"paper {paper['mps']:.1f}" if "mps" in paper else "")
    if inp.out_dir is not None and len(data) > 1:
        date = dt.datetime.now(dt.timezone.utc).date().isoformat()
        path = plot(data, Path(inp.out_dir) / f"{date}-growth.png")
        fig.images.append((path.name, "stage and mapping times per model, in order of MACs"))
    return fig
