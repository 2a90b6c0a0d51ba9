"""The per-stage progress lines of a Snakemake run (workflow/scripts/progress.py)."""

from __future__ import annotations

import io
import os
import sys
import time

from conftest import REPO

sys.path.insert(0, str(REPO / "workflow" / "scripts"))
from progress import REFERENCE_SECONDS, Progress, _Job, reference_seconds  # noqa: E402


def test_lines_follow_the_jobs_files_and_the_estimate_scales(tmp_path):
    jobs = [_Job(rule, "fashion-mnist/resnet8/0", str(tmp_path / f"{rule}.log"), str(tmp_path / f"{rule}.tsv"))
            for rule in ("pretrain", "adapt", "report")]
    out = io.StringIO()
    progress = Progress(jobs, out=out, interval=0.05)
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
    its stage's reference time, not the 10 s of a rule of no stage."""
    assert reference_seconds("ablation_adapt") == REFERENCE_SECONDS["adapt"]
    assert reference_seconds("ablation_evaluate") == REFERENCE_SECONDS["evaluate"]
    assert reference_seconds("ablation_table") == 10.0
    jobs = [_Job(rule, "x", None, None) for rule in ("ablation_adapt", "ablation_search")]
    total = Progress(jobs, out=io.StringIO()).remaining_seconds()
    assert abs(total - REFERENCE_SECONDS["adapt"] - REFERENCE_SECONDS["search"]) < 1
