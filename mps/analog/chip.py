"""The chip model: the hardware profile's ``analog`` section as an aihwkit RPU configuration.

The analog physics is aihwkit's: this module only *configures* it.  We use
``TorchInferenceRPUConfig`` (the pure-torch member of the InferenceRPUConfig family) because
its tile re-reads its ``rpu_config`` at every forward (``tile.set_config``), so the
hardware-aware-training noise can be ramped per layer during adaptation by changing the
tiles' own configs (:func:`mps.analog.tiles.set_training_noise`) without rebuilding tiles; the
RPUCuda ``InferenceRPUConfig`` copies the IO parameters into the compiled tile at creation and
would silently ignore such a change.  Inference physics (PCM programming noise, read noise,
drift and drift compensation) is ``PCMLikeNoiseModel`` and ``GlobalDriftCompensation``, applied
by ``program_analog_weights`` / ``drift_analog_weights``.

Two chip models, chosen by ``analog.input_ranges``:

``static`` (default), the standard HWA chip (Rasch et al., "Hardware-aware training for
large-scale and diverse deep learning inference workloads using in-memory computing-based
accelerators", Nat. Commun. 14, 5282 (2023); aihwkit 1.2.0 ``StandardHWATrainingPreset`` in
``aihwkit/simulator/presets/inference.py``), field by field:
  * one static input range per tile (``pre_post.input_range``: enable, learned, initialised over
    the first ``init_from_data=100`` training batches to ``init_std_alpha=3`` std of the tile's
    input, ``decay=0.001`` while ``input_min_percentage=0.95`` of the inputs are inside,
    ``gradient_relative``, ``gradient_scale=1``) - what a chip with a fixed DAC range does;
    profile fields ``input_range_*``;
  * no noise management and no bound management (``NoiseManagementType.NONE`` - the preset's
    ``CONSTANT`` with ``nm_thres=1`` scales by 1, the same arithmetic - and
    ``BoundManagementType.NONE``): the input range replaces both;
  * ``out_bound=10`` (the preset's; profile ``out_bound``);
  * channel-wise symmetric remapping after each update (``WeightRemapType.CHANNELWISE_SYMMETRIC``,
    ``remapped_wmax=1``) and clipping at the fixed value 1 (``WeightClipType.FIXED_VALUE``), the
    preset's and LionHEART's (``models/common/gen_rpu_config.py``); profile ``weight_remap``,
    ``weight_clip``;
  * columnwise weight scaling at conversion (``weight_scaling_omega=1``,
    ``weight_scaling_columnwise``) and a digital bias, as the preset;
  * learned output scaling: the preset's ``learn_out_scaling=True`` is *not* taken
    (``learn_out_scaling: false``): with channel-wise remapping the mapping scales already
    follow each channel's weights after every update, and a learned per-channel factor on
    top adds a parameter that the supernet's shared-BN paths and the drift compensation
    would also have to carry; the profile field exists to turn it on;
  * weight noise in training: ``ADD_NORMAL`` relative to the tile's largest weight, at
    ``hwa_weight_noise`` (the preset's ``w_noise_type=PCM_READ`` forward noise is not supported
    by the torch tile's ``AnalogMVM``; the additive modifier is aihwkit's own HWA noise, and its
    level 0.08 was measured as the deployed error, README "Why the analog references collapse").
  With static ranges an analog convolution is a direct ``conv2d`` per tile
  (:mod:`mps.analog.direct`); a model that is not trained gets its ranges by post-training
  calibration (:mod:`mps.analog.calibration`).

``dynamic``, the earlier default (kept so earlier results can be reproduced with
``hardware/paper-dynamic.yaml``): per-input-vector ``ABS_MAX`` noise management with
``ITERATIVE`` bound management, no input ranges, clipping at ``weight_clip_sigma`` std of the
layer's weights (``LAYER_GAUSSIAN``), no remapping.  It needs im2col
(:mod:`mps.analog.im2col` in eval mode, aihwkit's own forward in training).

Other fields: tile_rows / tile_cols -> mapping.max_output_size / max_input_size (layers larger
than a tile are split over several tiles by aihwkit's TileModuleArray); dac_bits / adc_bits ->
forward.inp_res / out_res = 1 / (2**bits - 2); out_noise -> forward.out_noise; g_max, *_scale ->
PCMLikeNoiseModel; drift_compensation -> GlobalDriftCompensation() or none.
Grouped / depthwise convolutions: aihwkit 1.2.0's AnalogConv2d raises "Only one group is
supported" (aihwkit issue 529), so such layers are restricted to digital operators.
"""

from __future__ import annotations

from torch import nn

from aihwkit.inference import GlobalDriftCompensation, PCMLikeNoiseModel
from aihwkit.nn import AnalogConv2d, AnalogLinear
from aihwkit.simulator.configs import TorchInferenceRPUConfig
from aihwkit.simulator.parameters.enums import (BoundManagementType, NoiseManagementType, WeightClipType,
                                                WeightModifierType, WeightRemapType)

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
    if analog.weight_clip == "fixed":
        cfg.clip.type = WeightClipType.FIXED_VALUE
        cfg.clip.fixed_value = float(analog.weight_clip_value)
    else:
        cfg.clip.type = WeightClipType.LAYER_GAUSSIAN
        cfg.clip.sigma = float(analog.weight_clip_sigma)
    if analog.weight_remap == "channelwise":
        cfg.remap.type = WeightRemapType.CHANNELWISE_SYMMETRIC
        cfg.remap.remapped_wmax = 1.0
    if analog.input_ranges == "static":
        cfg.forward.noise_management = NoiseManagementType.NONE
        cfg.forward.bound_management = BoundManagementType.NONE
        cfg.forward.out_bound = float(analog.out_bound)
        ir = cfg.pre_post.input_range
        ir.enable = True
        ir.learn_input_range = True
        ir.init_value = 3.0
        ir.init_from_data = int(analog.input_range_init_batches)
        ir.init_std_alpha = float(analog.input_range_init_std)
        ir.decay = float(analog.input_range_decay)
        ir.input_min_percentage = float(analog.input_range_min_percentage)
        ir.output_min_percentage = 0.95
        ir.manage_output_clipping = False
        ir.gradient_scale = 1.0
        ir.gradient_relative = True
    cfg.mapping.learn_out_scaling = bool(analog.learn_out_scaling)
    cfg.mapping.out_scaling_columnwise = bool(analog.learn_out_scaling)
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
