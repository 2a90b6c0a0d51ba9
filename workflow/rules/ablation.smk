# `snakemake ablation`: the paper's ablation of the adaptation (params `ablation`); not part of
# the default run. Every variant x seed adapts from the run's pretrained model; each adapted
# supernet is searched `ablation.search_draws` times (MPS with draw seeds 0 ... n-1, the uniform
# int8 / analog paths, and fp32 for the table's useful-range hypervolume) and each search is
# evaluated; `mps ablation` tabulates and plots them. With `search.sensitivity_anchors` > 0 each
# adapted supernet is also calibrated, because MPS's search then reads its sensitivity table.
import functools
import shlex


wildcard_constraints:
    dataset="[^/]+",
    model="[^/]+",
    seed=r"\d+",
    variant="[^/]+",
    rep=r"\d+",
    draw=r"\d+",


@functools.cache
def validated_params():
    """The params Snakemake read, validated (defaults filled in by mps.config): parsed once per workflow."""
    from mps.config import parse_params

    return parse_params(config, PARAMS)


def ablation_config():
    """The validated `ablation` section."""
    return validated_params().ablation


def ablation_dir(stage):
    """The adaptation (and calibration) of a variant x seed is r{rep}/adapt (/calibrate); each of its
    searches is r{rep}/d{draw}/."""
    search_level = "" if stage in ("adapt", "calibrate") else "d{draw}/"
    return OUT + "/{dataset}/{model}/s{seed}/ablation/{variant}/r{rep}/" + search_level + stage


def variant_sets(wildcards):
    """`--set adapt.<key>=<value>` for each override of the variant (values as JSON, a YAML subset)."""
    overrides = ablation_config().variants[wildcards.variant]
    return " ".join(shlex.quote(f"--set=adapt.{k}={json.dumps(v)}") for k, v in overrides.items())


def ablation_cmd(stage):
    return (f"{MPS} {stage} --params {PARAMS} --dataset {{wildcards.dataset}} --model {{wildcards.model}} "
            f"--seed {{wildcards.rep}} --threads {{threads}} {{params.sets}}")


def ablation_sensitivity(wildcards):
    """The supernet's sensitivity table when MPS's search reads it (search.sensitivity_anchors > 0), else none."""
    if validated_params().search.sensitivity_anchors == 0:
        return []
    return expand(ablation_dir("calibrate") + "/sensitivity.csv", **wildcards)


def ablation_runs(wildcards):
    cfg = ablation_config()
    return expand(ablation_dir("evaluate") + "/results.csv", dataset=wildcards.dataset, model=wildcards.model,
                  seed=wildcards.seed, variant=list(cfg.variants), rep=cfg.seeds, draw=range(cfg.search_draws))


rule ablation:
    input:
        expand(OUT + "/{dataset}/{model}/s{seed}/ablation/ablation.csv", dataset=DATASETS, model=MODELS, seed=SEEDS),


rule ablation_adapt:
    input:
        data=OUT + "/data/{dataset}",
        pretrained=run_dir("pretrain") + "/model.pt",
    output:
        supernet=ablation_dir("adapt") + "/supernet.pt",
        metrics=ablation_dir("adapt") + "/metrics.json",
    params:
        # the variant's own overrides are `sets`: another variant's, the seeds or the searches per
        # supernet do not touch this adaptation
        digest=section_digest("space", "adapt", "hardware_profile", "device"),
        sets=variant_sets,
        out=ablation_dir("adapt"),
    log:
        OUT + "/logs/ablation/{dataset}-{model}-s{seed}-{variant}-r{rep}-adapt.log",
    benchmark:
        OUT + "/benchmarks/ablation/{dataset}-{model}-s{seed}-{variant}-r{rep}-adapt.tsv"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=GPUS,
    shell:
        ablation_cmd("adapt") + " --data {input.data} --pretrained {input.pretrained} --out {params.out} > {log} 2>&1"


rule ablation_calibrate:
    input:
        data=OUT + "/data/{dataset}",
        supernet=ablation_dir("adapt") + "/supernet.pt",
    output:
        sensitivity=ablation_dir("calibrate") + "/sensitivity.csv",
    params:
        digest=section_digest("calibrate", "device", "analog_engine", "evaluate.drift_compensation",
                              "evaluate.bn_reestimation_batches"),
        sets=variant_sets,
        out=ablation_dir("calibrate"),
    log:
        OUT + "/logs/ablation/{dataset}-{model}-s{seed}-{variant}-r{rep}-calibrate.log",
    benchmark:
        OUT + "/benchmarks/ablation/{dataset}-{model}-s{seed}-{variant}-r{rep}-calibrate.tsv"
    threads: 4
    resources:
        mem_mb=6000,
        runtime=120,
        gpu=GPUS,
    shell:
        ablation_cmd("calibrate") + " --data {input.data} --supernet {input.supernet} --out {params.out} > {log} 2>&1"


rule ablation_search:
    input:
        data=OUT + "/data/{dataset}",
        supernet=ablation_dir("adapt") + "/supernet.pt",
        pretrained=run_dir("pretrain") + "/model.pt",
        sensitivity=ablation_sensitivity,
    output:
        mappings=directory(ablation_dir("search") + "/mappings"),
        summary=ablation_dir("search") + "/search.json",
    params:
        digest=section_digest("search", "device"),
        sets=lambda wildcards: f"--set='search.baselines=[int8, analog, fp32]' --set=search.draw_seed={wildcards.draw}",
        sensitivity=lambda wildcards, input: f"--sensitivity {input.sensitivity}" if input.sensitivity else "",
        out=ablation_dir("search"),
    log:
        OUT + "/logs/ablation/{dataset}-{model}-s{seed}-{variant}-r{rep}-d{draw}-search.log",
    benchmark:
        OUT + "/benchmarks/ablation/{dataset}-{model}-s{seed}-{variant}-r{rep}-d{draw}-search.tsv"
    threads: 4
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=GPUS,
    shell:
        ablation_cmd("search") + " --data {input.data} --supernet {input.supernet} --pretrained {input.pretrained}"
        " {params.sensitivity} --out {params.out} > {log} 2>&1"


rule ablation_evaluate:
    input:
        data=OUT + "/data/{dataset}",
        supernet=ablation_dir("adapt") + "/supernet.pt",
        pretrained=run_dir("pretrain") + "/model.pt",
        mappings=ablation_dir("search") + "/mappings",
    output:
        results=ablation_dir("evaluate") + "/results.csv",
        drift=ablation_dir("evaluate") + "/drift.csv",
    params:
        digest=section_digest("evaluate", "device"),
        sets="",
        out=ablation_dir("evaluate"),
    log:
        OUT + "/logs/ablation/{dataset}-{model}-s{seed}-{variant}-r{rep}-d{draw}-evaluate.log",
    benchmark:
        OUT + "/benchmarks/ablation/{dataset}-{model}-s{seed}-{variant}-r{rep}-d{draw}-evaluate.tsv"
    threads: 4
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=GPUS,
    shell:
        ablation_cmd("evaluate") + " --data {input.data} --supernet {input.supernet} --pretrained {input.pretrained}"
        " --mappings {input.mappings} --out {params.out} > {log} 2>&1"


rule ablation_table:
    input:
        results=ablation_runs,
    output:
        table=OUT + "/{dataset}/{model}/s{seed}/ablation/ablation.csv",
        markdown=OUT + "/{dataset}/{model}/s{seed}/ablation/ablation.md",
        plot=OUT + "/{dataset}/{model}/s{seed}/ablation/ablation.png",
    params:
        out=OUT + "/{dataset}/{model}/s{seed}/ablation",
    log:
        OUT + "/logs/ablation/{dataset}-{model}-s{seed}-table.log",
    benchmark:
        OUT + "/benchmarks/ablation/{dataset}-{model}-s{seed}-table.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        f"{MPS} ablation --params {PARAMS} --results {{input.results}} --out {{params.out}} > {{log}} 2>&1"
