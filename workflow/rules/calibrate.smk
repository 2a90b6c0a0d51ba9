rule calibrate:
    input:
        data=OUT + "/data/{dataset}",
        supernet=run_dir("adapt") + "/supernet.pt",
    output:
        sensitivity=run_dir("calibrate") + "/sensitivity.csv",
        schedule=run_dir("calibrate") + "/noise_schedule.json",
        plot=run_dir("calibrate") + "/sensitivity.png",
    params:
        digest=section_digest("seed", "calibrate", "adapt", "device", "analog_engine", "evaluate.drift_compensation", "evaluate.bn_reestimation_batches"),
        out=run_dir("calibrate"),
    log:
        OUT + "/logs/calibrate/{dataset}-{model}-s{seed}.log",
    benchmark:
        OUT + "/benchmarks/calibrate/{dataset}-{model}-s{seed}.tsv"
    threads: 4
    resources:
        mem_mb=6000,
        runtime=120,
        gpu=GPUS,
    shell:
        stage_cmd("calibrate") + " --data {input.data} --supernet {input.supernet} --out {params.out} > {log} 2>&1"
