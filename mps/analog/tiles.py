"""Controls of the simulated chip's tiles: noise levels in training, the post-update step,
programming, drift and their reset.  Programming noise, drift, read noise and drift
compensation are aihwkit's calls (``program_analog_weights`` / ``drift_analog_weights``); this
module only walks a model's analog layers and calls them.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from mps.analog.chip import ANALOG_LAYER_TYPES


def analog_layers(model: nn.Module) -> Iterator[nn.Module]:
    for module in model.modules():
        if isinstance(module, ANALOG_LAYER_TYPES):
            yield module


def set_training_noise(layer: nn.Module, out_noise: float, weight_noise: float) -> None:
    """Set the hardware-aware-training noise of every tile of an analog layer (takes effect at
    the next forward; see the module docstring)."""
    for tile in layer.analog_tiles():
        tile.rpu_config.forward.out_noise = float(out_noise)
        tile.rpu_config.modifier.std_dev = float(weight_noise)


def training_noise(layer: nn.Module) -> tuple[float, float]:
    tile = next(iter(layer.analog_tiles()))
    return float(tile.rpu_config.forward.out_noise), float(tile.rpu_config.modifier.std_dev)


@torch.no_grad()
def program_analog(model: nn.Module) -> None:
    """Program every analog tile (PCM programming noise); eval mode required by aihwkit."""
    model.eval()
    for layer in analog_layers(model):
        layer.program_analog_weights()


@torch.no_grad()
def drift_analog(model: nn.Module, t_seconds: float) -> None:
    """Drift every programmed tile to ``t_seconds`` after programming (with compensation)."""
    model.eval()
    for layer in analog_layers(model):
        layer.drift_analog_weights(float(t_seconds))


@torch.no_grad()
def equalize_analog_gradients(model: nn.Module) -> None:
    """Give analog layers the learning rate of digital ones; call between backward and step.

    aihwkit's tile stores each output channel's weights divided by that channel's scale
    (``weight_scaling_omega`` with ``weight_scaling_columnwise``: the largest weight of every
    channel sits at the full conductance range), and multiplies the scale back in digital
    after the MVM.  So the gradient reaching the stored weights is scale x that of the
    effective weights, and an SGD step moves the effective weights scale**2 times as far as
    it moves a digital layer's: with ResNet8's scales of about 0.1-0.5, 4-100 times less.  At
    the few hundred steps of an adaptation the analog layers would hardly learn (measured:
    120 steps at lr 0.002 left the all-analog accuracy where it was).  Dividing the stored
    weights' gradients by scale**2 makes an analog step move the effective weights exactly as
    a digital step of the same learning rate would; weight decay, applied by the optimizer
    to the stored weights, keeps its digital meaning too.
    """
    for layer in analog_layers(model):
        for tile in layer.analog_tiles():
            weight = tile.tile.weight
            scales = tile.get_scales()
            if weight.grad is None or scales is None:
                continue
            weight.grad.div_(scales.detach().view(-1, 1).clamp_min(1e-6) ** 2)


def clip_analog(model: nn.Module) -> None:
    """Weight clipping after an optimizer step (aihwkit's post-update step)."""
    for layer in analog_layers(model):
        for tile in layer.analog_tiles():
            tile.post_update_step()


def reset_programming(model: nn.Module) -> None:
    """Forget programmed/drifted state so the next program starts from the trained weights."""
    for layer in analog_layers(model):
        for tile in layer.analog_tiles():
            if getattr(tile, "reference_combined_weights", None) is not None:
                tile.tile.set_weights(tile.reference_combined_weights)
            tile.reference_combined_weights = None
            tile.programmed_weights = None
            tile.drift_noise_parameters = None
            # the drift-compensation scale of the last drift would otherwise keep multiplying
            # every eval-mode output of the (now unprogrammed) tile
            # (shape (1,), as aihwkit creates it: a drifted alpha is 0-d, and a state dict saved
            # after an evaluation must load into a freshly built model)
            alpha = torch.as_tensor(tile.alpha)
            tile.alpha = torch.ones((1,), dtype=alpha.dtype, device=alpha.device)
            tile.drift_baseline = None


@torch.no_grad()
def sync_gradient_scaling(model: nn.Module) -> None:
    """Re-arm aihwkit's gradient hook of every torch tile with the tile's current scales; call
    before training a model that was loaded or copied.

    ``TorchInferenceTile.set_scales`` registers a hook on the tile's weight that divides its
    gradient by scale**2, so that an update moves the effective weights as a digital step of the
    same learning rate would.  aihwkit arms it at conversion and at every remapping
    (``post_update_step``), but neither ``load_state_dict`` nor ``copy.deepcopy`` carries it: a
    resumed adaptation would take its first step with the scales of the freshly converted
    layer, and a copy none at all."""
    for layer in analog_layers(model):
        for tile in layer.analog_tiles():
            scales = tile.get_scales() if hasattr(tile, "_backward_hook_handle") else None
            if scales is not None:
                tile.set_scales(scales)


def drift_compensations() -> dict[str, object]:
    """aihwkit's drift-compensation methods by the name ``evaluate.drift_compensation`` uses.

    What a chip needs for each (aihwkit ``aihwkit/inference/compensation/drift.py``):
    ``global`` (``GlobalDriftCompensation``): one reference read-out of the tile's outputs for
    a fixed all-ones-like input right after programming and again at each drift time, one scalar
    per tile rescaling every output (Le Gallo et al., Nat. Electron. 2023; the default of
    aihwkit's inference presets); ``global_exact`` (``GlobalDriftCompensationWithExactReference``):
    the same scalar, but the reference is the read-out of the *unprogrammed* target weights, so
    the programming error is compensated on average too (needs the target read-out stored off
    chip); ``per_column`` (``PerColumnDriftCompensation``): one factor per output column from
    one-hot read-outs of every input line (in_size reads per compensation, one digital scale per
    ADC); ``none``: the drifted conductances as they are."""
    from aihwkit.inference.compensation.drift import (GlobalDriftCompensation,
                                                      GlobalDriftCompensationWithExactReference,
                                                      PerColumnDriftCompensation)

    return {"global": GlobalDriftCompensation, "global_exact": GlobalDriftCompensationWithExactReference,
            "per_column": PerColumnDriftCompensation, "none": None}


def set_drift_compensation(model: nn.Module, method: str) -> None:
    """Every analog tile of ``model`` compensates drift with ``method`` (a key of
    :func:`drift_compensations`) from its next programming on."""
    methods = drift_compensations()
    if method not in methods:
        raise ValueError(f"unknown drift compensation {method!r}; fix: use one of {', '.join(methods)}")
    cls = methods[method]
    for layer in analog_layers(model):
        for tile in layer.analog_tiles():
            tile.rpu_config.drift_compensation = cls() if cls is not None else None
