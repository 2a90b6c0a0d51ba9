rule adapt:
    input:
        data=OUT + "/data/{dataset}",
        pretrained=run_dir("pretrain") + "/model.pt",
    output:
        supernet=run_dir("adapt") + "/supernet.pt",
        metrics=run_dir("adapt") + "/metrics.json",
        evidence=run_dir("adapt") + "/evidence.json",
    params:
        digest=section_digest("seed", "space", "adapt", "hardware_profile", "device", "analog_engine",
                              "range_calibration_batches", "evaluate.drift_compensation", "evaluate.bn_reestimation_batches"),
        out=run_dir("adapt"),
    log:
        OUT + "/logs/adapt/{dataset}-{model}-s{seed}.log",
    benchmark:
        OUT + "/benchmarks/adapt/{dataset}-{model}-s{seed}.tsv"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=GPUS,
    shell:
        stage_cmd("adapt") + " --data {input.data} --pretrained {input.pretrained} --out {params.out} > {log} 2>&1"
