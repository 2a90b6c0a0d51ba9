"""One progress line per stage start and end of a Snakemake run, with an estimate of what remains.

Started from the Snakefile's ``onstart`` hook with the jobs Snakemake is about to run; a
daemon thread watches each job's files (its ``log:`` appears when it starts, its
``benchmark:`` when it ends) and prints, whenever that changes::

    [mps] 3/9 stages done in 1m05s; running: adapt fashion-mnist/resnet8/s0; about 4m left

The estimate is each remaining stage's wall time in the reference run
(``benchmarks/reference/2026-11-29-2core-epyc.md``, default params on 2 cores), scaled by how
this run's finished long stages (20 s or more in the reference) compared with their reference
times; it sharpens as stages end.
Workflow code, not library code: ``mps/`` knows nothing of it.
"""

from __future__ import annotations

import os
import sys
import threading
import time

# Wall seconds per stage of the reference run (default params, 2 cores); aggregate is instant.
REFERENCE_SECONDS = {"prepare_data": 5.0, "pretrain": 205.0, "adapt": 86.4, "calibrate": 25.5, "search": 79.0,
                     "evaluate": 173.3, "report": 4.9, "aggregate": 2.0}


def reference_seconds(rule: str) -> float:
    """The reference wall time of a rule's stage: an ablation job (``ablation_adapt``, ...) runs
    the same stage as the main rule of that name; a rule of no stage counts 10 s."""
    return REFERENCE_SECONDS.get(rule.removeprefix("ablation_"), 10.0)


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class _Job:
    def __init__(self, rule: str, label: str, log: str | None, benchmark: str | None):
        self.rule, self.label, self.log, self.benchmark = rule, label, log, benchmark
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

    def __init__(self, jobs: list[_Job], out=sys.stderr, interval: float = 2.0):
        self.jobs, self.out, self.interval = jobs, out, interval
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
            jobs.append(_Job(job.rule.name, label, str(job.log[0]) if job.log else None,
                             str(job.benchmark) if job.benchmark else None))
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
        # scale by the long stages only: a short one (prepare-data, report) is mostly start-up
        done = [j for j in self.jobs if j.ended is not None and reference_seconds(j.rule) >= 20.0]
        ref_done = sum(reference_seconds(j.rule) for j in done)
        took = sum(j.ended - j.started for j in done)
        scale = took / ref_done if done and ref_done > 0 else 1.0
        left = 0.0
        now = time.time()
        for job in self.jobs:
            if job.ended is None:
                expected = reference_seconds(job.rule) * scale
                left += max(expected - (now - job.started), 0.0) if job.started else expected
        return left

    def line(self) -> str:
        done = sum(j.ended is not None for j in self.jobs)
        running = [j.name for j in self.jobs if j.started is not None and j.ended is None]
        text = f"[mps] {done}/{len(self.jobs)} stages done in {_duration(time.time() - self.t0)}"
        if running:
            text += "; running: " + ", ".join(running)
        if done < len(self.jobs):
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
