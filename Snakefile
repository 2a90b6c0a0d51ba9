# Thin entry point: Snakemake finds this before workflow/Snakefile. The workflow lives there.
include: "workflow/Snakefile"
