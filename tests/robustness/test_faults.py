"""Fault injection through the CLI, as a user meets it: malformed params, broken data, bad
checkpoints and mapping files, interruptions, diverging training, unwritable outputs.

Every fault must end in a one-line error naming the problem and the fix (exit 2; 3 for a
diverged training; 130 for an interruption), with nothing written under a final output name.
"""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, TINY_PARAMS

pytestmark = pytest.mark.robustness
MPS = [sys.executable, "-m", "mps.cli"]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{REPO}:{REPO / 'tests'}"
    env["MPS_NO_MLFLOW"] = "1"
    env["MPS_NO_PROGRESS"] = "1"
    env.update(extra or {})
    return env


def mps(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*MPS, *args], cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=timeout)


def write_params(tmp: Path, **changes) -> Path:
    raw = yaml.safe_load(TINY_PARAMS.read_text())
    raw["hardware_profile"] = str(REPO / "hardware" / "pcm_default.yaml")  # tests run outside the repo
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def assert_clean_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    err = proc.stderr.strip().splitlines()
    assert err, "an error message on stderr"
    last = err[-1]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for needle in needles:
        assert needle in last, (needle, last)


# --------------------------------------------------------------------------- params
BAD_PARAMS = [
    ({"bogus_key": 1}, "bogus_key"),
    ({"pretrain.epochs": "ten"}, "pretrain.epochs"),
    ({"pretrain.epochs": 0}, "pretrain.epochs"),
    ({"pretrain.epochs": -3}, "pretrain.epochs"),
    ({"evaluate.drift_times": [0.0, 86400.0]}, "evaluate.drift_times"),
    ({"calibrate.drift_times": [-1.0]}, "calibrate.drift_times"),
    ({"space.operators": []}, "space.operators"),
    ({"model.name": "resnet9000"}, "model.name"),
    ({"data.dataset": "imagenet"}, "data.dataset"),
    ({"model.name": "no_such_pkg.models:net"}, "model.name"),
    ({"hardware_profile": "hardware/missing.yaml"}, "missing.yaml"),
    ({"space.search_space": "mpas"}, "space.search_space"),
    # second round: numbers finite and in range, lists distinct, names that point at something
    ({"pretrain.lr": float("inf")}, "pretrain.lr"),
    ({"search.alpha_lr": float("nan")}, "search.alpha_lr"),
    ({"adapt.evidence_drift_time": float("inf")}, "adapt.evidence_drift_time"),
    ({"evaluate.drift_times": [1.0, float("nan"), 86400.0, 31536000.0]}, "evaluate.drift_times"),
    ({"calibrate.drift_times": [86400.0, 86400.0]}, "calibrate.drift_times"),
    ({"adapt.noise_ramp.start_fraction": 1.5}, "adapt.noise_ramp.start_fraction"),
    ({"report.max_acc_drop": 150.0}, "report.max_acc_drop"),
    ({"seed": 2**40}, "seed"),
    ({"out_dir": ""}, "out_dir"),
    ({"space.operators": ["analog", "int8", "int8"]}, "space.operators"),
    ({"space.last_layer": ["analog", "int9"]}, "space.last_layer"),
    ({"space.overrides": {"layer9.*": ["int8"]}}, "space.overrides"),
    ({"space.overrides": {"layer3.*": ["fp16", "fp16"]}}, "space.overrides"),
    ({"search.baselines": ["fp32", "greedy", "fp32"]}, "search.baselines"),
    ({"sweep.seeds": [0, 1, 0]}, "sweep.seeds"),
    ({"sweep.models": ["resnet8", "resnet9000"]}, "sweep.models"),
    ({"sweep.models": ["resnet8", "no_such_pkg.models:net"]}, "sweep.models"),
]


def mps_in_process(*args: str, cwd: Path, capsys, monkeypatch) -> subprocess.CompletedProcess:
    """``mps <args>`` through the CLI's own ``main`` in this process, as a finished process
    (exit code, stdout, stderr): the same parsing, validation and messages as the command
    without a new interpreter importing torch (seconds per case on 2 cores)."""
    from mps.cli import main

    monkeypatch.chdir(cwd)
    monkeypatch.setenv("MPS_NO_MLFLOW", "1")
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(["mps", *args], code, captured.out, captured.err)


@pytest.mark.parametrize("changes,key", BAD_PARAMS, ids=[k for _, k in BAD_PARAMS])
def test_bad_params_exit_2_before_any_work(tmp_path, changes, key, capsys, monkeypatch):
    params = write_params(tmp_path, **changes)
    out = tmp_path / "out"
    proc = mps_in_process("prepare-data", "--params", str(params), "--out", str(out), cwd=tmp_path, capsys=capsys,
                          monkeypatch=monkeypatch)
    assert_clean_error(proc, 2, key, "fix")
    assert not out.exists()


def test_bad_params_fail_the_same_in_a_fresh_process(tmp_path):
    """The installed command, not only ``main``: one bad params file through a new process."""
    params = write_params(tmp_path, **{"pretrain.epochs": 0})
    proc = mps("prepare-data", "--params", str(params), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert_clean_error(proc, 2, "pretrain.epochs", "fix")
    assert not (tmp_path / "out").exists()


def test_tile_size_zero_in_hardware_profile(tmp_path):
    profile = yaml.safe_load((REPO / "hardware" / "pcm_default.yaml").read_text())
    profile["analog"]["tile_rows"] = 0
    (tmp_path / "hw.yaml").write_text(yaml.safe_dump(profile))
    params = write_params(tmp_path, hardware_profile=str(tmp_path / "hw.yaml"))
    proc = mps("prepare-data", "--params", str(params), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert_clean_error(proc, 2, "analog.tile_rows", "fix")
    assert not (tmp_path / "out").exists()


def test_missing_params_file_and_bad_yaml(tmp_path):
    proc = mps("prepare-data", "--params", str(tmp_path / "nope.yaml"), "--out", "x", cwd=tmp_path)
    assert_clean_error(proc, 2, "nope.yaml", "fix")
    (tmp_path / "bad.yaml").write_text("data: [unclosed\n")
    proc = mps("prepare-data", "--params", str(tmp_path / "bad.yaml"), "--out", "x", cwd=tmp_path)
    assert_clean_error(proc, 2, "YAML", "fix")


# --------------------------------------------------------------------------- data
def test_missing_data_folder(tmp_path):
    params = write_params(tmp_path, **{"data.root": str(tmp_path / "nowhere")})
    proc = mps("prepare-data", "--params", str(params), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert_clean_error(proc, 2, "nowhere", "fix")
    assert not (tmp_path / "out").exists()


def _fmnist_copy(tmp: Path) -> Path:
    src = Path("/usr/share/datasets/fashion-mnist")
    if not src.is_dir():
        pytest.skip("dataset-fashion-mnist not installed")
    dst = tmp / "fmnist"
    shutil.copytree(src, dst)
    return dst


def test_truncated_idx_file(tmp_path):
    root = _fmnist_copy(tmp_path)
    f = root / "t10k-labels-idx1-ubyte.gz"
    f.write_bytes(f.read_bytes()[:200])
    params = write_params(tmp_path, **{"data.root": str(root)})
    proc = mps("prepare-data", "--params", str(params), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert_clean_error(proc, 2, "t10k-labels", "fix")
    assert not (tmp_path / "out").exists()


def test_label_out_of_range(tmp_path):
    root = _fmnist_copy(tmp_path)
    f = root / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(f.read_bytes()))
    raw[8 + 5] = 42
    f.write_bytes(gzip.compress(bytes(raw)))
    params = write_params(tmp_path, **{"data.root": str(root)})
    proc = mps("prepare-data", "--params", str(params), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert_clean_error(proc, 2, "label", "fix")


def test_tampered_prepared_data_is_refused_by_the_next_stage(tmp_path, tiny_data):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    with open(data / "train.npz", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\xff\x00\xff")
    params = write_params(tmp_path)
    proc = mps("pretrain", "--params", str(params), "--data", str(data), "--out", str(tmp_path / "pre"), cwd=tmp_path)
    assert_clean_error(proc, 2, "train.npz", "prepare-data")
    assert not (tmp_path / "pre" / "model.pt").exists()


# --------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("damage", ["truncated", "foreign", "other_kind"])
def test_bad_checkpoint_is_a_clear_error(tmp_path, tiny_data, tiny_pretrained, damage):
    ckpt = tmp_path / "model.pt"
    if damage == "truncated":
        ckpt.write_bytes(tiny_pretrained.read_bytes()[:5000])
    elif damage == "foreign":
        torch.save({"weights": torch.zeros(3)}, ckpt)
    else:
        from mps.artifacts import save_checkpoint

        save_checkpoint(ckpt, "supernet", {"state_dict": {}})
    params = write_params(tmp_path)
    proc = mps("adapt", "--params", str(params), "--data", str(tiny_data), "--pretrained", str(ckpt),
               "--out", str(tmp_path / "adapt"), cwd=tmp_path)
    assert_clean_error(proc, 2, str(ckpt), "fix")
    assert not (tmp_path / "adapt" / "supernet.pt").exists()


def test_resume_checkpoint_corrupted_falls_back_to_previous(tmp_path):
    from mps.training import EpochCheckpointer

    ck = EpochCheckpointer(tmp_path / "work", "pretrain-state", "fp")
    ck.save(1, {"x": torch.ones(2)})
    ck.save(2, {"x": torch.full((2,), 2.0)})
    ck.last.write_bytes(ck.last.read_bytes()[:50])
    notes = []
    epoch, state = ck.load(log=notes.append)
    assert epoch == 1 and torch.equal(state["x"], torch.ones(2))
    assert any("ignoring" in n for n in notes)


# --------------------------------------------------------------------------- mapping files
def _mapping_case(tiny_supernet, tmp_path, mutate):
    import json

    from mps.supernet import MappingFile, load_mapping, load_supernet

    supernet, _ = load_supernet(tiny_supernet)
    layers = supernet.uniform_mapping("int8")
    raw = MappingFile(supernet.meta["model_id"], "m", "test", layers).to_json()
    mutate(raw)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(raw))
    return lambda: load_mapping(path, supernet.meta["model_id"], supernet.allowed)


def test_mapping_unknown_and_missing_layers_are_named(tiny_supernet, tmp_path):
    from mps.supernet import MappingError

    def mutate(raw):
        first = next(iter(raw["layers"]))
        raw["layers"].pop(first)
        raw["layers"]["not.a.layer"] = "int8"

    load = _mapping_case(tiny_supernet, tmp_path, mutate)
    with pytest.raises(MappingError) as err:
        load()
    assert "not.a.layer" in str(err.value) and "conv1" in str(err.value) and "fix" in str(err.value)


@pytest.mark.parametrize("op,needle", [("quantum", "unknown operators"), ("skip", "not allowed")])
def test_mapping_unknown_or_forbidden_operator(tiny_supernet, tmp_path, op, needle):
    from mps.supernet import MappingError

    def mutate(raw):
        last = list(raw["layers"])[-1]          # the classifier: skip is not allowed there
        raw["layers"][last] = op

    with pytest.raises(MappingError, match=needle):
        _mapping_case(tiny_supernet, tmp_path, mutate)()


def test_mapping_for_another_model(tiny_supernet, tmp_path):
    from mps.supernet import MappingError

    def mutate(raw):
        raw["model_id"] = "resnet20@cifar10"

    with pytest.raises(MappingError, match="resnet20@cifar10"):
        _mapping_case(tiny_supernet, tmp_path, mutate)()


# --------------------------------------------------------------------------- divergence
def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path, tiny_data):
    params = write_params(tmp_path, **{"model.name": "user_models:diverges_in_second_epoch", "pretrain.epochs": 3})
    out = tmp_path / "pre"
    work = tmp_path / "work"
    proc = mps("pretrain", "--params", str(params), "--data", str(tiny_data), "--out", str(out),
               "--work-dir", str(work), cwd=tmp_path)
    assert_clean_error(proc, 3, "loss is nan", "checkpoint", "fix")
    assert not (out / "model.pt").exists()
    from mps.artifacts import load_checkpoint

    assert load_checkpoint(work / "last.pt", "pretrain-state")["epoch"] == 1


# --------------------------------------------------------------------------- interruption
def _interrupt_when(proc: subprocess.Popen, marker: Path, sig: int, timeout: float = 240) -> None:
    start = time.time()
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"finished before the interruption: {proc.stderr.read()[-2000:]}")
        if time.time() - start > timeout:
            proc.kill()
            raise AssertionError("no checkpoint appeared")
        time.sleep(0.05)
    proc.send_signal(sig)


def _reference_interrupted_resumed(tmp_path: Path, stage: str, args: list[str], marker: str, sig: int,
                                   finals: tuple[str, ...], ref: Path | None = None
                                   ) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """Run ``stage`` once uninterrupted (into ref/; or take ``ref``, a finished run of the same
    command), once interrupted by ``sig`` as soon as ``marker`` appears in its work folder (into
    out/), then rerun it to resume.

    Checks the interruption contract on the way: exit 130, none of ``finals`` under out/, no
    temporary files left. Returns (ref, out, the resumed process).
    """
    out, work = tmp_path / "out", tmp_path / "work"
    if ref is None:
        ref = tmp_path / "ref"
        done = mps(stage, *args, "--out", str(ref), "--work-dir", str(tmp_path / "ref-work"), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    cmd = [*MPS, stage, *args, "--out", str(out), "--work-dir", str(work)]
    # a foreground process: SIGINT at its default even when the test run itself was started in the
    # background (a shell's `cmd &` starts children with SIGINT ignored, and Python keeps that)
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _interrupt_when(proc, work / marker, sig)
    proc.wait(timeout=120)
    assert proc.returncode == 130, proc.stderr.read()[-2000:]
    assert not any((out / name).exists() for name in finals)
    assert not list(out.glob(".*.tmp")) if out.exists() else True
    resumed = mps(stage, *args, "--out", str(out), "--work-dir", str(work), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    return ref, out, resumed


LONG_PRETRAIN = {"pretrain.epochs": 10}  # long enough to be caught mid-run


@pytest.fixture(scope="module")
def long_pretrain_reference(tiny_data, tmp_path_factory) -> Path:
    """One uninterrupted run of the long pretraining, the reference of both signals' runs."""
    tmp = tmp_path_factory.mktemp("pretrain-ref")
    params = write_params(tmp, **LONG_PRETRAIN)
    done = mps("pretrain", "--params", str(params), "--data", str(tiny_data), "--out", str(tmp / "ref"),
               "--work-dir", str(tmp / "ref-work"), cwd=tmp)
    assert done.returncode == 0, done.stderr
    return tmp / "ref"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_pretrain_resumes_to_the_same_result(tmp_path, tiny_data, long_pretrain_reference, sig):
    params = write_params(tmp_path, **LONG_PRETRAIN)
    ref, out, resumed = _reference_interrupted_resumed(
        tmp_path, "pretrain", ["--params", str(params), "--data", str(tiny_data)], "previous.pt", sig,
        ("model.pt", "metrics.json"), ref=long_pretrain_reference)
    assert "resuming after epoch" in resumed.stdout
    a = torch.load(ref / "model.pt", weights_only=False)["state_dict"]
    b = torch.load(out / "model.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _assert_same_supernet_state(a: dict, b: dict) -> None:
    """Every weight, buffer and analog tile weight equal.

    aihwkit's ``analog_ctx`` entry is a shape-only placeholder over uninitialised memory
    (its values mean nothing); the analog weights live in ``analog_tile_state``.
    """
    assert a.keys() == b.keys()
    analog = 0
    for k in a:
        if k.endswith("analog_ctx"):
            continue
        if torch.is_tensor(a[k]):
            assert torch.equal(a[k], b[k]), k
        elif isinstance(a[k], dict) and "analog_tile_weights" in a[k]:
            analog += 1
            assert torch.equal(a[k]["analog_tile_weights"], b[k]["analog_tile_weights"]), k
    assert analog > 0


def test_interrupted_adapt_resumes_to_the_same_result(tmp_path, tiny_data, tiny_pretrained):
    # 3 fairness steps, then 9 + 1 noise steps (a whole epoch of the tiny split and a partial one)
    params = write_params(tmp_path, **{"adapt.fairness_epochs": 0.34, "adapt.noise_epochs": 1.12,
                                       "adapt.evidence_examples": 50})
    ref, out, resumed = _reference_interrupted_resumed(
        tmp_path, "adapt", ["--params", str(params), "--data", str(tiny_data), "--pretrained", str(tiny_pretrained)],
        "last.pt", signal.SIGTERM, ("supernet.pt", "metrics.json", "evidence.json"))
    assert "resuming after epoch" in resumed.stdout
    a = torch.load(ref / "supernet.pt", weights_only=False)["state_dict"]
    b = torch.load(out / "supernet.pt", weights_only=False)["state_dict"]
    _assert_same_supernet_state(a, b)


# --------------------------------------------------------------------------- unwritable outputs
def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if res.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")


@pytest.mark.parametrize("kind", ["read-only", "full"])
def test_unwritable_output_directory(tmp_path, tiny_data, kind):
    mnt = tmp_path / "mnt"
    _mount_tmpfs(mnt, "ro,size=1m" if kind == "read-only" else "size=64k")
    try:
        params = write_params(tmp_path, **{"pretrain.epochs": 1})
        proc = mps("pretrain", "--params", str(params), "--data", str(tiny_data), "--out", str(mnt / "pre"),
                   "--work-dir", str(tmp_path / "work"), cwd=tmp_path)
        assert_clean_error(proc, 2, str(mnt), "fix")
        assert not (mnt / "pre" / "model.pt").exists()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# --------------------------------------------------------------------------- MLflow status
def test_failed_stage_is_marked_failed_in_mlflow(tmp_path, tiny_data, mlflow_uri):
    from mlflow.tracking import MlflowClient

    params = write_params(tmp_path)
    env = _env({"MLFLOW_TRACKING_URI": mlflow_uri})
    env.pop("MPS_NO_MLFLOW")
    proc = mps("adapt", "--params", str(params), "--data", str(tiny_data), "--pretrained", str(tmp_path / "none.pt"),
               "--out", str(tmp_path / "adapt"), cwd=tmp_path, env=env)
    assert proc.returncode == 2
    client = MlflowClient(tracking_uri=mlflow_uri)
    exp = client.get_experiment_by_name("mps-tiny")
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("mps.stage") == "adapt"]
    assert runs and runs[0].info.status == "FAILED"
    assert "none.pt" in runs[0].data.tags["mps.error"]


def test_interrupted_evaluate_leaves_no_output_and_resumes_to_the_same_tables(tmp_path, tiny_data, tiny_pretrained,
                                                                               tiny_supernet):
    from mps.supernet import MappingFile, load_supernet

    supernet, _ = load_supernet(tiny_supernet)
    maps = tmp_path / "mappings"
    maps.mkdir()
    for i, op in enumerate(["int8", "fp16", "analog"]):
        MappingFile(supernet.meta["model_id"], f"m{i}", op, supernet.uniform_mapping(op)).save(maps / f"m{i}.json")
    params = write_params(tmp_path, **{"evaluate.repeats": 1, "evaluate.drift_times": [86400.0]})
    ref, out, _ = _reference_interrupted_resumed(
        tmp_path, "evaluate", ["--params", str(params), "--data", str(tiny_data), "--supernet", str(tiny_supernet),
                               "--pretrained", str(tiny_pretrained), "--mappings", str(maps)],
        "evaluate-partial.json", signal.SIGTERM, ("results.csv", "drift.csv", "metrics.json", "methods.json"))
    for name in ("results.csv", "drift.csv", "metrics.json", "methods.json"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
