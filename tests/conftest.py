"""Shared fixtures: a tiny real data set (Fashion-MNIST subset), a tiny pretrained model and a
tiny supernet, built once per test session; and an isolated MLflow store per test session.

The tiny profile (``config/params-tiny.yaml``) is what the end-to-end tests run too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TINY_PARAMS = REPO / "config" / "params-tiny.yaml"
FMNIST = Path("/usr/share/datasets/fashion-mnist")

os.environ.setdefault("MPS_NO_PROGRESS", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def assert_same_output_distribution(a, b) -> None:
    """Samples (seeds x outputs) of two engines: per output, mean and std agree within their
    standard errors (|z| < 2 for >= 90 % of outputs, 95 % expected, and no output beyond
    |z| = 6.5: with ~10^4 outputs of ~24 ADC-quantised samples the largest |z| of equal
    distributions reaches 5.3, because an output with few distinct levels has a noisy variance)."""
    a, b = a.double(), b.double()
    n = a.shape[0]
    z_mean = (a.mean(0) - b.mean(0)) / (a.var(0) / n + b.var(0) / n + 1e-30).sqrt()
    z_std = (a.std(0) - b.std(0)) / (a.var(0) / (2 * (n - 1)) + b.var(0) / (2 * (n - 1)) + 1e-30).sqrt()
    for z in (z_mean, z_std):
        assert (z.abs() < 2).double().mean().item() >= 0.90
        assert z.abs().max().item() < 6.5


def tiny_params(**overrides):
    from mps.config import load_params

    return load_params(TINY_PARAMS, overrides)


# What Python and pytest themselves write while tests import and run (bytecode, pytest's cache),
# and the environment (a folder that may hold a whole venv): not the tests' doing.
_TREE_CHECK_SKIP = {"__pycache__", ".pytest_cache", ".venv"}


def _tree_state(repo: Path) -> dict[str, str] | None:
    """What the tests must leave as they found it: ``git status --porcelain --ignored`` (new,
    deleted, modified and ignored entries), the content of tracked changes (``git diff``), and
    size and mtime of every file under untracked or ignored entries (a test writing into an
    existing ``results/`` or ``mlartifacts/`` changes no status line).  ``None`` outside git."""
    try:
        status = subprocess.run(["git", "status", "--porcelain", "--ignored", "-z"], cwd=repo, capture_output=True,
                                timeout=60)
        diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=repo, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if status.returncode != 0:
        return None
    state = {"git diff HEAD": hashlib.sha256(diff.stdout).hexdigest()}
    for entry in status.stdout.decode(errors="replace").split("\0"):
        code, rel = entry[:2], entry[3:].rstrip("/")
        if not rel or set(Path(rel).parts) & _TREE_CHECK_SKIP:
            continue
        state[rel] = code
        top = repo / rel
        if code in ("??", "!!") and top.is_dir() and not top.is_symlink():
            for root, dirs, files in os.walk(top):
                dirs[:] = [d for d in dirs if d not in _TREE_CHECK_SKIP]
                for name in files:
                    path = Path(root) / name
                    try:
                        st = path.lstat()
                    except OSError:
                        continue
                    state[str(path.relative_to(repo))] = f"{code} {st.st_size} {st.st_mtime_ns}"
    return state


@pytest.fixture(scope="session", autouse=True)
def _tree_left_as_found():
    """Tests write only under their temporary folders: the repository's working tree (tracked
    and ignored files alike: ``mlartifacts/``, ``results/``, ``mlflow.db``...) is the same after
    the session as before it; otherwise the session fails at its end, naming what changed."""
    before = _tree_state(REPO)
    yield
    after = _tree_state(REPO)
    if before is None or after is None:
        return
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        shown = ", ".join(f"{k} ({before.get(k, 'absent')} -> {after.get(k, 'absent')})" for k in changed[:10])
        pytest.fail(f"the tests changed the working tree {REPO}: {shown}"
                    + (f" and {len(changed) - 10} more" if len(changed) > 10 else ""), pytrace=False)


@pytest.fixture(scope="session")
def mlflow_db(tmp_path_factory) -> str:
    """One migrated MLflow SQLite store per session (a fresh one takes seconds to migrate);
    tests copy it so they stay independent."""
    import mlflow
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow") / "template.db"
    uri = f"sqlite:///{path}"
    MlflowClient(tracking_uri=uri).search_experiments()
    mlflow.set_tracking_uri(None)
    return str(path)


@pytest.fixture
def mlflow_uri(mlflow_db, tmp_path, monkeypatch) -> str:
    db = tmp_path / "mlflow.db"
    shutil.copy(mlflow_db, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MPS_NO_MLFLOW", raising=False)
    return uri


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """Prepared tiny Fashion-MNIST subset (real images from the Debian package)."""
    if not FMNIST.is_dir():
        pytest.skip("dataset-fashion-mnist is not installed (make setup installs it)")
    from mps.data import prepare_dataset

    out = tmp_path_factory.mktemp("data") / "fashion-mnist"
    prepare_dataset(tiny_params().data, out)
    return out


@pytest.fixture(scope="session")
def tiny_pretrained(tiny_data, tmp_path_factory) -> Path:
    """A briefly trained resnet8 checkpoint (the tiny profile's pretrain settings)."""
    from mps.stages.pretrain import run
    from mps.tracking import NullTracker

    out = tmp_path_factory.mktemp("pretrain")
    run(tiny_params(), tiny_data, out, out / "work", NullTracker())
    return out / "model.pt"


@pytest.fixture(scope="session")
def tiny_supernet(tiny_pretrained, tmp_path_factory) -> Path:
    """A converted (not adapted) supernet checkpoint of the tiny pretrained model; stages
    downstream of adapt accept any supernet checkpoint, so their tests need not adapt."""
    from mps.artifacts import provenance
    from mps.stages.common import hardware_profile
    from mps.stages.pretrain import load_pretrained
    from mps.supernet import convert_to_supernet, save_supernet

    params = tiny_params()
    model, ckpt = load_pretrained(tiny_pretrained)
    profile = hardware_profile(params)
    meta = {"model_name": ckpt["model_name"], "model_id": ckpt["model_id"], "num_classes": ckpt["num_classes"],
            "data_fingerprint": ckpt["data_fingerprint"]}
    supernet = convert_to_supernet(model, params.space, profile, tuple(ckpt["image_shape"]), meta)
    path = tmp_path_factory.mktemp("adapt") / "supernet.pt"
    save_supernet(path, supernet, params.space, profile, provenance(params.digest()))
    return path


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(2)
    yield
