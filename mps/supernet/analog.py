"""The analog (PCM tile) configuration, built from the hardware profile, and its controls.

The analog physics is aihwkit's: this module only *configures* it.  We use
``TorchInferenceRPUConfig`` (the pure-torch member of the InferenceRPUConfig family) because
its tile re-reads its ``rpu_config`` at every forward (``tile.set_config``), so the
hardware-aware-training noise can be ramped per layer during adaptation by changing the
tiles' own configs (:func:`set_training_noise`) without rebuilding tiles; the RPUCuda
``InferenceRPUConfig`` copies the IO parameters into the compiled tile at creation and would
silently ignore such a change.  Inference physics (PCM programming noise, read noise, drift
and global drift compensation) is the same for both members: ``PCMLikeNoiseModel`` and
``GlobalDriftCompensation`` applied by ``program_analog_weights`` / ``drift_analog_weights``.

Mapping of profile fields to aihwkit:
  tile_rows / tile_cols -> mapping.max_output_size / max_input_size (layers larger than a tile are
                           split over several tiles by aihwkit's TileModuleArray)
  dac_bits / adc_bits   -> forward.inp_res / out_res = 1 / (2**bits - 2)
  out_noise             -> forward.out_noise
  hwa_weight_noise      -> modifier ADD_NORMAL std_dev (relative to the layer's max weight), training only
  weight_clip_sigma     -> clip LAYER_GAUSSIAN sigma
  g_max, *_scale        -> PCMLikeNoiseModel(g_max, prog_noise_scale, read_noise_scale, drift_scale)
  drift_compensation    -> GlobalDriftCompensation() or none
Grouped / depthwise convolutions: aihwkit 1.2.0's AnalogConv2d raises "Only one group is
supported" (aihwkit issue 529), so such layers are restricted to digital operators.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from aihwkit.inference import GlobalDriftCompensation, PCMLikeNoiseModel
from aihwkit.nn import AnalogConv2d, AnalogLinear
from aihwkit.simulator.configs import TorchInferenceRPUConfig
from aihwkit.simulator.parameters.enums import WeightClipType, WeightModifierType

ANALOG_LAYER_TYPES = (AnalogConv2d, AnalogLinear)


def resolution(bits: int) -> float:
    """aihwkit's convention: ``res`` is the step as a fraction of the range, 1/(2**bits - 2)."""
    return 1.0 / (2**bits - 2) if bits > 0 else -1.0


def rpu_config_from_profile(analog) -> TorchInferenceRPUConfig:
    """Inference RPU config for one analog layer, from the profile's ``analog`` section."""
    cfg = TorchInferenceRPUConfig()
    cfg.mapping.max_input_size = int(analog.tile_cols)
    cfg.mapping.max_output_size = int(analog.tile_rows)
    cfg.mapping.digital_bias = True
    cfg.mapping.weight_scaling_omega = 1.0
    cfg.mapping.weight_scaling_columnwise = True
    cfg.forward.inp_res = resolution(int(analog.dac_bits))
    cfg.forward.out_res = resolution(int(analog.adc_bits))
    cfg.forward.out_noise = float(analog.out_noise)
    cfg.modifier.type = WeightModifierType.ADD_NORMAL
    cfg.modifier.rel_to_actual_wmax = True
    cfg.modifier.std_dev = float(analog.hwa_weight_noise)
    cfg.clip.type = WeightClipType.LAYER_GAUSSIAN
    cfg.clip.sigma = float(analog.weight_clip_sigma)
    cfg.noise_model = PCMLikeNoiseModel(
        g_max=float(analog.g_max),
        prog_noise_scale=float(analog.prog_noise_scale),
        read_noise_scale=float(analog.read_noise_scale),
        drift_scale=float(analog.drift_scale),
    )
    cfg.drift_compensation = GlobalDriftCompensation() if analog.drift_compensation else None
    return cfg


def analog_from_digital(layer: nn.Module, rpu_config: TorchInferenceRPUConfig) -> nn.Module:
    """aihwkit's own conversion of one Conv2d/Linear (a copy: the original is untouched)."""
    if isinstance(layer, nn.Conv2d):
        return AnalogConv2d.from_digital(layer, rpu_config)
    if isinstance(layer, nn.Linear):
        return AnalogLinear.from_digital(layer, rpu_config)
    raise TypeError(f"no analog counterpart for {type(layer).__name__}")


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
