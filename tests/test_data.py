"""Tests of mps.data: readers, split, manifest/checksums, corruption handling, augmentation.

The sources are built here as tiny but format-exact files (gzipped IDX, CIFAR pickles) so
every corruption case can be produced on purpose; one test reads Debian's real files.
"""

from __future__ import annotations

import gzip
import json
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mps import data
from mps.artifacts import sha256_file
from mps.config import ConfigError, DataConfig, SubsetConfig
from mps.data import DataError

REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist")


# --------------------------------------------------------------------------- builders
def idx_bytes(arr: np.ndarray, magic: bytes | None = None, dims: tuple[int, ...] | None = None) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    dims = arr.shape if dims is None else dims
    magic = bytes([0, 0, 0x08, len(dims)]) if magic is None else magic
    return magic + np.asarray(dims, dtype=">u4").tobytes() + arr.tobytes()


def labelled_images(per_class: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(10), per_class)
    rng.shuffle(y)
    x = rng.integers(0, 256, size=(len(y), *shape), dtype=np.uint8)
    return x, y


def make_fmnist(root: Path, train_per_class: int = 12, test_per_class: int = 4) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, per_class, seed in (("train", train_per_class, 1), ("t10k", test_per_class, 2)):
        x, y = labelled_images(per_class, (28, 28), seed)
        (root / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x), mtime=0))
        (root / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(y), mtime=0))
    return root


def cifar_batch(x: np.ndarray, y: np.ndarray) -> bytes:
    return pickle.dumps({b"batch_label": b"synthetic", b"labels": [int(v) for v in y],
                         b"data": x.reshape(len(x), -1), b"filenames": [b"f.png"] * len(y)}, protocol=2)


def make_cifar(root: Path, per_class_per_batch: int = 2, test_per_class: int = 3) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        x, y = labelled_images(per_class_per_batch, (3, 32, 32), 10 + i)
        (folder / f"data_batch_{i}").write_bytes(cifar_batch(x, y))
    x, y = labelled_images(test_per_class, (3, 32, 32), 20)
    (folder / "test_batch").write_bytes(cifar_batch(x, y))
    return root


def fm_cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(dataset="fashion-mnist", root=str(root), **{"val_size": 30, **kw})


def cifar_cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(dataset="cifar10", root=str(root), **{"val_size": 20, **kw})


def folder_bytes(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


# --------------------------------------------------------------------------- shapes, manifest
def test_fashion_mnist_prepare_shapes_dtypes_manifest(tmp_path):
    src = make_fmnist(tmp_path / "src")
    out = tmp_path / "prep"
    manifest = data.prepare_dataset(fm_cfg(src), out)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "test.npz", "train.npz", "val.npz"]
    assert manifest == data.read_manifest(out)
    assert manifest["image_shape"] == [1, 28, 28] and manifest["num_classes"] == 10
    assert manifest["class_names"][0] == "T-shirt/top" and len(manifest["class_names"]) == 10
    assert {s: manifest["splits"][s]["count"] for s in data.SPLITS} == {"train": 90, "val": 30, "test": 40}
    # stratified hold-out: 30 of 120 balanced images -> 3 per class
    assert manifest["splits"]["val"]["per_class"] == [3] * 10
    assert manifest["splits"]["train"]["per_class"] == [9] * 10
    assert manifest["source_root"] == str(src) and manifest["split_seed"] == 0 and manifest["subset"] is None
    for split in data.SPLITS:
        with np.load(out / f"{split}.npz") as npz:
            assert npz["x"].dtype == np.uint8 and npz["x"].shape[1:] == (1, 28, 28)
            assert npz["y"].dtype == np.int64 and len(npz["y"]) == manifest["splits"][split]["count"]
        assert manifest["splits"][split]["sha256"] == sha256_file(out / f"{split}.npz")
    # normalisation constants are those of the train split only, in [0, 1] scale
    with np.load(out / "train.npz") as npz:
        xt = npz["x"].astype(np.float64) / 255
    assert manifest["normalization"]["mean"] == pytest.approx([xt.mean()], abs=1e-12)
    assert manifest["normalization"]["std"] == pytest.approx([xt.std()], abs=1e-12)


def test_test_split_is_the_official_test_set(tmp_path):
    src = make_fmnist(tmp_path / "src")
    data.prepare_dataset(fm_cfg(src), tmp_path / "prep")
    official = data.read_fashion_mnist(src)["test"]
    x, y, _ = data.load_arrays(tmp_path / "prep", "test")
    assert np.array_equal(x, official[0]) and np.array_equal(y, official[1])


def test_train_and_val_partition_the_official_train_set(tmp_path):
    src = make_fmnist(tmp_path / "src")
    data.prepare_dataset(fm_cfg(src), tmp_path / "prep")
    ox, oy = data.read_fashion_mnist(src)["train"]
    xt, yt, _ = data.load_arrays(tmp_path / "prep", "train")
    xv, yv, _ = data.load_arrays(tmp_path / "prep", "val")
    key = lambda x: {row.tobytes() for row in x.reshape(len(x), -1)}  # noqa: E731
    assert key(xt).isdisjoint(key(xv))
    assert key(xt) | key(xv) == key(ox)
    assert sorted(np.concatenate([yt, yv]).tolist()) == sorted(oy.tolist())


@pytest.mark.parametrize("point_at_batches_folder", [False, True])
def test_cifar10_prepare_shapes(tmp_path, point_at_batches_folder):
    root = make_cifar(tmp_path / "src")
    if point_at_batches_folder:
        root = root / "cifar-10-batches-py"
    manifest = data.prepare_dataset(cifar_cfg(root), tmp_path / "prep")
    assert manifest["image_shape"] == [3, 32, 32] and manifest["class_names"][-1] == "truck"
    assert {s: manifest["splits"][s]["count"] for s in data.SPLITS} == {"train": 80, "val": 20, "test": 30}
    assert len(manifest["normalization"]["mean"]) == 3 and len(manifest["normalization"]["std"]) == 3
    ds = data.load_split(tmp_path / "prep", "train")
    x, y = ds.tensors
    assert x.shape == (80, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_cifar_channel_order_is_nchw(tmp_path):
    # CIFAR rows are 1024 red, then 1024 green, then 1024 blue values
    folder = tmp_path / "c" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = np.zeros((10, 3, 32, 32), np.uint8)
        x[:, 0], x[:, 1], x[:, 2] = 10, 20, 30
        x[:, 0, 0, 1] = 99  # red, row 0, column 1
        (folder / name).write_bytes(cifar_batch(x, np.arange(10)))
    split = data.read_cifar10(tmp_path / "c")
    x = split["test"][0]
    assert x.shape == (10, 3, 32, 32)
    assert (x[:, 1] == 20).all() and (x[:, 2] == 30).all() and (x[:, 0, 0, 1] == 99).all()


def test_load_split_normalises_with_manifest_constants(tmp_path):
    src = make_fmnist(tmp_path / "src")
    manifest = data.prepare_dataset(fm_cfg(src), tmp_path / "prep")
    raw, _, _ = data.load_arrays(tmp_path / "prep", "val")
    x, y = data.load_split(tmp_path / "prep", "val").tensors
    mean, std = manifest["normalization"]["mean"][0], manifest["normalization"]["std"][0]
    expected = (raw.astype(np.float64) / 255 - mean) / std
    assert np.allclose(x.numpy(), expected, atol=1e-5)
    xt = data.load_split(tmp_path / "prep", "train").tensors[0]
    assert abs(float(xt.mean())) < 1e-4 and abs(float(xt.std()) - 1) < 1e-2


# --------------------------------------------------------------------------- determinism, subset
def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    src = make_fmnist(tmp_path / "src")
    data.prepare_dataset(fm_cfg(src, split_seed=3), tmp_path / "a")
    time.sleep(1.1)  # a timestamp written into the files would now differ
    data.prepare_dataset(fm_cfg(src, split_seed=3), tmp_path / "b")
    data.prepare_dataset(fm_cfg(src, split_seed=4), tmp_path / "c")
    a, b, c = (folder_bytes(tmp_path / n) for n in "abc")
    assert a == b
    assert a["val.npz"] != c["val.npz"] and a["train.npz"] != c["train.npz"]
    assert a["test.npz"] == c["test.npz"]  # the official test set does not depend on the seed
    assert data.read_manifest(tmp_path / "a")["fingerprint"] != data.read_manifest(tmp_path / "c")["fingerprint"]


def test_subset_counts_per_class_and_is_seeded(tmp_path):
    src = make_fmnist(tmp_path / "src")
    cfg = fm_cfg(src, subset=SubsetConfig(train=5, val=2, test=3))
    manifest = data.prepare_dataset(cfg, tmp_path / "a")
    for split, k in (("train", 5), ("val", 2), ("test", 3)):
        assert manifest["splits"][split]["per_class"] == [k] * 10
        y = data.load_split(tmp_path / "a", split).tensors[1]
        assert torch.bincount(y, minlength=10).tolist() == [k] * 10
    assert manifest["subset"] == {"train": 5, "val": 2, "test": 3}
    data.prepare_dataset(cfg, tmp_path / "b")
    assert folder_bytes(tmp_path / "a") == folder_bytes(tmp_path / "b")
    data.prepare_dataset(fm_cfg(src, split_seed=1, subset=SubsetConfig(train=5, val=2, test=3)), tmp_path / "c")
    assert folder_bytes(tmp_path / "a")["test.npz"] != folder_bytes(tmp_path / "c")["test.npz"]


@pytest.mark.parametrize("kw, words", [
    ({"subset": SubsetConfig(train=10, val=1, test=1)}, ["data.subset.train = 10", "only 9", "fix:"]),
    ({"subset": SubsetConfig(train=1, val=4, test=1)}, ["data.subset.val = 4", "only 3", "data.val_size"]),
    ({"subset": SubsetConfig(train=1, val=1, test=5)}, ["data.subset.test = 5", "only 4"]),
    ({"val_size": 120}, ["data.val_size = 120", "lower data.val_size"]),
    ({"val_size": 115}, ["data.val_size = 115", "class"]),
])
def test_subset_or_val_size_too_large_is_an_error_and_writes_nothing(tmp_path, kw, words):
    src = make_fmnist(tmp_path / "src")
    out = tmp_path / "prep"
    with pytest.raises(DataError) as info:
        data.prepare_dataset(fm_cfg(src, **kw), out)
    for w in words:
        assert w in str(info.value)
    assert not out.exists() and list(tmp_path.iterdir()) == [src]


# --------------------------------------------------------------------------- checksums
def test_tampered_npz_is_detected(tmp_path):
    src = make_fmnist(tmp_path / "src")
    data.prepare_dataset(fm_cfg(src), tmp_path / "prep")
    path = tmp_path / "prep" / "val.npz"
    x, y, _ = data.load_arrays(tmp_path / "prep", "val")
    x = x.copy()
    x[0, 0, 0, 0] ^= 0xFF  # a still-valid npz with one pixel changed
    np.savez(path, x=x, y=y)
    with pytest.raises(DataError, match=r"val\.npz: sha256 does not match.*rerun mps prepare-data"):
        data.load_split(tmp_path / "prep", "val")
    assert len(data.load_split(tmp_path / "prep", "val", verify=False)) == len(y)
    # a truncated file is caught even without the checksum
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="rerun mps prepare-data"):
        data.load_split(tmp_path / "prep", "val", verify=False)


def test_missing_or_bad_manifest_and_split(tmp_path):
    with pytest.raises(DataError, match="manifest not found.*prepare-data"):
        data.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        data.load_split(tmp_path, "train")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(DataError, match="not an mps data manifest"):
        data.read_manifest(tmp_path)
    src = make_fmnist(tmp_path / "src")
    data.prepare_dataset(fm_cfg(src), tmp_path / "prep")
    with pytest.raises(DataError, match="no split 'dev'"):
        data.load_split(tmp_path / "prep", "dev")
    (tmp_path / "prep" / "test.npz").unlink()
    with pytest.raises(DataError, match=r"test\.npz: prepared test split not found"):
        data.load_split(tmp_path / "prep", "test")


def test_prepare_replaces_an_older_output_folder(tmp_path):
    src = make_fmnist(tmp_path / "src")
    out = tmp_path / "prep"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    data.prepare_dataset(fm_cfg(src), out)
    assert not (out / "stale.txt").exists() and (out / "manifest.json").is_file()


# --------------------------------------------------------------------------- corrupted sources
def _fm_corrupt(kind: str, root: Path) -> str:
    """Damage a synthetic Fashion-MNIST folder; return the file name the error must name."""
    img, lbl = root / "train-images-idx3-ubyte.gz", root / "train-labels-idx1-ubyte.gz"
    x, y = labelled_images(12, (28, 28), 1)
    if kind == "missing folder":
        for p in root.iterdir():
            p.unlink()
        root.rmdir()
        return root.name
    if kind == "missing file":
        lbl.unlink()
        return lbl.name
    if kind == "truncated gzip":
        blob = img.read_bytes()
        img.write_bytes(blob[: len(blob) // 2])
        return img.name
    if kind == "not gzip":
        img.write_bytes(idx_bytes(x))
        return img.name
    if kind == "corrupted gzip data":
        blob = bytearray(img.read_bytes())
        for i in range(20, 60):
            blob[i] ^= 0x5A
        img.write_bytes(bytes(blob))
        return img.name
    if kind == "wrong magic":
        img.write_bytes(gzip.compress(idx_bytes(x, magic=bytes([0, 0, 0x0D, 3]))))
        return img.name
    if kind == "size mismatch":
        img.write_bytes(gzip.compress(idx_bytes(x, dims=(len(x) + 5, 28, 28))))
        return img.name
    if kind == "truncated idx header":
        lbl.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0])))
        return lbl.name
    if kind == "wrong image shape":
        img.write_bytes(gzip.compress(idx_bytes(x[:, :27, :27])))
        return img.name
    if kind == "label out of range":
        y = y.copy()
        y[7] = 10
        lbl.write_bytes(gzip.compress(idx_bytes(y)))
        return lbl.name
    if kind == "count mismatch":
        lbl.write_bytes(gzip.compress(idx_bytes(y[:-1])))
        return lbl.name
    raise AssertionError(kind)


FM_CASES = ["missing folder", "missing file", "truncated gzip", "not gzip", "corrupted gzip data", "wrong magic",
            "size mismatch", "truncated idx header", "wrong image shape", "label out of range", "count mismatch"]


@pytest.mark.parametrize("kind", FM_CASES)
def test_corrupted_fashion_mnist_gives_data_error_and_writes_nothing(tmp_path, kind):
    src = make_fmnist(tmp_path / "src")
    named = _fm_corrupt(kind, src)
    out = tmp_path / "out" / "prep"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("previous result")
    with pytest.raises(DataError) as info:
        data.prepare_dataset(fm_cfg(src), out)
    msg = str(info.value)
    assert isinstance(info.value, ConfigError)
    assert "\n" not in msg and named in msg and "fix:" in msg, msg
    # nothing written: the old output is untouched and no temporary folder is left behind
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["prep"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def _cifar_corrupt(kind: str, root: Path) -> str:
    folder = root / "cifar-10-batches-py"
    b3 = folder / "data_batch_3"
    x, y = labelled_images(2, (3, 32, 32), 13)
    if kind == "missing folder":
        import shutil

        shutil.rmtree(root)
        return root.name
    if kind == "empty folder":
        import shutil

        shutil.rmtree(folder)
        return "cifar-10-batches-py"
    if kind == "missing batch":
        b3.unlink()
        return b3.name
    if kind == "truncated pickle":
        b3.write_bytes(b3.read_bytes()[:500])
        return b3.name
    if kind == "garbage":
        b3.write_bytes(b"\x00\x01 this is not a pickle" * 10)
        return b3.name
    if kind == "foreign global":  # a pickle that would run code if unpickled naively
        b3.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
        return b3.name
    if kind == "not a dict":
        b3.write_bytes(pickle.dumps([1, 2, 3]))
        return b3.name
    if kind == "wrong image shape":
        b3.write_bytes(cifar_batch(x[:, :, :30, :30], y))
        return b3.name
    if kind == "label out of range":
        y = y.copy()
        y[0] = -1
        b3.write_bytes(cifar_batch(x, y))
        return b3.name
    if kind == "count mismatch":
        b3.write_bytes(cifar_batch(x, y[:-2]))
        return b3.name
    raise AssertionError(kind)


CIFAR_CASES = ["missing folder", "empty folder", "missing batch", "truncated pickle", "garbage", "foreign global",
               "not a dict", "wrong image shape", "label out of range", "count mismatch"]


@pytest.mark.parametrize("kind", CIFAR_CASES)
def test_corrupted_cifar_gives_data_error_and_writes_nothing(tmp_path, kind):
    src = make_cifar(tmp_path / "src")
    named = _cifar_corrupt(kind, src)
    out = tmp_path / "out" / "prep"
    with pytest.raises(DataError) as info:
        data.prepare_dataset(cifar_cfg(src), out)
    msg = str(info.value)
    assert "\n" not in msg and named in msg and "fix:" in msg, msg
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_cifar_without_root_is_a_config_error():
    with pytest.raises(ConfigError, match="data.root"):
        data.read_source(DataConfig(dataset="cifar10"))


# --------------------------------------------------------------------------- augmentation
def _candidates(img: torch.Tensor, p: int) -> list[torch.Tensor]:
    c, h, w = img.shape
    padded = torch.nn.functional.pad(img, (p, p, p, p))
    out = []
    for dy in range(2 * p + 1):
        for dx in range(2 * p + 1):
            crop = padded[:, dy:dy + h, dx:dx + w]
            out += [crop, crop.flip(2)]
    return out


def test_augment_batch_is_a_seeded_crop_and_flip(tmp_path):
    x = torch.randn(64, 2, 8, 8, generator=torch.Generator().manual_seed(5))
    a = data.augment_batch(x, torch.Generator().manual_seed(1), padding=2)
    b = data.augment_batch(x, torch.Generator().manual_seed(1), padding=2)
    c = data.augment_batch(x, torch.Generator().manual_seed(2), padding=2)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    kinds = set()
    for i in range(len(x)):
        matches = [k for k, cand in enumerate(_candidates(x[i], 2)) if torch.equal(cand, a[i])]
        assert matches, f"image {i} is not a padded crop/flip of its input"
        kinds.add(matches[0])
    assert len(kinds) > 10  # offsets and flips really vary across the batch
    flips_only = data.augment_batch(x, torch.Generator().manual_seed(3), padding=0)
    flipped = [not torch.equal(flips_only[i], x[i]) for i in range(len(x))]
    assert all(torch.equal(flips_only[i], x[i].flip(2) if f else x[i]) for i, f in enumerate(flipped))
    assert 10 < sum(flipped) < 54


def test_augment_default_padding_by_image_size():
    assert data.crop_padding(28) == 2 and data.crop_padding(32) == 4
    x = torch.ones(256, 1, 28, 28)
    out = data.augment_batch(x, torch.Generator().manual_seed(0))
    # zero padding shows up as zero rows/columns, at most 2 pixels wide for 28x28
    zero_cols = (out == 0).all(dim=2).sum(dim=-1)
    assert zero_cols.max() == 2 and (out[:, :, 2:-2, 2:-2] == 1).all()
    x = torch.ones(256, 3, 32, 32)
    out = data.augment_batch(x, torch.Generator().manual_seed(0))
    assert (out == 0).all(dim=2).sum(dim=-1).max() == 4


# --------------------------------------------------------------------------- real data
@pytest.mark.skipif(not (REAL_FMNIST / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed (/usr/share/datasets/fashion-mnist)")
def test_real_fashion_mnist(tmp_path):
    t0 = time.perf_counter()
    source = data.read_fashion_mnist(REAL_FMNIST)
    read_s = time.perf_counter() - t0
    assert source["train"][0].shape == (60000, 1, 28, 28) and source["test"][0].shape == (10000, 1, 28, 28)
    assert np.bincount(source["train"][1]).tolist() == [6000] * 10
    assert np.bincount(source["test"][1]).tolist() == [1000] * 10
    assert read_s < 10, f"reading Fashion-MNIST took {read_s:.1f} s"

    cfg = DataConfig(dataset="fashion-mnist", val_size=5000, subset=SubsetConfig(train=20, val=5, test=10))
    manifest = data.prepare_dataset(cfg, tmp_path / "prep")
    assert [manifest["splits"][s]["count"] for s in data.SPLITS] == [200, 50, 100]
    assert manifest["source_root"] == str(REAL_FMNIST)
    assert 0.2 < manifest["normalization"]["mean"][0] < 0.4  # real clothes on black: mean ~0.29
    x, y = data.load_split(tmp_path / "prep", "test").tensors
    assert x.shape == (100, 1, 28, 28) and torch.bincount(y).tolist() == [10] * 10


def test_augment_pads_with_the_given_fill_per_channel():
    x = torch.zeros(64, 2, 8, 8)
    fill = torch.tensor([-1.5, 2.0])
    out = data.augment_batch(x, torch.Generator().manual_seed(0), padding=2, fill=fill)
    values = {(c, float(v)) for c in range(2) for v in out[:, c].unique()}
    assert values <= {(0, 0.0), (0, -1.5), (1, 0.0), (1, 2.0)}
    assert (0, -1.5) in values and (1, 2.0) in values
    manifest = {"normalization": {"mean": [0.5], "std": [0.25]}}
    assert torch.allclose(data.black_fill(manifest), torch.tensor([-2.0]))


def test_torch_threads_never_exceed_the_available_cpus():
    """A rule's ``threads: 4`` on a 2-core machine must not oversubscribe torch."""
    from mps.runtime import available_cpus, set_threads

    before = torch.get_num_threads()
    try:
        assert set_threads(available_cpus() + 3) == available_cpus()
        assert set_threads(1) == 1
    finally:
        torch.set_num_threads(before)
