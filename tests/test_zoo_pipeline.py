"""The zoo's other architectures (MobileNetV2, the ViT) through every stage, as a user runs
them: one Snakemake sweep over ``sweep.models`` on a trimmed tiny profile, then the aggregate
stage's methods-at-a-glance table and ``make bench``'s growth figure over the sweep's outputs.

ResNet20 left the sweep on 2026-12-03: it is ResNet8's block family with more blocks (ResNet8
runs every stage in test_workflow; ResNet20's conversion, forward modes and MPAAS candidates are
tested in test_supernet and test_mpaas), and its chain was about 130 s of the sweep's CPU on 2
cores, with the suite at its 15-minute budget.  Its default-budget runs are in the README.

Trimmed from the tiny profile to keep the suite's time (the tiny profile over ResNet20, MobileNetV2
and the ViT takes about 13 minutes on 2 cores, mostly LionHEART's per-layer retraining and the
per-layer calibration on MobileNetV2's 32 layers): the search runs MPS with the FP32 and
straight-conversion references only (the peers run on ResNet8 in test_workflow and
test_peer_baselines, and on every zoo model in the 13-minute sweep measured for the README), one
adaptation step per phase with uniform HWA, every scoring on 50 images with one programming seed,
two jobs side by side on one thread each (MobileNetV2's chain of stages is the critical path). The
tiny profile's data and pretraining stay (with 12 training images per class and one pretraining
epoch, MobileNetV2's adaptation diverged: the stage stopped with its "loss is nan" message). Every
stage runs on every model.
"""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from conftest import REPO, TINY_PARAMS
from test_workflow import _run, copy_repo

ZOO = ["resnet20", "mobilenetv2", "vit_tiny"]  # the models profile's models besides ResNet8
SWEEP = ["mobilenetv2", "vit_tiny"]  # the architectures ResNet8's tests do not cover


def zoo_params() -> dict:
    params = yaml.safe_load(TINY_PARAMS.read_text())
    # one fairness and one noise step; every scoring on 50 images, one programming seed; uniform
    # HWA: the noise-scaled recipe's per-layer probe (extract with one layer analog, score it) is
    # the calibrate stage's per-layer grid again, and was half of MobileNetV2's adapt stage here
    params["adapt"].update({"fairness_epochs": 0.1, "noise_epochs": 0.1, "evidence_examples": 50,
                            "evidence_repeats": 1, "hwa": "uniform"})
    params["calibrate"].update({"drift_times": [86400.0], "repeats": 1, "val_examples": 50, "batch_size": 50,
                                "bn_recalibration_batches": 1})
    params["search"].update({"budget": 4, "iterations": 1, "alpha_steps": 5, "val_examples": 50,
                             "baselines": ["fp32", "analog_straight"]})
    params["evaluate"].update({"repeats": 1, "drift_times": [86400.0, 31536000.0], "max_test_examples": 50,
                               "batch_size": 50})
    params["mlflow"]["experiment"] = "mps-zoo"
    params["sweep"]["models"] = SWEEP
    return params


def test_models_profile_is_the_default_run_over_the_zoo():
    """config/params-models.yaml: params.yaml's budgets, every zoo model, the MPAAS space (MPS and
    MPAAS sets from one supernet), its own output folder and MLflow experiment (a models sweep
    never overwrites the default run's summary)."""
    from mps.config import load_params

    default, models = load_params(REPO / "params.yaml"), load_params(REPO / "config" / "params-models.yaml")
    assert models.sweep.models == ["resnet8", *ZOO]
    assert models.space.search_space == "mpaas" and default.space.search_space == "mps"
    assert models.out_dir != default.out_dir and models.mlflow.experiment != default.mlflow.experiment
    same = models.model_copy(update={"out_dir": default.out_dir, "mlflow": default.mlflow, "sweep": default.sweep,
                                     "space": default.space})
    assert same.digest() == default.digest()


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory, mlflow_db):
    repo = copy_repo(tmp_path_factory.mktemp("zoo") / "repo", mlflow_db)
    (repo / "params.yaml").write_text(yaml.safe_dump(zoo_params(), sort_keys=False))
    # one thread a job, so two models' chains run side by side: a tiny stage is mostly one core
    # importing torch, aihwkit and MLflow
    one_thread = [f"{stage}=1" for stage in ("pretrain", "adapt", "calibrate", "search", "evaluate", "report")]
    _run(["snakemake", "--cores", "2", "--set-threads", *one_thread, "--workflow-profile",
          "workflow/profiles/default"], repo, timeout=1500)
    return repo


@pytest.mark.e2e
@pytest.mark.slow
def test_every_zoo_model_runs_every_stage_and_is_summarised(zoo_run):
    for model in SWEEP:
        run = zoo_run / "results" / "fashion-mnist" / model / "s0"
        assert (run / "report" / "report.html").is_file(), model
        results = pd.read_csv(run / "evaluate" / "results.csv")
        assert {"fp32", "analog_straight", "mps"} <= set(results["Method"]), model
    glance = pd.read_csv(zoo_run / "results" / "summary" / "methods.csv")
    for model in SWEEP:
        rows = glance[glance["Model"] == model].set_index("Method")
        assert {"fp32", "analog_straight", "mps"} <= set(rows.index), model
        assert rows["Accuracy_last"].notna().all() and (rows.loc["mps", "Mapping_seconds"] > 0), model
    # MobileNetV2's depthwise convolutions stay digital: its most analog network is not all analog
    mnv2 = glance[(glance["Model"] == "mobilenetv2") & (glance["Method"] == "analog_straight")]
    assert 50 < float(mnv2["Analog_MAC_Ratio_percent"].iloc[0]) < 100
    assert "## Methods at a glance" in (zoo_run / "results" / "summary" / "summary.md").read_text()


@pytest.mark.e2e
@pytest.mark.slow
def test_growth_figure_reads_the_sweep(zoo_run, tmp_path):
    """`make bench`'s growth group on the sweep: per model its layers, each stage's time and each
    method's mapping time, and the plot beside the report."""
    out = tmp_path / "bench"
    proc = _run(["python", "-m", "benchmarks.run", "--quick", "--only", "growth", "--out", str(out)], zoo_run)
    assert proc.returncode == 0
    report = next(out.glob("*-bench.md")).read_text()
    for model in SWEEP:
        assert f"{model}: weight layers" in report and f"{model}: search wall time" in report
        assert f"{model}: mps mapping time" in report
    assert len(list(out.glob("*-growth.png"))) == 1 and "-growth.png)" in report
