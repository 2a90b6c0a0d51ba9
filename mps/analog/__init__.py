"""The simulated analog chip, in one folder; the supernet and the stages only use it.

* :mod:`mps.analog.chip` - the chip model: the hardware profile's ``analog`` section as an aihwkit
  RPU configuration (static input ranges by default, the standard HWA preset);
* :mod:`mps.analog.tiles` - the tiles' controls: training-noise levels, the post-update step,
  programming, drift and their reset (aihwkit's calls);
* :mod:`mps.analog.direct` - analog convolutions with static ranges as direct convolutions, in
  training and inference;
* :mod:`mps.analog.im2col` - the eval-mode engine for dynamic (per-vector abs-max) scaling;
* :mod:`mps.analog.engine` - the switch between these engines and aihwkit's own forward;
* :mod:`mps.analog.calibration` - post-training calibration of the static input ranges.
"""
