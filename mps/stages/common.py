"""Inputs every stage after ``pretrain`` needs, loaded one way: data splits, evaluation sets,
the hardware profile, the supernet."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mps import data as mdata
from mps.config import Params
from mps.evaluation import EvalSet
from mps.runtime import resolve_device


@dataclass
class Splits:
    manifest: dict
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]


def load_splits(data_dir: Path) -> Splits:
    manifest = mdata.read_manifest(data_dir)
    return Splits(manifest,
                  tuple(mdata.load_split(data_dir, "train").tensors),
                  tuple(mdata.load_split(data_dir, "val").tensors),
                  tuple(mdata.load_split(data_dir, "test").tensors))


def _head(x: torch.Tensor, y: torch.Tensor, limit: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random subset of ``limit`` examples (all when limit is None or larger)."""
    if limit is None or limit >= len(x):
        return x, y
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:limit]
    return x[idx], y[idx]


def eval_set(splits: Splits, split: str, limit: int | None, seed: int, batch_size: int = 512,
             calib_batches: int = 8, device: str = "auto", engine: str = "fast", drift_compensation: str = "global",
             bn_reestimation_batches: int = 0) -> EvalSet:
    """Scoring examples from ``split`` plus training examples for BN recalibration (and its
    re-estimation after drift); ``engine``: the analog engine (``params.analog_engine``); the
    last two: the chip's behaviour over time (:func:`evaluation_options`)."""
    x, y = _head(*getattr(splits, split), limit, seed)
    calib_x = splits.train[0][torch.randperm(len(splits.train[0]), generator=torch.Generator().manual_seed(seed + 1))
                              [: max(calib_batches, bn_reestimation_batches) * 128]]
    return EvalSet(x, y, calib_x=calib_x, batch_size=batch_size, calib_batches=calib_batches, calib_batch_size=128,
                   device=str(resolve_device(device)), engine=engine, drift_compensation=drift_compensation,
                   bn_reestimation_batches=bn_reestimation_batches)


def evaluation_options(params: Params) -> dict:
    """The analog engine and the chip's behaviour over time (``evaluate.drift_compensation``,
    ``evaluate.bn_reestimation_batches``): the same for every stage's evaluations, so a mapping is
    searched under the conditions it is judged under."""
    return {"engine": params.analog_engine, "drift_compensation": params.evaluate.drift_compensation,
            "bn_reestimation_batches": params.evaluate.bn_reestimation_batches}


def calibrate_input_ranges(model, splits: Splits, params: Params):
    """``model`` (returned) with the static input ranges of its analog layers calibrated on
    ``params.range_calibration_batches`` seeded training batches (mps/analog/calibration.py): what
    every analog model that is not trained gets, the same batches for every method."""
    from mps.analog.calibration import calibrate_ranges

    batches = params.range_calibration_batches
    x = splits.train[0]
    x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(params.seed + 2))[: batches * 128]]
    calibrate_ranges(model, x, batches, 128, params.seed)
    return model


def hardware_profile(params: Params):
    from mps.cost_model import load_hardware_profile

    return load_hardware_profile(params.hardware_profile)


def architecture_layers(model_name: str, dataset: str) -> dict:
    """The weight-layer table (name -> LayerInfo) of an architecture on a data set's image shape,
    from one traced forward pass: what the supernet recorded, without a checkpoint."""
    from mps.config import ConfigError
    from mps.models import build_model
    from mps.supernet.convert import trace_layers

    if dataset not in mdata._IMAGE_SHAPES:  # noqa: SLF001 - the data module's shape table
        known = ", ".join(mdata._IMAGE_SHAPES)  # noqa: SLF001
        raise ConfigError(f"data set {dataset!r} is unknown; fix: use one of {known}")
    shape = tuple(mdata._IMAGE_SHAPES[dataset])  # noqa: SLF001
    model = build_model(model_name, in_channels=shape[0], num_classes=mdata.NUM_CLASSES, image_size=shape[1])
    infos, _ = trace_layers(model, shape)
    return infos


def load_supernet_inputs(data_dir: Path, supernet_path: Path, pretrained_path: Path | None = None):
    """Data splits, adapted supernet and (optionally) the pretrained checkpoint, checked to
    belong together; raises before any output. Returns (splits, supernet, supernet checkpoint,
    pretrained checkpoint or None)."""
    from mps.artifacts import ArtifactError
    from mps.supernet import load_supernet

    supernet, ckpt = load_supernet(supernet_path)
    pre_ckpt = None
    if pretrained_path is not None:
        from mps.stages.pretrain import load_pretrained

        model_id = str(supernet.meta.get("model_id"))
        _, pre_ckpt = load_pretrained(pretrained_path)
        if pre_ckpt.get("model_id") != model_id:
            raise ArtifactError(f"{pretrained_path}: pretrained model is {pre_ckpt.get('model_id')!r} but the "
                                f"supernet is {model_id!r}; fix: pass the checkpoint the supernet was adapted from")
    splits = load_splits(data_dir)
    fingerprint = splits.manifest["fingerprint"]
    trained_on = supernet.meta.get("data_fingerprint")
    if trained_on not in (None, fingerprint):
        raise ArtifactError(f"{supernet_path}: supernet was trained on other data (fingerprint {trained_on} "
                            f"!= {fingerprint} of {data_dir}); fix: pass the data folder it was adapted on")
    return splits, supernet, ckpt, pre_ckpt
