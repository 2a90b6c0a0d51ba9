"""Stage ``pretrain``: train the FP32 model that the supernet is built from.

SGD with Nesterov momentum, a one-cycle (or cosine) schedule stepped per batch, light
augmentation (random crop + flip), a resumable checkpoint every epoch.  Writes
``model.pt`` (a ``pretrained`` checkpoint: model name, data shape, state dict, accuracy)
and ``metrics.json``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mps import data as mdata
from mps.artifacts import atomic_write_json, load_checkpoint, provenance, save_checkpoint
from mps.config import Params
from mps.models import build_model
from mps.runtime import progress, resolve_device, seed_everything
from mps.tracking import Tracker
from mps.training import (EpochCheckpointer, check_finite, epoch_generator, evaluate_accuracy,
                          iterate_batches, lr_scheduler, sgd, steps_per_epoch)

KIND = "pretrained"


def model_id(params: Params) -> str:
    """Identifies the network a mapping is for: architecture and the data it was trained on."""
    return f"{params.model.name}@{params.data.dataset}"


def run(params: Params, data_dir: Path, out_dir: Path, work_dir: Path, tracker: Tracker) -> dict:
    cfg = params.pretrain
    device = resolve_device(params.device)
    manifest = mdata.read_manifest(data_dir)
    train = mdata.load_split(data_dir, "train")
    val = mdata.load_split(data_dir, "val")
    test = mdata.load_split(data_dir, "test")
    x_train, y_train = train.tensors
    c, h, _ = manifest["image_shape"]
    fill = mdata.black_fill(manifest)
    num_classes = int(manifest["num_classes"])

    seed_everything(params.seed)
    model = build_model(params.model.name, in_channels=c, num_classes=num_classes, image_size=h).to(device)
    optimizer = sgd(model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
    n_steps = steps_per_epoch(len(x_train), cfg.batch_size)
    scheduler = lr_scheduler(optimizer, cfg.schedule, cfg.epochs * n_steps, cfg.lr)

    ckpt = EpochCheckpointer(work_dir, "pretrain-state", fingerprint=params.digest() + manifest["fingerprint"])
    start = 0
    resumed = ckpt.load()
    if resumed is not None:
        start, state = resumed
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        print(f"pretrain: resuming after epoch {start}/{cfg.epochs}")

    tracker.log_params({"model": params.model.name, "dataset": params.data.dataset, "seed": params.seed,
                        **{f"pretrain.{k}": v for k, v in cfg.model_dump().items()}})
    t0 = time.perf_counter()
    for epoch in range(start, cfg.epochs):
        model.train()
        gen = epoch_generator(params.seed, epoch)
        torch.manual_seed(params.seed * 1000 + epoch)
        total, seen = 0.0, 0
        batches = iterate_batches(len(x_train), cfg.batch_size, gen, drop_last=True)
        for idx in progress(batches, f"pretrain epoch {epoch + 1}/{cfg.epochs}", total=n_steps):
            xb, yb = x_train[idx], y_train[idx]
            if cfg.augment:
                xb = mdata.augment_batch(xb, gen, fill=fill)
            xb, yb = xb.to(device), yb.to(device)
            loss = F.cross_entropy(model(xb), yb, label_smoothing=cfg.label_smoothing)
            check_finite(loss, f"pretrain epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        val_acc = evaluate_accuracy(model, *val.tensors, device=device)
        tracker.log_metrics({"train_loss": total / max(seen, 1), "val_accuracy": val_acc}, step=epoch + 1)
        print(f"pretrain: epoch {epoch + 1}/{cfg.epochs} loss {total / max(seen, 1):.4f} val {val_acc:.2f}%")
        ckpt.save(epoch + 1, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict()})
    wall = time.perf_counter() - t0

    test_acc = evaluate_accuracy(model, *test.tensors, device=device)
    val_acc = evaluate_accuracy(model, *val.tensors, device=device)
    metrics = {"test_accuracy": round(test_acc, 4), "val_accuracy": round(val_acc, 4),
               "epochs": cfg.epochs, "train_seconds": round(wall, 2)}
    save_checkpoint(out_dir / "model.pt", KIND, {
        "model_name": params.model.name,
        "model_id": model_id(params),
        "image_shape": list(manifest["image_shape"]),
        "num_classes": num_classes,
        "data_fingerprint": manifest["fingerprint"],
        "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
        "metrics": {"test_accuracy": metrics["test_accuracy"], "val_accuracy": metrics["val_accuracy"]},
    }, provenance(params.digest(), seed=params.seed))
    atomic_write_json(out_dir / "metrics.json", metrics)
    tracker.log_metrics({"test_accuracy": test_acc, "val_accuracy": val_acc, "train_seconds": wall})
    tracker.log_artifact(out_dir / "metrics.json")
    ckpt.clear()
    print(f"pretrain: test accuracy {test_acc:.2f}% ({wall:.0f} s)")
    return metrics


def load_pretrained(path: str | Path, map_location: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the pretrained model from its checkpoint."""
    ckpt = load_checkpoint(path, KIND)
    c, h, _ = ckpt["image_shape"]
    model = build_model(ckpt["model_name"], in_channels=c, num_classes=ckpt["num_classes"], image_size=h)
    model.load_state_dict(ckpt["state_dict"])
    return model, ckpt
