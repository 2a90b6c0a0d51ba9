rule evaluate:
    input:
        data=OUT + "/data/{dataset}",
        supernet=run_dir("adapt") + "/supernet.pt",
        pretrained=run_dir("pretrain") + "/model.pt",
        mappings=run_dir("search") + "/mappings",
    output:
        results=run_dir("evaluate") + "/results.csv",
        drift=run_dir("evaluate") + "/drift.csv",
        metrics=run_dir("evaluate") + "/metrics.json",
        methods=run_dir("evaluate") + "/methods.json",
    params:
        digest=section_digest("seed", "evaluate", "device", "analog_engine", "range_calibration_batches"),
        out=run_dir("evaluate"),
    log:
        OUT + "/logs/evaluate/{dataset}-{model}-s{seed}.log",
    benchmark:
        OUT + "/benchmarks/evaluate/{dataset}-{model}-s{seed}.tsv"
    threads: 4
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=GPUS,
    shell:
        stage_cmd("evaluate") + " --data {input.data} --supernet {input.supernet} --pretrained {input.pretrained}"
        " --mappings {input.mappings} --out {params.out} > {log} 2>&1"
