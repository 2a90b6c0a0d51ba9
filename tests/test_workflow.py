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


def _check(proc: subprocess.CompletedProcess, cwd: Path) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((cwd / "results" / "logs").rglob("*.log")))
        raise AssertionError(f"{' '.join(proc.args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-4000:]}\n{logs}")
    return proc


def _run(cmd: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return _check(subprocess.run(cmd, cwd=cwd, env=_env(cwd), capture_output=True, text=True, timeout=timeout), cwd)


RUN = "results/fashion-mnist/resnet8/s0"
FINAL_OUTPUTS = [
    "results/data/fashion-mnist/manifest.json",
    f"{RUN}/pretrain/model.pt", f"{RUN}/pretrain/metrics.json",
    f"{RUN}/adapt/supernet.pt", f"{RUN}/adapt/metrics.json", f"{RUN}/adapt/evidence.json",
    f"{RUN}/calibrate/sensitivity.csv", f"{RUN}/calibrate/noise_schedule.json",
    f"{RUN}/search/pareto.csv", f"{RUN}/search/search.json", f"{RUN}/search/metrics.json",
    f"{RUN}/evaluate/results.csv", f"{RUN}/evaluate/drift.csv", f"{RUN}/evaluate/methods.json",
    f"{RUN}/report/report.html", f"{RUN}/report/report.md", f"{RUN}/report/pareto.png", f"{RUN}/report/metrics.json",
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
def pipeline_runs(tmp_path_factory, mlflow_db) -> tuple[Path, Path]:
    """The tiny pipeline twice, at the same time in two copies of the repo:

    * through Snakemake's cluster-generic executor: the cluster profile and its local stand-in
      submit command exercised for real, on the tiny profile given with ``--configfile`` over a
      default params.yaml (status polled every second instead of the default 10 s, which
      suits a real scheduler, not a local stand-in);
    * through ``dvc repro``, with the tiny profile as params.yaml.

    Side by side because most of a tiny stage is one core importing torch, aihwkit and MLflow;
    OpenMP threads wait passively so that the two do not spin against each other (the numbers
    are the same: the same thread counts run the same kernels).
    """
    smk = copy_repo(tmp_path_factory.mktemp("smk") / "repo", mlflow_db, params=None)
    dvc = copy_repo(tmp_path_factory.mktemp("dvc") / "repo", mlflow_db)
    passive = {"OMP_WAIT_POLICY": "PASSIVE"}
    dvc_cmd = ["dvc", "repro"]
    dvc_out, dvc_err = dvc.parent / "dvc.out", dvc.parent / "dvc.err"  # files: a full pipe would block dvc
    with open(dvc_out, "w") as out, open(dvc_err, "w") as err:
        dvc_proc = subprocess.Popen(dvc_cmd, cwd=dvc, env={**_env(dvc), **passive}, stdout=out, stderr=err)
    try:
        smk_cmd = ["snakemake", "--workflow-profile", "workflow/profiles/cluster-generic",
                   "--seconds-between-status-checks", "1", *CONFIGFILE]
        _check(subprocess.run(smk_cmd, cwd=smk, env={**_env(smk), **passive}, capture_output=True, text=True,
                              timeout=900), smk)
        dvc_proc.wait(timeout=900)
    finally:
        if dvc_proc.poll() is None:
            dvc_proc.kill()
            dvc_proc.wait()
    _check(subprocess.CompletedProcess(dvc_cmd, dvc_proc.returncode, dvc_out.read_text(), dvc_err.read_text()), dvc)
    return smk, dvc


@pytest.fixture(scope="module")
def snakemake_run(pipeline_runs) -> Path:
    return pipeline_runs[0]


@pytest.fixture(scope="module")
def dvc_run(pipeline_runs) -> Path:
    return pipeline_runs[1]


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


def _leaf_keys(obj, prefix: str = "") -> set[str]:
    if isinstance(obj, dict):
        return set().union(*(_leaf_keys(v, f"{prefix}{k}.") for k, v in obj.items())) if obj else set()
    return {prefix[:-1]}


@pytest.mark.e2e
def test_dvc_repro_runs_tiny_pipeline_and_shows_metrics(dvc_run):
    repo = dvc_run
    for rel in FINAL_OUTPUTS:
        assert (repo / rel).exists(), rel
    shown = json.loads(_run(["dvc", "metrics", "show", "--json"], repo).stdout)
    files = next(iter(shown.values()))["data"]  # keyed by revision: "workspace" or "" by DVC version
    columns = set()
    for entry in files.values():
        columns |= _leaf_keys(entry["data"])
    assert {"test_accuracy", "adapted_analog.accuracy_drift", "mps.hypervolume", "mps.search_seconds",
            "mps.accuracy_1d", "mps.accuracy_1y", "constraint_met"} <= columns
    # a table a person can read, not the details (per-layer alphas, versions): a few headline numbers
    # per stage and per method (search: hypervolume and time; evaluate: accuracy at the reference
    # time and at the last drift time), so the bound grows with the methods compared (11 here)
    methods = {c.split(".")[0] for c in columns if c.endswith(".hypervolume")}
    assert len(columns) <= 20 + 4 * len(methods), sorted(columns)
    table = _run(["dvc", "metrics", "show"], repo).stdout
    assert "test_accuracy" in table and "provenance" not in table and "alpha" not in table
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
        # dvc repro writes dvc.lock between stages, so its copy's later stages record a dirty tree
        clean = [c.removesuffix("-dirty") for c in (ca, cb, git_commit(snakemake_run), git_commit(dvc_run))]
        assert clean[:2] == clean[2:] and clean[0] != clean[1]
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


# --------------------------------------------------------------------------- MLflow, as a user sees it
def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rest(base: str, path: str, body: dict | None = None) -> dict:
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"},
                                 method="GET" if body is None else "POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read().decode())


@pytest.fixture(scope="module")
def two_pipeline_runs(snakemake_run, tmp_path_factory) -> Path:
    """The tiny Snakemake run, copied, then run again with other params (evaluate.repeats 2 -> 3:
    only evaluate, report and aggregate rerun): two pipeline runs in one MLflow store."""
    import yaml

    repo = tmp_path_factory.mktemp("smk2") / "repo"
    shutil.copytree(snakemake_run, repo, symlinks=True)
    tiny = repo / "config" / "params-tiny.yaml"  # the profile the run was given with --configfile
    params = yaml.safe_load(tiny.read_text())
    params["evaluate"]["repeats"] = 3
    tiny.write_text(yaml.safe_dump(params, sort_keys=False))
    proc = _run(["snakemake", "--cores", "2", "--workflow-profile", "workflow/profiles/default", *CONFIGFILE], repo)
    assert "[mps] 3/3 stages done" in proc.stderr, proc.stderr[-3000:]  # the progress lines
    return repo


@pytest.mark.e2e
def test_mlflow_server_compares_two_pipeline_runs(two_pipeline_runs, tmp_path):
    """`mlflow server` on the store of two pipeline runs: over its REST API (what the UI reads),
    each parent run spans its stages, carries the headline params and metrics, and the two
    differ where their params differ."""
    import time
    import urllib.error

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        ["mlflow", "server", "--backend-store-uri", f"sqlite:///{two_pipeline_runs / 'mlflow.db'}",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "w"),
        start_new_session=True)
    try:
        deadline = time.monotonic() + 300  # a loaded 2-core machine takes minutes to import mlflow
        while True:
            try:
                _rest(base, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=mps-tiny")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("mlflow server did not answer:\n" + (tmp_path / "server.log").read_text()[-3000:])
                time.sleep(1)
        exp = _rest(base, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=mps-tiny")["experiment"]
        assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in exp["tags"]
        runs = _rest(base, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]],
                                                           "max_results": 1000})["runs"]
        tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
        parents = [(r, t) for r, t in zip(runs, tags) if t.get("mps.role") == "pipeline"]
        assert len(parents) == 2, "one parent run per pipeline run"
        headline = []
        for parent, _ in parents:
            info = parent["info"]
            assert info["status"] == "FINISHED"
            children = [r["info"] for r, t in zip(runs, tags) if t.get("mlflow.parentRunId") == info["run_id"]]
            assert children and all(c["status"] == "FINISHED" for c in children)
            # the parent spans its stages (start before the first, end after the last)
            assert int(info["start_time"]) <= min(int(c["start_time"]) for c in children)
            assert int(info["end_time"]) >= max(int(c["end_time"]) for c in children)
            params = {p["key"]: p["value"] for p in parent["data"]["params"]}
            metrics = {m["key"]: m["value"] for m in parent["data"]["metrics"]}
            assert {"model", "dataset", "search_space", "hardware_profile", "budget.search_evaluations"} <= set(params)
            for key in ("mps.best_accuracy_1d", "mps.accuracy_1y", "mps.hypervolume", "mps.mapping_seconds",
                        "mps.energy_uj", "analog.best_accuracy_1d", "constraint_met"):
                assert key in metrics, key
            headline.append((params, metrics))
        (p1, m1), (p2, m2) = headline
        assert {p1["budget.evaluate_repeats"], p2["budget.evaluate_repeats"]} == {"2", "3"}
        assert p1["model"] == p2["model"] == "resnet8"
        per_method = [{k for k in m if not k.startswith("selected.")} for m in (m1, m2)]  # selection may differ
        assert per_method[0] == per_method[1], "the two runs line up metric by metric"
        # searched once: the same hypervolume of the search; evaluated differently: other test numbers
        assert m1["mps.mapping_seconds"] == m2["mps.mapping_seconds"]
        assert any(m1[k] != m2[k] for k in m1 if k.endswith("best_accuracy_1d") or k.endswith("accuracy_1y"))
        # the UI a user opens
        import urllib.request

        with urllib.request.urlopen(base + "/", timeout=30) as resp:
            assert resp.status == 200 and b"<html" in resp.read().lower()
    finally:
        import signal

        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


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


def test_ablation_calibrates_its_supernets_only_when_mps_reads_the_table(tmp_path):
    """With search.sensitivity_anchors > 0 MPS's search reads the calibrate stage's table, so
    `snakemake ablation` calibrates each adapted supernet (once, for all its searches) and hands
    each search that supernet's table; at the default 0 it calibrates none."""
    import yaml

    repo = copy_repo(tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params.setdefault("search", {})["sensitivity_anchors"] = 2
    (repo / "anchors.yaml").write_text(yaml.safe_dump(params))
    dry = ["snakemake", "ablation", "-n", "-p", "--forceall", "--cores", "1"]
    for configfile, calibrated in (("params.yaml", False), ("anchors.yaml", True)):
        out = _run(dry + ["--configfile", configfile], repo)
        lines = (out.stdout + out.stderr).splitlines()
        calibrations = [line for line in lines if "mps calibrate" in line and "/ablation/" in line]
        searches = [line for line in lines if re.search(r"mps search .*/ablation/", line)]
        assert searches, lines[-20:]
        if not calibrated:
            assert not calibrations and not any("--sensitivity" in line for line in searches)
            continue
        assert len(calibrations) == len(searches) // params["ablation"].get("search_draws", 2)
        for line in searches:
            supernet = re.search(r"--supernet (\S+)/adapt/supernet.pt", line).group(1)
            assert f"--sensitivity {supernet}/calibrate/sensitivity.csv" in line, line


@pytest.mark.e2e
def test_ablation_target_runs_on_the_tiny_profile(snakemake_run):
    """`snakemake ablation` (not part of the default target): every variant x seed of the tiny
    profile adapted from the run's pretrained model, searched and evaluated, then tabulated."""
    import pandas as pd

    repo = snakemake_run
    # the target first: after --configfile, snakemake would read it as another config file
    # one thread a job, so the two variants' chains run side by side on the 2 cores
    one_thread = [f"ablation_{stage}=1" for stage in ("adapt", "search", "evaluate")]
    _run(["snakemake", "ablation", "--cores", "2", "--set-threads", *one_thread, "--workflow-profile",
          "workflow/profiles/default", *CONFIGFILE], repo)
    folder = repo / RUN / "ablation"
    table = pd.read_csv(folder / "ablation.csv")
    # each adapted supernet searched twice (search.draw_seed 0 and 1), each search evaluated
    assert sorted(zip(table["variant"], table["seed"], table["draw"])) == [
        ("mps", 0, 0), ("mps", 0, 1), ("no_qat_no_hwa", 0, 0), ("no_qat_no_hwa", 0, 1)]
    # the paths of one supernet do not depend on the search's draws: its searches score them alike
    paths = table.groupby("variant")[["analog_ref", "analog_last", "int8"]].nunique()
    assert (paths == 1).all().all(), table
    for variant in ("mps", "no_qat_no_hwa"):
        summary = json.loads((folder / variant / "r0" / "d1" / "search" / "search.json").read_text())
        assert summary["draw_seed"] == 1, "the search records its draw seed"
    # the pick study over every ablation supernet: one line per search, resumed without searching again
    study = [sys.executable, "-m", "benchmarks.mps_pick_study", "--params", "config/params-tiny.yaml",
             "--run-dir", RUN, "--seeds", "0,1", "--ablation", "picks.jsonl"]
    first = _run(study, repo).stdout
    lines = [json.loads(line) for line in (repo / "picks.jsonl").read_text().splitlines()]
    assert sorted((r["ablation_variant"], r["adaptation_seed"], r["seed"]) for r in lines) == [
        ("mps", 0, 0), ("mps", 0, 1), ("no_qat_no_hwa", 0, 0), ("no_qat_no_hwa", 0, 1)]
    assert "Each variant minus `mps`" in first and "| no_qat_no_hwa | 2 |" in first
    again = _run(study, repo).stdout
    assert "already in picks.jsonl" in again and len((repo / "picks.jsonl").read_text().splitlines()) == 4
    for col in ("analog_ref", "analog_last", "int8"):
        assert table[col].between(0, 100).all(), col
    assert (table["hypervolume"] >= 0).all()
    # the useful-range hypervolume on test needs the FP32 row the ablation's search adds (NaN without
    # it); not bounded above: a tiny-profile mapping scoring over FP32 lies beyond the range's top
    assert (table["hypervolume_useful"].notna() & (table["hypervolume_useful"] >= 0)).all(), table["hypervolume_useful"]
    assert (folder / "ablation.png").stat().st_size > 0 and "| variant" in (folder / "ablation.md").read_text()
    # the straight conversion and the full-analog HWA baseline are rows of the main results table
    results = pd.read_csv(repo / RUN / "evaluate" / "results.csv")
    assert {"analog", "analog_straight", "analog_hwa"} <= set(results["Method"])
