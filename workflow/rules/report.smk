rule report:
    input:
        results=run_dir("evaluate") + "/results.csv",
        drift=run_dir("evaluate") + "/drift.csv",
        pareto=run_dir("search") + "/pareto.csv",
        summary=run_dir("search") + "/search.json",
        mappings=run_dir("search") + "/mappings",
        sensitivity=run_dir("calibrate") + "/sensitivity.csv",
    output:
        markdown=run_dir("report") + "/report.md",
        html=run_dir("report") + "/report.html",
        metrics=run_dir("report") + "/metrics.json",
        pareto_plot=run_dir("report") + "/pareto.png",
        drift_plot=run_dir("report") + "/drift.png",
        layers_plot=run_dir("report") + "/layers.png",
        mapping_time_plot=run_dir("report") + "/mapping_time.png",
    params:
        digest=section_digest("report", "evaluate"),
        out=run_dir("report"),
        evaluate=run_dir("evaluate"),
        search=run_dir("search"),
        calibrate=run_dir("calibrate"),
    log:
        OUT + "/logs/report/{dataset}-{model}-s{seed}.log",
    benchmark:
        OUT + "/benchmarks/report/{dataset}-{model}-s{seed}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    shell:
        stage_cmd("report") + " --evaluate {params.evaluate} --search {params.search}"
        " --calibrate {params.calibrate} --out {params.out} > {log} 2>&1"
