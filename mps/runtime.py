"""Process-level runtime concerns shared by every stage: seeds, threads, device, signals.

Kept apart from the stages so each stage body reads as its method only.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
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


def derived_seed(seed: int, name: str) -> int:
    """A seed of its own for the part ``name`` of a run seeded ``seed``.

    Seeding each part (a search method, say) from the run seed and its name makes its random
    draws independent of which parts ran before it in the same process: a resumed stage, or a
    run with a shorter method list, gives each remaining part the draws it has in the full run.
    """
    digest = hashlib.sha256(f"{seed}|{name}".encode()).hexdigest()
    return int(digest[:8], 16) % (2**31 - 1)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a SLURM or container limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_threads(threads: int) -> int:
    """Torch intra-op threads: explicit value, else the Snakemake/OMP hint, else all cores;
    never more than the CPUs available, because oversubscribed OpenMP threads spin and slow
    every kernel down (a rule's ``threads: 4`` under ``--cores 8`` on a 2-core machine)."""
    if threads <= 0:
        threads = int(os.environ.get("OMP_NUM_THREADS") or available_cpus())
    torch.set_num_threads(max(1, min(threads, available_cpus())))
    return torch.get_num_threads()


# --------------------------------------------------------------------------- allocator
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1 << 30       # allocations below 1 GiB come from the heap, not fresh mmaps
TRIM_THRESHOLD = (1 << 31) - 1  # never give freed heap back to the kernel mid-run
TOP_PAD = 1 << 28              # grow the heap in 256 MiB steps


def tune_glibc_malloc() -> bool:
    """Keep large freed blocks in the heap (``mallopt``); False where the C library is not glibc.

    Why: aihwkit's analog forward allocates many large temporaries per layer and batch (the
    im2col matrix, quantised copies of inputs and outputs, noise tensors), each larger than
    glibc's mmap threshold (at most 32 MiB, adaptive).  glibc serves each with a fresh ``mmap``
    and returns it with ``munmap``, so every batch touches fresh zeroed pages: on the 2-core
    benchmark machine about half of the all-analog evaluation time is kernel time spent in page
    faults.  Raising the mmap threshold and the trim threshold keeps freed blocks in the heap for
    reuse.  Nothing numerical changes (the same kernels run on the same values in the same order),
    so accuracies are bit-identical; the cost is that the process keeps its peak heap.

    The same effect without code: start the process with
    ``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_TOP_PAD_=268435456``.

    Measured by ``benchmarks/`` (section 3): 2.6x faster all-analog evaluation on 2 cores.
    """
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = [mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD), mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD),
          mallopt(M_TOP_PAD, TOP_PAD)]
    return all(v == 1 for v in ok)


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
