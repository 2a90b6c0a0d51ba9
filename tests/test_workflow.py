"""The pipeline as a user runs it: Snakemake and DVC on the tiny profile, in a copy of the repo,
and the check that the two descriptions of the pipeline never drift apart."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY_PARAMS

BIN = Path(sys.executable).parent


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}:{env['PATH']}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["MPS_NO_PROGRESS"] = "1"
    env.pop("MPS_NO_MLFLOW", None)
    env.pop("MPS_PIPELINE_ID", None)
    return env


def copy_repo(dest: Path, mlflow_db: str | None = None) -> Path:
    """The tracked files of the repo (as a fresh clone has them), with the tiny params."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    shutil.copy(TINY_PARAMS, dest / "params.yaml")
    if mlflow_db:
        shutil.copy(mlflow_db, dest / "mlflow.db")
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"], cwd=dest, check=True)
    return dest


def _run(cmd: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(cwd), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((cwd / "results" / "logs").rglob("*.log")))
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}\n{logs}")
    return proc


RUN = "results/fashion-mnist/resnet8/s0"
FINAL_OUTPUTS = [
    "results/data/fashion-mnist/manifest.json",
    f"{RUN}/pretrain/model.pt", f"{RUN}/pretrain/metrics.json",
    f"{RUN}/adapt/supernet.pt", f"{RUN}/adapt/metrics.json",
    f"{RUN}/calibrate/sensitivity.csv", f"{RUN}/calibrate/noise_schedule.json",
    f"{RUN}/search/pareto.csv", f"{RUN}/search/search.json",
    f"{RUN}/evaluate/results.csv", f"{RUN}/evaluate/drift.csv",
    f"{RUN}/report/report.html", f"{RUN}/report/report.md", f"{RUN}/report/pareto.png",
]


def _mlflow_stage_runs(repo: Path) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mps-tiny")
    runs = client.search_runs([exp.experiment_id])
    return {r.data.tags.get("mps.stage", r.info.run_name): r for r in runs}


@pytest.mark.e2e
def test_snakemake_runs_tiny_pipeline_end_to_end(tmp_path, mlflow_db):
    repo = copy_repo(tmp_path / "repo", mlflow_db)
    _run(["snakemake", "--cores", "2", "--workflow-profile", "workflow/profiles/default"], repo)
    for rel in FINAL_OUTPUTS:
        assert (repo / rel).exists(), rel
    metrics = json.loads((repo / RUN / "pretrain" / "metrics.json").read_text())
    assert 0 <= metrics["test_accuracy"] <= 100

    runs = _mlflow_stage_runs(repo)
    for stage in ("prepare-data", "pretrain", "adapt", "calibrate", "search", "evaluate", "report"):
        assert stage in runs, f"no MLflow run for {stage}"
        assert runs[stage].info.status == "FINISHED"
    parents = {r.data.tags.get("mlflow.parentRunId") for s, r in runs.items() if s != "pipeline"}
    parents.discard(None)
    assert len(parents) == 1, "all stage runs nest under one pipeline run"

    # a second invocation has nothing to do
    proc = _run(["snakemake", "--cores", "2", "--workflow-profile", "workflow/profiles/default", "-n"], repo)
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.e2e
def test_dvc_repro_runs_tiny_pipeline_and_shows_metrics(tmp_path, mlflow_db):
    repo = copy_repo(tmp_path / "repo", mlflow_db)
    _run(["dvc", "repro"], repo)
    for rel in FINAL_OUTPUTS:
        assert (repo / rel).exists(), rel
    shown = _run(["dvc", "metrics", "show", "--json"], repo).stdout
    assert "test_accuracy" in shown
    status = _run(["dvc", "status"], repo).stdout
    assert "changed" not in status


# --------------------------------------------------------------------------- agreement
def _snakemake_jobs(repo: Path) -> dict[str, tuple[set[str], set[str]]]:
    proc = subprocess.run(["snakemake", "--forceall", "-n", "--workflow-profile", "workflow/profiles/default"],
                          cwd=repo, env=_env(repo), capture_output=True, text=True, check=True)
    jobs: dict[str, tuple[set[str], set[str]]] = {}
    current = None
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.match(r"^(?:localrule|rule) (\w+):", line)
        if m:
            current = m.group(1).replace("_", "-")
            jobs[current] = (set(), set())
            continue
        m = re.match(r"^\s+(input|output): (.*)$", line)
        if m and current:
            files = {f.strip() for f in m.group(2).split(",") if f.strip()}
            jobs[current][0 if m.group(1) == "input" else 1].update(files)
    jobs.pop("default", None)
    jobs.pop("all", None)
    return jobs


def _dvc_stages(repo: Path, out_dir: str) -> dict[str, tuple[set[str], set[str]]]:
    from dvc.repo import Repo

    stages = {}
    with Repo(str(repo)) as dvc_repo:
        for stage in dvc_repo.index.stages:
            deps = {os.path.relpath(d.fs_path, repo) for d in stage.deps}
            outs = {os.path.relpath(o.fs_path, repo) for o in stage.outs}
            stages[stage.name] = ({d for d in deps if d.startswith(out_dir + "/")}, outs)
    return stages


def test_snakemake_and_dvc_describe_the_same_pipeline(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    smk = _snakemake_jobs(repo)
    dvc = _dvc_stages(repo, "results")
    assert set(smk) == set(dvc) == {"prepare-data", "pretrain", "adapt", "calibrate", "search", "evaluate", "report"}
    for stage in smk:
        assert smk[stage][1], f"{stage}: no outputs parsed"
        assert smk[stage][1] == dvc[stage][1], f"{stage}: outputs differ"
        assert smk[stage][0] == dvc[stage][0], f"{stage}: data inputs differ"
