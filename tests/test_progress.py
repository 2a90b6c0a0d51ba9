"""The per-stage progress lines of a Snakemake run (workflow/scripts/progress.py) and the
time estimate they start from (mps/stage_time.py, `mps estimate`)."""

from __future__ import annotations

import io
import os
import sys
import time

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "workflow" / "scripts"))
from progress import Progress, _Job, estimate, expected_seconds  # noqa: E402

from conftest import tiny_params  # noqa: E402
from mps.config import parse_params  # noqa: E402
from mps.stage_time import COST, estimate_seconds, measure_fp32_step, stage_work  # noqa: E402

REFERENCE_SECONDS = {"pretrain": 200.0, "adapt": 90.0, "search": 80.0, "evaluate": 170.0, "report": 5.0}


def test_lines_follow_the_jobs_files_and_the_estimate_scales(tmp_path):
    jobs = [_Job(rule, "fashion-mnist/resnet8/0", str(tmp_path / f"{rule}.log"), str(tmp_path / f"{rule}.tsv"))
            for rule in ("pretrain", "adapt", "report")]
    out = io.StringIO()
    progress = Progress(jobs, REFERENCE_SECONDS, out=out, interval=0.05)
    assert progress.line().startswith("[mps] 0/3 stages done in 0s; about ")
    full = progress.remaining_seconds()
    assert abs(full - sum(REFERENCE_SECONDS[r] for r in ("pretrain", "adapt", "report"))) < 1

    (tmp_path / "pretrain.log").write_text("")
    assert progress.poll() and "running: pretrain fashion-mnist/resnet8/0" in progress.line()
    assert not progress.poll()  # nothing new
    # pretrain ends after a tenth of its reference time: the rest is estimated ten times faster
    jobs[0].started = time.time() - REFERENCE_SECONDS["pretrain"] / 10
    (tmp_path / "pretrain.tsv").write_text("s\n")
    assert progress.poll()
    line = progress.line()
    assert line.startswith("[mps] 1/3 stages done") and "running" not in line
    assert abs(progress.remaining_seconds() - (REFERENCE_SECONDS["adapt"] + REFERENCE_SECONDS["report"]) / 10) < 2

    old = tmp_path / "adapt.log"  # a log left by an earlier run does not count as started
    old.write_text("")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert not progress.poll()

    progress.start()
    (tmp_path / "adapt.tsv").write_text("s\n")
    (tmp_path / "report.tsv").write_text("s\n")
    progress.stop("finished")
    last = out.getvalue().strip().splitlines()[-1]
    assert last.startswith("[mps] 3/3 stages done") and last.endswith("finished") and "left" not in last


def test_ablation_jobs_are_estimated_as_their_stage():
    """`snakemake ablation` runs adapt/search/evaluate per variant: each is expected to take
    its stage's time, not the 10 s of a rule of no stage."""
    assert expected_seconds("ablation_adapt", REFERENCE_SECONDS) == REFERENCE_SECONDS["adapt"]
    assert expected_seconds("ablation_evaluate", REFERENCE_SECONDS) == REFERENCE_SECONDS["evaluate"]
    assert expected_seconds("ablation_table", REFERENCE_SECONDS) == 10.0
    jobs = [_Job(rule, "x", None, None) for rule in ("ablation_adapt", "ablation_search")]
    total = Progress(jobs, REFERENCE_SECONDS, out=io.StringIO()).remaining_seconds()
    assert abs(total - REFERENCE_SECONDS["adapt"] - REFERENCE_SECONDS["search"]) < 1
    # without an estimate the line counts stages and promises no time
    assert "left" not in Progress(jobs, {}, out=io.StringIO()).line()
    # an ablation job's own estimate (mps estimate gives one: MPS alone, its set only) wins over its stage's
    own = {**REFERENCE_SECONDS, "ablation_search": 8.0}
    assert expected_seconds("ablation_search", own) == 8.0 and expected_seconds("search", own) == 80.0
    assert expected_seconds("ablation_search", {"search/resnet20": 80.0, "ablation_search/resnet20": 8.0},
                            "resnet20") == 8.0


def test_jobs_side_by_side_share_what_is_left():
    """`snakemake ablation --cores 2` with one thread per job runs two variants at once: the time
    left is the jobs' estimates shared between the jobs running now, not their sum."""
    jobs = [_Job("ablation_adapt", f"v{i}", None, None) for i in range(4)]
    progress = Progress(jobs, REFERENCE_SECONDS, out=io.StringIO())
    assert progress.remaining_seconds() == pytest.approx(4 * REFERENCE_SECONDS["adapt"])  # nothing started
    now = time.time()
    jobs[0].started = jobs[1].started = now
    assert progress.remaining_seconds() == pytest.approx(2 * REFERENCE_SECONDS["adapt"], rel=0.01)
    # both end after twice their estimate (one thread each): the two left take as long again
    for job in jobs[:2]:
        job.started, job.ended = now - 2 * REFERENCE_SECONDS["adapt"], now
    jobs[2].started = jobs[3].started = now
    assert progress.remaining_seconds() == pytest.approx(2 * REFERENCE_SECONDS["adapt"], rel=0.01)


def test_stage_work_follows_this_runs_budgets():
    """The estimate is counted from the run's own params, so a user who doubles a budget is told so."""
    base = parse_params({})
    work = stage_work(base, analog_layers=10)
    more = stage_work(parse_params({"adapt": {"fairness_epochs": 2 * base.adapt.fairness_epochs,
                                              "noise_epochs": 2 * base.adapt.noise_epochs}}), 10)
    assert 1.5 < (more["adapt"] - 40) / (work["adapt"] - 40) < 2.5
    assert more["search"] > work["search"]  # the HWA baseline gets the adaptation's budget
    rep = stage_work(parse_params({"evaluate": {"repeats": 2 * base.evaluate.repeats}}), 10)
    assert abs((rep["evaluate"] - 40) / (work["evaluate"] - 40) - 2) < 1e-9
    lh = stage_work(parse_params({"search": {"lionheart": {"max_rounds": 3}}}), 10)
    assert lh["search"] > work["search"]  # uncapped counts LH.py's least, 2 rounds
    pre = stage_work(parse_params({"pretrain": {"epochs": 20}}), 10)
    assert pre["pretrain"] > work["pretrain"] and pre["adapt"] == work["adapt"]
    # a full-size pretrain epoch of Fashion-MNIST at batch 128: 429 FP32 steps
    assert abs(stage_work(parse_params({"pretrain": {"epochs": 1, "batch_size": 128}}), 10)["pretrain"] - 40 - 429) < 1
    assert set(COST) >= {"fp32_step", "hwa_step", "analog_image"}
    # an ablation variant adapts like the adapt stage but searches with MPS alone and scores its set only
    assert work["ablation_adapt"] == work["adapt"]
    assert 40 < work["ablation_search"] < work["search"] / 5 and 40 < work["ablation_evaluate"] < work["evaluate"] / 2


def test_estimate_is_work_times_the_measured_step(tmp_path):
    params = tiny_params()
    step = measure_fp32_step(params, steps=1)
    assert 0 < step < 10
    seconds = estimate_seconds(params, fp32_step=0.5, analog_layers=10)
    assert seconds == {k: 0.5 * v for k, v in stage_work(params, 10).items()}
    # the CLI the Snakefile calls at the start of a run (with the grid's models: one, or several),
    # and what the progress line reads from it
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "config" / "params-tiny.yaml").read_text())  # model.name: resnet8
    # a sweep over models: each model estimated on its own, and each job reads its model's time
    both = estimate(f"{sys.executable} -m mps.cli", str(path), ["resnet8", "resnet20"])
    # (the calibrate/adapt ratio counts each model's weight layers; the measured step cancels out,
    # so the check holds on a loaded machine too)
    ratio = {m: both[f"calibrate/{m}"] / both[f"adapt/{m}"] for m in ("resnet8", "resnet20")}
    assert ratio["resnet20"] > 1.5 * ratio["resnet8"]
    jobs = [_Job("adapt", "fashion-mnist/resnet20/0", None, None, "resnet20")]
    assert Progress(jobs, both, out=io.StringIO()).remaining_seconds() == pytest.approx(both["adapt/resnet20"])
    assert expected_seconds("ablation_adapt", both, "resnet20") == both["adapt/resnet20"]
    # a grid of one model other than model.name (a profile sweeping [resnet20]): that model's work
    one = estimate(f"{sys.executable} -m mps.cli", str(path), ["resnet20"])
    assert set(one) >= {"pretrain", "adapt", "calibrate", "search", "evaluate"} and all(v > 0 for v in one.values())
    assert one["calibrate"] / one["adapt"] == pytest.approx(ratio["resnet20"], rel=0.01)  # (times rounded to 0.1 s)
    assert estimate(f"{sys.executable} -m mps.cli", str(tmp_path / "missing.yaml")) == {}
