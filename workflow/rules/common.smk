# Paths, the sweep grid and the command prefix shared by every rule.
import hashlib
import json
import os
import shlex

from snakemake.exceptions import WorkflowError


def _params_file():
    """The one params file Snakemake read, as the stages' `--params`: the `--configfile` of the
    command line (Snakemake 9 keeps it apart from the `configfile:` directive's, which the
    Snakefile then skips) or params.yaml; relative to the working directory when inside it."""
    files = [str(f) for f in workflow.configfiles]
    if len(files) != 1:
        raise WorkflowError(
            f"--configfile: got {len(files)} params files ({', '.join(files) or 'none'}); fix: pass exactly "
            "one complete params file (a profile such as config/params-tiny.yaml), or none for params.yaml"
        )
    path = os.path.abspath(files[0])
    rel = os.path.relpath(path)
    path = rel if not rel.startswith(os.pardir) else path
    # the path goes into shell commands that Snakemake formats: quote it and escape braces
    return shlex.quote(path).replace("{", "{{").replace("}", "}}")


PARAMS = _params_file()
OUT = config.get("out_dir", "results")
MPS = "mps"


def _grid(key, scalar):
    values = (config.get("sweep") or {}).get(key) or []
    return [str(v) for v in values] or [str(scalar)]


DATASETS = _grid("datasets", config["data"]["dataset"] if "data" in config else "fashion-mnist")
MODELS = _grid("models", config["model"]["name"] if "model" in config else "resnet8")
SEEDS = _grid("seeds", config.get("seed", 0))


# Stages that can use a GPU ask for one when params say device: cuda (a cluster executor
# turns this into the job's GPU request).
GPUS = 1 if config.get("device") == "cuda" else 0


def run_dir(stage):
    """Per (dataset, model, seed) folder of one stage's outputs."""
    return OUT + "/{dataset}/{model}/s{seed}/" + stage


def _param(key):
    """A params value by its dotted key (``evaluate.drift_compensation``), None when absent."""
    value = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def section_digest(*keys):
    """Changes when any named params section (or dotted key) changes, so Snakemake reruns the rule."""
    blob = json.dumps({k: _param(k) for k in keys}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def stage_cmd(stage):
    """`mps <stage>` with the params file and the run's wildcards."""
    return (f"{MPS} {stage} --params {PARAMS} --dataset {{wildcards.dataset}} "
            f"--model {{wildcards.model}} --seed {{wildcards.seed}} --threads {{threads}}")


def all_targets():
    reports = expand(run_dir("report") + "/report.html", dataset=DATASETS, model=MODELS, seed=SEEDS)
    return reports + [OUT + "/summary/summary.csv"]
