"""Accuracy of a standalone (extracted) model under PCM programming noise and drift.

The one evaluator every stage shares (calibrate, search and its baselines, evaluate), so
that all methods are measured the same way:

1. BatchNorm recalibration: the supernet's BN layers are shared by all paths, so their
   running statistics fit no single sub-network.  Before a sub-network is evaluated its BN
   statistics are re-estimated on a few training batches (as in single-path one-shot NAS),
   with every other module in eval mode;
2. per repeat r: seed ``seed + r``, program the analog tiles once (programming noise), then
   for each drift time drift from that programmed state (aihwkit applies drift and read
   noise and global drift compensation) and measure accuracy.  Nothing is rebuilt or
   retrained per time point;
3. the programmed state is cleared afterwards, so the model can be reused.

What a deployed chip does over time is part of the evaluation, the same for every method
(``EvalSet``, from params' ``evaluate`` section): the drift-compensation method of every tile
(:func:`mps.analog.tiles.drift_compensations`: aihwkit's global, global with exact reference,
per column, or none), and optionally BatchNorm statistics re-estimated at each drift time on
``bn_reestimation_batches`` unlabelled training batches through the drifted, noisy network
(the digital BN layers are where a chip would do it: Joshi et al., "Accurate deep neural network
inference using computational phase-change memory", Nat. Commun. 11, 2473 (2020), adaptive
batch-norm statistics; suggested for aihwkit's drift in aihwkit issue 247).  The statistics of
step 1 are put back after each time point, so one time's re-estimate never leaks into the next.

Every eval-mode forward of the analog layers here (BN recalibration of unprogrammed tiles
included) runs on ``EvalSet.engine`` (:mod:`mps.analog.engine`): ``fast`` (direct convolutions for
static input ranges, im2col for dynamic ones; aihwkit's arithmetic, checked against it) or
``aihwkit`` (aihwkit's own forward); programming, drift and read noise are aihwkit's calls
either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from mps.analog.engine import use_engine
from mps.analog.tiles import (analog_layers, drift_analog, program_analog, reset_programming,
                              set_drift_compensation)
from mps.training import evaluate_accuracy, iterate_batches


@dataclass
class EvalSet:
    """Examples to score on, and training examples for BN recalibration."""

    x: torch.Tensor
    y: torch.Tensor
    calib_x: torch.Tensor | None = None
    batch_size: int = 512
    calib_batches: int = 8
    calib_batch_size: int = 128
    device: str = "cpu"
    engine: str = "fast"  # analog forward: "fast" | "aihwkit" (mps.analog.engine)
    drift_compensation: str = "global"  # mps.analog.tiles.drift_compensations()
    bn_reestimation_batches: int = 0  # BN statistics re-estimated after drift at each time (0 = off)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, batches: int, batch_size: int,
                          device: str = "cpu") -> None:
    """Re-estimate BN running statistics (cumulative average) on ``batches`` batches of ``x``."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or batches <= 0 or x is None or len(x) == 0:
        return
    model.eval()
    saved = []
    for bn in bns:
        saved.append(bn.momentum)
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    for i, idx in enumerate(iterate_batches(len(x), batch_size)):
        if i >= batches:
            break
        model(x[idx].to(device))
    for bn, momentum in zip(bns, saved):
        bn.momentum = momentum
        bn.eval()


def batchnorm_statistics(model: nn.Module) -> list[tuple[torch.Tensor, ...]]:
    """A copy of every BN layer's running statistics (for :func:`restore_batchnorm`)."""
    return [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
            for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]


@torch.no_grad()
def restore_batchnorm(model: nn.Module, statistics: list[tuple[torch.Tensor, ...]]) -> None:
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]
    for bn, (mean, var, count) in zip(bns, statistics):
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.num_batches_tracked.copy_(count)


def has_analog(model: nn.Module) -> bool:
    return next(analog_layers(model), None) is not None


@torch.no_grad()
def drift_accuracy_grid(model: nn.Module, data: EvalSet, drift_times: Sequence[float], repeats: int,
                        seed: int, recalibrate: bool = True) -> np.ndarray:
    """Accuracy (%) for each repeat x drift time; shape (repeats, len(drift_times)).

    A model without analog layers is deterministic: it is evaluated once and the value
    repeated, which is exact and saves the repeats' time.
    """
    model.to(data.device).eval()
    with use_engine(data.engine):
        if recalibrate and data.calib_x is not None:
            torch.manual_seed(seed)
            recalibrate_batchnorm(model, data.calib_x, data.calib_batches, data.calib_batch_size, data.device)
        out = np.zeros((repeats, len(drift_times)))
        if not has_analog(model):
            acc = evaluate_accuracy(model, data.x, data.y, data.batch_size, data.device)
            out[:] = acc
            return out
        set_drift_compensation(model, data.drift_compensation)
        statistics = batchnorm_statistics(model)
        try:
            for r in range(repeats):
                torch.manual_seed(seed + r)
                reset_programming(model)
                program_analog(model)
                for j, t in enumerate(drift_times):
                    drift_analog(model, t)
                    if data.bn_reestimation_batches > 0:
                        recalibrate_batchnorm(model, data.calib_x, data.bn_reestimation_batches,
                                              data.calib_batch_size, data.device)
                    out[r, j] = evaluate_accuracy(model, data.x, data.y, data.batch_size, data.device)
                    restore_batchnorm(model, statistics)
        finally:
            reset_programming(model)
            restore_batchnorm(model, statistics)
    return out


def accuracy_at(model: nn.Module, data: EvalSet, drift_time: float, repeats: int, seed: int) -> tuple[float, float]:
    """Mean and std accuracy (%) at one drift time."""
    grid = drift_accuracy_grid(model, data, [drift_time], repeats, seed)
    return float(grid[:, 0].mean()), float(grid[:, 0].std())
