"""Writing and reading artifacts safely.

Every file a stage produces goes through here so that an interrupted or failing stage never
leaves a partial file under its final name: data is written to a temporary sibling, flushed,
then renamed (atomic on POSIX).  Checkpoints carry a small header (format, kind, model id) so
a truncated or foreign file is reported as such instead of failing deep inside torch.
Provenance (git commit, params digest, package versions) is attached to every artifact.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import torch

from mps.config import ConfigError

CHECKPOINT_FORMAT = "mps-checkpoint/1"
_UMASK = os.umask(0)
os.umask(_UMASK)


class ArtifactError(ConfigError):
    """An input artifact is missing, truncated, corrupted or of the wrong kind."""


# --------------------------------------------------------------------------- atomic writes
def _check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"{directory}: cannot create output folder ({exc.strerror}); fix: choose a writable out_dir") from None
    if not os.access(directory, os.W_OK):
        raise ArtifactError(f"{directory}: output folder is read-only; fix: make it writable or choose another out_dir")


def check_output_dir(directory: str | Path) -> bool:
    """Fail early, before any work, when an output folder cannot be created or written.

    Returns whether the folder was created here, so a caller whose work then fails can
    remove the empty folder again (see :func:`output_dir_guard`).
    """
    directory = Path(directory)
    created = not directory.exists()
    _check_writable(directory)
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ArtifactError(f"{directory}: cannot write in the output folder ({exc.strerror}); "
                            "fix: make it writable, free space, or choose another out_dir") from None
    return created


@contextlib.contextmanager
def output_dir_guard(directory: str | Path | None):
    """Check an output folder before work starts; if the work fails, leave no empty folder behind.

    A failed run must not look like a produced artifact to a workflow manager, and a
    folder that existed before (with earlier results) is never touched.
    """
    if directory is None:
        yield
        return
    directory = Path(directory)
    created = check_output_dir(directory)
    try:
        yield
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                directory.rmdir()  # only succeeds when nothing was written
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    _check_writable(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts should be readable like any file
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ArtifactError(f"{path}: write failed ({exc.strerror}); fix: free disk space or choose another out_dir") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Build a directory under a temporary name; it appears under ``path`` only on success."""
    path = Path(path)
    _check_writable(path.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- json
def read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: {what} not found; fix: run the stage that writes it first")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: {what} is not valid JSON ({exc}); fix: rerun the stage that writes it") from None


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | Path, kind: str, payload: dict[str, Any], provenance: dict[str, Any] | None = None) -> Path:
    obj = {"format": CHECKPOINT_FORMAT, "kind": kind, "provenance": provenance or {}, **payload}
    return atomic_torch_save(path, obj)


def load_checkpoint(path: str | Path, kind: str) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, checking its header."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: {kind} checkpoint not found; fix: run the stage that writes it first")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise ArtifactError(
            f"{path}: unreadable checkpoint ({type(exc).__name__}); it is truncated or not a torch file; "
            "fix: delete it and rerun the stage that writes it"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise ArtifactError(f"{path}: not an mps checkpoint; fix: point to a file written by this pipeline")
    if obj.get("kind") != kind:
        raise ArtifactError(f"{path}: is a {obj.get('kind')!r} checkpoint, expected {kind!r}; fix: pass the right file")
    return obj


# --------------------------------------------------------------------------- provenance
_PACKAGES = ("torch", "aihwkit", "numpy", "mlflow", "snakemake", "dvc", "optuna")


def git_commit(cwd: str | Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    commit = out.stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True)
    return commit + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def provenance(params_digest: str, **extra: Any) -> dict[str, Any]:
    """What produced an artifact: code version, params digest, package versions.

    Deliberately no timestamps, so that the same params and seed give byte-identical files.
    The torch thread count is recorded because CPU reductions (and so the last digits of an
    accuracy) depend on it.
    """
    import torch

    return {"git_commit": git_commit(), "params_digest": params_digest, "packages": package_versions(),
            "torch_threads": torch.get_num_threads(), **extra}
