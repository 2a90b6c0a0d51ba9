"""Training-loop building blocks shared by pretraining and supernet adaptation.

Resumption is by epoch: each epoch's shuffling and augmentation draw from a generator seeded
with (seed, epoch), so an interrupted run resumed from its last epoch checkpoint replays the
remaining epochs exactly as an uninterrupted run would, without storing RNG state.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from mps.artifacts import ArtifactError, load_checkpoint, save_checkpoint
from mps.config import ConfigError


class NumericalError(ConfigError):
    """Loss became NaN or infinite; the last good checkpoint is kept."""


def epoch_generator(seed: int, epoch: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7919 + salt) % (2**63))


def iterate_batches(n: int, batch_size: int, generator: torch.Generator | None = None,
                    drop_last: bool = False) -> Iterator[torch.Tensor]:
    """Index batches over ``n`` examples; shuffled when a generator is given."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    stop = (n // batch_size) * batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start:start + batch_size]


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps of one pass over ``n`` examples (the last partial batch dropped)."""
    return max(1, n // batch_size)


def epoch_steps(epochs: float, n: int, batch_size: int) -> int:
    """Optimizer steps of a budget given in epochs of the training split (fractions allowed:
    0.25 = a quarter of a pass); at least one step for any budget above 0.  Every training
    budget of the pipeline is given this way, so it means the same on any dataset size."""
    if epochs <= 0:
        return 0
    return max(1, round(epochs * steps_per_epoch(n, batch_size)))


def epoch_chunks(steps: int, per_epoch: int) -> list[int]:
    """``steps`` cut into whole epochs and a last partial one: the units a stage checkpoints
    and reseeds its shuffling by."""
    return [per_epoch] * (steps // per_epoch) + ([steps % per_epoch] if steps % per_epoch else [])


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    model.eval()
    outs = []
    for idx in iterate_batches(len(x), batch_size):
        outs.append(model(x[idx].to(device)).float().cpu())
    return torch.cat(outs) if outs else torch.empty(0)


def accuracy_percent(logits: torch.Tensor, y: torch.Tensor) -> float:
    if len(y) == 0:
        return float("nan")
    return float((logits.argmax(1) == y).float().mean().item() * 100.0)


def evaluate_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512,
                      device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy in percent."""
    return accuracy_percent(predict_logits(model, x, batch_size, device), y)


def sgd(parameters, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)


def lr_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, lr: float):
    total_steps = max(1, total_steps)
    if schedule == "onecycle" and total_steps >= 4:
        # warm-up of at least two steps: OneCycleLR divides by (warm-up steps - 1)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps,
                                                   pct_start=max(0.25, 2.0 / total_steps), anneal_strategy="cos")
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)


def check_finite(loss: torch.Tensor, where: str) -> None:
    if not math.isfinite(float(loss.detach())):
        raise NumericalError(
            f"{where}: loss is {float(loss.detach())}; training diverged. The last good checkpoint is kept; "
            "fix: lower the learning rate and rerun (it resumes from that checkpoint)"
        )


class EpochCheckpointer:
    """Per-epoch resumable state in a work folder (outside any declared stage output).

    Keeps the last two states; if the newest is truncated or foreign (a kill during the write
    of a non-atomic filesystem, a stray file), resumption falls back to the previous one.
    """

    def __init__(self, work_dir: str | Path, kind: str, fingerprint: str):
        self.dir = Path(work_dir)
        self.kind = kind
        self.fingerprint = fingerprint

    @property
    def last(self) -> Path:
        return self.dir / "last.pt"

    @property
    def previous(self) -> Path:
        return self.dir / "previous.pt"

    def save(self, epoch: int, state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.last.exists():
            self.last.replace(self.previous)
        save_checkpoint(self.last, self.kind, {"epoch": epoch, "fingerprint": self.fingerprint, "state": state})

    def load(self, log: Callable[[str], None] = print) -> tuple[int, dict[str, Any]] | None:
        """Return (epochs done, state) of the newest good checkpoint matching the fingerprint."""
        for path in (self.last, self.previous):
            if not path.exists():
                continue
            try:
                ckpt = load_checkpoint(path, self.kind)
            except ArtifactError as exc:
                log(f"warning: ignoring resume checkpoint: {exc}")
                continue
            if ckpt.get("fingerprint") != self.fingerprint:
                log(f"note: {path} was written for other params; starting fresh")
                return None
            return int(ckpt["epoch"]), ckpt["state"]
        return None

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def adapt_steps(params, n_train: int) -> int:
    """Optimizer steps of the adaptation stage (both phases): the budget the full-analog HWA
    baseline gets too, so the two are compared at the same number of updates."""
    cfg = params.adapt
    return (epoch_steps(cfg.fairness_epochs, n_train, cfg.batch_size)
            + epoch_steps(cfg.noise_epochs, n_train, cfg.batch_size))
