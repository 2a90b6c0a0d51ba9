"""Post-training calibration of static input ranges, for analog layers that are not trained.

A straight conversion (no training) and a supernet's analog operators before adaptation would
otherwise start from aihwkit's default range (3.0) on every tile, which handicaps them: the
range sets the DAC's step and what it clips.  As the standard HWA preset prescribes for
networks that are not trained (Rasch et al., Nat. Commun. 2023; aihwkit
``aihwkit/inference/calibration/calibration.py``), each tile's range is calibrated on a few
training batches with aihwkit's own ``calibrate_input_ranges``, type ``CACHE_QUANTILE`` (the
99.995 % quantile of the tile's inputs, aihwkit's defaults).

Layers are calibrated one after another in forward order, each on the inputs it receives
from the already calibrated layers before it (one forward pass per layer, stopped at that
layer).  A calibrated tile counts as initialised: its ``input_range_update_idx`` is set to
``init_from_data``, so hardware-aware training starts from the calibrated range instead of
re-initialising it from data, and a model rebuilt from its state dict behaves the same.
"""

from __future__ import annotations

import torch
from torch import nn

from aihwkit.inference.calibration import InputRangeCalibrationType, calibrate_input_ranges as aihwkit_calibrate

from mps.analog.direct import has_static_ranges
from mps.analog.tiles import analog_layers


class _Captured(Exception):
    """Stops a forward pass once the layer being calibrated has seen its input."""


def _callers(model: nn.Module) -> dict[int, nn.Module]:
    """For each analog layer, the module that calls it with its own input (the operator), or
    the layer itself: where a pre-hook sees the layer's input whatever engine computes it."""
    owners: dict[int, nn.Module] = {}
    for module in model.modules():
        layer = getattr(module, "layer", None)
        if isinstance(layer, nn.Module) and len(list(module.children())) == 1:
            owners[id(layer)] = module
    return owners


@torch.no_grad()
def calibrate_ranges(model: nn.Module, x: torch.Tensor, batches: int = 4, batch_size: int = 128,
                     seed: int = 0) -> int:
    """Calibrate the static input ranges of every analog layer of ``model`` on the first
    ``batches`` batches of ``x`` (training examples); returns how many layers were calibrated.
    Layers with dynamic scaling (no input range) are left alone."""
    layers = [layer for layer in analog_layers(model) if has_static_ranges(layer)]
    if not layers or x is None or len(x) == 0:
        return 0
    was_training = model.training
    model.eval()
    owners = _callers(model)
    device = next(model.parameters()).device
    inputs = [x[i:i + batch_size].to(device) for i in range(0, min(len(x), batches * batch_size), batch_size)]
    try:
        for layer in layers:
            seen: list[torch.Tensor] = []

            def grab(_module, args, seen=seen):
                seen.append(args[0].detach())
                raise _Captured

            handle = owners.get(id(layer), layer).register_forward_pre_hook(grab)
            try:
                for xb in inputs:
                    try:
                        model(xb)
                    except _Captured:
                        pass
            finally:
                handle.remove()
            if not seen:
                continue  # a layer no forward reaches (e.g. an inactive path of a supernet)
            tiles = list(layer.analog_tiles())
            init_batches = [t.rpu_config.pre_post.input_range.init_from_data for t in tiles]
            torch.manual_seed(seed)  # aihwkit's cache subsamples with the global generator
            aihwkit_calibrate(layer, InputRangeCalibrationType.CACHE_QUANTILE, [((xb,), {}) for xb in seen])
            for tile, init in zip(tiles, init_batches):  # aihwkit turns init_from_data off; the index says it
                tile.rpu_config.pre_post.input_range.init_from_data = init
                tile.input_range_update_idx.data.fill_(float(init))
    finally:
        model.train(was_training)
    return len(layers)
