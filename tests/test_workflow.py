"""The pipeline as a user runs it: Snakemake and DVC on the tiny profile, in a copy of the repo,
and the check that the two descriptions of the pipeline never drift apart."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, TINY_PARAMS
from mps.artifacts import git_commit
from mps.config import load_params

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


def copy_repo(dest: Path, mlflow_db: str | None = None, params: Path | None = TINY_PARAMS) -> Path:
    """The tracked files of the repo (as a fresh clone has them), with ``params`` copied over
    params.yaml (``None``: the default params.yaml stays)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    if params is not None:
        shutil.copy(params, dest / "params.yaml")
    if mlflow_db:
        shutil.copy(mlflow_db, dest / "mlflow.db")
    # a fixed author and date give every copy the same commit id, so provenance records match
    git_env = {**os.environ, "GIT_AUTHOR_DATE": "2026-01-01T00:00:00", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00",
               "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run(["git", "commit", "-qm", "copy"], cwd=dest, check=True, env=git_env)
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
    "results/summary/summary.csv", "results/summary/summary.md",
]


def _mlflow_stage_runs(repo: Path) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mps-tiny")
    runs = client.search_runs([exp.experiment_id])
    return {r.data.tags.get("mps.stage", r.info.run_name): r for r in runs}


# Another profile through Snakemake, as the README says to run one: the copy keeps the default
# params.yaml, and the tiny profile comes in with --configfile only.
CONFIGFILE = ["--configfile", "config/params-tiny.yaml"]


@pytest.fixture(scope="module")
def snakemake_run(tmp_path_factory, mlflow_db) -> Path:
    """The tiny pipeline through Snakemake's cluster-generic executor: the cluster profile and
    its local stand-in submit command exercised for real, on the tiny profile given with
    ``--configfile`` over a default params.yaml."""
    repo = copy_repo(tmp_path_factory.mktemp("smk") / "repo", mlflow_db, params=None)
    _run(["snakemake", "--workflow-profile", "workflow/profiles/cluster-generic", *CONFIGFILE], repo)
    return repo


@pytest.fixture(scope="module")
def dvc_run(tmp_path_factory, mlflow_db) -> Path:
    repo = copy_repo(tmp_path_factory.mktemp("dvc") / "repo", mlflow_db)
    _run(["dvc", "repro"], repo)
    return repo


@pytest.mark.e2e
def test_snakemake_runs_tiny_pipeline_end_to_end(snakemake_run):
    repo = snakemake_run
    for rel in FINAL_OUTPUTS:
        assert (repo / rel).exists(), rel
    metrics = json.loads((repo / RUN / "pretrain" / "metrics.json").read_text())
    assert 0 <= metrics["test_accuracy"] <= 100
    # the stages read the --configfile profile, not params.yaml, which stays the default
    assert (repo / "params.yaml").read_bytes() == (REPO / "params.yaml").read_bytes()
    tiny, default = load_params(TINY_PARAMS), load_params(REPO / "params.yaml")
    assert tiny.evaluate.drift_times != default.evaluate.drift_times
    drift = pd.read_csv(repo / RUN / "evaluate" / "drift.csv")
    assert sorted(set(drift["drift_time"])) == sorted(tiny.evaluate.drift_times)

    runs = _mlflow_stage_runs(repo)
    for stage in ("prepare-data", "pretrain", "adapt", "calibrate", "search", "evaluate", "report", "aggregate"):
        assert stage in runs, f"no MLflow run for {stage}"
        assert runs[stage].info.status == "FINISHED"
    parents = {r.data.tags.get("mlflow.parentRunId") for s, r in runs.items() if s != "pipeline"}
    parents.discard(None)
    assert len(parents) == 1, "all stage runs nest under one pipeline run"

    # a second invocation, with the local executor and the same profile, has nothing to do
    proc = _run(["snakemake", "--cores", "2", "--workflow-profile", "workflow/profiles/default", "-n", *CONFIGFILE],
                repo)
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.e2e
def test_dvc_repro_runs_tiny_pipeline_and_shows_metrics(dvc_run):
    repo = dvc_run
    for rel in FINAL_OUTPUTS:
        assert (repo / rel).exists(), rel
    shown = _run(["dvc", "metrics", "show", "--json"], repo).stdout
    assert "test_accuracy" in shown
    status = _run(["dvc", "status"], repo).stdout
    assert "changed" not in status


@pytest.mark.e2e
def test_same_params_and_seed_give_identical_mappings_and_metrics(snakemake_run, dvc_run):
    """Reproducibility across the two engines: identical mapping files, identical metrics.

    The two copies differ in one committed file (Snakemake's keeps the default params.yaml and
    reads the tiny profile through --configfile; DVC's has it as params.yaml), so the mapping
    files' provenance names two commits; everything else is byte-identical."""
    smk_maps = sorted((snakemake_run / RUN / "search" / "mappings").glob("*.json"))
    dvc_maps = sorted((dvc_run / RUN / "search" / "mappings").glob("*.json"))
    assert [p.name for p in smk_maps] == [p.name for p in dvc_maps] and smk_maps
    for a, b in zip(smk_maps, dvc_maps):
        ta, tb = a.read_text(), b.read_text()
        ca, cb = (json.loads(t)["provenance"]["git_commit"] for t in (ta, tb))
        assert (ca, cb) == (git_commit(snakemake_run), git_commit(dvc_run)) and ca != cb
        assert ta.replace(ca, "COMMIT") == tb.replace(cb, "COMMIT"), a.name
    for rel in (f"{RUN}/evaluate/results.csv", f"{RUN}/evaluate/drift.csv", f"{RUN}/evaluate/metrics.json",
                f"{RUN}/search/pareto.csv", f"{RUN}/calibrate/sensitivity.csv"):
        assert (snakemake_run / rel).read_bytes() == (dvc_run / rel).read_bytes(), rel


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
    assert set(smk) == set(dvc) == {"prepare-data", "pretrain", "adapt", "calibrate", "search", "evaluate", "report",
                                    "aggregate"}
    for stage in smk:
        assert smk[stage][1], f"{stage}: no outputs parsed"
        assert smk[stage][1] == dvc[stage][1], f"{stage}: outputs differ"
        assert smk[stage][0] == dvc[stage][0], f"{stage}: data inputs differ"


def _stage_commands(proc: subprocess.CompletedProcess) -> dict[str, str]:
    """``stage -> shell command`` of a ``snakemake -n -p`` run's ``mps <stage>`` jobs."""
    cmds = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.match(r"^\s*(?:Shell command: )?(mps ([a-z-]+) .*)$", line)
        if m:
            cmds[m.group(2)] = m.group(1)
    return cmds


def test_dry_run_stages_read_the_params_file_snakemake_read(tmp_path):
    """Every stage's shell command names the one file Snakemake read: the --configfile profile
    (relative inside the repo, absolute and quoted outside it), else params.yaml; two files
    (which Snakemake would merge, and one --params cannot name) stop before any job."""
    repo = copy_repo(tmp_path / "repo", params=None)
    outside = tmp_path / "my {profile}.yaml"
    shutil.copy(TINY_PARAMS, outside)
    dry = ["snakemake", "-n", "-p", "--forceall", "--cores", "1"]
    stages = {"prepare-data", "pretrain", "adapt", "calibrate", "search", "evaluate", "report", "aggregate"}
    for extra, expect in (([], "params.yaml"), (CONFIGFILE, "config/params-tiny.yaml"),
                          (["--configfile", str(outside)], shlex.quote(str(outside)))):
        cmds = _stage_commands(_run(dry + extra, repo))
        assert set(cmds) == stages, (extra, sorted(cmds))
        for stage, cmd in cmds.items():
            assert f" --params {expect} " in cmd, (stage, cmd)
    proc = subprocess.run(dry + ["--configfile", "config/params-tiny.yaml", "params.yaml"], cwd=repo,
                          env=_env(repo), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "fix: pass exactly one complete params file" in proc.stdout + proc.stderr
