"""One progress line per stage start and end of a Snakemake run, with an estimate of what remains.

Started from the Snakefile's ``onstart`` hook with the jobs Snakemake is about to run; a
daemon thread watches each job's files (its ``log:`` appears when it starts, its
``benchmark:`` when it ends) and prints, whenever that changes::

    [mps] 3/9 stages done in 1m05s; running: adapt fashion-mnist/resnet8/s0; about 4m left

The estimate starts from ``mps estimate`` (:mod:`mps.stage_time`): each stage's work counted
from this run's params, times one FP32 training step of the run's model measured on this
machine at the start.  As stages end it is rescaled by how long this run's finished long
stages (20 s or more expected) took against their estimates, so it sharpens as the run goes.
Workflow code, not library code: ``mps/`` knows nothing of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

UNKNOWN_STAGE_SECONDS = 10.0  # a rule of no stage (all, a sweep's summary table)


def estimate(mps: str, params: str, models: list[str] | None = None) -> dict[str, float]:
    """Expected seconds per stage from ``mps estimate`` (an empty dict, and a note, if it fails:
    the line then counts stages without a time estimate).  With several ``models`` (a sweep over
    models) each is estimated on its own, keyed ``<stage>/<model>``: a ResNet20 stage is not a
    ResNet8 one.  A sweep of one model is estimated as that model, not as ``model.name`` (a
    profile may sweep ``[resnet20]`` while its scalar model stays ``resnet8``)."""
    cmd = [*mps.split(), "estimate", "--params", params]
    models = list(models or [])
    cmd += [arg for m in models for arg in ("--model", m)]
    try:
        out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True,
                                        timeout=300 * max(1, len(models))).stdout.strip().splitlines()[-1])
        if len(models) > 1:
            return {f"{stage}/{model}": float(v) for model, stages in out.items() for stage, v in stages.items()}
        if models:
            out = out[models[0]]
        return {str(k): float(v) for k, v in out.items()}
    except (OSError, subprocess.SubprocessError, ValueError, IndexError, KeyError, TypeError, AttributeError) as exc:
        print(f"[mps] no time estimate ({type(exc).__name__}); the progress line counts stages only", file=sys.stderr)
        return {}


def expected_seconds(rule: str, expected: dict[str, float], model: str | None = None) -> float:
    """A rule's expected wall time: its model's (``<stage>/<model>`` keys of a sweep over models),
    else its stage's.  An ablation job (``ablation_search``, ...) has its own estimate (MPS alone,
    its set only: :func:`mps.stage_time.stage_work`), else that of the main stage it runs; a rule
    of no stage counts 10 s."""
    for key in (rule, rule.removeprefix("ablation_")):
        for name in (f"{key}/{model}", key):
            if name in expected:
                return expected[name]
    return UNKNOWN_STAGE_SECONDS


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class _Job:
    def __init__(self, rule: str, label: str, log: str | None, benchmark: str | None, model: str | None = None):
        self.rule, self.label, self.log, self.benchmark, self.model = rule, label, log, benchmark, model
        self.started: float | None = None
        self.ended: float | None = None

    @property
    def name(self) -> str:
        return f"{self.rule.replace('_', '-')} {self.label}".strip()


def _touched_since(path: str | None, t0: float) -> float | None:
    try:
        mtime = os.stat(path).st_mtime if path else None
    except OSError:
        return None
    return mtime if mtime is not None and mtime >= t0 - 1 else None


class Progress:
    """Watches the jobs of one run; :meth:`line` is the current progress line."""

    def __init__(self, jobs: list[_Job], expected: dict[str, float] | None = None, out=sys.stderr,
                 interval: float = 2.0):
        self.jobs, self.out, self.interval = jobs, out, interval
        self.expected = expected or {}
        self.t0 = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_snakemake(cls, dag_jobs, **kwargs) -> "Progress":
        jobs = []
        for job in dag_jobs:
            if not job.benchmark:  # target rules (all, default): nothing runs
                continue
            label = "/".join(str(v) for _, v in job.wildcards.items()) if job.wildcards else ""
            model = job.wildcards.get("model") if job.wildcards else None
            jobs.append(_Job(job.rule.name, label, str(job.log[0]) if job.log else None,
                             str(job.benchmark) if job.benchmark else None, model))
        return cls(jobs, **kwargs)

    def poll(self) -> bool:
        """Update each job's state from its files; True when something changed."""
        changed = False
        for job in self.jobs:
            if job.started is None and (t := _touched_since(job.log, self.t0)) is not None:
                job.started, changed = t, True
            if job.ended is None and (t := _touched_since(job.benchmark, self.t0)) is not None:
                job.ended, changed = t, True
                job.started = job.started or self.t0
        return changed

    def remaining_seconds(self) -> float:
        """Wall seconds left: each unfinished job's estimate, rescaled by how long this run's
        finished long stages took against theirs (a short one, prepare-data or report, is mostly
        start-up), less what a running job has done; jobs running side by side now (``--cores``
        over each job's threads, as the ablation's independent variants) are taken to share the
        rest the same way, so the sum is divided by their number."""
        done = [j for j in self.jobs if j.ended is not None and self.seconds(j) >= 20.0]
        ref_done = sum(self.seconds(j) for j in done)
        took = sum(j.ended - j.started for j in done)
        scale = took / ref_done if done and ref_done > 0 else 1.0
        left = 0.0
        now = time.time()
        for job in self.jobs:
            if job.ended is None:
                expected = self.seconds(job) * scale
                left += max(expected - (now - job.started), 0.0) if job.started else expected
        side_by_side = sum(j.started is not None and j.ended is None for j in self.jobs)
        return left / max(side_by_side, 1)

    def seconds(self, job: _Job) -> float:
        return expected_seconds(job.rule, self.expected, job.model)

    def line(self) -> str:
        done = sum(j.ended is not None for j in self.jobs)
        running = [j.name for j in self.jobs if j.started is not None and j.ended is None]
        text = f"[mps] {done}/{len(self.jobs)} stages done in {_duration(time.time() - self.t0)}"
        if running:
            text += "; running: " + ", ".join(running)
        if done < len(self.jobs) and self.expected:
            text += f"; about {_duration(self.remaining_seconds())} left"
        return text

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            if self.poll():
                print(self.line(), file=self.out, flush=True)

    def start(self) -> "Progress":
        print(self.line(), file=self.out, flush=True)
        self._thread = threading.Thread(target=self._watch, name="mps-progress", daemon=True)
        self._thread.start()
        return self

    def stop(self, outcome: str) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.poll()
        print(f"{self.line()} — {outcome}", file=self.out, flush=True)
