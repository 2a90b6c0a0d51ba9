# Thin entry point: Snakemake finds this before workflow/Snakefile, where the workflow lives.
include: "workflow/Snakefile"


# An included file cannot set the default target, so the root names it.
rule default:
    input:
        rules.all.input,
    default_target: True
