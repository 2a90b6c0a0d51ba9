rule search:
    input:
        data=OUT + "/data/{dataset}",
        supernet=run_dir("adapt") + "/supernet.pt",
        pretrained=run_dir("pretrain") + "/model.pt",
        sensitivity=run_dir("calibrate") + "/sensitivity.csv",
    output:
        mappings=directory(run_dir("search") + "/mappings"),
        pareto=run_dir("search") + "/pareto.csv",
        summary=run_dir("search") + "/search.json",
        metrics=run_dir("search") + "/metrics.json",
    params:
        digest=section_digest("seed", "search", "device", "analog_engine", "range_calibration_batches",
                              "evaluate.drift_compensation", "evaluate.bn_reestimation_batches"),
        out=run_dir("search"),
    log:
        OUT + "/logs/search/{dataset}-{model}-s{seed}.log",
    benchmark:
        OUT + "/benchmarks/search/{dataset}-{model}-s{seed}.tsv"
    threads: 4
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=GPUS,
    shell:
        stage_cmd("search") + " --data {input.data} --supernet {input.supernet} --pretrained {input.pretrained}"
        " --sensitivity {input.sensitivity} --out {params.out} > {log} 2>&1"
