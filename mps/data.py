"""Data sets for the pipeline: read the source once, split it, store it, load it normalised.

Stage ``prepare-data`` calls :func:`prepare_dataset`; every later stage calls
:func:`load_split`.  Nothing is downloaded: Fashion-MNIST is read from its gzipped IDX files
(Debian's ``dataset-fashion-mnist`` installs them in ``/usr/share/datasets/fashion-mnist``)
and CIFAR-10 from the pickled batches of its *python version* (a folder holding
``cifar-10-batches-py/``, or that folder itself).  Both readers are plain numpy (torchvision
does not import beside the CPU torch build used here).

Why the prepared folder looks the way it does:

* **uint8 on disk, normalised at load time.**  ``train.npz`` / ``val.npz`` / ``test.npz`` hold
  ``x`` as uint8 NCHW ``(N, C, H, W)`` and ``y`` as int64.  Storing float32 would be 4x larger
  and would bake the normalisation into the artifact; instead the per-channel mean and std
  (computed on the *train* split only, in [0, 1] scale, so val/test statistics never leak into
  training) are recorded in ``manifest.json`` and :func:`load_split` applies them.
* **Deterministic.**  The validation split is a stratified, seeded draw (``data.split_seed``)
  from the official training set; the test split is the official test set; ``data.subset``
  keeps a seeded number of examples per class from each split.  The ``.npz`` files are written
  with fixed zip timestamps, so the same source and seed give byte-identical files.
* **Checked.**  ``manifest.json`` records the sha256 of each ``.npz``; :func:`load_split`
  verifies it, so a tampered or half-copied file is reported instead of silently training on
  wrong data.  Every problem with the source (missing file, truncated gzip, wrong IDX magic,
  size mismatch, corrupted pickle, wrong image shape, label outside 0..9, image/label count
  mismatch) raises :class:`DataError` with a one-line message naming the file and the fix,
  before anything is written; the output folder appears only complete (built under a
  temporary name, then renamed).
* **Safe pickles.**  CIFAR batches are unpickled with a restricted unpickler that only admits
  the numpy array constructors, so a hostile "batch" file cannot run code.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from mps.artifacts import atomic_directory, atomic_write_json, sha256_file
from mps.config import ConfigError, DataConfig

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "mps-data/1"
SPLITS = ("train", "val", "test")
NUM_CLASSES = 10

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")

FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"

_IMAGE_SHAPES = {"fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
_CLASS_NAMES = {"fashion-mnist": FASHION_MNIST_CLASSES, "cifar10": CIFAR10_CLASSES}
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed timestamp inside .npz: byte-identical reruns


class DataError(ConfigError):
    """The data source or a prepared data folder is missing, corrupted or inconsistent."""


# =========================================================================== readers
_FMNIST_FIX = "fix: reinstall the files (Debian: apt-get install --reinstall dataset-fashion-mnist) or set data.root to a folder with intact copies"


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read one (gzipped) IDX file of unsigned bytes with ``ndim`` dimensions."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; {_FMNIST_FIX}")
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except EOFError:
        raise DataError(f"{path}: gzip stream is truncated; {_FMNIST_FIX}") from None
    except (OSError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(f"{path}: not a readable gzip file ({exc}); {_FMNIST_FIX}") from None
    if len(raw) < 4:
        raise DataError(f"{path}: IDX header is truncated ({len(raw)} bytes); {_FMNIST_FIX}")
    magic = raw[:4]
    if magic[0] != 0 or magic[1] != 0 or magic[2] != 0x08 or magic[3] != ndim:
        raise DataError(
            f"{path}: wrong IDX magic {magic.hex()} (expected 000008{ndim:02x}: unsigned bytes, {ndim} dims); "
            f"the file is corrupted or not this kind of IDX file; {_FMNIST_FIX}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: IDX header is truncated ({len(raw)} bytes); {_FMNIST_FIX}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    got = len(raw) - header
    if got != expected:
        raise DataError(
            f"{path}: size mismatch: header says shape {dims} ({expected} bytes) but the file holds {got} bytes "
            f"of data; the file is truncated or corrupted; {_FMNIST_FIX}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _fmnist_file(root: Path, name: str) -> Path:
    """The gzipped file, or an already uncompressed copy if only that exists."""
    gz = root / name
    plain = root / name[: -len(".gz")]
    if not gz.exists() and plain.is_file():
        return plain
    return gz


def read_fashion_mnist(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Official train and test sets as ``{split: (x uint8 (N,1,28,28), y int64 (N,))}``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{root}: Fashion-MNIST folder not found; fix: install it (Debian: apt-get install dataset-fashion-mnist) "
            "or set data.root to the folder holding train-images-idx3-ubyte.gz etc."
        )
    out = {}
    c, h, w = _IMAGE_SHAPES["fashion-mnist"]
    for split, (img_name, lbl_name) in FASHION_MNIST_FILES.items():
        img_path, lbl_path = _fmnist_file(root, img_name), _fmnist_file(root, lbl_name)
        images = _read_idx(img_path, 3)
        labels = _read_idx(lbl_path, 1)
        if images.shape[1:] != (h, w):
            raise DataError(
                f"{img_path}: wrong image shape {images.shape[1:]} (Fashion-MNIST images are {h}x{w}); "
                f"fix: point data.root at Fashion-MNIST files, or set data.dataset to match the files"
            )
        _check_labels(lbl_path, labels, len(images), img_path, _FMNIST_FIX)
        out[split] = (images.reshape(len(images), c, h, w), labels.astype(np.int64))
    return out


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admit only what a CIFAR batch needs (numpy arrays, bytes); refuse any other global."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data batch")
        if module.startswith("numpy.core"):  # numpy 2 moved these to numpy._core
            module = "numpy._core" + module[len("numpy.core"):]
        return super().find_class(module, name)


def _cifar_folder(root: Path) -> Path:
    if not root.is_dir():
        raise DataError(
            f"{root}: CIFAR-10 folder not found; fix: set data.root to the folder holding "
            f"'{CIFAR10_DIR}' (the python version of CIFAR-10, extracted)"
        )
    if (root / CIFAR10_DIR).is_dir():
        return root / CIFAR10_DIR
    if (root / CIFAR10_TRAIN_BATCHES[0]).exists() or (root / CIFAR10_TEST_BATCH).exists():
        return root
    raise DataError(
        f"{root}: holds neither '{CIFAR10_DIR}/' nor the CIFAR-10 batch files; fix: set data.root to the folder "
        f"holding '{CIFAR10_DIR}' (extract cifar-10-python.tar.gz there)"
    )


_CIFAR_FIX = "fix: re-extract cifar-10-python.tar.gz (the python version) into data.root"


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path}: CIFAR-10 batch file not found; {_CIFAR_FIX}")
    try:
        with open(path, "rb") as fh:
            obj = _NumpyOnlyUnpickler(fh, encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - unpickling a damaged file raises almost anything
        raise DataError(f"{path}: corrupted or not a CIFAR-10 pickle ({type(exc).__name__}: {exc}); {_CIFAR_FIX}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a CIFAR-10 batch (a {type(obj).__name__}, expected a dict); {_CIFAR_FIX}")
    data = obj.get(b"data", obj.get("data"))
    labels = obj.get(b"labels", obj.get("labels"))
    if data is None or labels is None:
        raise DataError(f"{path}: CIFAR-10 batch lacks 'data' or 'labels'; {_CIFAR_FIX}")
    c, h, w = _IMAGE_SHAPES["cifar10"]
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != c * h * w:
        raise DataError(
            f"{path}: wrong image shape/type {data.shape} {data.dtype} (CIFAR-10 rows are {c * h * w} uint8 = "
            f"{c}x{h}x{w}); fix: use the python version of CIFAR-10 (not the binary or matlab one)"
        )
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{path}: labels are not integers; {_CIFAR_FIX}") from None
    if labels.ndim != 1:
        raise DataError(f"{path}: labels have shape {labels.shape}, expected a flat list; {_CIFAR_FIX}")
    _check_labels(path, labels, len(data), path, _CIFAR_FIX)
    return data.reshape(len(data), c, h, w), labels


def read_cifar10(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Official train (5 batches) and test sets as ``{split: (x uint8 (N,3,32,32), y int64)}``."""
    folder = _cifar_folder(Path(root))
    parts = [_read_cifar_batch(folder / name) for name in CIFAR10_TRAIN_BATCHES]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return {"train": train, "test": _read_cifar_batch(folder / CIFAR10_TEST_BATCH)}


def _check_labels(path: Path, labels: np.ndarray, n_images: int, images_path: Path, fix: str) -> None:
    if len(labels) != n_images:
        where = f"{images_path} has {n_images}" if images_path != path else f"the batch has {n_images}"
        raise DataError(f"{path}: image/label count mismatch: {len(labels)} labels but {where} images; {fix}")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        bad = int(labels[(labels < 0) | (labels >= NUM_CLASSES)][0])
        raise DataError(f"{path}: label {bad} out of range 0..{NUM_CLASSES - 1}; the file is corrupted; {fix}")


def read_source(cfg: DataConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The official train and test sets of ``cfg.dataset`` read from ``cfg.resolved_root()``."""
    root = cfg.resolved_root()
    if cfg.dataset == "fashion-mnist":
        return read_fashion_mnist(root)
    if cfg.dataset == "cifar10":
        return read_cifar10(root)
    raise DataError(f"data.dataset: unknown data set {cfg.dataset!r}; fix: use fashion-mnist or cifar10")


# =========================================================================== splitting
def _rng(seed: int, stream: int) -> np.random.Generator:
    """Independent, reproducible random stream per purpose (split, subset of each split)."""
    return np.random.default_rng([seed, stream])


def _stratified_holdout(y: np.ndarray, val_size: int, seed: int, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): ``val_size`` examples held out, class shares kept (largest remainder)."""
    n = len(y)
    if val_size >= n:
        raise DataError(
            f"data.val_size = {val_size} leaves no training images (the official training set has {n}); "
            "fix: lower data.val_size"
        )
    counts = np.bincount(y, minlength=NUM_CLASSES)
    exact = val_size * counts / n
    alloc = np.floor(exact).astype(np.int64)
    remainder = val_size - int(alloc.sum())
    order = sorted(range(NUM_CLASSES), key=lambda k: (-(exact[k] - alloc[k]), k))
    for k in order[:remainder]:
        alloc[k] += 1
    rng = _rng(seed, 0)
    train_idx, val_idx = [], []
    for k in range(NUM_CLASSES):
        members = np.flatnonzero(y == k)
        if len(members) == 0:
            continue
        if alloc[k] >= len(members):
            raise DataError(
                f"data.val_size = {val_size} leaves no training images of class {k} ({names[k]!r}, "
                f"{len(members)} in the training set); fix: lower data.val_size"
            )
        perm = rng.permutation(members)
        val_idx.append(perm[: alloc[k]])
        train_idx.append(perm[alloc[k]:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(val_idx))


def _per_class_subset(y: np.ndarray, per_class: int, seed: int, stream: int, split: str,
                      names: tuple[str, ...]) -> np.ndarray:
    """Indices of ``per_class`` seeded examples of every class, in source order."""
    rng = _rng(seed, stream)
    keep = []
    for k in range(NUM_CLASSES):
        members = np.flatnonzero(y == k)
        if len(members) < per_class:
            fix = ("lower data.subset.val or raise data.val_size" if split == "val"
                   else f"lower data.subset.{split}")
            if split == "train":
                fix += " (or lower data.val_size)"
            raise DataError(
                f"data.subset.{split} = {per_class} per class but class {k} ({names[k]!r}) has only "
                f"{len(members)} examples in the {split} split; fix: {fix}"
            )
        keep.append(rng.permutation(members)[:per_class])
    return np.sort(np.concatenate(keep))


def split_dataset(cfg: DataConfig, source: dict[str, tuple[np.ndarray, np.ndarray]]
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Train/val/test arrays from the official sets: stratified seeded hold-out, then subset."""
    names = _CLASS_NAMES[cfg.dataset]
    x_all, y_all = source["train"]
    train_idx, val_idx = _stratified_holdout(y_all, cfg.val_size, cfg.split_seed, names)
    splits = {"train": (x_all[train_idx], y_all[train_idx]),
              "val": (x_all[val_idx], y_all[val_idx]),
              "test": source["test"]}
    if cfg.subset is not None:
        for stream, split in enumerate(SPLITS, start=1):
            x, y = splits[split]
            idx = _per_class_subset(y, getattr(cfg.subset, split), cfg.split_seed, stream, split, names)
            splits[split] = (x[idx], y[idx])
    for split, (x, y) in splits.items():
        if len(x) == 0:
            raise DataError(f"{split} split is empty; fix: check data.root holds the full {cfg.dataset} files")
        missing = [names[k] for k in range(NUM_CLASSES) if not np.any(y == k)]
        if split == "train" and missing:
            raise DataError(
                f"train split has no images of class {missing[0]!r}; fix: check data.root holds the full "
                f"{cfg.dataset} files or lower data.val_size"
            )
    return {s: (np.ascontiguousarray(x, dtype=np.uint8), np.ascontiguousarray(y, dtype=np.int64))
            for s, (x, y) in splits.items()}


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Exact per-channel mean and std of uint8 NCHW images in [0, 1] scale (from a histogram)."""
    means, stds = [], []
    values = np.arange(256, dtype=np.float64) / 255.0
    for c in range(x.shape[1]):
        hist = np.bincount(x[:, c].reshape(-1), minlength=256).astype(np.float64)
        total = hist.sum()
        mean = float((hist * values).sum() / total)
        var = float((hist * (values - mean) ** 2).sum() / total)
        means.append(mean)
        stds.append(float(np.sqrt(var)))
    return means, stds


# =========================================================================== writing
def _npz_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    """An ``.npz`` (uncompressed) with fixed zip timestamps, so equal arrays give equal bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in (("x", x), ("y", y)):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, arr, allow_pickle=False)
    return buf.getvalue()


def prepare_dataset(cfg: DataConfig, out_dir: Path) -> dict:
    """Read the source, split it, write ``{train,val,test}.npz`` + ``manifest.json`` into ``out_dir``.

    All reading and validation happen before anything is written; ``out_dir`` is then built
    under a temporary name and renamed into place (replacing an older one).  Returns the manifest.
    """
    out_dir = Path(out_dir)
    source = read_source(cfg)
    for split, (x, _) in source.items():
        if x.shape[1:] != _IMAGE_SHAPES[cfg.dataset]:  # readers guarantee this; keep the contract explicit
            raise DataError(f"{split} images have shape {x.shape[1:]}; fix: check data.dataset matches data.root")
    splits = split_dataset(cfg, source)
    del source
    names = _CLASS_NAMES[cfg.dataset]
    mean, std = channel_stats(splits["train"][0])
    if min(std) == 0.0:
        raise DataError("train images are constant (a channel has std 0); fix: check data.root holds real images")

    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "dataset": cfg.dataset,
        "source_root": str(cfg.resolved_root()),
        "image_shape": list(_IMAGE_SHAPES[cfg.dataset]),
        "num_classes": NUM_CLASSES,
        "class_names": list(names),
        "normalization": {"mean": mean, "std": std, "scale": "x / 255, then (x - mean) / std per channel",
                          "computed_on": "train"},
        "split_seed": cfg.split_seed,
        "val_size": cfg.val_size,
        "subset": cfg.subset.model_dump() if cfg.subset is not None else None,
        "splits": {},
    }
    with atomic_directory(out_dir) as tmp:
        for split in SPLITS:
            x, y = splits[split]
            blob = _npz_bytes(x, y)
            (tmp / f"{split}.npz").write_bytes(blob)
            manifest["splits"][split] = {
                "file": f"{split}.npz",
                "count": int(len(y)),
                "per_class": [int(c) for c in np.bincount(y, minlength=NUM_CLASSES)],
                "sha256": hashlib.sha256(blob).hexdigest(),
            }
        manifest["fingerprint"] = _fingerprint(manifest)
        atomic_write_json(tmp / MANIFEST_NAME, manifest)
    return manifest


def _fingerprint(manifest: dict) -> str:
    """Short content id of the prepared data (independent of where the source lay)."""
    key = {"dataset": manifest["dataset"], "normalization": manifest["normalization"],
           "splits": {s: manifest["splits"][s]["sha256"] for s in SPLITS}}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


# =========================================================================== loading
_PREPARE_FIX = "fix: rerun mps prepare-data"


def read_manifest(data_dir: str | Path) -> dict:
    """The manifest of a prepared data folder, checked for the keys later stages rely on."""
    path = Path(data_dir) / MANIFEST_NAME
    if not path.is_file():
        raise DataError(f"{path}: data manifest not found; fix: run mps prepare-data --out {Path(data_dir)} first")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: data manifest is not valid JSON ({exc.__class__.__name__}); {_PREPARE_FIX}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(f"{path}: not an mps data manifest (format {MANIFEST_FORMAT} expected); {_PREPARE_FIX}")
    for key in ("dataset", "image_shape", "num_classes", "normalization", "splits", "fingerprint"):
        if key not in manifest:
            raise DataError(f"{path}: data manifest lacks {key!r}; {_PREPARE_FIX}")
    return manifest


def load_arrays(data_dir: str | Path, split: str, verify: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """Raw ``(x uint8 NCHW, y int64, manifest)`` of one prepared split, checked against the manifest."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    entry = manifest["splits"].get(split)
    if entry is None:
        raise DataError(f"{data_dir / MANIFEST_NAME}: no split {split!r} (has {', '.join(manifest['splits'])}); "
                        f"fix: use one of {', '.join(SPLITS)}")
    path = data_dir / entry["file"]
    if not path.is_file():
        raise DataError(f"{path}: prepared {split} split not found; {_PREPARE_FIX}")
    if verify and sha256_file(path) != entry["sha256"]:
        raise DataError(f"{path}: sha256 does not match manifest.json (file changed or truncated); {_PREPARE_FIX}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            x, y = npz["x"], npz["y"]
    except Exception as exc:  # noqa: BLE001 - a damaged zip raises many kinds
        raise DataError(f"{path}: unreadable npz ({type(exc).__name__}); {_PREPARE_FIX}") from None
    shape = tuple(manifest["image_shape"])
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != shape or y.dtype != np.int64 or y.shape != (len(x),):
        raise DataError(f"{path}: arrays x {x.shape} {x.dtype}, y {y.shape} {y.dtype} do not match the manifest "
                        f"(x uint8 (N,{','.join(map(str, shape))}), y int64 (N,)); {_PREPARE_FIX}")
    if len(y) != entry["count"]:
        raise DataError(f"{path}: holds {len(y)} examples, manifest says {entry['count']}; {_PREPARE_FIX}")
    return x, y, manifest


def normalize(x: np.ndarray | torch.Tensor, manifest: dict) -> torch.Tensor:
    """uint8 NCHW -> float32 ``(x/255 - mean) / std`` with the manifest's per-channel constants."""
    t = torch.as_tensor(x)
    mean = torch.tensor(manifest["normalization"]["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(manifest["normalization"]["std"], dtype=torch.float32).view(1, -1, 1, 1)
    return (t.to(torch.float32) / 255.0 - mean) / std


def load_split(data_dir: str | Path, split: str, verify: bool = True) -> TensorDataset:
    """One prepared split as ``TensorDataset(x float32 normalised NCHW, y int64)``.

    With ``verify`` the file's sha256 is checked against the manifest first.
    """
    x, y, manifest = load_arrays(data_dir, split, verify=verify)
    return TensorDataset(normalize(x, manifest), torch.from_numpy(np.array(y, dtype=np.int64)))


# =========================================================================== augmentation
def black_fill(manifest: dict) -> torch.Tensor:
    """Per-channel value of a black pixel after normalisation: the crop's padding colour, as
    when padding happens before normalisation (Fashion-MNIST's background is black)."""
    norm = manifest["normalization"]
    return torch.tensor([-m / s for m, s in zip(norm["mean"], norm["std"])], dtype=torch.float32)


def crop_padding(image_size: int) -> int:
    """Padding of the random crop: 4 px for 32x32 images (CIFAR), 2 px for smaller (Fashion-MNIST)."""
    return 4 if image_size >= 32 else 2


def augment_batch(x: torch.Tensor, generator: torch.Generator, padding: int | None = None,
                  fill: torch.Tensor | None = None) -> torch.Tensor:
    """Random crop (padding with ``fill`` per channel, default 0 = the mean colour; pass
    :func:`black_fill` to pad with black as torchvision does) + random horizontal flip.

    Vectorised over the batch (two gathers and one ``where``); all randomness comes from
    ``generator``, so a seeded generator gives the same batch every time.  ``padding``
    defaults to :func:`crop_padding` of the image height.
    """
    if x.ndim != 4:
        raise ValueError(f"augment_batch expects an NCHW batch, got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    p = crop_padding(h) if padding is None else int(padding)
    gdev = generator.device
    off_y = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=gdev).to(x.device)
    off_x = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=gdev).to(x.device)
    flip = (torch.rand((n,), generator=generator, device=gdev) < 0.5).to(x.device)
    if p > 0:
        shift = fill.to(x).view(1, -1, 1, 1) if fill is not None else None
        padded = torch.nn.functional.pad(x if shift is None else x - shift, (p, p, p, p))
        if shift is not None:
            padded = padded + shift
        rows = (off_y[:, None] + torch.arange(h, device=x.device)[None, :])  # (n, h)
        cols = (off_x[:, None] + torch.arange(w, device=x.device)[None, :])  # (n, w)
        padded = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * p))
        x = padded.gather(3, cols[:, None, None, :].expand(n, c, h, w))
    return torch.where(flip[:, None, None, None], x.flip(3), x)
