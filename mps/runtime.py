"""Process-level runtime concerns shared by every stage: seeds, threads, device, signals.

Kept apart from the stages so each stage body reads as its method only.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
from typing import Iterator

import numpy as np
import torch

from mps.config import ConfigError


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM, so cleanup runs exactly as for Ctrl-C."""


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch generator for explicit sampling."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def set_threads(threads: int) -> int:
    """Torch intra-op threads: explicit value, else the Snakemake/OMP hint, else all cores."""
    if threads <= 0:
        threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' requested but no CUDA device is available; fix: set device: auto or cpu")
    return torch.device(name)


def deterministic_algorithms() -> None:
    """Bit-exact reruns on CPU: deterministic kernels where torch has them."""
    torch.use_deterministic_algorithms(True, warn_only=True)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM (a killed Snakemake/DVC/SLURM job) into an exception so finally-blocks run."""

    def handler(signum, frame):  # noqa: ARG001
        raise Interrupted(f"received signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def progress(iterable, desc: str, total: int | None = None):
    """tqdm progress bar on stderr; sparse updates when not attached to a terminal (job logs)."""
    from tqdm import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, leave=False,
                mininterval=0.5 if interactive else 30.0, disable=os.environ.get("MPS_NO_PROGRESS") == "1")
