#!/usr/bin/env bash
# A stand-in for sbatch/qsub: runs a Snakemake job script on this machine, detached, and
# prints a job id (the process id) as a scheduler would. Arguments: threads, mem_mb, script.
set -euo pipefail
threads=$1 mem_mb=$2 script=$3
log="${script}.out"
OMP_NUM_THREADS=$threads nohup bash "$script" > "$log" 2>&1 < /dev/null &
echo "$!"
